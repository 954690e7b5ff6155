"""The ``window:<SYMBOL>`` topic: a snapshot asked of the owning shard, then only the
slots written since; byte-bounded outboxes; snapshots queued only where they fit."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
import trio
import trio.testing

from actors.channels import BlockingChannel, ConflatingChannel, DropChannel
from actors.config import SpreadsConfig, WindowsConfig
from actors.hub import Hub, Join, Outbox, SessionHandle, Subscribe
from actors.records import Opportunity, Quote, VenueDown
from actors.shard import QueryKind, Shard, ShardOutputs, WindowQuery, merge_hub_state, run_shard
from tests.fakes import virtual_clock_ns
from tests.test_feed import FEED, FakeClient, Harness

TOPIC = "window:BTC/USDT"


def merge(frames: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """What a client keeps: values by slot time, a later frame replacing a slot."""
    out: dict[int, dict[str, Any]] = {}
    for frame in frames:
        if frame["kind"] == "snapshot":
            out = {}
        data = frame["data"]
        for i, t in enumerate(data["t"]):
            out[t] = {"best": data["best_net_bps"][i],
                      **{v: (s["bid"][i], s["ask"][i]) for v, s in data["venues"].items()}}
    return out


class WindowHarness(Harness):
    """The feed harness with a real shard behind the hub's window queries."""

    def __init__(self, feed: Any = FEED) -> None:
        super().__init__(feed)
        self.states = ConflatingChannel[str, Any]("states", 1000, merge=merge_hub_state)
        self.inbox = ConflatingChannel[tuple[str, str], Quote | VenueDown]("in", 100)
        self.queries = BlockingChannel[WindowQuery]("q", 8)
        self.shard = Shard(0, SpreadsConfig(tick_s=0.25), WindowsConfig(length_s=60, max_series=10),
                           {"a": 10.0, "b": 5.0}, {"a": 5 * 10**9, "b": 5 * 10**9},
                           ShardOutputs(self.states, DropChannel[Opportunity]("e", 100), None), 10)

        def ask(symbol: str, reply: trio.MemorySendChannel[dict[str, Any] | None]) -> bool:
            return self.queries.try_send(WindowQuery(symbol, reply, QueryKind.FEED_WINDOW))

        self.hub = Hub(feed, top_n=10, venues=lambda: {}, ask_window=ask, clock_ns=virtual_clock_ns)

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(lambda task_status: run_shard(self.shard, self.inbox, self.queries,
                                                          clock_ns=virtual_clock_ns, task_status=task_status))
        await super().start(nursery)

    async def quote(self, seconds: float, every: float = 0.3) -> None:
        end = trio.current_time() + seconds
        i = 0
        while trio.current_time() < end:
            i += 1
            now = virtual_clock_ns()
            for venue, offset in (("a", 0.0), ("b", 0.2)):
                self.inbox.put_nowait((venue, "BTC/USDT"), Quote(venue, "BTC/USDT", 100.0 + i * 0.01 + offset,
                                                                 1.0, 100.1 + i * 0.01 + offset, 1.0, 0, now))
            await trio.sleep(every)


async def test_a_window_snapshot_then_deltas_merge_into_the_shards_window(
        autojump_clock: trio.testing.MockClock) -> None:
    h = WindowHarness()
    client = FakeClient()
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        await h.quote(3)  # history before the client arrives
        h.connect(nursery, client)
        client.say({"op": "subscribe", "topic": TOPIC})
        await h.quote(6)
        await trio.sleep(1)
        frames = client.of(TOPIC)
        assert frames[0]["kind"] == "snapshot" and len(frames[0]["data"]["t"]) >= 3
        deltas = frames[1:]
        assert deltas and all(f["kind"] == "delta" for f in deltas)
        assert all(len(f["data"]["t"]) <= 3 for f in deltas)  # only the latest slots
        seqs = [f["seq"] for f in deltas]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        expected = h.shard.window("BTC/USDT", virtual_clock_ns())
        assert expected is not None
        merged = merge(frames)
        for i, t in enumerate(expected["t"]):
            if t in merged:
                assert merged[t]["a"] == (expected["venues"]["a"]["bid"][i], expected["venues"]["a"]["ask"][i])
                assert merged[t]["best"] == expected["best_net_bps"][i]
        # every slot with data is in what the client holds
        filled = [t for i, t in enumerate(expected["t"]) if expected["venues"]["a"]["bid"][i] is not None]
        assert set(filled) <= set(merged)
        nursery.cancel_scope.cancel()


