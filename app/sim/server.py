"""Simulated venues served on loopback: the actors behind ``spreadwatch demo`` and the tests.

Tree (every task in a nursery, no threads)::

    run_sim_venues
      run_market                    steps the shared Market every interval
      run_sim_venue (per venue)
        hypercorn.trio.serve        REST, a plain ASGI app answered by the venue's wire
        serve_websocket             one handler per connection:
          reader (the handler)        drains the socket, answers through the wire module
          writer                      sends the connection's outbox, each send with a deadline
          server pinger / watchdog    protocol pings and pong deadline (Binance) or
                                      application-ping watchdog (Bybit)
        feed                        polls the market, encodes each change once, offers it
                                    to every subscribed connection without awaiting

Rules: nothing sent to a client can block the simulator. Each connection has a bounded
outbox; a connection whose outbox overflows, or whose send misses ``send_timeout_s``,
is closed. A :class:`SimVenueControl` held by the caller injects faults (drop every
connection, go silent, resume) and counts what happened.

Resource handling: a venue's sockets live as long as its ``run_sim_venue`` task. A
connection the venue closes gets a closing handshake bounded by ``close_timeout_s``; on
cancellation each open connection is sent a close frame (1001, shielded, not awaited)
and the listeners close.

Error handling: client misbehaviour closes that client's connection only. Errors in
the simulator itself propagate.
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Literal
from urllib.parse import parse_qsl

import hypercorn
import hypercorn.trio
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from app.sim.binance import BinanceWire
from app.sim.bybit import BybitWire
from app.sim.market import Market, MarketParams, MarketSnapshot, SimTrade
from app.sim.wire import ConnectionView, Reply, RestReply, VenueWire

log = logging.getLogger(__name__)

VENUES: tuple[str, ...] = ("binance", "bybit")

#: close codes the simulator uses
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008

#: seconds a connection's close frame gets to go out when the simulator shuts down
_SHUTDOWN_CLOSE_S = 0.05


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

    Venue defaults come from :meth:`for_venue`; tests shorten them with
    ``dataclasses.replace``.
    """

    #: seconds between protocol ping frames the server sends (Binance: 20)
    ping_interval_s: float | None = None
    #: a ping without a pong for this long closes the connection (Binance: 60)
    pong_timeout_s: float = 60.0
    #: close a connection that sent no application ping for this long (Bybit)
    client_ping_timeout_s: float | None = None
    #: close a connection that sends more messages than this in any 1 s (Binance: 5)
    max_incoming_per_s: int | None = None
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
        """The documented behaviour of venue ``name``.

        Bybit documents a 10 minute cut-off without ping-pong *and* without data; the
        simulator is stricter (60 s without an application ping) so that a connector
        that forgets its heartbeat fails within a minute of a demo.
        """
        if name == "binance":
            return cls(ping_interval_s=20.0, pong_timeout_s=60.0, max_incoming_per_s=5)
        if name == "bybit":
            return cls(client_ping_timeout_s=60.0, resend_unchanged_s=3.0)
        raise ValueError(f"no simulated venue named {name!r}; expected one of {VENUES}")


@dataclass(frozen=True, slots=True)
class SimVenueStatistics:
    """Counters of one simulated venue since its control was made."""

    connections_accepted: int
    connections_open: int
    handshakes_rejected: int
    rest_requests: int
    messages_received: int
    frames_sent: int
    topics_subscribed: int
    topics_unsubscribed: int
    duplicate_subscriptions: int
    rejected_topics: int
    app_pings: int
    pings_sent: int
    pongs_received: int
    dropped_by_control: int
    closed_rate_limit: int
    closed_no_pong: int
    closed_no_ping: int
    closed_slow_client: int


@dataclass(slots=True)
class _Tally:
    """The counters behind :class:`SimVenueStatistics` (all but ``connections_open``)."""

    connections_accepted: int = 0
    handshakes_rejected: int = 0
    rest_requests: int = 0
    messages_received: int = 0
    frames_sent: int = 0
    topics_subscribed: int = 0
    topics_unsubscribed: int = 0
    duplicate_subscriptions: int = 0
    rejected_topics: int = 0
    app_pings: int = 0
    pings_sent: int = 0
    pongs_received: int = 0
    dropped_by_control: int = 0
    closed_rate_limit: int = 0
    closed_no_pong: int = 0
    closed_no_ping: int = 0
    closed_slow_client: int = 0


