"""OKX v5 spot's wire format, simulated: REST discovery and the public WebSocket.

Pure (see ``wire.py``). What it follows, from OKX's v5 API documentation:

* ``GET /api/v5/public/instruments?instType=SPOT`` (optionally ``&instId=``) and
  ``GET /api/v5/market/tickers?instType=SPOT`` (and ``/api/v5/market/ticker?instId=``,
  ``/api/v5/public/time``), in the ``{"code":"0","msg":"","data":[...]}`` envelope with
  every number a string. Instruments carry the documented keys; ``state`` is ``live``
  or, for a symbol the market lists but halts, ``suspend``. Tickers give ``volCcy24h``
  (24 h volume in the quote currency for spot) and ``vol24h`` (in the base currency).
  Prices and sizes are written as OKX writes them: no trailing zeros (``"42220"``).
* WebSocket ``/ws/v5/public`` (the public URL is the whole endpoint): requests
  ``{"id":"1512","op":"subscribe"|"unsubscribe","args":[{"channel":..,"instId":..}]}``,
  ``id`` optional, at most 32 alphanumerics, echoed. Every arg is answered on its own:
  ``{"id":..,"event":"subscribe","arg":{..},"connId":..}``; errors are
  ``{"id":..,"event":"error","code":..,"msg":..,"connId":..}`` with the documented codes:
  60012 ``Invalid request: <the request>`` (not JSON, wrong shape), 60018 ``Wrong URL or
  channel:..,instId:.. doesn't exist...`` (unknown channel or instrument), 60019
  ``Invalid op``, 60014 ``Requests too frequent.`` ``connId`` is 8 hex digits.
* Heartbeat: the client sends the text ``ping`` and gets the text ``pong``; OKX sends
  no application pings of its own.
* ``bbo-tbt``: the current snapshot is pushed right after the ack (the "initial push"),
  then one snapshot per change, and the latest one again after about 60 s without a
  change, same ``seqId`` (``config.resend_unchanged_s``). Frames are
  ``{"arg":{"channel":"bbo-tbt","instId":..},"data":[{"asks":[[px,sz,"0",orders]],
  "bids":[[..]],"ts":"<ms>","seqId":<int>}]}``: levels are four strings, ``ts`` the time
  the push was triggered, ``seqId`` a JSON integer increasing per instrument.
* ``trades``: one trade per push, ``{"instId","tradeId","px","sz","side","ts","count",
  "source","seqId"}`` with ``side`` the taker's side, ``count`` and ``source`` strings,
  ``seqId`` an integer.
* Connection rules (``config``): closed 30 s after opening without a subscription; the
  args subscribed on one connection may total at most 64 KB (checked here, as a size,
  not a topic count: ``max_topics`` stays None); 480 subscribe/unsubscribe requests an
  hour per connection. ``{"event":"notice","code":"64008",..}`` comes 30 s before a
  service upgrade closes the connection (``shutdown_grace_s``). No forced cut after a
  fixed age is documented (``max_connection_age_s`` None).

Choices where the documentation is silent or the contract cannot say it:

* OKX closes a connection "if data has not been pushed for more than 30 seconds" and
  asks the client to ``ping`` after N < 30 s of silence; the simulator closes one that
  sent no ``ping`` for 30 s (``client_ping_timeout_s``), a little stricter, because the
  server's watchdog counts client pings, not pushes. It closes with the server's 1008;
  OKX's own close for it is seen as 4004 "No data received in 30s." (third-party logs).
* ``force_cut`` (a venue-side cut without notice) closes with that 4004 frame; the end
  of a ``64008`` grace closes with 1001 (seen in practice as a bare TCP close, 1006,
  which a close frame cannot carry).
* In a request mixing good and bad args the good ones are subscribed and each bad one
  gets its own 60018 error, in arg order; the initial ``bbo-tbt`` pushes follow the
  acks. Subscribing an arg already subscribed is acked again (counted as a duplicate).
  A suspended instrument can be subscribed (it exists) but pushes nothing.
* A subscribe that would take the connection's args over 64 KB, or over a configured
  ``max_topics``, is refused as a whole with 60013 ``Invalid args``; one refused by the
  simulator control gets a 60018 error per arg, as for an unknown instrument.
* Non-JSON text other than ``ping`` gets 60012; any op but subscribe/unsubscribe
  (``login`` included: not simulated) gets 60019; binary client messages are read as
  UTF-8 text. REST parameter errors answer HTTP 400 with ``50014`` (missing
  ``instType``), ``51000`` (bad ``instType``) or ``51001`` (unknown ``instId``).
* A malformed frame is, by turns, a ``bbo-tbt`` push cut short, a ``bbo-tbt`` push
  without ``asks`` and a ``trades`` push without ``px``.
"""

