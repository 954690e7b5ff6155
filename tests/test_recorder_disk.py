"""A really full disk under the whole pipeline: a tiny tmpfs (skipped where it cannot be
mounted). The recorder fails, keeps its rows under the cap, its inbox drops and counts,
/health says so with 503, the rest keeps running, and recording resumes once there is room."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
from collections.abc import Iterator

import httpx
import pyarrow.dataset as ds
import pytest
import trio

from actors.config import parse_config
from app.health import health_snapshot
from app.runtime import Runtime, run_spreadwatch
from tests.fakes import FakeVenue, RestVenues, only


@pytest.fixture
def tiny_disk(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=700", "tmpfs", str(mount_point)],
                              capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=10, check=False)


def fill(path: pathlib.Path) -> None:
    """Write ``path`` until the file system is full."""
    try:
        with open(path, "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC


def binance_frame(u: int, bid: float) -> str:
    return json.dumps({"u": u, "s": "BTCUSDT", "b": f"{bid:.2f}", "B": "1", "a": f"{bid + 1:.2f}", "A": "1"})


async def wait_until(predicate: object, limit_s: float) -> None:
    assert callable(predicate)
    with trio.fail_after(limit_s):
        while not predicate():
            await trio.sleep(0.02)


async def test_full_disk_drops_and_counts_then_recording_resumes(tiny_disk: pathlib.Path) -> None:
    config = parse_config({
        "channels": {"recorder_input": 100},
        "recorder": {"flush_interval_s": 0.05, "max_buffered_rows": 300},
        "spreads": {"tick_s": 0.05},
        "venues": only({
            "binance": {"rest_url": "http://binance.test", "ws_url": "ws://binance.test",
                        "subscribe_trades": False},
        }),
    })
    rest = RestVenues()
    venue = FakeVenue()
    shutdown = trio.Event()
    data_dir = tiny_disk / "data"
    u = 0

    async def push(n: int) -> None:
        nonlocal u
        for _ in range(n):
            u += 1
            venue.live.push(binance_frame(u, 100.0 + (u % 50) / 100))
            await trio.sleep(0.001)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            runtime: Runtime = await nursery.start(lambda task_status: run_spreadwatch(
                config, shutdown=shutdown, connect=venue.connect,
                http_transport=httpx.MockTransport(rest.handler), data_dir=data_dir, task_status=task_status))
            status = runtime.recorder_status
            assert status is not None
            await wait_until(lambda: venue.connections, 10)
            await push(50)
            await wait_until(lambda: status.rows_written["quotes"] == 50, 10)
            doc, _ = health_snapshot(runtime)
            assert doc["recorder"]["state"] == "ok" and doc["recorder"]["inbox_dropped"] == 0

            filler = tiny_disk / "filler"
            fill(filler)
            shard_quotes = sum(s.stats.quotes for s in runtime.shards)
            await push(1000)
            await wait_until(lambda: status.buffered_rows == 300, 10)
            doc, healthy = health_snapshot(runtime)
            assert not healthy and doc["status"] == "unhealthy"
            assert doc["recorder"]["state"] == "failing"
            assert any("No space left on device" in p for p in doc["problems"])
            assert doc["recorder"]["inbox_dropped"] > 0
            assert status.peak_buffered_rows == 300 and status.write_errors >= 1
            # the rest of the pipeline kept going: the shards got every quote
            assert sum(s.stats.quotes for s in runtime.shards) > shard_quotes
            assert all(a["state"] == "running" for a in doc["actors"])

            os.unlink(filler)
            await wait_until(lambda: status.last_error is None and status.buffered_rows == 0, 15)
            await push(20)
            written = status.rows_written["quotes"]
            await wait_until(lambda: status.rows_written["quotes"] >= written + 20, 10)
            doc, healthy = health_snapshot(runtime)
            assert healthy and doc["recorder"]["state"] == "ok"
            shutdown.set()

    dropped = doc["recorder"]["inbox_dropped"]
    table = ds.dataset(data_dir / "quotes", format="parquet", partitioning="hive").to_table()
    seqs = table.column("seq").to_pylist()
    assert len(seqs) == len(set(seqs))
    # every quote is on disk or counted as dropped
    assert len(seqs) + dropped == u