class _Cause(enum.Enum):
    """Why the venue closed a connection; the value names its counter in :class:`_Tally`."""

    RATE_LIMIT = "closed_rate_limit"
    NO_PONG = "closed_no_pong"
    NO_PING = "closed_no_ping"
    SLOW_CLIENT = "closed_slow_client"


SubscriptionAction = Literal["subscribe", "unsubscribe", "duplicate", "reject"]


@dataclass(frozen=True, slots=True)
class SubscriptionEvent:
    """One topic of one subscription request, as the venue handled it."""

    connection: int
    topic: str
    action: SubscriptionAction


class _Session:
    """One client connection's state, shared by its tasks and the feed."""

    def __init__(self, number: int, conn_id: str, outbox_size: int, now: float) -> None:
        self.number = number
        self.view = ConnectionView(conn_id)
        self.scope = trio.CancelScope()
        self.close_code = CLOSE_GOING_AWAY
        self.close_reason = "simulator shutting down"
        self.ended = False
        self._outbox, self.outbox = trio.open_memory_channel[str](outbox_size)
        self.recent: collections.deque[float] = collections.deque()
        self.last_app_ping = now

    def offer(self, frame: str) -> bool:
        """Queue ``frame`` without waiting; False when the outbox is full."""
        try:
            self._outbox.send_nowait(frame)
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the connection is ending
        return True

    def end(self, code: int, reason: str) -> bool:
        """Close this connection with ``code``; False when it was already ending."""
        if self.ended:
            return False
        self.ended = True
        self.close_code, self.close_reason = code, reason
        self.scope.cancel()
        return True


class SimVenueControl:
    """The handle a test (or the demo) holds on one simulated venue.

    Fault injection: :meth:`drop_connections`, :meth:`go_silent`, :meth:`resume`.
    Observation: :meth:`statistics`, :meth:`subscriptions`, :meth:`subscription_log`
    and :meth:`wait_for`. One control serves one venue at a time.
    """

    def __init__(self, *, log_size: int = 100_000) -> None:
        self._silent = False
        self._sessions: dict[int, _Session] = {}
        self._numbers = itertools.count(1)
        self._log: collections.deque[SubscriptionEvent] = collections.deque(maxlen=log_size)
        self._changed = trio.Event()
        self._tally = _Tally()

    # -- faults ----------------------------------------------------------------------

    def drop_connections(self) -> int:
        """Close every open connection (code 1001); returns how many were open."""
        dropped = sum(
            s.end(CLOSE_GOING_AWAY, "dropped by simulator control")
            for s in list(self._sessions.values())
        )
        self._tally.dropped_by_control += dropped
        self._notify()
        return dropped

    def go_silent(self) -> None:
        """Keep every socket open but send nothing and answer nothing.

        While silent the venue reads and discards client messages (application pings
        included), sends no data, acks or ping frames, and enforces no limit or
        heartbeat. trio-websocket still answers the clients' protocol pings, as a
        stalled feed behind a live socket would.
        """
        self._silent = True
        self._notify()

    def resume(self) -> None:
        """End silence; subscriptions made before it are served again."""
        self._silent = False
        now = trio.current_time()
        for session in self._sessions.values():
            session.last_app_ping = now
        self._notify()

    @property
    def silent(self) -> bool:
        return self._silent

    # -- observation -----------------------------------------------------------------

    def statistics(self) -> SimVenueStatistics:
        return SimVenueStatistics(connections_open=len(self._sessions), **asdict(self._tally))

    def subscriptions(self) -> dict[int, frozenset[str]]:
        """Topics of each open connection, by connection number (1, 2, ... per venue)."""
        return {n: frozenset(s.view.topics) for n, s in self._sessions.items()}

    def subscription_log(self) -> tuple[SubscriptionEvent, ...]:
        """Every topic of every subscribe/unsubscribe request, oldest first (bounded)."""
        return tuple(self._log)

    async def wait_for(
        self, predicate: Callable[[SimVenueStatistics], bool]
    ) -> SimVenueStatistics:
        """Wait until ``predicate(statistics())`` holds; returns those statistics.

        Woken on connection, subscription, heartbeat and close events (not per frame
        sent). Put a timeout around it.
        """
        while True:
            stats = self.statistics()
            if predicate(stats):
                return stats
            await self._changed.wait()

    # -- used by the server ----------------------------------------------------------

    def _notify(self) -> None:
        if self._changed.statistics().tasks_waiting:
            self._changed.set()
            self._changed = trio.Event()

    def _open(self, venue: str, outbox_size: int) -> _Session:
        number = next(self._numbers)
        session = _Session(number, f"sim-{venue}-{number}", outbox_size, trio.current_time())
        self._sessions[number] = session
        self._tally.connections_accepted += 1
        self._notify()
        return session

    def _close(self, session: _Session) -> None:
        self._sessions.pop(session.number, None)
        self._notify()

    def _end(self, session: _Session, cause: _Cause, reason: str) -> None:
        """Close ``session`` for a policy reason, counted under ``cause``."""
        if session.end(CLOSE_POLICY, reason):
            setattr(self._tally, cause.value, getattr(self._tally, cause.value) + 1)
            self._notify()

    def _deliver(self, session: _Session, frame: str) -> None:
        """Hand ``frame`` to one connection without waiting; a full outbox closes it."""
        if not session.offer(frame):
            self._end(session, _Cause.SLOW_CLIENT, "client too slow: outbox overflow")

    def _record(self, session: _Session, reply: Reply) -> None:
        n = session.number
        self._tally.topics_subscribed += len(reply.subscribed)
        self._tally.topics_unsubscribed += len(reply.unsubscribed)
        self._tally.duplicate_subscriptions += len(reply.duplicates)
        self._tally.rejected_topics += len(reply.rejected)
        self._tally.app_pings += reply.app_ping
        actions: tuple[tuple[SubscriptionAction, tuple[str, ...]], ...] = (
            ("subscribe", reply.subscribed),
            ("duplicate", reply.duplicates),
            ("reject", reply.rejected),
            ("unsubscribe", reply.unsubscribed),
        )
        for action, topics in actions:
            self._log.extend(SubscriptionEvent(n, t, action) for t in topics)
        if reply.subscribed or reply.unsubscribed or reply.duplicates or reply.rejected \
                or reply.app_ping:
            self._notify()

    def _sessions_now(self) -> list[_Session]:
        return list(self._sessions.values())


