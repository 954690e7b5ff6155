"""The simulated venues: market model, REST shapes, WebSocket protocols, fault injection.

I/O tests run on loopback in real time with short configured intervals, each under an
absolute ``trio.fail_after``.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import trio
import trio.testing
import wsproto
import wsproto.events
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    wrap_client_stream,
)

from app.sim import (
    VENUES,
    ChaosEvent,
    Fault,
    Market,
    MarketParams,
    MarketSnapshot,
    SimEndpoints,
    SimTrade,
    SimVenueConfig,
    SimVenueControl,
    TopOfBook,
    available_venues,
    make_wire,
    run_chaos,
    run_market,
    run_sim_venue,
    run_sim_venues,
    synthetic_symbols,
)
from app.sim.wire import (
    NOT_FOUND,
    Closing,
    ConnectionView,
    Disconnect,
    Frame,
    Opening,
    Refusal,
    Reply,
    RestReply,
    VenueWire,
    WireDefaults,
    dumps,
    json_reply,
)

TIMEOUT = 5.0  # absolute limit of every I/O test; each takes well under 2 s
QUIET = MarketParams(max_update_rate=0.0, max_trade_rate=0.0, arb_probability=0.0)

BINANCE_BOOK_KEYS = {"u", "s", "b", "B", "a", "A"}
BINANCE_TRADE_KEYS = {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
BYBIT_BOOK_KEYS = {"topic", "ts", "type", "data", "cts"}
BYBIT_BOOK_DATA_KEYS = {"s", "b", "a", "u", "seq"}
BYBIT_ACK_KEYS = {"success", "ret_msg", "conn_id", "req_id", "op"}


# -- helpers ---------------------------------------------------------------------------


async def start_venue(
    nursery: trio.Nursery,
    name: str,
    *,
    market: Market | None = None,
    wire: VenueWire | None = None,
    **overrides: Any,
) -> tuple[SimEndpoints, SimVenueControl]:
    market = market if market is not None else Market(seed=3)
    await nursery.start(partial(run_market, market, interval_s=0.01))
    control = SimVenueControl()
    base = wire.config if wire is not None else SimVenueConfig.for_venue(name)
    config = replace(base, publish_interval_s=0.005, **overrides)
    endpoints = await nursery.start(
        partial(run_sim_venue, name, market, control=control, config=config, wire=wire)
    )
    return endpoints, control


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[WebSocketConnection]:
    """trio-websocket's client over a TCP stream the test owns and always closes.

    ``open_websocket_url`` (trio-websocket 0.12.2) never closes its socket when the
    server closes first: ``aclose()`` returns early once a close reason is set, and
    the socket is left to the garbage collector (a ResourceWarning, an error here).
    """
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream, trio.open_nursery() as nursery:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        ws = await wrap_client_stream(nursery, stream, f"{parts.hostname}:{parts.port}", target)
        try:
            yield ws
        finally:
            with trio.move_on_after(1.0, shield=True):
                await ws.aclose()
            nursery.cancel_scope.cancel()


async def receive_json(ws: WebSocketConnection) -> Any:
    return orjson.loads(await ws.get_message())


async def next_matching(ws: WebSocketConnection, predicate: Any) -> Any:
    while True:
        message = await receive_json(ws)
        if predicate(message):
            return message


def is_decimal_string(value: object, decimals: int | None = None) -> bool:
    if not isinstance(value, str):
        return False
    float(value)
    return decimals is None or len(value.partition(".")[2]) == decimals


class RawClient:
    """A WebSocket client built on wsproto that never answers pings by itself."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.pings: list[bytes] = []

    @classmethod
    async def handshake(cls, url: str, path: str) -> tuple[RawClient, wsproto.events.Event | None]:
        """Open a connection; returns the client and the server's answer to the handshake."""
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        client = cls(await trio.open_tcp_stream(parts.hostname, parts.port))
        request = wsproto.events.Request(host=f"{parts.hostname}:{parts.port}", target=path)
        await client.stream.send_all(client.conn.send(request))
        return client, await client.next_event()

    async def next_event(self) -> wsproto.events.Event | None:
        """The next event other than a ping (recorded, not answered); None at EOF."""
        while True:
            for event in self.conn.events():
                if isinstance(event, wsproto.events.Ping):
                    self.pings.append(bytes(event.payload))
                    continue
                return event
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.conn.receive_data(data)


# -- market model ----------------------------------------------------------------------


def run_steps(market: Market, steps: int, dt: float = 0.05) -> None:
    for _ in range(steps):
        market.step(dt)


def test_market_is_deterministic_for_a_seed() -> None:
    a, b, c = Market(seed=11), Market(seed=11), Market(seed=12)
    for market in (a, b, c):
        run_steps(market, 300)
    assert dict(a.snapshot.books) == dict(b.snapshot.books)
    assert a.snapshot.trades == b.snapshot.trades
    assert a.snapshot.windows == b.snapshot.windows
    assert a.snapshot.now_ms == b.snapshot.now_ms
    assert dict(a.snapshot.books) != dict(c.snapshot.books)


def test_snapshots_are_immutable_and_replaced_by_each_step() -> None:
    market = Market(seed=1)
    before = market.snapshot
    frozen_books = dict(before.books)
    market.step(1.0)
    assert market.snapshot is not before
    assert market.snapshot.version == before.version + 1
    assert dict(before.books) == frozen_books
    with pytest.raises(TypeError):
        before.books[("binance", "BTC/USDT")] = before.books[("binance", "BTC/USDT")]  # type: ignore[index]


def test_books_are_sane_and_listing_is_per_venue() -> None:
    market = Market(seed=5)
    run_steps(market, 100)
    snapshot = market.snapshot
    for (venue, symbol), book in snapshot.books.items():
        spec = market.spec(symbol)
        assert spec.trading_on(venue)
        assert 0.0 < book.bid < book.ask
        assert book.bid_size > 0.0 and book.ask_size > 0.0
        assert math.isclose(book.bid / spec.tick, round(book.bid / spec.tick), abs_tol=1e-6)
        if not snapshot.windows:
            assert (book.ask - book.bid) / book.ask < 30e-4
    prices = [s.price for s in market.symbols]
    assert min(prices) <= 0.0125 and max(prices) >= 60000.0
    assert len(market.symbols) >= 50
    assert snapshot.book("binance", "BTC/BUSD") is None  # listed, not trading
    assert snapshot.book("bybit", "BTC/FDUSD") is None  # not listed on Bybit
    assert snapshot.book("bybit", "MNT/USDT") is not None
    assert snapshot.book("binance", "MNT/USDT") is None
    assert market.quote_volume_24h("binance", "BTC/USDT") > market.quote_volume_24h(
        "binance", "CKB/USDT"
    )
    assert market.quote_volume_24h("binance", "BTC/BUSD") == 0.0


