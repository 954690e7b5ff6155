"""MEXC spot v3: codec for the aggregated book ticker and trade streams, and discovery.

Pure, like every venue module: no trio, no clock, no I/O. Receive time is an argument.
A frame or REST payload that does not parse as MEXC documents it raises
:class:`~actors.venues.base.FrameError` naming what was wrong; nothing else escapes.

What MEXC documents, and how this module relies on it:

* The market-stream endpoint ``wss://wbs-api.mexc.com/ws`` is the whole URL: the
  WebSocket path is empty. (The JSON endpoint ``wss://wbs.mexc.com/ws`` closed on
  2025-08-04.)
* We subscribe with ``{"method": "SUBSCRIPTION", "params": [...]}`` to
  ``spot@public.aggre.bookTicker.v3.api.pb@100ms@<SYMBOL>`` and, for trades,
  ``spot@public.aggre.deals.v3.api.pb@100ms@<SYMBOL>``; symbols are upper case.
* One connection carries at most 30 subscriptions; beyond that "any subscription will
  be invalid". We cap it at 20: other projects saw errors at 25 (see
  :attr:`MexcCodec.max_streams_per_connection`). No per-message limit is documented; we
  send :data:`STREAMS_PER_SUBSCRIBE` per message so that one refusal stays small.
* A connection may send 100 messages a second ("Websocket limits: 100 times/s"; above it
  the connection is cut and an IP cut repeatedly may be banned); we claim 10.
* The server closes a connection after 30 s without a valid subscription, after 1 min
  without data, and after at most 24 h. The client keeps it alive with
  ``{"method": "PING"}``, answered by ``{"id": 0, "code": 0, "msg": "PONG"}``.
* Data frames are **binary protobuf** ``PushDataV3ApiWrapper`` messages (the ``.proto``
  files are published at ``github.com/mexcdevelop/websocket-proto``): ``channel`` = 1,
  ``symbol`` = 3, ``symbolId`` = 4, ``createTime`` = 5, ``sendTime`` = 6 and a ``body``
  oneof, of which we read ``publicAggreDeals`` = 314 and ``publicAggreBookTicker`` =
  315 (and their same-shaped non-aggregated twins ``publicDeals`` = 301 and
  ``publicBookTicker`` = 305). A book ticker carries the strings ``bidPrice`` = 1,
  ``bidQuantity`` = 2, ``askPrice`` = 3, ``askQuantity`` = 4; a deals body carries
  repeated ``deals`` = 1 of {``price`` = 1, ``quantity`` = 2 (strings), ``tradeType`` =
  3 (int32: 1 buy, 2 sell, the taker's side), ``time`` = 4 (int64 ms)}.
  :func:`_decode` below is a small strict reader of the protobuf wire format.
* Our ``venue_ts`` is the wrapper's ``sendTime`` (the documented "event time" of these
  streams), else its ``createTime``, else 0; a trade's is its own ``time``. No sequence
  number or trade id is documented for these streams, so ``seq`` is 0 and
  ``trade_id`` empty.
* A proto3 writer leaves out empty strings, so a book ticker with neither price nor
  quantity on one side is a one-sided book: DATA without a quote, detail
  "one-sided book". A side with only one of the two is malformed.
* Control frames are JSON text, ``{"id": .., "code": .., "msg": ..}``: ``msg`` echoes
  the subscribed channels (comma separated) on success, or reads "Not Subscribed
  successfully! [..].  Reason\uff1a .." (a full-width colon) on refusal, with ``code``
  still 0; a non-zero ``code`` is an error too. MEXC documents no application-level
  ping from the server (its pings are WebSocket ping frames, which the WebSocket
  library answers) and no notice or welcome frame, so this codec returns no PING,
  NOTICE or INFO.

A text frame is JSON. A bytes frame is protobuf, unless its first byte is ``{``: that
byte would be a protobuf group-start tag, which proto3 never writes, so such a frame is
JSON delivered as bytes.

Discovery reads ``GET /api/v3/exchangeInfo`` (symbols whose ``status`` is ``"1"``,
online, or the older ``"ENABLED"``, and whose ``isSpotTradingAllowed`` is true, named
from ``baseAsset``/``quoteAsset``) and ``GET /api/v3/ticker/24hr`` (``quoteVolume``,
which the documentation shows as null at times: that reads as 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import orjson

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues.base import FrameError, FrameKind, Parsed, RestRequest
from actors.venues.fields import PARSE_FAILURES as _PARSE_FAILURES
from actors.venues.fields import array as _list
from actors.venues.fields import asset as _asset
from actors.venues.fields import field as _field
from actors.venues.fields import frame_errors as _frame_errors
from actors.venues.fields import integer as _integer
from actors.venues.fields import json_object as _object
from actors.venues.fields import load_object as _load_object
from actors.venues.fields import sound as _sound
from actors.venues.fields import to_float as _to_float

VENUE = "mexc"

#: Channels per SUBSCRIPTION message. MEXC documents no per-message limit; small
#: messages keep a refusal (which lists the channels it refused) small too.
STREAMS_PER_SUBSCRIBE = 10

#: Least seconds between two connection attempts from one IP. MEXC documents no
#: connection rate for market streams, only that "IPs that are repeatedly disconnected
#: may be banned"; one a second is Binance's documented 300 per 5 min, our usual margin.
CONNECT_INTERVAL_S = 1.0

#: Most connections we open to MEXC from one IP. No per-IP cap is documented for market
#: streams (the only documented connection cap is 5 per listen key, for user data);
#: 20 connections of 20 streams carry 400 streams, which we deem a polite ceiling.
MAX_CONNECTIONS = 20

#: Push interval of the aggregated streams: MEXC offers 100ms and 10ms.
PUSH_INTERVAL = "100ms"

BOOK_CHANNEL = f"spot@public.aggre.bookTicker.v3.api.pb@{PUSH_INTERVAL}@"
TRADE_CHANNEL = f"spot@public.aggre.deals.v3.api.pb@{PUSH_INTERVAL}@"

_PONG_TEXT = "PONG"
_REFUSAL = "Not Subscribed successfully"
_PARTIAL_SUCCESS = "Subscribed successful!"

# PushDataV3ApiWrapper field numbers, from PushDataV3ApiWrapper.proto.
_SYMBOL = 3
_CREATE_TIME = 5
_SEND_TIME = 6
_PUBLIC_DEALS = 301
_PUBLIC_BOOK_TICKER = 305
_AGGRE_DEALS = 314
_AGGRE_BOOK_TICKER = 315
_BODY_NAMES = MappingProxyType(
    {
        301: "publicDeals",
        302: "publicIncreaseDepths",
        303: "publicLimitDepths",
        304: "privateOrders",
        305: "publicBookTicker",
        306: "privateDeals",
        307: "privateAccount",
        308: "publicSpotKline",
        309: "publicMiniTicker",
        310: "publicMiniTickers",
        311: "publicBookTickerBatch",
        312: "publicIncreaseDepthsBatch",
        313: "publicAggreDepths",
        314: "publicAggreDeals",
        315: "publicAggreBookTicker",
    }
)
_BOOK_BODIES = frozenset({_AGGRE_BOOK_TICKER, _PUBLIC_BOOK_TICKER})
_DEALS_BODIES = frozenset({_AGGRE_DEALS, _PUBLIC_DEALS})

# Protobuf wire types; 3 and 4 (groups) are not proto3 and are refused.
_VARINT = 0
_I64 = 1
_LEN = 2
_I32 = 5

_TAKER_SIDES = MappingProxyType({1: Side.BUY, 2: Side.SELL})
_ONLINE_STATUSES = frozenset({"1", "ENABLED"})



#: One decoded protobuf message: field number -> every (wire type, value) in wire order.
_Fields = dict[int, list[tuple[int, int | bytes]]]


class MexcCodec:
    """Sans-IO codec for one MEXC spot v3 market-stream connection.

    Built with the symbol map of the current discovery (native symbol -> SymbolInfo);
    frames for other symbols parse as UNKNOWN_SYMBOL. Subscribe ids come from a counter
    inside the instance, starting at 1, so the text of every message is deterministic.
    """

    name: str = VENUE
    #: MEXC allows 30 subscriptions per connection and ignores any beyond; we keep a
    #: third in reserve, as other projects saw subscriptions fail at 25.
    max_streams_per_connection: int = 20
    #: a tenth of the documented 100 messages a second per connection
    max_messages_per_second: float = 10.0
    #: the server cuts a connection after 1 min without data; a ping keeps it alive
    ping_interval: float | None = 20.0
    #: MEXC cuts every connection after at most 24 h
    max_connection_age_s: float | None = 24 * 3600.0
    waits_for_welcome: bool = False

    def __init__(self, symbols: Mapping[str, SymbolInfo]) -> None:
        self._symbols = dict(symbols)
        self._next_id = 1

    def ws_path(self, natives: Sequence[str]) -> str:
        return ""

    def subscribe_messages(self, natives: Sequence[str], *, trades: bool,
                           now_ms: int = 0) -> list[str | bytes]:
        """SUBSCRIPTION messages for ``natives``, :data:`STREAMS_PER_SUBSCRIBE` channels each.

        Raises ValueError when the channels exceed :attr:`max_streams_per_connection`:
        splitting symbols across connections is the caller's job.
        """
        return self._requests("SUBSCRIPTION", natives, trades)

    def unsubscribe_messages(self, natives: Sequence[str], *, trades: bool,
                             now_ms: int = 0) -> list[str | bytes]:
        return self._requests("UNSUBSCRIPTION", natives, trades)

    def _requests(self, method: str, natives: Sequence[str], trades: bool) -> list[str | bytes]:
        channels: list[str] = []
        for native in natives:
            channels.append(f"{BOOK_CHANNEL}{native}")
            if trades:
                channels.append(f"{TRADE_CHANNEL}{native}")
        if len(channels) > self.max_streams_per_connection:
            raise ValueError(
                f"{len(channels)} channels exceed our cap of {self.max_streams_per_connection} "
                "per MEXC connection"
            )
        messages: list[str | bytes] = []
        for start in range(0, len(channels), STREAMS_PER_SUBSCRIBE):
            chunk = channels[start : start + STREAMS_PER_SUBSCRIBE]
            request = {"method": method, "params": chunk, "id": self._next_id}
            self._next_id += 1
            messages.append(orjson.dumps(request).decode())
        return messages

    def ping_message(self, now_ms: int) -> str | None:
        return '{"method":"PING"}'

    def parse(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """Classify one frame; ``recv_ts`` (ns) is stamped on the records it carries.

        Error handling: raises FrameError, and only FrameError, when a text frame is not
        a JSON control message, when a binary frame is not a well-formed
        ``PushDataV3ApiWrapper`` with a book ticker or deals body, or when a field is
        missing or mistyped.
        """
        with _frame_errors("malformed frame"):
            if isinstance(frame, str) or frame[:1] == b"{":
                return _control(_load_object(frame))
            return _sound(self._push(frame, recv_ts))

    def _push(self, frame: bytes, recv_ts: int) -> Parsed:
        wrapper = _decode(frame, "PushDataV3ApiWrapper")
        bodies = [number for number in wrapper if number in _BODY_NAMES]
        if not bodies:
            raise FrameError("PushDataV3ApiWrapper: no body")
        if len(bodies) > 1 or len(wrapper[bodies[0]]) > 1:
            raise FrameError(f"PushDataV3ApiWrapper: more than one body {sorted(bodies)}")
        number = bodies[0]
        body_name = _BODY_NAMES[number]
        if number not in _BOOK_BODIES and number not in _DEALS_BODIES:
            raise FrameError(f"unexpected body {body_name} ({number})")
        body = _decode(_message(wrapper, number, body_name), body_name)
        native = _string(wrapper, _SYMBOL, "symbol")
        if not native:
            raise FrameError("missing field 'symbol'")
        info = self._symbols.get(native)
        if info is None:
            return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
        if number in _BOOK_BODIES:
            return _book(info, body, _push_time(wrapper), recv_ts)
        return _deals(info, body, recv_ts)


def _push_time(wrapper: _Fields) -> int:
    send_time = _timestamp(wrapper, _SEND_TIME, "sendTime")
    return send_time if send_time else _timestamp(wrapper, _CREATE_TIME, "createTime")


def _book(info: SymbolInfo, body: _Fields, venue_ts: int, recv_ts: int) -> Parsed:
    bid = _string(body, 1, "bidPrice")
    bid_size = _string(body, 2, "bidQuantity")
    ask = _string(body, 3, "askPrice")
    ask_size = _string(body, 4, "askQuantity")
    if (not bid and not bid_size) or (not ask and not ask_size):
        return Parsed(FrameKind.DATA, detail="one-sided book")
    quote = Quote(
        venue=VENUE,
        symbol=info.symbol,
        bid=_decimal(bid, "bidPrice"),
        bid_size=_decimal(bid_size, "bidQuantity"),
        ask=_decimal(ask, "askPrice"),
        ask_size=_decimal(ask_size, "askQuantity"),
        venue_ts=venue_ts,
        recv_ts=recv_ts,
    )
    return Parsed(FrameKind.DATA, records=(quote,))


def _deals(info: SymbolInfo, body: _Fields, recv_ts: int) -> Parsed:
    records: list[Trade] = []
    for index, (wire, value) in enumerate(body.get(1, ())):
        name = f"deals[{index}]"
        if wire != _LEN or not isinstance(value, bytes):
            raise FrameError(f"field {name!r}: expected a message, got wire type {wire}")
        item = _decode(value, name)
        trade_type = _int32(item, 3, f"{name}.tradeType")
        side = _TAKER_SIDES.get(trade_type)
        if side is None:
            raise FrameError(f"field '{name}.tradeType': {trade_type} is neither 1 (buy) nor 2 (sell)")
        records.append(
            Trade(
                venue=VENUE,
                symbol=info.symbol,
                price=_decimal(_string(item, 1, f"{name}.price"), f"{name}.price"),
                size=_decimal(_string(item, 2, f"{name}.quantity"), f"{name}.quantity"),
                side=side,
                venue_ts=_timestamp(item, 4, f"{name}.time"),
                recv_ts=recv_ts,
            )
        )
    return Parsed(FrameKind.DATA, records=tuple(records))


def _control(message: dict[str, Any]) -> Parsed:
    """Acks, refusals, errors and pongs: ``{"id": .., "code": .., "msg": ..}``."""
    if "code" not in message and "msg" not in message:
        raise FrameError(f"unrecognised frame with keys {sorted(message)[:8]}")
    code = _integer(message, "code")
    msg = _string_value(message, "msg")
    if code != 0:
        return Parsed(FrameKind.ERROR, detail=f"code {code}: {msg[:200]!r}")
    if msg == _PONG_TEXT:
        return Parsed(FrameKind.PONG)
    if _REFUSAL in msg:
        return Parsed(FrameKind.ERROR, detail=msg[:300])
    if msg.startswith(_PARTIAL_SUCCESS) or _is_channel_list(msg):
        return Parsed(FrameKind.ACK, detail=msg[:300])
    raise FrameError(f"field 'msg': unrecognised {msg[:60]!r}")


def _is_channel_list(msg: str) -> bool:
    return all(channel.strip().startswith("spot@") for channel in msg.split(","))


def discovery_requests() -> tuple[RestRequest, RestRequest]:
    """(instruments, 24 h tickers of every symbol)."""
    return (
        RestRequest("/api/v3/exchangeInfo"),
        RestRequest("/api/v3/ticker/24hr"),
    )


def parse_instruments(body: bytes, aliases: Mapping[str, str]) -> list[SymbolInfo]:
    """Online symbols that allow spot trading, with aliased, upper-case base and quote assets.

    ``aliases`` maps an upper-case asset code to the one we use (e.g. ``{"XBT": "BTC"}``).
    Raises FrameError on an error payload or a malformed one.
    """
    with _frame_errors("malformed exchangeInfo"):
        document = _load_object(body)
        if "symbols" not in document and "code" in document:
            raise FrameError(
                f"exchangeInfo failed: code {document.get('code')!r}: {document.get('msg')!r}"
            )
        infos: list[SymbolInfo] = []
        for index, entry in enumerate(_list(document, "symbols")):
            item = _object(entry, f"symbols[{index}]")
            if _string_value(item, "status") not in _ONLINE_STATUSES:
                continue
            allowed = _field(item, "isSpotTradingAllowed")
            if not isinstance(allowed, bool):
                raise FrameError(
                    f"field 'isSpotTradingAllowed': expected a boolean, got {type(allowed).__name__}"
                )
            if not allowed:
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
    """24 h quote volume per native symbol, from the ticker list; null reads as 0.

    Raises FrameError on an error payload or a malformed one.
    """
    try:
        tickers = orjson.loads(body)
        if isinstance(tickers, dict) and "code" in tickers:
            raise FrameError(
                f"ticker/24hr failed: code {tickers.get('code')!r}: {tickers.get('msg')!r}"
            )
        if not isinstance(tickers, list):
            raise FrameError(f"ticker/24hr: expected a JSON array, got {type(tickers).__name__}")
        volumes: dict[str, float] = {}
        for index, entry in enumerate(tickers):
            item = _object(entry, f"[{index}]")
            volume = _field(item, "quoteVolume")
            volumes[_name(item, "symbol")] = (
                0.0 if volume is None else _to_float(volume, "quoteVolume")
            )
        return volumes
    except FrameError:
        raise
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"ticker/24hr: invalid JSON: {exc}") from exc
    except _PARSE_FAILURES as exc:
        raise FrameError(f"malformed ticker/24hr: {type(exc).__name__}: {exc}") from exc



# --- protobuf wire format ---------------------------------------------------------------


def _decode(data: bytes, message: str) -> _Fields:
    """Every field of one protobuf message, by number, in wire order.

    Varint, 64-bit, length-delimited and 32-bit fields are read (unknown ones are kept
    and never looked at); groups, field number 0, truncated or overlong varints and
    lengths that run past the end raise FrameError naming ``message``.
    """
    fields: _Fields = {}
    end = len(data)
    pos = 0
    while pos < end:
        key, pos = _varint(data, pos, f"{message}: tag")
        number, wire = key >> 3, key & 7
        if number == 0 or key > 0xFFFFFFFF:
            raise FrameError(f"{message}: invalid field number {number}")
        value: int | bytes
        if wire == _VARINT:
            value, pos = _varint(data, pos, f"{message}: field {number}")
        elif wire in (_I64, _I32, _LEN):
            if wire == _LEN:
                size, pos = _varint(data, pos, f"{message}: field {number} length")
            else:
                size = 8 if wire == _I64 else 4
            if size > end - pos:
                raise FrameError(
                    f"{message}: field {number} needs {size} bytes, {end - pos} left"
                )
            value = data[pos : pos + size]
            pos += size
        else:
            raise FrameError(f"{message}: field {number} has unsupported wire type {wire}")
        fields.setdefault(number, []).append((wire, value))
    return fields


def _varint(data: bytes, pos: int, name: str) -> tuple[int, int]:
    """A base-128 varint of at most 10 bytes (64 bits) at ``pos``, and the position after it."""
    result = 0
    for index in range(10):
        if pos >= len(data):
            raise FrameError(f"{name}: truncated varint")
        byte = data[pos]
        pos += 1
        if index == 9 and byte > 1:
            raise FrameError(f"{name}: varint longer than 64 bits")
        result |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            return result, pos
    raise FrameError(f"{name}: varint longer than 64 bits")


def _last(fields: _Fields, number: int, wire: int, name: str) -> int | bytes | None:
    """The value of a singular field (the last one on the wire wins), or None if absent."""
    occurrences = fields.get(number)
    if not occurrences:
        return None
    found, value = occurrences[-1]
    if found != wire:
        raise FrameError(f"field {name!r}: wire type {found}, expected {wire}")
    return value


def _bytes(fields: _Fields, number: int, name: str) -> bytes | None:
    value = _last(fields, number, _LEN, name)
    return value if isinstance(value, bytes) else None


def _message(fields: _Fields, number: int, name: str) -> bytes:
    value = _bytes(fields, number, name)
    if value is None:
        raise FrameError(f"missing field {name!r}")
    return value


def _string(fields: _Fields, number: int, name: str) -> str:
    """A proto3 string field: empty when absent; FrameError when not UTF-8."""
    value = _bytes(fields, number, name)
    if value is None:
        return ""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(f"field {name!r}: not UTF-8") from None


def _decimal(text: str, name: str) -> float:
    """A proto3 decimal string: absent (empty) is missing, anything else as :func:`_to_float`."""
    if not text:
        raise FrameError(f"missing field {name!r}")
    return _to_float(text, name)


def _signed64(fields: _Fields, number: int, name: str) -> int:
    """An int64 or int32 varint (two's complement over 64 bits): 0 when absent."""
    value = _last(fields, number, _VARINT, name)
    if not isinstance(value, int):
        return 0
    return value - (1 << 64) if value >= 1 << 63 else value


def _int32(fields: _Fields, number: int, name: str) -> int:
    value = _signed64(fields, number, name)
    if not -(1 << 31) <= value < 1 << 31:
        raise FrameError(f"field {name!r}: {value} out of int32 range")
    return value


def _timestamp(fields: _Fields, number: int, name: str) -> int:
    """An int64 millisecond time: 0 when absent; FrameError when negative."""
    value = _signed64(fields, number, name)
    if value < 0:
        raise FrameError(f"field {name!r}: negative time {value}")
    return value


# --- JSON -------------------------------------------------------------------------------


def _string_value(obj: Mapping[str, Any], key: str) -> str:
    value = _field(obj, key)
    if not isinstance(value, str):
        raise FrameError(f"field {key!r}: expected a string, got {type(value).__name__}")
    return value


def _name(obj: Mapping[str, Any], key: str) -> str:
    value = _string_value(obj, key)
    if not value:
        raise FrameError(f"field {key!r}: empty")
    return value


