"""Binance spot: the codec for ``<symbol>@bookTicker`` and ``<symbol>@trade``, and discovery.

Pure, like every venue module: no trio, no clock, no I/O. Receive time is an argument.
A frame or REST payload that does not parse as Binance documents it raises
:class:`~actors.venues.base.FrameError` naming what was wrong; nothing else escapes.

What Binance documents, and how this module relies on it:

* One connection carries at most 1024 streams and accepts 5 incoming messages a second,
  WebSocket pings and pongs included, so we subscribe 100 streams per message and claim
  only 4 messages a second.
* The server sends a WebSocket ping frame every 20 s and the WebSocket library answers
  it: there is no application-level ping.
* We connect to ``/ws`` (raw payloads) and subscribe with ``SUBSCRIBE`` messages whose
  stream names are lower case. The combined-stream wrapper
  ``{"stream": ..., "data": ...}`` is accepted as well.
* A ``bookTicker`` payload carries the book update id ``u`` (our ``seq``) but no event
  time, so its ``venue_ts`` is 0.
* A ``trade`` payload's ``m`` is true when the buyer is the maker: the taker sold.
* A ``serverShutdown`` event precedes maintenance; it becomes a NOTICE.

Discovery reads ``GET /api/v3/exchangeInfo`` (symbols in status ``TRADING``, named from
``baseAsset``/``quoteAsset``) and ``GET /api/v3/ticker/24hr`` (24 h ``quoteVolume``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import orjson

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues.base import FrameError, FrameKind, Parsed, RestRequest
from actors.venues.fields import FAST_DECLINED, LaxInt, Price, Size, decode_first, fast_decoder
from actors.venues.fields import PARSE_FAILURES as _PARSE_FAILURES
from actors.venues.fields import array as _list
from actors.venues.fields import asset as _asset
from actors.venues.fields import decimal as _decimal
from actors.venues.fields import field as _field
from actors.venues.fields import frame_errors as _frame_errors
from actors.venues.fields import integer as _integer
from actors.venues.fields import json_object as _object
from actors.venues.fields import load_object as _load_object
from actors.venues.fields import name as _name
from actors.venues.fields import sound as _sound
from actors.venues.fields import string as _string

VENUE = "binance"
#: (an enum member read through its class costs ~0.1 us in CPython 3.11: once, here)
_DATA = FrameKind.DATA
_BUY, _SELL = Side.BUY, Side.SELL

#: Streams per SUBSCRIBE message: far below the per-connection cap, so that one message
#: stays small (a subscribe with too many streams has been seen to fail silently).
STREAMS_PER_SUBSCRIBE = 100


class _BookTicker(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The hot frame, exactly: a raw ``<symbol>@bookTicker`` payload."""

    u: LaxInt
    s: str
    b: Price
    B: Size
    a: Price
    A: Size


