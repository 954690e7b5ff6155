"""Compaction of closed hours, the reading rule, start-up recovery, hostile names."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading

import msgspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import trio
import trio.testing

from actors.channels import DropChannel
from actors.recorder import (
    NS_PER_HOUR,
    REPLACES_KEY,
    SCHEMA_VERSION,
    SCHEMAS,
    RecorderStatus,
    compact_hour,
    hour_files,
    hour_of_dir,
    partition_dir,
    recover,
    run_recorder,
)
from actors.records import Opportunity, OpportunityState, Quote, Trade

T0 = 1_709_251_200 * 1_000_000_000  # 2024-03-01T00:00:00Z
HOUR0 = T0 // NS_PER_HOUR
Inbox = DropChannel[Quote | Trade | Opportunity]


def quote(seq: int, recv_ts: int, **changes: object) -> Quote:
    q = Quote("binance", "BTC/USDT", 100.0 + seq, 1.0, 100.5 + seq, 2.0, recv_ts // 1_000_000, recv_ts, seq)
    return msgspec.structs.replace(q, **changes)


class ManualClock:
    """The recorder's wall clock, moved by the test."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def read_by_rule(data_dir: pathlib.Path, stream: str) -> pa.Table:
    """Every row of ``stream``, reading only what the rule says is data (retrying a listing)."""
    for _ in range(5):
        files = [str(f) for d in sorted((data_dir / stream).glob("date=*/hour=*"))
                 for f in hour_files(d)[0]]
        try:
            return ds.dataset(files, format="parquet", schema=SCHEMAS[stream]).to_table()
        except FileNotFoundError:
            continue
    raise AssertionError("the listing kept changing")


def data_names(hour_dir: pathlib.Path) -> list[str]:
    return sorted(p.name for p in hour_dir.glob("*.parquet"))


async def wait_for(predicate: object, limit_s: float = 10.0) -> None:
    assert callable(predicate)
    with trio.fail_after(limit_s):
        while not predicate():
            await trio.sleep(0.01)


async def test_a_closed_hour_becomes_one_sorted_file_with_the_same_rows(tmp_path: pathlib.Path) -> None:
    clock = ManualClock(T0 + 10 * 60 * 10**9)
    status = RecorderStatus()
    inbox: Inbox = DropChannel("recorder", 1000)
    # out of recv_ts order across flushes, as connectors deliver them
    flushes = [[quote(i, T0 + (30 - i) * 10**9) for i in range(k * 10, k * 10 + 10)] for k in range(3)]
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_recorder(
            inbox, data_dir=tmp_path, max_buffered_rows=100, flush_rows=10, clock_ns=clock,
            compact_after_s=60.0, compact_check_s=0.01, status=status, task_status=task_status))
        for batch in flushes:
            inbox.put_nowait(batch)
            await wait_for(lambda n=status.files_written + 1: status.files_written == n)
        hour_dir = partition_dir(tmp_path, "quotes", HOUR0)
        before = read_by_rule(tmp_path, "quotes").sort_by("seq")
        assert len(data_names(hour_dir)) == 3

        clock.now_ns = T0 + NS_PER_HOUR + 59 * 10**9  # 59 s after the hour: not yet
        await trio.sleep(0.1)
        assert status.compactions == 0
        clock.now_ns = T0 + NS_PER_HOUR + 60 * 10**9
        await wait_for(lambda: status.compactions == 1)
        nursery.cancel_scope.cancel()

    names = data_names(hour_dir)
    assert len(names) == 1 and names[0].startswith("compacted-")
    compacted = hour_dir / names[0]
    meta = pq.read_metadata(compacted)
    assert len(json.loads(meta.metadata[REPLACES_KEY])) == 3
    assert meta.metadata[b"spreadwatch.schema"] == SCHEMA_VERSION.encode()
    table = pq.read_table(compacted)
    assert table.column("recv_ts").to_pylist() == sorted(table.column("recv_ts").to_pylist())
    assert table.sort_by("seq").equals(before)
    # plain pyarrow hive reading sees exactly the rows, once
    hive = ds.dataset(tmp_path / "quotes", format="parquet", partitioning="hive").to_table()
    assert sorted(hive.column("seq").to_pylist()) == list(range(30))
    assert status.files_compacted == 3 and status.compaction_errors == 0
    assert status.snapshot()["hours_to_compact"] == 0


