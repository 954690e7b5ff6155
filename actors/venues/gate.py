"""Gate v4 spot: codec for ``spot.book_ticker`` and ``spot.trades``, and discovery.

Pure, like every venue module: no trio, no clock, no I/O. Receive time is an argument.
A frame or REST payload that does not parse as Gate documents it raises
:class:`~actors.venues.base.FrameError` naming what was wrong; nothing else escapes.

What Gate documents (Spot WebSocket v4 and APIv4 pages), and how this module relies on it:

* The endpoint is ``wss://api.gateio.ws/ws/v4/``, trailing slash included. The connector
  strips trailing slashes off the configured URL before appending :meth:`GateCodec.ws_path`,
  so the path restores the slash and we connect to exactly the documented URL.
* Every request carries ``time`` in seconds, which must be within 60 s of server time
  (the ``now_ms`` argument), and may carry an integer ``id`` that the server echoes in
  its reply; ours come from a counter in the instance. One request names one channel and
  a ``payload`` list of currency pairs.
* Gate documents no limit on subscriptions per connection, messages per second or
  connections per IP; its maintainers recommend at most 100 connections per host and
  warn that the server closes a connection whose client does not consume updates in
  time (gateio/gatews#25). Hence the conservative caps below.
* Replies share one envelope: ``error`` is null on success, else ``{"code", "message"}``
  (ERROR); a subscribe or unsubscribe reply without an error is an ACK. The docs say
  checking ``error`` suffices, so ``result`` is only looked at to catch an explicit
  non-success ``status`` (the SBE refusal example carries ``{"status": "fail"}``).
* The server checks liveness with protocol pings (answered by the WebSocket library);
  ``{"time": .., "channel": "spot.ping"}`` is an optional application ping that also
  resets the server's timeout timer, answered on channel ``spot.pong`` (PONG).
* Before a service upgrade the server pushes ``channel`` ``spot.system``, ``event``
  ``update``, ``result`` ``{"type": "upgrade", "msg": ..}`` (NOTICE: reconnect soon).
  Until 2026-07 the docs showed only the bare ``{"type": "upgrade", "msg": ..}`` object;
  it is accepted too. Other ``spot.system`` types (SBE schema notes) are INFO.
* ``spot.book_ticker`` (every 10 ms) carries ``t`` (book update time, ms: our
  ``venue_ts``), ``u`` (book update id: our ``seq``), ``s``, ``b``/``B``, ``a``/``A``.
* ``spot.trades`` carries one trade per message, taker side only: ``side``
  (``buy``/``sell``), ``id`` (our ``trade_id``), ``create_time_ms`` (a decimal string in
  ms with sub-ms digits: truncated to whole ms), ``amount``, ``price``.
* This codec reads the JSON endpoint only. The binary SBE feed lives at another URL
  (``.../ws/spot/sbe``); a binary frame is not JSON here and raises FrameError.

Discovery reads ``GET /api/v4/spot/currency_pairs`` (pairs whose ``trade_status`` is
``tradable``; ``buyable``/``sellable`` allow one side only, so their quotes cannot be
traded both ways) and ``GET /api/v4/spot/tickers`` (``quote_volume``, the 24 h quote
volume). APIv4 errors are ``{"label": .., "message": ..}`` objects.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import msgspec
import orjson

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues.base import FrameError, FrameKind, Parsed, RestRequest
from actors.venues.fields import (
    FAST_DECLINED,
    LaxInt,
    Price,
    Size,
    fast_decoder,
)
from actors.venues.fields import asset as _currency
from actors.venues.fields import decimal as _decimal
from actors.venues.fields import field as _field
from actors.venues.fields import frame_errors as _frame_errors
from actors.venues.fields import json_object as _object
from actors.venues.fields import name as _name
from actors.venues.fields import sound as _sound
from actors.venues.fields import string as _string

VENUE = "gate"

#: Least seconds between two connection attempts. Gate documents no per-IP connection
#: rate; one a second is the pace that Binance's documented 300 per 5 min allows, and it
#: opens :data:`MAX_CONNECTIONS` connections in under a minute.
CONNECT_INTERVAL_S = 1.0

#: Most connections we open at once: half the 100 per host Gate's maintainers recommend.
MAX_CONNECTIONS = 50

#: Currency pairs per subscribe request. Gate documents no cap; small requests keep one
#: rejected pair (the whole request fails) from costing many subscriptions, and stay far
#: below sizes that have been seen to fail silently elsewhere.
PAIRS_PER_SUBSCRIBE = 20

_BOOK_CHANNEL = "spot.book_ticker"


class _BookResult(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    t: LaxInt
    u: LaxInt
    s: str
    b: Price
    B: Size
    a: Price
    A: Size


class _BookTicker(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The hot frame, exactly: a ``spot.book_ticker`` update (channel and event are literals)."""

    channel: Literal["spot.book_ticker"]
    event: Literal["update"]
    result: _BookResult
    time: Any = None
    time_ms: Any = None


