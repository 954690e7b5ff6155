"""kill -9 at random moments (in a flush, in a compaction, between): every visible file is
readable, nothing acknowledged is lost, the loss is at most about one flush interval, and
the next start-up cleans up. A real recorder in a child process (tests/crash_writer.py)."""

from __future__ import annotations

import os
import pathlib
import random
import selectors
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq

from actors.recorder import STREAMS, hour_dirs, hour_files, recover

ROOT = pathlib.Path(__file__).resolve().parent.parent
FLUSH_INTERVAL_S = 0.2
# Slack on top of one flush interval: the write itself (fsyncs) and a slow CI machine.
SLACK_S = 0.8
ROUND_SEQS = 10_000_000


class Child:
    def __init__(self, data_dir: pathlib.Path, first_seq: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_writer", str(data_dir), str(first_seq), str(FLUSH_INTERVAL_S)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        assert self.process.stdout is not None
        self.stdout = self.process.stdout
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.stdout, selectors.EVENT_READ)
        self.buffer = b""
        self.durable = 0

    def lines(self, timeout: float) -> list[str]:
        """Lines printed so far, waiting at most ``timeout`` for the first."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while not out:
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(left):
                break
            chunk = os.read(self.stdout.fileno(), 65536)
            if not chunk:
                break
            self.buffer += chunk
            *done, self.buffer = self.buffer.split(b"\n")
            out += [line.decode() for line in done]
        for line in out:
            if line.startswith("durable "):
                self.durable = int(line.split()[1])
        return out

    def wait_ready(self) -> tuple[int, int]:
        for _ in range(100):
            for line in self.lines(30.0):
                if line.startswith("ready "):
                    _, temps, superseded = line.split()
                    return int(temps), int(superseded)
        raise AssertionError("the child never got ready")

    def kill(self) -> int:
        self.lines(0.0)
        killed_ns = time.time_ns()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.selector.close()
        self.stdout.close()
        return killed_ns


def visible_rows(data_dir: pathlib.Path) -> tuple[list[int], list[int]]:
    """(seqs, recv_ts) of every row by the reading rule; every visible file must be readable."""
    seqs: list[int] = []
    stamps: list[int] = []
    for stream in STREAMS:
        for _hour, hour_dir in hour_dirs(data_dir, stream):
            live, _dead = hour_files(hour_dir)
            for path in live:
                table = pq.read_table(path)
                seqs += table.column("seq").to_pylist()
                stamps += table.column("recv_ts").to_pylist()
    return seqs, stamps


def test_kill_9_mid_write_loses_at_most_one_flush_interval(tmp_path: pathlib.Path) -> None:
    rng = random.Random(6)
    data_dir = tmp_path / "data"
    cleaned_temps = cleaned_superseded = 0
    for round_ in range(5):
        first = round_ * ROUND_SEQS
        child = Child(data_dir, first)
        temps, superseded = child.wait_ready()
        cleaned_temps += temps
        cleaned_superseded += superseded
        # Everything of the earlier rounds is still exactly there after the start-up clean-up.
        seqs, _ = visible_rows(data_dir)
        assert sorted(seqs) == sorted(set(seqs))
        started = time.monotonic()
        while time.monotonic() - started < rng.uniform(0.8, 2.5):
            child.lines(0.05)
        durable = child.durable
        killed_ns = child.kill()

        seqs, stamps = visible_rows(data_dir)
        assert len(seqs) == len(set(seqs)), "a row is visible twice"
        mine = sorted((s, t) for s, t in zip(seqs, stamps, strict=True) if first <= s < first + ROUND_SEQS)
        assert [s for s, _ in mine] == list(range(first, first + len(mine))), "a gap in the rows"
        assert len(mine) >= durable > 0, "an acknowledged row was lost"
        lost_s = (killed_ns - mine[-1][1]) / 1e9
        assert lost_s <= FLUSH_INTERVAL_S + SLACK_S, f"round {round_}: lost the last {lost_s:.3f} s"
        print(f"round {round_}: {len(mine)} rows kept ({durable} acknowledged), the last {lost_s:.3f} s lost")

    # The start-up clean-up (what the recorder runs before it is ready) leaves no temp file and
    # no superseded file behind, whatever the last kill interrupted.
    before, _ = visible_rows(data_dir)
    temps, superseded, _pending = recover(data_dir)
    cleaned_temps += temps
    cleaned_superseded += superseded
    assert list(data_dir.rglob("*.tmp")) == []
    assert all(hour_files(d)[1] == [] for s in STREAMS for _h, d in hour_dirs(data_dir, s))
    after, _ = visible_rows(data_dir)
    assert sorted(after) == sorted(before)
    print(f"clean-ups over the rounds: {cleaned_temps} temp files, {cleaned_superseded} superseded files")
