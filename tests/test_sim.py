"""The simulated venues: market model, REST shapes, WebSocket protocols, fault injection.

I/O tests run on loopback in real time with short configured intervals, each under an
absolute ``trio.fail_after``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
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
    Market,
    MarketParams,
    SimEndpoints,
    SimVenueConfig,
    SimVenueControl,
    run_market,
    run_sim_venue,
    run_sim_venues,
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
    **overrides: Any,
) -> tuple[SimEndpoints, SimVenueControl]:
    market = market if market is not None else Market(seed=3)
    await nursery.start(partial(run_market, market, interval_s=0.01))
    control = SimVenueControl()
    config = replace(SimVenueConfig.for_venue(name), publish_interval_s=0.005, **overrides)
    endpoints = await nursery.start(
        partial(run_sim_venue, name, market, control=control, config=config)
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
        ws = await wrap_client_stream(
            nursery, stream, f"{parts.hostname}:{parts.port}", parts.path or "/"
        )
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