class _Trade(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A raw ``<symbol>@trade`` payload."""

    e: str
    s: str
    t: LaxInt
    p: Price
    q: Size
    T: LaxInt
    m: bool | int | str  # lax decoding would read "true" or 1 as a bool: checked after
    E: Any = None
    M: Any = None


class _CombinedBookTicker(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The same payloads in a combined stream's envelope (``/stream``)."""

    stream: Any
    data: _BookTicker


class _CombinedTrade(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    stream: Any
    data: _Trade


_decode_combined_book = fast_decoder(_CombinedBookTicker).decode
_decode_combined_trade = fast_decoder(_CombinedTrade).decode


def _combined_book_ticker(frame: str | bytes) -> _BookTicker:
    return _decode_combined_book(frame).data


def _combined_trade(frame: str | bytes) -> _Trade:
    return _decode_combined_trade(frame).data


#: the shapes the fast path knows, raw and combined; each codec keeps them in
#: most-recently-seen order (a connection sends one of the two)
_BOOK_SHAPES: tuple[Callable[[str | bytes], _BookTicker], ...] = (
    fast_decoder(_BookTicker).decode, _combined_book_ticker)
_TRADE_SHAPES: tuple[Callable[[str | bytes], _Trade], ...] = (fast_decoder(_Trade).decode, _combined_trade)
#: tells a trade frame from a book frame without decoding it (fields.py, "trade mark")
_TRADE_MARK = '"e":"trade"'
_TRADE_MARK_BYTES = _TRADE_MARK.encode()


class BinanceCodec:
    """Sans-IO codec for one Binance spot connection.

    Built with the symbol map of the current discovery (native symbol -> SymbolInfo);
    frames for other symbols parse as UNKNOWN_SYMBOL. Subscribe ids come from a counter
    inside the instance, starting at 1, so the text of every message is deterministic.
    """

    name: str = VENUE
    max_streams_per_connection: int = 1024
    max_messages_per_second: float = 4.0
    ping_interval: float | None = None
    #: Binance closes every connection after 24 h
    max_connection_age_s: float | None = 24 * 3600.0
    waits_for_welcome: bool = False

    def __init__(self, symbols: Mapping[str, SymbolInfo]) -> None:
        self._symbols = dict(symbols)
        # the fast paths: the shapes in most-recently-seen order, and the last one seen
        self._book_shapes = list(_BOOK_SHAPES)
        self._trade_shapes = list(_TRADE_SHAPES)
        self._book_shape = self._book_shapes[0]
        self._trade_shape = self._trade_shapes[0]
        #: the fast paths' lookup: native symbol -> our symbol
        self._names = {native: info.symbol for native, info in self._symbols.items()}
        self._next_id = 1

    def ws_path(self, natives: Sequence[str]) -> str:
        return "/ws"

    def subscribe_messages(self, natives: Sequence[str], *, trades: bool,
                           now_ms: int = 0) -> list[str | bytes]:
        """SUBSCRIBE messages for ``natives``, :data:`STREAMS_PER_SUBSCRIBE` streams each.

        Raises ValueError when the streams exceed :attr:`max_streams_per_connection`:
        splitting symbols across connections is the caller's job.
        """
        return self._requests("SUBSCRIBE", natives, trades)

    def unsubscribe_messages(self, natives: Sequence[str], *, trades: bool,
                             now_ms: int = 0) -> list[str | bytes]:
        return self._requests("UNSUBSCRIBE", natives, trades)

    def _requests(self, method: str, natives: Sequence[str], trades: bool) -> list[str | bytes]:
        streams: list[str] = []
        for native in natives:
            lower = native.lower()
            streams.append(f"{lower}@bookTicker")
            if trades:
                streams.append(f"{lower}@trade")
        if len(streams) > self.max_streams_per_connection:
            raise ValueError(
                f"{len(streams)} streams exceed Binance's {self.max_streams_per_connection} "
                "per connection"
            )
        messages: list[str | bytes] = []
        for start in range(0, len(streams), STREAMS_PER_SUBSCRIBE):
            chunk = streams[start : start + STREAMS_PER_SUBSCRIBE]
            request = {"method": method, "params": chunk, "id": self._next_id}
            self._next_id += 1
            messages.append(orjson.dumps(request).decode())
        return messages

    def ping_message(self, now_ms: int) -> str | None:
        return None

    def parse(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """Classify one frame; ``recv_ts`` (ns) is stamped on the records it carries.

        Error handling: raises FrameError, and only FrameError, when the frame is not
        JSON, not an object, of an unknown shape, or misses or mistypes a field.
        """
        if (_TRADE_MARK in frame) if type(frame) is str else (_TRADE_MARK_BYTES in frame):
            return self._fast_trade(frame, recv_ts)
        m: _BookTicker | None
        try:  # the shape this connection sent last (raw or combined), then the others
            m = self._book_shape(frame)
        except FAST_DECLINED:
            m = decode_first(self._book_shapes, frame)
            if m is None:
                return self.parse_strict(frame, recv_ts)
            self._book_shape = self._book_shapes[0]
        self._trade_shape = self._trade_shapes[0]
        symbol = self._names.get(m.s)
        if symbol is None or type(m.u) is not int:
            return self.parse_strict(frame, recv_ts)
        return Parsed(_DATA, (Quote(VENUE, symbol, m.b, m.B, m.a, m.A, 0, recv_ts, m.u),))

    def _fast_trade(self, frame: str | bytes, recv_ts: int) -> Parsed:
        t: _Trade | None
        try:
            t = self._trade_shape(frame)
        except FAST_DECLINED:
            t = decode_first(self._trade_shapes, frame)
            if t is None:
                return self.parse_strict(frame, recv_ts)
            self._trade_shape = self._trade_shapes[0]
        symbol = self._names.get(t.s)
        if (symbol is None or t.e != "trade" or type(t.m) is not bool or type(t.t) is not int
                or type(t.T) is not int):
            return self.parse_strict(frame, recv_ts)
        side = _SELL if t.m else _BUY
        return Parsed(_DATA, (Trade(VENUE, symbol, t.p, t.q, side, t.T, recv_ts, str(t.t)),))

    def parse_strict(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """The reference path for every frame: :meth:`parse` gives the same result for
        the bookTicker and trade payloads it takes itself (``tests/test_codec_fast.py``)."""
        with _frame_errors("malformed frame"):
            return _sound(self._classify(_load_object(frame), recv_ts))

    def _classify(self, message: dict[str, Any], recv_ts: int) -> Parsed:
        if "stream" in message and "data" in message:
            message = _object(message["data"], "data")
        event = message.get("e")
        if event is not None:
            if event == "trade":
                return self._trade(message, recv_ts)
            if event == "serverShutdown":
                return Parsed(FrameKind.NOTICE, detail="serverShutdown")
            raise FrameError(f"unexpected event type {event!r}")
        if "event" in message:
            # The shape of Binance's connection events: {"event": {"e": "serverShutdown", ...}}
            inner = _object(message["event"], "event")
            if inner.get("e") == "serverShutdown":
                return Parsed(FrameKind.NOTICE, detail="serverShutdown")
            raise FrameError(f"unexpected connection event {inner.get('e')!r}")
        if "result" in message and "id" in message:
            return Parsed(FrameKind.ACK, detail=str(message["id"]))
        if "error" in message:
            error = _object(message["error"], "error")
            return Parsed(FrameKind.ERROR, detail=_error_detail(error, message.get("id")))
        if "code" in message and "msg" in message:
            return Parsed(FrameKind.ERROR, detail=_error_detail(message, message.get("id")))
        if "u" in message or "b" in message:
            return self._book_ticker(message, recv_ts)
        raise FrameError(f"unrecognised frame with keys {sorted(message)[:8]}")

    def _book_ticker(self, message: dict[str, Any], recv_ts: int) -> Parsed:
        native = _string(message, "s")
        info = self._symbols.get(native)
        if info is None:
            return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
        quote = Quote(
            venue=VENUE,
            symbol=info.symbol,
            bid=_decimal(message, "b"),
            bid_size=_decimal(message, "B"),
            ask=_decimal(message, "a"),
            ask_size=_decimal(message, "A"),
            venue_ts=0,
            recv_ts=recv_ts,
            seq=_integer(message, "u"),
        )
        return Parsed(FrameKind.DATA, records=(quote,))

    def _trade(self, message: dict[str, Any], recv_ts: int) -> Parsed:
        native = _string(message, "s")
        info = self._symbols.get(native)
        if info is None:
            return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
        buyer_is_maker = _field(message, "m")
        if not isinstance(buyer_is_maker, bool):
            raise FrameError(f"field 'm': expected a boolean, got {type(buyer_is_maker).__name__}")
        trade = Trade(
            venue=VENUE,
            symbol=info.symbol,
            price=_decimal(message, "p"),
            size=_decimal(message, "q"),
            side=Side.SELL if buyer_is_maker else Side.BUY,
            venue_ts=_integer(message, "T"),
            recv_ts=recv_ts,
            trade_id=str(_integer(message, "t")),
        )
        return Parsed(FrameKind.DATA, records=(trade,))


def discovery_requests() -> tuple[RestRequest, RestRequest]:
    """(spot instruments, 24 h tickers); ``type=MINI`` tickers still carry quoteVolume."""
    return (
        RestRequest("/api/v3/exchangeInfo", {"permissions": "SPOT", "showPermissionSets": "false"}),
        RestRequest("/api/v3/ticker/24hr", {"type": "MINI"}),
    )


def parse_instruments(body: bytes, aliases: Mapping[str, str]) -> list[SymbolInfo]:
    """Symbols in status TRADING, with aliased, upper-case base and quote assets.

    ``aliases`` maps an upper-case asset code to the one we use (e.g. ``{"XBT": "BTC"}``).
    Raises FrameError on an error payload or a malformed one.
    """
    with _frame_errors("malformed exchangeInfo"):
        document = _load_object(body)
        if "symbols" not in document and "code" in document:
            raise FrameError(f"exchangeInfo failed: {_error_detail(document, None)}")
        infos: list[SymbolInfo] = []
        for index, entry in enumerate(_list(document, "symbols")):
            item = _object(entry, f"symbols[{index}]")
            if _string(item, "status") != "TRADING":
                continue
            infos.append(
                SymbolInfo(
                    venue=VENUE,
                    native=_name(item, "symbol"),
                    base=_asset(_name(item, "baseAsset"), aliases),
                    quote=_asset(_name(item, "quoteAsset"), aliases),
                )
            )
        return infos


def parse_volumes(body: bytes) -> dict[str, float]:
    """24 h quote volume per native symbol, from the ticker list. Raises FrameError."""
    try:
        tickers = orjson.loads(body)
        if isinstance(tickers, dict) and "code" in tickers:
            raise FrameError(f"ticker/24hr failed: {_error_detail(tickers, None)}")
        if not isinstance(tickers, list):
            raise FrameError(f"ticker/24hr: expected a JSON array, got {type(tickers).__name__}")
        volumes: dict[str, float] = {}
        for index, entry in enumerate(tickers):
            item = _object(entry, f"[{index}]")
            volumes[_name(item, "symbol")] = _decimal(item, "quoteVolume")
        return volumes
    except FrameError:
        raise
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"ticker/24hr: invalid JSON: {exc}") from exc
    except _PARSE_FAILURES as exc:
        raise FrameError(f"malformed ticker/24hr: {type(exc).__name__}: {exc}") from exc



def _error_detail(error: Mapping[str, Any], request_id: object) -> str:
    detail = f"code {error.get('code')!r}: {error.get('msg')!r}"
    return detail if request_id is None else f"{detail} (id {request_id!r})"


