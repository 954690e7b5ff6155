"""Simulated venues served on loopback: the actors behind ``spreadwatch demo`` and the tests.

Tree (every task in a nursery, no threads)::

    run_sim_venues
      run_market                    steps the shared Market every interval
      run_chaos (optional)          injects a random fault now and then (``chaos=``)
      run_sim_venue (per venue)
        hypercorn.trio.serve        REST, a plain ASGI app answered by the venue's wire
        serve_websocket             one handler per connection:
          reader (the handler)        drains the socket, answers through the wire module
          writer                      sends the connection's outbox, each send with a deadline
          watchdogs                   protocol pings and pong deadline (Binance),
                                      server application pings and missed pongs (HTX),
                                      client application-ping watchdog (Bybit, Bitget),
                                      subscribe deadline (OKX, MEXC),
                                      lifetime: age limit (24 h) and maintenance closes
        feed                        reads each market step's changes, encodes each once,
                                    offers it to the topic's subscribers without awaiting

What a venue says on the wire comes from its wire module (``app/sim/<venue>.py``, the
contract is in ``wire.py``); everything with a socket or a clock is here. Wire modules
are found by name in :data:`_WIRES` and imported on first use, so a venue whose module
is not written yet fails with a clear NotImplementedError only when asked for.

Rules: nothing sent to a client can block the simulator. Each connection has a bounded
outbox; a connection whose outbox overflows, or whose send misses ``send_timeout_s``,
is closed. A :class:`SimVenueControl` held by the caller injects faults (drop, silence,
malformed frames, slow sends, refused subscriptions, forced cuts, announced shutdowns)
and counts what happened.

Resource handling: a venue's sockets live as long as its ``run_sim_venue`` task. A
connection the venue closes gets a closing handshake bounded by ``close_timeout_s``; on
cancellation each open connection is sent a close frame (1001, shielded, not awaited)
and the listeners close.

Error handling: client misbehaviour closes that client's connection only. Errors in
the simulator itself (wire modules included) propagate.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import enum
import importlib
import importlib.util
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from types import MappingProxyType
from typing import Literal, cast
from urllib.parse import parse_qsl

import hypercorn
import hypercorn.trio
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from app.sim.market import Market, MarketParams, SimTrade, SymbolSpec
from app.sim.wire import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY,
    Closing,
    ConnectionView,
    Disconnect,
    Frame,
    Refusal,
    Reply,
    RestReply,
    SimEndpoints,
    SimVenueConfig,
    VenueWire,
)

log = logging.getLogger(__name__)

#: every venue the simulator knows, in the order of ``/work/shared/VENUES.md``
VENUES: tuple[str, ...] = ("binance", "bybit", "okx", "mexc", "gate", "kucoin", "bitget", "htx")

#: venue name -> (module, class) of its wire; imported on first use
_WIRES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "binance": ("app.sim.binance", "BinanceWire"),
    "bybit": ("app.sim.bybit", "BybitWire"),
    "okx": ("app.sim.okx", "OkxWire"),
    "mexc": ("app.sim.mexc", "MexcWire"),
    "gate": ("app.sim.gate", "GateWire"),
    "kucoin": ("app.sim.kucoin", "KucoinWire"),
    "bitget": ("app.sim.bitget", "BitgetWire"),
    "htx": ("app.sim.htx", "HtxWire"),
})

#: seconds a connection's close frame gets to go out when the simulator shuts down
_SHUTDOWN_CLOSE_S = 0.05
#: longest single sleep of a writer holding a frame back (``send_slowly``)
_SLOW_POLL_S = 0.05

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_POLICY",
    "VENUES",
    "ChaosEvent",
    "Fault",
    "SimEndpoints",
    "SimVenueConfig",
    "SimVenueControl",
    "SimVenueStatistics",
    "SubscriptionEvent",
    "available_venues",
    "make_wire",
    "run_chaos",
    "run_market",
    "run_sim_venue",
    "run_sim_venues",
    "wire_class",
]


# -- the registry ----------------------------------------------------------------------


def wire_class(name: str) -> type[VenueWire]:
    """The wire class of venue ``name``, its module imported on first use.

    Raises ValueError for a name not in :data:`VENUES` and NotImplementedError when the
    venue's module (``app/sim/<name>.py``) does not exist yet.
    """
    try:
        module_name, class_name = _WIRES[name]
    except KeyError:
        raise ValueError(f"no simulated venue named {name!r}; expected one of {VENUES}") from None
    if importlib.util.find_spec(module_name) is None:
        raise NotImplementedError(
            f"simulated {name} is not available yet: {module_name} (app/sim/{name}.py) "
            f"does not exist; the contract it must follow is in app/sim/wire.py"
        )
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not isinstance(cls, type):
        raise NotImplementedError(f"{module_name} defines no class {class_name}")
    return cast(type[VenueWire], cls)


def available_venues() -> tuple[str, ...]:
    """The venues of :data:`VENUES` whose wire module exists, in that order."""
    return tuple(n for n in VENUES if importlib.util.find_spec(_WIRES[n][0]) is not None)


def make_wire(name: str, market: Market) -> VenueWire:
    """The wire module of venue ``name`` for ``market``."""
    if name not in market.venues:
        raise ValueError(f"venue {name!r} is not part of the market {market.venues}")
    wire = cast(Callable[[Market], VenueWire], wire_class(name))(market)
    if not isinstance(wire, VenueWire):
        raise TypeError(f"{type(wire).__name__} does not implement VenueWire (see app/sim/wire.py)")
    return wire


# -- records ---------------------------------------------------------------------------


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
    #: subscribe messages refused by the server: over ``max_topics``, or rejecting
    refused_over_cap: int
    refused_by_control: int
    app_pings: int
    pings_sent: int
    pongs_received: int
    app_pings_sent: int
    app_pongs_received: int
    malformed_sent: int
    notices_sent: int
    dropped_by_control: int
    closed_rate_limit: int
    closed_no_pong: int
    closed_no_ping: int
    closed_no_subscription: int
    closed_slow_client: int
    closed_by_wire: int
    closed_age_limit: int
    closed_maintenance: int


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
    refused_over_cap: int = 0
    refused_by_control: int = 0
    app_pings: int = 0
    pings_sent: int = 0
    pongs_received: int = 0
    app_pings_sent: int = 0
    app_pongs_received: int = 0
    malformed_sent: int = 0
    notices_sent: int = 0
    dropped_by_control: int = 0
    closed_rate_limit: int = 0
    closed_no_pong: int = 0
    closed_no_ping: int = 0
    closed_no_subscription: int = 0
    closed_slow_client: int = 0
    closed_by_wire: int = 0
    closed_age_limit: int = 0
    closed_maintenance: int = 0


class _Cause(enum.Enum):
    """Why the venue closed a connection; the value names its counter in :class:`_Tally`."""

    RATE_LIMIT = "closed_rate_limit"
    NO_PONG = "closed_no_pong"
    NO_PING = "closed_no_ping"
    NO_SUBSCRIPTION = "closed_no_subscription"
    SLOW_CLIENT = "closed_slow_client"
    BY_WIRE = "closed_by_wire"
    AGE_LIMIT = "closed_age_limit"
    MAINTENANCE = "closed_maintenance"


_DISCONNECT_CAUSE: Mapping[Disconnect, _Cause] = MappingProxyType({
    Disconnect.AGE_LIMIT: _Cause.AGE_LIMIT,
    Disconnect.MAINTENANCE: _Cause.MAINTENANCE,
})

SubscriptionAction = Literal["subscribe", "unsubscribe", "duplicate", "reject"]


@dataclass(frozen=True, slots=True)
class SubscriptionEvent:
    """One topic of one subscription request, as the venue handled it."""

    connection: int
    topic: str
    action: SubscriptionAction


@dataclass(frozen=True, slots=True)
class _Close:
    """Queued behind a connection's last frames: close it once they are sent."""

    cause: _Cause
    code: int
    reason: str


