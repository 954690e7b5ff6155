"""Bitget v2 spot's wire format, simulated: REST discovery and the public WebSocket.

Pure (see ``wire.py``). What it follows, from Bitget's v2 documentation
(``api-doc/common/websocket-intro``, the spot ``Depth Channel`` and ``Trade Channel``
pages, ``Get Symbol Info`` and ``Get Ticker Information``):

* ``GET /api/v2/spot/public/symbols`` and ``GET /api/v2/spot/market/tickers``
  (optionally ``?symbol=``), in the ``{"code":"00000","msg":"success","requestTime":..,
  "data":[..]}`` envelope, every number a string without trailing zeros as the REST
  API writes them. ``status`` is ``online``, or ``halt`` for a symbol the market lists
  but does not trade (Bitget's other non-trading states are ``gray`` and ``offline``).
  An unknown ``symbol`` answers HTTP 400 ``{"code":"40034","msg":"Parameter does not
  exist",..,"data":null}``. ``GET /api/v2/public/time`` is served too.
* WebSocket ``/v2/ws/public`` (the documented URL is the whole path: clients append
  nothing). Requests ``{"op":"subscribe"|"unsubscribe","args":[{"instType":"SPOT",
  "channel":..,"instId":..}]}`` carry no id; each arg is answered on its own, in
  order: ``{"event":"subscribe","arg":{..}}``, or the error event
  ``{"event":"error","arg":{..},"code":30001,"msg":"instType:SPOT,channel:books1,
  instId:NOPEUSDT doesn't exist","op":"subscribe"}`` for an unknown instrument
  (``code`` a JSON number on the socket, a string on REST).
* Channels ``books1`` (a snapshot every push: ``{"action":"snapshot","arg":{..},
  "data":[{"asks":[[p,s]],"bids":[[p,s]],"checksum":0,"seq":N,"ts":"<ms>"}],
  "ts":<ms>}``, prices and sizes as strings with the symbol's fixed decimals, ``seq``
  the venue's increasing book sequence, ``data[0].ts`` a string, the envelope ``ts`` a
  number) and ``trade`` (``{"ts":"<ms>","price","size","side":"buy"|"sell",
  "tradeId"}`` items, ``action`` ``snapshot`` with the recent trades right after
  subscribing, ``update`` afterwards). A new ``books1`` subscriber gets the current
  book at once, right after its ack.
* Connection rules (``config``): the client sends the text ``ping`` (answered by the
  text ``pong``) every 30 s and is disconnected after 2 minutes without one; at most
  10 messages a second (pings included); 1000 channels per connection; every
  connection is cut after 24 h. One version of the introduction also closes a
  connection that has not subscribed within 30 s: kept as ``subscribe_timeout_s``.
  The total length of one request's args is limited to 4096 bytes. No server ping,
  no maintenance notice: ``notice`` is None.

Choices where the documentation is silent (some from third-party captures of the live
service, marked *seen*): a lower-case ``instId`` is accepted and echoed upper case
(seen); a subscribe for a channel already subscribed is acked again, with a fresh
snapshot (seen), and counted as a duplicate; an unsubscribe of a known channel not
subscribed is acked. An ``instType`` or ``channel`` Bitget does not have answers code
30016 ``Param error`` (seen); Bitget's other spot channels (``ticker``, ``books``,
``books5``, ``books15``, candles) and the futures ``instType`` values answer 30001
"doesn't exist", as the simulator serves only ``books1`` and ``trade``. Text that is
neither ``ping`` nor a JSON request, or an ``op`` other than subscribe/unsubscribe,
answers 30002 ``Unrecognized request:<text>`` without ``arg`` (seen); a request
without a non-empty ``args`` list, or over 4096 bytes, answers 30016 and subscribes
nothing. A listed symbol that does not trade is acked and sends nothing. A binary
message is read as UTF-8 text. Refusals: a subscribe that would take the connection
over its channel cap gets, per new arg, code 30006 ``request too many: channel limit
of this connection reached`` (the code of Bitget's "request too many", our text); one
refused by the simulator control the documented 30001 "doesn't exist". The trade
snapshot holds up to 50 recent trades, newest first (none: no snapshot); update
frames list a batch newest first too. The 240 subscribe requests an hour are not
enforced. The 24 h cut and the maintenance close are 1001 frames (the live service
was seen dropping idle connections without a close frame, which a server cannot
send on purpose). A malformed frame is a ``books1`` push cut short, a ``books1`` push
without ``asks``, or a ``trade`` push whose items lack ``side``.
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

_SPOT = "SPOT"
_BOOKS1 = "books1"
_TRADE = "trade"
#: the channels the simulator serves
_SERVED = frozenset({_BOOKS1, _TRADE})
#: Bitget's other public channels: refused as not existing here, not as a bad parameter
_OTHER_CHANNELS = frozenset({"ticker", "books", "books5", "books15", "candle1m", "candle5m",
                             "candle15m", "candle30m", "candle1H", "candle4H", "candle6H",
                             "candle12H", "candle1D", "candle3D", "candle1W", "candle1M",
                             "candle6Hutc", "candle12Hutc", "candle1Dutc", "candle3Dutc",
                             "candle1Wutc", "candle1Mutc", "auction"})
_INST_TYPES = frozenset({_SPOT, "USDT-FUTURES", "COIN-FUTURES", "USDC-FUTURES"})
_OPS = ("subscribe", "unsubscribe")
#: the documented limit on the total length of one request
MAX_REQUEST_BYTES = 4096
#: trades in the snapshot a new ``trade`` subscriber gets
SNAPSHOT_TRADES = 50
_PARAM_ERROR = 30016
_NOT_FOUND_CODE = 30001
_UNRECOGNIZED = 30002
_TOO_MANY = 30006


def _plain(value: float, decimals: int) -> str:
    """A REST number: ``decimals`` places, trailing zeros dropped (``"86714.4"``, ``"2762"``)."""
    text = fixed(value, decimals)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if float(text) == 0.0 else text


def _error(code: int, msg: str, op: str | None = None, arg: object = None) -> str:
    message: dict[str, object] = {"event": "error"}
    if arg is not None:
        message["arg"] = arg
    message["code"] = code
    message["msg"] = msg
    if op is not None:
        message["op"] = op
    return dumps(message)


def _not_found(inst_type: str, channel: str, inst_id: str, op: str, arg: object) -> str:
    """The documented answer to an arg naming something that does not exist."""
    return _error(
        _NOT_FOUND_CODE, f"instType:{inst_type},channel:{channel},instId:{inst_id} doesn't exist",
        op, arg,
    )


class BitgetWire(WireDefaults):
    """Bitget v2 spot as seen on the wire, for the symbols of one :class:`Market`.

    ``on_open``, ``app_ping``, ``notice`` (none) and ``closing`` are :class:`WireDefaults`'.
    """

    name = "bitget"
    ws_path = "/v2/ws/public"
    ws_url_suffix = "/v2/ws/public"
    config = SimVenueConfig(
        client_ping_timeout_s=120.0,
        subscribe_timeout_s=30.0,
        max_incoming_per_s=10,
        max_topics=1000,
        max_connection_age_s=24 * 3600.0,
    )

    def __init__(self, market: Market, *, venue: str = "bitget") -> None:
        self._venue = venue
        self._listed = market.listed(venue)
        self._native = {s.symbol: f"{s.base}{s.quote}" for s in self._listed}
        self._by_native = {self._native[s.symbol]: s for s in self._listed}
        self._spec = {s.symbol: s for s in self._listed}

    # -- REST ------------------------------------------------------------------------

    def rest(
        self, method: str, path: str, query: Mapping[str, str], market: Market,
        endpoints: SimEndpoints,
    ) -> RestReply:
        if path not in ("/api/v2/spot/public/symbols", "/api/v2/spot/market/tickers",
                        "/api/v2/public/time"):
            return NOT_FOUND
        if method != "GET":
            return METHOD_NOT_ALLOWED
        now_ms = market.snapshot.now_ms
        if path == "/api/v2/public/time":
            return self._envelope(now_ms, {"serverTime": str(now_ms)})
        specs: Sequence[SymbolSpec] = self._listed
        if "symbol" in query:
            spec = self._by_native.get(query["symbol"])
            if spec is None:
                return json_reply({"code": "40034", "msg": "Parameter does not exist",
                                   "requestTime": now_ms, "data": None}, status=400)
            specs = (spec,)
        if path == "/api/v2/spot/public/symbols":
            return self._envelope(now_ms, [self._symbol_info(s) for s in specs])
        return self._envelope(now_ms, [self._ticker(s, market) for s in specs])

    @staticmethod
    def _envelope(now_ms: int, data: object) -> RestReply:
        return json_reply({"code": "00000", "msg": "success", "requestTime": now_ms, "data": data})

    def _symbol_info(self, spec: SymbolSpec) -> dict[str, object]:
        pd, sd = spec.price_decimals, spec.size_decimals
        return {
            "symbol": self._native[spec.symbol],
            "baseCoin": spec.base,
            "quoteCoin": spec.quote,
            "minTradeAmount": _plain(10.0 ** -sd, sd),
            "maxTradeAmount": "10000000000",
            "takerFeeRate": "0.001",
            "makerFeeRate": "0.001",
            "pricePrecision": str(pd),
            "quantityPrecision": str(sd),
            "quotePrecision": str(pd),
            "minTradeUSDT": "1",
            "status": "online" if spec.trading_on(self._venue) else "halt",
            "buyLimitPriceRatio": "0.05",
            "sellLimitPriceRatio": "0.05",
            "orderQuantity": "200",
            "areaSymbol": "no",
        }

    def _ticker(self, spec: SymbolSpec, market: Market) -> dict[str, object]:
        snapshot = market.snapshot
        book = snapshot.book(self._venue, spec.symbol)
        pd, sd = spec.price_decimals, spec.size_decimals
        open_price = spec.price
        if book is None:
            bid = ask = 0.0
            bid_size = ask_size = 0.0
            last = open_price
        else:
            bid, ask, bid_size, ask_size = book.bid, book.ask, book.bid_size, book.ask_size
            last = round((bid + ask) / 2.0, pd)
        quote_volume = market.quote_volume_24h(self._venue, spec.symbol)
        change = (last - open_price) / open_price
        moved = 0.01 if quote_volume > 0.0 else 0.0
        return {
            "symbol": self._native[spec.symbol],
            "high24h": _plain(max(open_price, last) * (1.0 + moved), pd),
            "open": _plain(open_price, pd),
            "low24h": _plain(min(open_price, last) * (1.0 - moved), pd),
            "lastPr": _plain(last, pd),
            "quoteVolume": _plain(quote_volume, 4),
            "baseVolume": _plain(quote_volume / open_price, sd),
            "usdtVolume": _plain(quote_volume * self._usdt_per(spec.quote, market), 4),
            "bidPr": _plain(bid, pd),
            "askPr": _plain(ask, pd),
            "bidSz": _plain(bid_size, sd),
            "askSz": _plain(ask_size, sd),
            "openUtc": _plain(open_price, pd),
            "ts": str(snapshot.now_ms),
            "changeUtc24h": _plain(change, 5),
            "change24h": _plain(change, 5),
        }

    def _usdt_per(self, coin: str, market: Market) -> float:
        """USDT per unit of ``coin``, from the market's ``<coin>/USDT`` where listed."""
        if coin in ("USDT", "USDC"):
            return 1.0
        book = market.snapshot.book(self._venue, f"{coin}/USDT")
        if book is not None:
            return (book.bid + book.ask) / 2.0
        spec = self._spec.get(f"{coin}/USDT")
        return spec.price if spec is not None else 1.0

    # -- WebSocket -------------------------------------------------------------------

    def book_topic(self, symbol: str) -> str:
        return f"{_BOOKS1}:{self._native[symbol]}"

    def trade_topic(self, symbol: str) -> str:
        return f"{_TRADE}:{self._native[symbol]}"

    @staticmethod
    def _arg(channel: str, native: str) -> dict[str, str]:
        return {"instType": _SPOT, "channel": channel, "instId": native}

    def encode_book(self, book: TopOfBook, snapshot: MarketSnapshot) -> str:
        spec = self._spec[book.symbol]
        pd, sd = spec.price_decimals, spec.size_decimals
        return dumps({
            "action": "snapshot",
            "arg": self._arg(_BOOKS1, self._native[book.symbol]),
            "data": [{
                "asks": [[fixed(book.ask, pd), fixed(book.ask_size, sd)]],
                "bids": [[fixed(book.bid, pd), fixed(book.bid_size, sd)]],
                "checksum": 0,
                "seq": book.seq,
                "ts": str(book.ts_ms),
            }],
            "ts": snapshot.now_ms,
        })

    def _trade_frame(self, action: str, native: str, batch: Sequence[SimTrade], ts: int) -> str:
        spec = self._by_native[native]
        return dumps({
            "action": action,
            "arg": self._arg(_TRADE, native),
            "data": [
                {
                    "ts": str(t.ts_ms),
                    "price": fixed(t.price, spec.price_decimals),
                    "size": fixed(t.size, spec.size_decimals),
                    "side": "buy" if t.taker_buy else "sell",
                    "tradeId": str(t.trade_id),
                }
                for t in sorted(batch, key=lambda t: t.seq, reverse=True)
            ],
            "ts": ts,
        })

    def encode_trades(self, trades: Sequence[SimTrade]) -> list[Frame]:
        """One ``update`` frame per symbol, newest trade first."""
        by_native: dict[str, list[SimTrade]] = {}
        for t in trades:
            by_native.setdefault(self._native[t.symbol], []).append(t)
        return [
            self._trade_frame("update", native, batch, max(t.ts_ms for t in batch))
            for native, batch in by_native.items()
        ]

    def _snapshot_frames(self, channel: str, spec: SymbolSpec, snapshot: MarketSnapshot) -> list[str]:
        """What a (re)subscribe to ``channel`` of ``spec`` sends at once, after its ack."""
        if channel == _BOOKS1:
            book = snapshot.book(self._venue, spec.symbol)
            return [] if book is None else [self.encode_book(book, snapshot)]
        recent = [t for t in snapshot.trades if t.venue == self._venue and t.symbol == spec.symbol]
        if not recent:
            return []
        native = self._native[spec.symbol]
        return [self._trade_frame("snapshot", native, recent[-SNAPSHOT_TRADES:], snapshot.now_ms)]

    def _check(self, arg: object, op: str) -> tuple[str, dict[str, str], SymbolSpec] | str:
        """(topic, echoed arg, spec) of a valid arg, else the error frame answering it."""
        if not isinstance(arg, dict):
            return _error(_PARAM_ERROR, "Param error", op)
        inst_type, channel, inst_id = arg.get("instType"), arg.get("channel"), arg.get("instId")
        if not (isinstance(inst_type, str) and isinstance(channel, str) and isinstance(inst_id, str)) \
                or inst_type not in _INST_TYPES or channel not in _SERVED | _OTHER_CHANNELS \
                or not inst_id:
            return _error(_PARAM_ERROR, "Param error", op, arg)
        native = inst_id.upper()
        spec = self._by_native.get(native)
        if inst_type != _SPOT or channel not in _SERVED or spec is None:
            return _not_found(inst_type, channel, inst_id, op, arg)
        return f"{channel}:{native}", self._arg(channel, native), spec

    def _parse(self, message: Frame) -> tuple[str, str, list[object]] | str:
        """(text, op, args) of a well-formed request, else the error frame answering it."""
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            return _error(_UNRECOGNIZED, f"Unrecognized request:{text[:200]}")
        op = request.get("op") if isinstance(request, dict) else None
        if op not in _OPS:
            return _error(_UNRECOGNIZED, f"Unrecognized request:{text[:200]}")
        assert isinstance(request, dict) and isinstance(op, str)
        args = request.get("args")
        if not isinstance(args, list) or not args:
            return _error(_PARAM_ERROR, "Param error", op)
        if len(text.encode()) > MAX_REQUEST_BYTES:
            return _error(_PARAM_ERROR, f"Param error: request over {MAX_REQUEST_BYTES} bytes", op)
        return text, op, args

    def on_message(self, conn: ConnectionView, message: Frame, snapshot: MarketSnapshot) -> Reply:
        if message in ("ping", b"ping"):
            return Reply(frames=("pong",), app_ping=True)
        parsed = self._parse(message)
        if isinstance(parsed, str):
            rejected = self._topics_of(message)
            return Reply(frames=(parsed,), rejected=rejected)
        _, op, args = parsed
        frames: list[Frame] = []
        new: list[str] = []
        duplicates: list[str] = []
        gone: list[str] = []
        rejected_: list[str] = []
        for arg in args:
            checked = self._check(arg, op)
            if isinstance(checked, str):
                frames.append(checked)
                rejected_.append(self._label(arg))
                continue
            topic, echo, spec = checked
            frames.append(dumps({"event": op, "arg": echo}))
            if op == "unsubscribe":
                if topic in conn.topics:
                    conn.topics.discard(topic)
                    gone.append(topic)
                continue
            if topic in conn.topics:
                if topic not in new:
                    duplicates.append(topic)
            else:
                conn.topics.add(topic)
                new.append(topic)
            frames.extend(self._snapshot_frames(echo["channel"], spec, snapshot))
        return Reply(
            frames=tuple(frames),
            subscribed=tuple(new),
            unsubscribed=tuple(gone),
            duplicates=tuple(duplicates),
            rejected=tuple(rejected_),
        )

    @staticmethod
    def _label(arg: object) -> str:
        """A refused arg as a topic-like string, for the statistics."""
        if isinstance(arg, dict):
            return f"{arg.get('channel')}:{arg.get('instId')}"
        return str(arg)[:100]

    def _topics_of(self, message: Frame) -> tuple[str, ...]:
        """The args of a subscribe refused as a whole, as labels (none for other requests)."""
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            return ()
        if not isinstance(request, dict) or request.get("op") != "subscribe":
            return ()
        args = request.get("args")
        return tuple(self._label(a) for a in args) if isinstance(args, list) else ()

    def refuse(
        self, conn: ConnectionView, message: Frame, why: Refusal, snapshot: MarketSnapshot
    ) -> Reply:
        parsed = self._parse(message)
        if isinstance(parsed, str):  # on_message subscribed nothing then; not reached
            return Reply(frames=(parsed,))
        _, op, args = parsed
        frames: list[Frame] = []
        for arg in args:
            checked = self._check(arg, op)
            if isinstance(checked, str):
                frames.append(checked)
                continue
            topic, echo, _ = checked
            if topic in conn.topics:  # subscribed before this request: still acked
                frames.append(dumps({"event": op, "arg": echo}))
            elif why is Refusal.CAP:
                frames.append(_error(
                    _TOO_MANY, "request too many: channel limit of this connection reached", op, arg,
                ))
            else:
                frames.append(_not_found(echo["instType"], echo["channel"], echo["instId"], op, arg))
        return Reply(frames=tuple(frames))

    def malformed(self, conn: ConnectionView, n: int, snapshot: MarketSnapshot) -> Frame:
        books = [b for s in self._listed[:8] if (b := snapshot.book(self._venue, s.symbol))]
        kind = n % 3
        if not books:
            return truncated(dumps({"action": "snapshot", "arg": self._arg(_BOOKS1, "BTCUSDT"),
                                    "data": [], "ts": snapshot.now_ms}), n)
        book = books[n % len(books)]
        frame = orjson.loads(self.encode_book(book, snapshot))
        if kind == 0:
            return truncated(self.encode_book(book, snapshot), n)
        if kind == 1:
            del frame["data"][0]["asks"]
            return dumps(frame)
        return dumps({
            "action": "update",
            "arg": self._arg(_TRADE, self._native[book.symbol]),
            "data": [{"ts": str(book.ts_ms), "price": frame["data"][0]["bids"][0][0],
                      "size": frame["data"][0]["bids"][0][1], "tradeId": str(n + 1)}],
            "ts": snapshot.now_ms,
        })
