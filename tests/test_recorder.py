"""The recorder: partitions, atomic files, flush timing, the row cap, shutdown, disk errors."""

from __future__ import annotations

import dataclasses
import errno
import pathlib
import threading
import time
from collections.abc import Mapping

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
    SCHEMAS,
    AtomicParquetWriter,
    RecorderStatus,
    run_recorder,
)
from actors.records import Opportunity, OpportunityState, Quote, Side, Trade, VenueDown

# 2024-03-01T00:00:00Z in ns
T0 = 1_709_251_200 * 1_000_000_000
Inbox = DropChannel[Quote | Trade | Opportunity]


def quote(seq: int, recv_ts: int = T0, **changes: object) -> Quote:
    q = Quote("binance", "BTC/USDT", 100.0 + seq, 1.5, 100.5 + seq, 2.5, recv_ts // 1_000_000 - 3,
              recv_ts, seq)
    return msgspec.structs.replace(q, **changes)


def trade(seq: int, recv_ts: int) -> Trade:
    return Trade("okx", "ETH/USDT", 3000.25, 0.5, Side.SELL, recv_ts // 1_000_000, recv_ts,
                 f"t{seq}")


def read_stream(data_dir: pathlib.Path, stream: str) -> pa.Table:
    return ds.dataset(data_dir / stream, format="parquet", partitioning="hive").to_table()


