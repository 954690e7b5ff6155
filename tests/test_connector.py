"""Connector: resubscribe on every connect, jittered backoff, heartbeats, silence watchdog,
malformed frames counted, and no growth across reconnects (FAILURE_MODES #2, #4, #8, #11)."""

from __future__ import annotations

import gc
import json
import random

import trio
import trio.testing

from actors.channels import ConflatingChannel, DropChannel
from actors.config import ConnectorConfig, VenueConfig
from actors.connector import ConnectionPlan, ConnectionStatus, QuoteSinks, run_connector, shard_of
from actors.monitor import task_count
from actors.records import Quote, SymbolInfo, VenueDown
from actors.venues.binance import BinanceCodec
from actors.venues.bybit import BybitCodec
from tests.fakes import FakeVenue, virtual_clock_ns

BTC = SymbolInfo("binance", "BTCUSDT", "BTC", "USDT")
ETH = SymbolInfo("binance", "ETHUSDT", "ETH", "USDT")
SYMBOLS = {"BTCUSDT": BTC, "ETHUSDT": ETH}
CONNECTOR = ConnectorConfig(backoff_initial_s=1.0, backoff_max_s=8.0, batch_max_records=4,
                            batch_max_delay_s=0.05)
VENUE = VenueConfig(rest_url="http://x", ws_url="ws://x", silence_reconnect_s=10.0)


def book_ticker(native: str, u: int, bid: str = "100.0", ask: str = "100.1") -> str:
    return json.dumps({"u": u, "s": native, "b": bid, "B": "1.5", "a": ask, "A": "2"})


def make(shards: int = 2, codec: object | None = None) -> tuple[
        ConnectionPlan, QuoteSinks, ConnectionStatus, list[ConflatingChannel], DropChannel]:
    inboxes = [ConflatingChannel[tuple[str, str], Quote | VenueDown](f"s{i}", 100) for i in range(shards)]
    recorder = DropChannel[object]("rec", 1000)
    codec = codec or BinanceCodec(SYMBOLS)
    venue = getattr(codec, "name", "binance")
    plan = ConnectionPlan(venue, 0, "ws://fake/ws", ("BTCUSDT", "ETHUSDT"), codec, False)  # type: ignore[arg-type]
    return plan, QuoteSinks(inboxes, recorder), ConnectionStatus(venue, 0), inboxes, recorder


async def start(nursery: trio.Nursery, venue: FakeVenue, plan: ConnectionPlan, sinks: QuoteSinks,
                status: ConnectionStatus, venue_config: VenueConfig = VENUE) -> None:
    await nursery.start(lambda task_status: run_connector(
        plan, sinks, status, venue_config=venue_config, config=CONNECTOR, connect=venue.connect,
        clock_ns=virtual_clock_ns, rng=random.Random(1), task_status=task_status))