def make_wire(name: str, market: Market) -> VenueWire:
    """The wire module of venue ``name`` for ``market``."""
    if name not in market.venues:
        raise ValueError(f"venue {name!r} is not part of the market {market.venues}")
    if name == "binance":
        return BinanceWire(market)
    if name == "bybit":
        return BybitWire(market)
    raise ValueError(f"no simulated venue named {name!r}; expected one of {VENUES}")


# -- market ----------------------------------------------------------------------------


async def run_market(
    market: Market,
    *,
    interval_s: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Step ``market`` every ``interval_s`` by the time that really passed. Never returns."""
    if not interval_s > 0.0:
        raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
    task_status.started()
    last = trio.current_time()
    while True:
        await trio.sleep(interval_s)
        now = trio.current_time()
        market.step(max(now - last, 1e-6))
        last = now


# -- REST ------------------------------------------------------------------------------


class _RestApp:
    """A plain ASGI app answering GET requests through the venue's wire module."""

    def __init__(self, wire: VenueWire, market: Market, control: SimVenueControl) -> None:
        self._wire = wire
        self._market = market
        self._control = control

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            self._control._tally.rest_requests += 1
            if scope["method"] != "GET":
                reply = RestReply(405, b"")
            else:
                query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
                reply = self._wire.rest(scope["path"], query, self._market)
            await send({
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(reply.body)).encode()),
                ],
            })
            await send({"type": "http.response.body", "body": reply.body, "more_body": False})
        else:
            await send({"type": "websocket.close", "code": CLOSE_POLICY, "reason": None})


# -- WebSocket -------------------------------------------------------------------------


