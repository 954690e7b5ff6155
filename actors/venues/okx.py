"""OKX v5 spot: codec for ``bbo-tbt`` and ``trades``, and discovery.

Pure, like every venue module: no trio, no clock, no I/O. Receive time is an argument.
A frame or REST payload that does not parse as OKX documents it raises
:class:`~actors.venues.base.FrameError` naming what was wrong; nothing else escapes.

What OKX documents, and how this module relies on it:

* The public endpoint ``wss://ws.okx.com:8443/ws/v5/public`` is the whole URL: the
  WebSocket path is empty.
* Connection limit: 3 requests a second per IP (:data:`CONNECT_INTERVAL_S`). Request
  limit: 480 subscribe/unsubscribe/login requests an hour per connection, and the args
  subscribed on one connection may total at most 64 KB. A connection is closed after
  30 s without a subscription or without pushed data.
* Requests are ``{"id": .., "op": "subscribe"|"unsubscribe", "args": [{"channel": ..,
  "instId": ..}]}``; ``id`` (up to 32 alphanumerics) is echoed in the responses. Every
  arg is acknowledged on its own: ``{"id": .., "event": "subscribe", "arg": {..},
  "connId": ..}``. A rejection is ``{"event": "error", "code": .., "msg": ..}``.
* Heartbeat: when nothing arrived for N < 30 s the client sends the text ``ping`` and
  the server answers the text ``pong``. OKX never pings at application level.
* ``{"event": "notice", "code": "64008", ..}`` comes 30-60 s before a service upgrade
  cuts the connection: a NOTICE, so the connector rotates to a fresh one. No forced
  cut after a fixed age is documented.
* ``bbo-tbt`` pushes a one-level snapshot (levels ``[price, size, "0", orders]``) every
  10 ms while the best level changes, and the latest snapshot again after about 60 s
  without change. Its ``ts`` is the time the push was triggered (our ``venue_ts``) and
  ``seqId`` the instrument's sequence id (our ``seq``; it may restart lower after
  maintenance). The instrument is named only in ``arg``. A side can be empty: that
  frame is DATA with no quote, detail "one-sided book". During a call auction the best
  ask may be below the best bid; the quote is passed on as OKX sends it.
* ``trades`` messages carry one aggregated trade per taker order and price: ``side``
  is the taker side ("buy"/"sell"), ``tradeId`` the last trade id of the aggregate and
  ``ts`` the fill time.

Discovery reads ``GET /api/v5/public/instruments?instType=SPOT`` (state ``live``,
named from ``baseCcy``/``quoteCcy``; entries announced but not yet listed carry empty
fields and are skipped with the other non-live states) and
``GET /api/v5/market/tickers?instType=SPOT`` (``volCcy24h``, for spot the 24 h volume
in quote currency). A REST body whose ``code`` is not "0" is an error.
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
from actors.venues.fields import FAST_DECLINED, LaxInt, Level, Millis, Price, Size, fast_decoder
from actors.venues.fields import array as _list
from actors.venues.fields import asset as _currency
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

VENUE = "okx"

#: Least seconds between two connection attempts: OKX allows 3 a second per IP; we
#: take 2 a second, so that a burst of reconnects stays a third under the limit.
CONNECT_INTERVAL_S = 0.5

#: Most connections we open at once. OKX documents no cap on public connections per
#: IP; the one connection count it does document is 30 per private channel and
#: sub-account, and we stay well below that too. 20 connections of 300 streams cover
#: every OKX spot instrument with trades.
MAX_CONNECTIONS = 20

#: Args per subscribe/unsubscribe request: small messages (a subscribe with too many
#: streams has been seen to fail silently elsewhere), and a full connection of
#: :attr:`OkxCodec.max_streams_per_connection` streams still needs only 15 of the 480
#: requests OKX allows a connection per hour.
ARGS_PER_REQUEST = 20

#: OKX: "the total length of multiple channels cannot exceed 64 KB" on one connection.
ARGS_BYTES_PER_CONNECTION = 64 * 1024

_BOOK_CHANNEL = "bbo-tbt"
_TRADE_CHANNEL = "trades"
_PING = "ping"
_PONG = "pong"
_PONG_BYTES = b"pong"
_TAKER_SIDES = MappingProxyType({"buy": Side.BUY, "sell": Side.SELL})
#: (an enum member read through its class costs ~0.1 us in CPython 3.11: once, here)
_DATA = FrameKind.DATA


class _BboEntry(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    # one level a side (an empty side, the strict path's "one-sided book", is declined)
    asks: tuple[Level]
    bids: tuple[Level]
    ts: Millis
    seqId: LaxInt = 0


class _BboArg(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    channel: Literal["bbo-tbt"]
    instId: str


class _Bbo(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The hot frame, exactly: a ``bbo-tbt`` push of one entry.

    Shaped so that a frame it takes needs no further checks but the instrument and the
    types of ``ts`` and ``seqId``: the channel is a literal, ``data`` and each side hold
    exactly one element (anything else is declined: the strict path decides it).
    """

    arg: _BboArg
    data: tuple[_BboEntry]