async def test_quotes_reach_the_owning_shard_and_the_recorder(autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue()
    plan, sinks, status, inboxes, recorder = make()
    async with trio.open_nursery() as nursery:
        await start(nursery, venue, plan, sinks, status)
        await trio.sleep(1)
        venue.live.push(book_ticker("BTCUSDT", 1))
        venue.live.push(book_ticker("BTCUSDT", 2, bid="100.05"))  # conflated with the first
        venue.live.push(book_ticker("ETHUSDT", 3))
        await trio.sleep(0.1)
        pending = [inbox.receive_batch_nowait() for inbox in inboxes]
        btc = pending[shard_of("BTC/USDT", 2)]
        assert btc[("binance", "BTC/USDT")].bid == 100.05
        assert btc[("binance", "BTC/USDT")].seq == 2
        assert ("binance", "ETH/USDT") in pending[shard_of("ETH/USDT", 2)]
        assert sum(len(p) for p in pending) == 2
        assert [r.seq for r in recorder.receive_batch_nowait()] == [1, 2, 3]  # flushed by delay
        assert status.quotes == 3 and status.connected
        nursery.cancel_scope.cancel()


async def test_every_connect_resubscribes_and_backoff_is_capped_and_jittered(
        autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue()
    plan, sinks, status, inboxes, _ = make()
    connect_times: list[float] = []
    async with trio.open_nursery() as nursery:
        await start(nursery, venue, plan, sinks, status)
        for _ in range(6):
            await trio.sleep(0.5)
            connect_times.append(trio.current_time())
            venue.live.push(book_ticker("BTCUSDT", 1))
            await trio.sleep(0.5)
            venue.live.drop()
            while len(venue.connections) == len(connect_times):
                await venue.opened.park()
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    subscribes = [[json.loads(m)["params"] for m in c.sent] for c in venue.connections]
    # the same subscription, once, on every connect
    assert subscribes == [[["btcusdt@bookTicker", "ethusdt@bookTicker"]]] * 7
    assert status.reconnects == 6
    assert status.connects == 7
    # VenueDown markers reached every shard, so the dead connection's quotes are stale
    for inbox in inboxes:
        assert isinstance(inbox.receive_batch_nowait()[("binance", "")], VenueDown)


async def test_refused_connections_back_off_exponentially_to_the_cap(
        autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue()
    venue.refuse = True
    plan, sinks, status, _, _ = make()
    async with trio.open_nursery() as nursery:
        await start(nursery, venue, plan, sinks, status)
        await trio.sleep(100)
        # delays are drawn from [d/2, d] with d = 1, 2, 4, 8, 8, ...: at most 100/4 + 3 attempts
        assert 12 <= status.reconnects <= 28
        assert status.last_error == "OSError: connection refused"
        assert not status.connected
        venue.refuse = False
        await trio.sleep(9)
        assert status.connected
        nursery.cancel_scope.cancel()


async def test_silent_feed_is_reconnected_even_while_heartbeats_flow(
        autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue()
    codec = BybitCodec({"BTCUSDT": SymbolInfo("bybit", "BTCUSDT", "BTC", "USDT")})
    plan, sinks, status, _, _ = make(codec=codec)
    async with trio.open_nursery() as nursery:
        await start(nursery, venue, plan, sinks, status)
        while not venue.connections:
            await venue.opened.park()
        first = venue.live
        pong = json.dumps({"success": True, "ret_msg": "pong", "conn_id": "c", "req_id": "1", "op": "ping"})
        silent_since = trio.current_time()
        while len(venue.connections) == 1:
            first.push(pong)  # heartbeat answers keep coming, data does not
            await trio.sleep(1)
        detected_after = trio.current_time() - silent_since
        assert 10 <= detected_after <= 12
        assert status.stale_reconnects == 1
        assert status.last_error is not None and "StaleFeed" in status.last_error
        nursery.cancel_scope.cancel()


async def test_bybit_heartbeat_ping_every_20s(autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue()
    codec = BybitCodec({"BTCUSDT": SymbolInfo("bybit", "BTCUSDT", "BTC", "USDT")})
    plan, sinks, status, _, _ = make(codec=codec)
    quiet = VenueConfig(rest_url="http://x", ws_url="ws://x", silence_reconnect_s=1000.0)
    async with trio.open_nursery() as nursery:
        await start(nursery, venue, plan, sinks, status, quiet)
        await trio.sleep(65)
        pings = [json.loads(m) for m in venue.live.sent if '"ping"' in str(m)]
        assert len(pings) == 3
        assert all(p["op"] == "ping" for p in pings)
        nursery.cancel_scope.cancel()


async def test_malformed_frames_are_counted_and_do_not_break_the_connection(
        autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue()
    plan, sinks, status, inboxes, _ = make(shards=1)
    async with trio.open_nursery() as nursery:
        await start(nursery, venue, plan, sinks, status)
        await trio.sleep(1)
        for bad in ('{"u":1,"s":"BTCUSDT"', "[]", '{"u":1,"s":"BTCUSDT","b":"x","B":"1","a":"1","A":"1"}', b"\xff"):
            venue.live.push(bad)
        venue.live.push(book_ticker("DOGEUSDT", 9))  # well formed, not ours
        venue.live.push(book_ticker("BTCUSDT", 10))
        await trio.sleep(0.1)
        assert status.bad_frames == 4
        assert status.unknown_symbols == 1
        assert status.last_bad_frame
        assert ("binance", "BTC/USDT") in inboxes[0].receive_batch_nowait()
        assert len(venue.connections) == 1
        nursery.cancel_scope.cancel()


async def test_a_thousand_reconnects_leave_tasks_and_objects_flat(
        autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue()
    plan, sinks, status, inboxes, recorder = make()

    async def cycle(n: int) -> None:
        for _ in range(n):
            target = len(venue.connections) + 1
            venue.live.push(book_ticker("BTCUSDT", 1))
            venue.live.drop()
            while len(venue.connections) < target:
                await venue.opened.park()
            await trio.sleep(0.3)
            for inbox in inboxes:
                inbox.receive_batch_nowait()
            recorder.receive_batch_nowait()
            venue.connections[:-1] = []  # the test's own log of connections must not count

    async with trio.open_nursery() as nursery:
        await start(nursery, venue, plan, sinks, status)
        await trio.sleep(0.5)
        await cycle(20)
        gc.collect()
        tasks_before, objects_before = task_count(), len(gc.get_objects())
        await cycle(1000)
        gc.collect()
        tasks_after, objects_after = task_count(), len(gc.get_objects())
        assert status.reconnects == 1020
        assert tasks_after == tasks_before
        assert objects_after - objects_before < 200, (objects_before, objects_after)
        nursery.cancel_scope.cancel()
