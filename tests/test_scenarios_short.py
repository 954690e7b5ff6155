"""Issue 7, item 3: short, deterministic versions of the load and fault scenarios.

bench/ runs each scenario for real, for minutes; these run in seconds and guard each
scenario's mechanism in CI. Where a mechanism is already guarded elsewhere the test is
named here instead of repeated:

* reconnect storm: one connector, 1,000 reconnects, flat:
  ``test_connector.py::test_a_thousand_reconnects_leave_tasks_and_objects_flat``; the
  connector against the simulators: ``test_connector_sim.py``. Here: the whole pipeline,
  two venues, on virtual time and against the simulators on loopback.
* slow clients: one fast, one slow, one stuck session:
  ``test_feed.py::test_slow_and_stuck_clients_do_not_delay_a_fast_one`` and
  ``::test_a_slow_session_sees_a_seq_jump_onto_a_fresh_snapshot_while_a_fast_one_is_not_delayed``.
  Here: the scenario's proportions (10 % slow, 5 % stuck) over several topics.
* overload: every edge past its bound at once, in the whole pipeline, then recovery.
* graceful shutdown: ``test_cli.py::test_demo_serves_health_and_exits_0_on_sigterm_with_readable_parquet``
  (SIGTERM -> exit 0 within 5 s, Parquet readable) and ``test_shutdown_under_load.py``
  (every row handed to the recorder is on disk, in process and through SIGTERM);
  ``test_bench_harness.py`` runs the bench's shutdown and crash scenarios briefly.
* crash (SIGKILL, restart, loss within one flush interval):
  ``test_recorder_crash.py::test_kill_9_mid_write_loses_at_most_one_flush_interval``.
* 24 h soak: ``test_soak_virtual.py::test_twenty_four_simulated_hours_stay_flat``.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import math
from pathlib import Path
from typing import Any

import httpx
import trio
import trio.testing

from actors.config import Config, parse_config
from actors.connector import QuoteSinks
from actors.monitor import task_count
from actors.records import Quote
from app.runtime import Runtime, run_spreadwatch
from app.sim.server import SimVenueControl
from tests.fakes import (
    FakeConnection,
    FakeVenue,
    RestVenues,
    binance_frame,
    bybit_frame,
    only,
    sleep_to_mid_tick,
    virtual_clock_ns,
)
from tests.pipeline import sim_pipeline
from tests.test_feed import FEED, FakeClient, Harness


def _subscribed_topics(conn: FakeConnection) -> list[str]:
    """Every topic a connection asked for, in order (binance ``params``, bybit ``args``)."""
    topics: list[str] = []
    for message in conn.sent:
        doc = json.loads(message)
        if doc.get("method") == "SUBSCRIBE":
            topics += doc["params"]
        elif doc.get("op") == "subscribe":
            topics += doc["args"]
    return topics


def _objects() -> int:
    """gc-tracked objects, less those only trio's deadline heap still holds.

    trio drops the heap entry of an exited cancel scope lazily, once more than
    ``2 x active + 1000`` entries are stale (``trio._core._run.Deadlines``). Every binance
    connection sleeps towards its age rotation (~23.5 h away), so each one that ends
    leaves such an entry (a tuple, the scope, its cancel reason) until trio prunes: bounded
    by trio, and not ours to count.
    """
    heap = trio._core._run.GLOBAL_RUN_CONTEXT.runner.deadlines._heap
    stale: set[int] = set()
    for entry in heap:
        deadline, _, scope = entry
        if scope._registered_deadline != deadline:
            stale.add(id(entry))
            if scope._registered_deadline == math.inf:  # exited: only the heap holds it
                stale.update((id(scope), id(scope._cancel_reason)))
    return sum(1 for o in gc.get_objects() if id(o) not in stale)


# -- reconnect storm -------------------------------------------------------------------------


def _storm_config() -> Config:
    return parse_config({
        "server": {"loop_monitor_interval_s": 1.0},
        "connector": {"backoff_initial_s": 0.2, "backoff_max_s": 1.0},
        "venues": only({
            "binance": {"rest_url": "http://binance.test", "ws_url": "ws://binance.test",
                        "silence_reconnect_s": 60.0, "subscribe_trades": False},
            "bybit": {"rest_url": "http://bybit.test", "ws_url": "ws://bybit.test",
                      "silence_reconnect_s": 60.0, "subscribe_trades": False},
        }),
    })


def _registry_sizes(runtime: Runtime) -> dict[str, Any]:
    """Every registry a reconnect could grow, by name."""
    shards = runtime.shards
    return {
        "venue connections": {n: len(s.connections) for n, s in runtime.venue_states.items()},
        "actors": len(runtime.supervisor.snapshot()),
        "shard books": sum(len(b) for s in shards for b in s.books.values()),
        "shard venue_down_at": sum(len(s.venue_down_at) for s in shards),
        "shard recent_downs": sum(len(d) for s in shards for d in s.recent_downs.values()),
        "shard tracks": sum(len(t) for s in shards for t in s.tracks.values()),
        "shard series": sum(s.stats.series for s in shards),
        "hub topics": len(runtime.hub.state),
        "hub seq": len(runtime.hub.seq),
        "hub subscribers": len(runtime.hub.subscribers),
        "hub sessions": len(runtime.hub.sessions),
        "plan version": runtime.plan.version,
    }


async def test_reconnect_storm_leaves_the_whole_pipeline_flat(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    """Both venues drop every connection, 300 times in about ten virtual minutes (a drop
    every two seconds per venue): tasks, objects and every registry stay as they were
    after warm-up, and every connection subscribes exactly once to the same topics."""
    venue = FakeVenue()
    rest = RestVenues()
    shutdown = trio.Event()
    first_topics: dict[str, list[str]] = {}
    u = 0

    def venue_of(conn: FakeConnection) -> str:
        return "binance" if "binance" in conn.url else "bybit"

    async def storm_round() -> None:
        nonlocal u
        live = [c for c in venue.connections if not c.closed]
        assert len(live) == 2, [c.url for c in live]
        target = len(venue.connections) + 2
        for conn in live:
            conn.drop()
        while len(venue.connections) < target:
            await venue.opened.park()
        fresh = venue.connections[-2:]
        while not all(_subscribed_topics(c) for c in fresh):
            await trio.sleep(0.05)
        u += 1
        for conn in fresh:
            conn.push(binance_frame(u, 100.0) if venue_of(conn) == "binance" else bybit_frame(u, 100.5))
        await trio.sleep(0.5)  # the quotes reach the shards, the batches the recorder
        for conn in fresh:
            topics = _subscribed_topics(conn)
            assert len(topics) == len(set(topics)), f"a duplicate subscription: {topics}"
            assert topics == first_topics.setdefault(venue_of(conn), topics)
        venue.connections[:-2] = []  # the fake's own log of connections must not count

    async with trio.open_nursery() as nursery:
        runtime: Runtime = await nursery.start(lambda task_status: run_spreadwatch(
            _storm_config(), shutdown=shutdown, connect=venue.connect,
            http_transport=httpx.MockTransport(rest.handler), data_dir=tmp_path,
            clock_ns=virtual_clock_ns, task_status=task_status))
        while len(venue.connections) < 2 or not all(_subscribed_topics(c) for c in venue.connections):
            await trio.sleep(0.1)
        # warm-up: the shards' bounded logs of recent disconnects (DOWNS_KEPT per venue),
        # caches and the loop monitor's samples fill up
        for _ in range(70):
            await storm_round()
        await trio.sleep(1.5)  # at least one recorder flush and every tick in between
        gc.collect()
        tasks_before, objects_before = task_count(), _objects()
        registries_before = _registry_sizes(runtime)
        for _ in range(300):
            await storm_round()
        await trio.sleep(1.5)
        gc.collect()
        tasks_after, objects_after = task_count(), _objects()
        registries_after = _registry_sizes(runtime)
        reconnects = sum(c.reconnects for s in runtime.venue_states.values() for c in s.connections)
        assert reconnects == 2 * 370
        assert tasks_after == tasks_before
        assert registries_after == registries_before
        # a few hundred objects come and go with the moment sampled (quotes in flight, the
        # recorder's partition buffers); one object kept per reconnect would add 600
        assert objects_after - objects_before < 300, (objects_before, objects_after)
        assert all(a["restarts"] == 0 for a in runtime.supervisor.snapshot())
        shutdown.set()


async def _settled_task_count(quiet_samples: int = 10, interval_s: float = 0.02) -> int:
    """The run's task count once it has stopped moving: right after a resubscription the
    dropped connection's close (and the simulator's side of it) may still be winding
    down, so a single sample can catch a few tasks more. A task leaked per reconnect
    never settles back, so the rounds still differ."""
    count, same = task_count(), 0
    while same < quiet_samples:
        await trio.sleep(interval_s)
        now = task_count()
        same = same + 1 if now == count else 0
        count = now
    return count


def _fast_reconnects(config: Config) -> Config:
    return dataclasses.replace(config, connector=dataclasses.replace(
        config.connector, backoff_initial_s=0.05, backoff_max_s=0.2))


async def test_reconnect_storm_against_the_simulators_never_duplicates_a_subscription(tmp_path: Path) -> None:
    """The real connectors (trio-websocket, real codecs) of the whole pipeline against the
    simulated Binance and Bybit on loopback, both dropping every connection over and over:
    each venue sees exactly one open connection per planned connection, each subscribed
    once to the same topics, and the pipeline's tasks and registries stay flat."""
    controls = {name: SimVenueControl() for name in ("okx", "bybit")}
    rounds, warm_up = 5, 2

    async def all_resubscribed(accepted: int) -> dict[str, dict[int, frozenset[str]]]:
        for control in controls.values():
            await control.wait_for(lambda s: s.connections_accepted >= accepted and s.connections_open == 1)
        # the subscription is complete when the connection's topic set stops changing and
        # matches the first connection's (or, on the first connection, when data flows)
        while True:
            subs = {name: control.subscriptions() for name, control in controls.items()}
            if all(len(s) == 1 and next(iter(s.values())) == first.get(name, next(iter(s.values())))
                   and next(iter(s.values())) for name, s in subs.items()):
                return subs
            await trio.sleep(0.02)

    first: dict[str, frozenset[str]] = {}
    with trio.fail_after(30):
        async with sim_pipeline(tmp_path, tuple(controls), seed=5, symbols=6, controls=controls,
                                configure=_fast_reconnects) as runtime:
            subs = await all_resubscribed(1)
            await trio.sleep(0.5)  # the topics of the first connection are complete
            first.update({name: next(iter(s.values())) for name, s in
                          ((n, c.subscriptions()) for n, c in controls.items())})
            samples: list[tuple[int, dict[str, Any]]] = []
            for round_ in range(1, rounds + 1):
                for control in controls.values():
                    control.drop_connections()
                subs = await all_resubscribed(round_ + 1)
                assert {name: len(s) for name, s in subs.items()} == {"okx": 1, "bybit": 1}
                if round_ >= warm_up:
                    # the simulator has every topic a moment before the connector is done
                    # pacing its subscribe messages and starts the connection's heartbeat,
                    # watchdog and batcher: sample once every connection is live
                    while any(c.state != "live" for s in runtime.venue_states.values()
                              for c in s.connections):
                        await trio.sleep(0.02)
                    registries = _registry_sizes(runtime)
                    # a bounded log (DOWNS_KEPT per venue) that fills over 64 drops; the
                    # storm on virtual time above checks it past its bound
                    del registries["shard recent_downs"]
                    # open opportunities follow the simulated prices (0 or 2 here, seen in
                    # CI): not a registry a reconnect grows, but bounded by the ordered
                    # venue pairs of each symbol
                    assert registries.pop("shard tracks") <= 6 * len(controls) * (len(controls) - 1)
                    samples.append((await _settled_task_count(), registries))
            for name, control in controls.items():
                stats = control.statistics()
                assert stats.connections_accepted == rounds + 1, name
                assert stats.duplicate_subscriptions == 0 and stats.rejected_topics == 0, name
                per_connection: dict[int, list[str]] = {}
                for event in control.subscription_log():
                    per_connection.setdefault(event.connection, []).append(event.topic)
                assert len(per_connection) == rounds + 1
                assert all(sorted(t) == sorted(first[name]) for t in per_connection.values()), name
            reconnects = {n: sum(c.reconnects for c in s.connections) for n, s in runtime.venue_states.items()}
            assert reconnects == {"okx": rounds, "bybit": rounds}
            assert len({tasks for tasks, _ in samples}) == 1, [t for t, _ in samples]
            assert all(registries == samples[0][1] for _, registries in samples), samples