def parquet_files(data_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(data_dir.rglob("*.parquet"))


def temp_files(data_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(data_dir.rglob("*.tmp"))


def seqs_on_disk(data_dir: pathlib.Path) -> list[int]:
    if not (data_dir / "quotes").exists():
        return []
    return sorted(read_stream(data_dir, "quotes").column("seq").to_pylist())


async def settle() -> None:
    """Wait until the recorder has finished any write it started and is blocked again."""
    while True:
        await trio.testing.wait_all_threads_completed()
        await trio.testing.wait_all_tasks_blocked()
        if trio.testing.active_thread_count() == 0:
            return


class CountingWriter:
    """The real writer, counting calls (from the worker thread)."""

    def __init__(self) -> None:
        self.inner = AtomicParquetWriter()
        self.paths: list[pathlib.Path] = []

    def write(self, path: pathlib.Path, table: pa.Table, metadata: Mapping[bytes, bytes]) -> int:
        self.paths.append(path)
        return self.inner.write(path, table, metadata)


class FlakyWriter:
    """Fails with ENOSPC the first ``failures`` calls, then writes for real."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.inner = AtomicParquetWriter()

    def write(self, path: pathlib.Path, table: pa.Table, metadata: Mapping[bytes, bytes]) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return self.inner.write(path, table, metadata)


def test_schemas_cover_every_record_field() -> None:
    def names(record: type) -> list[str]:
        if issubclass(record, msgspec.Struct):
            return list(record.__struct_fields__)
        return [f.name for f in dataclasses.fields(record)]

    assert SCHEMAS["quotes"].names == names(Quote)
    assert SCHEMAS["trades"].names == names(Trade)
    assert SCHEMAS["opportunities"].names == [*names(Opportunity), "duration_ns"]


async def test_rows_land_in_their_partitions_and_read_back_exactly(tmp_path: pathlib.Path) -> None:
    last_ns_of_feb = T0 - 1
    opened, closed = T0 + 5, T0 + 2 * NS_PER_HOUR + 7
    window = Opportunity("SOL/USDT", "bybit", "mexc", OpportunityState.OPEN, 12.5, 4.25, 4.25, 4.25,
                         150.0, 10.0, 150.2, 8.0, opened)
    events = [
        window,
        dataclasses.replace(window, state=OpportunityState.UPDATE, net_bps=5.0, peak_net_bps=5.0),
        dataclasses.replace(window, state=OpportunityState.CLOSE, net_bps=1.0, peak_net_bps=5.0,
                            closed_at=closed),
    ]
    inbox: Inbox = DropChannel("recorder", 100)
    inbox.put_nowait([quote(1, last_ns_of_feb), quote(2, T0), trade(1, T0 + NS_PER_HOUR),
                      trade(2, T0 + 23 * NS_PER_HOUR + 1), *events])
    inbox.close()
    status = RecorderStatus()

    with trio.fail_after(10):
        await run_recorder(inbox, data_dir=tmp_path, max_buffered_rows=100, status=status)

    dirs = {str(p.parent.relative_to(tmp_path)) for p in parquet_files(tmp_path)}
    assert dirs == {
        "quotes/date=2024-02-29/hour=23", "quotes/date=2024-03-01/hour=00",
        "trades/date=2024-03-01/hour=01", "trades/date=2024-03-01/hour=23",
        "opportunities/date=2024-03-01/hour=00", "opportunities/date=2024-03-01/hour=02",
    }
    quotes = sorted(read_stream(tmp_path, "quotes").to_pylist(), key=lambda r: r["seq"])
    assert quotes == [
        {"venue": "binance", "symbol": "BTC/USDT", "bid": 101.0, "bid_size": 1.5, "ask": 101.5,
         "ask_size": 2.5, "venue_ts": last_ns_of_feb // 1_000_000 - 3, "recv_ts": last_ns_of_feb,
         "seq": 1, "date": "2024-02-29", "hour": 23},
        {"venue": "binance", "symbol": "BTC/USDT", "bid": 102.0, "bid_size": 1.5, "ask": 102.5,
         "ask_size": 2.5, "venue_ts": T0 // 1_000_000 - 3, "recv_ts": T0, "seq": 2,
         "date": "2024-03-01", "hour": 0},
    ]
    trades = sorted(read_stream(tmp_path, "trades").to_pylist(), key=lambda r: r["trade_id"])
    assert [(t["side"], t["trade_id"], t["recv_ts"], t["hour"]) for t in trades] == [
        ("sell", "t1", T0 + NS_PER_HOUR, 1), ("sell", "t2", T0 + 23 * NS_PER_HOUR + 1, 23),
    ]
    assert trades[0]["price"] == 3000.25 and trades[0]["venue_ts"] == (T0 + NS_PER_HOUR) // 10**6
    opportunities = sorted(read_stream(tmp_path, "opportunities").to_pylist(),
                           key=lambda r: ["open", "update", "close"].index(r["state"]))
    assert [(o["state"], o["net_bps"], o["opened_at"], o["closed_at"], o["duration_ns"], o["hour"])
            for o in opportunities] == [
        ("open", 4.25, opened, 0, 0, 0),
        ("update", 5.0, opened, 0, 0, 0),
        ("close", 1.0, opened, closed, closed - opened, 2),
    ]
    assert opportunities[2] | {"date": None} == {
        "symbol": "SOL/USDT", "buy_venue": "bybit", "sell_venue": "mexc", "state": "close",
        "gross_bps": 12.5, "net_bps": 1.0, "peak_net_bps": 5.0, "mean_net_bps": 4.25,
        "buy_price": 150.0,
        "buy_size": 10.0, "sell_price": 150.2, "sell_size": 8.0, "opened_at": opened,
        "closed_at": closed, "duration_ns": closed - opened, "date": None, "hour": 2,
    }

    for path in parquet_files(tmp_path):
        meta = pq.read_metadata(path)
        stream = path.relative_to(tmp_path).parts[0]
        assert meta.metadata[b"spreadwatch.schema"] == b"2"
        assert meta.metadata[b"spreadwatch.stream"] == stream.encode()
        assert meta.row_group(0).column(0).compression == "ZSTD"
        assert pq.read_schema(path).remove_metadata().equals(SCHEMAS[stream].remove_metadata())
    quotes_file = next((tmp_path / "quotes").rglob("*.parquet"))
    assert pq.read_schema(quotes_file).field("recv_ts").metadata == {b"unit": b"ns"}

    snapshot = status.snapshot()
    assert snapshot["rows_written"] == {"quotes": 2, "trades": 2, "opportunities": 3}
    assert snapshot["files_written"] == 6
    assert snapshot["buffered_rows"] == 0 and snapshot["write_errors"] == 0
    assert snapshot["bytes_written"] == sum(p.stat().st_size for p in parquet_files(tmp_path))
    assert snapshot["last_error"] is None and snapshot["last_flush_ns"] == status.last_flush_ns > 0


async def test_flush_happens_within_the_flush_interval(
    tmp_path: pathlib.Path, autojump_clock: trio.testing.MockClock,
) -> None:
    inbox: Inbox = DropChannel("recorder", 100)
    writer = CountingWriter()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_recorder(
            inbox, data_dir=tmp_path, flush_interval_s=1.0, max_buffered_rows=100,
            writer=writer, task_status=task_status))
        inbox.put_nowait([quote(i) for i in range(3)])
        await trio.sleep(0.9)
        assert writer.paths == [] and trio.testing.active_thread_count() == 0
        await trio.sleep(0.2)
        # Virtual time jumps while a worker thread runs: check that the flush has started.
        assert writer.paths or trio.testing.active_thread_count() == 1
        await settle()
        assert seqs_on_disk(tmp_path) == [0, 1, 2]
        nursery.cancel_scope.cancel()


async def test_flush_starts_early_once_flush_rows_are_buffered(
    tmp_path: pathlib.Path, autojump_clock: trio.testing.MockClock,
) -> None:
    inbox: Inbox = DropChannel("recorder", 100)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_recorder(
            inbox, data_dir=tmp_path, flush_interval_s=3600, flush_rows=10,
            max_buffered_rows=100, compact_after_s=None, task_status=task_status))
        inbox.put_nowait([quote(i) for i in range(9)])
        await settle()
        assert parquet_files(tmp_path) == []
        inbox.put_one_nowait(quote(9))
        await settle()
        assert seqs_on_disk(tmp_path) == list(range(10))
        assert trio.current_time() - start < 3600
        nursery.cancel_scope.cancel()


async def test_files_are_never_visible_partially(tmp_path: pathlib.Path) -> None:
    # Real clock and a real reader thread racing the writer thread.
    errors: list[BaseException] = []
    reads = 0
    stop = threading.Event()

    def read_everything() -> None:
        nonlocal reads
        while not stop.is_set():
            for path in tmp_path.rglob("*.parquet"):
                try:
                    pq.read_table(path)
                    reads += 1
                except Exception as exc:
                    errors.append(exc)

    reader = threading.Thread(target=read_everything, daemon=True)
    reader.start()
    inbox: Inbox = DropChannel("recorder", 100)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(lambda task_status: run_recorder(
                    inbox, data_dir=tmp_path, flush_interval_s=3600, flush_rows=20,
                    max_buffered_rows=40, compact_after_s=None, task_status=task_status))
                for flush in range(40):
                    inbox.put_nowait([quote(flush * 20 + i) for i in range(20)])
                    await settle()
                nursery.cancel_scope.cancel()
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert reads > 0
    assert len(parquet_files(tmp_path)) == 40
    assert seqs_on_disk(tmp_path) == list(range(800))
    assert temp_files(tmp_path) == []


def test_writer_leaves_nothing_behind_when_a_write_fails(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "quotes" / "date=2024-03-01" / "hour=00" / "part-1.parquet"
    unwritable = pa.table({"x": pa.array([None], pa.month_day_nano_interval())})
    with pytest.raises(pa.ArrowNotImplementedError):
        AtomicParquetWriter().write(path, unwritable, {})
    assert list(path.parent.iterdir()) == []


async def test_startup_removes_leftover_temp_files(tmp_path: pathlib.Path) -> None:
    hour_dir = tmp_path / "quotes" / "date=2024-03-01" / "hour=00"
    hour_dir.mkdir(parents=True)
    AtomicParquetWriter().write(hour_dir / "part-1.parquet", pa.table({"seq": [1]}), {})
    leftovers = [hour_dir / ".x.parquet.tmp",
                 tmp_path / "trades" / "date=2024-03-01" / "hour=05" / ".part-9.parquet.tmp"]
    leftovers[1].parent.mkdir(parents=True)
    for leftover in leftovers:
        leftover.write_bytes(b"PAR1 half a file")
    unrelated = [hour_dir / ".keep", tmp_path / "other" / ".y.parquet.tmp"]
    unrelated[1].parent.mkdir()
    for path in unrelated:
        path.write_bytes(b"keep")
    # Readers ignore temp names even before the clean-up.
    assert read_stream(tmp_path, "quotes").column("seq").to_pylist() == [1]

    status = RecorderStatus()
    inbox: Inbox = DropChannel("recorder", 10)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_recorder(
            inbox, data_dir=tmp_path, max_buffered_rows=10, status=status,
            task_status=task_status))
        assert status.temp_files_cleaned == 2
        assert not any(p.exists() for p in leftovers)
        assert all(p.exists() for p in [*unrelated, hour_dir / "part-1.parquet"])
        nursery.cancel_scope.cancel()


# Shutdown tests run on the real clock: under autojump, the shutdown deadline would
# fire as soon as a worker thread runs, since the event loop is idle meanwhile.


async def test_cancellation_writes_buffered_and_pending_rows(tmp_path: pathlib.Path) -> None:
    inbox: Inbox = DropChannel("recorder", 100)
    status = RecorderStatus()
    outcome: list[str] = []

    async def recorder(task_status: trio.TaskStatus[None]) -> None:
        try:
            await run_recorder(inbox, data_dir=tmp_path, flush_interval_s=3600,
                               max_buffered_rows=100, status=status, task_status=task_status)
        except trio.Cancelled:
            outcome.append("cancelled")
            raise
        outcome.append("returned")

    async with trio.open_nursery() as nursery:
        await nursery.start(recorder)
        inbox.put_nowait([quote(i) for i in range(30)])
        await trio.testing.wait_all_tasks_blocked()
        assert status.buffered_rows == 30
        inbox.put_nowait([quote(i) for i in range(30, 50)])
        nursery.cancel_scope.cancel()

    assert outcome == ["cancelled"]
    assert seqs_on_disk(tmp_path) == list(range(50))
    assert status.buffered_rows == 0 and status.rows_abandoned == 0
    assert len(inbox) == 0


async def test_closed_inbox_flushes_and_returns(tmp_path: pathlib.Path) -> None:
    inbox: Inbox = DropChannel("recorder", 100)
    inbox.put_nowait([quote(i) for i in range(25)])
    inbox.close()
    with trio.fail_after(10):
        await run_recorder(inbox, data_dir=tmp_path, flush_interval_s=3600,
                           max_buffered_rows=100)
    assert seqs_on_disk(tmp_path) == list(range(25))


async def test_failing_disk_keeps_rows_under_the_cap_then_recovers(
    tmp_path: pathlib.Path, autojump_clock: trio.testing.MockClock,
) -> None:
    cap = 50
    inbox: Inbox = DropChannel("recorder", 20)
    writer = FlakyWriter(failures=5)
    status = RecorderStatus()
    accepted: list[int] = []

    async def produce() -> None:
        for i in range(300):
            if inbox.put_one_nowait(quote(i)):
                accepted.append(i)
            # Let a write that started finish before virtual time moves on.
            await settle()
            assert status.buffered_rows <= cap
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_recorder(
            inbox, data_dir=tmp_path, flush_interval_s=1.0, retry_max_s=4.0,
            max_buffered_rows=cap, writer=writer, status=status, task_status=task_status))
        await produce()
        # Failed at 0.25 s (flush_rows reached), retried at +1 s and +2 s: 3 s have passed.
        assert status.write_errors == 2
        assert "No space left on device" in (status.last_error or "")
        assert status.peak_buffered_rows == cap
        for _ in range(100):  # 5 failures with backoff capped at 4 s: recovers within 20 s
            if status.rows_written["quotes"] == len(accepted):
                break
            await trio.sleep(1)
            await settle()
        assert status.last_flush_ns > status.last_error_ns > 0
        assert status.last_error is None
        inbox.close()

    assert inbox.statistics().dropped == 300 - len(accepted) > 0
    assert seqs_on_disk(tmp_path) == accepted
    assert status.write_errors == 5
    assert status.peak_buffered_rows == cap
    assert status.rows_written["quotes"] == len(accepted)
    assert status.rows_abandoned == 0


async def test_row_cap_holds_across_many_partitions(
    tmp_path: pathlib.Path, autojump_clock: trio.testing.MockClock,
) -> None:
    cap = 8
    inbox: Inbox = DropChannel("recorder", 1000)
    records: list[Quote | Trade] = [quote(h, T0 + h * NS_PER_HOUR) for h in range(40)]
    records += [trade(h, T0 + h * NS_PER_HOUR) for h in range(20)]
    inbox.put_nowait(records)
    inbox.close()
    status = RecorderStatus()
    await run_recorder(inbox, data_dir=tmp_path, flush_interval_s=3600,
                       max_buffered_rows=cap, status=status, compact_after_s=None)
    assert status.peak_buffered_rows == cap
    assert seqs_on_disk(tmp_path) == list(range(40))
    assert read_stream(tmp_path, "trades").num_rows == 20
    assert len(list((tmp_path / "quotes").glob("date=*/hour=*"))) == 40
    assert status.files_written == 60


async def test_shutdown_gives_up_after_its_timeout_while_the_disk_fails(
    tmp_path: pathlib.Path,
) -> None:
    inbox: Inbox = DropChannel("recorder", 100)
    status = RecorderStatus()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_recorder(
            inbox, data_dir=tmp_path, flush_interval_s=0.05, max_buffered_rows=100,
            shutdown_timeout_s=0.3, writer=FlakyWriter(failures=10**6), status=status,
            task_status=task_status))
        inbox.put_nowait([quote(i) for i in range(10)])
        await trio.testing.wait_all_tasks_blocked()
        cancelled_at = time.monotonic()
        nursery.cancel_scope.cancel()
    assert 0.3 <= time.monotonic() - cancelled_at < 1.0
    assert status.write_errors >= 3  # at 0, 0.05 and 0.15 s: backoff 0.05, 0.1, 0.2 s
    assert status.rows_abandoned == 10
    assert status.buffered_rows == 0
    assert parquet_files(tmp_path) == []


async def test_invalid_records_are_counted_and_never_become_paths(
    tmp_path: pathlib.Path, autojump_clock: trio.testing.MockClock,
) -> None:
    bad = [
        VenueDown("binance", T0),
        quote(1, bid="101.0"),
        quote(2, recv_ts=-1),
        quote(3, venue=None),
        msgspec.structs.replace(quote(4), seq=2**64),
        msgspec.structs.replace(trade(5, T0), side=7),
    ]
    good = [quote(10, symbol="../../etc/passwd"), quote(11, venue="/tmp/x"),
            quote(12, symbol="a\ud800")]
    inbox: Inbox = DropChannel("recorder", 100)
    inbox.put_nowait([*bad, *good])  # type: ignore[list-item]
    inbox.close()
    status = RecorderStatus()
    await run_recorder(inbox, data_dir=tmp_path, max_buffered_rows=100, status=status)

    assert status.rows_rejected == len(bad)
    assert [str(p.relative_to(tmp_path).parent) for p in parquet_files(tmp_path)] == [
        "quotes/date=2024-03-01/hour=00"]
    rows = sorted(read_stream(tmp_path, "quotes").to_pylist(), key=lambda r: r["seq"])
    assert [(r["venue"], r["symbol"]) for r in rows] == [
        ("binance", "../../etc/passwd"), ("/tmp/x", "BTC/USDT"), ("binance", "a\\ud800")]


async def test_slow_disk_does_not_block_the_event_loop(tmp_path: pathlib.Path) -> None:
    written = threading.Event()

    class SlowWriter:
        def write(self, path: pathlib.Path, table: pa.Table,
                  metadata: Mapping[bytes, bytes]) -> int:
            time.sleep(0.3)
            size = AtomicParquetWriter().write(path, table, metadata)
            written.set()
            return size

    inbox: Inbox = DropChannel("recorder", 10)
    ticks = 0
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_recorder(
                inbox, data_dir=tmp_path, flush_rows=1, max_buffered_rows=10,
                writer=SlowWriter(), task_status=task_status))
            inbox.put_one_nowait(quote(1))
            while not written.is_set():
                await trio.sleep(0.01)
                ticks += 1
            nursery.cancel_scope.cancel()
    assert ticks >= 10
