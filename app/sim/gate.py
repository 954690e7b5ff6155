"""Gate v4 spot's wire format, simulated: APIv4 REST discovery and the Spot WebSocket v4.

Pure (see ``wire.py``). What it follows, from Gate's APIv4 and Spot WebSocket v4
documentation (and the announcements it links):

* ``GET /api/v4/spot/currency_pairs`` (every listed pair, ``trade_status``
  ``tradable``, or ``untradable`` where the market halts it),
  ``GET /api/v4/spot/currency_pairs/{currency_pair}``, ``GET /api/v4/spot/tickers``
  (optionally ``?currency_pair=``; ``quote_volume`` is the 24 h quote volume) and
  ``GET /api/v4/spot/time`` (``{"server_time": ms}``). Bodies are bare JSON arrays and
  objects with every decimal as a string; errors are ``{"label", "message"}`` objects
  (HTTP 400 ``INVALID_CURRENCY_PAIR`` for an unknown pair). Pairs are ``BASE_QUOTE``.
* WebSocket ``/ws/v4/`` (the documented ``wss://api.gateio.ws/ws/v4/``, trailing slash
  included). Requests are ``{"time": <s>, "id": <int, optional>, "channel": ..,
  "event": "subscribe"|"unsubscribe", "payload": ["BTC_USDT", ..]}``; ``time`` must be
  within 60 s of server time. Replies echo ``time``/``time_ms``, ``id`` (when given),
  ``conn_id``, ``trace_id``, ``channel``, ``event`` and ``payload``, with
  ``"result": {"status": "success"}`` (the shape of the 2025 ``spot.obu`` example), or
  ``"error": {"code", "message"}`` and ``"result": {"status": "fail"}`` (the shape of
  the documented SBE refusal). Error codes: 1 invalid argument struct (not JSON, a
  missing or mistyped field), 2 invalid argument (an unknown currency pair, worded
  ``unknown currency pair GIBBERISH_USD`` as in the docs' example, or a ``time`` too far
  off, worded like APIv4's ``REQUEST_EXPIRED``: ``gap between request Timestamp and
  server time exceeds 60``).
* ``{"time": .., "channel": "spot.ping"}`` is answered ``{"time", "time_ms",
  "channel": "spot.pong", "event": "", "error": null, "result": null}``. Liveness is
  checked with protocol pings from the server.
* ``spot.book_ticker`` updates: ``{"time", "time_ms", "channel", "event": "update",
  "result": {"t", "u", "s", "b", "B", "a", "A"}}`` with ``t`` the book time (ms), ``u``
  the book's update id (integers) and prices and sizes as decimal strings without
  trailing zeros, as in the documented example (``"19177.79"``, ``"0.09"``).
* ``spot.trades``: one trade per message, ``{"id", "id_market", "create_time",
  "create_time_ms", "side", "currency_pair", "amount", "price", "range"}`` with
  ``create_time_ms`` a string of milliseconds with sub-millisecond decimals, ``side`` the
  taker's, and ``amount``/``price`` with ten decimals, as in the documented example.
* Before a service upgrade: ``{"time", "time_ms", "channel": "spot.system", "event":
  "update", "result": {"type": "upgrade", "msg": "The connection will soon be closed
  for a service upgrade. Please reconnect."}}`` (the 2026-02 announcement).
* Connection rules (``config``): Gate documents no topic cap, message rate, subscribe
  deadline or connection age, so none is enforced.

Choices where the documentation is silent: the server pings every 10 s and closes a
connection without a pong for 30 s (Gate documents protocol pings, not their timing;
its own clients ping every 10 s). Gate also says a ``spot.ping`` resets the server's
timeout timer; the simulator's protocol-ping watchdog cannot express that, so a client
must answer protocol pings here. The upgrade notice comes 30 s before the close, which
is a 1001 frame ("service upgrade"); a forced cut (Gate documents none) is a 1001 frame
too. The current book is sent right after a ``spot.book_ticker`` subscribe ack (Gate's
depth channels start with a full book; a quiet pair would otherwise stay blank). A
request naming any unknown pair is refused as a whole, naming the first; a pair listed
but ``untradable`` can be subscribed and stays silent; subscribing again to a
subscribed pair is acknowledged (and counted as a duplicate); unsubscribing a pair not
subscribed is acknowledged. An unknown channel is code 2 ``unknown channel <name>``, an
unknown event code 2 ``unknown event <name>``. A subscribe refused by the simulator
control gets the documented unknown-pair error for its first pair; one over a cap
configured in a test, code 2 ``too many subscriptions on this connection``.
``conn_id`` (16 hex digits) is derived from the connection, ``trace_id`` (32) from it
and a counter. ``u`` is the market's per-book update id. An untradable pair's ticker
has empty ``lowest_ask``/``highest_bid``, as Gate shows for a pair without a book.
Malformed frames vary: a ``book_ticker`` update cut short, one whose ``result`` lacks
``s``, and one whose ``result`` is null.
"""

