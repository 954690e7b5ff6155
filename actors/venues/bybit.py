"""Bybit v5 spot: codec for ``orderbook.1.<SYMBOL>`` and ``publicTrade.<SYMBOL>``, and discovery.

Pure, like every venue module: no trio, no clock, no I/O. Receive time is an argument.
A frame or REST payload that does not parse as Bybit documents it raises
:class:`~actors.venues.base.FrameError` naming what was wrong; nothing else escapes.

What Bybit documents, and how this module relies on it:

* The spot endpoint ``wss://stream.bybit.com/v5/public/spot`` is the whole URL: the
  WebSocket path is empty.
* A spot subscribe request carries at most 10 args, and one public connection's args
  may total at most 21,000 characters. Bybit documents no stream count per connection,
  so we cap it at 200 streams: at most about 6,000 characters of topics.
* No per-connection message rate is documented for public streams; we claim 4 a second,
  the same safe margin we keep under Binance's documented 5.
* The client sends ``{"req_id": .., "op": "ping"}`` every 20 s; public channels answer
  ``{"success": true, "ret_msg": "pong", .., "op": "ping"}``, private ones
  ``{"op": "pong", ..}``. Both become PONG.
* Level 1 books are pushed as snapshots every 10 ms and re-sent after 3 s without
  change with the same ``u`` (our ``seq``); ``u`` restarts at 1 after a service
  restart. ``ts`` is our ``venue_ts``. A side can be empty: that frame is DATA with no
  quote, detail "one-sided book".
* ``publicTrade`` messages carry a list of trades, up to 1024, each with taker side
  ``S`` ("Buy"/"Sell"), id ``i`` and fill time ``T``.

Discovery reads ``GET /v5/market/instruments-info?category=spot`` (status ``Trading``,
named from ``baseCoin``/``quoteCoin``) and ``GET /v5/market/tickers?category=spot``
(``turnover24h``, the 24 h quote volume).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import msgspec
import orjson

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues.base import FrameError, FrameKind, Parsed, RestRequest
from actors.venues.fields import FAST_DECLINED, LaxInt, Price, Size, fast_decoder
from actors.venues.fields import array as _list
from actors.venues.fields import asset as _coin
from actors.venues.fields import decimal as _decimal
from actors.venues.fields import field as _field
from actors.venues.fields import frame_errors as _frame_errors
from actors.venues.fields import integer as _integer
from actors.venues.fields import json_object as _object
from actors.venues.fields import load_object as _load_object
from actors.venues.fields import name as _name
from actors.venues.fields import sound as _sound
from actors.venues.fields import string as _string
from actors.venues.fields import to_float as _to_float

VENUE = "bybit"
#: (an enum member read through its class costs ~0.1 us in CPython 3.11: once, here)
_DATA = FrameKind.DATA

#: Bybit rejects a spot subscribe request with more than 10 args ("args size >10").
ARGS_PER_SUBSCRIBE = 10

_BOOK_TOPIC = "orderbook.1."
_TRADE_TOPIC = "publicTrade."
_TAKER_SIDES = MappingProxyType({"Buy": Side.BUY, "Sell": Side.SELL})


class _BookData(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    s: str
    b: list[tuple[Price, Size]]
    a: list[tuple[Price, Size]]
    u: LaxInt
    seq: Any = None


class _Book(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The hot frame, exactly: an ``orderbook.1.<symbol>`` push."""

    topic: str
    ts: LaxInt
    data: _BookData
    type: Any = None
    cts: Any = None


_decode_book = fast_decoder(_Book).decode

#: tells a trade frame from a book frame without decoding it (fields.py, "trade mark")
_TRADE_MARK = '"publicTrade.'
_TRADE_MARK_BYTES = _TRADE_MARK.encode()


