"""Hub and sessions: encode once, never wait for a browser, resync the slow, close the dead.

FAILURE_MODES #6 (slow browsers never slow others), #7 (half-open clients removed), #12
(one encode per topic per tick), plus hostile client input."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from actors.channels import BlockingChannel, ConflatingChannel, DropChannel
from actors.config import FeedConfig
from actors.hub import Control, Hub, run_hub
from actors.records import Opportunity
from actors.session import SessionClosed, SessionCounters, run_session
from tests.fakes import virtual_clock_ns

FEED = FeedConfig(tick_s=0.25, outbox_frames=8, heartbeat_interval_s=5.0, heartbeat_timeout_s=12.0,
                  send_timeout_s=2.0, lag_limit_s=6.0, max_sessions=10)


class FakeClient:
    """A browser at the session's transport seam, with configurable reading speed."""

    def __init__(self, *, send_delay: float = 0.0, never_read: bool = False, answer_pings: bool = True) -> None:
        self.send_delay = send_delay
        self.never_read = never_read
        self.answer_pings = answer_pings
        self.frames: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self._in_send, self._in_receive = trio.open_memory_channel[bytes | str](100)
        self.close_code: int | None = None
        self.close_reason = ""

    def say(self, message: Any) -> None:
        self._in_send.send_nowait(message if isinstance(message, bytes | str) else msgpack.packb(message))

    def leave(self) -> None:
        self._in_send.close()

    async def receive(self) -> bytes | str:
        try:
            return await self._in_receive.receive()
        except trio.EndOfChannel:
            raise SessionClosed(1000, "client left") from None

    async def send(self, data: bytes) -> None:
        if self.never_read:
            await trio.sleep_forever()
        if self.send_delay:
            await trio.sleep(self.send_delay)
        frame = msgpack.unpackb(data)
        self.frames.append(frame)
        self.arrivals.append(trio.current_time())
        if frame["kind"] == "ping" and self.answer_pings:
            self.say({"op": "pong", "ts": frame["data"]["ts"]})

    async def close(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason

    def of(self, topic: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["topic"] == topic]


class Harness:
    def __init__(self, feed: FeedConfig = FEED) -> None:
        self.feed = feed
        self.states = ConflatingChannel[str, Any]("states", 1000)
        self.events = DropChannel[Opportunity]("events", 100)
        self.control = BlockingChannel[Control]("control", 100)
        self.counters = SessionCounters()
        self.hub = Hub(feed, top_n=10, venues=lambda: {}, clock_ns=virtual_clock_ns)
        self.results: dict[int, tuple[int, str]] = {}

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(lambda task_status: run_hub(self.hub, self.states, self.events, self.control,
                                                        task_status=task_status))

    def connect(self, nursery: trio.Nursery, client: FakeClient) -> None:
        async def session() -> None:
            self.results[id(client)] = await run_session(
                client, self.control, config=self.feed, counters=self.counters, clock_ns=virtual_clock_ns)
        nursery.start_soon(session)

    async def produce(self, seconds: float, topic: str = "quotes:BTC/USDT") -> int:
        """Publish a new state for ``topic`` every tick; returns how many."""
        n = 0
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            n += 1
            self.states.put_nowait(topic, {"symbol": "BTC/USDT", "n": n, "pad": "x" * 200})
            await trio.sleep(self.feed.tick_s)
        return n


async def test_slow_and_stuck_clients_do_not_delay_a_fast_one(autojump_clock: trio.testing.MockClock) -> None:
    h = Harness()
    fast, slow, stuck = FakeClient(), FakeClient(send_delay=0.5), FakeClient(never_read=True)
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        for client in (fast, slow, stuck):
            h.connect(nursery, client)
            client.say({"op": "subscribe", "topic": "quotes:BTC/USDT"})
        await trio.sleep(0.01)
        produced = await h.produce(20)
        await trio.sleep(1)
        # the fast client saw every update, in order, each within one tick of its server timestamp
        deltas = [f for f in fast.of("quotes:BTC/USDT") if f["kind"] == "delta"]
        assert [f["data"]["n"] for f in deltas] == list(range(1, produced + 1))
        seqs = [f["seq"] for f in deltas]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        # the slow one lost intermediate frames, saw seq jumps, and was resynced with snapshots
        slow_frames = slow.of("quotes:BTC/USDT")
        assert len(slow_frames) < produced
        assert sum(1 for f in slow_frames if f["kind"] == "snapshot") >= 2
        assert h.hub.stats.resyncs >= 1
        # it kept overflowing past the lag limit, so it was told to reconnect (4001)
        assert slow.close_code == 4001 and "behind" in slow.close_reason
        # the stuck one was closed by the send deadline; both are gone from the hub
        assert stuck.close_code == 4001 and "send took" in stuck.close_reason
        assert h.counters.closed_send_timeout == 1
        assert h.counters.closed_lagging == 1
        assert len(h.hub.sessions) == 1
        nursery.cancel_scope.cancel()


async def test_one_encode_per_topic_per_tick(autojump_clock: trio.testing.MockClock) -> None:
    h = Harness()
    clients = [FakeClient() for _ in range(5)]
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        for client in clients:
            h.connect(nursery, client)
            client.say({"op": "subscribe", "topic": "quotes:BTC/USDT"})
        await trio.sleep(0.01)
        encoded_before = h.hub.stats.frames_encoded
        produced = await h.produce(5)
        await trio.sleep(0.5)
        assert h.hub.stats.frames_encoded - encoded_before == produced
        assert h.hub.stats.frames_offered >= produced * 5
        nursery.cancel_scope.cancel()


async def test_half_open_client_is_removed_within_the_heartbeat_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    h = Harness()
    silent, alive = FakeClient(answer_pings=False), FakeClient()
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        h.connect(nursery, silent)
        h.connect(nursery, alive)
        start = trio.current_time()
        while silent.close_code is None:
            await trio.sleep(0.5)
        assert silent.close_code == 4002
        assert trio.current_time() - start <= FEED.heartbeat_timeout_s + 1.5
        assert [f["kind"] for f in alive.of("_")][:2] == ["ping", "ping"]
        await trio.sleep(60)
        assert alive.close_code is None
        assert len(h.hub.sessions) == 1
        nursery.cancel_scope.cancel()


async def test_lagging_past_the_limit_is_closed_with_4001(autojump_clock: trio.testing.MockClock) -> None:
    # the outbox (8 frames) overflows every 2-4 s (one frame per tick, or fewer when the
    # hub conflates two updates into one tick): well inside the 5 s lag window
    feed = dataclasses.replace(FEED, send_timeout_s=20.0, lag_limit_s=5.0, heartbeat_timeout_s=60.0)
    h = Harness(feed)
    crawler = FakeClient(send_delay=3.0)
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        h.connect(nursery, crawler)
        crawler.say({"op": "subscribe", "topic": "quotes:BTC/USDT"})
        for i in range(40):
            h.states.put_nowait(f"quotes:S{i}/USDT", {})  # more topics the crawler does not get
        start = trio.current_time()
        while crawler.close_code is None:
            await h.produce(1)
        assert crawler.close_code == 4001
        # first overflow (<= 4 s) + the lag limit + the heartbeat's check period
        assert trio.current_time() - start <= 4.0 + 5.0 + 1.5
        assert "behind" in crawler.close_reason
        assert h.counters.closed_lagging == 1
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("message", "code"), [
    (b"\xc1", "bad_message"),
    ("text", "bad_message"),
    ({"op": 5}, "bad_message"),
    ([1, 2], "bad_message"),
    ({"op": "explode"}, "unknown_op"),
    ({"op": "subscribe", "topic": "quotes:../../etc"}, "bad_topic"),
    ({"op": "subscribe", "topic": 42}, "bad_topic"),
    ({"op": "subscribe"}, "bad_topic"),
])
async def test_malformed_client_messages_get_an_error_frame(
        autojump_clock: trio.testing.MockClock, message: Any, code: str) -> None:
    h = Harness()
    client = FakeClient()
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        h.connect(nursery, client)
        client.say(message)
        await trio.sleep(0.1)
        [error] = [f for f in client.of("_") if f["kind"] == "error"]
        assert error["data"]["code"] == code
        assert client.close_code is None
        nursery.cancel_scope.cancel()


