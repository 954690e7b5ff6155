"""Bitget v2 spot: codec for ``books1`` and ``trade`` on the public stream, and discovery.

Pure, like every venue module: no trio, no clock, no I/O. Receive time is an argument.
A frame or REST payload that does not parse as Bitget documents it raises
:class:`~actors.venues.base.FrameError` naming what was wrong; nothing else escapes.

What Bitget documents (``api-doc/common/websocket-intro`` and the spot channel pages),
and how this module relies on it:

* ``wss://ws.bitget.com/v2/ws/public`` is the whole URL: the WebSocket path is empty.
* Requests are ``{"op": "subscribe"|"unsubscribe", "args": [{"instType": "SPOT",
  "channel": .., "instId": ..}]}``. They carry no request id: acks echo the ``arg``
  instead, so the text of every message is deterministic without a counter.
* One connection may carry 1000 channels, but Bitget recommends fewer than 50 for a
  stable connection: we cap it at 48 streams. It accepts 240 subscribe requests an hour
  and 10 messages a second (the text ``ping`` included): we send at most
  :data:`ARGS_PER_SUBSCRIBE` args and :data:`MAX_SUBSCRIBE_BYTES` bytes a request, so a
  full connection needs two requests, and claim 5 messages a second.
* Per IP: 300 connection requests per 5 minutes and at most 100 connections
  (:data:`CONNECT_INTERVAL_S`, :data:`MAX_CONNECTIONS`).
* The client sends the text ``ping`` every 30 s and gets the text ``pong``; the server
  closes a connection that sent no ``ping`` for 2 minutes, and cuts every connection
  after 24 h.
* ``books1`` pushes a snapshot of the best level every time (``action`` "snapshot");
  ``data[i].seq`` is our ``seq`` and ``data[i].ts`` (ms, a string) our ``venue_ts``.
  A side can be empty: that frame is DATA with no quote, detail "one-sided book".
* ``trade`` pushes a list of trades (``action`` "snapshot" right after subscribing,
  "update" afterwards), each with ``ts``, ``price``, ``size``, ``side`` ("buy"/"sell",
  documented as the transaction direction: the taker's side) and ``tradeId``.
* A rejected request answers ``{"event": "error", "code": .., "msg": ..}``, with the
  ``arg`` it refers to when there is one.
* No maintenance or upgrade notice is documented for the public stream; the 24 h cut
  is handled through :attr:`BitgetCodec.max_connection_age_s`. No server ping is
  documented either; a text ``ping`` from the server is answered with ``pong`` anyway.

Discovery reads ``GET /api/v2/spot/public/symbols`` (``status`` "online"; "gray",
"halt" and "offline" are not trading; named from ``baseCoin``/``quoteCoin``) and
``GET /api/v2/spot/market/tickers`` (``quoteVolume``, the 24 h volume in the quote coin).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Annotated, Any, Literal

import msgspec
import orjson

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues.base import FrameError, FrameKind, Parsed, RestRequest
from actors.venues.fields import FAST_DECLINED, Level, Millis, Price, Size, fast_decoder
from actors.venues.fields import array as _list
from actors.venues.fields import asset as _coin
from actors.venues.fields import decimal as _decimal
from actors.venues.fields import field as _field
from actors.venues.fields import frame_errors as _frame_errors
from actors.venues.fields import json_object as _object
from actors.venues.fields import load_object as _load_object
from actors.venues.fields import name as _name
from actors.venues.fields import sound as _sound
from actors.venues.fields import string as _string
from actors.venues.fields import to_float as _to_float

VENUE = "bitget"

#: Least seconds between two connection attempts: Bitget allows 300 connection requests
#: per 5 minutes per IP (one a second); 1.5 s keeps us at two thirds of that.
CONNECT_INTERVAL_S = 1.5
#: Most connections we open: Bitget allows 100 per IP. 80 leaves room for the successor
#: a rotation opens before its predecessor closes, and for other clients on the host.
MAX_CONNECTIONS = 80

#: Args per subscribe request. Bitget documents no per-request count; a connection holds
#: at most 48 streams, so two requests cover it and stay far inside 240 an hour.
ARGS_PER_SUBSCRIBE = 24
#: Longest subscribe request we send. Bitget v2 documents no size limit; 4096 bytes is
#: the limit of the OKX-style protocol it follows, and 24 args of ordinary symbols stay
#: near 1,400 bytes.
MAX_SUBSCRIBE_BYTES = 4096

_INST_TYPE = "SPOT"
_BOOK_CHANNEL = "books1"


class _BooksEntry(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    # one level a side (an empty side, the strict path's "one-sided book", is declined)
    asks: tuple[Level]
    bids: tuple[Level]
    ts: Millis
    seq: Millis = 0  # absent: 0, as _optional_seq reads it (null is declined)
    checksum: Any = None


class _BooksArg(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    instType: Literal["SPOT"]
    channel: Literal["books1"]
    instId: str


class _Books(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The hot frame, exactly: a ``books1`` snapshot push of one entry.

    Shaped so that a frame it takes needs no further checks but the instrument and the
    types of ``ts`` and ``seq``: action, type and channel are literals, ``data`` and
    each side hold exactly one element (anything else is declined: the strict path
    decides it).
    """

    action: Literal["snapshot"]
    arg: _BooksArg
    data: tuple[_BooksEntry]
    ts: Any = None


