"""The session writer's cancel scopes: one per idle second, not one per wait and per send
(actors/session.py; a scope per message was a tenth of the server's profile at a thousand
sessions). The deadlines they carry still hold: a stuck send closes the session 4001."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors.channels import BlockingChannel
from actors.config import FeedConfig
from actors.hub import Control, Join, SessionHandle
from actors.session import SessionCounters, run_session

FEED = FeedConfig(tick_s=0.25, outbox_frames=64, heartbeat_interval_s=5.0, heartbeat_timeout_s=12.0,
                  send_timeout_s=2.0, lag_limit_s=6.0, max_sessions=10)


class _Socket:
    def __init__(self, stuck: bool = False) -> None:
        self.stuck = stuck
        self.sent: list[bytes] = []

    async def receive(self) -> bytes | str:
        await trio.sleep_forever()
        raise AssertionError

    async def send(self, data: bytes) -> None:
        if self.stuck:
            await trio.sleep_forever()
        self.sent.append(data)
        await trio.lowlevel.checkpoint()

    async def close(self, code: int, reason: str) -> None:
        pass


async def _admitted(control: BlockingChannel[Control]) -> SessionHandle:
    """Play the hub: admit the first session that joins; its handle."""
    while True:
        for message in await control.receive_batch():
            if isinstance(message, Join):
                message.session.accepted = True
                message.session.admitted.set()
                return message.session


async def test_a_busy_writer_opens_no_cancel_scope_per_message(
        autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    entered: list[str] = []
    enter = trio.CancelScope.__enter__

    def counting_enter(self: trio.CancelScope) -> Any:
        entered.append(trio.lowlevel.current_task().name)
        return enter(self)

    control = BlockingChannel[Control]("control", 10)
    sock = _Socket()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_session(sock, control, config=FEED, counters=SessionCounters()))
        handle = await _admitted(control)
        monkeypatch.setattr(trio.CancelScope, "__enter__", counting_enter)
        for i in range(100):  # 100 messages in 0.5 s, under the writer's 1 s check interval
            handle.outbox.offer(b"frame %d" % i)
            await trio.sleep(0.005)
        monkeypatch.undo()
        nursery.cancel_scope.cancel()
    assert sock.sent == [b"frame %d" % i for i in range(100)]
    writer_scopes = sum(1 for name in entered if name.endswith("writer"))
    assert writer_scopes <= 2, f"{writer_scopes} cancel scopes for 100 messages"


async def test_a_stuck_send_still_closes_the_session_after_the_send_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    control = BlockingChannel[Control]("control", 10)
    counters = SessionCounters()
    result: list[tuple[int, str]] = []

    async def session() -> None:
        result.append(await run_session(_Socket(stuck=True), control, config=FEED, counters=counters))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(session)
        handle = await _admitted(control)
        started = trio.current_time()
        await trio.sleep(0.9)  # the send starts late in the first check interval
        handle.outbox.offer(b"frame")
        with trio.fail_after(10):
            while not result:
                await trio.sleep(0.1)
    took = trio.current_time() - started - 0.9
    assert result[0][0] == 4001 and "send took" in result[0][1]
    assert counters.closed_send_timeout == 1
    assert FEED.send_timeout_s <= took <= FEED.send_timeout_s + 0.2


async def test_frames_that_wake_the_writer_just_before_its_check_are_sent_not_taken_for_a_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    control = BlockingChannel[Control]("control", 10)
    counters = SessionCounters()
    sock = _Socket()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_session(sock, control, config=FEED, counters=counters))
        handle = await _admitted(control)
        await trio.sleep(0.5)
        handle.outbox.offer(b"late")
        # the writer is woken, but the clock passes its check deadline before it runs
        autojump_clock.jump(0.6)
        await trio.sleep(0.1)
        handle.outbox.offer(b"next")
        await trio.sleep(0.1)
        assert sock.sent == [b"late", b"next"]
        assert counters.closed_send_timeout == 0
        nursery.cancel_scope.cancel()