async def test_late_rows_for_a_compacted_hour_are_compacted_again(tmp_path: pathlib.Path) -> None:
    clock = ManualClock(T0 + 2 * NS_PER_HOUR)
    status = RecorderStatus()
    inbox: Inbox = DropChannel("recorder", 1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_recorder(
            inbox, data_dir=tmp_path, max_buffered_rows=100, flush_rows=5, clock_ns=clock,
            compact_after_s=60.0, compact_check_s=0.01, status=status, task_status=task_status))
        inbox.put_nowait([quote(i, T0 + i) for i in range(5)])
        await wait_for(lambda: status.compactions == 1)
        inbox.put_nowait([quote(i, T0 + i) for i in range(5, 10)])
        await wait_for(lambda: status.compactions == 2)
        nursery.cancel_scope.cancel()
    hour_dir = partition_dir(tmp_path, "quotes", HOUR0)
    names = data_names(hour_dir)
    assert len(names) == 1 and names[0].startswith("compacted-")
    assert pq.read_table(hour_dir / names[0]).column("seq").to_pylist() == list(range(10))


# Run in a fresh interpreter: pyarrow's pool keeps one high-water mark per process.
_RECOMPACT = """
import json, pathlib, sys
import pyarrow as pa
import pyarrow.parquet as pq
from actors.recorder import compact_hour
from bench.compaction_memory import write_hour

hour_dir = pathlib.Path(sys.argv[1]) / "hour"
write_hour(hour_dir, parts=40, rows=10_000)
compact_hour(hour_dir, "quotes", name_suffix="a-000041", row_group_rows=10_000)
write_hour(hour_dir, parts=1, rows=2_000, seed=9)  # a late part re-opens the compacted hour
result = compact_hour(hour_dir, "quotes", name_suffix="a-000042", row_group_rows=10_000)
peak = pa.default_memory_pool().max_memory()  # before anything reads the hour whole
out = pq.ParquetFile(result.path)
groups = [out.read_row_group(g).column("recv_ts").to_pylist() for g in range(out.num_row_groups)]
whole = out.read()
expected = [*range(400_000), *range(2_000)]  # write_hour numbers each call's rows from 0
print(json.dumps({"whole_bytes": whole.nbytes, "max_memory": peak, "rows": result.rows,
                  "files_in": result.files_in, "row_groups": out.num_row_groups,
                  "sorted_groups": all(g == sorted(g) for g in groups),
                  "seqs": sorted(whole.column("seq").to_pylist()) == sorted(expected)}))
"""