_decode_book_ticker = fast_decoder(_BookTicker).decode

#: tells a trade frame from a book frame without decoding it (fields.py, "trade mark")
_TRADE_MARK = '"spot.trades"'
_TRADE_MARK_BYTES = _TRADE_MARK.encode()
#: a letter every trade push holds (in its required key "currency_pair") and no book push: found
#: by memchr (~20 ns), it spares book pushes the search for the mark (~100 ns)
_TRADE_LETTER = "y"
_TRADE_LETTER_BYTES = _TRADE_LETTER.encode()


class _TradeResult(msgspec.Struct, gc=False):
    # what _trade reads, and only that: it ignores the other keys of ``result``
    # (id_market, create_time, range ...), so msgspec may skip them (fields.py)
    id: LaxInt
    create_time_ms: str  # as documented: "1606292218213.4578" (a JSON number is declined)
    side: str
    currency_pair: str
    amount: Size
    price: Price


class _Trades(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A ``spot.trades`` update (channel and event are literals)."""

    channel: Literal["spot.trades"]
    event: Literal["update"]
    result: _TradeResult
    time: Any = None
    time_ms: Any = None


_decode_trades = fast_decoder(_Trades).decode
_TRADE_CHANNEL = "spot.trades"
_PING_CHANNEL = "spot.ping"
_PONG_CHANNEL = "spot.pong"
_SYSTEM_CHANNEL = "spot.system"
_TAKER_SIDES = MappingProxyType({"buy": Side.BUY, "sell": Side.SELL})
#: (an enum member read through its class costs ~0.1 us in CPython 3.11: once, here)
_DATA = FrameKind.DATA

# "1606292218213.4578": milliseconds with the sub-millisecond part as decimals.
_MILLIS = re.compile(r"([0-9]+)(?:\.[0-9]+)?")
# Records end up in int64 columns; orjson also yields integers up to 2**64 - 1.
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1



class GateCodec:
    """Sans-IO codec for one Gate v4 public spot connection.

    Built with the symbol map of the current discovery (native symbol -> SymbolInfo);
    frames for other symbols parse as UNKNOWN_SYMBOL. Request ids come from one counter
    inside the instance, starting at 1, so the text of every message is deterministic
    for a given ``now_ms``.
    """

    name: str = VENUE
    #: Gate documents no per-connection cap but closes connections whose client falls
    #: behind; book tickers push every 10 ms per pair, so we keep 100 streams (50 pairs
    #: with trades) per connection: 200 symbols fit in 4 of our 50 connections.
    max_streams_per_connection: int = 100
    #: Gate documents no client message limit; 4 a second, the margin we keep under
    #: Binance's documented 5, paces the few subscribe requests a connection sends.
    max_messages_per_second: float = 4.0
    #: The server pings at protocol level; our application ping every 20 s proves the
    #: path end to end and resets the server's timeout timer.
    ping_interval: float | None = 20.0
    #: Gate documents no forced cut; upgrades are announced with a NOTICE instead.
    max_connection_age_s: float | None = None
    waits_for_welcome: bool = False

    def __init__(self, symbols: Mapping[str, SymbolInfo]) -> None:
        self._symbols = dict(symbols)
        #: the fast paths' lookup: currency pair -> our symbol
        self._names = {native: info.symbol for native, info in self._symbols.items()}
        #: the taker sides for the fast path (a dict's get is quicker than a mapping
        #: proxy's; per codec, since module state must be immutable)
        self._sides = dict(_TAKER_SIDES)
        self._next_id = 1

    def ws_path(self, natives: Sequence[str]) -> str:
        """The documented URL ends in ``/ws/v4/``; the connector strips that last slash."""
        return "/"

    def subscribe_messages(self, natives: Sequence[str], *, trades: bool,
                           now_ms: int = 0) -> list[str | bytes]:
        """Subscribe requests, :data:`PAIRS_PER_SUBSCRIBE` pairs each, book tickers first.

        ``now_ms`` is the current time: Gate refuses a ``time`` more than 60 s off.
        Raises ValueError when the streams exceed :attr:`max_streams_per_connection`:
        splitting symbols across connections is the caller's job.
        """
        return self._requests("subscribe", natives, trades, now_ms)

    def unsubscribe_messages(self, natives: Sequence[str], *, trades: bool,
                             now_ms: int = 0) -> list[str | bytes]:
        return self._requests("unsubscribe", natives, trades, now_ms)

    def _requests(self, event: str, natives: Sequence[str], trades: bool,
                  now_ms: int) -> list[str | bytes]:
        channels = (_BOOK_CHANNEL, _TRADE_CHANNEL) if trades else (_BOOK_CHANNEL,)
        streams = len(natives) * len(channels)
        if streams > self.max_streams_per_connection:
            raise ValueError(
                f"{streams} streams exceed our cap of {self.max_streams_per_connection} "
                "per Gate connection"
            )
        pairs = list(natives)
        messages: list[str | bytes] = []
        for channel in channels:
            for start in range(0, len(pairs), PAIRS_PER_SUBSCRIBE):
                request = {
                    "time": now_ms // 1000,
                    "id": self._take_id(),
                    "channel": channel,
                    "event": event,
                    "payload": pairs[start : start + PAIRS_PER_SUBSCRIBE],
                }
                messages.append(orjson.dumps(request).decode())
        return messages

    def ping_message(self, now_ms: int) -> str | None:
        return orjson.dumps({"time": now_ms // 1000, "channel": _PING_CHANNEL}).decode()

    def parse(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """Classify one frame; ``recv_ts`` (ns) is stamped on the records it carries.

        Error handling: raises FrameError, and only FrameError, when the frame is not
        JSON, not an object, of an unknown shape, or misses or mistypes a field.
        """
        if ((_TRADE_LETTER in frame and _TRADE_MARK in frame) if type(frame) is str
                else (_TRADE_LETTER_BYTES in frame and _TRADE_MARK_BYTES in frame)):
            try:
                e = _decode_trades(frame).result
            except FAST_DECLINED:
                return self.parse_strict(frame, recv_ts)
            symbol = self._names.get(e.currency_pair)
            side, trade_id, stamp = self._sides.get(e.side), e.id, e.create_time_ms
            # the stamp as _millis reads a string: [0-9]+ of at most 18 digits, then
            # optionally "." and [0-9]+ (isdigit() alone would take non-ASCII digits)
            whole, dot, fraction = stamp.partition(".")
            if (symbol is None or side is None or type(trade_id) is not int
                    or not stamp.isascii() or not whole.isdigit() or len(whole) > 18
                    or (dot and not fraction.isdigit())):
                return self.parse_strict(frame, recv_ts)
            trade = Trade(VENUE, symbol, e.price, e.amount, side, int(whole), recv_ts, str(trade_id))
            return Parsed(_DATA, (trade,))
        try:
            m = _decode_book_ticker(frame)
        except FAST_DECLINED:
            return self.parse_strict(frame, recv_ts)
        r = m.result
        t, u = r.t, r.u  # (a LaxInt that is an int is within int64, as _integer requires)
        symbol = self._names.get(r.s)
        if symbol is None or type(t) is not int or type(u) is not int:
            return self.parse_strict(frame, recv_ts)
        return Parsed(_DATA, (Quote(VENUE, symbol, r.b, r.B, r.a, r.A, t, recv_ts, u),))

    def parse_strict(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """The reference path for every frame: :meth:`parse` gives the same result for
        the frames it takes itself (``tests/test_codec_fast.py``)."""
        with _frame_errors("malformed frame"):
            return _sound(self._classify(_object(_json(frame, "frame"), "frame"), recv_ts))

    def _take_id(self) -> int:
        request_id = self._next_id
        self._next_id += 1
        return request_id

    def _classify(self, message: dict[str, Any], recv_ts: int) -> Parsed:
        if message.get("error") is not None:
            return _error(message)
        if "channel" not in message:
            if "type" in message:
                return _system(message)
            raise FrameError(f"unrecognised frame with keys {sorted(message)[:8]}")
        channel = _string(message, "channel")
        event = _event(message)
        if channel == _PONG_CHANNEL:
            return Parsed(FrameKind.PONG)
        if channel == _SYSTEM_CHANNEL and event == "update":
            return _system(_object(_field(message, "result"), "result"))
        if event in ("subscribe", "unsubscribe"):
            return _reply(message, channel, event)
        if event == "update":
            if channel == _BOOK_CHANNEL:
                return self._book(_object(_field(message, "result"), "result"), recv_ts)
            if channel == _TRADE_CHANNEL:
                return self._trade(_object(_field(message, "result"), "result"), recv_ts)
        raise FrameError(f"unexpected channel {channel[:40]!r} with event {event[:20]!r}")

    def _book(self, result: dict[str, Any], recv_ts: int) -> Parsed:
        native = _string(result, "s")
        info = self._symbols.get(native)
        if info is None:
            return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
        quote = Quote(
            venue=VENUE,
            symbol=info.symbol,
            bid=_decimal(result, "b"),
            bid_size=_decimal(result, "B"),
            ask=_decimal(result, "a"),
            ask_size=_decimal(result, "A"),
            venue_ts=_integer(result, "t"),
            recv_ts=recv_ts,
            seq=_integer(result, "u"),
        )
        return Parsed(FrameKind.DATA, records=(quote,))

    def _trade(self, result: dict[str, Any], recv_ts: int) -> Parsed:
        native = _string(result, "currency_pair")
        info = self._symbols.get(native)
        if info is None:
            return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
        taker = _string(result, "side")
        side = _TAKER_SIDES.get(taker)
        if side is None:
            raise FrameError(f"field 'side': {taker[:20]!r} is neither 'buy' nor 'sell'")
        trade = Trade(
            venue=VENUE,
            symbol=info.symbol,
            price=_decimal(result, "price"),
            size=_decimal(result, "amount"),
            side=side,
            venue_ts=_millis(result, "create_time_ms"),
            recv_ts=recv_ts,
            trade_id=str(_integer(result, "id")),
        )
        return Parsed(FrameKind.DATA, records=(trade,))


def _error(message: dict[str, Any]) -> Parsed:
    """A refused request: ``"error": {"code": .., "message": ..}`` in the reply envelope."""
    error = _object(message["error"], "error")
    code = _integer(error, "code")
    reason = _string(error, "message")
    channel = message.get("channel")
    event = message.get("event")
    what = " ".join(str(part)[:40] for part in (event, channel) if part) or "request"
    return Parsed(FrameKind.ERROR,
                  detail=f"{what} failed: code {code}: {reason[:200]!r}{_id_suffix(message)}")


def _reply(message: dict[str, Any], channel: str, event: str) -> Parsed:
    """A subscribe/unsubscribe reply without an error: an ACK unless its status says not."""
    result = message.get("result")
    status = result.get("status") if isinstance(result, dict) else None
    if status is not None and status != "success":
        return Parsed(FrameKind.ERROR,
                      detail=f"{event} {channel[:40]} failed: status {str(status)[:40]!r}"
                             f"{_id_suffix(message)}")
    return Parsed(FrameKind.ACK, detail=f"{event} {channel[:40]}{_id_suffix(message)}")


def _system(notice: dict[str, Any]) -> Parsed:
    """A system notification (SystemNotifyDTO): ``upgrade`` means reconnect soon."""
    kind = _string(notice, "type")
    text = notice.get("msg", "")
    if not isinstance(text, str):
        raise FrameError(f"field 'msg': expected a string, got {type(text).__name__}")
    detail = f"{kind[:40]}: {text[:200]}"
    if kind == "upgrade":
        return Parsed(FrameKind.NOTICE, detail=detail)
    return Parsed(FrameKind.INFO, detail=detail)


def _event(message: Mapping[str, Any]) -> str:
    """The ``event`` field; the pong carries ``""``, a missing or null one counts as that."""
    event = message.get("event")
    if event is None:
        return ""
    if not isinstance(event, str):
        raise FrameError(f"field 'event': expected a string, got {type(event).__name__}")
    return event


def _id_suffix(message: Mapping[str, Any]) -> str:
    """`` (id N)`` when the reply echoes a request id, else ``""``."""
    request_id = message.get("id")
    if request_id is None:
        return ""
    if isinstance(request_id, bool) or not isinstance(request_id, int):
        raise FrameError(f"field 'id': expected an integer, got {type(request_id).__name__}")
    return f" (id {request_id})"


def discovery_requests() -> tuple[RestRequest, RestRequest]:
    """(spot currency pairs, spot 24 h tickers). Neither endpoint is paginated."""
    return (
        RestRequest("/api/v4/spot/currency_pairs"),
        RestRequest("/api/v4/spot/tickers"),
    )


def parse_instruments(body: bytes, aliases: Mapping[str, str]) -> list[SymbolInfo]:
    """Currency pairs whose ``trade_status`` is ``tradable``, with aliased, upper-case names.

    ``aliases`` maps an upper-case currency code to the one we use (e.g. ``{"XBT": "BTC"}``).
    Raises FrameError on an APIv4 error payload or a malformed one.
    """
    with _frame_errors("malformed currency_pairs"):
        infos: list[SymbolInfo] = []
        for index, entry in enumerate(_rest_list(body, "currency_pairs")):
            item = _object(entry, f"[{index}]")
            if _string(item, "trade_status") != "tradable":
                continue
            infos.append(
                SymbolInfo(
                    venue=VENUE,
                    native=_name(item, "id"),
                    base=_currency(_name(item, "base"), aliases),
                    quote=_currency(_name(item, "quote"), aliases),
                )
            )
        return infos


def parse_volumes(body: bytes) -> dict[str, float]:
    """24 h quote volume (``quote_volume``) per currency pair. Raises FrameError."""
    with _frame_errors("malformed tickers"):
        volumes: dict[str, float] = {}
        for index, entry in enumerate(_rest_list(body, "tickers")):
            item = _object(entry, f"[{index}]")
            volumes[_name(item, "currency_pair")] = _decimal(item, "quote_volume")
        return volumes


def _rest_list(body: bytes, endpoint: str) -> list[Any]:
    """The top-level array of an APIv4 reply; FrameError on a ``{"label", "message"}`` error."""
    document = _json(body, endpoint)
    if isinstance(document, dict) and "label" in document:
        reason = document.get("message", document.get("detail"))
        raise FrameError(f"{endpoint} failed: {str(document['label'])[:60]}: {reason!r}")
    if not isinstance(document, list):
        raise FrameError(f"{endpoint}: expected a JSON array, got {type(document).__name__}")
    return document



def _json(raw: str | bytes, name: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"{name}: invalid JSON: {exc}") from exc


def _integer(obj: Mapping[str, Any], key: str) -> int:
    value = _field(obj, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameError(f"field {key!r}: expected an integer, got {type(value).__name__}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise FrameError(f"field {key!r}: {value} does not fit in 64 bits")
    return value


def _millis(obj: Mapping[str, Any], key: str) -> int:
    """Whole milliseconds from ``"1606292218213.4578"`` (documented) or a JSON number."""
    value = _field(obj, key)
    if isinstance(value, str):
        match = _MILLIS.fullmatch(value)
        if match is None or len(match.group(1)) > 18:
            raise FrameError(f"field {key!r}: {value[:40]!r} is not a millisecond timestamp")
        return int(match.group(1))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FrameError(f"field {key!r}: expected a timestamp, got {type(value).__name__}")
    if not (math.isfinite(value) and 0 <= value <= _INT64_MAX):
        raise FrameError(f"field {key!r}: {value} is not a millisecond timestamp")
    return int(value)