class _TradeEntry(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    T: LaxInt
    s: str
    S: str
    v: Size
    p: Price
    i: str
    L: Any = None
    BT: Any = None
    seq: Any = None


class _Trades(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A ``publicTrade.<symbol>`` push."""

    topic: str
    data: list[_TradeEntry]
    type: Any = None
    ts: Any = None


_decode_trades = fast_decoder(_Trades).decode




class BybitCodec:
    """Sans-IO codec for one Bybit v5 public spot connection.

    Built with the symbol map of the current discovery (native symbol -> SymbolInfo);
    frames for other symbols parse as UNKNOWN_SYMBOL. Request ids (``req_id``) come
    from one counter inside the instance, starting at 1, shared by subscribe and ping
    messages, so the text of every message is deterministic.
    """

    name: str = VENUE
    max_streams_per_connection: int = 200
    max_messages_per_second: float = 4.0
    ping_interval: float | None = 20.0
    #: Bybit documents no forced cut of public connections
    max_connection_age_s: float | None = None
    waits_for_welcome: bool = False

    def __init__(self, symbols: Mapping[str, SymbolInfo]) -> None:
        self._symbols = dict(symbols)
        self._next_req_id = 1

    def ws_path(self, natives: Sequence[str]) -> str:
        return ""

    def subscribe_messages(self, natives: Sequence[str], *, trades: bool,
                           now_ms: int = 0) -> list[str | bytes]:
        """Subscribe requests for ``natives``, :data:`ARGS_PER_SUBSCRIBE` topics each.

        Raises ValueError when the topics exceed :attr:`max_streams_per_connection`:
        splitting symbols across connections is the caller's job.
        """
        return self._requests("subscribe", natives, trades)

    def unsubscribe_messages(self, natives: Sequence[str], *, trades: bool,
                             now_ms: int = 0) -> list[str | bytes]:
        return self._requests("unsubscribe", natives, trades)

    def _requests(self, op: str, natives: Sequence[str], trades: bool) -> list[str | bytes]:
        topics: list[str] = []
        for native in natives:
            topics.append(f"{_BOOK_TOPIC}{native}")
            if trades:
                topics.append(f"{_TRADE_TOPIC}{native}")
        if len(topics) > self.max_streams_per_connection:
            raise ValueError(
                f"{len(topics)} topics exceed our cap of {self.max_streams_per_connection} "
                "per Bybit connection"
            )
        messages: list[str | bytes] = []
        for start in range(0, len(topics), ARGS_PER_SUBSCRIBE):
            chunk = topics[start : start + ARGS_PER_SUBSCRIBE]
            request = {"req_id": self._take_req_id(), "op": op, "args": chunk}
            messages.append(orjson.dumps(request).decode())
        return messages

    def ping_message(self, now_ms: int) -> str | None:
        return orjson.dumps({"req_id": self._take_req_id(), "op": "ping"}).decode()

    def parse(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """Classify one frame; ``recv_ts`` (ns) is stamped on the records it carries.

        Error handling: raises FrameError, and only FrameError, when the frame is not
        JSON, not an object, of an unknown shape, or misses or mistypes a field.
        """
        if (_TRADE_MARK in frame) if type(frame) is str else (_TRADE_MARK_BYTES in frame):
            return self._fast_trades(frame, recv_ts)
        try:
            m = _decode_book(frame)
        except FAST_DECLINED:
            return self.parse_strict(frame, recv_ts)
        d = m.data
        info = self._symbols.get(d.s)
        if (info is None or not m.topic.startswith(_BOOK_TOPIC) or type(m.ts) is not int
                or type(d.u) is not int or not d.b or not d.a):
            return self.parse_strict(frame, recv_ts)
        (bid, bid_size), (ask, ask_size) = d.b[0], d.a[0]
        quote = Quote(VENUE, info.symbol, bid, bid_size, ask, ask_size, m.ts, recv_ts, d.u)
        return Parsed(_DATA, (quote,))

    def _fast_trades(self, frame: str | bytes, recv_ts: int) -> Parsed:
        try:
            m = _decode_trades(frame)
        except FAST_DECLINED:
            return self.parse_strict(frame, recv_ts)
        if not m.topic.startswith(_TRADE_TOPIC) or not m.data:
            return self.parse_strict(frame, recv_ts)
        trades = []
        for e in m.data:
            info = self._symbols.get(e.s)
            side = _TAKER_SIDES.get(e.S)
            if info is None or side is None or type(e.T) is not int:
                return self.parse_strict(frame, recv_ts)
            trades.append(Trade(VENUE, info.symbol, e.p, e.v, side, e.T, recv_ts, e.i))
        return Parsed(_DATA, tuple(trades))

    def parse_strict(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """The reference path for every frame: :meth:`parse` gives the same result for
        the frames it takes itself (``tests/test_codec_fast.py``)."""
        with _frame_errors("malformed frame"):
            return _sound(self._classify(_load_object(frame), recv_ts))

    def _take_req_id(self) -> str:
        req_id = str(self._next_req_id)
        self._next_req_id += 1
        return req_id

    def _classify(self, message: dict[str, Any], recv_ts: int) -> Parsed:
        if "topic" in message:
            topic = _string(message, "topic")
            if topic.startswith(_BOOK_TOPIC):
                return self._book(message, recv_ts)
            if topic.startswith(_TRADE_TOPIC):
                return self._trades(message, recv_ts)
            raise FrameError(f"unexpected topic {topic[:60]!r}")
        if "op" in message:
            return _control(message, _string(message, "op"))
        raise FrameError(f"unrecognised frame with keys {sorted(message)[:8]}")

    def _book(self, message: dict[str, Any], recv_ts: int) -> Parsed:
        data = _object(_field(message, "data"), "data")
        native = _string(data, "s")
        info = self._symbols.get(native)
        if info is None:
            return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
        bids = _list(data, "b")
        asks = _list(data, "a")
        seq = _integer(data, "u")
        venue_ts = _integer(message, "ts")
        if not bids or not asks:
            return Parsed(FrameKind.DATA, detail="one-sided book")
        bid, bid_size = _level(bids[0], "b[0]")
        ask, ask_size = _level(asks[0], "a[0]")
        quote = Quote(
            venue=VENUE,
            symbol=info.symbol,
            bid=bid,
            bid_size=bid_size,
            ask=ask,
            ask_size=ask_size,
            venue_ts=venue_ts,
            recv_ts=recv_ts,
            seq=seq,
        )
        return Parsed(FrameKind.DATA, records=(quote,))

    def _trades(self, message: dict[str, Any], recv_ts: int) -> Parsed:
        records: list[Trade] = []
        for index, entry in enumerate(_list(message, "data")):
            item = _object(entry, f"data[{index}]")
            native = _string(item, "s")
            info = self._symbols.get(native)
            if info is None:
                return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
            taker = _string(item, "S")
            side = _TAKER_SIDES.get(taker)
            if side is None:
                raise FrameError(f"field 'S': {taker[:20]!r} is neither 'Buy' nor 'Sell'")
            records.append(
                Trade(
                    venue=VENUE,
                    symbol=info.symbol,
                    price=_decimal(item, "p"),
                    size=_decimal(item, "v"),
                    side=side,
                    venue_ts=_integer(item, "T"),
                    recv_ts=recv_ts,
                    trade_id=_string(item, "i"),
                )
            )
        return Parsed(FrameKind.DATA, records=tuple(records))


def _control(message: dict[str, Any], op: str) -> Parsed:
    """Acks, errors and pongs: ``{"success": .., "ret_msg": .., "req_id": .., "op": ..}``."""
    req_id = str(message.get("req_id", ""))
    if op == "pong" or (op == "ping" and message.get("ret_msg") == "pong"):
        return Parsed(FrameKind.PONG, detail=req_id)
    success = _field(message, "success")
    if not isinstance(success, bool):
        raise FrameError(f"field 'success': expected a boolean, got {type(success).__name__}")
    if not success:
        reason = message.get("ret_msg", "")
        return Parsed(FrameKind.ERROR, detail=f"{op} failed: {reason!r} (req_id {req_id!r})")
    if op in ("subscribe", "unsubscribe"):
        return Parsed(FrameKind.ACK, detail=req_id)
    raise FrameError(f"unexpected op {op[:20]!r}")


def discovery_requests() -> tuple[RestRequest, RestRequest]:
    """(spot instruments, spot 24 h tickers). Spot instruments are not paginated."""
    return (
        RestRequest("/v5/market/instruments-info", {"category": "spot"}),
        RestRequest("/v5/market/tickers", {"category": "spot"}),
    )


def parse_instruments(body: bytes, aliases: Mapping[str, str]) -> list[SymbolInfo]:
    """Instruments in status Trading, with aliased, upper-case base and quote coins.

    ``aliases`` maps an upper-case coin code to the one we use (e.g. ``{"XBT": "BTC"}``).
    Raises FrameError on an error payload (``retCode`` not 0) or a malformed one.
    """
    with _frame_errors("malformed instruments-info"):
        infos: list[SymbolInfo] = []
        for index, entry in enumerate(_result_list(body, "instruments-info")):
            item = _object(entry, f"list[{index}]")
            if _string(item, "status") != "Trading":
                continue
            infos.append(
                SymbolInfo(
                    venue=VENUE,
                    native=_name(item, "symbol"),
                    base=_coin(_name(item, "baseCoin"), aliases),
                    quote=_coin(_name(item, "quoteCoin"), aliases),
                )
            )
        return infos


def parse_volumes(body: bytes) -> dict[str, float]:
    """24 h quote volume (``turnover24h``) per native symbol. Raises FrameError."""
    with _frame_errors("malformed tickers"):
        volumes: dict[str, float] = {}
        for index, entry in enumerate(_result_list(body, "tickers")):
            item = _object(entry, f"list[{index}]")
            volumes[_name(item, "symbol")] = _decimal(item, "turnover24h")
        return volumes


def _result_list(body: bytes, endpoint: str) -> list[Any]:
    """``result.list`` of a v5 REST envelope; FrameError when ``retCode`` is not 0."""
    document = _load_object(body)
    code = _integer(document, "retCode")
    if code != 0:
        raise FrameError(f"{endpoint} failed: retCode {code}: {document.get('retMsg')!r}")
    return _list(_object(_field(document, "result"), "result"), "list")



def _level(value: object, name: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) < 2:
        raise FrameError(f"field {name!r}: expected [price, size]")
    return _to_float(value[0], f"{name}[0]"), _to_float(value[1], f"{name}[1]")