_decode_books = fast_decoder(_Books).decode

#: tells a trade frame from a book frame without decoding it (fields.py, "trade mark")
_TRADE_MARK = '"channel":"trade"'
_TRADE_MARK_BYTES = _TRADE_MARK.encode()
#: a letter every trade push holds (in its required key "size") and no book push: found
#: by memchr (~20 ns), it spares book pushes the search for the mark (~100 ns)
_TRADE_LETTER = "z"
_TRADE_LETTER_BYTES = _TRADE_LETTER.encode()


class _TradeEntry(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    ts: Millis
    price: Price
    size: Size
    side: str
    tradeId: Annotated[str, msgspec.Meta(min_length=1)]


class _TradeArg(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    instType: Literal["SPOT"]
    channel: Literal["trade"]
    instId: str


class _Trades(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A ``trade`` push of at least one trade (action, type and channel are literals)."""

    action: Literal["snapshot", "update"]
    arg: _TradeArg
    data: Annotated[list[_TradeEntry], msgspec.Meta(min_length=1)]
    ts: Any = None


_decode_trades = fast_decoder(_Trades).decode

_TRADE_CHANNEL = "trade"
_TAKER_SIDES = MappingProxyType({"buy": Side.BUY, "sell": Side.SELL})
#: (an enum member read through its class costs ~0.1 us in CPython 3.11: once, here)
_DATA = FrameKind.DATA
_TRADE_ACTIONS = frozenset({"snapshot", "update"})
_ACK_EVENTS = frozenset({"subscribe", "unsubscribe"})

# Millisecond timestamps come as strings of ASCII digits.
_MILLIS = re.compile(r"[0-9]{1,20}")



class BitgetCodec:
    """Sans-IO codec for one Bitget v2 public spot connection.

    Built with the symbol map of the current discovery (native symbol -> SymbolInfo);
    frames for other symbols parse as UNKNOWN_SYMBOL. Bitget requests carry no id, so
    the instance holds no counter: the same call always builds the same text.
    """

    name: str = VENUE
    #: Bitget allows 1000 channels a connection but recommends fewer than 50
    max_streams_per_connection: int = 48
    #: Bitget accepts 10 messages a second per connection, pings included; half of that
    max_messages_per_second: float = 5.0
    #: Bitget asks for a text ping every 30 s and closes after 2 min without one
    ping_interval: float | None = 25.0
    #: Bitget forcibly disconnects every connection after 24 h
    max_connection_age_s: float | None = 24 * 3600.0
    waits_for_welcome: bool = False

    def __init__(self, symbols: Mapping[str, SymbolInfo]) -> None:
        self._symbols = dict(symbols)
        #: the fast paths' lookup: instId -> our symbol (an empty instId, which the
        #: strict path refuses, is left out)
        self._names = {native: info.symbol for native, info in self._symbols.items() if native}
        #: the taker sides for the fast path (a dict's get is quicker than a mapping
        #: proxy's; per codec, since module state must be immutable)
        self._sides = dict(_TAKER_SIDES)

    def ws_path(self, natives: Sequence[str]) -> str:
        return ""

    def subscribe_messages(self, natives: Sequence[str], *, trades: bool,
                           now_ms: int = 0) -> list[str | bytes]:
        """Subscribe requests for ``natives``: ``books1`` (and ``trade`` if asked) each.

        At most :data:`ARGS_PER_SUBSCRIBE` args and :data:`MAX_SUBSCRIBE_BYTES` bytes a
        request. Raises ValueError when the streams exceed
        :attr:`max_streams_per_connection`: splitting symbols across connections is the
        caller's job.
        """
        return self._requests("subscribe", natives, trades)

    def unsubscribe_messages(self, natives: Sequence[str], *, trades: bool,
                             now_ms: int = 0) -> list[str | bytes]:
        return self._requests("unsubscribe", natives, trades)

    def _requests(self, op: str, natives: Sequence[str], trades: bool) -> list[str | bytes]:
        args: list[dict[str, str]] = []
        for native in natives:
            args.append(_arg(_BOOK_CHANNEL, native))
            if trades:
                args.append(_arg(_TRADE_CHANNEL, native))
        if len(args) > self.max_streams_per_connection:
            raise ValueError(
                f"{len(args)} streams exceed our cap of {self.max_streams_per_connection} "
                "per Bitget connection"
            )
        requests: list[list[dict[str, str]]] = []
        chunk: list[dict[str, str]] = []
        for arg in args:
            if chunk and (
                len(chunk) == ARGS_PER_SUBSCRIBE
                or len(_request_bytes(op, [*chunk, arg])) > MAX_SUBSCRIBE_BYTES
            ):
                requests.append(chunk)
                chunk = []
            chunk.append(arg)
        if chunk:
            requests.append(chunk)
        messages: list[str | bytes] = []
        for request in requests:
            text = _request_bytes(op, request)
            if len(text) > MAX_SUBSCRIBE_BYTES:
                raise ValueError(f"a {op} request for one stream exceeds {MAX_SUBSCRIBE_BYTES} bytes")
            messages.append(text.decode())
        return messages

    def ping_message(self, now_ms: int) -> str | None:
        return "ping"

    def parse(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """Classify one frame; ``recv_ts`` (ns) is stamped on the records it carries.

        Error handling: raises FrameError, and only FrameError, when the frame is neither
        the text ``pong``/``ping`` nor a JSON object of a documented shape, or misses or
        mistypes a field.
        """
        if ((_TRADE_LETTER in frame and _TRADE_MARK in frame) if type(frame) is str
                else (_TRADE_LETTER_BYTES in frame and _TRADE_MARK_BYTES in frame)):
            try:
                t = _decode_trades(frame)
            except FAST_DECLINED:
                return self.parse_strict(frame, recv_ts)
            symbol = self._names.get(t.arg.instId)
            if symbol is None:
                return self.parse_strict(frame, recv_ts)
            trades = []
            for e in t.data:
                ts, side = e.ts, self._sides.get(e.side)
                if type(ts) is not int or side is None:
                    return self.parse_strict(frame, recv_ts)
                trades.append(Trade(VENUE, symbol, e.price, e.size, side, ts, recv_ts, e.tradeId))
            return Parsed(_DATA, tuple(trades))
        try:
            m = _decode_books(frame)
        except FAST_DECLINED:
            return self.parse_strict(frame, recv_ts)
        symbol = self._names.get(m.arg.instId)
        (entry,) = m.data
        ts, seq = entry.ts, entry.seq
        if symbol is None or type(ts) is not int or type(seq) is not int:
            return self.parse_strict(frame, recv_ts)
        (bid,), (ask,) = entry.bids, entry.asks
        quote = Quote(VENUE, symbol, bid.price, bid.size, ask.price, ask.size, ts, recv_ts, seq)
        return Parsed(_DATA, (quote,))

    def parse_strict(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """The reference path for every frame: :meth:`parse` gives the same result for
        the frames it takes itself (``tests/test_codec_fast.py``)."""
        with _frame_errors("malformed frame"):
            if _is_text(frame, "pong"):
                return Parsed(FrameKind.PONG)
            if _is_text(frame, "ping"):
                return Parsed(FrameKind.PING, reply="pong")
            return _sound(self._classify(_load_object(frame), recv_ts))

    def _classify(self, message: dict[str, Any], recv_ts: int) -> Parsed:
        if "action" in message:
            return self._push(message, recv_ts)
        if "event" in message:
            return _event(message, _string(message, "event"))
        raise FrameError(f"unrecognised frame with keys {sorted(message)[:8]}")

    def _push(self, message: dict[str, Any], recv_ts: int) -> Parsed:
        action = _string(message, "action")
        arg = _object(_field(message, "arg"), "arg")
        inst_type = _string(arg, "instType")
        if inst_type != _INST_TYPE:
            raise FrameError(f"field 'instType': {inst_type[:20]!r} is not {_INST_TYPE!r}")
        channel = _string(arg, "channel")
        if channel == _BOOK_CHANNEL:
            if action != "snapshot":
                raise FrameError(f"field 'action': {action[:20]!r}; books1 pushes snapshots only")
        elif channel == _TRADE_CHANNEL:
            if action not in _TRADE_ACTIONS:
                raise FrameError(f"field 'action': {action[:20]!r} is neither snapshot nor update")
        else:
            raise FrameError(f"unexpected channel {channel[:40]!r}")
        native = _name(arg, "instId")
        info = self._symbols.get(native)
        if info is None:
            return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
        entries = _list(message, "data")
        if channel == _BOOK_CHANNEL:
            return _books(info, entries, recv_ts)
        return _trades(info, entries, recv_ts)


def _books(info: SymbolInfo, entries: list[Any], recv_ts: int) -> Parsed:
    quotes: list[Quote] = []
    for index, entry in enumerate(entries):
        item = _object(entry, f"data[{index}]")
        bids = _list(item, "bids")
        asks = _list(item, "asks")
        seq = _optional_seq(item)
        venue_ts = _millis(item, "ts")
        if not bids or not asks:
            continue
        bid, bid_size = _level(bids[0], "bids[0]")
        ask, ask_size = _level(asks[0], "asks[0]")
        quotes.append(
            Quote(
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
        )
    if entries and not quotes:
        return Parsed(FrameKind.DATA, detail="one-sided book")
    return Parsed(FrameKind.DATA, records=tuple(quotes))


def _trades(info: SymbolInfo, entries: list[Any], recv_ts: int) -> Parsed:
    records: list[Trade] = []
    for index, entry in enumerate(entries):
        item = _object(entry, f"data[{index}]")
        taker = _string(item, "side")
        side = _TAKER_SIDES.get(taker)
        if side is None:
            raise FrameError(f"field 'side': {taker[:20]!r} is neither 'buy' nor 'sell'")
        records.append(
            Trade(
                venue=VENUE,
                symbol=info.symbol,
                price=_decimal(item, "price"),
                size=_decimal(item, "size"),
                side=side,
                venue_ts=_millis(item, "ts"),
                recv_ts=recv_ts,
                trade_id=_name(item, "tradeId"),
            )
        )
    return Parsed(FrameKind.DATA, records=tuple(records))


def _event(message: dict[str, Any], event: str) -> Parsed:
    """Acks ``{"event": "subscribe", "arg": ..}`` and errors ``{"event": "error", ..}``."""
    if event in _ACK_EVENTS:
        return Parsed(FrameKind.ACK, detail=f"{event} {_arg_label(message)}")
    if event == "error":
        code = _field(message, "code")
        if isinstance(code, bool) or not isinstance(code, int | str):
            raise FrameError(f"field 'code': expected a number or string, got {type(code).__name__}")
        reason = _string(message, "msg")
        detail = f"code {code!r}: {reason[:200]!r}"
        if "arg" in message:
            detail = f"{detail} ({_arg_label(message)})"
        return Parsed(FrameKind.ERROR, detail=detail)
    raise FrameError(f"unexpected event {event[:20]!r}")


def _arg_label(message: dict[str, Any]) -> str:
    arg = _object(_field(message, "arg"), "arg")
    return f"{_string(arg, 'channel')[:40]}:{_string(arg, 'instId')[:40]}"


def _arg(channel: str, native: str) -> dict[str, str]:
    return {"instType": _INST_TYPE, "channel": channel, "instId": native}


def _request_bytes(op: str, args: list[dict[str, str]]) -> bytes:
    return orjson.dumps({"op": op, "args": args})


def _is_text(frame: str | bytes, word: str) -> bool:
    """Whether ``frame`` is exactly ``word`` (Bitget's heartbeats are bare text)."""
    if isinstance(frame, bytes):
        return frame == word.encode()
    return frame == word


def discovery_requests() -> tuple[RestRequest, RestRequest]:
    """(spot symbols, spot 24 h tickers); both return every symbol without a parameter."""
    return (
        RestRequest("/api/v2/spot/public/symbols"),
        RestRequest("/api/v2/spot/market/tickers"),
    )


def parse_instruments(body: bytes, aliases: Mapping[str, str]) -> list[SymbolInfo]:
    """Symbols in status ``online``, with aliased, upper-case base and quote coins.

    ``aliases`` maps an upper-case coin code to the one we use (e.g. ``{"XBT": "BTC"}``).
    Raises FrameError on an error payload (``code`` not "00000") or a malformed one.
    """
    with _frame_errors("malformed symbols"):
        infos: list[SymbolInfo] = []
        for index, entry in enumerate(_data_list(body, "symbols")):
            item = _object(entry, f"data[{index}]")
            if _string(item, "status") != "online":
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
    """24 h volume in the quote coin (``quoteVolume``) per native symbol. Raises FrameError."""
    with _frame_errors("malformed tickers"):
        volumes: dict[str, float] = {}
        for index, entry in enumerate(_data_list(body, "tickers")):
            item = _object(entry, f"data[{index}]")
            volumes[_name(item, "symbol")] = _decimal(item, "quoteVolume")
        return volumes


def _data_list(body: bytes, endpoint: str) -> list[Any]:
    """``data`` of a v2 REST envelope; FrameError when ``code`` is not "00000"."""
    document = _load_object(body)
    code = _field(document, "code")
    if code != "00000":
        raise FrameError(f"{endpoint} failed: code {code!r}: {document.get('msg')!r}")
    return _list(document, "data")



def _level(value: object, name: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) < 2:
        raise FrameError(f"field {name!r}: expected [price, size]")
    return _to_float(value[0], f"{name}[0]"), _to_float(value[1], f"{name}[1]")


def _millis(obj: Mapping[str, Any], key: str) -> int:
    """A millisecond timestamp: a string of ASCII digits (as documented) or an integer."""
    value = _field(obj, key)
    if isinstance(value, str):
        if _MILLIS.fullmatch(value) is None:
            raise FrameError(f"field {key!r}: {value[:40]!r} is not a millisecond timestamp")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FrameError(f"field {key!r}: expected a millisecond timestamp, got {value!r:.40}")
    return value


def _optional_seq(item: Mapping[str, Any]) -> int:
    """``seq`` as an integer; absent (seen on white-label feeds) or a digit string tolerated."""
    value = item.get("seq")
    if value is None:
        return 0
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameError(f"field 'seq': expected an integer, got {type(value).__name__}")
    return value
