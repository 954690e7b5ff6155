"""The whole pipeline for many simulated hours on trio's MockClock (autojump).

Used by ``tests/test_soak_virtual.py`` (24 h, asserted) and by ``python -m bench
virtual`` (figures and a plot). Two venues (Binance and Bybit codecs) are served by the
connector seam's fake (``tests/fakes.py``); discovery reads the documented REST payloads
through an httpx mock transport. Every 30 virtual seconds each open connection gets a
quote; timers, hourly discovery refreshes, TTL evictions, recorder flushes and hour
rotations, and the venues' drops (hours 2, 8, 14, 20, ...) all run. After each hour a
full collection runs and one :class:`HourSample` is taken.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from actors.config import parse_config
from actors.monitor import rss_bytes, task_count
from app.runtime import Runtime, run_spreadwatch
from tests.fakes import FakeVenue, RestVenues, binance_frame, bybit_frame, only, virtual_clock_ns

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class HourSample:
    hour: int
    tasks: int
    gc_objects: int
    rss_mb: float
    series: int
    reconnects: int
    refreshes: int
    wall_s: float


@dataclass(slots=True)
class VirtualDay:
    """What a run leaves behind for its caller to judge."""

    samples: list[HourSample]
    tasks_before: int
    tasks_after: int
    last_health_tasks: int
    refreshes: int
    reconnects: int
    shard_symbols: int


async def simulate(data_dir: Path, hours: int = 24,
                   on_hour: Callable[[HourSample], None] | None = None) -> VirtualDay:
    """Run the pipeline for ``hours`` virtual hours; must run under an autojump clock."""
    config = parse_config({
        "server": {"loop_monitor_interval_s": 10.0},
        "spreads": {"tick_s": 10.0},
        "feed": {"tick_s": 10.0},
        "connector": {"batch_max_delay_s": 5.0},
        "windows": {"length_s": 600, "ttl_s": 1800.0},
        "discovery": {"refresh_interval_s": HOUR},
        "recorder": {"flush_interval_s": 60.0},
        "venues": only({
            "binance": {"rest_url": "http://binance.test", "ws_url": "ws://binance.test",
                        "silence_reconnect_s": 600.0, "stale_after_s": 120.0, "subscribe_trades": False},
            "bybit": {"rest_url": "http://bybit.test", "ws_url": "ws://bybit.test",
                      "silence_reconnect_s": 600.0, "stale_after_s": 120.0, "subscribe_trades": False},
        }),
    })
    rest = RestVenues()
    venue = FakeVenue()
    shutdown = trio.Event()
    tasks_before = task_count()
    samples: list[HourSample] = []
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        runtime: Runtime = await nursery.start(lambda task_status: run_spreadwatch(
            config, shutdown=shutdown, connect=venue.connect,
            http_transport=httpx.MockTransport(rest.handler), data_dir=data_dir,
            clock_ns=virtual_clock_ns, task_status=task_status))
        u = 0
        for hour in range(hours):
            end = trio.current_time() + HOUR
            while trio.current_time() < end:
                u += 1
                for conn in venue.connections[-2:]:
                    if not conn.closed:
                        conn.push(binance_frame(u, 100.0) if "binance" in conn.url else bybit_frame(u, 100.5))
                await trio.sleep(30.0)
            if hour % 6 == 2:  # the venues drop us now and then (hours 2, 8, 14, 20)
                for conn in venue.connections[-2:]:
                    conn.drop()
            venue.connections[:-2] = []  # the fake's own log of connections must not count
            gc.collect()
            sample = HourSample(
                hour=hour + 1, tasks=task_count(), gc_objects=len(gc.get_objects()),
                rss_mb=round(rss_bytes() / 2**20, 1),
                series=sum(dataclasses.asdict(s.stats)["series"] for s in runtime.shards),
                reconnects=_reconnects(runtime), refreshes=runtime.discovery_status.refreshes,
                wall_s=round(time.monotonic() - started, 2))
            samples.append(sample)
            if on_hour is not None:
                on_hour(sample)
        day = VirtualDay(samples, tasks_before, 0, samples[-1].tasks if samples else 0,
                         runtime.discovery_status.refreshes, _reconnects(runtime),
                         dataclasses.asdict(runtime.shards[0].stats)["symbols"])
        shutdown.set()
    day.tasks_after = task_count()
    return day


def _reconnects(runtime: Runtime) -> int:
    return sum(s.reconnects for st in runtime.venue_states.values() for s in st.connections)
