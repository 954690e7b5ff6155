"""HTX (Huobi) spot: codec for ``market.<symbol>.bbo`` and ``market.<symbol>.trade.detail``, and discovery.

Pure, like every venue module: no trio, no clock, no I/O. Receive time is an argument.
A frame or REST payload that does not parse as HTX documents it raises
:class:`~actors.venues.base.FrameError` naming what was wrong; nothing else escapes.

What HTX documents (spot API reference, "Websocket Market Data"), and how this module
relies on it:

* ``wss://api.huobi.pro/ws`` (or ``wss://api-aws.huobi.pro/ws``) is the whole URL: the
  WebSocket path is empty. Symbols are lower case (``btcusdt``).
* Every frame the server sends on that feed is a GZIP-compressed binary message; our
  messages are plain JSON text. A text frame, or bytes that are not one complete gzip
  member, is a FrameError. Decompression stops at :data:`MAX_FRAME_BYTES`, so a
  decompression bomb costs a bounded amount of memory.
* The server pings every 5 s with ``{"ping": <integer>}`` and closes the connection
  after two pings without a matching ``{"pong": <same integer>}``: that is a PING whose
  ``reply`` is the pong text. We never ping (``ping_interval`` is None); a ``pong`` frame
  still parses as PONG.
* Subscribe ``{"sub": <topic>, "id": <id>}``, unsubscribe ``{"unsub": <topic>, "id": ..}``,
  one topic a message (the newer reference also shows a list of topics under ``sub``;
  its acknowledgement is documented for one topic only, so we keep one topic a message
  and match every ack to its request). Acks carry ``status: "ok"`` with ``subbed`` or
  ``unsubbed``; errors carry ``status: "error"``, ``err-code`` and ``err-msg``.
* HTX documents no cap on topics per connection, only the advice not to subscribe "too
  many topics in a single websocket connection" (and ``429 too many request`` in the
  error table). We cap a connection at 100 topics.
* The only documented per-connection request rate is one pull request (``req``) per
  100 ms; we allow ourselves half of that for subscribe messages: 5 a second.
* ``bbo`` ticks carry ``seqId`` (our ``seq``) and ``quoteTime`` (our ``venue_ts``);
  prices and sizes are JSON numbers in the current reference and strings in older
  ones, and both are accepted. ``trade.detail`` ticks carry a list of trades with
  ``tradeId``, ``price``, ``amount``, ``ts`` and the taker's ``direction``.
* No forced disconnect and no maintenance notice are documented for this feed, so no
  frame is a NOTICE and ``max_connection_age_s`` is None.

Discovery reads ``GET /v2/settings/common/symbols`` (``sc`` symbol, ``bc``/``qc`` base
and quote currency, ``state`` "online", ``te`` trade enabled) and ``GET /market/tickers``
(``vol``, the 24 h value in the quote currency).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import msgspec
import orjson

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues.base import FrameError, FrameKind, Parsed, RestRequest
from actors.venues.fields import FAST_DECLINED, LaxInt, Price, Size, fast_decoder
from actors.venues.fields import array as _list
from actors.venues.fields import asset as _currency
from actors.venues.fields import decimal as _decimal
from actors.venues.fields import field as _field
from actors.venues.fields import frame_errors as _frame_errors
from actors.venues.fields import integer as _integer
from actors.venues.fields import json_object as _object
from actors.venues.fields import name as _name
from actors.venues.fields import sound as _sound
from actors.venues.fields import string as _string

VENUE = "htx"
#: (an enum member read through its class costs ~0.1 us in CPython 3.11: once, here)
_DATA = FrameKind.DATA

#: HTX documents no per-IP connection rate for its market feed; one attempt a second
#: stays well clear of its generic ``429 too many request`` throttling.
CONNECT_INTERVAL_S = 1.0
#: HTX documents no per-IP connection cap for its market feed; 20 connections of 100
#: topics cover every spot symbol with trades, and stay modest.
MAX_CONNECTIONS = 20

#: Largest decompressed frame we accept; real ones are a few hundred bytes.
MAX_FRAME_BYTES = 1 << 20

_BOOK_SUFFIX = ".bbo"
_TRADE_SUFFIX = ".trade.detail"
_TOPIC_PREFIX = "market."
# Longest ``detail`` we copy from a venue's frame into a Parsed.
_DETAIL_CHARS = 200
_TAKER_SIDES = MappingProxyType({"buy": Side.BUY, "sell": Side.SELL})
# zlib's window bits for "gzip header and trailer required".
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class _BboTick(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    seqId: LaxInt
    ask: Price
    askSize: Size
    bid: Price
    bidSize: Size
    quoteTime: LaxInt
    symbol: str


class _Bbo(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The hot frame (once gunzipped), exactly: a ``market.<symbol>.bbo`` push."""

    ch: str
    tick: _BboTick
    ts: Any = None


