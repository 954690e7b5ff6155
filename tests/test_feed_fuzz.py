"""Hostile client messages, generated: whatever a browser sends, a session answers with a
documented error frame (or closes with a documented code) and never lets anything else
escape or reach the hub unvalidated."""

from __future__ import annotations

from typing import Any

import msgpack
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.channels import BlockingChannel
from actors.config import FeedConfig
from actors.hub import Control, Subscribe, Unsubscribe
from actors.session import TOPIC_RE, SessionClosed, SessionCounters, _Session

ERROR_CODES = {"bad_message", "unknown_op", "bad_topic", "too_many_topics", "busy", "rate_limited"}
CLOSE_CODES = {1008}  # abuse; size (1009) is checked before handle_message

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(),
                    st.text(max_size=100), st.binary(max_size=100))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), inner,
                                                 max_size=5)), max_leaves=20)
topics = st.one_of(st.sampled_from(["opportunities", "venues", "symbols", "quotes:BTC/USDT", "window:ETH/USDT",
                                    "spreads:btc/usdt", "quotes:../../etc", "window:", "x" * 90]),
                   st.text(max_size=90), values)
ops = st.one_of(st.sampled_from(["subscribe", "unsubscribe", "ping", "pong", "SUBSCRIBE", ""]), values)
maps = st.builds(lambda op, topic, extra: {"op": op, "topic": topic, **extra}, ops, topics,
                 st.dictionaries(st.text(max_size=8), values, max_size=3))


def _packed(value: Any) -> bytes:
    try:
        return msgpack.packb(value)  # type: ignore[no-any-return]
    except (OverflowError, TypeError, ValueError):
        return b"\xc1"  # never used by msgpack


messages = st.one_of(st.binary(max_size=300), st.text(max_size=100),
                     values.map(_packed), maps.map(_packed))


@settings(max_examples=400, deadline=None)
@given(st.lists(messages, min_size=1, max_size=40))
def test_any_client_message_gets_a_documented_answer(batch: list[bytes | str]) -> None:
    async def main() -> None:
        config = FeedConfig(max_topics_per_session=5, max_window_topics_per_session=2, abuse_limit=25)
        control = BlockingChannel[Control]("control", 3)
        session = _Session(None, control, config, SessionCounters(), lambda: 0, "fuzz")  # type: ignore[arg-type]
        closed: int | None = None
        for data in batch:
            try:
                session.handle_message(data)
            except SessionClosed as exc:
                closed = exc.code
                break
        assert closed is None or closed in CLOSE_CODES
        while len(session.handle.outbox):
            frame = msgpack.unpackb(await session.handle.outbox.get())
            assert frame["topic"] == "_" and frame["kind"] in ("error", "pong")
            if frame["kind"] == "error":
                assert frame["data"]["code"] in ERROR_CODES
        assert all(TOPIC_RE.fullmatch(t) for t in session.topics)
        assert len(session.topics) <= config.max_topics_per_session
        assert sum(t.startswith("window:") for t in session.topics) <= config.max_window_topics_per_session
        while True:  # what reached the hub: only subscriptions to valid topics
            try:
                message = control.receive_nowait()
            except trio.WouldBlock:
                break
            assert isinstance(message, Subscribe | Unsubscribe) and TOPIC_RE.fullmatch(message.topic)

    trio.run(main)
