"""The sans-IO contract between a simulated venue's wire module and the server.

Read this before writing ``app/sim/<venue>.py``. A wire module says *what* a venue
puts on the wire; ``server.py`` decides *when*, owns every socket, timer and counter,
and enforces the limits. A wire module never imports trio, never reads a clock, never
sleeps and never touches a socket: time comes in as ``snapshot.now_ms`` or ``now_ms``
(the market's simulated wall clock, in ms; :func:`~app.sim.server.run_sim_venues`
starts it at the real time, tests may start it in 2024).

One module per venue, self-contained
------------------------------------
``app/sim/<venue>.py`` defines one class (registered by name in
``server._WIRES``: ``"okx": ("app.sim.okx", "OkxWire")``) built as ``Cls(market)``
that satisfies :class:`VenueWire`. It may subclass :class:`WireDefaults` for the
optional hooks it does not need. It imports only ``app.sim.market``, this module and
third-party libraries; it may keep state on the instance (e.g. tokens it issued), never
at module level (``tests/test_structure.py`` enforces it), and keeps that state
bounded. Its docstring lists what it follows from the venue's documentation and the
choices made where the documentation is silent (see ``binance.py``, ``bybit.py``).
``tests/test_sim.py::test_wire_module_follows_the_contract`` runs on it as soon as the
file exists; add the venue's own protocol tests next to Binance's and Bybit's.

The market speaks normalized names: ``SymbolSpec.symbol`` is ``BASE/QUOTE`` and
``SymbolSpec.native`` is Binance's spelling (``BTCUSDT``); build the venue's own
(``BTC-USDT``, ``BTC_USDT``, ``btcusdt``) from ``spec.base`` and ``spec.quote``.
``market.listed(venue)`` gives the venue's symbols (trading or not, see
``spec.trading_on``); ``snapshot.book(venue, symbol)`` its current book, None where
it does not trade. A skeleton::

    class OkxWire(WireDefaults):
        name = "okx"
        ws_path = "/ws/v5/public"
        ws_url_suffix = "/ws/v5/public"
        config = SimVenueConfig(subscribe_timeout_s=30.0, client_ping_timeout_s=30.0)

        def __init__(self, market: Market) -> None: ...
        def rest(self, method, path, query, market, endpoints) -> RestReply: ...
        def on_message(self, conn, message, snapshot) -> Reply: ...
        def refuse(self, conn, message, why, snapshot) -> Reply: ...
        def book_topic(self, symbol) -> str: ...
        def trade_topic(self, symbol) -> str: ...
        def encode_book(self, book, snapshot) -> Frame: ...
        def encode_trades(self, trades) -> list[Frame]: ...
        def notice(self, conn, now_ms) -> Frame | None: ...   # override: OKX has one

Frames: ``str`` is a text message, ``bytes`` a binary one
---------------------------------------------------------
Every frame the server sends, and every client message it hands over, is ``str | bytes``
(:data:`Frame`): a ``str`` goes out as a WebSocket *text* message, ``bytes`` as a
*binary* message, exactly as returned. So MEXC returns protobuf data frames as
``bytes`` and its JSON acks/PONG as ``str``; HTX returns every frame gzip-compressed
as ``bytes`` (its pings too); a client's binary message reaches ``on_message`` as
``bytes``. Protocol-level ping/pong frames (RFC 6455 opcodes) are the server's
business, configured by :class:`SimVenueConfig`, never frames of a wire module.

The hooks, in the order a connection meets them
-----------------------------------------------
``config`` (class attribute, a :class:`SimVenueConfig`)
    The venue's documented behaviour: protocol pings, the application-ping watchdog,
    server-initiated application pings and missed-pong limit, the deadline to
    subscribe, the incoming message rate limit, the per-connection topic cap, the
    24 h-style age limit, Bybit's resend of unchanged books. ``SimVenueConfig.for_venue``
    returns it; tests shorten it with ``dataclasses.replace``.

``rest(method, path, query, market, endpoints) -> RestReply``
    One HTTP request to the venue's REST base URL: ``method`` upper case (``GET``,
    ``POST``...), ``path`` without the query string, ``query`` the decoded parameters.
    ``endpoints`` is this venue's own :class:`SimEndpoints`, so KuCoin's
    ``POST /api/v1/bullet-public`` can hand out ``endpoints.ws_url`` (plus a token) as
    ``instanceServers[0].endpoint``. Unknown paths: :data:`NOT_FOUND`; a method the
    path does not take: :data:`METHOD_NOT_ALLOWED`.

``ws_path`` and ``ws_url_suffix`` (class attributes)
    The server rejects (404) a handshake whose path (before ``?``) is not ``ws_path``.
    ``SimEndpoints.ws_url`` is ``ws://host:port`` + ``ws_url_suffix``: spell it like the
    venue's documented base URL so the connector appends what it appends in production.

``on_open(conn, snapshot) -> Opening``
    Called once per handshake on the right path, before it is accepted. ``conn.path``
    and ``conn.query`` (the decoded query string) are set. Return
    ``Opening(reject=RestReply(401, b"..."))`` to refuse the handshake with that HTTP
    status (KuCoin: missing or unknown ``token``), or ``Opening(frames=(...))`` for
    frames to send as soon as it opens (KuCoin's
    ``{"id":"<connectId>","type":"welcome"}``). Rejected handshakes are counted, and
    still use up a connection number.

``on_message(conn, message, snapshot) -> Reply``
    One client message (``str`` or ``bytes``). Parse it as the venue does; add or remove
    topics in ``conn.topics`` (the only per-connection state the server keeps for
    you); return the frames to send back in order (acks, errors, pongs, and the
    current book for a venue that sends one on subscribe) and say what happened:
    ``subscribed`` (topics added), ``unsubscribed``, ``duplicates`` (already there),
    ``rejected`` (refused: unknown symbol, too many args...), ``app_ping=True`` for a
    client application ping (feeds ``client_ping_timeout_s``: Bybit, OKX and Bitget's
    text ``ping`` -> ``pong``, KuCoin's ``{"type":"ping"}``), ``app_pong=True`` for the
    client's answer to *our* application ping (HTX's ``{"pong": ts}``), and
    ``close=Closing(...)`` to close the connection after the frames (a venue that hangs
    up on a bad request). Do **not** enforce the per-connection topic cap here: the
    server does (below). Limits that belong to one request (Bybit's 10 args, KuCoin's
    100 symbols per request) are the wire module's.

``refuse(conn, message, why, snapshot) -> Reply``
    The venue's error reply to a subscribe ``message`` that the server refuses after
    ``on_message`` accepted it: ``why`` is :attr:`Refusal.CAP` (it would take the
    connection over ``config.max_topics``: MEXC's 30, Binance's 1024) or
    :attr:`Refusal.REJECTED` (the test switched on
    :meth:`~app.sim.server.SimVenueControl.reject_subscriptions`: answer with the
    venue's documented subscribe error). The server first undoes the topics
    ``on_message`` added, discards its reply, sends this one's frames and counts the
    refused topics as rejected itself, so ``refuse`` only builds frames: parse the
    message again for its id/topic and echo them as the venue would.

``book_topic(symbol)``, ``trade_topic(symbol)`` -> str
    The topic string (as stored in ``conn.topics``) that carries a normalized symbol's
    best bid/ask, and its trades. ``encode_book(book, snapshot) -> Frame`` and
    ``encode_trades(trades) -> list[Frame]`` encode one book change (called once per
    change, shared by all subscribers) and a batch of one topic's new trades (annotate
    ``list[Frame]``, not ``list[str]``: lists are invariant and mypy would reject it).

``app_ping(conn, now_ms) -> Frame | None``
    Called every ``config.app_ping_interval_s`` per connection: the server-initiated
    application ping (HTX: gzip of ``{"ping": now_ms}``). The server counts pings since
    the last ``Reply.app_pong`` and closes the connection (1008) when a ping is due
    after ``config.max_missed_pongs`` unanswered ones. Return None for no ping.

``notice(conn, now_ms) -> Frame | None``
    The venue's own warning of a coming disconnect, sent by
    :meth:`~app.sim.server.SimVenueControl.announce_shutdown` on every connection
    before they are closed after a grace period (Binance ``{"e":"serverShutdown",..}``,
    OKX ``{"event":"notice","code":"64008",..}``, Gate's upgrade notice). None when
    the venue documents none (the connections are still closed after the grace).

``closing(conn, why, now_ms) -> Closing``
    How the venue closes a connection itself: the close code, reason and optional last
    frames, for :attr:`Disconnect.AGE_LIMIT` (its 24 h-style cut, from
    ``config.max_connection_age_s`` or ``SimVenueControl.force_cut``) and
    :attr:`Disconnect.MAINTENANCE` (the end of ``announce_shutdown``'s grace).

``malformed(conn, n, snapshot) -> Frame``
    The ``n``-th (0, 1, ...) frame of a :meth:`~app.sim.server.SimVenueControl.send_malformed`
    burst: a frame in the venue's own transport that its codec must reject, e.g.
    truncated JSON text, a data frame missing a field, gzip bytes cut short (HTX),
    protobuf with a broken length prefix (MEXC). Vary it with ``n``.

What the server does with all this (for reference)
--------------------------------------------------
Each connection has a bounded outbox; frames are offered without waiting and a full
outbox, or a send that misses ``send_timeout_s``, closes the client as too slow.
A wire-requested close (``Reply.close``, ``closing``) is queued behind the frames
before it, so the last frames go out first. While the control is silent the server
sends nothing (frames, pings, notices) and enforces no heartbeat; while rejecting,
every subscribe goes through ``refuse``. All the counters are in
``SimVenueStatistics``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import orjson

from app.sim.market import Market, MarketSnapshot, SimTrade, TopOfBook

#: one WebSocket message: ``str`` travels as a text message, ``bytes`` as a binary one
Frame = str | bytes

#: close codes
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008


@dataclass(frozen=True, slots=True)
class SimEndpoints:
    """Where a simulated venue listens.

    ``ws_url`` is spelled like the real venue's base URL: ``ws://host:port`` for Binance
    (clients append ``/ws``) and ``ws://host:port/v5/public/spot`` for Bybit.
    """

    rest_url: str
    ws_url: str


@dataclass(frozen=True, slots=True)
class SimVenueConfig:
    """How a simulated venue behaves. ``None`` switches a behaviour off.

    Each wire class holds its venue's documented values as ``config``; get them with
    :meth:`for_venue` and shorten them in tests with ``dataclasses.replace``.
    """

    #: seconds between protocol ping frames the server sends (Binance: 20)
    ping_interval_s: float | None = None
    #: a protocol ping without a pong for this long closes the connection (Binance: 60)
    pong_timeout_s: float = 60.0
    #: close a connection that sent no application ping for this long (Bybit, Bitget)
    client_ping_timeout_s: float | None = None
    #: seconds between application pings the server sends (HTX: 5), built by
    #: ``VenueWire.app_ping``
    app_ping_interval_s: float | None = None
    #: a connection is closed when an application ping is due after this many
    #: unanswered ones (HTX: 2)
    max_missed_pongs: int = 2
    #: close a connection that has not subscribed to anything this long after it
    #: opened (OKX, MEXC: 30)
    subscribe_timeout_s: float | None = None
    #: close a connection that sends more messages than this in any 1 s (Binance: 5)
    max_incoming_per_s: int | None = None
    #: topics one connection may hold; a subscribe beyond it gets ``VenueWire.refuse``
    #: with ``Refusal.CAP`` (Binance: 1024, MEXC: 30)
    max_topics: int | None = None
    #: the venue cuts every connection this long after it opened, with
    #: ``VenueWire.closing(.., Disconnect.AGE_LIMIT, ..)`` (Binance: 24 h)
    max_connection_age_s: float | None = None
    #: seconds between ``announce_shutdown``'s notice and the close (unless told)
    shutdown_grace_s: float = 30.0
    #: re-send an unchanged book after this long, same update id (Bybit level 1: 3)
    resend_unchanged_s: float | None = None
    #: seconds between polls of the market for changes to push
    publish_interval_s: float = 0.01
    #: frames queued per connection before it is closed as too slow
    outbox_size: int = 2048
    #: seconds one send may take before the connection is closed as too slow
    send_timeout_s: float = 5.0
    #: seconds allowed for a closing handshake
    close_timeout_s: float = 1.0
    #: seconds allowed for an opening handshake
    handshake_timeout_s: float = 5.0
    #: largest client message accepted (bytes)
    max_message_size: int = 65536

    @classmethod
    def for_venue(cls, name: str) -> SimVenueConfig:
        """The documented behaviour of venue ``name`` (its wire class's ``config``).

        Raises ValueError for an unknown venue, NotImplementedError for one whose wire
        module is not written yet.
        """
        from app.sim.server import wire_class  # the registry lives with the server

        return wire_class(name).config


@dataclass(frozen=True, slots=True)
class RestReply:
    """An HTTP response: status, body and its content type."""

    status: int
    body: bytes
    content_type: str = "application/json"


NOT_FOUND = RestReply(404, b"")
METHOD_NOT_ALLOWED = RestReply(405, b"")


@dataclass(frozen=True, slots=True)
class Closing:
    """How the venue closes a connection: optional last ``frames``, then ``code``/``reason``."""

    code: int
    reason: str
    frames: tuple[Frame, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """How the server should act on one client message.

    ``frames`` go back to the client in order. ``subscribed`` and ``unsubscribed`` are
    the topics the message added or removed; ``duplicates`` the ones it asked for that
    were already subscribed; ``rejected`` the ones refused. ``app_ping`` marks a client
    application-level ping (a heartbeat for venues that expect one); ``app_pong`` the
    client's answer to a server application ping. ``close``: close the connection
    once ``frames`` are sent.
    """

    frames: tuple[Frame, ...] = ()
    subscribed: tuple[str, ...] = ()
    unsubscribed: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()
    app_ping: bool = False
    app_pong: bool = False
    close: Closing | None = None


@dataclass(frozen=True, slots=True)
class Opening:
    """The venue's answer to a handshake: ``reject`` it with an HTTP status, or accept
    it and send ``frames`` at once (a welcome message)."""

    frames: tuple[Frame, ...] = ()
    reject: RestReply | None = None


class Refusal(enum.Enum):
    """Why the server refuses a subscribe that ``on_message`` accepted."""

    #: the connection would hold more than ``config.max_topics`` topics
    CAP = "cap"
    #: the control rejects every subscription (``reject_subscriptions(True)``)
    REJECTED = "rejected"


class Disconnect(enum.Enum):
    """Why the venue itself closes a connection."""

    #: its documented forced cut (24 h), or ``force_cut()``
    AGE_LIMIT = "age_limit"
    #: the end of ``announce_shutdown``'s grace period
    MAINTENANCE = "maintenance"


@dataclass(slots=True)
class ConnectionView:
    """What a wire module may know of one connection.

    ``conn_id`` is unique per venue (``sim-<venue>-<n>``); ``path`` and ``query`` are
    from the handshake; ``opened_ms`` is the market time it opened. ``topics`` is the
    one thing a wire module changes.
    """

    conn_id: str
    topics: set[str] = field(default_factory=set)
    path: str = ""
    query: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    opened_ms: int = 0


@runtime_checkable
class VenueWire(Protocol):
    """One simulated venue's wire format (see the module docstring for each hook)."""

    name: str
    #: the one WebSocket path the venue serves
    ws_path: str
    #: how ``ws_url`` continues after ``ws://host:port`` (the connector appends its own path)
    ws_url_suffix: str
    #: the venue's documented behaviour
    config: SimVenueConfig

    def rest(
        self, method: str, path: str, query: Mapping[str, str], market: Market,
        endpoints: SimEndpoints,
    ) -> RestReply: ...

    def on_open(self, conn: ConnectionView, snapshot: MarketSnapshot) -> Opening: ...

    def on_message(
        self, conn: ConnectionView, message: Frame, snapshot: MarketSnapshot
    ) -> Reply: ...

    def refuse(
        self, conn: ConnectionView, message: Frame, why: Refusal, snapshot: MarketSnapshot
    ) -> Reply: ...

    def book_topic(self, symbol: str) -> str: ...

    def trade_topic(self, symbol: str) -> str: ...

    def encode_book(self, book: TopOfBook, snapshot: MarketSnapshot) -> Frame: ...

    def encode_trades(self, trades: Sequence[SimTrade]) -> list[Frame]: ...

    def app_ping(self, conn: ConnectionView, now_ms: int) -> Frame | None: ...

    def notice(self, conn: ConnectionView, now_ms: int) -> Frame | None: ...

    def closing(self, conn: ConnectionView, why: Disconnect, now_ms: int) -> Closing: ...

    def malformed(self, conn: ConnectionView, n: int, snapshot: MarketSnapshot) -> Frame: ...


class WireDefaults:
    """Defaults for the optional hooks; a wire class may inherit them.

    No handshake check and no welcome, no application ping, no notice, a 1001 close
    for both kinds of venue disconnect, and truncated JSON text as the malformed frame.
    ``refuse`` has no sensible default: every venue words its errors its own way.
    """

    def on_open(self, conn: ConnectionView, snapshot: MarketSnapshot) -> Opening:
        return Opening()

    def app_ping(self, conn: ConnectionView, now_ms: int) -> Frame | None:
        return None

    def notice(self, conn: ConnectionView, now_ms: int) -> Frame | None:
        return None

    def closing(self, conn: ConnectionView, why: Disconnect, now_ms: int) -> Closing:
        if why is Disconnect.AGE_LIMIT:
            return Closing(CLOSE_GOING_AWAY, "connection lifetime exceeded")
        return Closing(CLOSE_GOING_AWAY, "server maintenance")

    def malformed(self, conn: ConnectionView, n: int, snapshot: MarketSnapshot) -> Frame:
        return truncated(dumps({"topic": "malformed", "seq": n, "ts": snapshot.now_ms}), n)


def dumps(value: object) -> str:
    """Compact JSON text, as the venues send it."""
    return orjson.dumps(value).decode()


def json_reply(value: object, status: int = 200) -> RestReply:
    return RestReply(status, orjson.dumps(value))


def fixed(value: float, decimals: int) -> str:
    """A decimal string with exactly ``decimals`` places."""
    return f"{value:.{decimals}f}"


def truncated(text: str, n: int = 0) -> str:
    """``text`` cut short (at least 1 and at most ``len - 1`` characters), so it no longer parses."""
    if len(text) < 2:
        return "{"
    return text[: max(1, len(text) // 2 + n % max(1, len(text) // 2 - 1))]
