"""Replay: a recorded session fed back through the pipeline yields the opportunities that were
recorded live (symbol, venues, every event, opened_at, closed_at, peak, mean, ...)."""

from __future__ import annotations

import functools
import json
import pathlib
import random
import signal
import subprocess
import sys

import httpx
import msgpack
import pyarrow.dataset as ds
import pytest
import trio
import trio.testing
import trio_websocket

from actors.config import Config, parse_config
from actors.recorder import SCHEMAS
from actors.replay import ReplayClock, ReplayStatus, recorded_span, run_replay
from app.health import health_snapshot
from app.replay import replay_range
from app.runtime import Runtime, run_spreadwatch
from tests.fakes import FakeVenue, RestVenues, only, virtual_clock_ns
from tests.processes import free_port, start_cli, wait_for_health
from tests.test_recorder import settle

STALE_S = 3.0
ROOT = pathlib.Path(__file__).resolve().parent.parent


def config() -> Config:
    venue = {"silence_reconnect_s": 3600.0, "stale_after_s": STALE_S, "subscribe_trades": False}
    return parse_config({
        "spreads": {"threshold_bps": 5.0, "min_duration_s": 2.0, "tick_s": 0.25},
        "recorder": {"flush_interval_s": 1.0},
        "venues": only({
            "binance": {"rest_url": "http://binance.test", "ws_url": "ws://binance.test", **venue},
            "bybit": {"rest_url": "http://bybit.test", "ws_url": "ws://bybit.test", **venue},
        }),
    })


def binance_frame(u: int, bid: float, ask: float) -> str:
    return json.dumps({"u": u, "s": "BTCUSDT", "b": f"{bid:.2f}", "B": "1", "a": f"{ask:.2f}", "A": "2"})


def bybit_frame(u: int, bid: float, ask: float) -> str:
    return json.dumps({"topic": "orderbook.1.BTCUSDT", "type": "snapshot", "ts": 1, "cts": 1,
                       "data": {"s": "BTCUSDT", "b": [[f"{bid:.2f}", "3"]], "a": [[f"{ask:.2f}", "4"]],
                                "u": u, "seq": u}})



async def flushed(runtime: Runtime) -> None:
    """Wait until the recorder holds nothing: the graceful stop then has nothing left to write
    (under autojump its deadline passes while a worker thread runs)."""
    status = runtime.recorder_status
    assert status is not None
    inbox = next(e for e in runtime.edges if e.name == "recorder")
    while status.buffered_rows or inbox.statistics().used:
        await trio.sleep(1.0)
        await settle()


async def record_live_session(data_dir: pathlib.Path) -> None:
    """Two fake venues whose books cross now and then, go quiet now and then (legs go stale)."""
    rng = random.Random(11)
    venue = FakeVenue()
    rest = RestVenues()
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        runtime: Runtime = await nursery.start(lambda task_status: run_spreadwatch(
            config(), shutdown=shutdown, connect=venue.connect, http_transport=httpx.MockTransport(rest.handler),
            data_dir=data_dir, clock_ns=virtual_clock_ns, task_status=task_status))
        while len(venue.connections) < 2:
            await trio.sleep(0.1)
        binance = next(c for c in venue.connections if "binance" in c.url)
        bybit = next(c for c in venue.connections if "bybit" in c.url)
        u = 0
        for _step in range(600):
            u += 1
            mid = 100 + rng.uniform(-0.5, 0.5)
            # most of the time no edge; sometimes bybit's bid is well above binance's ask
            edge = rng.choice([0.0, 0.0, 0.0, 0.5, 0.8])
            which = rng.random()
            if which < 0.45:
                binance.push(binance_frame(u, mid - 0.01, mid + 0.01))
            elif which < 0.9:
                bybit.push(bybit_frame(u, mid + edge - 0.01, mid + edge + 0.02))
            # else: nobody speaks
            await trio.sleep(rng.choice([0.05, 0.2, 0.7, 1.3, 2.1, 4.0]))
        await trio.sleep(2 * STALE_S)  # every leg stale: every window closes
        await flushed(runtime)
        assert sum(shard.stats.opportunities_opened for shard in runtime.shards) > 3
        shutdown.set()


async def replay_session(data_dir: pathlib.Path, out_dir: pathlib.Path, speed: float) -> ReplayStatus:
    span = await trio.to_thread.run_sync(recorded_span, data_dir)
    assert span is not None
    clock = ReplayClock(span[0], speed)
    status = ReplayStatus()
    source = functools.partial(run_replay, data_dir=data_dir, clock=clock, from_ns=span[0], to_ns=span[1] + 1,
                               status=status)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        runtime: Runtime = await nursery.start(lambda task_status: run_spreadwatch(
            config(), shutdown=shutdown, data_dir=out_dir, clock_ns=clock, source=source,
            replay_status=status, task_status=task_status))
        while not status.finished:
            await trio.sleep(1.0)
        await trio.sleep(2 * STALE_S / speed)  # the replay clock runs past the last stale moment
        await flushed(runtime)
        doc, healthy = health_snapshot(runtime)
        assert healthy and doc["replay"]["finished"] and doc["replay"]["quotes_sent"] == status.quotes_sent
        assert {a["name"] for a in doc["actors"]} >= {"replay", "recorder"}
        assert not {a["name"] for a in doc["actors"]} & {"discovery", "venue-binance"}
        shutdown.set()
    return status


