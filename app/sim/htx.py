"""HTX (Huobi) spot's wire format, simulated: REST discovery and the market-data WebSocket.

Pure (see ``wire.py``). What it follows, from HTX's spot API reference ("Websocket
Market Data", "Reference Data", "Market Data"):

* ``GET /v2/settings/common/symbols`` (``sc``, ``bc``/``qc``, ``state``, ``te``, the
  precisions ``tpp``/``tap``/``ttp``/``fp``...; ``ts`` asks for the changes since then,
  ``[]`` here as listings never change; top-level ``"ts"`` is a string and ``"full"`` 1)
  and ``GET /market/tickers`` (``vol`` is the 24 h value in the quote currency,
  ``amount`` in the base one; every number a JSON number), in the
  ``{"status":"ok",..,"data":[..]}`` envelope. ``GET /v1/common/timestamp`` too.
  A listed symbol that does not trade has ``state`` ``"suspend"`` and ``te`` false.
* WebSocket ``/ws`` (``wss://api.huobi.pro/ws`` is the whole documented URL, so
  ``ws_url`` ends in ``/ws`` and the client appends nothing). Topics
  ``market.<symbol>.bbo`` and ``market.<symbol>.trade.detail``, symbols in lower case.
* **Every server frame is one gzip member sent as a binary message**: acks, errors,
  pings, pongs and data alike. Client messages are plain JSON text.
* Heartbeat: the server sends ``{"ping": <ms>}`` every 5 s; after two consecutive pings
  without at least one *matching* ``{"pong": <same integer>}`` the connection is closed
  right before the next ping (``config``: ``app_ping_interval_s=5``,
  ``max_missed_pongs=2``). A pong that is not an integer is answered with the
  documented ``{"ts":..,"status":"error","err-code":"bad-request","err-msg":"invalid ping"}``.
* ``{"sub": <topic>, "id": <id>}`` -> ``{"id":..,"status":"ok","subbed":<topic>,"ts":..}``;
  ``{"unsub": ..}`` -> ``{"id":..,"status":"ok","unsubbed":..,"ts":..}``. The newer
  reference also shows ``"sub"`` with a list of topics; each topic gets its own ack.
  Errors are ``{"id":..,"status":"error","err-code":"bad-request","err-msg":..,"ts":..}``
  with the messages of the documented table: ``invalid topic <topic>`` (unknown symbol
  or channel, as in the documented example), ``symbol trade not open now`` (listed, not
  trading), ``unsub with not subbed topic``, ``not json string``, ``429 too many request``.
* ``bbo`` ticks (``seqId``, ``ask``, ``askSize``, ``bid``, ``bidSize``, ``quoteTime``,
  ``symbol``; prices and sizes are JSON numbers in plain decimal notation, ``seqId`` the
  venue-wide sequence) and ``trade.detail`` ticks (``id`` the transaction id, ``ts``, and
  ``data`` of ``{"id","ts","tradeId","amount","price","direction"}``, the obsolete
  ``id`` as a huge float in exponent notation as in the documented example).
* Pull requests ``{"req": <topic>, "id": ..}``: one per 100 ms per connection (the one
  documented WebSocket rate limit; faster ones get ``429 too many request``, counted on
  the market clock). ``req`` of ``trade.detail`` answers
  ``{"id","status":"ok","rep":<topic>,"ts","data":[recent trades, newest first]}``.

Choices where the documentation is silent: no cap on topics per connection (HTX only
advises against "too many topics"), no incoming message rate beyond ``req``'s, no
subscribe deadline, no 24 h cut and no maintenance notice (``notice`` is None); a
subscribe over a cap the test configures is answered ``429 too many request``, and one
refused by the simulator control ``invalid topic <topic>``, one error per topic.
Subscribing to a topic already subscribed is acknowledged again (counted as a
duplicate). No book is sent on subscribe: ``bbo`` is tick by tick, on change. A pong
with an integer matching no outstanding ping is ignored (it does not count); a client's
own ``{"ping": n}`` is answered ``{"pong": n}`` (older references describe two-way
heartbeats). A message with no ``sub``/``unsub``/``req``/``ping``/``pong`` gets
``invalid topic``. ``req`` of a ``bbo`` topic (not documented) gets ``invalid topic``.
The forced cut and the maintenance close are plain 1001 closes. The gzip members carry
mtime 0 and the Unix OS byte, like the documented frame. Malformed frames, in turn:
gzip cut short, gzip of truncated JSON, gzip of a ``bbo`` tick without ``seqId``.

State: the wire remembers, per connection id, its last few pings and its last ``req``
(for pong matching and the ``req`` rate), in an LRU bounded to
:data:`MAX_TRACKED_CONNECTIONS`; a connection it has forgotten has any integer pong
accepted.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeGuard

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
    json_reply,
    truncated,
)

#: connections whose pings and pull requests are remembered (least recently used go)
MAX_TRACKED_CONNECTIONS = 10_000
#: pings remembered per connection for matching pongs
_PINGS_KEPT = 4
#: the documented limit of pull requests (``req``) on one connection
REQ_INTERVAL_MS = 100
#: trades a ``req`` of ``trade.detail`` returns at most
_REQ_TRADES = 100
#: first transaction id (``tick.id``) of trade pushes; the market's trade seq is added
_TRANSACTION_BASE = 137_000_000_000

_PREFIX = "market."
_BBO = ".bbo"
_TRADE = ".trade.detail"
_PATHS = ("/v2/settings/common/symbols", "/market/tickers", "/v1/common/timestamp")
_BAD_REQUEST = "bad-request"
_TOO_MANY = "429 too many request"
_NOT_OPEN = "symbol trade not open now"
_NOT_SUBBED = "unsub with not subbed topic"
_NOT_JSON = "not json string"
_INVALID_PING = "invalid ping"


@dataclass(slots=True)
class _Tracked:
    """What the wire remembers of one connection."""

    pings: tuple[int, ...] = ()
    last_req_ms: int | None = None


def gzip_member(text: str) -> bytes:
    """``text`` as one gzip member: mtime 0, best compression, OS byte Unix (as HTX sends)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(text.encode()) + compressor.flush()


