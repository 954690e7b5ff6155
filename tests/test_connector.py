"""Connector: resubscribe on every connect, jittered backoff, heartbeats, silence watchdog,
malformed frames counted, and no growth across reconnects (FAILURE_MODES #2, #4, #8, #11)."""

from __future__ import annotations

import dataclasses
import functools
import gc
import itertools
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


async def _feed_all(venue: FakeVenue, every: float, stop: trio.Event) -> None:
    """Push a quote on every open connection, like a live venue."""
    u = 0
    while not stop.is_set():
        u += 1
        for conn in venue.connections:
            if not conn.closed:
                conn.push(book_ticker("BTCUSDT", u))
        await trio.sleep(every)


async def test_age_rotation_overlaps_connections_so_no_gap_appears(
        autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue()
    plan, sinks, status, inboxes, _ = make(shards=1)
    rotating = VenueConfig(rest_url="http://x", ws_url="ws://x", silence_reconnect_s=10.0, rotate_after_s=100.0)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await start(nursery, venue, plan, sinks, status, rotating)
        nursery.start_soon(_feed_all, venue, 0.5, stop)
        while len(venue.connections) < 2:
            await venue.opened.park()
        first, second = venue.connections
        assert not first.closed  # the old connection still delivers while the new one subscribes
        rotated_at = trio.current_time()
        while not first.closed:
            await trio.sleep(0.1)
        assert trio.current_time() - rotated_at <= 1.0  # closed as soon as the successor delivered
        assert not second.closed
        assert len(second.sent) == 1  # the successor subscribed before taking over
        assert status.rotations == 1 and status.reconnects == 0
        batch = inboxes[0].receive_batch_nowait()
        assert ("binance", "") not in batch  # no VenueDown: the hand-off left no gap
        assert status.connected
        stop.set()
        nursery.cancel_scope.cancel()


async def test_venue_notice_rotates_at_once(autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue()
    plan, sinks, status, inboxes, _ = make(shards=1)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await start(nursery, venue, plan, sinks, status)
        nursery.start_soon(_feed_all, venue, 0.5, stop)
        await trio.sleep(5)
        assert len(venue.connections) == 1
        venue.live.push(json.dumps({"e": "serverShutdown", "E": 1700000000000}))
        await trio.sleep(2)
        assert status.notices == 1 and status.rotations == 1
        assert len(venue.connections) == 2
        assert venue.connections[0].closed and not venue.connections[1].closed
        assert ("binance", "") not in inboxes[0].receive_batch_nowait()
        stop.set()
        nursery.cancel_scope.cancel()


async def test_a_successor_that_fails_leaves_the_old_connection_serving(
        autojump_clock: trio.testing.MockClock) -> None:
    venue = FakeVenue()
    plan, sinks, status, _, _ = make(shards=1)
    rotating = VenueConfig(rest_url="http://x", ws_url="ws://x", silence_reconnect_s=10.0, rotate_after_s=100.0)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await start(nursery, venue, plan, sinks, status, rotating)
        while not venue.connections:
            await venue.opened.park()
        first = venue.live
        nursery.start_soon(_feed_all, venue, 0.5, stop)
        await trio.sleep(99)
        venue.refuse = True  # the successor cannot connect
        await trio.sleep(20)
        assert not first.closed and status.connected
        assert status.reconnects >= 1  # the failed successor is retried with backoff
        venue.refuse = False
        await trio.sleep(40)
        assert first.closed and not venue.live.closed
        stop.set()
        nursery.cancel_scope.cancel()


async def test_connection_attempts_of_a_venue_are_paced(autojump_clock: trio.testing.MockClock) -> None:
    from actors.connector import ConnectPacer

    venue = FakeVenue()
    pacer = ConnectPacer(1.0)
    opened_at: list[float] = []

    async def note() -> None:
        seen = 0
        while True:
            await venue.opened.park()
            opened_at.extend([trio.current_time()] * (len(venue.connections) - seen))
            seen = len(venue.connections)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(note)
        for i in range(10):
            plan, sinks, status, _, _ = make(shards=1)
            plan = dataclasses.replace(plan, connection=i)
            quiet = VenueConfig(rest_url="http://x", ws_url="ws://x", silence_reconnect_s=1000.0)
            await nursery.start(functools.partial(
                run_connector, plan, sinks, status, venue_config=quiet, config=CONNECTOR,
                connect=venue.connect, clock_ns=virtual_clock_ns, pacer=pacer))
        await trio.sleep(15)
        assert len(opened_at) == 10
        gaps = [b - a for a, b in itertools.pairwise(sorted(opened_at))]
        assert min(gaps) >= 1.0 - 1e-9
        nursery.cancel_scope.cancel()


async def test_bootstrap_gives_the_url_and_ping_interval_of_each_connection(
        autojump_clock: trio.testing.MockClock) -> None:
    from actors.venues.base import Bootstrap

    venue = FakeVenue()
    codec = BybitCodec({"BTCUSDT": SymbolInfo("bybit", "BTCUSDT", "BTC", "USDT")})
    plan, sinks, status, _, _ = make(codec=codec)
    tokens = iter(range(1, 100))

    async def bootstrap() -> Bootstrap:
        await trio.sleep(0.1)
        return Bootstrap(f"ws://fake/endpoint?token=t{next(tokens)}&connectId=c", ping_interval_s=5.0)

    quiet = VenueConfig(rest_url="http://x", ws_url="ws://x", silence_reconnect_s=1000.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(
            run_connector, plan, sinks, status, venue_config=quiet, config=CONNECTOR,
            connect=venue.connect, clock_ns=virtual_clock_ns, bootstrap=bootstrap))
        await trio.sleep(16)
        assert venue.live.url == "ws://fake/endpoint?token=t1&connectId=c"
        assert sum('"ping"' in str(m) for m in venue.live.sent) == 3  # every 5 s, not the codec's 20 s
        venue.live.drop()
        await trio.sleep(3)
        assert venue.live.url.endswith("token=t2&connectId=c")  # a fresh token for every connect
        nursery.cancel_scope.cancel()


async def test_kucoin_subscribes_only_after_the_welcome(autojump_clock: trio.testing.MockClock) -> None:
    from actors.venues.kucoin import KucoinCodec

    venue = FakeVenue()
    codec = KucoinCodec({"BTC-USDT": SymbolInfo("kucoin", "BTC-USDT", "BTC", "USDT")})
    plan, sinks, status, _, _ = make(codec=codec)
    quiet = VenueConfig(rest_url="http://x", ws_url="ws://x", silence_reconnect_s=1000.0)
    async with trio.open_nursery() as nursery:
        await start(nursery, venue, plan, sinks, status, quiet)
        while not venue.connections:
            await venue.opened.park()
        await trio.sleep(3)
        assert venue.live.sent == []  # nothing before the welcome
        venue.live.push(json.dumps({"id": "c1", "type": "welcome"}))
        await trio.sleep(1)
        assert [json.loads(m)["type"] for m in venue.live.sent] == ["subscribe"]
        nursery.cancel_scope.cancel()