async def _serve_connection(
    request: WebSocketRequest,
    *,
    wire: VenueWire,
    market: Market,
    control: SimVenueControl,
    config: SimVenueConfig,
) -> None:
    if request.path.split("?", 1)[0] != wire.ws_path:
        control._tally.handshakes_rejected += 1
        await request.reject(404, body=b"no such path")
        return
    ws = await request.accept()
    session = control._open(wire.name, config.outbox_size)
    try:
        with session.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_write, ws, session, control, config)
                if config.ping_interval_s is not None:
                    nursery.start_soon(_ping_client, ws, session, control, config, nursery)
                if config.client_ping_timeout_s is not None:
                    nursery.start_soon(
                        _watch_app_pings, session, control, config.client_ping_timeout_s
                    )
                await _read(ws, session, wire, market, control, config)
                nursery.cancel_scope.cancel()
    finally:
        control._close(session)
        # When the simulator chose to close, trio-websocket's reader is alive and the
        # closing handshake completes at once. On shutdown that reader is cancelled as
        # well and can never read the client's answer: send the close frame, don't wait.
        wait_s = config.close_timeout_s if session.ended else _SHUTDOWN_CLOSE_S
        with trio.move_on_after(wait_s, shield=True):
            await ws.aclose(session.close_code, session.close_reason)


async def _read(
    ws: WebSocketConnection,
    session: _Session,
    wire: VenueWire,
    market: Market,
    control: SimVenueControl,
    config: SimVenueConfig,
) -> None:
    limit = config.max_incoming_per_s
    while True:
        try:
            message = await ws.get_message()
        except ConnectionClosed:
            return
        control._tally.messages_received += 1
        if control.silent:
            continue
        now = trio.current_time()
        if limit is not None:
            session.recent.append(now)
            while session.recent[0] <= now - 1.0:
                session.recent.popleft()
            if len(session.recent) > limit:
                control._end(session, _Cause.RATE_LIMIT, f"more than {limit} messages in 1 s")
                return
        reply = wire.on_message(session.view, message, market.snapshot)
        control._record(session, reply)
        if reply.app_ping:
            session.last_app_ping = now
        for frame in reply.frames:
            control._deliver(session, frame)


async def _write(
    ws: WebSocketConnection, session: _Session, control: SimVenueControl, config: SimVenueConfig
) -> None:
    async for frame in session.outbox:
        if control.silent:
            continue
        with trio.move_on_after(config.send_timeout_s) as deadline:
            try:
                await ws.send_message(frame)
            except ConnectionClosed:
                session.end(ws.closed.code if ws.closed else 1006, "closed by client")
                return
        if deadline.cancelled_caught:
            control._end(session, _Cause.SLOW_CLIENT, "client too slow: send timed out")
            return
        control._tally.frames_sent += 1


async def _ping_client(
    ws: WebSocketConnection,
    session: _Session,
    control: SimVenueControl,
    config: SimVenueConfig,
    nursery: trio.Nursery,
) -> None:
    assert config.ping_interval_s is not None
    for n in itertools.count(1):
        await trio.sleep(config.ping_interval_s)
        if not control.silent:
            nursery.start_soon(_await_pong, ws, session, control, config, b"%d" % n)


async def _await_pong(
    ws: WebSocketConnection,
    session: _Session,
    control: SimVenueControl,
    config: SimVenueConfig,
    payload: bytes,
) -> None:
    with trio.move_on_after(config.pong_timeout_s):
        control._tally.pings_sent += 1
        control._notify()
        try:
            await ws.ping(payload)  # sends the ping frame, returns on its pong
        except ConnectionClosed:
            return
        control._tally.pongs_received += 1
        control._notify()
        return
    if not control.silent:
        control._end(session, _Cause.NO_PONG, f"no pong within {config.pong_timeout_s} s")


async def _watch_app_pings(session: _Session, control: SimVenueControl, timeout_s: float) -> None:
    while True:
        now = trio.current_time()
        deadline = session.last_app_ping + timeout_s
        if now < deadline:
            await trio.sleep(deadline - now)
        elif control.silent:
            session.last_app_ping = now
        else:
            control._end(session, _Cause.NO_PING, f"no ping for {timeout_s} s")
            return


