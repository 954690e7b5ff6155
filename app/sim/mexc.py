"""MEXC spot v3's wire format, simulated: REST discovery and the market-stream WebSocket.

Pure (see ``wire.py``). What it follows, from MEXC's public spot v3 documentation:

* ``GET /api/v3/exchangeInfo`` (optionally ``symbol=`` or ``symbols=A,B``), symbols
  named ``BTCUSDT`` with ``status`` a string (``"1"`` online, ``"2"`` pause, ``"3"``
  offline) and ``isSpotTradingAllowed``; ``GET /api/v3/ticker/24hr`` (every symbol as
  an array, or one object for ``symbol=``), every price a string, ``quoteVolume`` and
  ``count`` null where there is nothing to report, ``bidQty``/``askQty`` ``""`` then, as
  the documentation's own example shows; ``GET /api/v3/ping`` and ``/api/v3/time``.
* WebSocket ``/ws`` (``wss://wbs-api.mexc.com/ws`` is the whole documented URL):
  ``{"method":"SUBSCRIPTION","params":[...]}`` and ``UNSUBSCRIPTION`` are answered with
  the JSON text ``{"id":..,"code":0,"msg":"<the channels, comma separated>"}``;
  ``{"method":"PING"}`` with ``{"id":0,"code":0,"msg":"PONG"}``. Channels
  ``spot@public.aggre.bookTicker.v3.api.pb@100ms@<SYMBOL>`` and
  ``spot@public.aggre.deals.v3.api.pb@100ms@<SYMBOL>``, symbols upper case.
* Data frames are **binary** protobuf ``PushDataV3ApiWrapper`` messages (field numbers
  from ``github.com/mexcdevelop/websocket-proto``): ``channel`` = 1, ``symbol`` = 3,
  ``sendTime`` = 6 and the ``body`` oneof, ``publicAggreDeals`` = 314 {repeated
  ``deals`` = 1 {``price`` = 1, ``quantity`` = 2 (strings), ``tradeType`` = 3 (1 buy,
  2 sell: the taker's side), ``time`` = 4 (ms)}, ``eventType`` = 2} and
  ``publicAggreBookTicker`` = 315 {``bidPrice`` = 1, ``bidQuantity`` = 2, ``askPrice`` =
  3, ``askQuantity`` = 4, strings}. Exactly the fields of the documented examples, in
  field-number order as protobuf-java writes them; proto3 leaves out empty strings and
  zeros. No sequence number or trade id is documented for these streams: none is sent.
  A small encoder below writes them (varints, length-delimited strings and messages).
* Connection rules (``config``): closed 30 s after opening without a valid
  subscription; at most 30 subscriptions per connection; at most 100 messages a second
  ("Websocket limits: 100 times/s"); valid for no more than 24 hours. The FAQ asks
  clients to answer the server's pings with a pong: protocol ping frames, which every
  WebSocket library answers.

Choices where the documentation is silent:

* "No data flow for one minute, unless the client pings" cannot be told apart from
  plain silence by the server's hooks, so the simulator is stricter: a connection that
  sent no ``PING`` for 60 s is closed (1008), whatever it received. The codec pings
  every 20 s. Protocol pings go out every 20 s and a missing pong closes after 60 s
  (the FAQ gives no numbers).
* The ``id`` of a request is echoed when it is an unsigned integer, else 0 (the
  documented examples send none and get 0).
* A channel the venue does not serve (unknown or lower-case symbol, an interval other
  than 100ms, any other stream) is refused the way the live service words it, with
  ``code`` still 0: ``Not Subscribed successfully! [ch,..].  Reason\uff1a Blocked! ``;
  in a request mixing good and bad channels the good ones are subscribed and the reply
  reads ``Subscribed successful! [good,..]. Not Subscribed successfully! [bad,..].
  Reason\uff1a Blocked! ``. A listed but paused symbol can be subscribed (nothing flows).
  A channel already subscribed is acknowledged again (counted as a duplicate).
* "Any subscription will be invalid after the limit is exceeded": a subscribe that
  would take a connection over 30 channels is refused as a whole with that same
  ``Blocked!`` reply, as is any subscribe while the simulator control rejects them.
* Requests that are not JSON objects, lack ``method``/``params`` or name an unknown
  method get ``{"id":..,"code":1,"msg":".."}`` (no documented shape; a non-zero code).
* The 24 h cut and the end of a maintenance grace are plain 1001 closes; MEXC
  documents no notice frame, so ``notice`` is None.
* Listed symbols that do not trade appear both ways the documentation allows: every
  other one with ``status`` ``"2"`` (pause), the others ``"1"`` with
  ``isSpotTradingAllowed`` false. Unknown symbols on REST answer HTTP 400
  ``{"code":-1121,"msg":"Invalid symbol."}``.
* The aggregated streams push at most every 100 ms on the real venue; the simulator
  pushes each book change as the market makes it, and all of one symbol's new trades in
  one deals frame.
* Malformed frames are protobuf for a symbol the connection subscribed to: cut short
  inside the body, a body length prefix running past the end, or a book ticker with a
  bid side but only an ask price.
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
    Refusal,
    Reply,
    RestReply,
    SimEndpoints,
    SimVenueConfig,
    WireDefaults,
    dumps,
    fixed,
    json_reply,
)

INTERVAL = "100ms"
BOOK_PREFIX = f"spot@public.aggre.bookTicker.v3.api.pb@{INTERVAL}@"
DEALS_PREFIX = f"spot@public.aggre.deals.v3.api.pb@{INTERVAL}@"
DEALS_EVENT_TYPE = f"spot@public.aggre.deals.v3.api.pb@{INTERVAL}"

#: PushDataV3ApiWrapper field numbers
CHANNEL = 1
SYMBOL = 3
SEND_TIME = 6
AGGRE_DEALS = 314
AGGRE_BOOK_TICKER = 315

_VARINT = 0
_LEN = 2
_FULL_WIDTH_COLON = "\uff1a"
_INVALID_SYMBOL = RestReply(400, b'{"code":-1121,"msg":"Invalid symbol."}')
_TAKER_BUY = 1
_TAKER_SELL = 2


# -- protobuf writer ---------------------------------------------------------------------


def varint(value: int) -> bytes:
    """A base-128 varint; negative numbers as 64-bit two's complement (int64/int32)."""
    if value < 0:
        value += 1 << 64
    out = b""
    while value > 0x7F:
        out += bytes(((value & 0x7F) | 0x80,))
        value >>= 7
    return out + bytes((value,))