def test_late_rows_for_a_big_compacted_hour_are_merged_one_row_group_at_a_time(
    tmp_path: pathlib.Path,
) -> None:
    # Late rows (a flush retried past the hour's grace) re-open an hour that is already
    # one compacted file: that file is read one row group at a time, not whole (which
    # took ~170 bytes of pyarrow's pool a row: 589 MB for an hour of 3.6 M quotes).
    proc = subprocess.run([sys.executable, "-c", _RECOMPACT, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=pathlib.Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["files_in"] == 2 and got["rows"] == 402_000 and got["seqs"] and got["sorted_groups"]
    # The whole file in memory is ~30 MB; a row group's worth is well under a third of it.
    assert got["max_memory"] < got["whole_bytes"] / 3, got


def _make_hour(tmp_path: pathlib.Path, parts: int) -> pathlib.Path:
    from actors.recorder import AtomicParquetWriter

    hour_dir = partition_dir(tmp_path, "quotes", HOUR0)
    writer = AtomicParquetWriter()
    meta = {b"spreadwatch.schema": SCHEMA_VERSION.encode(), b"spreadwatch.stream": b"quotes"}
    for p in range(parts):
        rows = [quote(p * 10 + i, T0 + p * 10 + i) for i in range(10)]
        table = pa.Table.from_pylist([msgspec.structs.asdict(r) for r in rows], schema=SCHEMAS["quotes"])
        writer.write(hour_dir / f"part-{T0 + p * 10}-abcd-{p:06d}.parquet", table, meta)
    return hour_dir


def test_an_interrupted_compaction_hides_the_parts_and_start_up_removes_them(tmp_path: pathlib.Path) -> None:
    hour_dir = _make_hour(tmp_path, 4)
    saved = tmp_path / "saved"
    shutil.copytree(hour_dir, saved)
    result = compact_hour(hour_dir, "quotes", name_suffix="r1-000001")
    assert result.files_in == 4 and result.rows == 40
    # the crash: the compacted file is in place, the parts were not deleted yet
    for part in saved.iterdir():
        shutil.copy(part, hour_dir / part.name)
    (hour_dir / ".compacted-x.parquet.tmp").write_bytes(b"PAR1 half")
    live, dead = hour_files(hour_dir)
    assert [p.name for p in live] == [result.path.name] if result.path else False
    assert len(dead) == 4
    assert sorted(read_by_rule(tmp_path, "quotes").column("seq").to_pylist()) == list(range(40))

    temps, superseded, pending = recover(tmp_path)
    assert (temps, superseded, pending) == (1, 4, [])
    assert data_names(hour_dir) == [result.path.name] if result.path else False
    assert sorted(os.listdir(hour_dir)) == data_names(hour_dir)


def test_compaction_never_shows_a_reader_a_duplicate_or_a_gap(tmp_path: pathlib.Path) -> None:
    hour_dir = _make_hour(tmp_path, 30)
    errors: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            seqs = sorted(read_by_rule(tmp_path, "quotes").column("seq").to_pylist())
            reads += 1
            if seqs != list(range(300)):
                errors.append(f"{len(seqs)} rows, {len(set(seqs))} distinct")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for round_ in range(10):
            # new late parts, then a compaction of everything, again and again
            extra = _make_hour(tmp_path, 0)
            compact_hour(extra, "quotes", name_suffix=f"r-{round_:06d}")
    finally:
        stop.set()
        thread.join()
    assert errors == [] and reads > 0
    assert len(data_names(hour_dir)) == 1


async def test_start_up_lists_uncompacted_closed_hours_and_compacts_them(tmp_path: pathlib.Path) -> None:
    hour_dir = _make_hour(tmp_path, 3)
    assert recover(tmp_path) == (0, 0, [("quotes", HOUR0)])
    status = RecorderStatus()
    inbox: Inbox = DropChannel("recorder", 10)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_recorder(
            inbox, data_dir=tmp_path, max_buffered_rows=10, compact_check_s=0.01,
            clock_ns=ManualClock(T0 + 5 * NS_PER_HOUR), status=status, task_status=task_status))
        await wait_for(lambda: status.compactions == 1)
        nursery.cancel_scope.cancel()
    assert len(data_names(hour_dir)) == 1
    assert sorted(read_by_rule(tmp_path, "quotes").column("seq").to_pylist()) == list(range(30))


async def test_a_failing_compaction_is_counted_and_the_hour_stays_readable(tmp_path: pathlib.Path) -> None:
    hour_dir = _make_hour(tmp_path, 2)
    (hour_dir / "part-9-bad-000001.parquet").write_bytes(b"not parquet at all")
    status = RecorderStatus()
    inbox: Inbox = DropChannel("recorder", 10)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_recorder(
            inbox, data_dir=tmp_path, max_buffered_rows=10, compact_check_s=0.01,
            clock_ns=ManualClock(T0 + 5 * NS_PER_HOUR), status=status, task_status=task_status))
        await wait_for(lambda: status.compaction_errors == 1)
        await trio.sleep(0.1)  # ten more checks: an unreadable file is not retried in a loop
        nursery.cancel_scope.cancel()
    assert status.compactions == 0 and status.compaction_errors == 1
    assert "part-9-bad-000001.parquet" in (status.last_compaction_error or "")
    assert len(data_names(hour_dir)) == 3
    assert not list(hour_dir.glob(".*"))