async def test_repeated_abuse_closes_with_1008(autojump_clock: trio.testing.MockClock) -> None:
    h = Harness(dataclasses.replace(FEED, abuse_limit=3))
    client = FakeClient()
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        h.connect(nursery, client)
        for _ in range(3):
            client.say(b"\xc1")
        await trio.sleep(0.1)
        assert client.close_code == 1008
        nursery.cancel_scope.cancel()


async def test_oversized_message_closes_with_1009_and_rate_is_limited(
        autojump_clock: trio.testing.MockClock) -> None:
    h = Harness(dataclasses.replace(FEED, max_messages_per_s=5.0))
    big, chatty = FakeClient(), FakeClient()
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        h.connect(nursery, big)
        h.connect(nursery, chatty)
        big.say(b"\x00" * 5000)
        for _ in range(12):
            chatty.say({"op": "ping"})
        await trio.sleep(0.1)
        assert big.close_code == 1009
        errors = [f["data"]["code"] for f in chatty.of("_") if f["kind"] == "error"]
        assert errors.count("rate_limited") == 7
        assert h.counters.rate_limited == 7
        nursery.cancel_scope.cancel()


async def test_sessions_over_the_limit_are_refused_with_1013_and_topics_are_capped(
        autojump_clock: trio.testing.MockClock) -> None:
    h = Harness(dataclasses.replace(FEED, max_sessions=2, max_topics_per_session=2))
    clients = [FakeClient() for _ in range(3)]
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        for client in clients:
            h.connect(nursery, client)
            await trio.sleep(0.01)
        assert clients[2].close_code == 1013
        for topic in ("venues", "symbols", "opportunities"):
            clients[0].say({"op": "subscribe", "topic": topic})
        await trio.sleep(0.1)
        snapshots = [f["topic"] for f in clients[0].frames if f["kind"] == "snapshot"]
        assert snapshots == ["venues", "symbols"]
        [error] = [f for f in clients[0].of("_") if f["kind"] == "error"]
        assert error["data"]["code"] == "too_many_topics"
        clients[1].leave()
        await trio.sleep(0.5)
        assert len(h.hub.sessions) == 1
        nursery.cancel_scope.cancel()


async def test_unsubscribe_stops_updates(autojump_clock: trio.testing.MockClock) -> None:
    h = Harness()
    client = FakeClient()
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        h.connect(nursery, client)
        client.say({"op": "subscribe", "topic": "quotes:BTC/USDT"})
        await h.produce(1)
        client.say({"op": "unsubscribe", "topic": "quotes:BTC/USDT"})
        await trio.sleep(0.01)
        count = len(client.of("quotes:BTC/USDT"))
        await h.produce(2)
        assert len(client.of("quotes:BTC/USDT")) == count
        assert not h.hub.subscribers
        nursery.cancel_scope.cancel()


async def test_a_shutdown_closes_sessions_with_1001(autojump_clock: trio.testing.MockClock) -> None:
    h = Harness()
    client = FakeClient()
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        h.connect(nursery, client)
        client.say({"op": "subscribe", "topic": "venues"})
        await trio.sleep(1)
        nursery.cancel_scope.cancel()  # the server stops
    assert (client.close_code, client.close_reason) == (1001, "server shutting down")