_Item = tuple[Frame, float] | _Close


class _Session:
    """One client connection's state, shared by its tasks, the feed and the control."""

    def __init__(
        self, number: int, view: ConnectionView, config: SimVenueConfig, now: float
    ) -> None:
        self.number = number
        self.view = view
        self.scope = trio.CancelScope()
        #: wakes the lifetime watchdog at the age limit or the end of a maintenance grace
        self.deadline_scope = trio.CancelScope()
        self.maintenance_at: float | None = None
        if config.max_connection_age_s is not None:
            self.deadline_scope.deadline = now + config.max_connection_age_s
        self.close_code = CLOSE_GOING_AWAY
        self.close_reason = "simulator shutting down"
        self.ended = False
        self.close_queued = False
        self._outbox, self.outbox = trio.open_memory_channel[_Item](config.outbox_size)
        self.recent: collections.deque[float] = collections.deque()
        self.last_app_ping = now
        self.missed_pongs = 0
        self.subscribed_once = False

    def offer(self, item: _Item) -> bool:
        """Queue ``item`` without waiting; False when the outbox is full."""
        try:
            self._outbox.send_nowait(item)
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


@dataclass(slots=True)
class _Attachment:
    """The venue a control serves while its ``run_sim_venue`` runs."""

    wire: VenueWire
    market: Market
    config: SimVenueConfig