def opportunities(data_dir: pathlib.Path) -> list[dict[str, object]]:
    table = ds.dataset(data_dir / "opportunities", format="parquet", schema=SCHEMAS["opportunities"]).to_table()
    rows = table.to_pylist()
    return sorted(rows, key=lambda r: (r["symbol"], r["buy_venue"], r["sell_venue"], r["opened_at"],
                                       ["open", "update", "close"].index(str(r["state"]))))


@pytest.mark.parametrize("speed", [1.0, 37.0])
async def test_replaying_a_recorded_session_yields_the_recorded_opportunities(
    tmp_path: pathlib.Path, autojump_clock: trio.testing.MockClock, speed: float,
) -> None:
    live_dir, replay_dir = tmp_path / "live", tmp_path / "replay"
    await record_live_session(live_dir)
    live = opportunities(live_dir)
    states = [r["state"] for r in live]
    assert states.count("open") >= 3 and states.count("close") == states.count("open")
    quotes = ds.dataset(live_dir / "quotes", format="parquet").count_rows()

    status = await replay_session(live_dir, replay_dir, speed)
    assert status.quotes_sent == quotes and status.read_errors == 0
    assert not (replay_dir / "quotes").exists()  # the replay records no quotes of its own
    replayed = opportunities(replay_dir)
    assert replayed == live


def test_replay_range_defaults_to_everything_recorded_and_checks_its_arguments(tmp_path: pathlib.Path) -> None:
    import argparse

    trio.run(record_live_session, tmp_path, clock=trio.testing.MockClock(autojump_threshold=0))
    span = recorded_span(tmp_path)
    assert span is not None

    def args(**kw: object) -> argparse.Namespace:
        return argparse.Namespace(**{"data_dir": tmp_path, "from_": None, "to": None, "speed": 1.0, **kw})

    assert replay_range(args()) == (span[0], span[1] + 1)
    assert replay_range(args(from_=str(span[0] // 10**6 + 5))) == (span[0] // 10**6 * 10**6 + 5 * 10**6, span[1] + 1)
    for bad, message in [({"speed": 0.0}, "--speed"), ({"speed": float("nan")}, "--speed"),
                         ({"from_": "later"}, "--from"), ({"to": "1"}, "after"),
                         ({"data_dir": tmp_path / "nothing"}, "no recorded quotes")]:
        with pytest.raises(ValueError, match=message):
            replay_range(args(**bad))


def test_replay_clock_maps_loop_time_to_recorded_time() -> None:
    async def main() -> None:
        clock = ReplayClock(10**18, speed=4.0)
        assert clock() == 10**18
        await trio.sleep(2.5)
        assert clock.mapped() == 10**18 + 10 * 10**9
        assert clock() == 10**18  # held at the start until the replay moves the hold
        clock.hold(10**18 + 3 * 10**9)
        assert clock() == 10**18 + 3 * 10**9
        clock.hold(10**18 + 10**9)  # a hold never goes back
        assert clock() == 10**18 + 3 * 10**9
        clock.hold(None)
        assert clock() == 10**18 + 10 * 10**9
        assert clock.deadline(10**18 + 20 * 10**9) == pytest.approx(clock.w0 + 5.0)
        with pytest.raises(ValueError):
            ReplayClock(0, speed=0.0)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))



async def _one_quotes_frame(port: int) -> dict[str, object]:
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/feed") as ws:
            await ws.send_message(msgpack.packb({"op": "subscribe", "topic": "quotes:BTC/USDT"}))
            while True:
                frame = msgpack.unpackb(await ws.get_message())
                if frame["topic"] == "quotes:BTC/USDT":
                    return dict(frame["data"])


def test_the_replay_command_serves_the_recorded_session_and_writes_nothing(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    trio.run(record_live_session, data, clock=trio.testing.MockClock(autojump_threshold=0))
    span = recorded_span(data)
    assert span is not None
    files_before = sorted(str(p) for p in data.rglob("*"))
    port = free_port()
    proc = start_cli("replay", "--data-dir", str(data), "--port", str(port), "--speed", "200")
    try:
        health = wait_for_health(port, lambda doc: bool(doc["replay"]["finished"]), every_s=0.2)
        assert health is not None, "the replay did not finish within 30 s"
        assert health["status"] == "ok" and health["recorder"] is None
        assert health["replay"]["quotes_sent"] == ds.dataset(data / "quotes", format="parquet").count_rows()
        frame = trio.run(_one_quotes_frame, port)
        assert set(frame["venues"]) == {"binance", "bybit"}  # type: ignore[arg-type]
        history = httpx.get(f"http://127.0.0.1:{port}/api/history", timeout=10, params={
            "symbol": "BTC/USDT", "from": str(span[0] // 10**6), "to": str(span[1] // 10**6 + 1)})
        assert history.status_code == 200 and history.json()["rows"] == health["replay"]["quotes_sent"]
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert sorted(str(p) for p in data.rglob("*")) == files_before


def test_the_replay_command_refuses_bad_arguments(tmp_path: pathlib.Path) -> None:
    for extra in (["--speed", "0"], ["--from", "tomorrow"]):
        done = subprocess.run([sys.executable, "-m", "app.cli", "replay", "--data-dir", str(tmp_path), *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 2 and "spreadwatch replay:" in done.stderr