def test_hour_directories_parse_back_to_their_hour(tmp_path: pathlib.Path) -> None:
    for hour in (0, HOUR0, HOUR0 + 23, HOUR0 + 24 * 400 + 5):
        assert hour_of_dir(partition_dir(tmp_path, "quotes", hour)) == hour
    assert hour_of_dir(tmp_path / "date=2024-02-30" / "hour=01") is None
    assert hour_of_dir(tmp_path / "date=2024-03-01" / "hour=1") is None
    assert hour_of_dir(tmp_path / "x" / "hour=01") is None


async def test_hostile_symbols_and_venues_stay_column_values(
    tmp_path: pathlib.Path, autojump_clock: trio.testing.MockClock,
) -> None:
    hostile = ["../../etc", "BTC/USDT\x00", "/abs/path", "..", "a/../../b", "date=1970-01-01/hour=00",
               "C:\\windows", "\u202e", "x" * 10_000]
    records: list[Quote | Trade | Opportunity] = []
    for i, name in enumerate(hostile):
        records.append(quote(i, T0 + i, symbol=name))
        records.append(quote(100 + i, T0 + i, venue=name))
        records.append(Opportunity(name, name, "okx", OpportunityState.OPEN, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                                   1.0, 1.0, T0 + i))
    inbox: Inbox = DropChannel("recorder", 100)
    inbox.put_nowait(records)
    inbox.close()
    status = RecorderStatus()
    outside_before = sorted(os.listdir(tmp_path.parent))
    await run_recorder(inbox, data_dir=tmp_path, max_buffered_rows=100, status=status,
                       compact_after_s=None)
    assert status.rows_rejected == 0
    assert sorted(os.listdir(tmp_path.parent)) == outside_before
    dirs = sorted({str(p.parent.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet")})
    assert dirs == ["opportunities/date=2024-03-01/hour=00", "quotes/date=2024-03-01/hour=00"]
    quotes = read_by_rule(tmp_path, "quotes")
    assert sorted(quotes.column("symbol").to_pylist()) == sorted([*hostile, *["BTC/USDT"] * len(hostile)])
    assert set(hostile) <= set(quotes.column("venue").to_pylist())
    assert sorted(read_by_rule(tmp_path, "opportunities").column("symbol").to_pylist()) == sorted(hostile)


def test_a_cancelled_compaction_leaves_the_hour_as_it_was(tmp_path: pathlib.Path) -> None:
    hour_dir = _make_hour(tmp_path, 5)
    before = data_names(hour_dir)
    calls = 0

    class Stop(Exception):
        pass

    def check_cancelled() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:  # while reading the third part
            raise Stop

    with pytest.raises(Stop):
        compact_hour(hour_dir, "quotes", name_suffix="c-000001", check_cancelled=check_cancelled)
    assert sorted(os.listdir(hour_dir)) == before  # no temp file, no compacted file
    assert sorted(read_by_rule(tmp_path, "quotes").column("seq").to_pylist()) == list(range(50))


async def test_cancelling_the_recorder_waits_for_its_compaction_to_stop(tmp_path: pathlib.Path) -> None:
    hour_dir = _make_hour(tmp_path, 60)
    status = RecorderStatus()
    inbox: Inbox = DropChannel("recorder", 10)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_recorder(
            inbox, data_dir=tmp_path, max_buffered_rows=10, compact_check_s=0.01,
            clock_ns=ManualClock(T0 + 5 * NS_PER_HOUR), status=status, task_status=task_status))
        await wait_for(lambda: trio.testing.active_thread_count() > 0 or status.compactions)
        nursery.cancel_scope.cancel()
    # whatever the cancellation interrupted, nothing runs on and the hour reads whole
    assert trio.testing.active_thread_count() == 0
    names = data_names(hour_dir)
    assert len(names) in (1, 60), names
    assert not [n for n in os.listdir(hour_dir) if n.endswith(".tmp")]
    assert sorted(read_by_rule(tmp_path, "quotes").column("seq").to_pylist()) == list(range(600))