def _key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def pb_string(number: int, value: str) -> bytes:
    """A proto3 string field; empty strings are not written."""
    if not value:
        return b""
    data = value.encode()
    return _key(number, _LEN) + varint(len(data)) + data


def pb_int(number: int, value: int) -> bytes:
    """A proto3 int32/int64 field; zero is not written."""
    if not value:
        return b""
    return _key(number, _VARINT) + varint(value)


def pb_message(number: int, payload: bytes) -> bytes:
    """A nested message field (written even when empty: a set oneof member is present)."""
    return _key(number, _LEN) + varint(len(payload)) + payload


def push_data(channel: str, symbol: str, send_time: int, body_number: int, body: bytes) -> bytes:
    """One ``PushDataV3ApiWrapper`` with the fields of MEXC's documented pushes."""
    return (
        pb_string(CHANNEL, channel)
        + pb_string(SYMBOL, symbol)
        + pb_int(SEND_TIME, send_time)
        + pb_message(body_number, body)
    )


def book_ticker_body(bid: str, bid_quantity: str, ask: str, ask_quantity: str) -> bytes:
    """A ``PublicAggreBookTickerV3Api``."""
    return pb_string(1, bid) + pb_string(2, bid_quantity) + pb_string(3, ask) + pb_string(4, ask_quantity)