def test_arbitrage_windows_open_cross_the_books_and_close() -> None:
    market = Market(seed=2, params=MarketParams(arb_probability=0.05))
    opened = closed = 0
    previous: dict[str, Any] = {}
    for _ in range(600):
        market.step(0.05)
        snapshot = market.snapshot
        current = {w.symbol: w for w in snapshot.windows}
        for symbol, window in current.items():
            if symbol not in previous:
                opened += 1
                rich = snapshot.book(window.rich_venue, symbol)
                cheap = snapshot.book(window.cheap_venue, symbol)
                assert rich is not None and cheap is not None
                cross_bps = (rich.bid / cheap.ask - 1.0) * 1e4
                assert cross_bps >= window.gross_bps >= 15.0
        for symbol, window in previous.items():
            if symbol not in current:
                closed += 1
                assert snapshot.now_ms >= window.closes_ms
                rich = snapshot.book(window.rich_venue, symbol)
                cheap = snapshot.book(window.cheap_venue, symbol)
                assert rich is not None and cheap is not None
                assert (rich.bid / cheap.ask - 1.0) * 1e4 < 10.0
        previous = current
    assert opened == market.windows_opened >= 5
    assert closed >= 3


async def test_run_market_steps_by_the_time_that_passed(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    market = Market(seed=1)
    start_ms = market.snapshot.now_ms
    await nursery.start(partial(run_market, market, interval_s=0.1))
    await trio.sleep(10.05)
    assert market.snapshot.version == 100
    assert market.snapshot.now_ms - start_ms == 10_000


# -- REST ------------------------------------------------------------------------------


async def test_binance_rest_shapes(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "binance")
        async with httpx.AsyncClient(base_url=endpoints.rest_url) as client:
            info = (await client.get("/api/v3/exchangeInfo")).json()
            tickers = (await client.get("/api/v3/ticker/24hr")).json()
            one = (await client.get("/api/v3/ticker/24hr", params={"symbol": "ETHUSDT"})).json()
            bad = await client.get("/api/v3/ticker/24hr", params={"symbol": "NOPEUSDT"})
    assert {"timezone", "serverTime", "rateLimits", "exchangeFilters", "symbols"} <= info.keys()
    by_symbol = {s["symbol"]: s for s in info["symbols"]}
    btc = by_symbol["BTCUSDT"]
    assert (btc["status"], btc["baseAsset"], btc["quoteAsset"]) == ("TRADING", "BTC", "USDT")
    assert {"filters", "permissionSets", "orderTypes", "isSpotTradingAllowed"} <= btc.keys()
    assert by_symbol["BTCBUSD"]["status"] == "BREAK"
    assert by_symbol["ETHBTC"]["quoteAsset"] == "BTC"
    assert "MNTUSDT" not in by_symbol
    assert {t["symbol"] for t in tickers} == set(by_symbol)
    for ticker in tickers:
        assert is_decimal_string(ticker["quoteVolume"], 8)
        assert is_decimal_string(ticker["bidPrice"], 8)
        assert isinstance(ticker["count"], int)
    assert one["symbol"] == "ETHUSDT" and float(one["quoteVolume"]) > 0
    assert bad.status_code == 400 and bad.json() == {"code": -1121, "msg": "Invalid symbol."}
    assert control.statistics().rest_requests == 4


async def test_bybit_rest_shapes(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, _ = await start_venue(nursery, "bybit")
        async with httpx.AsyncClient(base_url=endpoints.rest_url) as client:
            spot = {"category": "spot"}
            info = (await client.get("/v5/market/instruments-info", params=spot)).json()
            tickers = (await client.get("/v5/market/tickers", params=spot)).json()
            no_category = (await client.get("/v5/market/tickers")).json()
    for body in (info, tickers):
        assert body.keys() == {"retCode", "retMsg", "result", "retExtInfo", "time"}
        assert (body["retCode"], body["retMsg"], body["result"]["category"]) == (0, "OK", "spot")
    instruments = {i["symbol"]: i for i in info["result"]["list"]}
    btc = instruments["BTCUSDT"]
    assert (btc["baseCoin"], btc["quoteCoin"], btc["status"]) == ("BTC", "USDT", "Trading")
    assert {"lotSizeFilter", "priceFilter"} <= btc.keys()
    assert "MNTUSDT" in instruments and "BTCFDUSD" not in instruments
    assert {t["symbol"] for t in tickers["result"]["list"]} == set(instruments)
    for ticker in tickers["result"]["list"]:
        for key in ("turnover24h", "volume24h", "bid1Price", "ask1Price", "lastPrice"):
            assert is_decimal_string(ticker[key]), (key, ticker)
    assert no_category["retCode"] != 0


# -- Binance WebSocket -----------------------------------------------------------------


async def test_binance_subscribe_ack_and_documented_frames(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "binance")
        async with connect(endpoints.ws_url + "/ws") as ws:
            await ws.send_message(orjson.dumps({
                "method": "SUBSCRIBE",
                "params": ["btcusdt@bookTicker", "btcusdt@trade", "ethusdt@bookTicker"],
                "id": 1,
            }).decode())
            assert await receive_json(ws) == {"result": None, "id": 1}
            book = await next_matching(ws, lambda m: "u" in m)
            trade = await next_matching(ws, lambda m: m.get("e") == "trade")
            await ws.send_message('{"method":"LIST_SUBSCRIPTIONS","id":2}')
            listed = await next_matching(ws, lambda m: m.get("id") == 2)
            await ws.send_message(
                '{"method":"UNSUBSCRIBE","params":["ethusdt@bookTicker","btcusdt@trade"],"id":3}'
            )
            unsubscribed = await next_matching(ws, lambda m: m.get("id") == 3)
            subscriptions = control.subscriptions()
    assert book.keys() == BINANCE_BOOK_KEYS
    assert book["s"] in ("BTCUSDT", "ETHUSDT") and isinstance(book["u"], int)
    assert all(is_decimal_string(book[k], 8) for k in "bBaA")
    assert float(book["b"]) < float(book["a"])
    assert trade.keys() == BINANCE_TRADE_KEYS
    assert trade["s"] == "BTCUSDT" and isinstance(trade["m"], bool) and trade["M"] is True
    assert listed["result"] == ["btcusdt@bookTicker", "btcusdt@trade", "ethusdt@bookTicker"]
    assert unsubscribed == {"result": None, "id": 3}
    assert subscriptions == {1: frozenset({"btcusdt@bookTicker"})}
    stats = control.statistics()
    assert (stats.connections_accepted, stats.topics_subscribed) == (1, 3)
    assert stats.topics_unsubscribed == 2


async def test_binance_rejects_bad_json_unknown_streams_and_methods(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "binance")
        async with connect(endpoints.ws_url + "/ws") as ws:
            await ws.send_message("{not json")
            bad_json = await receive_json(ws)
            await ws.send_message('{"method":"SUBSCRIBE","params":["nopeusdt@bookTicker"],"id":7}')
            unknown_stream = await receive_json(ws)
            await ws.send_message('{"method":"SUBSCRIBE","params":["BTCUSDT@bookTicker"],"id":8}')
            upper_case = await receive_json(ws)
            await ws.send_message('{"method":"SUBSCRIB","params":[],"id":9}')
            unknown_method = await receive_json(ws)
    assert bad_json["id"] is None and bad_json["error"]["code"] == 3
    assert bad_json["error"]["msg"].startswith("Invalid JSON")
    assert unknown_stream == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 7}
    assert upper_case["error"]["code"] == 2 and upper_case["id"] == 8
    assert unknown_method["error"]["code"] == 2 and "unknown variant" in unknown_method["error"]["msg"]
    stats = control.statistics()
    assert (stats.topics_subscribed, stats.rejected_topics) == (0, 0)


async def test_binance_closes_a_connection_over_five_messages_per_second(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "binance")
        async with connect(endpoints.ws_url + "/ws") as ws:
            for i in range(5):
                await ws.send_message(f'{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}')
            for i in range(5):
                assert await receive_json(ws) == {"result": [], "id": i}
        async with connect(endpoints.ws_url + "/ws") as ws:
            for i in range(6):
                await ws.send_message(f'{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}')
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
        assert closed.value.reason.code == 1008
        assert control.statistics().closed_rate_limit == 1


async def test_binance_pings_and_a_ponging_client_stays_connected(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(
            nursery, "binance", ping_interval_s=0.05, pong_timeout_s=0.2
        )
        async with connect(endpoints.ws_url + "/ws") as ws:
            stats = await control.wait_for(lambda s: s.pongs_received >= 3)
            await ws.send_message('{"method":"LIST_SUBSCRIPTIONS","id":1}')
            assert await receive_json(ws) == {"result": [], "id": 1}
    assert stats.pings_sent >= 3 and stats.closed_no_pong == 0


async def test_binance_closes_a_client_that_does_not_pong(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(
            nursery, "binance", ping_interval_s=0.05, pong_timeout_s=0.2
        )
        client, accepted = await RawClient.handshake(endpoints.ws_url, "/ws")
        async with client.stream:
            assert isinstance(accepted, wsproto.events.AcceptConnection)
            start = trio.current_time()
            event = await client.next_event()
            elapsed = trio.current_time() - start
    assert isinstance(event, wsproto.events.CloseConnection)
    assert event.code == 1008 and "pong" in event.reason
    assert client.pings and client.pings[0] == b"1"
    assert 0.25 <= elapsed < 2.0  # first ping at 0.05 s, closed 0.2 s later
    assert control.statistics().closed_no_pong == 1


# -- Bybit WebSocket -------------------------------------------------------------------


async def test_bybit_subscribe_ack_snapshot_and_documented_frames(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "bybit")
        assert endpoints.ws_url.endswith("/v5/public/spot")
        async with connect(endpoints.ws_url) as ws:
            await ws.send_message(orjson.dumps({
                "req_id": "x", "op": "subscribe",
                "args": ["orderbook.1.BTCUSDT", "publicTrade.BTCUSDT"],
            }).decode())
            ack = await receive_json(ws)
            first = await receive_json(ws)
            update = await next_matching(ws, lambda m: m.get("topic") == "orderbook.1.BTCUSDT")
            trade = await next_matching(ws, lambda m: m.get("topic") == "publicTrade.BTCUSDT")
    assert ack == {
        "success": True, "ret_msg": "subscribe", "conn_id": "sim-bybit-1",
        "req_id": "x", "op": "subscribe",
    }
    for book in (first, update):
        assert book.keys() == BYBIT_BOOK_KEYS and book["data"].keys() == BYBIT_BOOK_DATA_KEYS
        assert (book["topic"], book["type"], book["data"]["s"]) == (
            "orderbook.1.BTCUSDT", "snapshot", "BTCUSDT",
        )
        [[bid, bid_size]], [[ask, ask_size]] = book["data"]["b"], book["data"]["a"]
        assert all(is_decimal_string(v) for v in (bid, bid_size, ask, ask_size))
        assert float(bid) < float(ask)
        assert isinstance(book["ts"], int) and isinstance(book["cts"], int)
    assert update["data"]["u"] >= first["data"]["u"]
    assert trade["type"] == "snapshot" and trade["data"]
    assert {"T", "s", "S", "v", "p", "i", "BT"} <= trade["data"][0].keys()
    assert control.statistics().topics_subscribed == 2


async def test_bybit_refuses_more_than_ten_args_and_duplicates(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "bybit", market=Market(seed=1, params=QUIET))
        market_symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT"]
        eleven = [f"publicTrade.{s}" for s in market_symbols] + [
            f"orderbook.1.{s}" for s in market_symbols[:5]
        ]
        async with connect(endpoints.ws_url) as ws:
            await ws.send_message(orjson.dumps({"op": "subscribe", "args": eleven}).decode())
            too_many = await receive_json(ws)
            assert control.subscriptions() == {1: frozenset()}
            await ws.send_message('{"req_id":"a","op":"subscribe","args":["publicTrade.BTCUSDT"]}')
            first = await receive_json(ws)
            await ws.send_message(
                '{"req_id":"b","op":"subscribe","args":["publicTrade.BTCUSDT","publicTrade.NOPE"]}'
            )
            again = await receive_json(ws)
            subscriptions = control.subscriptions()
    assert too_many.keys() == BYBIT_ACK_KEYS
    assert (too_many["success"], too_many["ret_msg"], too_many["op"]) == (
        False, "args size >10", "subscribe",
    )
    assert first["success"] is True and first["req_id"] == "a"
    assert again["success"] is False and "already subscribed" in again["ret_msg"]
    assert subscriptions == {1: frozenset({"publicTrade.BTCUSDT"})}
    stats = control.statistics()
    assert (stats.topics_subscribed, stats.duplicate_subscriptions, stats.rejected_topics) == (
        1, 1, 12,
    )
    actions = [(e.connection, e.topic, e.action) for e in control.subscription_log()]
    assert actions[-3:] == [
        (1, "publicTrade.BTCUSDT", "subscribe"),
        (1, "publicTrade.BTCUSDT", "duplicate"),
        (1, "publicTrade.NOPE", "reject"),
    ]


async def test_bybit_answers_ping_with_the_spot_pong(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "bybit")
        async with connect(endpoints.ws_url) as ws:
            await ws.send_message('{"req_id":"100001","op":"ping"}')
            pong = await receive_json(ws)
    assert pong == {
        "success": True, "ret_msg": "pong", "conn_id": "sim-bybit-1",
        "req_id": "100001", "op": "ping",
    }
    assert control.statistics().app_pings == 1


async def test_bybit_resends_an_unchanged_book_with_the_same_update_id(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, _ = await start_venue(
            nursery, "bybit", market=Market(seed=1, params=QUIET), resend_unchanged_s=0.1
        )
        async with connect(endpoints.ws_url) as ws:
            await ws.send_message('{"op":"subscribe","args":["orderbook.1.ETHUSDT"]}')
            await receive_json(ws)  # ack
            frames = [await receive_json(ws) for _ in range(3)]
    assert len({f["data"]["u"] for f in frames}) == 1
    assert len({f["cts"] for f in frames}) == 1
    assert frames[0]["ts"] <= frames[1]["ts"] <= frames[2]["ts"]


async def test_bybit_closes_a_connection_without_pings(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "bybit", client_ping_timeout_s=0.2)
        async with connect(endpoints.ws_url) as pinging:
            async with connect(endpoints.ws_url) as silent:
                for _ in range(6):
                    await pinging.send_message('{"op":"ping"}')
                    await trio.sleep(0.05)
                with pytest.raises(ConnectionClosed) as closed:
                    await silent.get_message()
                await pinging.send_message('{"op":"ping","req_id":"still"}')
                pong = await next_matching(pinging, lambda m: m.get("req_id") == "still")
    assert closed.value.reason.code == 1008
    assert pong["ret_msg"] == "pong"
    assert control.statistics().closed_no_ping == 1


# -- control and robustness ------------------------------------------------------------


async def test_drop_connections_closes_every_socket_and_counts_resubscription(
    nursery: trio.Nursery,
) -> None:
    subscribe = '{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":1}'
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "binance")
        async with connect(endpoints.ws_url + "/ws") as a, \
                connect(endpoints.ws_url + "/ws") as b:
            for ws in (a, b):
                await ws.send_message(subscribe)
                assert await receive_json(ws) == {"result": None, "id": 1}
            assert control.drop_connections() == 2
            for ws in (a, b):
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                assert closed.value.reason.code == 1001
        await control.wait_for(lambda s: s.connections_open == 0)
        async with connect(endpoints.ws_url + "/ws") as c:
            await c.send_message(subscribe)
            assert await receive_json(c) == {"result": None, "id": 1}
            subscriptions = control.subscriptions()
    stats = control.statistics()
    assert (stats.connections_accepted, stats.dropped_by_control) == (3, 2)
    assert subscriptions == {3: frozenset({"btcusdt@bookTicker"})}
    assert [e.connection for e in control.subscription_log()] == [1, 2, 3]
    assert stats.duplicate_subscriptions == 0


async def test_silent_venue_keeps_the_socket_but_sends_nothing_until_resumed(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "bybit")
        async with connect(endpoints.ws_url) as ws:
            await ws.send_message('{"op":"subscribe","args":["orderbook.1.BTCUSDT"]}')
            await next_matching(ws, lambda m: m.get("topic") == "orderbook.1.BTCUSDT")
            control.go_silent()
            with trio.move_on_after(0.05):  # frames already on their way
                while True:
                    await ws.get_message()
            await ws.send_message('{"op":"ping","req_id":"unanswered"}')
            with trio.move_on_after(0.3) as quiet:
                await ws.get_message()
            assert quiet.cancelled_caught
            control.resume()
            await ws.send_message('{"op":"ping","req_id":"answered"}')
            pong = await next_matching(ws, lambda m: m.get("op") == "ping")
            book = await next_matching(ws, lambda m: m.get("topic") == "orderbook.1.BTCUSDT")
    assert pong["req_id"] == "answered"
    assert book["data"]["s"] == "BTCUSDT"


async def test_a_burst_beyond_the_outbox_closes_the_client(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(
            nursery, "bybit", market=Market(seed=1, params=QUIET), outbox_size=2
        )
        args = [f"orderbook.1.{s}" for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")]
        async with connect(endpoints.ws_url) as ws:
            await ws.send_message(orjson.dumps({"op": "subscribe", "args": args}).decode())
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
    assert closed.value.reason.code == 1008
    assert control.statistics().closed_slow_client == 1


async def test_a_client_that_stops_reading_is_closed_at_the_send_deadline(
    nursery: trio.Nursery,
) -> None:
    busy = Market(seed=1, params=MarketParams(max_update_rate=200.0))
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(
            nursery, "bybit", market=busy, send_timeout_s=0.2, close_timeout_s=0.2,
            outbox_size=1_000_000,  # so that only the send deadline can end it
        )
        parts = urlsplit(endpoints.ws_url)
        sock = trio.socket.socket()
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
        await sock.connect((parts.hostname, parts.port))
        client = RawClient(trio.SocketStream(sock))
        async with client.stream:
            request = wsproto.events.Request(host=parts.netloc, target=parts.path)
            await client.stream.send_all(client.conn.send(request))
            assert isinstance(await client.next_event(), wsproto.events.AcceptConnection)
            symbols = [s.native for s in busy.symbols if s.trading_on("bybit")][:20]
            for chunk in (symbols[:10], symbols[10:]):
                args = [f"orderbook.1.{s}" for s in chunk]
                text = orjson.dumps({"op": "subscribe", "args": args}).decode()
                await client.stream.send_all(client.conn.send(wsproto.events.TextMessage(text)))
            stats = await control.wait_for(lambda s: s.closed_slow_client == 1)
    assert stats.frames_sent > 0


async def test_wrong_path_is_rejected(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "binance")
        client, answer = await RawClient.handshake(endpoints.ws_url, "/stream")
        await client.stream.aclose()
    assert isinstance(answer, wsproto.events.RejectConnection)
    assert answer.status_code == 404
    assert control.statistics().handshakes_rejected == 1


async def test_run_sim_venues_serves_both_and_cleans_up_on_cancel() -> None:
    controls = {"binance": SimVenueControl(), "bybit": SimVenueControl()}
    venues_scope = trio.CancelScope()

    async def venues(task_status: trio.TaskStatus[dict[str, SimEndpoints]]) -> None:
        with venues_scope:
            await run_sim_venues(
                ("binance", "bybit"), seed=4, interval_s=0.01, controls=controls,
                task_status=task_status,
            )

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(venues)
            assert endpoints.keys() == {"binance", "bybit"}
            async with httpx.AsyncClient() as client:
                for name, path in (("binance", "/api/v3/exchangeInfo"),
                                   ("bybit", "/v5/market/instruments-info?category=spot")):
                    assert (await client.get(endpoints[name].rest_url + path)).status_code == 200
            async with connect(endpoints["binance"].ws_url + "/ws") as ws:
                await ws.send_message('{"method":"SUBSCRIBE","params":["solusdt@bookTicker"],"id":1}')
                assert await receive_json(ws) == {"result": None, "id": 1}
                venues_scope.cancel()
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
    assert closed.value.reason.code == 1001
    assert controls["binance"].statistics().connections_open == 0


# -- a tiny venue of the test's own: binary frames, server pings, a token, a cap --------


def gunzip_json(frame: Frame) -> Any:
    assert isinstance(frame, bytes), frame
    return orjson.loads(gzip.decompress(frame))


class FakeWire(WireDefaults):
    """HTX-like gzip binary data and server pings, a KuCoin-like token and welcome, a
    MEXC-like topic cap; text ``ping`` -> ``pong``; ``bye`` closes with 4000."""

    name = "fake"
    ws_path = "/ws"
    ws_url_suffix = ""
    config = SimVenueConfig(app_ping_interval_s=0.05, max_missed_pongs=2, max_topics=2)

    def __init__(self, market: Market) -> None:
        self._market = market

    def rest(self, method: str, path: str, query: Mapping[str, str], market: Market,
             endpoints: SimEndpoints) -> RestReply:
        if path == "/bullet" and method == "POST":
            return json_reply({"endpoint": endpoints.ws_url + "/ws", "token": "good"})
        return NOT_FOUND

    def on_open(self, conn: ConnectionView, snapshot: MarketSnapshot) -> Opening:
        if conn.query.get("token") != "good":
            return Opening(reject=RestReply(401, b'{"code":"401","msg":"token invalid"}'))
        return Opening(frames=(dumps({"id": conn.query.get("connectId", ""), "type": "welcome"}),))

    def on_message(self, conn: ConnectionView, message: Frame, snapshot: MarketSnapshot) -> Reply:
        if message == "ping":
            return Reply(frames=("pong",), app_ping=True)
        if message == "bye":
            return Reply(frames=("ciao",), close=Closing(4000, "bye"))
        request = orjson.loads(gzip.decompress(message) if isinstance(message, bytes) else message)
        if "pong" in request:
            return Reply(app_pong=True)
        new = tuple(t for t in request["sub"] if t not in conn.topics)
        conn.topics.update(new)
        return Reply(frames=(dumps({"subbed": request["sub"]}),), subscribed=new)

    def refuse(self, conn: ConnectionView, message: Frame, why: Refusal,
               snapshot: MarketSnapshot) -> Reply:
        return Reply(frames=(dumps({"error": why.value}),))

    def book_topic(self, symbol: str) -> str:
        return f"bbo.{symbol}"

    def trade_topic(self, symbol: str) -> str:
        return f"trade.{symbol}"

    def encode_book(self, book: TopOfBook, snapshot: MarketSnapshot) -> Frame:
        return gzip.compress(orjson.dumps({"ch": f"bbo.{book.symbol}", "bid": book.bid, "ask": book.ask}))

    def encode_trades(self, trades: Sequence[SimTrade]) -> list[Frame]:
        return [gzip.compress(orjson.dumps({"ch": f"trade.{t.symbol}", "p": t.price})) for t in trades]

    def app_ping(self, conn: ConnectionView, now_ms: int) -> Frame | None:
        return gzip.compress(orjson.dumps({"ping": now_ms}))

    def malformed(self, conn: ConnectionView, n: int, snapshot: MarketSnapshot) -> Frame:
        return gzip.compress(b'{"ch":"bbo.BTC/USDT","bid":1}')[: 12 + n]


async def start_fake(
    nursery: trio.Nursery, *, params: MarketParams | None = None, **overrides: Any
) -> tuple[SimEndpoints, SimVenueControl]:
    market = Market(venues=("fake",), seed=1, params=params)
    return await start_venue(nursery, "fake", market=market, wire=FakeWire(market), **overrides)


async def answer_pings(ws: WebSocketConnection, seen: list[Any]) -> None:
    """Read forever, answering every gzip ``{"ping": ts}`` with ``{"pong": ts}``."""
    while True:
        message = await ws.get_message()
        if isinstance(message, bytes) and "ping" in (body := gunzip_json(message)):
            seen.append(body)
            await ws.send_message(dumps({"pong": body["ping"]}))


def test_fake_wire_satisfies_the_protocol() -> None:
    assert isinstance(FakeWire(Market(venues=("fake",))), VenueWire)


async def test_binary_frames_go_out_as_binary_messages_and_text_as_text(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_fake(nursery, app_ping_interval_s=None)
        async with connect(endpoints.ws_url + "/ws?token=good&connectId=c1") as ws:
            welcome = await ws.get_message()
            # a binary client message reaches on_message as bytes
            await ws.send_message(gzip.compress(b'{"sub":["bbo.BTC/USDT","trade.BTC/USDT"]}'))
            ack = await ws.get_message()
            book = trade = None
            while book is None or trade is None:
                message = await ws.get_message()
                body = gunzip_json(message)
                if body["ch"] == "bbo.BTC/USDT":
                    book = body
                elif body["ch"] == "trade.BTC/USDT":
                    trade = body
    assert isinstance(welcome, str) and orjson.loads(welcome) == {"id": "c1", "type": "welcome"}
    assert isinstance(ack, str) and orjson.loads(ack) == {"subbed": ["bbo.BTC/USDT", "trade.BTC/USDT"]}
    assert 0 < book["bid"] < book["ask"] and trade["p"] > 0
    assert control.statistics().topics_subscribed == 2


async def test_server_app_pings_close_a_client_after_missed_pongs(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_fake(nursery, params=QUIET)
        url = endpoints.ws_url + "/ws?token=good"
        seen: list[Any] = []
        async with connect(url) as ponger, connect(url) as mute, trio.open_nursery() as inner:
            inner.start_soon(answer_pings, ponger, seen)
            start = trio.current_time()
            pings = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    message = await mute.get_message()
                    if isinstance(message, bytes):
                        pings.append(gunzip_json(message))
            elapsed = trio.current_time() - start
            stats = await control.wait_for(lambda s: s.app_pongs_received >= 3)
            assert ponger.closed is None
            inner.cancel_scope.cancel()
    assert closed.value.reason.code == 1008 and "pong" in (closed.value.reason.reason or "")
    assert len(pings) == 2 and all(isinstance(p["ping"], int) for p in pings)
    assert 0.1 <= elapsed < 1.0  # pings at 0.05 and 0.1 s, closed when the third is due
    assert seen and stats.closed_no_pong == 1 and stats.app_pings_sent >= 5


async def test_open_hook_rejects_a_handshake_or_sends_a_welcome(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_fake(nursery, params=QUIET, app_ping_interval_s=None)
        client, answer = await RawClient.handshake(endpoints.ws_url, "/ws?connectId=x")
        await client.stream.aclose()
        client, bad = await RawClient.handshake(endpoints.ws_url, "/ws?token=stolen")
        await client.stream.aclose()
        async with httpx.AsyncClient(base_url=endpoints.rest_url) as http:
            bullet = (await http.post("/bullet")).json()
            not_allowed = await http.get("/bullet")
        async with connect(f"{bullet['endpoint']}?token={bullet['token']}&connectId=abc") as ws:
            welcome = await receive_json(ws)
            subscriptions = control.subscriptions()
    assert isinstance(answer, wsproto.events.RejectConnection) and answer.status_code == 401
    assert isinstance(bad, wsproto.events.RejectConnection) and bad.status_code == 401
    assert bullet["endpoint"] == endpoints.ws_url + "/ws"  # REST knows the venue's own WS URL
    assert not_allowed.status_code == 404
    assert welcome == {"id": "abc", "type": "welcome"}
    stats = control.statistics()
    assert (stats.handshakes_rejected, stats.connections_accepted) == (2, 1)
    assert list(subscriptions) == [3]  # rejected handshakes use up numbers 1 and 2


async def test_subscription_cap_is_enforced_with_the_venues_error(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_fake(nursery, params=QUIET, app_ping_interval_s=None)
        async with connect(endpoints.ws_url + "/ws?token=good") as ws:
            await receive_json(ws)  # welcome
            await ws.send_message('{"sub":["bbo.BTC/USDT","bbo.ETH/USDT"]}')
            ok = await receive_json(ws)
            await ws.send_message('{"sub":["bbo.SOL/USDT","bbo.BTC/USDT"]}')
            over = await receive_json(ws)
            subscriptions = control.subscriptions()
    assert ok == {"subbed": ["bbo.BTC/USDT", "bbo.ETH/USDT"]}
    assert over == {"error": "cap"}
    assert subscriptions == {1: frozenset({"bbo.BTC/USDT", "bbo.ETH/USDT"})}
    stats = control.statistics()
    assert (stats.refused_over_cap, stats.rejected_topics, stats.topics_subscribed) == (1, 1, 2)
    assert control.subscription_log()[-1].action == "reject"


async def test_binance_stream_cap_answers_code_4(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "binance", max_topics=3)
        async with connect(endpoints.ws_url + "/ws") as ws:
            await ws.send_message('{"method":"SUBSCRIBE","params":["btcusdt@bookTicker","btcusdt@trade"],"id":1}')
            assert await next_matching(ws, lambda m: m.get("id") == 1) == {"result": None, "id": 1}
            await ws.send_message('{"method":"SUBSCRIBE","params":["ethusdt@bookTicker","ethusdt@trade"],"id":2}')
            over = await next_matching(ws, lambda m: m.get("id") == 2)
            subscriptions = control.subscriptions()
    assert over == {"error": {"code": 4, "msg": "Too many subscriptions"}, "id": 2}
    assert subscriptions == {1: frozenset({"btcusdt@bookTicker", "btcusdt@trade"})}


async def test_a_wire_can_close_after_its_last_frames(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_fake(nursery, params=QUIET, app_ping_interval_s=None)
        async with connect(endpoints.ws_url + "/ws?token=good") as ws:
            await receive_json(ws)
            await ws.send_message("ping")
            pong = await ws.get_message()
            await ws.send_message("bye")
            last = await ws.get_message()
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert (pong, last) == ("pong", "ciao")
    assert closed.value.reason.code == 4000
    stats = control.statistics()
    assert (stats.closed_by_wire, stats.app_pings) == (1, 1)


async def test_a_connection_that_never_subscribes_is_closed(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "binance", subscribe_timeout_s=0.2)
        async with connect(endpoints.ws_url + "/ws") as idle, connect(endpoints.ws_url + "/ws") as busy:
            await busy.send_message('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}')
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await idle.get_message()
            await trio.sleep(0.1)
            await busy.send_message('{"method":"LIST_SUBSCRIPTIONS","id":2}')
            listed = await next_matching(busy, lambda m: m.get("id") == 2)
    assert closed.value.reason.code == 1008 and "subscription" in (closed.value.reason.reason or "")
    assert listed["result"] == ["btcusdt@trade"]
    assert control.statistics().closed_no_subscription == 1


# -- fault injection -------------------------------------------------------------------


async def test_send_malformed_frames_in_the_venues_own_format(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "bybit")
        async with connect(endpoints.ws_url) as ws:
            await ws.send_message('{"op":"subscribe","args":["orderbook.1.BTCUSDT"]}')
            await next_matching(ws, lambda m: m.get("topic") == "orderbook.1.BTCUSDT")
            assert control.send_malformed(3) == 1
            bad: list[str] = []
            while len(bad) < 3:
                message = await ws.get_message()
                try:
                    orjson.loads(message)
                except orjson.JSONDecodeError:
                    assert isinstance(message, str)
                    bad.append(message)
            await ws.send_message('{"op":"ping","req_id":"after"}')
            pong = await next_matching(ws, lambda m: m.get("req_id") == "after")
        fake_endpoints, fake_control = await start_fake(nursery, params=QUIET, app_ping_interval_s=None)
        async with connect(fake_endpoints.ws_url + "/ws?token=good") as ws:
            await receive_json(ws)
            assert fake_control.send_malformed() == 1
            corrupt = await ws.get_message()
    assert all(b.startswith('{"topic":"orderbook.1.') for b in bad) and len(set(bad)) == 3
    assert pong["ret_msg"] == "pong"
    assert control.statistics().malformed_sent == 3
    assert isinstance(corrupt, bytes)
    with pytest.raises((EOFError, OSError)):
        gzip.decompress(corrupt)
    assert SimVenueControl().send_malformed(2) == 0  # no venue, no connection


async def test_send_slowly_delays_every_frame_until_back_to_normal(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "binance")
        async with connect(endpoints.ws_url + "/ws") as ws:
            control.send_slowly(0.3)
            start = trio.current_time()
            await ws.send_message('{"method":"LIST_SUBSCRIPTIONS","id":1}')
            assert await receive_json(ws) == {"result": [], "id": 1}
            slow = trio.current_time() - start
            control.send_slowly(10.0)
            await ws.send_message('{"method":"LIST_SUBSCRIPTIONS","id":2}')
            await trio.sleep(0.1)
            start = trio.current_time()
            control.send_normally()  # held frames go at once
            assert await receive_json(ws) == {"result": [], "id": 2}
            released = trio.current_time() - start
    assert 0.28 <= slow < 1.0
    assert released < 0.2
    assert control.send_delay_s == 0.0
    with pytest.raises(ValueError):
        control.send_slowly(-1.0)


async def test_reject_subscriptions_answers_with_the_venues_error(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        binance, b_control = await start_venue(nursery, "binance")
        bybit, y_control = await start_venue(nursery, "bybit")
        async with connect(binance.ws_url + "/ws") as bws, connect(bybit.ws_url) as yws:
            b_control.reject_subscriptions(True)
            y_control.reject_subscriptions(True)
            await bws.send_message('{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":1}')
            b_refused = await receive_json(bws)
            await yws.send_message('{"req_id":"r","op":"subscribe","args":["orderbook.1.BTCUSDT"]}')
            y_refused = await receive_json(yws)
            refused_subscriptions = (b_control.subscriptions(), y_control.subscriptions())
            b_control.reject_subscriptions(False)
            await bws.send_message('{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":2}')
            accepted = await next_matching(bws, lambda m: m.get("id") == 2)
    assert b_refused == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 1}
    assert y_refused == {
        "success": False, "ret_msg": "Invalid symbol :[orderbook.1.BTCUSDT]",
        "conn_id": "sim-bybit-1", "req_id": "r", "op": "subscribe",
    }
    assert refused_subscriptions == ({1: frozenset()}, {1: frozenset()})
    assert accepted == {"result": None, "id": 2}
    stats = b_control.statistics()
    assert (stats.refused_by_control, stats.rejected_topics, stats.topics_subscribed) == (1, 1, 1)
    assert not b_control.rejecting_subscriptions and y_control.rejecting_subscriptions


async def test_force_cut_and_the_age_limit_close_like_the_venue(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "binance")
        aged, aged_control = await start_venue(nursery, "binance", max_connection_age_s=0.2)
        async with connect(endpoints.ws_url + "/ws") as a, connect(endpoints.ws_url + "/ws") as b:
            await control.wait_for(lambda s: s.connections_open == 2)
            assert control.force_cut() == 2
            for ws in (a, b):
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                assert closed.value.reason.code == 1001
                assert "24 hours" in (closed.value.reason.reason or "")
        async with connect(aged.ws_url + "/ws") as ws:
            start = trio.current_time()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            elapsed = trio.current_time() - start
    assert control.statistics().closed_age_limit == 2
    assert closed.value.reason.code == 1001 and 0.15 <= elapsed < 1.0
    assert aged_control.statistics().closed_age_limit == 1


async def test_announce_shutdown_sends_the_notice_then_closes_after_the_grace(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "binance")
        url = endpoints.ws_url + "/ws"
        async with connect(url) as a, connect(url) as b:
            await control.wait_for(lambda s: s.connections_open == 2)
            start = trio.current_time()
            assert control.announce_shutdown(grace_s=0.3) == 2
            notices = [await receive_json(a), await receive_json(b)]
            async with connect(url) as late:  # opened after the notice: not affected
                for ws in (a, b):
                    with pytest.raises(ConnectionClosed) as closed:
                        while True:
                            await ws.get_message()
                    assert closed.value.reason.code == 1001
                elapsed = trio.current_time() - start
                await late.send_message('{"method":"LIST_SUBSCRIPTIONS","id":1}')
                assert await receive_json(late) == {"result": [], "id": 1}
        bybit, y_control = await start_venue(nursery, "bybit")
        async with connect(bybit.ws_url) as ws:
            await y_control.wait_for(lambda s: s.connections_open == 1)
            assert y_control.announce_shutdown(grace_s=0.05) == 1
            with pytest.raises(ConnectionClosed):
                await ws.get_message()  # no notice frame: straight to the close
    for notice in notices:
        assert notice.keys() == {"e", "E"} and notice["e"] == "serverShutdown"
        assert isinstance(notice["E"], int)
    assert 0.25 <= elapsed < 1.5
    stats = control.statistics()
    assert (stats.notices_sent, stats.closed_maintenance, stats.connections_accepted) == (2, 2, 3)
    y_stats = y_control.statistics()
    assert (y_stats.notices_sent, y_stats.closed_maintenance) == (0, 1)


# -- chaos -----------------------------------------------------------------------------


async def _chaos_events(seed: int, faults: Sequence[Fault] = tuple(Fault)) -> tuple[list[Any], float]:
    controls = {"binance": SimVenueControl(), "bybit": SimVenueControl()}
    events: list[ChaosEvent] = []
    start = trio.current_time()
    await run_chaos(controls, mean_interval_s=1.0, rng=random.Random(seed), faults=faults,
                    duration_s=(0.5, 2.0), max_faults=40, on_fault=events.append)
    for control in controls.values():
        assert not control.silent and control.send_delay_s == 0.0
        assert not control.rejecting
    summary = [(round(e.at - start, 6), e.venue, e.fault, e.duration_s, e.amount) for e in events]
    return summary, trio.current_time() - start


async def test_chaos_is_deterministic_for_a_seed_and_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, took = await _chaos_events(5)
    again, _ = await _chaos_events(5)
    other, _ = await _chaos_events(6)
    assert first == again and first != other
    assert len(first) == 40 and {e[2] for e in first} == set(Fault)
    assert {e[1] for e in first} == {"binance", "bybit"}
    assert took <= 40 * (4.0 + 2.0)  # waits capped at four means, spells at 2 s
    for _, _, fault, duration, amount in first:
        timed = fault in (Fault.SILENCE, Fault.SLOW, Fault.SHUTDOWN, Fault.REJECT)
        assert (0.5 <= duration <= 2.0) if timed else duration == 0.0
        if fault is Fault.MALFORMED:
            assert amount in (1, 2, 3, 4, 5)


async def test_chaos_undoes_a_silence_when_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    control = SimVenueControl()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(
            run_chaos, {"binance": control}, mean_interval_s=0.1, rng=random.Random(1),
            faults=(Fault.SILENCE,), duration_s=(100.0, 100.0),
        ))
        while not control.silent:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert not control.silent
    with pytest.raises(ValueError):
        await run_chaos({"binance": control}, mean_interval_s=0.0, rng=random.Random(1))


async def test_chaos_against_a_live_venue_leaves_it_serving(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "binance", shutdown_grace_s=0.05)
        events: list[ChaosEvent] = []

        async def keep_subscribed() -> None:
            while True:
                async with connect(endpoints.ws_url + "/ws") as ws:
                    try:
                        await ws.send_message('{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":1}')
                        while True:
                            await ws.get_message()
                    except ConnectionClosed:
                        pass
                await trio.sleep(0.01)

        async with trio.open_nursery() as clients:
            clients.start_soon(keep_subscribed)
            await control.wait_for(lambda s: s.topics_subscribed >= 1)
            await run_chaos({"binance": control}, mean_interval_s=0.03, rng=random.Random(3),
                            duration_s=(0.03, 0.1), max_faults=12, on_fault=events.append)
            clients.cancel_scope.cancel()
        async with connect(endpoints.ws_url + "/ws") as ws:
            await ws.send_message('{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":1}')
            assert await receive_json(ws) == {"result": None, "id": 1}
            book = await next_matching(ws, lambda m: "u" in m)
    assert len(events) == 12 and len({e.fault for e in events}) >= 4
    assert book["s"] == "BTCUSDT"
    assert not control.silent and control.send_delay_s == 0.0


async def test_run_sim_venues_validates_chaos_and_venue_names() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ValueError):
                await nursery.start(partial(run_sim_venues, ("binance",), chaos=0.0))
            with pytest.raises(ValueError):
                await nursery.start(partial(run_sim_venues, ("binance", "nope")))
            missing = [n for n in VENUES if n not in available_venues()]
            if missing:
                with pytest.raises(NotImplementedError, match=missing[0]):
                    await nursery.start(partial(run_sim_venues, ("binance", missing[0])))
            endpoints = await nursery.start(partial(run_sim_venues, ("bybit",), chaos=30.0, seed=2))
            assert endpoints.keys() == {"bybit"}
            nursery.cancel_scope.cancel()


# -- the eight venues, the registry, large universes -------------------------------------


def test_registry_knows_eight_venues_and_fails_clearly_for_missing_modules() -> None:
    assert len(VENUES) == len(set(VENUES)) == 8
    assert {"binance", "bybit"} <= set(available_venues()) <= set(VENUES)
    market = Market(venues=VENUES, seed=1)
    for name in VENUES:
        if name in available_venues():
            wire = make_wire(name, market)
            assert isinstance(wire, VenueWire) and wire.name == name
            assert SimVenueConfig.for_venue(name) == wire.config
        else:
            assert importlib.util.find_spec(f"app.sim.{name}") is None
            with pytest.raises(NotImplementedError, match=f"app/sim/{name}.py"):
                make_wire(name, market)
            with pytest.raises(NotImplementedError):
                SimVenueConfig.for_venue(name)
    with pytest.raises(ValueError):
        SimVenueConfig.for_venue("nope")
    with pytest.raises(ValueError):
        make_wire("binance", Market(venues=("bybit",)))
    assert SimVenueConfig.for_venue("binance").max_topics == 1024


@pytest.mark.parametrize("name", VENUES)
def test_wire_module_follows_the_contract(name: str) -> None:
    """Pure checks every wire module must pass; a venue not written yet is skipped."""
    if name not in available_venues():
        pytest.skip(f"app/sim/{name}.py not written yet")
    market = Market(venues=(name,), seed=1)
    market.step(1.0)
    snapshot = market.snapshot
    wire = make_wire(name, market)
    conn = ConnectionView(f"sim-{name}-1")
    endpoints = SimEndpoints("http://127.0.0.1:1", "ws://127.0.0.1:2")
    assert wire.ws_path.startswith("/") and isinstance(wire.config, SimVenueConfig)
    assert wire.rest("GET", "/no/such/path", {}, market, endpoints).status == 404
    books = [b for (venue, _), b in snapshot.books.items() if venue == name]
    frame = wire.encode_book(books[0], snapshot)
    assert isinstance(frame, str | bytes) and isinstance(wire.book_topic(books[0].symbol), str)
    trade = SimTrade(name, books[0].symbol, 1, books[0].ask, 1.0, True, snapshot.now_ms, 1)
    assert all(isinstance(f, str | bytes) for f in wire.encode_trades([trade]))
    malformed = [wire.malformed(conn, n, snapshot) for n in range(3)]
    assert all(isinstance(m, str | bytes) and m != frame for m in malformed)
    for why in Disconnect:
        closing = wire.closing(conn, why, snapshot.now_ms)
        assert 1000 <= closing.code < 5000 and closing.code not in (1004, 1005, 1006, 1015)
    notice = wire.notice(conn, snapshot.now_ms)
    assert notice is None or isinstance(notice, str | bytes)
    if wire.config.app_ping_interval_s is not None:
        assert isinstance(wire.app_ping(conn, snapshot.now_ms), str | bytes)


def test_market_quotes_all_eight_venues() -> None:
    market = Market(venues=VENUES, seed=4)
    run_steps(market, 40)
    snapshot = market.snapshot
    for venue in VENUES:
        assert sum(1 for (v, _) in snapshot.books if v == venue) >= 55
        assert market.quote_volume_24h(venue, "BTC/USDT") > 0
    assert snapshot.book("okx", "OKB/USDT") is not None
    assert snapshot.book("binance", "OKB/USDT") is None
    assert market.quote_volume_24h("binance", "BTC/USDT") > market.quote_volume_24h("htx", "BTC/USDT")


def test_synthetic_universes_are_exact_deterministic_and_quotable() -> None:
    big = synthetic_symbols(2000, ("binance",), seed=1)
    assert len(big) == 2000 and len({s.symbol for s in big}) == 2000
    assert big == synthetic_symbols(2000, ("binance",), seed=1)
    assert big != synthetic_symbols(2000, ("binance",), seed=2)
    assert big[0].symbol == "BTC/USDT"  # the default symbols come first
    assert all(s.price_decimals <= 8 and s.listed_on("binance") for s in big)
    assert sum(s.quote_volume_24h < 1e6 for s in big) > 1000  # a long quiet tail
    assert len(synthetic_symbols(10, ("okx",))) == 10
    eight = Market.synthetic(300, VENUES, seed=3)
    assert len(eight.symbols) == 300
    assert all(any(s.listed_on(v) for v in VENUES) for s in eight.symbols)
    assert any(s.venues is not None for s in eight.symbols)


def test_stepping_two_thousand_symbols_is_cheap_and_reports_changes() -> None:
    market = Market.synthetic(2000, ("binance",), seed=1)
    previous = market.snapshot
    started = time.perf_counter()
    changed = 0
    for _ in range(200):  # 10 simulated seconds
        market.step(0.05)
        snapshot = market.snapshot
        assert snapshot.changed == {
            key for key, book in snapshot.books.items() if previous.books[key] is not book
        }
        changed += len(snapshot.changed)
        previous = snapshot
    per_step_ms = (time.perf_counter() - started) * 1000.0 / 200
    assert per_step_ms < 15.0, per_step_ms  # ~2 ms here, checks included
    assert 0 < changed / 200 < 0.1 * 2000  # most symbols are quiet in any one step


async def test_one_venue_serves_two_thousand_symbols(nursery: trio.Nursery) -> None:
    market = Market.synthetic(2000, ("binance",), seed=2)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "binance", market=market)
        async with httpx.AsyncClient(base_url=endpoints.rest_url) as client:
            info = (await client.get("/api/v3/exchangeInfo")).json()
        natives = [s["symbol"].lower() for s in info["symbols"] if s["status"] == "TRADING"]
        async with connect(endpoints.ws_url + "/ws") as ws:
            for i in range(3):
                params = [f"{n}@bookTicker" for n in natives[i * 100:(i + 1) * 100]]
                await ws.send_message(orjson.dumps({"method": "SUBSCRIBE", "params": params, "id": i}).decode())
            seen: set[str] = set()
            while len(seen) < 20:
                message = await receive_json(ws)
                if "u" in message:
                    seen.add(message["s"])
    assert len(info["symbols"]) == 2000
    assert control.statistics().topics_subscribed == 300