async def _run_feed(
    wire: VenueWire, market: Market, control: SimVenueControl, config: SimVenueConfig
) -> None:
    """Push book changes and trades of one venue to the connections subscribed to them.

    Each frame is encoded once and offered to every subscriber without waiting.
    """
    venue = wire.name
    book_topics = [
        (key, wire.book_topic(key[1])) for key in market.snapshot.books if key[0] == venue
    ]
    resend = config.resend_unchanged_s
    started = trio.current_time()
    last_push = {topic: started for _, topic in book_topics}
    prev: MarketSnapshot = market.snapshot
    seen_trade = prev.trades[-1].seq if prev.trades else 0
    while True:
        await trio.sleep(config.publish_interval_s)
        snap = market.snapshot
        now = trio.current_time()
        sessions = control._sessions_now()
        wanted: set[str] = set()
        if not control.silent:
            for session in sessions:
                wanted |= session.view.topics
        frames: dict[str, list[str]] = {}
        for key, topic in book_topics:
            book = snap.books[key]
            old = prev.books.get(key)
            changed = old is None or old.update_id != book.update_id
            if changed or (resend is not None and now - last_push[topic] >= resend):
                # the venue pushes (or re-sends) whether anyone listens or not
                last_push[topic] = now
                if topic in wanted:
                    frames[topic] = [wire.encode_book(book, snap)]
        trades: dict[str, list[SimTrade]] = {}
        for trade in snap.trades:
            if trade.seq > seen_trade and trade.venue == venue:
                topic = wire.trade_topic(trade.symbol)
                if topic in wanted:
                    trades.setdefault(topic, []).append(trade)
        for topic, batch in trades.items():
            frames[topic] = wire.encode_trades(batch)
        if snap.trades:
            seen_trade = snap.trades[-1].seq
        prev = snap
        if frames:
            for session in sessions:
                for topic in session.view.topics & frames.keys():
                    for frame in frames[topic]:
                        control._deliver(session, frame)


# -- entry points ----------------------------------------------------------------------


async def run_sim_venue(
    name: str,
    market: Market,
    *,
    host: str = "127.0.0.1",
    control: SimVenueControl | None = None,
    config: SimVenueConfig | None = None,
    task_status: trio.TaskStatus[SimEndpoints] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve venue ``name`` (REST and WebSocket) on two ports of ``host``. Never returns.

    Reports :class:`SimEndpoints` once both listeners accept connections. The market
    is read, not stepped: run :func:`run_market` beside it.
    """
    wire = make_wire(name, market)
    control = control if control is not None else SimVenueControl()
    config = config if config is not None else SimVenueConfig.for_venue(name)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(hypercorn.trio.serve, _RestApp(wire, market, control), _rest_config(host),
                    mode="asgi")
        )
        handler = partial(_serve_connection, wire=wire, market=market, control=control,
                          config=config)
        server = await nursery.start(partial(
            serve_websocket, handler, host, 0, None,
            message_queue_size=4,
            max_message_size=config.max_message_size,
            connect_timeout=config.handshake_timeout_s,
            disconnect_timeout=config.close_timeout_s,
        ))
        nursery.start_soon(_run_feed, wire, market, control, config)
        ws_host = f"[{host}]" if ":" in host else host
        endpoints = SimEndpoints(
            rest_url=binds[0],
            ws_url=f"ws://{ws_host}:{server.port}{wire.ws_url_suffix}",
        )
        log.info("simulated %s: REST %s, WebSocket %s", name, endpoints.rest_url, endpoints.ws_url)
        task_status.started(endpoints)


def _rest_config(host: str) -> hypercorn.Config:
    config = hypercorn.Config()
    config.bind = [f"[{host}]:0" if ":" in host else f"{host}:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger(f"{__name__}.rest")
    config.graceful_timeout = 1.0
    return config


async def run_sim_venues(
    names: Sequence[str] = VENUES,
    *,
    seed: int = 0,
    interval_s: float = 0.05,
    host: str = "127.0.0.1",
    params: MarketParams | None = None,
    controls: Mapping[str, SimVenueControl] | None = None,
    configs: Mapping[str, SimVenueConfig] | None = None,
    task_status: trio.TaskStatus[dict[str, SimEndpoints]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one market (seeded, starting at the wall-clock time) and venues ``names``.

    Reports ``{name: SimEndpoints}`` once every venue listens. Never returns.
    """
    market = Market(venues=names, seed=seed, params=params, start_ms=time.time_ns() // 1_000_000)
    controls = controls or {}
    configs = configs or {}
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_market, market, interval_s=interval_s))
        endpoints: dict[str, SimEndpoints] = {}
        for name in names:
            endpoints[name] = await nursery.start(partial(
                run_sim_venue, name, market, host=host,
                control=controls.get(name), config=configs.get(name),
            ))
        task_status.started(endpoints)


__all__ = [
    "VENUES",
    "SimEndpoints",
    "SimVenueConfig",
    "SimVenueControl",
    "SimVenueStatistics",
    "SubscriptionEvent",
    "make_wire",
    "run_market",
    "run_sim_venue",
    "run_sim_venues",
]