def deal_item(price: str, quantity: str, trade_type: int, time_ms: int) -> bytes:
    """A ``PublicAggreDealsV3ApiItem``."""
    return pb_string(1, price) + pb_string(2, quantity) + pb_int(3, trade_type) + pb_int(4, time_ms)


def deals_body(items: Sequence[bytes], event_type: str) -> bytes:
    """A ``PublicAggreDealsV3Api``: the repeated ``deals``, then ``eventType``."""
    return b"".join(pb_message(1, item) for item in items) + pb_string(2, event_type)


# -- the venue ---------------------------------------------------------------------------


def _control(request_id: int, msg: str, code: int = 0) -> str:
    return dumps({"id": request_id, "code": code, "msg": msg})


def _blocked(channels: Sequence[str]) -> str:
    return f"Not Subscribed successfully! [{','.join(channels)}].  Reason{_FULL_WIDTH_COLON} Blocked! "


class MexcWire(WireDefaults):
    """MEXC spot v3 as seen on the wire, for the symbols of one :class:`Market`.

    ``on_open``, ``app_ping`` and ``notice`` are :class:`WireDefaults`' (none of them
    is documented for MEXC).
    """

    name = "mexc"
    ws_path = "/ws"
    ws_url_suffix = "/ws"
    config = SimVenueConfig(
        ping_interval_s=20.0,
        pong_timeout_s=60.0,
        client_ping_timeout_s=60.0,
        subscribe_timeout_s=30.0,
        max_incoming_per_s=100,
        max_topics=30,
        max_connection_age_s=24 * 3600.0,
    )

    def __init__(self, market: Market, *, venue: str = "mexc") -> None:
        self._venue = venue
        self._listed = market.listed(venue)
        self._native = {s.symbol: f"{s.base}{s.quote}" for s in self._listed}
        self._by_native = {self._native[s.symbol]: s for s in self._listed}
        halted = [s for s in self._listed if not s.trading_on(venue)]
        #: halted symbols shown as paused (the others: online but not API-tradable)
        self._paused = frozenset(s.symbol for s in halted[::2])
        self._channels = frozenset(
            prefix + native for native in self._by_native for prefix in (BOOK_PREFIX, DEALS_PREFIX)
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
        if path == "/api/v3/ping":
            return json_reply({})
        if path == "/api/v3/time":
            return json_reply({"serverTime": market.snapshot.now_ms})
        if path == "/api/v3/exchangeInfo":
            specs = self._select(query, allow_many=True)
            if specs is None:
                return _INVALID_SYMBOL
            return json_reply({
                "timezone": "CST",
                "serverTime": market.snapshot.now_ms,
                "rateLimits": [],
                "exchangeFilters": [],
                "symbols": [self._symbol_info(s) for s in specs],
            })
        specs = self._select(query, allow_many=False)
        if specs is None:
            return _INVALID_SYMBOL
        tickers = [self._ticker(s, market) for s in specs]
        return json_reply(tickers[0] if "symbol" in query else tickers)

    def _select(self, query: Mapping[str, str], *, allow_many: bool) -> Sequence[SymbolSpec] | None:
        if "symbol" in query:
            natives = [query["symbol"]]
        elif allow_many and "symbols" in query:
            natives = [n for n in query["symbols"].split(",") if n]
        else:
            return self._listed
        if not natives or not all(n in self._by_native for n in natives):
            return None
        return [self._by_native[n] for n in natives]

    def _symbol_info(self, spec: SymbolSpec) -> dict[str, object]:
        trading = spec.trading_on(self._venue)
        paused = spec.symbol in self._paused
        return {
            "symbol": self._native[spec.symbol],
            "status": "2" if paused else "1",
            "baseAsset": spec.base,
            "baseAssetPrecision": spec.size_decimals,
            "quoteAsset": spec.quote,
            "quotePrecision": spec.price_decimals,
            "quoteAssetPrecision": spec.price_decimals,
            "baseCommissionPrecision": spec.size_decimals,
            "quoteCommissionPrecision": spec.price_decimals,
            "orderTypes": ["LIMIT", "MARKET", "LIMIT_MAKER"],
            "isSpotTradingAllowed": trading or paused,
            "isMarginTradingAllowed": False,
            "quoteAmountPrecision": "1.000000000000000000",
            "baseSizePrecision": "0",
            "permissions": ["SPOT"],
            "filters": [],
            "maxQuoteAmount": "2000000.000000000000000000",
            "makerCommission": "0",
            "takerCommission": "0.0005",
            "quoteAmountPrecisionMarket": "1.000000000000000000",
            "maxQuoteAmountMarket": "100000.000000000000000000",
            "fullName": spec.base,
            "tradeSideType": "1",
        }

    def _ticker(self, spec: SymbolSpec, market: Market) -> dict[str, object]:
        snapshot = market.snapshot
        book = snapshot.book(self._venue, spec.symbol)
        pd, sd = spec.price_decimals, spec.size_decimals
        open_price = spec.price
        quote_volume: str | None = None
        bid_qty = ask_qty = ""
        if book is None:
            bid = ask = last = open_price
        else:
            bid, ask = book.bid, book.ask
            bid_qty, ask_qty = fixed(book.bid_size, sd), fixed(book.ask_size, sd)
            last = round((bid + ask) / 2.0, pd)
            quote_volume = fixed(market.quote_volume_24h(self._venue, spec.symbol), 2)
        volume = market.quote_volume_24h(self._venue, spec.symbol) / open_price
        return {
            "symbol": self._native[spec.symbol],
            "priceChange": fixed(last - open_price, pd),
            "priceChangePercent": fixed((last - open_price) / open_price, 8),
            "prevClosePrice": fixed(open_price, pd),
            "lastPrice": fixed(last, pd),
            "bidPrice": fixed(bid, pd),
            "bidQty": bid_qty,
            "askPrice": fixed(ask, pd),
            "askQty": ask_qty,
            "openPrice": fixed(open_price, pd),
            "highPrice": fixed(max(open_price, last) * 1.01, pd),
            "lowPrice": fixed(min(open_price, last) * 0.99, pd),
            "volume": fixed(volume, sd),
            "quoteVolume": quote_volume,
            "openTime": snapshot.now_ms - 86_400_000,
            "closeTime": snapshot.now_ms,
            "count": None,
        }

    # -- WebSocket -------------------------------------------------------------------

    def book_topic(self, symbol: str) -> str:
        return BOOK_PREFIX + self._native[symbol]

    def trade_topic(self, symbol: str) -> str:
        return DEALS_PREFIX + self._native[symbol]

    def encode_book(self, book: TopOfBook, snapshot: MarketSnapshot) -> bytes:
        native = self._native[book.symbol]
        spec = self._by_native[native]
        pd, sd = spec.price_decimals, spec.size_decimals
        body = book_ticker_body(
            fixed(book.bid, pd), fixed(book.bid_size, sd), fixed(book.ask, pd), fixed(book.ask_size, sd)
        )
        return push_data(BOOK_PREFIX + native, native, snapshot.now_ms, AGGRE_BOOK_TICKER, body)

    def encode_trades(self, trades: Sequence[SimTrade]) -> list[Frame]:
        """One deals frame per symbol, its trades in matching order."""
        by_native: dict[str, list[SimTrade]] = {}
        for t in trades:
            by_native.setdefault(self._native[t.symbol], []).append(t)
        frames: list[Frame] = []
        for native, batch in by_native.items():
            spec = self._by_native[native]
            items = [
                deal_item(
                    fixed(t.price, spec.price_decimals), fixed(t.size, spec.size_decimals),
                    _TAKER_BUY if t.taker_buy else _TAKER_SELL, t.ts_ms,
                )
                for t in batch
            ]
            body = deals_body(items, DEALS_EVENT_TYPE)
            frames.append(push_data(DEALS_PREFIX + native, native, batch[-1].ts_ms, AGGRE_DEALS, body))
        return frames

    @staticmethod
    def _request(message: Frame) -> tuple[dict[str, object] | None, int]:
        """The request object (None when it is not a JSON object) and the id to echo."""
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            return None, 0
        if not isinstance(request, dict):
            return None, 0
        request_id = request.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, int) or not 0 <= request_id < 1 << 63:
            request_id = 0
        return request, request_id

    def on_message(self, conn: ConnectionView, message: Frame, snapshot: MarketSnapshot) -> Reply:
        request, request_id = self._request(message)
        if request is None:
            return Reply(frames=(_control(0, "Invalid JSON request", 1),))
        method = request.get("method")
        if method == "PING":
            return Reply(frames=(_control(request_id, "PONG"),), app_ping=True)
        if method not in ("SUBSCRIPTION", "UNSUBSCRIPTION"):
            return Reply(frames=(_control(request_id, f"wrong method: {method}", 1),))
        params = request.get("params")
        if not isinstance(params, list) or not params or not all(isinstance(p, str) for p in params):
            return Reply(frames=(_control(request_id, "params must be a non-empty list of channels", 1),))
        channels: list[str] = list(dict.fromkeys(params))
        if method == "UNSUBSCRIPTION":
            gone = tuple(c for c in channels if c in conn.topics)
            conn.topics.difference_update(gone)
            return Reply(frames=(_control(request_id, ",".join(channels)),), unsubscribed=gone)
        good = [c for c in channels if c in self._channels]
        bad = tuple(c for c in channels if c not in self._channels)
        duplicates = tuple(c for c in good if c in conn.topics)
        new = tuple(c for c in good if c not in conn.topics)
        conn.topics.update(new)
        if not bad:
            msg = ",".join(good)
        elif not good:
            msg = _blocked(bad)
        else:
            msg = f"Subscribed successful! [{','.join(good)}]. {_blocked(bad)}"
        return Reply(
            frames=(_control(request_id, msg),), subscribed=new, duplicates=duplicates, rejected=bad
        )

    def refuse(
        self, conn: ConnectionView, message: Frame, why: Refusal, snapshot: MarketSnapshot
    ) -> Reply:
        request, request_id = self._request(message)
        params = request.get("params") if request is not None else None
        channels = list(dict.fromkeys(params)) if isinstance(params, list) else []
        return Reply(frames=(_control(request_id, _blocked([str(c) for c in channels])),))

    def closing(self, conn: ConnectionView, why: Disconnect, now_ms: int) -> Closing:
        if why is Disconnect.AGE_LIMIT:
            return Closing(CLOSE_GOING_AWAY, "connection valid for no more than 24 hours")
        return Closing(CLOSE_GOING_AWAY, "server maintenance")

    def malformed(self, conn: ConnectionView, n: int, snapshot: MarketSnapshot) -> Frame:
        # a symbol this connection subscribed to, so that its codec reads the frame through
        natives = sorted({t.rpartition("@")[2] for t in conn.topics}) or [
            self._native[s.symbol] for s in self._listed[:8] if s.trading_on(self._venue)
        ] or ["BTCUSDT"]
        native = natives[n % len(natives)]
        channel = BOOK_PREFIX + native
        body = book_ticker_body("93387.28", "3.73485", "93387.29", "7.669875")
        frame = push_data(channel, native, snapshot.now_ms, AGGRE_BOOK_TICKER, body)
        kind = n % 3
        if kind == 0:  # cut short inside the body: its length prefix runs past the end
            return frame[: len(frame) - 1 - n % 5]
        if kind == 1:  # the body's length prefix claims more bytes than there are
            head = push_data(channel, native, snapshot.now_ms, AGGRE_BOOK_TICKER, b"")[:-1]
            return head + varint(len(body) + 127 + n) + body
        # a well-formed message whose book ticker has an ask price without its quantity
        half = book_ticker_body("93387.28", "3.73485", f"93387.{29 + n % 50}", "")
        return push_data(channel, native, snapshot.now_ms, AGGRE_BOOK_TICKER, half)