async def test_a_session_that_fell_behind_gets_a_fresh_window_snapshot(
        autojump_clock: trio.testing.MockClock) -> None:
    # (pings dropped with the overflowing frames must not end it first: long heartbeat)
    h = WindowHarness(dataclasses.replace(FEED, outbox_frames=2, lag_limit_s=60.0, send_timeout_s=30.0,
                                          heartbeat_interval_s=30.0, heartbeat_timeout_s=60.0))
    slow = FakeClient(send_delay=1.0)
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        h.connect(nursery, slow)
        slow.say({"op": "subscribe", "topic": TOPIC})
        slow.say({"op": "subscribe", "topic": "window:ETH/USDT"})
        await h.quote(10, every=0.1)
        await trio.sleep(10)  # quotes stopped: the slow reader drains its outbox
        frames = slow.of(TOPIC)
        kinds = [f["kind"] for f in frames]
        assert kinds.count("snapshot") >= 2 and h.hub.stats.resyncs >= 1
        # after a gap, the next frame of the topic is a snapshot, never a delta
        for before, after in itertools.pairwise(frames):
            if after["kind"] == "delta" and before["kind"] == "delta":
                assert after["seq"] == before["seq"] + 1
        # an unknown symbol's window is an empty snapshot, owed and delivered in the end
        # even while the other topic kept the outbox full
        eth = slow.of("window:ETH/USDT")
        assert slow.close_code is None
        assert eth[0]["kind"] == "snapshot" and eth[0]["data"]["t"] == []
        nursery.cancel_scope.cancel()


async def test_an_outbox_is_bounded_in_bytes_but_always_takes_one_frame() -> None:
    outbox = Outbox(100, max_bytes=100)
    assert outbox.offer(b"x" * 60) and outbox.pending_bytes == 60
    assert not outbox.offer(b"y" * 60)  # 120 > 100: everything pending dropped, resync owed
    assert (outbox.needs_resync, len(outbox), outbox.pending_bytes, outbox.dropped) == (True, 0, 0, 2)
    assert outbox.offer(b"z" * 500)  # one frame always fits an empty outbox
    assert not outbox.has_room(1, 1)


async def test_a_batch_takes_what_is_pending_in_order_up_to_its_size() -> None:
    outbox = Outbox(100)
    for frame in (b"a" * 40, b"b" * 30, b"c" * 30, b"d" * 10):
        assert outbox.offer(frame)
    assert await outbox.get_batch(100) == [b"a" * 40, b"b" * 30, b"c" * 30]  # d would make 110
    assert (len(outbox), outbox.pending_bytes, outbox.delivered) == (1, 10, 3)
    assert outbox.offer(b"e" * 500)
    assert await outbox.get_batch(100) == [b"d" * 10]  # e alone is over the size: next batch
    assert await outbox.get_batch(100) == [b"e" * 500]  # the first frame always goes
    assert (len(outbox), outbox.pending_bytes, outbox.delivered) == (0, 0, 5)
    with trio.move_on_after(0.1) as waited:  # nothing pending: it waits for a frame
        await outbox.get_batch(100)
    assert waited.cancelled_caught
    outbox.close()
    with pytest.raises(trio.EndOfChannel):
        await outbox.get_batch(100)


async def test_owed_snapshots_wait_for_room_instead_of_overflowing(autojump_clock: trio.testing.MockClock) -> None:
    answers: list[str] = []
    hub: Hub

    def ask(symbol: str, reply: trio.MemorySendChannel[dict[str, Any] | None]) -> bool:
        answers.append(symbol)
        reply.send_nowait({"symbol": symbol, "resolution_s": 1, "t": list(range(50)),
                           "venues": {"a": {"bid": [1.5] * 50, "ask": [1.6] * 50}}, "best_net_bps": [None] * 50})
        return True

    hub = Hub(FEED, top_n=10, venues=lambda: {}, ask_window=ask, clock_ns=virtual_clock_ns)
    session = SessionHandle(Outbox(100, max_bytes=1_000))
    hub.control(Join(session))
    for symbol in ("A/USDT", "B/USDT", "C/USDT"):
        hub.control(Subscribe(session, f"window:{symbol}"))
    hub.maintain()  # asks the three shards' windows
    hub.maintain()  # answers in: the first snapshot (~900 bytes) fits, the others wait
    assert len(session.outbox) == 1 and list(session.resync) == ["window:B/USDT", "window:C/USDT"]
    assert session.outbox.overflows == 0
    await session.outbox.get()  # the browser read it
    for _ in range(4):
        hub.maintain()
        while len(session.outbox):
            await session.outbox.get()
    assert not session.resync and session.outbox.overflows == 0
    # a snapshot that could not be queued is asked for again (it would be stale by then)
    assert answers.count("A/USDT") == 1 and answers.count("B/USDT") >= 2 and answers.count("C/USDT") >= 2
    assert hub.subscribers["window:C/USDT"] == {session}


async def test_window_topics_have_their_own_per_session_limit(autojump_clock: trio.testing.MockClock) -> None:
    h = Harness(dataclasses.replace(FEED, max_window_topics_per_session=2))
    client = FakeClient()
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        h.connect(nursery, client)
        for symbol in ("A", "B", "C"):
            client.say({"op": "subscribe", "topic": f"window:{symbol}/USDT"})
        client.say({"op": "subscribe", "topic": "quotes:C/USDT"})
        await trio.sleep(1)
        errors = [f["data"] for f in client.of("_") if f["kind"] == "error"]
        assert [(e["code"], e.get("topic")) for e in errors] == [("too_many_topics", "window:C/USDT")]
        assert client.of("quotes:C/USDT")[0]["kind"] == "snapshot"
        assert {f["topic"] for f in client.frames if f["kind"] == "snapshot"} == {
            "window:A/USDT", "window:B/USDT", "quotes:C/USDT"}
        nursery.cancel_scope.cancel()