def _number(value: float, decimals: int) -> str:
    """A JSON number in plain decimal notation, at most ``decimals`` places, no trailing zeros."""
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _native(spec: SymbolSpec) -> str:
    return f"{spec.base}{spec.quote}".lower()


def _is_long(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _request_id(request: Mapping[str, object]) -> object:
    """The client's ``id`` when it is one HTX echoes (a string or an integer), else None."""
    value = request.get("id")
    if isinstance(value, str) or _is_long(value):
        return value
    return None


class HtxWire(WireDefaults):
    """HTX spot as seen on the wire, for the symbols of one :class:`Market`.

    ``on_open`` and ``notice`` are :class:`WireDefaults`' (no welcome, no notice).
    """

    name = "htx"
    ws_path = "/ws"
    ws_url_suffix = "/ws"
    config = SimVenueConfig(app_ping_interval_s=5.0, max_missed_pongs=2)

    def __init__(self, market: Market, *, venue: str = "htx") -> None:
        self._venue = venue
        self._listed = market.listed(venue)
        self._trading = tuple(s for s in self._listed if s.trading_on(venue))
        self._by_native = {_native(s): s for s in self._listed}
        self._native = {s.symbol: _native(s) for s in self._listed}
        self._spec = {s.symbol: s for s in self._listed}
        self._tracked: OrderedDict[str, _Tracked] = OrderedDict()

    # -- REST ------------------------------------------------------------------------

    def rest(
        self, method: str, path: str, query: Mapping[str, str], market: Market,
        endpoints: SimEndpoints,
    ) -> RestReply:
        if path not in _PATHS:
            return NOT_FOUND
        if method != "GET":
            return METHOD_NOT_ALLOWED
        now_ms = market.snapshot.now_ms
        if path == "/v1/common/timestamp":
            return json_reply({"status": "ok", "data": now_ms})
        if path == "/v2/settings/common/symbols":
            since = query.get("ts")
            if since is not None and not since.isdigit():
                return json_reply({"status": "error", "err-code": "invalid-parameter",
                                   "err-msg": "invalid ts", "data": None})
            data = [] if since is not None else [self._symbol_info(s) for s in self._listed]
            return json_reply({"status": "ok", "data": data, "ts": str(now_ms),
                               "full": 0 if since is not None else 1})
        return json_reply({
            "status": "ok",
            "ts": now_ms,
            "data": [self._ticker(s, market) for s in self._trading],
        })

    def _symbol_info(self, spec: SymbolSpec) -> dict[str, object]:
        trading = spec.trading_on(self._venue)
        return {
            "tags": "",
            "state": "online" if trading else "suspend",
            "wr": "1.5",
            "sc": _native(spec),
            "p": [],
            "bcdn": spec.base,
            "qcdn": spec.quote,
            "elr": None,
            "tpp": spec.price_decimals,
            "tap": spec.size_decimals,
            "fp": 8,
            "smlr": None,
            "flr": None,
            "whe": False,
            "cd": False,
            "te": trading,
            "sp": "main",
            "d": None,
            "bc": spec.base.lower(),
            "qc": spec.quote.lower(),
            "toa": 1_514_779_200_000,
            "ttp": 8,
            "w": 1_000_000,
            "lr": None,
            "dn": f"{spec.base}/{spec.quote}",
        }

    def _ticker(self, spec: SymbolSpec, market: Market) -> dict[str, object]:
        book = market.snapshot.book(self._venue, spec.symbol)
        pd, sd = spec.price_decimals, spec.size_decimals
        open_price = spec.price
        if book is None:
            bid = ask = open_price
            bid_size = ask_size = 0.0
        else:
            bid, ask, bid_size, ask_size = book.bid, book.ask, book.bid_size, book.ask_size
        close = round((bid + ask) / 2.0, pd)
        vol = market.quote_volume_24h(self._venue, spec.symbol)
        return {
            "symbol": _native(spec),
            "open": round(open_price, pd),
            "high": round(max(open_price, close) * 1.01, pd),
            "low": round(min(open_price, close) * 0.99, pd),
            "close": close,
            "amount": round(vol / open_price, sd),
            "vol": round(vol, 8),
            "count": int(vol / (open_price * 20.0)),
            "bid": bid,
            "bidSize": bid_size,
            "ask": ask,
            "askSize": ask_size,
        }

    # -- topics and data frames ------------------------------------------------------

    def book_topic(self, symbol: str) -> str:
        return f"{_PREFIX}{self._native[symbol]}{_BBO}"

    def trade_topic(self, symbol: str) -> str:
        return f"{_PREFIX}{self._native[symbol]}{_TRADE}"

    def _bbo_text(self, book: TopOfBook, now_ms: int, *, seq_id: bool = True) -> str:
        spec = self._spec[book.symbol]
        native = self._native[book.symbol]
        pd, sd = spec.price_decimals, spec.size_decimals
        seq = f'"seqId":{book.seq},' if seq_id else ""
        return (
            f'{{"ch":"{_PREFIX}{native}{_BBO}","ts":{max(now_ms, book.ts_ms)},"tick":{{'
            f'{seq}"ask":{_number(book.ask, pd)},"askSize":{_number(book.ask_size, sd)},'
            f'"bid":{_number(book.bid, pd)},"bidSize":{_number(book.bid_size, sd)},'
            f'"quoteTime":{book.ts_ms},"symbol":"{native}"}}}}'
        )

    def encode_book(self, book: TopOfBook, snapshot: MarketSnapshot) -> bytes:
        return gzip_member(self._bbo_text(book, snapshot.now_ms))

    def _trade_text(self, trade: SimTrade) -> str:
        spec = self._spec[trade.symbol]
        transaction = _TRANSACTION_BASE + trade.seq
        # the obsolete per-trade id: the transaction id scaled up, a float past 2**63
        legacy = repr(float(transaction * 10**15 + trade.trade_id % 10**15))
        return (
            f'{{"id":{legacy},"ts":{trade.ts_ms},"tradeId":{trade.trade_id},'
            f'"amount":{_number(trade.size, spec.size_decimals)},'
            f'"price":{_number(trade.price, spec.price_decimals)},'
            f'"direction":"{"buy" if trade.taker_buy else "sell"}"}}'
        )

    def encode_trades(self, trades: Sequence[SimTrade]) -> list[Frame]:
        """One push per symbol, its trades in matching order."""
        by_symbol: dict[str, list[SimTrade]] = {}
        for trade in trades:
            by_symbol.setdefault(trade.symbol, []).append(trade)
        frames: list[Frame] = []
        for symbol, batch in by_symbol.items():
            latest = max(t.ts_ms for t in batch)
            data = ",".join(self._trade_text(t) for t in batch)
            frames.append(gzip_member(
                f'{{"ch":"{self.trade_topic(symbol)}","ts":{latest},"tick":{{'
                f'"id":{_TRANSACTION_BASE + batch[-1].seq},"ts":{latest},"data":[{data}]}}}}'
            ))
        return frames

    # -- requests --------------------------------------------------------------------

    def on_message(self, conn: ConnectionView, message: Frame, snapshot: MarketSnapshot) -> Reply:
        now_ms = snapshot.now_ms
        request = _load(message)
        if request is None:
            return Reply(frames=(_error(None, _NOT_JSON, now_ms),))
        request_id = _request_id(request)
        if "pong" in request:
            value = request["pong"]
            if not _is_long(value):
                return Reply(frames=(_error(None, _INVALID_PING, now_ms),))
            return Reply(app_pong=self._matches(conn, value))
        if "ping" in request:
            value = request["ping"]
            if not _is_long(value):
                return Reply(frames=(_error(None, _INVALID_PING, now_ms),))
            return Reply(frames=(gzip_member(dumps({"pong": value})),), app_ping=True)
        if "sub" in request:
            return self._subscribe(conn, request, request_id, now_ms, None)
        if "unsub" in request:
            return self._unsubscribe(conn, request, request_id, now_ms)
        if "req" in request:
            return self._pull(conn, request, request_id, snapshot)
        return Reply(frames=(_error(request_id, "invalid topic", now_ms),))

    def refuse(
        self, conn: ConnectionView, message: Frame, why: Refusal, snapshot: MarketSnapshot
    ) -> Reply:
        request = _load(message) or {}
        return self._subscribe(conn, request, _request_id(request), snapshot.now_ms, why)

    def _check(self, topic: str) -> str | None:
        """Why ``topic`` cannot be subscribed, in HTX's words; None when it can."""
        if topic.startswith(_PREFIX):
            for suffix in (_BBO, _TRADE):
                if topic.endswith(suffix):
                    spec = self._by_native.get(topic[len(_PREFIX):-len(suffix)])
                    if spec is None:
                        break
                    return None if spec.trading_on(self._venue) else _NOT_OPEN
        return f"invalid topic {topic}"

    def _subscribe(
        self, conn: ConnectionView, request: Mapping[str, object], request_id: object,
        now_ms: int, refusal: Refusal | None,
    ) -> Reply:
        """Acks and errors for each topic of a ``sub``; with ``refusal``, refuse the new ones."""
        topics = _topics(request.get("sub"))
        if not topics:
            return Reply(frames=(_error(request_id, "invalid topic", now_ms),))
        frames: list[Frame] = []
        new: list[str] = []
        duplicates: list[str] = []
        rejected: list[str] = []
        for topic in topics:
            problem = self._check(topic)
            if problem is None and topic in conn.topics:
                duplicates.append(topic)
            elif problem is None and refusal is not None:
                problem = _TOO_MANY if refusal is Refusal.CAP else f"invalid topic {topic}"
            elif problem is None:
                new.append(topic)
            if problem is None:
                frames.append(_ok(request_id, "subbed", topic, now_ms))
            else:
                rejected.append(topic)
                frames.append(_error(request_id, problem, now_ms))
        conn.topics.update(new)
        return Reply(frames=tuple(frames), subscribed=tuple(new), duplicates=tuple(duplicates),
                     rejected=tuple(rejected) if refusal is None else ())

    def _unsubscribe(
        self, conn: ConnectionView, request: Mapping[str, object], request_id: object, now_ms: int
    ) -> Reply:
        topics = _topics(request.get("unsub"))
        if not topics:
            return Reply(frames=(_error(request_id, "invalid topic", now_ms),))
        frames: list[Frame] = []
        gone: list[str] = []
        for topic in topics:
            problem = self._check(topic)
            if problem is None and topic not in conn.topics:
                problem = _NOT_SUBBED
            if problem is None:
                gone.append(topic)
                frames.append(_ok(request_id, "unsubbed", topic, now_ms))
            else:
                frames.append(_error(request_id, problem, now_ms))
        conn.topics.difference_update(gone)
        return Reply(frames=tuple(frames), unsubscribed=tuple(gone))

    def _pull(
        self, conn: ConnectionView, request: Mapping[str, object], request_id: object,
        snapshot: MarketSnapshot,
    ) -> Reply:
        now_ms = snapshot.now_ms
        tracked = self._track(conn)
        if tracked.last_req_ms is not None and now_ms - tracked.last_req_ms < REQ_INTERVAL_MS:
            return Reply(frames=(_error(request_id, _TOO_MANY, now_ms),))
        tracked.last_req_ms = now_ms
        topic = request.get("req")
        if not isinstance(topic, str):
            return Reply(frames=(_error(request_id, "invalid topic", now_ms),))
        problem = self._check(topic)
        if problem is None and not topic.endswith(_TRADE):
            problem = f"invalid topic {topic}"  # no pull request is documented for bbo
        if problem is not None:
            return Reply(frames=(_error(request_id, problem, now_ms),))
        symbol = self._by_native[topic[len(_PREFIX):-len(_TRADE)]].symbol
        recent = [t for t in reversed(snapshot.trades)
                  if t.venue == self._venue and t.symbol == symbol][:_REQ_TRADES]
        head = f'{{"id":{dumps(request_id)},' if request_id is not None else "{"
        data = ",".join(self._trade_text(t) for t in recent)
        return Reply(frames=(gzip_member(
            f'{head}"status":"ok","rep":{dumps(topic)},"ts":{now_ms},"data":[{data}]}}'
        ),))

    # -- heartbeats ------------------------------------------------------------------

    def _track(self, conn: ConnectionView) -> _Tracked:
        tracked = self._tracked.get(conn.conn_id)
        if tracked is None:
            tracked = self._tracked[conn.conn_id] = _Tracked()
            while len(self._tracked) > MAX_TRACKED_CONNECTIONS:
                self._tracked.popitem(last=False)
        else:
            self._tracked.move_to_end(conn.conn_id)
        return tracked

    def _matches(self, conn: ConnectionView, value: int) -> bool:
        """Whether ``value`` answers one of the pings sent to ``conn`` (any, if forgotten)."""
        tracked = self._tracked.get(conn.conn_id)
        if tracked is None:
            return True
        if value not in tracked.pings:
            return False
        tracked.pings = ()
        return True

    def app_ping(self, conn: ConnectionView, now_ms: int) -> Frame | None:
        tracked = self._track(conn)
        tracked.pings = (*tracked.pings, now_ms)[-_PINGS_KEPT:]
        return gzip_member(dumps({"ping": now_ms}))

    def closing(self, conn: ConnectionView, why: Disconnect, now_ms: int) -> Closing:
        if why is Disconnect.AGE_LIMIT:
            return Closing(CLOSE_GOING_AWAY, "connection closed by server")
        return Closing(CLOSE_GOING_AWAY, "server maintenance")

    def malformed(self, conn: ConnectionView, n: int, snapshot: MarketSnapshot) -> Frame:
        books = [b for s in self._trading[:8] if (b := snapshot.book(self._venue, s.symbol))]
        if not books:
            return gzip_member(truncated(dumps({"ch": "market.btcusdt.bbo", "ts": n}), n))
        book = books[n % len(books)]
        kind = n % 3
        if kind == 0:  # gzip bytes cut short
            member = gzip_member(self._bbo_text(book, snapshot.now_ms))
            return member[: 10 + (7 * n) % (len(member) - 11)]
        if kind == 1:  # complete gzip of JSON cut short
            return gzip_member(truncated(self._bbo_text(book, snapshot.now_ms), n))
        return gzip_member(self._bbo_text(book, snapshot.now_ms, seq_id=False))


def _load(message: Frame) -> dict[str, object] | None:
    """A client message as a JSON object, or None (HTX: ``not json string``)."""
    try:
        value = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _topics(value: object) -> tuple[str, ...]:
    """The topics of ``sub``/``unsub``: one string or a list of them; () when neither."""
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        return tuple(dict.fromkeys(value))
    return ()


def _ok(request_id: object, verb: str, topic: str, now_ms: int) -> bytes:
    body: dict[str, object] = {} if request_id is None else {"id": request_id}
    body.update({"status": "ok", verb: topic, "ts": now_ms})
    return gzip_member(dumps(body))


def _error(request_id: object, message: str, now_ms: int) -> bytes:
    if request_id is None:
        body: dict[str, object] = {"ts": now_ms, "status": "error", "err-code": _BAD_REQUEST,
                                   "err-msg": message}
    else:
        body = {"id": request_id, "status": "error", "err-code": _BAD_REQUEST,
                "err-msg": message, "ts": now_ms}
    return gzip_member(dumps(body))
