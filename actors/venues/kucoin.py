"""KuCoin classic spot: codec for ``/spotMarket/level1`` and ``/market/match``, discovery, bootstrap.

Pure, like every venue module: no trio, no clock, no I/O. Receive time is an argument.
A frame or REST payload that does not parse as KuCoin documents it raises
:class:`~actors.venues.base.FrameError` naming what was wrong; nothing else escapes.

What KuCoin documents, and how this module relies on it:

* There is no fixed WebSocket URL. Before every connection the connector POSTs
  ``/api/v1/bullet-public`` (:func:`bootstrap_request`); the answer names an endpoint
  (``wss://ws-api-spot.kucoin.com/``), a token and ``pingInterval``/``pingTimeout`` in
  ms, and we connect to ``{endpoint}?token={token}&connectId={connect_id}``
  (:func:`parse_bootstrap`). :meth:`KucoinCodec.ws_path` is therefore empty.
* The server greets every connection with ``{"id": .., "type": "welcome"}`` (INFO).
* The client sends ``{"id": .., "type": "ping"}`` every ``pingInterval`` (18 s in the
  documented answer; the bootstrap value wins) and gets ``{"id": .., "type": "pong"}``.
* Subscribe and unsubscribe requests carry one topic; a topic lists up to 100 symbols
  (``/spotMarket/level1:BTC-USDT,ETH-USDT``) and one request may subscribe at most 100
  topics. With ``"response": true`` the server answers ``{"id": .., "type": "ack"}``,
  or ``{"id": .., "type": "error", "code": .., "data": ..}`` (ERROR).
* Limits: 100 uplink messages per 10 s per connection, 400 topics per connection (300
  in older docs), 30 new connections a minute and 800 connections per user (50 in
  older docs). A token is valid for 24 h and a connection is expected to be cut after
  24 h.
* Messages come in three types: ``message`` (data), ``notice`` and ``command``. No
  notice is documented for the public spot feed, so any ``notice`` is taken as an
  announcement (NOTICE: the connector rotates, make-before-break); ``command`` is INFO.
  KuCoin documents no server-side application ping; one that came would be answered
  with the matching pong all the same.
* ``level1`` pushes the best bid and ask (``[price, size]`` a side) every 10 ms when
  they changed, with ``timestamp`` (ms, our ``venue_ts``) and no sequence: ``seq`` is
  0. The symbol is only in the topic. A side that comes empty is DATA without a quote.
* ``trade.l3match`` carries one trade: ``side`` is the taker's side (the spot docs do
  not say, kucoin-api-docs #470; the futures execution docs name it the taker's, and
  we follow them), ``time`` is in nanoseconds (our ``venue_ts`` is it in ms), the
  trade id is ``tradeId``.

Discovery reads ``GET /api/v2/symbols`` (``enableTrading``; named from
``baseCurrency``/``quoteCurrency``) and ``GET /api/v1/market/allTickers`` (``volValue``,
the 24 h quote volume).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Annotated, Any, Literal
from urllib.parse import quote

import msgspec
import orjson

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues.base import Bootstrap, FrameError, FrameKind, Parsed, RestRequest
from actors.venues.fields import (
    FAST_DECLINED,
    LaxInt,
    Millis,
    Price,
    Size,
    fast_decoder,
)
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

VENUE = "kucoin"

#: Symbols per subscribe request: half of KuCoin's documented 100 symbols a topic and
#: 100 topics a request, so one request stays small (an oversized subscribe has been
#: seen to fail silently elsewhere, ccxws #161).
SYMBOLS_PER_SUBSCRIBE = 50

#: Least seconds between two connection attempts: KuCoin allows 30 a minute (one per
#: 2 s); we keep 25 % under it. Every attempt also costs a bullet-public POST.
CONNECT_INTERVAL_S = 2.5

#: Most connections we open at once: KuCoin documents 800 per user now (50 in older
#: docs, and no figure for public connections per IP); we stay under the lower one.
MAX_CONNECTIONS = 40

_LEVEL1_TOPIC = "/spotMarket/level1:"


class _Level1Data(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    asks: tuple[Price, Size]
    bids: tuple[Price, Size]
    timestamp: LaxInt


class _Level1(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The hot frame, exactly: a ``/spotMarket/level1:<symbol>`` message."""

    type: Literal["message"]
    topic: str
    data: _Level1Data
    subject: Any = None


