"""KuCoin classic spot's wire format, simulated: REST discovery, the token bootstrap and
the public WebSocket.

Pure (see ``wire.py``). What it follows, from KuCoin's public spot documentation:

* ``POST /api/v1/bullet-public`` answers ``{"code":"200000","data":{"token":..,
  "instanceServers":[{"endpoint":..,"encrypt":..,"protocol":"websocket",
  "pingInterval":18000,"pingTimeout":10000}]}}``; the endpoint is this simulator's own
  WebSocket URL (``ws://host:port/``, ``encrypt`` false), spelled like the documented
  ``wss://ws-api-spot.kucoin.com/``. The token is URL-safe base64 with ``=`` and ``.``
  like the documented one, and valid for 24 hours.
* ``GET /api/v2/symbols`` (optionally ``?market=``) lists every symbol, trading or not,
  with ``enableTrading``; ``GET /api/v1/market/allTickers`` answers
  ``{"code":"200000","data":{"time":..,"ticker":[..]}}`` with ``volValue`` the 24 h quote
  volume. Every number is a string, as in the documented examples; prices and sizes
  carry no trailing zeros (``"67193"``, ``"68145.8"``). ``GET /api/v1/timestamp`` too.
* WebSocket ``/``: the client connects to ``{endpoint}?token=..&connectId=..`` and is
  greeted with ``{"id":<connectId>,"type":"welcome"}``; it sends
  ``{"id":..,"type":"ping"}`` and gets ``{"id":..,"type":"pong"}``.
  ``{"id":..,"type":"subscribe","topic":"/spotMarket/level1:A-B,C-D",
  "privateChannel":false,"response":true}`` (and ``unsubscribe``) with up to 100
  symbols a request, acked ``{"id":"<id as a string>","type":"ack"}`` when ``response``
  is true. Errors are ``{"id":..,"type":"error","code":..,"data":..}`` with the texts
  KuCoin has been seen to send: 509 ``exceed max subscription count limitation of 100
  per time`` (more than 100 symbols in one request), 404 ``topic <topic> is not found``
  (a symbol or channel it does not know), 400 ``topic <topic> is invalid`` (a topic
  that does not parse, such as ``/market/match: BTC-USDT``).
* Channels ``/spotMarket/level1:<symbol>`` (``{"topic","type":"message",
  "subject":"level1","data":{"asks":[price,size],"bids":[price,size],"timestamp":ms}}``,
  pushed on change, no sequence) and ``/market/match:<symbol>`` (one
  ``trade.l3match`` message per trade: ``makerOrderId``, ``price``, ``sequence``,
  ``side`` (the taker's), ``size``, ``symbol``, ``takerOrderId``, ``time`` in ns as a
  string, ``tradeId``, ``type``). Each symbol of a topic counts as one topic, as KuCoin
  counts them, so ``conn.topics`` holds ``/spotMarket/level1:BTC-USDT``.
* Connection rules (``config``): 400 topics per connection (the current figure; 300 and
  100 in older docs), answered 509 ``exceed max subscription count limitation of 400
  per session``; 100 uplink messages per 10 s; a connection is cut 24 h after it
  opened, when its token expires.

Choices where the documentation is silent:

* A handshake without a known ``token`` is refused with HTTP 401 (as ccxt #11649 saw
  it), one with an expired token likewise (``token is expired``, the text XChange #4740
  saw in an error frame), one without ``connectId`` with HTTP 400: older docs show
  ``connectId`` as optional, the current ones always pass it, and it is what the
  welcome echoes. The body is an error frame. KuCoin has also been seen to accept such
  a handshake, send that error frame and close; the contract cannot accept and then
  close at once, so the handshake is refused instead.
* Tokens are reusable within their 24 h (KuCoin does not document one use per token);
  at most ``max_tokens`` (10,000) are remembered, the oldest forgotten first, so a
  client holding a very old token may be refused before it expires.
* The heartbeat: docs say only that a client silent "for a long time" is disconnected
  (60 s in older docs). The simulator closes a connection that sent no
  ``{"type":"ping"}`` for ``pingInterval + pingTimeout`` (28 s), the deadline the
  bullet-public answer implies; other messages do not count. There are no server pings.
* The uplink limit is enforced per second (10 a second, the documented average): the
  contract has no 10 s window, so the simulator is stricter than KuCoin for bursts.
* A request naming any unknown or malformed symbol is refused as a whole (the error
  names the first offending symbol's topic) and subscribes nothing; duplicates are
  acked and counted. ``privateChannel: true`` is refused with 400 (a public token
  cannot open private channels). Unknown ``type`` values and non-JSON requests get a
  400 error frame, the connection stays open. Errors are sent whatever ``response``
  says; a request without an ``id`` gets the connectId as the error's id, as the docs
  say connection errors do. A subscription refused by the simulator control gets the
  400 ``is invalid`` error.
* Symbols listed but not trading (``enableTrading`` false) can be subscribed and
  publish nothing; in ``allTickers`` they have ``null`` prices and ``"0"`` volumes.
* KuCoin documents no maintenance notice for public spot: ``notice`` is None and a
  maintenance close comes unannounced. The 24 h cut and the maintenance close are 1001.
* ``sequence`` and ``tradeId`` of a match are the same number (as in the current docs'
  example); order ids are 24 hex digits derived from the trade.
* A malformed frame is a level1 message cut short, one without ``bids``, or one whose
  ``timestamp`` is a string.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import re
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
    Opening,
    Refusal,
    Reply,
    RestReply,
    SimEndpoints,
    SimVenueConfig,
    WireDefaults,
    dumps,
    fixed,
    json_reply,
    truncated,
)

LEVEL1 = "/spotMarket/level1"
MATCH = "/market/match"
#: symbols one subscribe or unsubscribe request may name
MAX_SYMBOLS_PER_REQUEST = 100
#: topics (one per symbol and channel) one connection may hold
MAX_TOPICS = 400
TOKEN_LIFETIME_MS = 24 * 3600 * 1000
PING_INTERVAL_MS = 18_000
PING_TIMEOUT_MS = 10_000
_SUCCESS = "200000"
_SYMBOL = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}")
_CONNECT_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_STABLE_QUOTES = frozenset({"USDT", "USDC", "TUSD", "USDD", "PYUSD", "DAI"})


def _num(value: float, decimals: int) -> str:
    """A decimal string without trailing zeros, as KuCoin writes them (``"67193"``)."""
    text = fixed(value, decimals)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _increment(decimals: int) -> str:
    return fixed(10.0 ** -decimals, decimals)


def _error(request_id: str, code: int, data: str) -> str:
    return dumps({"id": request_id, "type": "error", "code": code, "data": data})


class KucoinWire(WireDefaults):
    """KuCoin classic spot as seen on the wire, for the symbols of one :class:`Market`.

    ``app_ping`` and ``notice`` are :class:`WireDefaults`' (KuCoin sends neither). The
    bullet-public answer's ``pingInterval``/``pingTimeout`` can be shortened for tests
    (``ping_interval_ms``, ``ping_timeout_ms``); the instance's ``config`` then closes
    a connection after their sum without a ping, as the class's does after 28 s.
    """

    name = "kucoin"
    ws_path = "/"
    ws_url_suffix = "/"
    config = SimVenueConfig(
        client_ping_timeout_s=(PING_INTERVAL_MS + PING_TIMEOUT_MS) / 1000,
        max_incoming_per_s=10,
        max_topics=MAX_TOPICS,
        max_connection_age_s=24 * 3600.0,
    )

    def __init__(
        self,
        market: Market,
        *,
        venue: str = "kucoin",
        ping_interval_ms: int = PING_INTERVAL_MS,
        ping_timeout_ms: int = PING_TIMEOUT_MS,
        max_tokens: int = 10_000,
    ) -> None:
        if ping_interval_ms <= 0 or ping_timeout_ms <= 0 or max_tokens < 1:
            raise ValueError("ping times and max_tokens must be positive")
        self._venue = venue
        self._listed = market.listed(venue)
        self._native = {s.symbol: f"{s.base}-{s.quote}" for s in self._listed}
        self._by_native = {f"{s.base}-{s.quote}": s for s in self._listed}
        self._ping_interval_ms = ping_interval_ms
        self._ping_timeout_ms = ping_timeout_ms
        self.config = dataclasses.replace(
            KucoinWire.config, client_ping_timeout_s=(ping_interval_ms + ping_timeout_ms) / 1000
        )
        #: token -> market time it was issued, oldest first (bounded by ``max_tokens``)
        self._tokens: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._max_tokens = max_tokens
        self._issued = 0

    # -- REST ------------------------------------------------------------------------

    def rest(
        self, method: str, path: str, query: Mapping[str, str], market: Market,
        endpoints: SimEndpoints,
    ) -> RestReply:
        path = path.rstrip("/") or "/"
        if path == "/api/v1/bullet-public":
            if method != "POST":
                return METHOD_NOT_ALLOWED
            return self._bullet(market.snapshot.now_ms, endpoints)
        if path not in ("/api/v2/symbols", "/api/v1/market/allTickers", "/api/v1/timestamp"):
            return NOT_FOUND
        if method != "GET":
            return METHOD_NOT_ALLOWED
        if path == "/api/v1/timestamp":
            return json_reply({"code": _SUCCESS, "data": market.snapshot.now_ms})
        if path == "/api/v2/symbols":
            wanted = query.get("market")
            infos = [self._symbol_info(s) for s in self._listed]
            if wanted:
                infos = [i for i in infos if i["market"] == wanted]
            return json_reply({"code": _SUCCESS, "data": infos})
        snapshot = market.snapshot
        return json_reply({
            "code": _SUCCESS,
            "data": {
                "time": snapshot.now_ms,
                "ticker": [self._ticker(s, market) for s in self._listed],
            },
        })

    def _bullet(self, now_ms: int, endpoints: SimEndpoints) -> RestReply:
        token = self._issue(now_ms)
        return json_reply({
            "code": _SUCCESS,
            "data": {
                "token": token,
                "instanceServers": [{
                    "endpoint": endpoints.ws_url,
                    "encrypt": endpoints.ws_url.startswith("wss:"),
                    "protocol": "websocket",
                    "pingInterval": self._ping_interval_ms,
                    "pingTimeout": self._ping_timeout_ms,
                }],
            },
        })

    def _issue(self, now_ms: int) -> str:
        """A fresh token, remembered with its issue time; expired and surplus ones go."""
        self._issued += 1
        seed = f"{self._venue}:{self._issued}:{now_ms}".encode()
        head = base64.urlsafe_b64encode(hashlib.blake2b(seed, digest_size=64).digest())
        tail = base64.urlsafe_b64encode(hashlib.blake2b(seed, digest_size=16, salt=b"kc").digest())
        token = f"{head.decode()}.{tail.decode()}"
        tokens = self._tokens
        while tokens and (
            len(tokens) >= self._max_tokens or next(iter(tokens.values())) + TOKEN_LIFETIME_MS < now_ms
        ):
            tokens.popitem(last=False)
        tokens[token] = now_ms
        return token

    @property
    def tokens_held(self) -> int:
        """Tokens remembered now (bounded by ``max_tokens``)."""
        return len(self._tokens)

    def _symbol_info(self, spec: SymbolSpec) -> dict[str, object]:
        native = self._native[spec.symbol]
        if spec.quote in _STABLE_QUOTES:
            market = "USDS"
        elif spec.quote in ("BTC", "KCS"):
            market = spec.quote
        else:
            market = "ALTS"
        return {
            "symbol": native,
            "name": native,
            "baseCurrency": spec.base,
            "quoteCurrency": spec.quote,
            "feeCurrency": spec.quote,
            "market": market,
            "baseMinSize": _increment(spec.size_decimals),
            "quoteMinSize": "0.1" if market == "USDS" else "0.00001",
            "baseMaxSize": "10000000000",
            "quoteMaxSize": "99999999",
            "baseIncrement": _increment(spec.size_decimals),
            "quoteIncrement": _increment(spec.price_decimals),
            "priceIncrement": _increment(spec.price_decimals),
            "priceLimitRate": "0.1",
            "minFunds": "0.1" if market == "USDS" else "0.000001",
            "isMarginEnabled": spec.quote_volume_24h >= 50e6,
            "enableTrading": spec.trading_on(self._venue),
            "feeCategory": 1,
            "makerFeeCoefficient": "1.00",
            "takerFeeCoefficient": "1.00",
            "st": False,
            "callauctionIsEnabled": False,
            "callauctionPriceFloor": None,
            "callauctionPriceCeiling": None,
            "callauctionFirstStageStartTime": None,
            "callauctionSecondStageStartTime": None,
            "callauctionThirdStageStartTime": None,
            "tradingStartTime": None,
        }

    def _ticker(self, spec: SymbolSpec, market: Market) -> dict[str, object]:
        native = self._native[spec.symbol]
        book = market.snapshot.book(self._venue, spec.symbol)
        fees = {
            "takerFeeRate": "0.001",
            "makerFeeRate": "0.001",
            "takerCoefficient": "1",
            "makerCoefficient": "1",
        }
        if book is None:
            return {
                "symbol": native, "symbolName": native,
                "buy": None, "bestBidSize": None, "sell": None, "bestAskSize": None,
                "changeRate": None, "changePrice": None, "high": None, "low": None,
                "vol": "0", "volValue": "0", "last": None, "averagePrice": None,
                **fees,
            }
        pd, sd = spec.price_decimals, spec.size_decimals
        last = round((book.bid + book.ask) / 2.0, pd)
        open_price = spec.price
        quote_volume = market.quote_volume_24h(self._venue, spec.symbol)
        return {
            "symbol": native,
            "symbolName": native,
            "buy": _num(book.bid, pd),
            "bestBidSize": _num(book.bid_size, sd),
            "sell": _num(book.ask, pd),
            "bestAskSize": _num(book.ask_size, sd),
            "changeRate": _num((last - open_price) / open_price, 4),
            "changePrice": _num(last - open_price, pd),
            "high": _num(max(open_price, last) * 1.01, pd),
            "low": _num(min(open_price, last) * 0.99, pd),
            "vol": _num(quote_volume / open_price, 8),
            "volValue": _num(quote_volume, 8),
            "last": _num(last, pd),
            "averagePrice": _num((last + open_price) / 2.0, 8),
            **fees,
        }

    # -- WebSocket -------------------------------------------------------------------

    def on_open(self, conn: ConnectionView, snapshot: MarketSnapshot) -> Opening:
        connect_id = conn.query.get("connectId", "")
        token = conn.query.get("token", "")
        issued = self._tokens.get(token) if token else None
        if issued is None:
            return Opening(reject=RestReply(401, _error(connect_id, 401, "token is invalid").encode()))
        if issued + TOKEN_LIFETIME_MS < snapshot.now_ms:
            return Opening(reject=RestReply(401, _error(connect_id, 401, "token is expired").encode()))
        if _CONNECT_ID.fullmatch(connect_id) is None:
            return Opening(reject=RestReply(400, _error(connect_id, 400, "connectId is invalid").encode()))
        return Opening(frames=(dumps({"id": connect_id, "type": "welcome"}),))

    def book_topic(self, symbol: str) -> str:
        return f"{LEVEL1}:{self._native[symbol]}"

    def trade_topic(self, symbol: str) -> str:
        return f"{MATCH}:{self._native[symbol]}"

    def encode_book(self, book: TopOfBook, snapshot: MarketSnapshot) -> str:
        return dumps(self._level1(book))

    def _level1(self, book: TopOfBook) -> dict[str, object]:
        native = self._native[book.symbol]
        spec = self._by_native[native]
        pd, sd = spec.price_decimals, spec.size_decimals
        return {
            "topic": f"{LEVEL1}:{native}",
            "type": "message",
            "subject": "level1",
            "data": {
                "asks": [_num(book.ask, pd), _num(book.ask_size, sd)],
                "bids": [_num(book.bid, pd), _num(book.bid_size, sd)],
                "timestamp": book.ts_ms,
            },
        }

    def encode_trades(self, trades: Sequence[SimTrade]) -> list[Frame]:
        """One ``trade.l3match`` message per trade, in matching order."""
        frames: list[Frame] = []
        for t in trades:
            native = self._native[t.symbol]
            spec = self._by_native[native]
            seconds = t.ts_ms // 1000
            mix = (t.trade_id * 0x9E3779B97F4A7C15) % (1 << 64)
            frames.append(dumps({
                "topic": f"{MATCH}:{native}",
                "type": "message",
                "subject": "trade.l3match",
                "data": {
                    "makerOrderId": f"{seconds:08x}{mix:016x}",
                    "price": _num(t.price, spec.price_decimals),
                    "sequence": str(t.trade_id),
                    "side": "buy" if t.taker_buy else "sell",
                    "size": _num(t.size, spec.size_decimals),
                    "symbol": native,
                    "takerOrderId": f"{seconds:08x}{(mix + 1) % (1 << 64):016x}",
                    "time": str(t.ts_ms * 1_000_000 + mix % 1_000_000),
                    "tradeId": str(t.trade_id),
                    "type": "match",
                },
            }))
        return frames

    def on_message(self, conn: ConnectionView, message: Frame, snapshot: MarketSnapshot) -> Reply:
        connect_id = conn.query.get("connectId", "")
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            return Reply(frames=(_error(connect_id, 400, "request is not valid JSON"),))
        if not isinstance(request, dict):
            return Reply(frames=(_error(connect_id, 400, "request is not a JSON object"),))
        request_id = _request_id(request, connect_id)
        kind = request.get("type")
        if kind == "ping":
            pong = {"id": request_id, "type": "pong"} if "id" in request else {"type": "pong"}
            return Reply(frames=(dumps(pong),), app_ping=True)
        if kind not in ("subscribe", "unsubscribe"):
            return Reply(frames=(_error(request_id, 400, f"type {str(kind)[:40]} is not supported"),))
        parsed = self._parse_topic(request.get("topic"))
        if isinstance(parsed, str):
            return Reply(frames=(_error(request_id, *self._problem(parsed, request)),))
        channel, natives = parsed
        topics = tuple(f"{channel}:{n}" for n in natives)
        if request.get("privateChannel") is True:
            return Reply(
                frames=(_error(request_id, 400, "privateChannel needs a private token"),),
                rejected=topics if kind == "subscribe" else (),
            )
        if len(natives) > MAX_SYMBOLS_PER_REQUEST:
            return Reply(
                frames=(_error(request_id, 509, "exceed max subscription count limitation of "
                                                f"{MAX_SYMBOLS_PER_REQUEST} per time"),),
                rejected=topics if kind == "subscribe" else (),
            )
        ack = (dumps({"id": request_id, "type": "ack"}),) if request.get("response") is True else ()
        if kind == "unsubscribe":
            gone = tuple(t for t in topics if t in conn.topics)
            conn.topics.difference_update(gone)
            return Reply(frames=ack, unsubscribed=gone)
        unknown = next((n for n in natives if n not in self._by_native), None)
        if unknown is not None:
            return Reply(
                frames=(_error(request_id, 404, f"topic {channel}:{unknown} is not found"),),
                rejected=topics,
            )
        duplicates = tuple(t for t in topics if t in conn.topics)
        new = tuple(t for t in topics if t not in conn.topics)
        conn.topics.update(new)
        return Reply(frames=ack, subscribed=new, duplicates=duplicates)

    @staticmethod
    def _parse_topic(topic: object) -> tuple[str, tuple[str, ...]] | str:
        """(channel, its symbols without repeats), or why it does not parse:
        ``"invalid"`` or ``"unknown"`` (a channel the simulator does not serve)."""
        if not isinstance(topic, str) or ":" not in topic:
            return "invalid"
        channel, _, symbols = topic.partition(":")
        if channel not in (LEVEL1, MATCH):
            return "unknown"
        natives = symbols.split(",")
        if not all(_SYMBOL.fullmatch(n) for n in natives):
            return "invalid"
        return channel, tuple(dict.fromkeys(natives))

    @staticmethod
    def _problem(why: str, request: Mapping[str, object]) -> tuple[int, str]:
        topic = request.get("topic")
        shown = topic[:200] if isinstance(topic, str) else str(topic)[:40]
        if why == "unknown":
            return 404, f"topic {shown} is not found"
        return 400, f"topic {shown} is invalid"

    def refuse(
        self, conn: ConnectionView, message: Frame, why: Refusal, snapshot: MarketSnapshot
    ) -> Reply:
        request = orjson.loads(message)
        request_id = _request_id(request, conn.query.get("connectId", ""))
        if why is Refusal.CAP:
            data = f"exceed max subscription count limitation of {MAX_TOPICS} per session"
            return Reply(frames=(_error(request_id, 509, data),))
        return Reply(frames=(_error(request_id, 400, f"topic {str(request.get('topic'))[:200]} is invalid"),))

    def closing(self, conn: ConnectionView, why: Disconnect, now_ms: int) -> Closing:
        if why is Disconnect.AGE_LIMIT:
            return Closing(CLOSE_GOING_AWAY, "token expired: connections last 24 hours")
        return Closing(CLOSE_GOING_AWAY, "server maintenance")

    def malformed(self, conn: ConnectionView, n: int, snapshot: MarketSnapshot) -> Frame:
        books = [b for s in self._listed[:8] if (b := snapshot.book(self._venue, s.symbol))]
        if books:
            body = self._level1(books[n % len(books)])
        else:
            body = {
                "topic": f"{LEVEL1}:BTC-USDT", "type": "message", "subject": "level1",
                "data": {"asks": ["1", "1"], "bids": ["0.9", "1"], "timestamp": snapshot.now_ms + n},
            }
        data = body["data"]
        assert isinstance(data, dict)
        if n % 3 == 1:
            del data["bids"]
        elif n % 3 == 2:
            data["timestamp"] = str(data["timestamp"])
        else:
            return truncated(dumps(body), n)
        return dumps(body)


def _request_id(request: Mapping[str, object], default: str) -> str:
    """The request's ``id`` as KuCoin echoes it: a string (numbers are converted)."""
    value = request.get("id")
    if isinstance(value, str):
        return value[:128]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return default