_decode_bbo = fast_decoder(_Bbo).decode

#: tells a trade frame from a book frame without decoding it (fields.py, "trade mark")
_TRADE_MARK = '"channel":"trades"'
_TRADE_MARK_BYTES = _TRADE_MARK.encode()
#: a letter every trade push holds (in its required key "px") and no book push: found
#: by memchr (~20 ns), it spares book pushes the search for the mark (~100 ns)
_TRADE_LETTER = "x"
_TRADE_LETTER_BYTES = _TRADE_LETTER.encode()


class _TradeEntry(msgspec.Struct, gc=False):
    # what _trades reads, and only that: it ignores an entry's other keys (count,
    # source, seqId ...), so msgspec may skip them (fields.py)
    instId: str
    tradeId: Annotated[str, msgspec.Meta(min_length=1)]
    px: Price
    sz: Size
    side: str
    ts: Millis


class _TradesArg(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    channel: Literal["trades"]
    instId: str


class _Trades(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A ``trades`` push of at least one trade."""

    arg: _TradesArg
    data: Annotated[list[_TradeEntry], msgspec.Meta(min_length=1)]


_decode_trades = fast_decoder(_Trades).decode


# int() also takes "+1", " 1", "1_0" and non-ASCII digits; OKX times are plain digits.
_DIGITS = re.compile(r"[0-9]{1,19}")



class OkxCodec:
    """Sans-IO codec for one OKX v5 public connection.

    Built with the symbol map of the current discovery (native instId -> SymbolInfo);
    frames for other instruments parse as UNKNOWN_SYMBOL. Request ids come from one
    counter inside the instance, starting at 1 and shared by subscribe and unsubscribe
    requests, so the text of every message is deterministic.
    """

    name: str = VENUE
    #: 64 KB of args allow about 1,200 streams of 53 bytes (a 20-character instId);
    #: 300 keep a connection's args under 16 KB, a fourfold margin, and its bbo-tbt
    #: traffic (up to 100 pushes a second per instrument) to what one reader drains.
    max_streams_per_connection: int = 300
    #: OKX documents no per-second cap on a public connection, only 480 subscribe
    #: requests an hour and 3 connection requests a second per IP; 2 a second sends
    #: a full connection's 15 requests in under 8 s, well inside the 30 s OKX waits
    #: for a first subscription.
    max_messages_per_second: float = 2.0
    #: OKX asks for a ``ping`` when nothing arrived for N < 30 s
    ping_interval: float | None = 20.0
    #: OKX documents no forced cut; a 64008 notice precedes upgrades
    max_connection_age_s: float | None = None
    waits_for_welcome: bool = False

    def __init__(self, symbols: Mapping[str, SymbolInfo]) -> None:
        self._symbols = dict(symbols)
        #: the fast paths' lookup: instId -> our symbol (an empty instId, which the
        #: strict path refuses, is left out)
        self._names = {native: info.symbol for native, info in self._symbols.items() if native}
        #: the taker sides for the fast path (a dict's get is quicker than a mapping
        #: proxy's; per codec, since module state must be immutable)
        self._sides = dict(_TAKER_SIDES)
        self._next_id = 1

    def ws_path(self, natives: Sequence[str]) -> str:
        return ""

    def subscribe_messages(self, natives: Sequence[str], *, trades: bool,
                           now_ms: int = 0) -> list[str | bytes]:
        """Subscribe requests for ``natives``, :data:`ARGS_PER_REQUEST` args each.

        Raises ValueError when the streams exceed :attr:`max_streams_per_connection`
        or their args OKX's 64 KB per connection: splitting symbols across
        connections is the caller's job.
        """
        return self._requests("subscribe", natives, trades)

    def unsubscribe_messages(self, natives: Sequence[str], *, trades: bool,
                             now_ms: int = 0) -> list[str | bytes]:
        return self._requests("unsubscribe", natives, trades)

    def _requests(self, op: str, natives: Sequence[str], trades: bool) -> list[str | bytes]:
        args: list[dict[str, str]] = []
        for native in natives:
            args.append({"channel": _BOOK_CHANNEL, "instId": native})
            if trades:
                args.append({"channel": _TRADE_CHANNEL, "instId": native})
        if len(args) > self.max_streams_per_connection:
            raise ValueError(
                f"{len(args)} streams exceed our cap of {self.max_streams_per_connection} "
                "per OKX connection"
            )
        args_bytes = sum(len(orjson.dumps(arg)) for arg in args)
        if args_bytes > ARGS_BYTES_PER_CONNECTION:
            raise ValueError(
                f"{args_bytes} bytes of args exceed OKX's {ARGS_BYTES_PER_CONNECTION} "
                "per connection"
            )
        messages: list[str | bytes] = []
        for start in range(0, len(args), ARGS_PER_REQUEST):
            request = {"id": self._take_id(), "op": op, "args": args[start : start + ARGS_PER_REQUEST]}
            messages.append(orjson.dumps(request).decode())
        return messages

    def ping_message(self, now_ms: int) -> str:
        return _PING

    def parse(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """Classify one frame; ``recv_ts`` (ns) is stamped on the records it carries.

        Error handling: raises FrameError, and only FrameError, when the frame is
        neither the text ``pong`` nor a JSON object of a documented shape, or misses or
        mistypes a field.
        """
        if ((_TRADE_LETTER in frame and _TRADE_MARK in frame) if type(frame) is str
                else (_TRADE_LETTER_BYTES in frame and _TRADE_MARK_BYTES in frame)):
            try:
                t = _decode_trades(frame)
            except FAST_DECLINED:
                return self.parse_strict(frame, recv_ts)
            native = t.arg.instId
            symbol = self._names.get(native)
            if symbol is None:
                return self.parse_strict(frame, recv_ts)
            trades = []
            for e in t.data:
                ts, side = e.ts, self._sides.get(e.side)
                if type(ts) is not int or side is None or e.instId != native:
                    return self.parse_strict(frame, recv_ts)
                trades.append(Trade(VENUE, symbol, e.px, e.sz, side, ts, recv_ts, e.tradeId))
            return Parsed(_DATA, tuple(trades))
        try:
            m = _decode_bbo(frame)
        except FAST_DECLINED:
            return self.parse_strict(frame, recv_ts)
        symbol = self._names.get(m.arg.instId)
        (entry,) = m.data
        ts, seq = entry.ts, entry.seqId
        if symbol is None or type(ts) is not int or type(seq) is not int:
            return self.parse_strict(frame, recv_ts)
        (bid,), (ask,) = entry.bids, entry.asks
        quote = Quote(VENUE, symbol, bid.price, bid.size, ask.price, ask.size, ts, recv_ts, seq)
        return Parsed(_DATA, (quote,))

    def parse_strict(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """The reference path for every frame: :meth:`parse` gives the same result for
        the frames it takes itself (``tests/test_codec_fast.py``)."""
        if frame == (_PONG_BYTES if isinstance(frame, bytes) else _PONG):
            return Parsed(FrameKind.PONG)
        with _frame_errors("malformed frame"):
            return _sound(self._classify(_load_object(frame), recv_ts))

    def _take_id(self) -> str:
        request_id = str(self._next_id)
        self._next_id += 1
        return request_id

    def _classify(self, message: dict[str, Any], recv_ts: int) -> Parsed:
        if "event" in message:
            return _event(message, _string(message, "event"))
        if "arg" in message:
            arg = _object(message["arg"], "arg")
            channel = _string(arg, "channel")
            if channel == _BOOK_CHANNEL:
                return self._books(message, _name(arg, "instId"), recv_ts)
            if channel == _TRADE_CHANNEL:
                return self._trades(message, _name(arg, "instId"), recv_ts)
            raise FrameError(f"unexpected channel {channel[:40]!r}")
        raise FrameError(f"unrecognised frame with keys {sorted(message)[:8]}")

    def _books(self, message: dict[str, Any], native: str, recv_ts: int) -> Parsed:
        entries = _list(message, "data")
        info = self._symbols.get(native)
        if info is None:
            return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
        quotes: list[Quote] = []
        one_sided = False
        for index, entry in enumerate(entries):
            item = _object(entry, f"data[{index}]")
            asks = _list(item, "asks")
            bids = _list(item, "bids")
            venue_ts = _millis(item, "ts")
            seq = _integer(item, "seqId") if "seqId" in item else 0
            if not bids or not asks:
                one_sided = True
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
        return Parsed(FrameKind.DATA, records=tuple(quotes),
                      detail="one-sided book" if one_sided else "")

    def _trades(self, message: dict[str, Any], native: str, recv_ts: int) -> Parsed:
        entries = _list(message, "data")
        info = self._symbols.get(native)
        if info is None:
            return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
        records: list[Trade] = []
        for index, entry in enumerate(entries):
            item = _object(entry, f"data[{index}]")
            inst_id = _string(item, "instId")
            if inst_id != native:
                raise FrameError(
                    f"field 'instId': {inst_id[:40]!r} in a trades message for {native!r}"
                )
            taker = _string(item, "side")
            side = _TAKER_SIDES.get(taker)
            if side is None:
                raise FrameError(f"field 'side': {taker[:20]!r} is neither 'buy' nor 'sell'")
            records.append(
                Trade(
                    venue=VENUE,
                    symbol=info.symbol,
                    price=_decimal(item, "px"),
                    size=_decimal(item, "sz"),
                    side=side,
                    venue_ts=_millis(item, "ts"),
                    recv_ts=recv_ts,
                    trade_id=_name(item, "tradeId"),
                )
            )
        return Parsed(FrameKind.DATA, records=tuple(records))


def _event(message: dict[str, Any], event: str) -> Parsed:
    """Acks, errors, notices and the other ``{"event": ..}`` frames OKX documents."""
    if event in ("subscribe", "unsubscribe"):
        detail = event
        if "arg" in message:
            arg = _object(message["arg"], "arg")
            detail = f"{event} {_string(arg, 'channel')} {_optional_text(arg, 'instId')}".rstrip()
        return Parsed(FrameKind.ACK, detail=_with_id(detail, message))
    if event == "error":
        return Parsed(FrameKind.ERROR, detail=_with_id(_code_and_msg(message), message))
    if event == "notice":
        return Parsed(FrameKind.NOTICE, detail=_code_and_msg(message))
    if event == "channel-conn-count":
        count = _optional_text(message, "connCount")
        return Parsed(FrameKind.INFO,
                      detail=f"{_string(message, 'channel')}: {count} connections")
    if event == "channel-conn-count-error":
        count = _optional_text(message, "connCount")
        return Parsed(FrameKind.ERROR, detail=(
            f"{_string(message, 'channel')}: connection count {count} over the limit, "
            "subscription terminated"
        ))
    if event == "login":
        return Parsed(FrameKind.INFO, detail=_with_id(f"login: {_code_and_msg(message)}", message))
    raise FrameError(f"unexpected event {event[:40]!r}")


def _code_and_msg(message: Mapping[str, Any]) -> str:
    return f"code {_optional_text(message, 'code')!r}: {_optional_text(message, 'msg')!r}"


def _with_id(detail: str, message: Mapping[str, Any]) -> str:
    request_id = _optional_text(message, "id")
    return f"{detail} (id {request_id!r})" if request_id else detail


def discovery_requests() -> tuple[RestRequest, RestRequest]:
    """(spot instruments, spot 24 h tickers). Neither endpoint is paginated."""
    return (
        RestRequest("/api/v5/public/instruments", {"instType": "SPOT"}),
        RestRequest("/api/v5/market/tickers", {"instType": "SPOT"}),
    )


def parse_instruments(body: bytes, aliases: Mapping[str, str]) -> list[SymbolInfo]:
    """Spot instruments in state ``live``, with aliased, upper-case base and quote.

    ``aliases`` maps an upper-case currency code to the one we use (e.g.
    ``{"XBT": "BTC"}``). Raises FrameError on an error payload (``code`` not "0") or a
    malformed one.
    """
    with _frame_errors("malformed instruments"):
        infos: list[SymbolInfo] = []
        for index, entry in enumerate(_data(body, "instruments")):
            item = _object(entry, f"data[{index}]")
            if _string(item, "state") != "live" or _string(item, "instType") != "SPOT":
                continue
            infos.append(
                SymbolInfo(
                    venue=VENUE,
                    native=_name(item, "instId"),
                    base=_currency(_name(item, "baseCcy"), aliases),
                    quote=_currency(_name(item, "quoteCcy"), aliases),
                )
            )
        return infos


def parse_volumes(body: bytes) -> dict[str, float]:
    """24 h quote volume (``volCcy24h``, quote currency for spot) per instId.

    Raises FrameError on an error payload or a malformed one.
    """
    with _frame_errors("malformed tickers"):
        volumes: dict[str, float] = {}
        for index, entry in enumerate(_data(body, "tickers")):
            item = _object(entry, f"data[{index}]")
            volumes[_name(item, "instId")] = _decimal(item, "volCcy24h")
        return volumes


def _data(body: bytes, endpoint: str) -> list[Any]:
    """``data`` of a v5 REST envelope; FrameError when ``code`` is not "0"."""
    document = _load_object(body)
    code = _field(document, "code")
    if isinstance(code, bool) or not isinstance(code, str | int):
        raise FrameError(f"field 'code': expected a string, got {type(code).__name__}")
    if str(code) != "0":
        raise FrameError(f"{endpoint} failed: code {str(code)[:20]}: {document.get('msg')!r}")
    return _list(document, "data")



def _level(value: object, name: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) < 2:
        raise FrameError(f"field {name!r}: expected [price, size, ...]")
    return _to_float(value[0], f"{name}[0]"), _to_float(value[1], f"{name}[1]")


def _optional_text(obj: Mapping[str, Any], key: str) -> str:
    """A string or integer field as text ("" when absent): codes, counts and ids."""
    value = obj.get(key, "")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FrameError(f"field {key!r}: expected a string, got {type(value).__name__}")
    return str(value)


def _millis(obj: Mapping[str, Any], key: str) -> int:
    """Milliseconds since the epoch, as OKX's digit string or a JSON integer."""
    value = _field(obj, key)
    if isinstance(value, str):
        if _DIGITS.fullmatch(value) is None:
            raise FrameError(f"field {key!r}: {value[:40]!r} is not a millisecond timestamp")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**19:
        raise FrameError(f"field {key!r}: expected a millisecond timestamp, got {value!r:.40}")
    return value