class SimVenueControl:
    """The handle a test (or the demo) holds on one simulated venue.

    Faults: :meth:`drop_connections`, :meth:`refuse_connections`, :meth:`go_silent`/:meth:`resume`,
    :meth:`send_malformed`, :meth:`send_slowly`/:meth:`send_normally`,
    :meth:`reject_subscriptions`, :meth:`force_cut`, :meth:`announce_shutdown`.
    Observation: :meth:`statistics`, :meth:`subscriptions`, :meth:`subscription_log`
    and :meth:`wait_for`. One control serves one venue at a time; the faults act on the
    connections open when called (none before the venue runs).
    """

    def __init__(self, *, log_size: int = 100_000) -> None:
        self._silent = False
        self._rejecting = False
        self._refusing = False
        self._send_delay_s = 0.0
        self._sessions: dict[int, _Session] = {}
        #: topic -> the sessions subscribed to it, by number (the feed's index)
        self._subscribers: dict[str, dict[int, _Session]] = {}
        self._numbers = itertools.count(1)
        self._malformed = itertools.count()
        self._log: collections.deque[SubscriptionEvent] = collections.deque(maxlen=log_size)
        self._changed = trio.Event()
        self._tally = _Tally()
        self._venue: _Attachment | None = None

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

    def refuse_connections(self, on: bool = True) -> None:
        """While on, every WebSocket handshake is refused with HTTP 503 (counted in
        ``handshakes_rejected``): with :meth:`drop_connections`, a venue that is down.
        REST keeps answering. Connections already open are not affected.
        """
        self._refusing = on
        self._notify()

    @property
    def refusing_connections(self) -> bool:
        return self._refusing

    def go_silent(self) -> None:
        """Keep every socket open but send nothing and answer nothing.

        While silent the venue reads and discards client messages (application pings
        included), sends no data, acks, notices or ping frames, and enforces no limit
        or heartbeat. trio-websocket still answers the clients' protocol pings, as a
        stalled feed behind a live socket would. Closes the venue decides on (cuts,
        maintenance) still happen.
        """
        self._silent = True
        self._notify()

    def resume(self) -> None:
        """End silence; subscriptions made before it are served again."""
        self._silent = False
        now = trio.current_time()
        for session in self._sessions.values():
            session.last_app_ping = now
            session.missed_pongs = 0
        self._notify()

    @property
    def silent(self) -> bool:
        return self._silent

    def send_malformed(self, n: int = 1) -> int:
        """Send ``n`` malformed frames (the wire's ``malformed``) on every connection.

        They queue behind frames already on their way. Returns the connections sent to.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        venue = self._venue
        sessions = self._sessions_now()
        if venue is None or not sessions:
            return 0
        snapshot = venue.market.snapshot
        for _ in range(n):
            index = next(self._malformed)
            for session in sessions:
                self._deliver(session, venue.wire.malformed(session.view, index, snapshot))
        self._tally.malformed_sent += n * len(sessions)
        self._notify()
        return len(sessions)

    def send_slowly(self, delay_s: float) -> None:
        """Hold every frame back until ``delay_s`` after it was produced: a lagging venue.

        Order is kept and nothing is dropped; data arrives stale. The outbox still
        bounds it (a busy feed delayed long enough overflows and closes the client).
        Takes effect on frames already queued. ``send_normally()`` (or 0) ends it.
        """
        if not delay_s >= 0.0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s!r}")
        self._send_delay_s = delay_s
        self._notify()

    def send_normally(self) -> None:
        """End :meth:`send_slowly`: held frames go out at once."""
        self.send_slowly(0.0)

    @property
    def send_delay_s(self) -> float:
        return self._send_delay_s

    def reject_subscriptions(self, on: bool = True) -> None:
        """While on, every subscribe request gets the venue's error reply (``refuse``).

        Topics already subscribed keep flowing; unsubscribes and pings still work.
        """
        self._rejecting = on
        self._notify()

    @property
    def rejecting(self) -> bool:
        return self._rejecting

    @property
    def rejecting_subscriptions(self) -> bool:
        return self._rejecting

    def force_cut(self) -> int:
        """The venue's 24 h-style disconnect, now, on every open connection.

        Each gets the wire's ``closing(.., Disconnect.AGE_LIMIT, ..)`` frames, then that
        close code. Returns how many connections were cut.
        """
        sessions = self._sessions_now()
        for session in sessions:
            self._cut(session, Disconnect.AGE_LIMIT)
        return len(sessions)

    def announce_shutdown(self, grace_s: float | None = None) -> int:
        """Maintenance: the venue's notice (``notice``) now on every open connection,
        then each of them is closed ``grace_s`` later (``config.shutdown_grace_s`` by
        default) with ``closing(.., Disconnect.MAINTENANCE, ..)``.

        Connections opened meanwhile are not affected. A venue without a notice frame
        closes them all the same. Returns how many connections will be closed.
        """
        venue = self._venue
        sessions = [s for s in self._sessions_now() if s.maintenance_at is None]
        if venue is None or not sessions:
            return 0
        grace = venue.config.shutdown_grace_s if grace_s is None else grace_s
        if not grace >= 0.0:
            raise ValueError(f"grace_s must be >= 0, got {grace_s!r}")
        now = trio.current_time()
        now_ms = venue.market.snapshot.now_ms
        for session in sessions:
            frame = venue.wire.notice(session.view, now_ms)
            if frame is not None:
                self._deliver(session, frame)
                self._tally.notices_sent += 1
            session.maintenance_at = now + grace
            scope = session.deadline_scope
            scope.deadline = min(scope.deadline, now + grace)
        self._notify()
        return len(sessions)

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

        Woken on connection, subscription, heartbeat, fault and close events (not per
        frame sent). Put a timeout around it.
        """
        while True:
            stats = self.statistics()
            if predicate(stats):
                return stats
            await self._changed.wait()

    # -- used by the server ----------------------------------------------------------

    def _attach(self, wire: VenueWire, market: Market, config: SimVenueConfig) -> None:
        if self._venue is not None:
            raise RuntimeError(f"this control already serves {self._venue.wire.name}")
        self._venue = _Attachment(wire, market, config)

    def _detach(self) -> None:
        self._venue = None

    def _notify(self) -> None:
        if self._changed.statistics().tasks_waiting:
            self._changed.set()
            self._changed = trio.Event()

    def _next_number(self) -> int:
        return next(self._numbers)

    def _open(self, number: int, view: ConnectionView, config: SimVenueConfig) -> _Session:
        session = _Session(number, view, config, trio.current_time())
        self._sessions[number] = session
        self._tally.connections_accepted += 1
        self._notify()
        return session

    def _close(self, session: _Session) -> None:
        self._sessions.pop(session.number, None)
        self._index(session, (), session.view.topics)
        self._notify()

    def _index(self, session: _Session, added: Iterable[str], removed: Iterable[str]) -> None:
        for topic in added:
            self._subscribers.setdefault(topic, {})[session.number] = session
        for topic in removed:
            subscribers = self._subscribers.get(topic)
            if subscribers is not None:
                subscribers.pop(session.number, None)
                if not subscribers:
                    del self._subscribers[topic]

    def _count(self, cause: _Cause) -> None:
        setattr(self._tally, cause.value, getattr(self._tally, cause.value) + 1)

    def _end(self, session: _Session, cause: _Cause, reason: str, code: int = CLOSE_POLICY) -> None:
        """Close ``session`` now, counted under ``cause``."""
        if session.end(code, reason):
            self._count(cause)
            self._notify()

    def _deliver(self, session: _Session, frame: Frame) -> None:
        """Hand ``frame`` to one connection without waiting; a full outbox closes it."""
        if not session.offer((frame, trio.current_time())):
            self._end(session, _Cause.SLOW_CLIENT, "client too slow: outbox overflow")

    def _queue_close(self, session: _Session, cause: _Cause, closing: Closing) -> None:
        """Send ``closing.frames``, then close with its code (behind what is queued)."""
        if session.close_queued or session.ended:
            return
        session.close_queued = True
        for frame in closing.frames:
            self._deliver(session, frame)
        if not session.offer(_Close(cause, closing.code, closing.reason)):
            self._end(session, cause, closing.reason, closing.code)

    def _cut(self, session: _Session, why: Disconnect) -> None:
        venue = self._venue
        if venue is None:
            return
        closing = venue.wire.closing(session.view, why, venue.market.snapshot.now_ms)
        self._queue_close(session, _DISCONNECT_CAUSE[why], closing)

    def _record(self, session: _Session, reply: Reply) -> None:
        n = session.number
        self._tally.topics_subscribed += len(reply.subscribed)
        self._tally.topics_unsubscribed += len(reply.unsubscribed)
        self._tally.duplicate_subscriptions += len(reply.duplicates)
        self._tally.rejected_topics += len(reply.rejected)
        self._tally.app_pings += reply.app_ping
        self._tally.app_pongs_received += reply.app_pong
        actions: tuple[tuple[SubscriptionAction, tuple[str, ...]], ...] = (
            ("subscribe", reply.subscribed),
            ("duplicate", reply.duplicates),
            ("reject", reply.rejected),
            ("unsubscribe", reply.unsubscribed),
        )
        for action, topics in actions:
            self._log.extend(SubscriptionEvent(n, t, action) for t in topics)
        if reply.subscribed or reply.unsubscribed or reply.duplicates or reply.rejected \
                or reply.app_ping or reply.app_pong:
            self._notify()

    def _sessions_now(self) -> list[_Session]:
        return list(self._sessions.values())


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
    """A plain ASGI app answering every request through the venue's wire module."""

    def __init__(self, wire: VenueWire, market: Market, control: SimVenueControl) -> None:
        self._wire = wire
        self._market = market
        self._control = control
        #: set once both listeners are bound; requests before that get 503
        self.endpoints: SimEndpoints | None = None

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
            if self.endpoints is None:
                reply = RestReply(503, b"")
            else:
                query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
                reply = self._wire.rest(
                    scope["method"].upper(), scope["path"], query, self._market, self.endpoints
                )
            await send({
                "type": "http.response.start",
                "status": reply.status,
                "headers": [
                    (b"content-type", reply.content_type.encode("latin-1")),
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
    path, _, query_string = request.path.partition("?")
    if path != wire.ws_path:
        control._tally.handshakes_rejected += 1
        control._notify()
        await request.reject(404, body=b"no such path")
        return
    if control.refusing_connections:
        control._tally.handshakes_rejected += 1
        control._notify()
        await request.reject(503, body=b"venue down (simulator control)")
        return
    number = control._next_number()
    view = ConnectionView(
        f"sim-{wire.name}-{number}",
        path=path,
        query=MappingProxyType(dict(parse_qsl(query_string, keep_blank_values=True))),
        opened_ms=market.snapshot.now_ms,
    )
    opening = wire.on_open(view, market.snapshot)
    if opening.reject is not None:
        control._tally.handshakes_rejected += 1
        control._notify()
        await request.reject(opening.reject.status, body=opening.reject.body)
        return
    ws = await request.accept()
    session = control._open(number, view, config)
    for frame in opening.frames:
        control._deliver(session, frame)
    try:
        with session.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_write, ws, session, control, config)
                nursery.start_soon(_watch_lifetime, session, control)
                if config.ping_interval_s is not None:
                    nursery.start_soon(_ping_client, ws, session, control, config, nursery)
                if config.app_ping_interval_s is not None:
                    nursery.start_soon(_app_ping_client, session, wire, market, control, config)
                if config.client_ping_timeout_s is not None:
                    nursery.start_soon(
                        _watch_app_pings, session, control, config.client_ping_timeout_s
                    )
                if config.subscribe_timeout_s is not None:
                    nursery.start_soon(
                        _watch_subscription, session, control, config.subscribe_timeout_s
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
        reply = _handle(session, wire, message, market, control, config)
        control._record(session, reply)
        if reply.app_ping:
            session.last_app_ping = now
        if reply.app_pong:
            session.missed_pongs = 0
        for frame in reply.frames:
            control._deliver(session, frame)
        if reply.close is not None:
            control._queue_close(session, _Cause.BY_WIRE, reply.close)


def _handle(
    session: _Session,
    wire: VenueWire,
    message: Frame,
    market: Market,
    control: SimVenueControl,
    config: SimVenueConfig,
) -> Reply:
    """``wire.on_message``, with the subscription cap and refusals enforced here.

    A subscribe that would exceed ``max_topics``, or any subscribe while the control
    rejects them, is undone and answered with ``wire.refuse`` instead.
    """
    view = session.view
    snapshot = market.snapshot
    before = frozenset(view.topics)
    reply = wire.on_message(view, message, snapshot)
    why: Refusal | None = None
    if reply.subscribed:
        if control.rejecting_subscriptions:
            why = Refusal.REJECTED
        elif config.max_topics is not None and len(view.topics) > config.max_topics:
            why = Refusal.CAP
    if why is not None:
        view.topics.clear()
        view.topics.update(before)
        refusal = wire.refuse(view, message, why, snapshot)
        if why is Refusal.CAP:
            control._tally.refused_over_cap += 1
        else:
            control._tally.refused_by_control += 1
        reply = dataclasses.replace(
            refusal,
            subscribed=(),
            unsubscribed=(),
            duplicates=reply.duplicates,
            rejected=tuple(dict.fromkeys((*reply.rejected, *reply.subscribed, *refusal.rejected))),
        )
    elif view.topics != before:
        control._index(session, view.topics - before, before - view.topics)
        if view.topics:
            session.subscribed_once = True
    return reply


async def _write(
    ws: WebSocketConnection, session: _Session, control: SimVenueControl, config: SimVenueConfig
) -> None:
    async for item in session.outbox:
        if isinstance(item, _Close):
            control._end(session, item.cause, item.reason, item.code)
            return
        frame, queued = item
        while (delay := control.send_delay_s) > 0.0:
            wait = queued + delay - trio.current_time()
            if wait <= 0.0:
                break
            await trio.sleep(min(wait, _SLOW_POLL_S))
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


async def _app_ping_client(
    session: _Session,
    wire: VenueWire,
    market: Market,
    control: SimVenueControl,
    config: SimVenueConfig,
) -> None:
    """Server application pings (HTX); too many unanswered ones close the connection."""
    assert config.app_ping_interval_s is not None
    while True:
        await trio.sleep(config.app_ping_interval_s)
        if control.silent:
            continue
        if session.missed_pongs >= config.max_missed_pongs:
            control._end(session, _Cause.NO_PONG, f"{session.missed_pongs} pings without a pong")
            return
        frame = wire.app_ping(session.view, market.snapshot.now_ms)
        if frame is None:
            return
        session.missed_pongs += 1
        control._tally.app_pings_sent += 1
        control._deliver(session, frame)
        control._notify()


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


async def _watch_subscription(session: _Session, control: SimVenueControl, timeout_s: float) -> None:
    """Close a connection that subscribed to nothing within ``timeout_s`` (OKX, MEXC)."""
    await trio.sleep(timeout_s)
    if not session.subscribed_once and not control.silent:
        control._end(session, _Cause.NO_SUBSCRIPTION, f"no subscription within {timeout_s} s")


async def _watch_lifetime(session: _Session, control: SimVenueControl) -> None:
    """Cut the connection at its age limit, or at the end of a maintenance grace."""
    with session.deadline_scope:
        await trio.sleep_forever()
    maintenance = session.maintenance_at is not None and trio.current_time() >= session.maintenance_at
    control._cut(session, Disconnect.MAINTENANCE if maintenance else Disconnect.AGE_LIMIT)


def _trade_seq(trade: SimTrade) -> int:
    return trade.seq


async def _run_feed(
    wire: VenueWire, market: Market, control: SimVenueControl, config: SimVenueConfig
) -> None:
    """Push book changes and trades of one venue to the connections subscribed to them.

    Reads each step's ``changed`` keys (a full comparison only when steps were missed),
    so a poll costs O(changes + subscribers reached), not O(symbols). Each frame is
    encoded once and offered to every subscriber without waiting.
    """
    venue = wire.name
    topics = {key: wire.book_topic(key[1]) for key in market.snapshot.books if key[0] == venue}
    resend = config.resend_unchanged_s
    started = trio.current_time()
    #: key -> when it was last pushed, oldest first (only for venues that re-send)
    pushed: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict(
        (key, started) for key in (topics if resend is not None else ())
    )
    subscribers = control._subscribers
    prev = market.snapshot
    seen_trade = prev.trades[-1].seq if prev.trades else 0
    while True:
        await trio.sleep(config.publish_interval_s)
        snap = market.snapshot
        now = trio.current_time()
        live = not control.silent
        due: list[tuple[str, str]] = []
        if snap.version == prev.version + 1:
            due.extend(key for key in snap.changed if key[0] == venue)
        elif snap.version != prev.version:
            due.extend(
                key for key in topics
                if (old := prev.books.get(key)) is None or old.update_id != snap.books[key].update_id
            )
        if resend is not None:
            for key in due:
                pushed[key] = now
                pushed.move_to_end(key)
            # the venue pushes (or re-sends) whether anyone listens or not
            while pushed:
                key, last = next(iter(pushed.items()))
                if now - last < resend:
                    break
                pushed[key] = now
                pushed.move_to_end(key)
                due.append(key)
        if live:
            for key in due:
                listeners = subscribers.get(topics[key])
                if listeners:
                    frame = wire.encode_book(snap.books[key], snap)
                    for session in list(listeners.values()):
                        control._deliver(session, frame)
        trades = snap.trades
        if trades and trades[-1].seq > seen_trade:
            batches: dict[str, list[SimTrade]] = {}
            if live:
                for trade in trades[bisect.bisect_right(trades, seen_trade, key=_trade_seq):]:
                    if trade.venue == venue:
                        topic = wire.trade_topic(trade.symbol)
                        if topic in subscribers:
                            batches.setdefault(topic, []).append(trade)
            for topic, batch in batches.items():
                frames = wire.encode_trades(batch)
                for session in list(subscribers.get(topic, {}).values()):
                    for frame in frames:
                        control._deliver(session, frame)
            seen_trade = trades[-1].seq
        prev = snap


# -- chaos -----------------------------------------------------------------------------


class Fault(enum.Enum):
    """What :func:`run_chaos` can do to a venue."""

    DROP = "drop"                #: drop_connections()
    SILENCE = "silence"          #: go_silent() for a while, then resume()
    MALFORMED = "malformed"      #: send_malformed(1..5)
    SLOW = "slow"                #: send_slowly(..) for a while, then send_normally()
    SHUTDOWN = "shutdown"        #: announce_shutdown(grace)
    CUT = "cut"                  #: force_cut()
    REJECT = "reject"            #: reject_subscriptions() for a while, with a drop so it bites


@dataclass(frozen=True, slots=True)
class ChaosEvent:
    """One fault :func:`run_chaos` injected.

    ``at`` is the trio clock when it began; ``duration_s`` how long a silence or slow
    spell lasted, or the grace of a shutdown (0 for the others); ``amount`` the frames
    of a malformed burst or the delay of a slow spell (s), else 0; ``connections``
    how many connections were open to it.
    """

    at: float
    venue: str
    fault: Fault
    duration_s: float
    amount: float
    connections: int


async def run_chaos(
    controls: Mapping[str, SimVenueControl],
    *,
    mean_interval_s: float,
    rng: random.Random,
    faults: Sequence[Fault] = tuple(Fault),
    duration_s: tuple[float, float] = (1.0, 5.0),
    max_faults: int | None = None,
    on_fault: Callable[[ChaosEvent], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Inject random faults into random venues until cancelled (or ``max_faults``).

    Waits are exponential with mean ``mean_interval_s`` (capped at four means); each
    fault picks a venue and a fault uniformly with ``rng`` and a duration in
    ``duration_s`` for the timed ones (silence, slow sends, shutdown grace, rejected
    subscriptions). Faults
    run one at a time: a silence or slow spell is waited out (and undone, also when
    cancelled) before the next wait starts. The same ``rng`` seed and clock give the
    same sequence of events. Each is logged and passed to ``on_fault``.
    """
    if not mean_interval_s > 0.0:
        raise ValueError(f"mean_interval_s must be > 0, got {mean_interval_s!r}")
    if not controls or not faults:
        raise ValueError("run_chaos needs at least one venue and one fault")
    low, high = duration_s
    if not 0.0 < low <= high:
        raise ValueError(f"duration_s must be 0 < low <= high, got {duration_s!r}")
    names = sorted(controls)
    task_status.started()
    for _ in itertools.count() if max_faults is None else range(max_faults):
        # every fault draws the same five numbers, whatever it is: the sequence of
        # venues and faults depends on the seed only
        await trio.sleep(min(rng.expovariate(1.0 / mean_interval_s), 4.0 * mean_interval_s))
        venue = rng.choice(names)
        fault = rng.choice(faults)
        duration = rng.uniform(low, high)
        burst = rng.randint(1, 5)
        lag = rng.uniform(0.1, 0.5) * duration
        control = controls[venue]
        timed = fault in (Fault.SILENCE, Fault.SLOW, Fault.SHUTDOWN, Fault.REJECT)
        amount = float(burst) if fault is Fault.MALFORMED else lag if fault is Fault.SLOW else 0.0
        event = ChaosEvent(
            at=trio.current_time(), venue=venue, fault=fault,
            duration_s=duration if timed else 0.0, amount=amount,
            connections=control.statistics().connections_open,
        )
        log.info("chaos: %s %s (%d connections, %.2f s, %g)", venue, fault.value,
                 event.connections, event.duration_s, event.amount)
        if on_fault is not None:
            on_fault(event)
        if fault is Fault.DROP:
            control.drop_connections()
        elif fault is Fault.MALFORMED:
            control.send_malformed(burst)
        elif fault is Fault.SHUTDOWN:
            control.announce_shutdown(duration)
        elif fault is Fault.CUT:
            control.force_cut()
        elif fault is Fault.SILENCE:
            control.go_silent()
            try:
                await trio.sleep(duration)
            finally:
                control.resume()
        elif fault is Fault.SLOW:
            control.send_slowly(lag)
            try:
                await trio.sleep(duration)
            finally:
                control.send_normally()
        elif fault is Fault.REJECT:
            control.reject_subscriptions(True)
            control.drop_connections()  # the reconnects meet the rejection
            try:
                await trio.sleep(duration)
            finally:
                control.reject_subscriptions(False)


# -- entry points ----------------------------------------------------------------------


async def run_sim_venue(
    name: str,
    market: Market,
    *,
    host: str = "127.0.0.1",
    control: SimVenueControl | None = None,
    config: SimVenueConfig | None = None,
    wire: VenueWire | None = None,
    task_status: trio.TaskStatus[SimEndpoints] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve venue ``name`` (REST and WebSocket) on two ports of ``host``. Never returns.

    Reports :class:`SimEndpoints` once both listeners accept connections. The market
    is read, not stepped: run :func:`run_market` beside it. ``config`` defaults to the
    wire's ``config``; ``wire`` serves a wire object of the caller's (a test's fake)
    instead of the registered one, ``name`` must then be its name.
    """
    if wire is None:
        wire = make_wire(name, market)
    elif wire.name != name:
        raise ValueError(f"wire {wire.name!r} given to serve venue {name!r}")
    control = control if control is not None else SimVenueControl()
    config = config if config is not None else wire.config
    control._attach(wire, market, config)
    try:
        async with trio.open_nursery() as nursery:
            app = _RestApp(wire, market, control)
            binds: list[str] = await nursery.start(
                partial(hypercorn.trio.serve, app, _rest_config(host), mode="asgi")
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
            app.endpoints = endpoints
            log.info("simulated %s: REST %s, WebSocket %s", name, endpoints.rest_url,
                     endpoints.ws_url)
            task_status.started(endpoints)
    finally:
        control._detach()


def _rest_config(host: str) -> hypercorn.Config:
    config = hypercorn.Config()
    config.bind = [f"[{host}]:0" if ":" in host else f"{host}:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger(f"{__name__}.rest")
    config.graceful_timeout = 1.0
    return config


async def run_sim_venues(
    names: Sequence[str] | None = None,
    *,
    seed: int = 0,
    interval_s: float = 0.05,
    host: str = "127.0.0.1",
    params: MarketParams | None = None,
    symbols: int | Sequence[SymbolSpec] | None = None,
    controls: Mapping[str, SimVenueControl] | None = None,
    configs: Mapping[str, SimVenueConfig] | None = None,
    chaos: float | None = None,
    task_status: trio.TaskStatus[dict[str, SimEndpoints]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one market (seeded, starting at the wall-clock time) and venues ``names``.

    ``names``: any of :data:`VENUES` (default: every venue whose wire module exists,
    :func:`available_venues`). ``symbols``: the universe, a sequence of specs or a
    number of symbols for :meth:`Market.synthetic` (default: the ~60 default symbols).
    ``chaos``: when set, the mean seconds between random faults (drop, silence,
    malformed burst, slow sends, shutdown notice, forced cut) on random venues, lasting
    1-5 s each, drawn from a RNG seeded with ``seed`` (see :func:`run_chaos`).

    Reports ``{name: SimEndpoints}`` once every venue listens. Never returns.
    """
    names = available_venues() if names is None else tuple(names)
    for name in names:
        wire_class(name)  # fail before anything listens
    if chaos is not None and not chaos > 0.0:
        raise ValueError(f"chaos must be > 0 seconds, got {chaos!r}")
    start_ms = time.time_ns() // 1_000_000
    if isinstance(symbols, int):
        market = Market.synthetic(symbols, names, seed, params=params, start_ms=start_ms)
    elif symbols is not None:
        market = Market(symbols, names, seed, params=params, start_ms=start_ms)
    else:
        market = Market(venues=names, seed=seed, params=params, start_ms=start_ms)
    given = controls or {}
    controls = {name: given[name] if name in given else SimVenueControl() for name in names}
    configs = configs or {}
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_market, market, interval_s=interval_s))
        endpoints: dict[str, SimEndpoints] = {}
        for name in names:
            endpoints[name] = await nursery.start(partial(
                run_sim_venue, name, market, host=host,
                control=controls[name], config=configs.get(name),
            ))
        if chaos is not None:
            nursery.start_soon(partial(
                run_chaos, controls, mean_interval_s=chaos, rng=random.Random(f"chaos-{seed}"),
            ))
        task_status.started(endpoints)