_decode_level1 = fast_decoder(_Level1).decode

#: tells a trade frame from a book frame without decoding it (fields.py, "trade mark")
_TRADE_MARK = '"/market/match:'
_TRADE_MARK_BYTES = _TRADE_MARK.encode()
#: a letter every trade push holds (in its required key "size") and no book push: found
#: by memchr (~20 ns), it spares book pushes the search for the mark (~100 ns)
_TRADE_LETTER = "z"
_TRADE_LETTER_BYTES = _TRADE_LETTER.encode()


class _MatchData(msgspec.Struct, gc=False):
    # what _match reads, and only that: it ignores the other keys of ``data``
    # (makerOrderId, takerOrderId, sequence, type ...), so msgspec may skip them (fields.py)
    symbol: str
    side: str
    price: Price
    size: Size
    time: Millis  # nanoseconds, as _count reads them when within int64
    tradeId: Annotated[str, msgspec.Meta(min_length=1)]


class _Match(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A ``/market/match:<symbol>`` message."""

    type: Literal["message"]
    topic: str
    data: _MatchData
    subject: Any = None


_decode_match = fast_decoder(_Match).decode
_MATCH_TOPIC = "/market/match:"
_SUCCESS = "200000"
_TAKER_SIDES = MappingProxyType({"buy": Side.BUY, "sell": Side.SELL})
#: (an enum member read through its class costs ~0.1 us in CPython 3.11: once, here)
_DATA = FrameKind.DATA

_DIGITS = re.compile(r"[0-9]{1,20}")
# What may go into the connect URL's query unescaped: KuCoin tokens are URL-safe base64
# with "." and "=" (the documented example), connect ids are ours.
_TOKEN = re.compile(r"[A-Za-z0-9._~=+/-]{1,4096}")
_CONNECT_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_ENDPOINT = re.compile(r"wss?://[^\s?#]+")



class KucoinCodec:
    """Sans-IO codec for one KuCoin classic spot public connection.

    Built with the symbol map of the current discovery (native symbol -> SymbolInfo);
    frames for other symbols parse as UNKNOWN_SYMBOL. Request ids come from one counter
    inside the instance, starting at 1, shared by subscribe, unsubscribe and ping
    messages, so the text of every message is deterministic.
    """

    name: str = VENUE
    #: KuCoin allows 400 topics (one per symbol and channel) per connection, 300 in
    #: older docs; 200 keeps a third under the lower figure and is 100 symbols with trades.
    max_streams_per_connection: int = 200
    #: KuCoin accepts 100 client messages per 10 s per connection, pings included; we
    #: send at most half of that.
    max_messages_per_second: float = 5.0
    #: the documented bullet-public answer's pingInterval (18000 ms); the bootstrap of
    #: each connection overrides it
    ping_interval: float | None = 18.0
    #: KuCoin expects a connection to be cut after 24 h, when its token expires
    max_connection_age_s: float | None = 24 * 3600.0
    #: KuCoin: subscribe only after the server's welcome message
    waits_for_welcome: bool = True

    def __init__(self, symbols: Mapping[str, SymbolInfo]) -> None:
        self._symbols = dict(symbols)
        # the fast paths' lookups, by the whole topic of a frame (a native the strict path
        # would not read out of a topic, empty or with a comma, is left out):
        # level1 topic -> our symbol; match topic -> (native, our symbol)
        natives = [(native, info.symbol) for native, info in self._symbols.items()
                   if native and "," not in native]
        self._level1_names = {_LEVEL1_TOPIC + native: symbol for native, symbol in natives}
        self._match_names = {_MATCH_TOPIC + native: (native, symbol) for native, symbol in natives}
        #: the taker sides for the fast path (a dict's get is quicker than a mapping
        #: proxy's; per codec, since module state must be immutable)
        self._sides = dict(_TAKER_SIDES)
        self._next_id = 1

    def ws_path(self, natives: Sequence[str]) -> str:
        return ""

    def subscribe_messages(self, natives: Sequence[str], *, trades: bool,
                           now_ms: int = 0) -> list[str | bytes]:
        """Subscribe requests for ``natives``, :data:`SYMBOLS_PER_SUBSCRIBE` symbols each.

        Per chunk of symbols: the level1 request, then the match request if ``trades``.
        Raises ValueError when the streams exceed :attr:`max_streams_per_connection`
        (splitting symbols across connections is the caller's job) or when a native
        symbol is empty or holds a comma, which would corrupt the topic.
        """
        return self._requests("subscribe", natives, trades)

    def unsubscribe_messages(self, natives: Sequence[str], *, trades: bool,
                             now_ms: int = 0) -> list[str | bytes]:
        return self._requests("unsubscribe", natives, trades)

    def _requests(self, kind: str, natives: Sequence[str], trades: bool) -> list[str | bytes]:
        streams = len(natives) * (2 if trades else 1)
        if streams > self.max_streams_per_connection:
            raise ValueError(
                f"{streams} streams exceed our cap of {self.max_streams_per_connection} "
                "per KuCoin connection"
            )
        for native in natives:
            if not native or "," in native:
                raise ValueError(f"native symbol {native!r} cannot go into a KuCoin topic")
        prefixes = (_LEVEL1_TOPIC, _MATCH_TOPIC) if trades else (_LEVEL1_TOPIC,)
        messages: list[str | bytes] = []
        for start in range(0, len(natives), SYMBOLS_PER_SUBSCRIBE):
            symbols = ",".join(natives[start : start + SYMBOLS_PER_SUBSCRIBE])
            for prefix in prefixes:
                request = {
                    "id": self._take_id(),
                    "type": kind,
                    "topic": f"{prefix}{symbols}",
                    "privateChannel": False,
                    "response": True,
                }
                messages.append(orjson.dumps(request).decode())
        return messages

    def ping_message(self, now_ms: int) -> str | None:
        return orjson.dumps({"id": self._take_id(), "type": "ping"}).decode()

    def parse(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """Classify one frame; ``recv_ts`` (ns) is stamped on the records it carries.

        Error handling: raises FrameError, and only FrameError, when the frame is not
        JSON, not an object, of an unknown type or topic, or misses or mistypes a field.
        """
        if ((_TRADE_LETTER in frame and _TRADE_MARK in frame) if type(frame) is str
                else (_TRADE_LETTER_BYTES in frame and _TRADE_MARK_BYTES in frame)):
            try:
                t = _decode_match(frame)
            except FAST_DECLINED:
                return self.parse_strict(frame, recv_ts)
            e = t.data
            named = self._match_names.get(t.topic)
            side, time_ns = self._sides.get(e.side), e.time
            if named is None or e.symbol != named[0] or side is None or type(time_ns) is not int:
                return self.parse_strict(frame, recv_ts)
            trade = Trade(VENUE, named[1], e.price, e.size, side, time_ns // 1_000_000, recv_ts, e.tradeId)
            return Parsed(_DATA, (trade,))
        try:
            m = _decode_level1(frame)
        except FAST_DECLINED:
            return self.parse_strict(frame, recv_ts)
        symbol = self._level1_names.get(m.topic)
        d = m.data
        ts = d.timestamp
        if symbol is None or type(ts) is not int:
            return self.parse_strict(frame, recv_ts)
        (bid, bid_size), (ask, ask_size) = d.bids, d.asks
        return Parsed(_DATA, (Quote(VENUE, symbol, bid, bid_size, ask, ask_size, ts, recv_ts, 0),))

    def parse_strict(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """The reference path for every frame: :meth:`parse` gives the same result for
        the frames it takes itself (``tests/test_codec_fast.py``)."""
        with _frame_errors("malformed frame"):
            return _sound(self._classify(_load_object(frame), recv_ts))

    def _take_id(self) -> str:
        request_id = str(self._next_id)
        self._next_id += 1
        return request_id

    def _classify(self, message: dict[str, Any], recv_ts: int) -> Parsed:
        kind = _string(message, "type")
        if kind == "message":
            topic = _string(message, "topic")
            if topic.startswith(_LEVEL1_TOPIC):
                return self._level1(message, topic[len(_LEVEL1_TOPIC) :], recv_ts)
            if topic.startswith(_MATCH_TOPIC):
                return self._match(message, topic[len(_MATCH_TOPIC) :], recv_ts)
            raise FrameError(f"unexpected topic {topic[:60]!r}")
        request_id = _request_id(message)
        if kind == "ack":
            return Parsed(FrameKind.ACK, detail=request_id)
        if kind == "pong":
            return Parsed(FrameKind.PONG, detail=request_id)
        if kind == "welcome":
            return Parsed(FrameKind.INFO, detail=f"welcome {request_id}")
        if kind == "error":
            code = message.get("code", "")
            reason = message.get("data", "")
            return Parsed(FrameKind.ERROR, detail=f"code {code!r}: {reason!r} (id {request_id!r})"[:300])
        if kind == "ping":
            reply = orjson.dumps({"id": request_id, "type": "pong"}).decode()
            return Parsed(FrameKind.PING, reply=reply, detail=request_id)
        if kind == "notice":
            about = message.get("subject", message.get("data", ""))
            return Parsed(FrameKind.NOTICE, detail=f"notice: {about!r}"[:300])
        if kind == "command":
            return Parsed(FrameKind.INFO, detail=f"command: {message.get('subject', '')!r}"[:300])
        raise FrameError(f"unexpected type {kind[:20]!r}")

    def _level1(self, message: dict[str, Any], native: str, recv_ts: int) -> Parsed:
        if not native or "," in native:
            raise FrameError(f"field 'topic': {native[:60]!r} is not one symbol")
        info = self._symbols.get(native)
        if info is None:
            return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
        data = _object(_field(message, "data"), "data")
        asks = _list(data, "asks")
        bids = _list(data, "bids")
        venue_ts = _integer(data, "timestamp")
        if not asks or not bids:
            return Parsed(FrameKind.DATA, detail="one-sided book")
        ask, ask_size = _level(asks, "asks")
        bid, bid_size = _level(bids, "bids")
        quote = Quote(
            venue=VENUE,
            symbol=info.symbol,
            bid=bid,
            bid_size=bid_size,
            ask=ask,
            ask_size=ask_size,
            venue_ts=venue_ts,
            recv_ts=recv_ts,
            seq=0,
        )
        return Parsed(FrameKind.DATA, records=(quote,))

    def _match(self, message: dict[str, Any], topic_native: str, recv_ts: int) -> Parsed:
        data = _object(_field(message, "data"), "data")
        native = _string(data, "symbol")
        if native != topic_native:
            raise FrameError(f"field 'symbol': {native[:40]!r} is not the topic's symbol")
        info = self._symbols.get(native)
        if info is None:
            return Parsed(FrameKind.UNKNOWN_SYMBOL, detail=native)
        taker = _string(data, "side")
        side = _TAKER_SIDES.get(taker)
        if side is None:
            raise FrameError(f"field 'side': {taker[:20]!r} is neither 'buy' nor 'sell'")
        trade = Trade(
            venue=VENUE,
            symbol=info.symbol,
            price=_decimal(data, "price"),
            size=_decimal(data, "size"),
            side=side,
            venue_ts=_count(data, "time") // 1_000_000,
            recv_ts=recv_ts,
            trade_id=_name(data, "tradeId"),
        )
        return Parsed(FrameKind.DATA, records=(trade,))


def discovery_requests() -> tuple[RestRequest, RestRequest]:
    """(spot symbols, 24 h tickers of every symbol). Neither is paginated."""
    return (RestRequest("/api/v2/symbols"), RestRequest("/api/v1/market/allTickers"))


def parse_instruments(body: bytes, aliases: Mapping[str, str]) -> list[SymbolInfo]:
    """Symbols with ``enableTrading`` true, with aliased, upper-case base and quote.

    ``aliases`` maps an upper-case currency code to the one we use (e.g. ``{"XBT": "BTC"}``).
    Raises FrameError on an error payload (``code`` not "200000") or a malformed one.
    """
    with _frame_errors("malformed symbols"):
        infos: list[SymbolInfo] = []
        for index, entry in enumerate(_list_of(_data(body, "symbols"), "data")):
            item = _object(entry, f"data[{index}]")
            if not _boolean(item, "enableTrading"):
                continue
            infos.append(
                SymbolInfo(
                    venue=VENUE,
                    native=_name(item, "symbol"),
                    base=_currency(_name(item, "baseCurrency"), aliases),
                    quote=_currency(_name(item, "quoteCurrency"), aliases),
                )
            )
        return infos


def parse_volumes(body: bytes) -> dict[str, float]:
    """24 h quote volume (``volValue``) per native symbol. Raises FrameError."""
    with _frame_errors("malformed allTickers"):
        tickers = _list(_object(_data(body, "allTickers"), "data"), "ticker")
        volumes: dict[str, float] = {}
        for index, entry in enumerate(tickers):
            item = _object(entry, f"ticker[{index}]")
            volumes[_name(item, "symbol")] = _decimal(item, "volValue")
        return volumes


def bootstrap_request() -> RestRequest:
    """The public token request; KuCoin wants a POST (no body, no authentication)."""
    return RestRequest("/api/v1/bullet-public", method="POST")


def parse_bootstrap(body: bytes, connect_id: str) -> Bootstrap:
    """The URL of a connection from a bullet-public answer: its first websocket server.

    ``connect_id`` is ours and must be URL-safe (ValueError otherwise). Raises
    FrameError on an error payload (``code`` not "200000"), a missing or mistyped field,
    a token or endpoint that cannot go into a URL as is, or a non-positive ping time.
    """
    if _CONNECT_ID.fullmatch(connect_id) is None:
        raise ValueError(f"connect id {connect_id[:40]!r} is not URL-safe")
    with _frame_errors("malformed bullet-public"):
        data = _object(_data(body, "bullet-public"), "data")
        token = _name(data, "token")
        if _TOKEN.fullmatch(token) is None:
            raise FrameError("field 'token': holds characters that cannot go into a URL")
        servers = _list(data, "instanceServers")
        for index, entry in enumerate(servers):
            server = _object(entry, f"instanceServers[{index}]")
            if _string(server, "protocol") != "websocket":
                continue
            endpoint = _string(server, "endpoint")
            if _ENDPOINT.fullmatch(endpoint) is None:
                raise FrameError(f"field 'endpoint': {endpoint[:60]!r} is not a ws(s) URL without query")
            return Bootstrap(
                # percent-encoded: a "+" in a token would otherwise decode as a space
                ws_url=f"{endpoint}?token={quote(token, safe='=._~-')}&connectId={connect_id}",
                ping_interval_s=_milliseconds(server, "pingInterval") / 1000,
                ping_timeout_s=_milliseconds(server, "pingTimeout") / 1000,
            )
        raise FrameError("field 'instanceServers': no websocket server")


def _data(body: bytes, endpoint: str) -> Any:
    """``data`` of a REST envelope; FrameError when ``code`` is not "200000"."""
    document = _load_object(body)
    code = _field(document, "code")
    if code != _SUCCESS:
        raise FrameError(f"{endpoint} failed: code {code!r}: {document.get('msg')!r}")
    return _field(document, "data")


def _request_id(message: Mapping[str, Any]) -> str:
    """The ``id`` of a control frame ("" when absent): a string, or a number KuCoin echoed."""
    value = message.get("id", "")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FrameError(f"field 'id': expected a string, got {type(value).__name__}")
    return str(value)[:100]



def _level(value: list[Any], name: str) -> tuple[float, float]:
    """``[price, size]``: the one level of a level1 side."""
    if len(value) != 2:
        raise FrameError(f"field {name!r}: expected [price, size], got {len(value)} items")
    return _to_float(value[0], f"{name}[0]"), _to_float(value[1], f"{name}[1]")


def _list_of(value: object, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise FrameError(f"field {name!r}: expected an array, got {type(value).__name__}")
    return value


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    return _list_of(_field(obj, key), key)


def _boolean(obj: Mapping[str, Any], key: str) -> bool:
    value = _field(obj, key)
    if not isinstance(value, bool):
        raise FrameError(f"field {key!r}: expected a boolean, got {type(value).__name__}")
    return value


def _count(obj: Mapping[str, Any], key: str) -> int:
    """A non-negative integer given as a decimal string of digits (or a JSON integer)."""
    value = _field(obj, key)
    if isinstance(value, str):
        if _DIGITS.fullmatch(value) is None:
            raise FrameError(f"field {key!r}: {value[:30]!r} is not a whole number")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FrameError(f"field {key!r}: expected a whole number, got {type(value).__name__}")
    return value


def _milliseconds(obj: Mapping[str, Any], key: str) -> int:
    value = _integer(obj, key)
    if value <= 0:
        raise FrameError(f"field {key!r}: {value} is not a positive number of ms")
    return value


