"""Binance spot's wire format, simulated: REST discovery and the market-data WebSocket.

Pure (see ``wire.py``). What it follows, from Binance's public spot API documentation:

* ``GET /api/v3/exchangeInfo`` and ``GET /api/v3/ticker/24hr`` (optionally with
  ``symbol=`` or ``symbols=["A","B"]``); unknown symbols answer HTTP 400
  ``{"code":-1121,"msg":"Invalid symbol."}``. Non-trading symbols have status ``BREAK``.
* WebSocket ``/ws``: ``{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":1}``
  answered ``{"result":null,"id":1}``; ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS`` and
  ``GET_PROPERTY combined`` likewise. Errors use the documented
  ``{"error":{"code":N,"msg":"..."},"id":..}`` frames: code 3 for invalid JSON (id
  null), code 2 for invalid requests, including an unknown stream name.
* Streams: ``<symbol>@bookTicker`` (``{"u","s","b","B","a","A"}``, prices and sizes as
  8-decimal strings, no event time) and ``<symbol>@trade``; symbols in lower case.
* Connection rules (``config``): a protocol ping every 20 s, closed without a pong
  within a minute; at most 5 incoming messages a second; 1024 streams per connection;
  valid for 24 hours. A ``serverShutdown`` event precedes maintenance disconnects.

Choices where the documentation is silent: a request naming any invalid stream is
refused as a whole; subscribing to a stream already subscribed is accepted (and
counted as a duplicate); a subscribe that would take the connection over 1024 streams
is refused with code 4 "Too many subscriptions" (the text seen from the real service);
a subscribe refused by the simulator control gets the documented code 2 "Invalid
request: invalid stream". The ``serverShutdown`` event is sent flat, like the other
raw-stream events: ``{"e":"serverShutdown","E":<ms>}``, about ten minutes before the
close (third-party reports). The 24 h cut and the maintenance close are 1001 frames.
A malformed frame is a bookTicker payload cut short.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson

from app.sim.market import Market, MarketSnapshot, SimTrade, SymbolSpec, TopOfBook
from app.sim.wire import (
    CLOSE_GOING_AWAY,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    Closing,
    ConnectionView,
    Disconnect,
    Frame,
    Opening,
    Refusal,
    Reply,
    RestReply,
    SimEndpoints,
    SimVenueConfig,
    dumps,
    fixed,
    json_reply,
    truncated,
)

_DECIMALS = 8
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_INVALID_SYMBOL = RestReply(400, b'{"code":-1121,"msg":"Invalid symbol."}')
#: (rateLimitType, interval, intervalNum, limit) as exchangeInfo lists them
_RATE_LIMITS = (
    ("REQUEST_WEIGHT", "MINUTE", 1, 6000),
    ("ORDERS", "SECOND", 10, 100),
    ("ORDERS", "DAY", 1, 200000),
    ("RAW_REQUESTS", "MINUTE", 5, 61000),
)


def _error(code: int, msg: str, request_id: object) -> Reply:
    return Reply(frames=(dumps({"error": {"code": code, "msg": msg}, "id": request_id}),))


class BinanceWire:
    """Binance spot as seen on the wire, for the symbols of one :class:`Market`."""

    name = "binance"
    ws_path = "/ws"
    ws_url_suffix = ""
    config = SimVenueConfig(
        ping_interval_s=20.0,
        pong_timeout_s=60.0,
        max_incoming_per_s=5,
        max_topics=1024,
        max_connection_age_s=24 * 3600.0,
        shutdown_grace_s=600.0,
    )

    def __init__(self, market: Market, *, venue: str = "binance") -> None:
        self._market = market
        self._venue = venue
        self._listed = market.listed(venue)
        self._by_native = {s.native: s for s in self._listed}
        self._native = {s.symbol: s.native for s in self._listed}
        self._streams = frozenset(
            f"{s.native.lower()}@{kind}" for s in self._listed for kind in ("bookTicker", "trade")
        )

    # -- REST ------------------------------------------------------------------------

    def rest(
        self, method: str, path: str, query: Mapping[str, str], market: Market,
        endpoints: SimEndpoints,
    ) -> RestReply:
        if path not in ("/api/v3/exchangeInfo", "/api/v3/ticker/24hr", "/api/v3/ping",
                        "/api/v3/time"):
            return NOT_FOUND
        if method != "GET":
            return METHOD_NOT_ALLOWED
        if path == "/api/v3/exchangeInfo":
            specs = self._select(query)
            if specs is None:
                return _INVALID_SYMBOL
            return json_reply({
                "timezone": "UTC",
                "serverTime": market.snapshot.now_ms,
                "rateLimits": [
                    {"rateLimitType": kind, "interval": interval, "intervalNum": n, "limit": limit}
                    for kind, interval, n, limit in _RATE_LIMITS
                ],
                "exchangeFilters": [],
                "symbols": [self._symbol_info(s) for s in specs],
            })
        if path == "/api/v3/ticker/24hr":
            specs = self._select(query)
            if specs is None:
                return _INVALID_SYMBOL
            tickers = [self._ticker(s, market) for s in specs]
            return json_reply(tickers[0] if "symbol" in query else tickers)
        if path == "/api/v3/ping":
            return json_reply({})
        return json_reply({"serverTime": market.snapshot.now_ms})

    def _select(self, query: Mapping[str, str]) -> Sequence[SymbolSpec] | None:
        if "symbol" in query:
            natives = [query["symbol"]]
        elif "symbols" in query:
            try:
                parsed = orjson.loads(query["symbols"])
            except orjson.JSONDecodeError:
                return None
            if not isinstance(parsed, list) or not all(isinstance(n, str) for n in parsed):
                return None
            natives = parsed
        else:
            return self._listed
        if not all(n in self._by_native for n in natives):
            return None
        return [self._by_native[n] for n in natives]

    def _symbol_info(self, spec: SymbolSpec) -> dict[str, object]:
        tick = fixed(spec.tick, _DECIMALS)
        step = fixed(10.0 ** -spec.size_decimals, _DECIMALS)
        return {
            "symbol": spec.native,
            "status": "TRADING" if spec.trading_on(self._venue) else "BREAK",
            "baseAsset": spec.base,
            "baseAssetPrecision": 8,
            "quoteAsset": spec.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": [
                "LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT",
            ],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": spec.trading_on(self._venue),
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": tick,
                    "maxPrice": fixed(spec.price * 1000.0, _DECIMALS),
                    "tickSize": tick,
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": step,
                    "maxQty": "9000000.00000000",
                    "stepSize": step,
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": "5.00000000",
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def _ticker(self, spec: SymbolSpec, market: Market) -> dict[str, object]:
        snapshot = market.snapshot
        book = snapshot.book(self._venue, spec.symbol)
        close_ms = snapshot.now_ms
        open_price = spec.price
        if book is None:
            bid = ask = last = open_price
            bid_size = ask_size = 0.0
            count = 0
        else:
            bid, ask, bid_size, ask_size = book.bid, book.ask, book.bid_size, book.ask_size
            last = round((bid + ask) / 2.0, spec.price_decimals)
            count = int(market.quote_volume_24h(self._venue, spec.symbol) / (spec.price * 20.0))
        quote_volume = market.quote_volume_24h(self._venue, spec.symbol)
        d = _DECIMALS
        return {
            "symbol": spec.native,
            "priceChange": fixed(last - open_price, d),
            "priceChangePercent": fixed(100.0 * (last - open_price) / open_price, 3),
            "weightedAvgPrice": fixed((last + open_price) / 2.0, d),
            "prevClosePrice": fixed(open_price, d),
            "lastPrice": fixed(last, d),
            "lastQty": fixed(bid_size, d),
            "bidPrice": fixed(bid, d),
            "bidQty": fixed(bid_size, d),
            "askPrice": fixed(ask, d),
            "askQty": fixed(ask_size, d),
            "openPrice": fixed(open_price, d),
            "highPrice": fixed(max(open_price, last) * (1.0 + 0.01 * bool(count)), d),
            "lowPrice": fixed(min(open_price, last) * (1.0 - 0.01 * bool(count)), d),
            "volume": fixed(quote_volume / open_price, d),
            "quoteVolume": fixed(quote_volume, d),
            "openTime": close_ms - 86_400_000,
            "closeTime": close_ms,
            "firstId": 1_000_000 if count else -1,
            "lastId": 1_000_000 + count - 1 if count else -1,
            "count": count,
        }

    # -- WebSocket -------------------------------------------------------------------

    def book_topic(self, symbol: str) -> str:
        return f"{self._native[symbol].lower()}@bookTicker"

    def trade_topic(self, symbol: str) -> str:
        return f"{self._native[symbol].lower()}@trade"

    def encode_book(self, book: TopOfBook, snapshot: MarketSnapshot) -> str:
        return dumps({
            "u": book.update_id,
            "s": self._native[book.symbol],
            "b": fixed(book.bid, _DECIMALS),
            "B": fixed(book.bid_size, _DECIMALS),
            "a": fixed(book.ask, _DECIMALS),
            "A": fixed(book.ask_size, _DECIMALS),
        })

    def encode_trades(self, trades: Sequence[SimTrade]) -> list[Frame]:
        return [
            dumps({
                "e": "trade",
                "E": t.ts_ms,
                "s": self._native[t.symbol],
                "t": t.trade_id,
                "p": fixed(t.price, _DECIMALS),
                "q": fixed(t.size, _DECIMALS),
                "T": t.ts_ms,
                "m": not t.taker_buy,
                "M": True,
            })
            for t in trades
        ]

    def on_open(self, conn: ConnectionView, snapshot: MarketSnapshot) -> Opening:
        return Opening()

    def on_message(self, conn: ConnectionView, message: Frame, snapshot: MarketSnapshot) -> Reply:
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            return _error(3, f"Invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", None)
        if not isinstance(request, dict):
            return _error(2, "Invalid request: expected a JSON object", None)
        request_id = request.get("id")
        if "id" not in request or not (
            request_id is None
            or (isinstance(request_id, int) and not isinstance(request_id, bool))
            or (isinstance(request_id, str) and len(request_id) <= 36)
        ):
            return _error(2, "Invalid request: request ID must be an unsigned integer", None)
        method = request.get("method")
        if method is None:
            return _error(2, "Invalid request: missing field `method`", request_id)
        if method not in _METHODS:
            expected = ", ".join(f"`{m}`" for m in _METHODS)
            return _error(
                2, f"Invalid request: unknown variant `{method}`, expected one of {expected}",
                request_id,
            )
        params = request.get("params", [])
        if not isinstance(params, list):
            return _error(2, "Invalid request: invalid type: expected a sequence", request_id)
        if method == "LIST_SUBSCRIPTIONS":
            return Reply(frames=(dumps({"result": sorted(conn.topics), "id": request_id}),))
        if method == "GET_PROPERTY":
            if params != ["combined"]:
                return _error(0, "Unknown property", request_id)
            return Reply(frames=(dumps({"result": False, "id": request_id}),))
        if method == "SET_PROPERTY":
            if len(params) != 2 or params[0] != "combined":
                return _error(0, "Unknown property", request_id)
            if not isinstance(params[1], bool):
                return _error(1, "Invalid value type: expected Boolean", request_id)
            if params[1]:
                return _error(2, "Invalid request: combined streams are not simulated", request_id)
            return Reply(frames=(dumps({"result": None, "id": request_id}),))
        if not all(isinstance(p, str) and p in self._streams for p in params):
            return _error(2, "Invalid request: invalid stream", request_id)
        streams: list[str] = list(dict.fromkeys(params))
        ok = dumps({"result": None, "id": request_id})
        if method == "UNSUBSCRIBE":
            gone = tuple(s for s in streams if s in conn.topics)
            conn.topics.difference_update(gone)
            return Reply(frames=(ok,), unsubscribed=gone)
        duplicates = tuple(s for s in streams if s in conn.topics)
        new = tuple(s for s in streams if s not in conn.topics)
        conn.topics.update(new)
        return Reply(frames=(ok,), subscribed=new, duplicates=duplicates)

    def refuse(
        self, conn: ConnectionView, message: Frame, why: Refusal, snapshot: MarketSnapshot
    ) -> Reply:
        request_id = orjson.loads(message).get("id")
        if why is Refusal.CAP:
            return _error(4, "Too many subscriptions", request_id)
        return _error(2, "Invalid request: invalid stream", request_id)

    def app_ping(self, conn: ConnectionView, now_ms: int) -> Frame | None:
        return None  # protocol pings only

    def notice(self, conn: ConnectionView, now_ms: int) -> Frame | None:
        return dumps({"e": "serverShutdown", "E": now_ms})

    def closing(self, conn: ConnectionView, why: Disconnect, now_ms: int) -> Closing:
        if why is Disconnect.AGE_LIMIT:
            return Closing(CLOSE_GOING_AWAY, "connection older than 24 hours")
        return Closing(CLOSE_GOING_AWAY, "server shutdown")

    def malformed(self, conn: ConnectionView, n: int, snapshot: MarketSnapshot) -> Frame:
        books = [b for s in self._listed[:8] if (b := snapshot.book(self._venue, s.symbol))]
        if not books:
            return truncated(dumps({"u": n, "s": "BTCUSDT", "b": "1.00000000"}), n)
        return truncated(self.encode_book(books[n % len(books)], snapshot), n)
