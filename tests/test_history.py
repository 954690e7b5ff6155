"""/api/history: a known recorded hour comes back exactly; downsampling; pruning; bad parameters."""

from __future__ import annotations

import pathlib
import random
from typing import Any

import httpx
import pytest
import trio

from actors.channels import DropChannel
from actors.config import parse_config
from actors.history import (
    HistoryError,
    HistoryLimits,
    HistoryQuery,
    parse_history_query,
    read_history,
    stream_files,
)
from actors.recorder import NS_PER_HOUR, compact_hour, partition_dir, run_recorder
from actors.records import Quote
from app.runtime import Runtime, run_spreadwatch
from app.web import create_app
from tests.fakes import RestVenues, only

HOUR_START = 1_709_280_000 * 10**9  # 2024-03-01T08:00:00Z
HOUR_MS = HOUR_START // 10**6
S = 10**9
FEE = 10.0  # bps, both venues (the config default)
STALE_NS = 10 * S


def recorded_quotes() -> list[Quote]:
    """BTC/USDT on binance at every whole second and bybit at every half second of the hour,
    with ETH/USDT and the neighbouring hours as noise the queries must leave out."""
    rng = random.Random(42)
    quotes: list[Quote] = []
    for k in range(3600):
        bid = round(100 + rng.uniform(-1, 1), 2)
        quotes.append(Quote("binance", "BTC/USDT", bid, 1.0, round(bid + 0.02, 2), 1.0, 0, HOUR_START + k * S, k))
        bid2 = round(bid + rng.uniform(-0.3, 0.3), 2)
        quotes.append(Quote("bybit", "BTC/USDT", bid2, 2.0, round(bid2 + 0.03, 2), 2.0, 0,
                            HOUR_START + k * S + S // 2, k))
        quotes.append(Quote("okx", "ETH/USDT", 3000.0, 1.0, 3000.5, 1.0, 0, HOUR_START + k * S, k))
    for k in range(1, 100):  # the hour after: outside [from, to)
        quotes.append(Quote("binance", "BTC/USDT", 1.0, 1.0, 2.0, 1.0, 0, HOUR_START + NS_PER_HOUR + k * S, k))
    return quotes


@pytest.fixture
def data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    trio.run(record_the_hour, tmp_path)
    return tmp_path


async def record_the_hour(tmp_path: pathlib.Path) -> None:
    quotes = recorded_quotes()
    inbox: DropChannel[Any] = DropChannel("recorder", len(quotes))
    # in three flushes (three part files), the first two then compacted: both kinds of file
    third = len(quotes) // 3
    for chunk in (quotes[:third], quotes[third:2 * third]):
        inbox.put_nowait(chunk)
        inbox.close()
        await run_recorder(inbox, data_dir=tmp_path, max_buffered_rows=len(quotes), compact_after_s=None)
        inbox = DropChannel("recorder", len(quotes))
    compact_hour(partition_dir(tmp_path, "quotes", HOUR_START // NS_PER_HOUR), "quotes", name_suffix="t-000001")
    inbox.put_nowait(quotes[2 * third:])
    inbox.close()
    await run_recorder(inbox, data_dir=tmp_path, max_buffered_rows=len(quotes), compact_after_s=None)


def net_bps(buy_ask: float, sell_bid: float) -> float:
    """The net spread written out here independently of actors.spreads."""
    return (sell_bid * (1 - FEE / 1e4) - buy_ask * (1 + FEE / 1e4)) / buy_ask * 1e4


def expected_best(binance: Quote, bybit: Quote) -> float:
    return max(net_bps(binance.ask, bybit.bid), net_bps(bybit.ask, binance.bid))


def query(max_points: int, from_ns: int = HOUR_START, to_ns: int = HOUR_START + NS_PER_HOUR) -> HistoryQuery:
    return HistoryQuery("BTC/USDT", ("binance", "bybit"), from_ns, to_ns, max_points)


def read(data_dir: pathlib.Path, q: HistoryQuery, limits: HistoryLimits | None = None) -> dict[str, Any]:
    return read_history(data_dir, q, fees_bps={"binance": FEE, "bybit": FEE, "okx": FEE},
                        stale_after_ns={"binance": STALE_NS, "bybit": STALE_NS, "okx": STALE_NS},
                        limits=limits)


def test_a_recorded_hour_comes_back_exactly_at_one_point_per_second(data_dir: pathlib.Path) -> None:
    quotes = [q for q in recorded_quotes() if q.symbol == "BTC/USDT" and q.recv_ts < HOUR_START + NS_PER_HOUR]
    binance = [q for q in quotes if q.venue == "binance"]
    bybit = [q for q in quotes if q.venue == "bybit"]
    doc = read(data_dir, query(3600))
    assert doc["bucket_ms"] == 1000 and doc["rows"] == 7200
    assert doc["t"] == [HOUR_MS + k * 1000 for k in range(3600)]
    assert doc["venues"]["binance"] == {"bid": [q.bid for q in binance], "ask": [q.ask for q in binance]}
    assert doc["venues"]["bybit"] == {"bid": [q.bid for q in bybit], "ask": [q.ask for q in bybit]}
    expected = [expected_best(binance[0], bybit[0])]
    for k in range(1, 3600):
        expected.append(max(expected_best(binance[k], bybit[k - 1]), expected_best(binance[k], bybit[k])))
    assert doc["best_net_bps"] == pytest.approx(expected, rel=1e-12, abs=1e-9)


def test_downsampling_keeps_the_last_quote_and_the_best_spread_of_each_bucket(data_dir: pathlib.Path) -> None:
    quotes = [q for q in recorded_quotes() if q.symbol == "BTC/USDT" and q.recv_ts < HOUR_START + NS_PER_HOUR]
    binance = [q for q in quotes if q.venue == "binance"]
    bybit = [q for q in quotes if q.venue == "bybit"]
    per_second = read(data_dir, query(3600))["best_net_bps"]
    doc = read(data_dir, query(60))
    assert doc["bucket_ms"] == 60_000 and len(doc["t"]) == 60
    assert doc["venues"]["binance"]["bid"] == [binance[m * 60 + 59].bid for m in range(60)]
    assert doc["venues"]["bybit"]["ask"] == [bybit[m * 60 + 59].ask for m in range(60)]
    assert doc["best_net_bps"] == [max(per_second[m * 60:(m + 1) * 60]) for m in range(60)]
    for points in (1, 7, 5000):
        doc = read(data_dir, query(points))
        assert len(doc["t"]) <= points and all(len(v["bid"]) == len(doc["t"]) for v in doc["venues"].values())


def test_a_range_starts_from_the_state_before_it_and_ends_before_to(data_dir: pathlib.Path) -> None:
    doc = read(data_dir, query(10, HOUR_START + 100 * S + S // 4, HOUR_START + 110 * S + S // 4))
    # the first bucket already knows bybit's quote from 99.5 s, read from before `from`
    assert doc["rows"] == 20 and doc["best_net_bps"][0] is not None
    assert doc["t"][0] == HOUR_MS + 100_250
    # the next hour is only read when the range reaches it
    assert len(stream_files(data_dir, "quotes", HOUR_START, HOUR_START + NS_PER_HOUR)) == 2
    assert len(stream_files(data_dir, "quotes", HOUR_START, HOUR_START + NS_PER_HOUR + 1)) == 3
    assert read(data_dir, query(10, HOUR_START + NS_PER_HOUR, HOUR_START + 2 * NS_PER_HOUR))["rows"] == 99


def test_caps_on_rows(data_dir: pathlib.Path) -> None:
    with pytest.raises(HistoryError) as scanned:
        read(data_dir, query(10), HistoryLimits(max_rows_scanned=1000))
    assert scanned.value.status == 413
    with pytest.raises(HistoryError) as used:
        read(data_dir, query(10), HistoryLimits(max_rows_used=100))
    assert used.value.status == 413
    with pytest.raises(HistoryError) as missing:
        read(data_dir, HistoryQuery("SOL/USDT", (), HOUR_START, HOUR_START + S, 10))
    assert missing.value.status == 404


@pytest.mark.parametrize(("params", "message"), [
    ({}, "symbol"),
    ({"symbol": "../../etc", "from": "1", "to": "2"}, "symbol"),
    ({"symbol": "BTC/USDT\x00", "from": "1", "to": "2"}, "symbol"),
    ({"symbol": "BTC/USDT", "to": "2"}, "from is required"),
    ({"symbol": "BTC/USDT", "from": "1"}, "to is required"),
    ({"symbol": "BTC/USDT", "from": "yesterday", "to": "2"}, "from: expected"),
    ({"symbol": "BTC/USDT", "from": "5", "to": "5"}, "after"),
    ({"symbol": "BTC/USDT", "from": "9", "to": "5"}, "after"),
    ({"symbol": "BTC/USDT", "from": "0", "to": str(25 * 3600 * 1000)}, "range too long"),
    ({"symbol": "BTC/USDT", "from": "1", "to": "2", "max_points": "0"}, "max_points"),
    ({"symbol": "BTC/USDT", "from": "1", "to": "2", "max_points": "5001"}, "max_points"),
    ({"symbol": "BTC/USDT", "from": "1", "to": "2", "max_points": "-3"}, "max_points"),
    ({"symbol": "BTC/USDT", "from": "1", "to": "2", "venues": "binance,nasdaq"}, "unknown venue"),
    ({"symbol": "BTC/USDT", "from": "1", "to": "2", "venues": "../x"}, "unknown venue"),
    ({"symbol": "BTC/USDT", "from": "1", "to": "2", "venues": ",".join(["binance"] * 9)}, "at most 8"),
    ({"symbol": "BTC/USDT", "from": "1", "to": "2", "limit": "3"}, "unknown parameter"),
])
def test_bad_parameters_are_refused_with_400(params: dict[str, str], message: str) -> None:
    with pytest.raises(HistoryError) as error:
        parse_history_query(params, known_venues={"binance", "bybit", "okx"}, limits=HistoryLimits())
    assert error.value.status == 400 and message in error.value.message


def test_times_parse_from_milliseconds_and_iso_8601() -> None:
    parsed = parse_history_query(
        {"symbol": "BTC/USDT", "from": str(HOUR_MS), "to": "2024-03-01T09:00:00Z", "venues": "bybit,binance"},
        known_venues={"binance", "bybit"}, limits=HistoryLimits())
    assert parsed == HistoryQuery("BTC/USDT", ("bybit", "binance"), HOUR_START, HOUR_START + NS_PER_HOUR, 500)
    naive = parse_history_query({"symbol": "BTC/USDT", "from": "2024-03-01T08:00", "to": "2024-03-01T08:00:01+00:00"},
                                known_venues=(), limits=HistoryLimits())
    assert (naive.from_ns, naive.to_ns) == (HOUR_START, HOUR_START + S)


async def test_the_http_route_answers_and_refuses(data_dir: pathlib.Path) -> None:
    config = parse_config({
        "recorder": {"enabled": False},
        "venues": only({"binance": {"rest_url": "http://binance.test", "ws_url": "ws://binance.test"},
                        "bybit": {"rest_url": "http://bybit.test", "ws_url": "ws://bybit.test"}}),
    })
    rest = RestVenues()

    def never_connect(url: str) -> Any:
        raise OSError("no venue in this test")

    shutdown = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            runtime: Runtime = await nursery.start(lambda task_status: run_spreadwatch(
                config, shutdown=shutdown, connect=never_connect, data_dir=data_dir,
                http_transport=httpx.MockTransport(rest.handler), task_status=task_status))
            client = create_app(runtime).test_client()
            ok = await client.get("/api/history", query_string={
                "symbol": "BTC/USDT", "venues": "binance,bybit", "from": str(HOUR_MS),
                "to": str(HOUR_MS + 3_600_000), "max_points": "3600"})
            assert ok.status_code == 200
            doc = await ok.get_json()
            assert doc == read(data_dir, query(3600))
            for params, status in [
                ({"symbol": "NOPE/USDT", "from": str(HOUR_MS), "to": str(HOUR_MS + 1000)}, 404),
                ({"symbol": "BTC/USDT", "from": str(HOUR_MS), "to": str(HOUR_MS - 1000)}, 400),
                ({"symbol": "BTC/USDT", "from": "0", "to": str(HOUR_MS)}, 400),
                ({"symbol": "BTC/USDT", "from": str(HOUR_MS), "to": str(HOUR_MS + 1), "venues": "nope"}, 400),
                ({"symbol": "BTC/USDT", "from": str(HOUR_MS), "to": str(HOUR_MS + 1), "max_points": "x"}, 400),
            ]:
                response = await client.get("/api/history", query_string=params)
                assert response.status_code == status, params
                assert "error" in await response.get_json()
            shutdown.set()