from __future__ import annotations

import collections
import re
import zlib
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
    truncated,
)

BOOK_CHANNEL = "bbo-tbt"
TRADE_CHANNEL = "trades"
#: "the total length of multiple channels cannot exceed 64 KB" on one connection
MAX_ARGS_BYTES = 64 * 1024
#: subscribe/unsubscribe/login requests per connection and hour
MAX_REQUESTS_PER_HOUR = 480
#: OKX's close code for a connection it finds idle (third-party logs)
CLOSE_NO_DATA = 4004
NOTICE_MSG = "The connection will soon be closed for a service upgrade. Please reconnect."

_HOUR_MS = 3_600_000
#: connections whose request times are remembered (oldest forgotten first)
_TRACKED_CONNECTIONS = 4096
_REQUEST_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_INST_TYPES = frozenset({"SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"})
_LIST_TIME_MS = "1606468572000"


def _number(value: float, decimals: int) -> str:
    """A decimal string as OKX writes it: ``decimals`` at most, no trailing zeros."""
    text = fixed(value, decimals)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _rest_error(status: int, code: str, msg: str) -> RestReply:
    return RestReply(status, orjson.dumps({"code": code, "msg": msg, "data": []}))


class OkxWire(WireDefaults):
    """OKX v5 spot as seen on the wire, for the symbols of one :class:`Market`.

    ``on_open`` and ``app_ping`` are :class:`WireDefaults`'.
    """

    name = "okx"
    ws_path = "/ws/v5/public"
    ws_url_suffix = "/ws/v5/public"
    config = SimVenueConfig(
        client_ping_timeout_s=30.0,
        subscribe_timeout_s=30.0,
        shutdown_grace_s=30.0,
        resend_unchanged_s=60.0,
    )

    def __init__(self, market: Market, *, venue: str = "okx") -> None:
        self._venue = venue
        self._listed = market.listed(venue)
        self._trading = tuple(s for s in self._listed if s.trading_on(venue))
        self._inst_id = {s.symbol: f"{s.base}-{s.quote}" for s in self._listed}
        self._by_inst_id = {self._inst_id[s.symbol]: s for s in self._listed}
        self._inst_code = {s.symbol: 1_000_000_000 + i for i, s in enumerate(self._listed)}
        #: conn_id -> market times (ms) of its recent subscribe/unsubscribe requests
        self._requests: collections.OrderedDict[str, collections.deque[int]] = (
            collections.OrderedDict()
        )

    # -- REST ------------------------------------------------------------------------

    def rest(
        self, method: str, path: str, query: Mapping[str, str], market: Market,
        endpoints: SimEndpoints,
    ) -> RestReply:
        if path not in ("/api/v5/public/instruments", "/api/v5/market/tickers",
                        "/api/v5/market/ticker", "/api/v5/public/time"):
            return NOT_FOUND
        if method != "GET":
            return METHOD_NOT_ALLOWED
        if path == "/api/v5/public/time":
            return self._ok([{"ts": str(market.snapshot.now_ms)}])
        if path == "/api/v5/market/ticker":
            inst_id = query.get("instId", "")
            if not inst_id:
                return _rest_error(400, "50014", "Parameter instId can not be empty.")
            spec = self._by_inst_id.get(inst_id)
            if spec is None or not spec.trading_on(self._venue):
                return _rest_error(400, "51001", "Instrument ID does not exist.")
            return self._ok([self._ticker(spec, market)])
        inst_type = query.get("instType", "")
        if not inst_type:
            return _rest_error(400, "50014", "Parameter instType can not be empty.")
        if inst_type not in _INST_TYPES:
            return _rest_error(400, "51000", "Parameter instType error")
        specs: Sequence[SymbolSpec] = self._listed if inst_type == "SPOT" else ()
        if "instId" in query:
            spec = self._by_inst_id.get(query["instId"])
            if spec is None or inst_type != "SPOT":
                return _rest_error(400, "51001", "Instrument ID does not exist.")
            specs = (spec,)
        if path == "/api/v5/public/instruments":
            return self._ok([self._instrument(s) for s in specs])
        return self._ok([self._ticker(s, market) for s in specs if s.trading_on(self._venue)])

    @staticmethod
    def _ok(data: list[dict[str, object]]) -> RestReply:
        return RestReply(200, orjson.dumps({"code": "0", "msg": "", "data": data}))

    def _instrument(self, spec: SymbolSpec) -> dict[str, object]:
        lot = _number(10.0 ** -spec.size_decimals, spec.size_decimals)
        return {
            "alias": "",
            "auctionEndTime": "",
            "baseCcy": spec.base,
            "category": "1",
            "ctMult": "",
            "ctType": "",
            "ctVal": "",
            "ctValCcy": "",
            "contTdSwTime": "",
            "expTime": "",
            "futureSettlement": False,
            "groupId": "1",
            "instFamily": "",
            "instId": self._inst_id[spec.symbol],
            "instType": "SPOT",
            "lever": "",
            "listTime": _LIST_TIME_MS,
            "lotSz": lot,
            "maxIcebergSz": "9999999999.0000000000000000",
            "maxLmtAmt": "1000000",
            "maxLmtSz": "9999999999",
            "maxMktAmt": "1000000",
            "maxMktSz": "",
            "maxStopSz": "",
            "maxTriggerSz": "9999999999.0000000000000000",
            "maxTwapSz": "9999999999.0000000000000000",
            "minSz": lot,
            "optType": "",
            "openType": "",
            "preMktSwTime": "",
            "quoteCcy": spec.quote,
            "tradeQuoteCcyList": [spec.quote],
            "settleCcy": "",
            "state": "live" if spec.trading_on(self._venue) else "suspend",
            "ruleType": "normal",
            "stk": "",
            "tickSz": _number(spec.tick, spec.price_decimals),
            "uly": "",
            "instIdCode": self._inst_code[spec.symbol],
            "instCategory": "1",
            "upcChg": [],
        }

    def _ticker(self, spec: SymbolSpec, market: Market) -> dict[str, object]:
        snapshot = market.snapshot
        book = snapshot.book(self._venue, spec.symbol)
        pd, sd = spec.price_decimals, spec.size_decimals
        if book is None:
            bid = ask = spec.price
            bid_size = ask_size = 0.0
        else:
            bid, ask, bid_size, ask_size = book.bid, book.ask, book.bid_size, book.ask_size
        last = round((bid + ask) / 2.0, pd)
        open_price = spec.price
        quote_volume = market.quote_volume_24h(self._venue, spec.symbol)
        return {
            "instType": "SPOT",
            "instId": self._inst_id[spec.symbol],
            "last": _number(last, pd),
            "lastSz": _number(bid_size, sd),
            "askPx": _number(ask, pd),
            "askSz": _number(ask_size, sd),
            "bidPx": _number(bid, pd),
            "bidSz": _number(bid_size, sd),
            "open24h": _number(open_price, pd),
            "high24h": _number(max(open_price, last) * 1.01, pd),
            "low24h": _number(min(open_price, last) * 0.99, pd),
            "volCcy24h": _number(quote_volume, 8),
            "vol24h": _number(quote_volume / open_price, 8),
            "sodUtc0": _number(open_price, pd),
            "sodUtc8": _number(open_price, pd),
            "ts": str(snapshot.now_ms),
        }

    # -- WebSocket: data -------------------------------------------------------------

    def book_topic(self, symbol: str) -> str:
        return f"{BOOK_CHANNEL}:{self._inst_id[symbol]}"

    def trade_topic(self, symbol: str) -> str:
        return f"{TRADE_CHANNEL}:{self._inst_id[symbol]}"

    def encode_book(self, book: TopOfBook, snapshot: MarketSnapshot) -> str:
        spec = self._by_inst_id[self._inst_id[book.symbol]]
        pd, sd = spec.price_decimals, spec.size_decimals
        # a few resting orders per level, the same for the same book
        orders = 1 + book.update_id % 7
        return dumps({
            "arg": {"channel": BOOK_CHANNEL, "instId": self._inst_id[book.symbol]},
            "data": [{
                "asks": [[_number(book.ask, pd), _number(book.ask_size, sd), "0", str(orders)]],
                "bids": [[_number(book.bid, pd), _number(book.bid_size, sd), "0",
                          str(1 + book.seq % 5)]],
                "ts": str(max(snapshot.now_ms, book.ts_ms)),
                "seqId": book.seq,
            }],
        })

    def encode_trades(self, trades: Sequence[SimTrade]) -> list[Frame]:
        """One push per trade, as the ``trades`` channel sends them."""
        frames: list[Frame] = []
        for t in trades:
            inst_id = self._inst_id[t.symbol]
            spec = self._by_inst_id[inst_id]
            frames.append(dumps({
                "arg": {"channel": TRADE_CHANNEL, "instId": inst_id},
                "data": [{
                    "instId": inst_id,
                    "tradeId": str(t.trade_id),
                    "px": _number(t.price, spec.price_decimals),
                    "sz": _number(t.size, spec.size_decimals),
                    "side": "buy" if t.taker_buy else "sell",
                    "ts": str(t.ts_ms),
                    "count": "1",
                    "source": "0",
                    "seqId": t.seq,
                }],
            }))
        return frames

    # -- WebSocket: requests ---------------------------------------------------------

    @staticmethod
    def conn_id(conn: ConnectionView) -> str:
        """OKX's ``connId``: 8 hex digits, stable for a connection."""
        return f"{zlib.crc32(conn.conn_id.encode()):08x}"

    def _error(self, conn: ConnectionView, request_id: str | None, code: str, msg: str) -> str:
        body: dict[str, object] = {} if request_id is None else {"id": request_id}
        body.update({"event": "error", "code": code, "msg": msg, "connId": self.conn_id(conn)})
        return dumps(body)

    def _ack(self, conn: ConnectionView, request_id: str | None, op: str,
             channel: str, inst_id: str) -> str:
        body: dict[str, object] = {} if request_id is None else {"id": request_id}
        body.update({
            "event": op,
            "arg": {"channel": channel, "instId": inst_id},
            "connId": self.conn_id(conn),
        })
        return dumps(body)

    @staticmethod
    def _text(message: Frame) -> str:
        if isinstance(message, bytes):
            return message.decode("utf-8", "replace")
        return message

    @staticmethod
    def _parse(text: str) -> tuple[str | None, str, list[tuple[str, str]]] | None:
        """(id, op, [(channel, instId)]) of a well-formed request, else None."""
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(request, dict):
            return None
        request_id = request.get("id")
        if request_id is not None and not (
            isinstance(request_id, str) and _REQUEST_ID.fullmatch(request_id)
        ):
            return None
        op = request.get("op")
        if not isinstance(op, str):
            return None
        args = request.get("args")
        pairs: list[tuple[str, str]] = []
        if op in ("subscribe", "unsubscribe"):
            if not isinstance(args, list) or not args:
                return None
            for arg in args:
                if not isinstance(arg, dict):
                    return None
                channel, inst_id = arg.get("channel"), arg.get("instId")
                if not isinstance(channel, str) or not isinstance(inst_id, str):
                    return None
                pairs.append((channel, inst_id))
        return request_id, op, pairs

    def _exists(self, channel: str, inst_id: str) -> bool:
        return channel in (BOOK_CHANNEL, TRADE_CHANNEL) and inst_id in self._by_inst_id

    def _missing(self, conn: ConnectionView, request_id: str | None,
                 channel: str, inst_id: str) -> str:
        return self._error(
            conn, request_id, "60018",
            f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist. Please use the "
            "correct URL, channel and parameters referring to API document.",
        )

    def _over_budget(self, conn: ConnectionView, now_ms: int) -> bool:
        """Count one request; True when it is beyond the 480 an hour."""
        times = self._requests.get(conn.conn_id)
        if times is None:
            times = self._requests[conn.conn_id] = collections.deque(maxlen=MAX_REQUESTS_PER_HOUR)
            while len(self._requests) > _TRACKED_CONNECTIONS:
                self._requests.popitem(last=False)
        else:
            self._requests.move_to_end(conn.conn_id)
        while times and times[0] <= now_ms - _HOUR_MS:
            times.popleft()
        if len(times) >= MAX_REQUESTS_PER_HOUR:
            return True
        times.append(now_ms)
        return False

    @staticmethod
    def args_bytes(topics: set[str] | frozenset[str]) -> int:
        """Length of the args behind ``topics``, as a client writes them."""
        total = 0
        for topic in topics:
            channel, _, inst_id = topic.partition(":")
            total += len(orjson.dumps({"channel": channel, "instId": inst_id}))
        return total

    def on_message(self, conn: ConnectionView, message: Frame, snapshot: MarketSnapshot) -> Reply:
        text = self._text(message)
        if text == "ping":
            return Reply(frames=("pong",), app_ping=True)
        parsed = self._parse(text)
        if parsed is None:
            return Reply(frames=(self._error(conn, None, "60012", f"Invalid request: {text[:512]}"),))
        request_id, op, pairs = parsed
        if op not in ("subscribe", "unsubscribe"):
            return Reply(frames=(self._error(conn, request_id, "60019", f"Invalid op: {op[:40]}"),))
        topics = [f"{channel}:{inst_id}" for channel, inst_id in pairs]
        if self._over_budget(conn, snapshot.now_ms):
            refused = tuple(dict.fromkeys(topics)) if op == "subscribe" else ()
            return Reply(frames=(self._error(conn, request_id, "60014", "Requests too frequent."),),
                         rejected=refused)
        frames: list[Frame] = []
        if op == "unsubscribe":
            gone: list[str] = []
            for (channel, inst_id), topic in zip(pairs, topics, strict=True):
                if not self._exists(channel, inst_id):
                    frames.append(self._missing(conn, request_id, channel, inst_id))
                    continue
                frames.append(self._ack(conn, request_id, op, channel, inst_id))
                if topic in conn.topics:
                    conn.topics.discard(topic)
                    gone.append(topic)
            return Reply(frames=tuple(frames), unsubscribed=tuple(gone))
        new: list[str] = []
        duplicates: list[str] = []
        rejected: list[str] = []
        for (channel, inst_id), topic in zip(pairs, topics, strict=True):
            if not self._exists(channel, inst_id):
                frames.append(self._missing(conn, request_id, channel, inst_id))
                rejected.append(topic)
                continue
            frames.append(self._ack(conn, request_id, op, channel, inst_id))
            if topic in conn.topics or topic in new:
                duplicates.append(topic)
            else:
                new.append(topic)
        if new and self.args_bytes(conn.topics | set(new)) > MAX_ARGS_BYTES:
            return Reply(frames=(self._refused(conn, request_id),), duplicates=tuple(duplicates),
                         rejected=tuple(dict.fromkeys((*rejected, *new))))
        conn.topics.update(new)
        for topic in new:
            channel, _, inst_id = topic.partition(":")
            if channel == BOOK_CHANNEL:
                book = snapshot.book(self._venue, self._by_inst_id[inst_id].symbol)
                if book is not None:
                    frames.append(self.encode_book(book, snapshot))
        return Reply(
            frames=tuple(frames),
            subscribed=tuple(new),
            duplicates=tuple(duplicates),
            rejected=tuple(rejected),
        )

    def _refused(self, conn: ConnectionView, request_id: str | None) -> str:
        return self._error(conn, request_id, "60013", "Invalid args")

    def refuse(
        self, conn: ConnectionView, message: Frame, why: Refusal, snapshot: MarketSnapshot
    ) -> Reply:
        parsed = self._parse(self._text(message))
        request_id, pairs = (parsed[0], parsed[2]) if parsed is not None else (None, [])
        if why is Refusal.CAP:
            return Reply(frames=(self._refused(conn, request_id),))
        return Reply(frames=tuple(
            self._missing(conn, request_id, channel, inst_id) for channel, inst_id in pairs
        ))

    # -- WebSocket: the venue's own notices and closes -------------------------------

    def notice(self, conn: ConnectionView, now_ms: int) -> Frame | None:
        return dumps({
            "event": "notice",
            "code": "64008",
            "msg": NOTICE_MSG,
            "connId": self.conn_id(conn),
        })

    def closing(self, conn: ConnectionView, why: Disconnect, now_ms: int) -> Closing:
        if why is Disconnect.AGE_LIMIT:
            return Closing(CLOSE_NO_DATA, "No data received in 30s.")
        return Closing(CLOSE_GOING_AWAY, "service upgrade")

    def malformed(self, conn: ConnectionView, n: int, snapshot: MarketSnapshot) -> Frame:
        books = [b for s in self._trading[:8] if (b := snapshot.book(self._venue, s.symbol))]
        if not books:
            return truncated(dumps({"arg": {"channel": BOOK_CHANNEL, "instId": "BTC-USDT"},
                                    "data": [{"ts": str(snapshot.now_ms)}]}), n)
        book = books[n % len(books)]
        frame = self.encode_book(book, snapshot)
        kind = n % 3
        if kind == 0:
            return truncated(frame, n)
        document = orjson.loads(frame)
        if kind == 1:
            del document["data"][0]["asks"]
            return dumps(document)
        inst_id = self._inst_id[book.symbol]
        return dumps({
            "arg": {"channel": TRADE_CHANNEL, "instId": inst_id},
            "data": [{
                "instId": inst_id,
                "tradeId": str(n + 1),
                "sz": "1",
                "side": "buy",
                "ts": str(snapshot.now_ms),
                "count": "1",
                "source": "0",
                "seqId": n + 1,
            }],
        })