# -- slow clients ----------------------------------------------------------------------------


async def test_a_tenth_slow_and_a_twentieth_stuck_sessions_never_hold_up_the_fast_ones(
        autojump_clock: trio.testing.MockClock) -> None:
    """40 sessions on three topics: 4 read with 500 ms latency, 2 never read. Every fast
    session gets every delta of every topic the moment it is broadcast; each slow one
    sees a seq jump answered by a snapshot, then is closed with 4001 for lagging; the
    stuck ones are closed with 4001 by the send deadline; the hub forgets them all."""
    h = Harness(dataclasses.replace(FEED, max_sessions=100))
    fast = [FakeClient() for _ in range(34)]
    slow = [FakeClient(send_delay=0.5) for _ in range(4)]
    stuck = [FakeClient(never_read=True) for _ in range(2)]
    topics = ("quotes:BTC/USDT", "quotes:ETH/USDT", "spreads:BTC/USDT")
    async with trio.open_nursery() as nursery:
        await h.start(nursery)
        for client in (*fast, *slow, *stuck):
            h.connect(nursery, client)
            for topic in topics:
                client.say({"op": "subscribe", "topic": topic})
            await trio.sleep(0.001)  # within the hub's control channel (100 requests)
        produced = 0
        end = trio.current_time() + 20
        await sleep_to_mid_tick(h.feed.tick_s)
        while trio.current_time() < end:
            produced += 1
            for topic in topics:
                h.states.put_nowait(topic, {"symbol": topic.split(":")[1], "n": produced, "pad": "x" * 200})
            await sleep_to_mid_tick(h.feed.tick_s)
        await trio.sleep(1)
        for client in fast:
            for topic in topics:
                deltas = [(f, t) for f, t in zip(client.frames, client.arrivals, strict=True)
                          if f["topic"] == topic and f["kind"] == "delta"]
                assert [f["data"]["n"] for f, _ in deltas] == list(range(1, produced + 1))
                seqs = [f["seq"] for f, _ in deltas]
                assert seqs == list(range(seqs[0], seqs[0] + produced))
                # on virtual time, "on time" is exact: received when the hub stamped it
                # (within the millisecond the stamp is floored to)
                assert all(abs(t * 1000 - (f["ts"] - 1_700_000_000_000)) < 1 for f, t in deltas)
            assert client.close_code is None
        for client in slow:
            for topic in topics:
                frames = client.of(topic)
                assert len(frames) < produced  # it lost frames ...
                # ... and got a resync snapshot of every topic (seq > 0: not the one
                # answering its subscribe), each topic in turn, however slow it reads
                assert any(f["kind"] == "snapshot" and f["seq"] > 0 for f in frames), topic
                assert all(b["seq"] >= a["seq"] for a, b in itertools.pairwise(frames)), topic
            assert client.close_code == 4001 and "behind" in client.close_reason
        for client in stuck:
            assert client.close_code == 4001 and "send took" in client.close_reason
        assert h.counters.closed_lagging == len(slow)
        assert h.counters.closed_send_timeout == len(stuck)
        assert h.hub.stats.frames_dropped > 0 and h.hub.stats.resyncs >= len(slow)
        assert len(h.hub.sessions) == len(fast)
        assert {t: len(s) for t, s in h.hub.subscribers.items()} == dict.fromkeys(topics, len(fast))
        nursery.cancel_scope.cancel()


