"""The recorded layout read by other tools with hive partitioning and partition pruning:
pyarrow, DuckDB and polars. A file that is not Parquet sits in another hour: a reader that
pruned by date/hour never opens it, one that did not fails."""

from __future__ import annotations

import pathlib
from typing import Any

import pyarrow.dataset as ds
import pytest
import trio

from actors.channels import DropChannel
from actors.recorder import NS_PER_HOUR, compact_hour, partition_dir, run_recorder
from actors.records import Quote

T0 = 1_709_251_200 * 10**9  # 2024-03-01T00:00:00Z
HOUR0 = T0 // NS_PER_HOUR


@pytest.fixture
def data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    async def record() -> None:
        quotes = [Quote("binance", "BTC/USDT", 100.0 + i, 1.0, 101.0 + i, 1.0, 0, T0 + NS_PER_HOUR + i * 10**9, i)
                  for i in range(50)]
        quotes += [Quote("okx", "ETH/USDT", 3000.0, 1.0, 3001.0, 1.0, 0, T0 + i * 10**9, i) for i in range(20)]
        for chunk in (quotes[:25], quotes[25:]):
            inbox: DropChannel[Any] = DropChannel("recorder", 100)
            inbox.put_nowait(chunk)
            inbox.close()
            await run_recorder(inbox, data_dir=tmp_path, max_buffered_rows=100, compact_after_s=None)

    trio.run(record)
    # hour 01 compacted, hour 00 left in parts: readers meet both kinds of file
    compact_hour(partition_dir(tmp_path, "quotes", HOUR0 + 1), "quotes", name_suffix="t-000001")
    poison = partition_dir(tmp_path, "quotes", HOUR0 + 5)
    poison.mkdir(parents=True)
    (poison / "part-0-poison-000001.parquet").write_bytes(b"not parquet")
    return tmp_path


def test_pyarrow_reads_with_pruning(data_dir: pathlib.Path) -> None:
    dataset = ds.dataset(data_dir / "quotes", format="parquet", partitioning="hive")
    table = dataset.to_table(filter=(ds.field("date") == "2024-03-01") & (ds.field("hour") == 1),
                             columns=["seq", "symbol"])
    assert sorted(table.column("seq").to_pylist()) == list(range(50))
    assert set(table.column("symbol").to_pylist()) == {"BTC/USDT"}


def test_duckdb_reads_with_pruning(data_dir: pathlib.Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    glob = str(data_dir / "quotes" / "*" / "*" / "*.parquet")
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT count(*), min(seq), max(seq), any_value(symbol) FROM read_parquet(?, hive_partitioning = true) "
            "WHERE date = '2024-03-01' AND hour = 1", [glob]).fetchall()
        assert rows == [(50, 0, 49, "BTC/USDT")]
        assert con.execute("SELECT count(*) FROM read_parquet(?, hive_partitioning = true) WHERE hour = 0",
                           [glob]).fetchall() == [(20,)]
        with pytest.raises(duckdb.Error):  # unpruned, the reader meets the poison file
            con.execute("SELECT count(*) FROM read_parquet(?, hive_partitioning = true)", [glob]).fetchall()


def test_polars_reads_with_pruning(data_dir: pathlib.Path) -> None:
    pl = pytest.importorskip("polars")
    scan = pl.scan_parquet(str(data_dir / "quotes" / "**" / "*.parquet"), hive_partitioning=True)
    frame = scan.filter((pl.col("hour") == 1) & (pl.col("date").cast(pl.String) == "2024-03-01")).collect()
    assert sorted(frame["seq"].to_list()) == list(range(50))
    assert scan.filter(pl.col("hour") == 0).select(pl.len()).collect().item() == 20
    with pytest.raises(Exception, match=r"(?i)parquet|magic|footer"):
        scan.collect()