from __future__ import annotations

import hashlib
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
    dumps,
    fixed,
    json_reply,
    truncated,
)

_VENUE = "gate"
_BOOK = "spot.book_ticker"
_TRADES = "spot.trades"
_PING = "spot.ping"
_PONG = "spot.pong"
_SYSTEM = "spot.system"
_CHANNELS = (_BOOK, _TRADES)
_PAIRS_PATH = "/api/v4/spot/currency_pairs"
_TICKERS_PATH = "/api/v4/spot/tickers"
_TIME_PATH = "/api/v4/spot/time"
#: seconds a request's ``time`` may be off the server's
MAX_TIME_GAP_S = 60
#: sell_start/buy_start of every simulated pair (2018-01-19, as in Gate's example)
_TRADING_START_S = 1516378650
_TRADE_DECIMALS = 10
_UPGRADE_MSG = "The connection will soon be closed for a service upgrade. Please reconnect."
_STRUCT = 1  # invalid argument struct
_ARGUMENT = 2  # invalid argument


def _plain(value: float, decimals: int) -> str:
    """A decimal string with at most ``decimals`` places and no trailing zeros."""
    text = fixed(value, decimals)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _hex(text: str, size: int) -> str:
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


class _Request:
    """One client request, as far as it parsed: what a reply echoes."""

    __slots__ = ("channel", "event", "id", "payload")

    def __init__(self) -> None:
        self.channel = ""
        self.event = ""
        self.id: int | None = None
        self.payload: list[str] | None = None


