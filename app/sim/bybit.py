"""Bybit v5 spot's wire format, simulated: REST discovery and the public WebSocket.

Pure (see ``wire.py``). What it follows, from Bybit's public v5 documentation:

* ``GET /v5/market/instruments-info?category=spot`` and
  ``GET /v5/market/tickers?category=spot`` (optionally ``&symbol=``), in the
  ``{"retCode":0,"retMsg":"OK","result":{"category":"spot","list":[...]},
  "retExtInfo":{},"time":..}`` envelope with every number as a string. Spot lists only
  ``Trading`` instruments, as the real endpoint does by default.
* WebSocket ``/v5/public/spot``: ``{"req_id":"x","op":"subscribe","args":[...]}`` with
  at most 10 args (more: ``"args size >10"``, nothing subscribed); acks
  ``{"success":true,"ret_msg":"subscribe","conn_id":..,"req_id":..,"op":"subscribe"}``;
  ``{"req_id":..,"op":"ping"}`` answered with the public-channel pong
  ``{"success":true,"ret_msg":"pong","conn_id":..,"req_id":..,"op":"ping"}``.
* Topics ``orderbook.1.<SYMBOL>`` (snapshot messages only: ``{"topic","ts","type",
  "data":{"s","b","a","u","seq"},"cts"}``; the current book is sent at once to a new
  subscriber) and ``publicTrade.<SYMBOL>``.

* Connection rules (``config``): the client sends ``{"op":"ping"}`` every 20 s. Bybit
  documents a 10 minute cut-off without ping-pong *and* without data; the simulator is
  stricter (60 s without an application ping) so that a connector that forgets its
  heartbeat fails within a minute of a demo. No per-connection topic cap (Bybit limits
  the characters of a connection's args instead), no age limit, no notice.

Choices where the documentation is silent: refusals name the offending topic the way
the real service words them (``Invalid symbol :[topic]``, ``error:already
subscribed,topic:..``, ``error:handler not found,topic:..``); in a request mixing good
and bad topics the good ones are subscribed and the reply reports the first refusal
with ``success: false``. ``req_id`` is echoed, ``""`` when the request had none. A
subscribe refused by the simulator control is answered like an unknown symbol
(``Invalid symbol :[first topic]``), one over a configured cap with
``error:too many topics on this connection``. A forced cut or maintenance close is a
plain 1001 close. A malformed frame is an ``orderbook.1`` message cut short.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson

from app.sim.market import Market, MarketSnapshot, SimTrade, SymbolSpec, TopOfBook
from app.sim.wire import (
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    ConnectionView,
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
    truncated,
)

MAX_ARGS_PER_REQUEST = 10
_BOOK = "orderbook.1."
_TRADE = "publicTrade."


class BybitWire(WireDefaults):
    """Bybit v5 spot as seen on the wire, for the symbols of one :class:`Market`.

    ``on_open``, ``app_ping``, ``notice`` and ``closing`` are :class:`WireDefaults`'.
    """

    name = "bybit"
    ws_path = "/v5/public/spot"
    ws_url_suffix = "/v5/public/spot"
    config = SimVenueConfig(client_ping_timeout_s=60.0, resend_unchanged_s=3.0)

    def __init__(self, market: Market, *, venue: str = "bybit") -> None:
        self._venue = venue
        self._trading = tuple(s for s in market.listed(venue) if s.trading_on(venue))
        self._by_native = {s.native: s for s in self._trading}
        self._native = {s.symbol: s.native for s in market.listed(venue)}

    # -- REST ------------------------------------------------------------------------

    def _envelope(self, market: Market, result: object, code: int = 0, msg: str = "OK") -> RestReply:
        return json_reply({
            "retCode": code,
            "retMsg": msg,
            "result": result,
            "retExtInfo": {},
            "time": market.snapshot.now_ms,
        })

    def rest(
        self, method: str, path: str, query: Mapping[str, str], market: Market,
        endpoints: SimEndpoints,
    ) -> RestReply:
        if path not in ("/v5/market/instruments-info", "/v5/market/tickers"):
            return NOT_FOUND
        if method != "GET":
            return METHOD_NOT_ALLOWED
        if query.get("category") != "spot":
            return self._envelope(market, {}, 10001, "params error: category is invalid")
        specs: Sequence[SymbolSpec] = self._trading
        if "symbol" in query:
            spec = self._by_native.get(query["symbol"])
            if spec is None:
                if path == "/v5/market/tickers":
                    return self._envelope(market, {}, 10001, "Not supported symbols")
                specs = []
            else:
                specs = [spec]
        if path == "/v5/market/instruments-info":
            items = [self._instrument(s) for s in specs]
        else:
            items = [self._ticker(s, market) for s in specs]
        return self._envelope(market, {"category": "spot", "list": items})

    @staticmethod
    def _instrument(spec: SymbolSpec) -> dict[str, object]:
        step = fixed(10.0 ** -spec.size_decimals, spec.size_decimals)
        return {
            "symbol": spec.native,
            "baseCoin": spec.base,
            "quoteCoin": spec.quote,
            "innovation": "0",
            "status": "Trading",
            "marginTrading": "utaOnly",
            "stTag": "0",
            "lotSizeFilter": {
                "basePrecision": step,
                "quotePrecision": fixed(spec.tick, spec.price_decimals),
                "minOrderQty": step,
                "maxOrderQty": fixed(2_000_000.0 / spec.price, spec.size_decimals),
                "minOrderAmt": "5",
                "maxOrderAmt": "2000000",
            },
            "priceFilter": {"tickSize": fixed(spec.tick, spec.price_decimals)},
            "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.05"},
        }

    def _ticker(self, spec: SymbolSpec, market: Market) -> dict[str, object]:
        book = market.snapshot.book(self._venue, spec.symbol)
        pd, sd = spec.price_decimals, spec.size_decimals
        if book is None:
            bid = ask = spec.price
            bid_size = ask_size = 0.0
        else:
            bid, ask, bid_size, ask_size = book.bid, book.ask, book.bid_size, book.ask_size
        last = round((bid + ask) / 2.0, pd)
        prev = spec.price
        turnover = market.quote_volume_24h(self._venue, spec.symbol)
        return {
            "symbol": spec.native,
            "bid1Price": fixed(bid, pd),
            "bid1Size": fixed(bid_size, sd),
            "ask1Price": fixed(ask, pd),
            "ask1Size": fixed(ask_size, sd),
            "lastPrice": fixed(last, pd),
            "prevPrice24h": fixed(prev, pd),
            "price24hPcnt": fixed((last - prev) / prev, 4),
            "highPrice24h": fixed(max(prev, last) * 1.01, pd),
            "lowPrice24h": fixed(min(prev, last) * 0.99, pd),
            "turnover24h": fixed(turnover, 8),
            "volume24h": fixed(turnover / prev, sd),
            "usdIndexPrice": fixed(last, 8) if spec.quote in ("USDT", "USDC") else "",
        }

    # -- WebSocket -------------------------------------------------------------------

    def book_topic(self, symbol: str) -> str:
        return _BOOK + self._native[symbol]

    def trade_topic(self, symbol: str) -> str:
        return _TRADE + self._native[symbol]

    def encode_book(self, book: TopOfBook, snapshot: MarketSnapshot) -> str:
        spec_native = self._native[book.symbol]
        spec = self._by_native[spec_native]
        pd, sd = spec.price_decimals, spec.size_decimals
        return dumps({
            "topic": _BOOK + spec_native,
            "ts": snapshot.now_ms,
            "type": "snapshot",
            "data": {
                "s": spec_native,
                "b": [[fixed(book.bid, pd), fixed(book.bid_size, sd)]],
                "a": [[fixed(book.ask, pd), fixed(book.ask_size, sd)]],
                "u": book.update_id,
                "seq": book.seq,
            },
            "cts": book.ts_ms,
        })

    def encode_trades(self, trades: Sequence[SimTrade]) -> list[Frame]:
        """One frame per symbol, its trades in matching order, as Bybit batches them."""
        by_native: dict[str, list[SimTrade]] = {}
        for t in trades:
            by_native.setdefault(self._native[t.symbol], []).append(t)
        frames: list[Frame] = []
        for native, batch in by_native.items():
            spec = self._by_native[native]
            frames.append(dumps({
                "topic": _TRADE + native,
                "type": "snapshot",
                "ts": batch[-1].ts_ms,
                "data": [
                    {
                        "i": str(t.trade_id),
                        "T": t.ts_ms,
                        "p": fixed(t.price, spec.price_decimals),
                        "v": fixed(t.size, spec.size_decimals),
                        "S": "Buy" if t.taker_buy else "Sell",
                        "s": native,
                        "BT": False,
                        "seq": t.seq,
                    }
                    for t in batch
                ],
            }))
        return frames

    def on_message(self, conn: ConnectionView, message: Frame, snapshot: MarketSnapshot) -> Reply:
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            return self._refuse(conn, "", "", "error:request not json")
        if not isinstance(request, dict):
            return self._refuse(conn, "", "", "error:request not json object")
        op = request.get("op")
        req_id = request.get("req_id", "")
        req_id = req_id if isinstance(req_id, str) else str(req_id)
        if op == "ping":
            return Reply(frames=(self._ack(conn, req_id, "ping", True, "pong"),), app_ping=True)
        if op not in ("subscribe", "unsubscribe"):
            return self._refuse(conn, req_id, str(op), f"error:handler not found,op:{op}")
        args = request.get("args")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            return self._refuse(conn, req_id, op, "error:args must be a list of strings")
        if len(args) > MAX_ARGS_PER_REQUEST:
            refused = self._refuse(conn, req_id, op, f"args size >{MAX_ARGS_PER_REQUEST}")
            return Reply(frames=refused.frames, rejected=tuple(args))
        if op == "unsubscribe":
            gone = tuple(a for a in dict.fromkeys(args) if a in conn.topics)
            conn.topics.difference_update(gone)
            return Reply(frames=(self._ack(conn, req_id, op, True, op),), unsubscribed=gone)
        refusals: list[str] = []
        new: list[str] = []
        duplicates: list[str] = []
        rejected: list[str] = []
        for topic in dict.fromkeys(args):
            problem = self._check_topic(topic)
            if problem is None and topic in conn.topics:
                duplicates.append(topic)
                problem = f"error:already subscribed,topic:{topic}"
            elif problem is not None:
                rejected.append(topic)
            else:
                new.append(topic)
            if problem is not None:
                refusals.append(problem)
        conn.topics.update(new)
        ack = self._ack(conn, req_id, op, not refusals, refusals[0] if refusals else op)
        frames: list[Frame] = [ack]
        for topic in new:
            if topic.startswith(_BOOK):
                book = snapshot.book(self._venue, self._by_native[topic[len(_BOOK):]].symbol)
                if book is not None:
                    frames.append(self.encode_book(book, snapshot))
        return Reply(
            frames=tuple(frames),
            subscribed=tuple(new),
            duplicates=tuple(duplicates),
            rejected=tuple(rejected),
        )

    def _check_topic(self, topic: str) -> str | None:
        for prefix in (_BOOK, _TRADE):
            if topic.startswith(prefix):
                if topic[len(prefix):] in self._by_native:
                    return None
                return f"Invalid symbol :[{topic}]"
        return f"error:handler not found,topic:{topic}"

    @staticmethod
    def _ack(conn: ConnectionView, req_id: str, op: str, success: bool, msg: str) -> str:
        return dumps({
            "success": success,
            "ret_msg": msg,
            "conn_id": conn.conn_id,
            "req_id": req_id,
            "op": op,
        })

    def _refuse(self, conn: ConnectionView, req_id: str, op: str, msg: str) -> Reply:
        return Reply(frames=(self._ack(conn, req_id, op, False, msg),))

    def refuse(
        self, conn: ConnectionView, message: Frame, why: Refusal, snapshot: MarketSnapshot
    ) -> Reply:
        request = orjson.loads(message)
        req_id = request.get("req_id", "")
        req_id = req_id if isinstance(req_id, str) else str(req_id)
        if why is Refusal.CAP:
            return self._refuse(conn, req_id, "subscribe", "error:too many topics on this connection")
        first = request["args"][0]
        return self._refuse(conn, req_id, "subscribe", f"Invalid symbol :[{first}]")

    def malformed(self, conn: ConnectionView, n: int, snapshot: MarketSnapshot) -> Frame:
        books = [b for s in self._trading[:8] if (b := snapshot.book(self._venue, s.symbol))]
        if not books:
            return truncated(dumps({"topic": _BOOK + "BTCUSDT", "ts": snapshot.now_ms}), n)
        return truncated(self.encode_book(books[n % len(books)], snapshot), n)