# -- overload --------------------------------------------------------------------------------

OVERLOAD_SYMBOLS = (*(f"S{i}/USDT" for i in range(200)), "BTC/USDT")


def _overload_config() -> Config:
    return parse_config({
        "server": {"loop_monitor_interval_s": 1.0},
        "channels": {"shard_input_keys": 32, "recorder_input": 500, "hub_state_keys": 40, "hub_events": 8},
        "spreads": {"tick_s": 0.25},
        "feed": {"tick_s": 1.0},  # four shard publications per hub tick: conflated
        "windows": {"max_series": 40, "shards": 4},
        "recorder": {"max_buffered_rows": 2000},
        "venues": only({"binance": {"rest_url": "http://x", "ws_url": "ws://x", "stale_after_s": 2.0},
                        "bybit": {"rest_url": "http://x", "ws_url": "ws://x", "stale_after_s": 2.0}}),
    })


def _quote(venue: str, symbol: str, bid: float, seq: int) -> Quote:
    return Quote(venue, symbol, bid, 1.0, bid * 1.0001, 1.0, 0, virtual_clock_ns(), seq)


async def test_overload_keeps_every_edge_bounded_counts_the_excess_and_recovers(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    """Venues offer far more than the pipeline takes: bursts of 201 symbols x 2 venues x 3
    updates every 50 ms, crossed every other burst (opportunities open and close), and
    1,200 records per burst for the recorder. Every edge stays within its capacity, the
    window series within their cap, the recorder within its row cap; each edge counts
    what it dropped or conflated. When the load returns to normal, fresh quotes flow at
    once and nothing more is dropped; a second overload leaves no more objects behind."""
    config = _overload_config()
    sinks_cell: list[QuoteSinks] = []

    async def source(sinks: QuoteSinks, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sinks_cell.append(sinks)  # the test drives the load
        task_status.started()
        await trio.sleep_forever()

    shutdown = trio.Event()
    seq = 0

    def check_bounds(runtime: Runtime) -> None:
        for edge in runtime.edges:
            stats = edge.statistics()
            assert stats.used <= stats.capacity and stats.peak <= stats.capacity, stats
        for shard in runtime.shards:
            assert len(shard.quote_series) <= shard.max_series
            assert len(shard.spread_series) <= shard.max_series
        assert runtime.recorder_status is not None
        assert runtime.recorder_status.peak_buffered_rows <= config.recorder.max_buffered_rows

    async def overload(runtime: Runtime, seconds: float) -> None:
        nonlocal seq
        sinks = sinks_cell[0]
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            crossed = seq % 2 == 0
            records: list[Quote] = []
            for _ in range(3):  # no checkpoint: a burst read faster than anyone downstream runs
                for symbol in OVERLOAD_SYMBOLS:
                    seq += 1
                    for venue, bid in (("binance", 100.0), ("bybit", 101.0 if crossed else 100.0)):
                        quote = _quote(venue, symbol, bid, seq)
                        sinks.quote(quote)
                        records.append(quote)
            assert sinks.recorder is not None
            sinks.recorder.put_nowait(records[:1200])
            check_bounds(runtime)
            await trio.sleep(0.05)
            check_bounds(runtime)

    async def normal(runtime: Runtime, seconds: float) -> float:
        """One quote per venue every 0.5 s on BTC/USDT; returns the last bid."""
        nonlocal seq
        sinks = sinks_cell[0]
        bid = 0.0
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            seq += 1
            bid = 200.0 + seq % 7
            for venue in ("binance", "bybit"):
                quote = _quote(venue, "BTC/USDT", bid, seq)
                sinks.quote(quote)
                assert sinks.recorder is not None
                sinks.recorder.put_one_nowait(quote)
            await trio.sleep(0.5)
            check_bounds(runtime)
        return bid

    def counters(runtime: Runtime) -> dict[str, tuple[int, int]]:
        return {e.name: (e.statistics().dropped, e.statistics().conflated) for e in runtime.edges}

    def dropped(runtime: Runtime) -> dict[str, int]:
        # Not the recorder's inbox: its disk writes run in a worker thread, and meanwhile
        # autojump lets virtual time run on, so here its disk is arbitrarily slow (its
        # recovery: test_recorder.py::test_failing_disk_keeps_rows_under_the_cap_then_recovers)
        return {e.name: e.statistics().dropped for e in runtime.edges if e.name != "recorder"}

    async with trio.open_nursery() as nursery:
        runtime: Runtime = await nursery.start(lambda task_status: run_spreadwatch(
            config, shutdown=shutdown, source=source, data_dir=tmp_path, clock_ns=virtual_clock_ns,
            task_status=task_status))
        objects: list[int] = []
        for _ in range(2):
            await overload(runtime, 5.0)
            excess = counters(runtime)
            for name in ("recorder", "shard-0", "shard-1", "shard-2", "shard-3", "hub-states", "hub-events"):
                assert excess[name][0] > 0, (name, excess[name])  # dropped, and counted
            for name in ("shard-0", "shard-1", "shard-2", "shard-3", "hub-states"):
                assert excess[name][1] > 0, (name, excess[name])  # conflated, and counted
            # the overload's quotes go stale (2 s) and the hub takes the payloads its full
            # inbox dropped, 40 topics a tick: a few ticks
            await normal(runtime, 8.0)
            settled = dropped(runtime)
            last_bid = await normal(runtime, 10.0)
            after = dropped(runtime)
            assert after == settled, {k: (settled[k], v) for k, v in after.items() if v != settled[k]}
            now_ms = virtual_clock_ns() // 1_000_000
            state = runtime.hub.state["quotes:BTC/USDT"]["venues"]
            for venue in ("binance", "bybit"):
                assert state[venue]["bid"] == last_bid and not state[venue]["stale"], state
                assert now_ms - state[venue]["recv_ms"] <= 1500  # within the last tick or so
            assert all(e.statistics().used <= 2 for e in runtime.edges if e.name != "recorder")
            # the hub holds the latest state of every topic, even of those whose update
            # was dropped at the height of the overload: the overload's quotes are stale
            # and its opportunities closed
            known = {symbol for shard in runtime.shards for symbol in shard.books} - {"BTC/USDT"}
            assert len(known) >= 50
            for symbol in known:
                shown = runtime.hub.state.get(f"quotes:{symbol}")
                assert shown is not None and shown["venues"], symbol
                assert all(q["stale"] for q in shown["venues"].values()), (symbol, shown)
            assert runtime.hub.state["opportunities"] == {"open": []}
            gc.collect()
            objects.append(_objects())
        # the second overload found every bound already reached: nothing more is kept
        assert objects[1] - objects[0] < 500, objects
        shutdown.set()