class GateWire:
    """Gate v4 spot as seen on the wire, for the symbols of one :class:`Market`."""

    name = _VENUE
    ws_path = "/ws/v4/"
    ws_url_suffix = "/ws/v4/"
    config = SimVenueConfig(ping_interval_s=10.0, pong_timeout_s=30.0, shutdown_grace_s=30.0)

    def __init__(self, market: Market, *, venue: str = _VENUE) -> None:
        self._venue = venue
        self._listed = market.listed(venue)
        self._by_native = {self._pair(s): s for s in self._listed}
        self._native = {s.symbol: self._pair(s) for s in self._listed}
        self._spec = {s.symbol: s for s in self._listed}
        self._traces = 0

    @staticmethod
    def _pair(spec: SymbolSpec) -> str:
        return f"{spec.base}_{spec.quote}"

    # -- REST ------------------------------------------------------------------------

    def rest(
        self, method: str, path: str, query: Mapping[str, str], market: Market,
        endpoints: SimEndpoints,
    ) -> RestReply:
        single = path.startswith(_PAIRS_PATH + "/")
        if path not in (_PAIRS_PATH, _TICKERS_PATH, _TIME_PATH) and not single:
            return NOT_FOUND
        if method != "GET":
            return METHOD_NOT_ALLOWED
        if path == _TIME_PATH:
            return json_reply({"server_time": market.snapshot.now_ms})
        if single:
            spec = self._by_native.get(path[len(_PAIRS_PATH) + 1:])
            if spec is None:
                return self._invalid_pair(path[len(_PAIRS_PATH) + 1:])
            return json_reply(self._currency_pair(spec))
        if path == _PAIRS_PATH:
            return json_reply([self._currency_pair(s) for s in self._listed])
        specs: Sequence[SymbolSpec] = self._listed
        if "currency_pair" in query:
            spec = self._by_native.get(query["currency_pair"])
            if spec is None:
                return self._invalid_pair(query["currency_pair"])
            specs = [spec]
        return json_reply([self._ticker(s, market) for s in specs])

    @staticmethod
    def _invalid_pair(pair: str) -> RestReply:
        return json_reply(
            {"label": "INVALID_CURRENCY_PAIR", "message": f"Invalid currency pair {pair[:40]}"},
            status=400,
        )

    def _currency_pair(self, spec: SymbolSpec) -> dict[str, object]:
        pair = self._pair(spec)
        tradable = spec.trading_on(self._venue)
        min_base = 10.0 ** -spec.size_decimals
        return {
            "id": pair,
            "base": spec.base,
            "base_name": spec.base,
            "quote": spec.quote,
            "quote_name": spec.quote,
            "fee": "0.2",
            "min_base_amount": _plain(min_base, spec.size_decimals),
            "min_quote_amount": "3",
            "max_base_amount": _plain(2_000_000.0 / spec.price, spec.size_decimals),
            "max_quote_amount": "5000000",
            "amount_precision": spec.size_decimals,
            "precision": spec.price_decimals,
            "trade_status": "tradable" if tradable else "untradable",
            "sell_start": _TRADING_START_S,
            "buy_start": _TRADING_START_S,
            "delisting_time": 0,
            "trade_url": f"https://www.gate.io/trade/{pair}",
            "st_tag": False,
            "up_rate": "0.05",
            "down_rate": "0.05",
            "slippage": "0.05",
            "max_market_order_stock": _plain(500_000.0 / spec.price, spec.size_decimals),
            "max_market_order_money": "1000000",
        }

    def _ticker(self, spec: SymbolSpec, market: Market) -> dict[str, object]:
        book = market.snapshot.book(self._venue, spec.symbol)
        pd, sd = spec.price_decimals, spec.size_decimals
        prev = spec.price
        quote_volume = market.quote_volume_24h(self._venue, spec.symbol)
        if book is None:
            last = prev
            ask = bid = ask_size = bid_size = ""
        else:
            last = round((book.bid + book.ask) / 2.0, pd)
            ask, bid = _plain(book.ask, pd), _plain(book.bid, pd)
            ask_size, bid_size = _plain(book.ask_size, sd), _plain(book.bid_size, sd)
        change = _plain(100.0 * (last - prev) / prev, 4)
        return {
            "currency_pair": self._pair(spec),
            "last": _plain(last, pd),
            "lowest_ask": ask,
            "lowest_size": ask_size,
            "highest_bid": bid,
            "highest_size": bid_size,
            "change_percentage": change,
            "change_utc0": change,
            "change_utc8": change,
            "base_volume": _plain(quote_volume / prev, sd),
            "quote_volume": _plain(quote_volume, 8),
            "high_24h": _plain(max(prev, last) * (1.0 + 0.01 * (book is not None)), pd),
            "low_24h": _plain(min(prev, last) * (1.0 - 0.01 * (book is not None)), pd),
        }

    # -- WebSocket: topics and data --------------------------------------------------

    def book_topic(self, symbol: str) -> str:
        return f"{_BOOK}.{self._native[symbol]}"

    def trade_topic(self, symbol: str) -> str:
        return f"{_TRADES}.{self._native[symbol]}"

    def encode_book(self, book: TopOfBook, snapshot: MarketSnapshot) -> str:
        return dumps(self._book_message(book, snapshot.now_ms))

    def _book_message(self, book: TopOfBook, now_ms: int) -> dict[str, object]:
        spec = self._spec[book.symbol]
        pd, sd = spec.price_decimals, spec.size_decimals
        return {
            "time": now_ms // 1000,
            "time_ms": now_ms,
            "channel": _BOOK,
            "event": "update",
            "result": {
                "t": book.ts_ms,
                "u": book.update_id,
                "s": self._native[book.symbol],
                "b": _plain(book.bid, pd),
                "B": _plain(book.bid_size, sd),
                "a": _plain(book.ask, pd),
                "A": _plain(book.ask_size, sd),
            },
        }

    def encode_trades(self, trades: Sequence[SimTrade]) -> list[Frame]:
        """One message per trade, as Gate sends them."""
        frames: list[Frame] = []
        for t in trades:
            pair = self._native[t.symbol]
            frames.append(dumps({
                "time": t.ts_ms // 1000,
                "time_ms": t.ts_ms,
                "channel": _TRADES,
                "event": "update",
                "result": {
                    "id": t.trade_id,
                    "id_market": t.trade_id,
                    "create_time": t.ts_ms // 1000,
                    "create_time_ms": f"{t.ts_ms}.{t.seq % 10_000:04d}",
                    "side": "buy" if t.taker_buy else "sell",
                    "currency_pair": pair,
                    "amount": fixed(t.size, _TRADE_DECIMALS),
                    "price": fixed(t.price, _TRADE_DECIMALS),
                    "range": f"{t.trade_id}-{t.trade_id}",
                },
            }))
        return frames

    # -- WebSocket: requests ---------------------------------------------------------

    def on_open(self, conn: ConnectionView, snapshot: MarketSnapshot) -> Opening:
        return Opening()

    def on_message(self, conn: ConnectionView, message: Frame, snapshot: MarketSnapshot) -> Reply:
        request = _Request()
        problem = self._parse(message, request, snapshot.now_ms)
        if problem is not None:
            code, text = problem
            rejected = tuple(self._topics(request)) if request.event == "subscribe" else ()
            return Reply(
                frames=(self._error(conn, request, code, text, snapshot.now_ms),),
                rejected=rejected,
            )
        if request.channel == _PING:
            return Reply(frames=(self._pong(request, snapshot.now_ms),), app_ping=True)
        topics = self._topics(request)
        ack = self._ack(conn, request, snapshot.now_ms)
        if request.event == "unsubscribe":
            gone = tuple(t for t in topics if t in conn.topics)
            conn.topics.difference_update(gone)
            return Reply(frames=(ack,), unsubscribed=gone)
        new = tuple(t for t in topics if t not in conn.topics)
        duplicates = tuple(t for t in topics if t in conn.topics)
        conn.topics.update(new)
        frames: list[Frame] = [ack]
        if request.channel == _BOOK:
            for pair in dict.fromkeys(request.payload or ()):
                if f"{_BOOK}.{pair}" not in new:
                    continue
                book = snapshot.book(self._venue, self._by_native[pair].symbol)
                if book is not None:
                    frames.append(self.encode_book(book, snapshot))
        return Reply(frames=tuple(frames), subscribed=new, duplicates=duplicates)

    def _parse(self, message: Frame, request: _Request, now_ms: int) -> tuple[int, str] | None:
        """Fill ``request`` from ``message``; the (code, message) of its error, if any."""
        try:
            body = orjson.loads(message)
        except orjson.JSONDecodeError:
            return _STRUCT, "invalid argument struct"
        if not isinstance(body, dict):
            return _STRUCT, "invalid argument struct"
        channel, event, request_id = body.get("channel"), body.get("event"), body.get("id")
        if isinstance(channel, str):
            request.channel = channel
        if isinstance(event, str):
            request.event = event
        if request_id is not None:
            if isinstance(request_id, bool) or not isinstance(request_id, int):
                return _STRUCT, "invalid argument struct: id must be an integer"
            request.id = request_id
        payload = body.get("payload")
        if isinstance(payload, list) and all(isinstance(p, str) for p in payload):
            request.payload = payload
        if not isinstance(channel, str) or not channel:
            return _STRUCT, "invalid argument struct: channel is required"
        sent = body.get("time")
        if isinstance(sent, bool) or not isinstance(sent, int):
            return _STRUCT, "invalid argument struct: time is required"
        if abs(sent - now_ms // 1000) > MAX_TIME_GAP_S:
            return _ARGUMENT, f"gap between request Timestamp and server time exceeds {MAX_TIME_GAP_S}"
        if channel == _PING:
            return None
        if channel not in _CHANNELS:
            return _ARGUMENT, f"unknown channel {channel[:60]}"
        if event not in ("subscribe", "unsubscribe"):
            return _ARGUMENT, f"unknown event {str(event)[:30]}"
        if request.payload is None or not request.payload:
            return _STRUCT, "invalid argument struct: payload must be a list of currency pairs"
        for pair in request.payload:
            if pair not in self._by_native:
                return _ARGUMENT, f"unknown currency pair {pair[:40]}"
        return None

    def _topics(self, request: _Request) -> list[str]:
        if request.channel not in _CHANNELS or not request.payload:
            return []
        return list(dict.fromkeys(f"{request.channel}.{p}" for p in request.payload))

    def _envelope(
        self, conn: ConnectionView, request: _Request, now_ms: int
    ) -> dict[str, object]:
        self._traces += 1
        trace = _hex(f"{conn.conn_id}/{self._traces}", 16)
        envelope: dict[str, object] = {"time": now_ms // 1000, "time_ms": now_ms}
        if request.id is not None:
            envelope["id"] = request.id
        envelope.update({
            "conn_id": _hex(conn.conn_id, 8),
            "trace_id": trace,
            "channel": request.channel,
            "event": request.event,
        })
        if request.payload is not None:
            envelope["payload"] = request.payload
        return envelope

    def _ack(self, conn: ConnectionView, request: _Request, now_ms: int) -> str:
        envelope = self._envelope(conn, request, now_ms)
        envelope["result"] = {"status": "success"}
        envelope["requestId"] = envelope["trace_id"]
        return dumps(envelope)

    def _error(
        self, conn: ConnectionView, request: _Request, code: int, text: str, now_ms: int
    ) -> str:
        envelope = self._envelope(conn, request, now_ms)
        envelope["error"] = {"code": code, "message": text}
        envelope["result"] = {"status": "fail"}
        return dumps(envelope)

    @staticmethod
    def _pong(request: _Request, now_ms: int) -> str:
        pong: dict[str, object] = {"time": now_ms // 1000, "time_ms": now_ms}
        if request.id is not None:
            pong["id"] = request.id
        pong.update({"channel": _PONG, "event": "", "error": None, "result": None})
        return dumps(pong)

    def refuse(
        self, conn: ConnectionView, message: Frame, why: Refusal, snapshot: MarketSnapshot
    ) -> Reply:
        request = _Request()
        self._parse(message, request, snapshot.now_ms)
        if why is Refusal.CAP:
            text = "too many subscriptions on this connection"
        else:
            first = (request.payload or [""])[0]
            text = f"unknown currency pair {first[:40]}"
        return Reply(frames=(self._error(conn, request, _ARGUMENT, text, snapshot.now_ms),))

    # -- the venue's own messages ----------------------------------------------------

    def app_ping(self, conn: ConnectionView, now_ms: int) -> Frame | None:
        return None  # protocol pings only

    def notice(self, conn: ConnectionView, now_ms: int) -> Frame | None:
        return dumps({
            "time": now_ms // 1000,
            "time_ms": now_ms,
            "channel": _SYSTEM,
            "event": "update",
            "result": {"type": "upgrade", "msg": _UPGRADE_MSG},
        })

    def closing(self, conn: ConnectionView, why: Disconnect, now_ms: int) -> Closing:
        if why is Disconnect.MAINTENANCE:
            return Closing(CLOSE_GOING_AWAY, "service upgrade")
        return Closing(CLOSE_GOING_AWAY, "connection closed by server")

    def malformed(self, conn: ConnectionView, n: int, snapshot: MarketSnapshot) -> Frame:
        books = [b for s in self._listed[:8] if (b := snapshot.book(self._venue, s.symbol))]
        if books:
            message = self._book_message(books[n % len(books)], snapshot.now_ms)
        else:
            message = {"time": snapshot.now_ms // 1000, "time_ms": snapshot.now_ms,
                       "channel": _BOOK, "event": "update", "result": {"s": "BTC_USDT", "u": n}}
        kind = n % 3
        if kind == 0:
            return truncated(dumps(message), n)
        result = message["result"]
        assert isinstance(result, dict)
        if kind == 1:
            message["result"] = {k: v for k, v in result.items() if k != "s"}
        else:
            message["result"] = None
        return dumps(message)
