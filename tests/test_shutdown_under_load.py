"""Issue 7: graceful shutdown under full load, nothing buffered lost.

``bench shutdown`` runs this for minutes; here it takes seconds. The pipeline is stopped
while records wait in three places: in the connectors' partial recorder batches, in the
recorder's inbox, and in the recorder's buffers. Every record a connector emitted and
every opportunity event a shard emitted must then be in the Parquet files, the files
must hold exactly what the recorder reports written, and nothing may be abandoned or
dropped on the way.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import trio

from actors.config import Config
from actors.history import stream_files
from actors.recorder import NS_PER_HOUR, STREAMS
from app.runtime import Runtime
from app.tail import FeedClosed, open_feed
from tests.pipeline import sim_pipeline
from tests.processes import ROOT, free_port, start_cli, wait_for_health

_STOPPED = re.compile(r"recorder: stopped; rows written quotes=(\d+),trades=(\d+),opportunities=(\d+), "
                      r"abandoned (\d+), inbox dropped (\d+)")


def _rows_on_disk(data_dir: Path) -> dict[str, int]:
    """Rows per stream in the files a reader sees (the recorder's reading rule)."""
    now = time.time_ns()
    return {stream: sum(pq.read_metadata(f).num_rows
                        for f in stream_files(data_dir, stream, now - 2 * NS_PER_HOUR, now + NS_PER_HOUR))
            for stream in STREAMS}


def _hold_everything(config: Config) -> Config:
    """Nothing reaches the disk before the shutdown: the recorder flushes only by its
    interval (an hour). A connector hands its batch over when 400 records are in it (its
    batcher's 5 s outlasts the load phase), so full batches reach the recorder and
    partial ones wait in the connectors. A negative threshold keeps opportunities open,
    so the shutdown's venue-down markers close them all at once."""
    return dataclasses.replace(
        config,
        connector=dataclasses.replace(config.connector, batch_max_records=400, batch_max_delay_s=5.0),
        recorder=dataclasses.replace(config.recorder, flush_interval_s=3600.0),
        spreads=dataclasses.replace(config.spreads, threshold_bps=-40.0),
    )


def _emitted(runtime: Runtime) -> dict[str, int]:
    """Records handed towards the recorder so far: quotes and trades by the connectors,
    opportunity events (open and close) by the shards."""
    connections = [c for state in runtime.venue_states.values() for c in state.connections]
    return {
        "quotes": sum(c.quotes for c in connections),
        "trades": sum(c.trades for c in connections),
        "opportunities": sum(s.stats.opportunities_opened + s.stats.opportunities_closed
                             for s in runtime.shards),
    }


async def test_shutdown_under_load_writes_every_record_handed_to_the_recorder(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Three simulated venues, 150 symbols, quotes and trades flowing: the shutdown comes
    while the recorder holds buffered rows and the connectors hold partial batches. It
    ends within ``server.shutdown_timeout_s``; afterwards every quote and trade the
    connectors emitted and every opportunity event the shards emitted is on disk, the
    files hold exactly the rows the recorder reports written, and none was abandoned,
    rejected or dropped."""
    caplog.set_level(logging.INFO)
    with trio.fail_after(30):
        async with sim_pipeline(tmp_path, ("binance", "bybit", "okx"), seed=7, symbols=150,
                                configure=_hold_everything) as runtime:
            status = runtime.recorder_status
            assert status is not None
            inbox = runtime.edges[0]
            assert inbox.statistics().name == "recorder"
            budget_s = runtime.config.server.shutdown_timeout_s
            # Load until every place a record can wait at shutdown holds some: full
            # batches in the recorder's buffers, partial ones in the connectors, and
            # opportunities open (their close events come with the shutdown).
            while True:
                await trio.sleep(0.05)
                emitted = _emitted(runtime)
                stats = inbox.statistics()
                # records not yet in the recorder's inbox: in the connectors' batches
                in_batches = (emitted["quotes"] + emitted["trades"] + emitted["opportunities"]
                              - stats.delivered - stats.used - stats.dropped)
                open_now = sum(s.stats.open_opportunities for s in runtime.shards)
                if (status.buffered_rows > 2_000 and in_batches > 0 and open_now > 0
                        and emitted["trades"] > 0):
                    break
            assert status.files_written == 0, "the recorder flushed before the shutdown"
            began = time.monotonic()
        took = time.monotonic() - began

    assert took < budget_s, f"the shutdown took {took:.2f}s, over the {budget_s}s budget"
    assert "graceful shutdown took over" not in caplog.text
    emitted = _emitted(runtime)
    stats = inbox.statistics()
    on_disk = _rows_on_disk(tmp_path)
    assert (status.rows_abandoned, status.rows_rejected, status.buffered_rows) == (0, 0, 0)
    assert stats.dropped == 0 and stats.used == 0, stats
    assert on_disk == status.rows_written
    assert on_disk == emitted
    assert sum(on_disk.values()) == stats.delivered
    stopped = _STOPPED.search(caplog.text)
    assert stopped is not None, "no 'recorder: stopped' line"
    assert [int(n) for n in stopped.groups()] == [on_disk["quotes"], on_disk["trades"],
                                                  on_disk["opportunities"], 0, 0]


async def _read_frames(port: int, topics: tuple[str, ...], frames: list[int]) -> None:
    """A feed client (the reference client, :func:`app.tail.open_feed`) that subscribes to
    ``topics`` and reads until the server goes away, counting its frames in ``frames[0]``."""
    try:
        async with open_feed(f"ws://127.0.0.1:{port}/feed", topics) as feed:
            async for _frame in feed:
                frames[0] += 1
    except FeedClosed:
        return


def _config_holding_rows(tmp_path: Path) -> Path:
    """The repository's config.toml with a recorder that flushes only at the shutdown
    (its interval past the test's length), so every row recorded waits for the final
    flush."""
    text, n = re.subn(r"(?m)^flush_interval_s = [0-9.]+", "flush_interval_s = 3600.0",
                      (ROOT / "config.toml").read_text())
    assert n == 1, "config.toml has no recorder flush_interval_s line"
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


async def _sigterm_under_load(proc: subprocess.Popen[str], port: int,
                              ) -> tuple[str, float, list[int], dict[str, Any]]:
    """Wait until the recorder buffers plenty and three feed clients read frames, then
    SIGTERM and wait for the exit: (the program's output, seconds from SIGTERM to exit,
    frames per client, the last /health before SIGTERM)."""
    stdout = proc.stdout
    assert stdout is not None
    output: list[str] = []
    client_frames = [[0] for _ in range(3)]

    def buffering(doc: dict[str, Any]) -> bool:
        return bool(doc["recorder"]["buffered_rows"] >= 10_000)

    async def read_output() -> None:
        # a pipe nobody reads would stall the child once full
        output.append(await trio.to_thread.run_sync(stdout.read, abandon_on_cancel=True))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_output)
        health = await trio.to_thread.run_sync(functools.partial(wait_for_health, port, buffering, 60.0))
        assert health is not None, "the recorder did not buffer 10,000 rows within 60 s"
        async with trio.open_nursery() as clients:
            for frames, topics in zip(client_frames, (("opportunities", "venues"), ("quotes:BTC/USDT",),
                                                      ("spreads:ETH/USDT", "symbols")), strict=True):
                clients.start_soon(_read_frames, port, topics, frames)
            with trio.fail_after(10):
                while not all(frames[0] for frames in client_frames):
                    await trio.sleep(0.05)
            health = await trio.to_thread.run_sync(functools.partial(wait_for_health, port, buffering, 1.0))
            assert health is not None
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await trio.to_thread.run_sync(functools.partial(proc.wait, timeout=10))
            took = time.monotonic() - sent
    return "".join(output), took, [frames[0] for frames in client_frames], health


def test_sigterm_under_load_exits_0_within_5s_with_every_reported_row_on_disk(tmp_path: Path) -> None:
    """``spreadwatch demo`` with 300 simulated symbols on eight venues and three feed
    clients, the recorder holding every row since the start (no flush before the
    shutdown): SIGTERM. The process exits 0 within 5 s, its final recorder line reports
    nothing abandoned nor dropped, the Parquet files hold exactly the rows that line
    reports written, stream by stream, and at least every row buffered and every quote
    received before the signal."""
    port = free_port()
    data = tmp_path / "data"
    proc = start_cli("demo", "--port", str(port), "--data-dir", str(data), "--symbols", "300",
                     "--config", str(_config_holding_rows(tmp_path)))
    try:
        output, took, frames, health = trio.run(_sigterm_under_load, proc, port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == 0, output[-3000:]
    assert took < 5.0, f"exit took {took:.2f}s"
    assert "Traceback" not in output, output[-3000:]
    assert all(frames), frames
    stopped = _STOPPED.findall(output)
    assert len(stopped) == 1, output[-3000:]
    quotes, trades, opportunities, abandoned, dropped = (int(n) for n in stopped[0])
    assert (abandoned, dropped) == (0, 0)
    on_disk = _rows_on_disk(data)
    assert on_disk == {"quotes": quotes, "trades": trades, "opportunities": opportunities}
    assert health["recorder"]["files_written"] == 0
    assert sum(on_disk.values()) >= health["recorder"]["buffered_rows"]
    assert quotes >= sum(v["quotes"] for v in health["venues"].values())
    assert trades > 0
    assert not [p for p in data.rglob("*") if p.name.endswith(".tmp")]