_decode_bbo = fast_decoder(_Bbo).decode

#: tells a trade frame from a book frame without decoding it (fields.py, "trade mark")
_TRADE_MARK = b'.trade.detail"'


class _TradeEntry(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    ts: LaxInt
    tradeId: LaxInt
    amount: Size
    price: Price
    direction: str
    id: Any = None


class _TradeTick(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    data: list[_TradeEntry]
    id: Any = None
    ts: Any = None


class _Trades(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A ``market.<symbol>.trade.detail`` push (once gunzipped)."""

    ch: str
    tick: _TradeTick
    ts: Any = None


_decode_trades = fast_decoder(_Trades).decode




class HtxCodec:
    """Sans-IO codec for one HTX spot market-data connection.

    Built with the symbol map of the current discovery (native symbol -> SymbolInfo);
    frames for other symbols parse as UNKNOWN_SYMBOL. Request ids come from one counter
    inside the instance, starting at 1, so the text of every message is deterministic.
    """

    name: str = VENUE
    #: no documented cap; HTX advises against many topics on one connection
    max_streams_per_connection: int = 100
    #: half the one-request-per-100-ms documented for pull requests on a connection
    max_messages_per_second: float = 5.0
    #: the server pings us every 5 s; we only answer
    ping_interval: float | None = None
    #: HTX documents no forced cut of market-data connections
    max_connection_age_s: float | None = None
    waits_for_welcome: bool = False

    def __init__(self, symbols: Mapping[str, SymbolInfo]) -> None:
        self._symbols = dict(symbols)
        self._next_id = 1

    def ws_path(self, natives: Sequence[str]) -> str:
        return ""

    def subscribe_messages(self, natives: Sequence[str], *, trades: bool,
                           now_ms: int = 0) -> list[str | bytes]:
        """One ``sub`` message per topic: ``bbo`` for every symbol, ``trade.detail`` too if asked.

        Raises ValueError when the topics exceed :attr:`max_streams_per_connection`:
        splitting symbols across connections is the caller's job.
        """
        return self._requests("sub", natives, trades)

    def unsubscribe_messages(self, natives: Sequence[str], *, trades: bool,
                             now_ms: int = 0) -> list[str | bytes]:
        return self._requests("unsub", natives, trades)

    def _requests(self, op: str, natives: Sequence[str], trades: bool) -> list[str | bytes]:
        topics: list[str] = []
        for native in natives:
            topics.append(f"{_TOPIC_PREFIX}{native}{_BOOK_SUFFIX}")
            if trades:
                topics.append(f"{_TOPIC_PREFIX}{native}{_TRADE_SUFFIX}")
        if len(topics) > self.max_streams_per_connection:
            raise ValueError(
                f"{len(topics)} topics exceed our cap of {self.max_streams_per_connection} "
                "per HTX connection"
            )
        messages: list[str | bytes] = []
        for topic in topics:
            messages.append(orjson.dumps({op: topic, "id": str(self._next_id)}).decode())
            self._next_id += 1
        return messages

    def ping_message(self, now_ms: int) -> str | None:
        return None

    def parse(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """Classify one frame; ``recv_ts`` (ns) is stamped on the records it carries.

        Error handling: raises FrameError, and only FrameError, when the frame is text,
        not one complete gzip member, larger than :data:`MAX_FRAME_BYTES` once
        decompressed, not a JSON object, of an unknown shape, or misses or mistypes a
        field.
        """
        try:
            content = _gunzip(frame)
        except FrameError:
            return self.parse_strict(frame, recv_ts)
        if _TRADE_MARK in content:
            return self._fast_trades(content, recv_ts)
        try:
            m = _decode_bbo(content)
        except FAST_DECLINED:
            return self._parse_content(content, recv_ts)
        t = m.tick
        native = _channel_native(m.ch, _BOOK_SUFFIX)
        info = self._symbols.get(native) if native and t.symbol == native else None
        if info is None or type(t.quoteTime) is not int or type(t.seqId) is not int:
            return self._parse_content(content, recv_ts)
        quote = Quote(VENUE, info.symbol, t.bid, t.bidSize, t.ask, t.askSize, t.quoteTime, recv_ts, t.seqId)
        return Parsed(_DATA, (quote,))

    def _fast_trades(self, content: bytes, recv_ts: int) -> Parsed:
        try:
            m = _decode_trades(content)
        except FAST_DECLINED:
            return self._parse_content(content, recv_ts)
        info = self._symbols.get(_channel_native(m.ch, _TRADE_SUFFIX))
        entries = m.tick.data
        if info is None or not entries:
            return self._parse_content(content, recv_ts)
        trades = []
        for e in entries:
            side = _TAKER_SIDES.get(e.direction)
            if side is None or type(e.ts) is not int or type(e.tradeId) is not int:
                return self._parse_content(content, recv_ts)
            trades.append(Trade(VENUE, info.symbol, e.price, e.amount, side, e.ts, recv_ts, str(e.tradeId)))
        return Parsed(_DATA, tuple(trades))

    def parse_strict(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """The reference path for every frame: :meth:`parse` gives the same result for
        the frames it takes itself (``tests/test_codec_fast.py``)."""
        with _frame_errors("malformed frame"):
            return self._parse_content(_gunzip(frame), recv_ts)

    def _parse_content(self, content: bytes, recv_ts: int) -> Parsed:
        with _frame_errors("malformed frame"):
            return _sound(self._classify(_load_object(content), recv_ts))

    def _classify(self, message: dict[str, Any], recv_ts: int) -> Parsed:
        if "ch" in message:
            channel = _string(message, "ch")
            if native := _channel_native(channel, _BOOK_SUFFIX):
                return self._bbo(message, native, recv_ts)
            if native := _channel_native(channel, _TRADE_SUFFIX):
                return self._trades(message, native, recv_ts)
            raise FrameError(f"unexpected channel {channel[:60]!r}")
        if "ping" in message:
            stamp = _integer(message, "ping")
            return Parsed(FrameKind.PING, reply=orjson.dumps({"pong": stamp}).decode(),
                          detail=str(stamp))
        if "pong" in message:
            return Parsed(FrameKind.PONG, detail=str(_integer(message, "pong")))
        if "status" in message:
            return _status(message, _string(message, "status"))
        raise FrameError(f"unrecognised frame with keys {sorted(message)[:8]}")

    def _bbo(self, message: dict[str, Any], channel_native: str, recv_ts: int) -> Parsed:
        tick = _object(_field(message, "tick"), "tick")
        native = _string(tick, "symbol")
        if native != channel_native:
            raise FrameError(
                f"field 'symbol': {native[:40]!r} does not match channel symbol "
                f"{channel_native[:40]!r}"
            )
        info = self._symbols.get(native)
        if info is None:
            return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
        quote = Quote(
            venue=VENUE,
            symbol=info.symbol,
            bid=_decimal(tick, "bid"),
            bid_size=_decimal(tick, "bidSize"),
            ask=_decimal(tick, "ask"),
            ask_size=_decimal(tick, "askSize"),
            venue_ts=_integer(tick, "quoteTime"),
            recv_ts=recv_ts,
            seq=_integer(tick, "seqId"),
        )
        return Parsed(FrameKind.DATA, records=(quote,))

    def _trades(self, message: dict[str, Any], native: str, recv_ts: int) -> Parsed:
        tick = _object(_field(message, "tick"), "tick")
        entries = _list(tick, "data")
        info = self._symbols.get(native)
        if info is None:
            return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
        records: list[Trade] = []
        for index, entry in enumerate(entries):
            item = _object(entry, f"data[{index}]")
            taker = _string(item, "direction")
            side = _TAKER_SIDES.get(taker)
            if side is None:
                raise FrameError(f"field 'direction': {taker[:20]!r} is neither 'buy' nor 'sell'")
            records.append(
                Trade(
                    venue=VENUE,
                    symbol=info.symbol,
                    price=_decimal(item, "price"),
                    size=_decimal(item, "amount"),
                    side=side,
                    venue_ts=_integer(item, "ts"),
                    recv_ts=recv_ts,
                    trade_id=str(_integer(item, "tradeId")),
                )
            )
        return Parsed(FrameKind.DATA, records=tuple(records))


def _channel_native(channel: str, suffix: str) -> str:
    """The symbol in ``market.<symbol><suffix>``, or "" when the channel is not of that form."""
    if not channel.startswith(_TOPIC_PREFIX) or not channel.endswith(suffix):
        return ""
    return channel[len(_TOPIC_PREFIX) : -len(suffix)]


def _status(message: dict[str, Any], status: str) -> Parsed:
    """Acks and errors: ``{"id": .., "status": "ok"|"error", ..}``."""
    request_id = message.get("id")
    if status == "error":
        detail = f"{message.get('err-code')!r}: {message.get('err-msg')!r}"
        if request_id is not None:
            detail = f"{detail} (id {request_id!r})"
        return Parsed(FrameKind.ERROR, detail=detail[:_DETAIL_CHARS])
    if status != "ok":
        raise FrameError(f"field 'status': unexpected value {status[:20]!r}")
    if "subbed" in message or "unsubbed" in message:
        detail = "" if request_id is None else str(request_id)
        return Parsed(FrameKind.ACK, detail=detail[:_DETAIL_CHARS])
    if "rep" in message:
        # The answer to a pull request ("req"); we send none, and it needs no action.
        return Parsed(FrameKind.INFO, detail=f"rep {str(message['rep'])[:60]}")
    raise FrameError(f"status 'ok' frame without subbed/unsubbed/rep: keys {sorted(message)[:8]}")


def discovery_requests() -> tuple[RestRequest, RestRequest]:
    """(spot symbols, 24 h tickers of every symbol); neither is paginated."""
    return (
        RestRequest("/v2/settings/common/symbols"),
        RestRequest("/market/tickers"),
    )


def parse_instruments(body: bytes, aliases: Mapping[str, str]) -> list[SymbolInfo]:
    """Symbols in state ``online`` (and not ``te`` false), with aliased, upper-case currencies.

    ``aliases`` maps an upper-case currency code to the one we use (e.g. ``{"XBT": "BTC"}``).
    Raises FrameError on an error payload (``status`` not "ok") or a malformed one.
    """
    with _frame_errors("malformed settings/common/symbols"):
        infos: list[SymbolInfo] = []
        for index, entry in enumerate(_data_list(body, "settings/common/symbols")):
            item = _object(entry, f"data[{index}]")
            if _string(item, "state") != "online":
                continue
            trade_enabled = item.get("te")
            if trade_enabled is not None and not isinstance(trade_enabled, bool):
                raise FrameError(
                    f"field 'te': expected a boolean, got {type(trade_enabled).__name__}"
                )
            if trade_enabled is False:
                continue
            infos.append(
                SymbolInfo(
                    venue=VENUE,
                    native=_name(item, "sc"),
                    base=_currency(_name(item, "bc"), aliases),
                    quote=_currency(_name(item, "qc"), aliases),
                )
            )
        return infos


def parse_volumes(body: bytes) -> dict[str, float]:
    """24 h quote volume (``vol``) per native symbol. Raises FrameError."""
    with _frame_errors("malformed market/tickers"):
        volumes: dict[str, float] = {}
        for index, entry in enumerate(_data_list(body, "market/tickers")):
            item = _object(entry, f"data[{index}]")
            volumes[_name(item, "symbol")] = _decimal(item, "vol")
        return volumes


def _data_list(body: bytes, endpoint: str) -> list[Any]:
    """``data`` of an HTX REST envelope; FrameError when ``status`` is not "ok"."""
    document = _load_object(body)
    status = _field(document, "status")
    if status != "ok":
        raise FrameError(
            f"{endpoint} failed: status {status!r}: "
            f"{document.get('err-code')!r}: {document.get('err-msg')!r}"
        )
    return _list(document, "data")



def _gunzip(frame: str | bytes) -> bytes:
    """The content of one complete gzip member, at most :data:`MAX_FRAME_BYTES` long."""
    if isinstance(frame, str):
        raise FrameError("text frame: HTX sends every market-data frame gzip-compressed as binary")
    decompressor = zlib.decompressobj(_GZIP_WBITS)
    try:
        content = decompressor.decompress(frame, MAX_FRAME_BYTES)
    except zlib.error as exc:
        raise FrameError(f"not a gzip frame: {exc}") from exc
    if decompressor.unconsumed_tail:
        raise FrameError(f"frame decompresses to more than {MAX_FRAME_BYTES} bytes")
    if not decompressor.eof:
        raise FrameError("truncated gzip frame")
    if decompressor.unused_data:
        raise FrameError(f"{len(decompressor.unused_data)} bytes after the gzip member")
    return content


def _load_object(frame: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"invalid JSON: {exc}") from exc
    return _object(value, "frame")


