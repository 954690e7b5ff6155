"""One venue connection: connect, subscribe, read, heartbeat, watch, reconnect.

The connection is a loop that owns its socket in ``async with``; reconnecting leaves
the block and enters it again, so nothing (handlers, timers, tasks) survives from one
connection to the next (FAILURE_MODES #2, #11, #19). Every connect subscribes afresh.

Per connection, four tasks share one nursery:

* the reader drains the socket promptly (a WebSocket client stops answering pings while its
  queue is full), parses each frame with the venue's pure codec and hands records on
  without awaiting downstream: quotes are conflated per (venue, symbol) into the owning
  shard, records are batched into the recorder's drop-and-count edge;
* the heartbeat sends the venue's application-level ping, where it has one;
* the watchdog reconnects when no market data arrived for ``silence_reconnect_s``,
  whatever heartbeats say (FAILURE_MODES #8);
* the batcher hands a partial recorder batch over every ``batch_max_delay_s``.

Error handling: connection errors, handshake failures, silence and venue rejections
end the connection and are retried with capped, jittered backoff. Malformed frames are
counted and logged (rate-limited), never fatal. Anything else is a bug and propagates
to the supervisor, which restarts the actor.
"""

from __future__ import annotations

import itertools
import logging
import random
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import trio
import trio_websocket
import websockets.exceptions
import websockets.trio.client

from actors.backoff import Backoff
from actors.channels import ConflatingChannel, DropChannel
from actors.config import ConnectorConfig, VenueConfig
from actors.records import Quote, Trade, VenueDown
from actors.venues.base import Bootstrap, FrameError, FrameKind, VenueCodec

log = logging.getLogger(__name__)


class WebSocketLike(Protocol):
    async def get_message(self) -> str | bytes: ...
    async def send_message(self, message: str | bytes) -> None: ...


ConnectFn = Callable[[str], AbstractAsyncContextManager[WebSocketLike]]

#: seconds we wait for a venue to answer our close frame before dropping the TCP stream
CLOSE_HANDSHAKE_S = 0.5


def websocket_connector(*, message_queue_size: int, connect_timeout_s: float,
                        max_message_size: int = 1 << 20,
                        ssl_context: ssl.SSLContext | None = None,
                        client: str = "websockets") -> ConnectFn:
    """The real connect seam, over a TCP stream we own (TLS for wss).

    ``client`` picks the WebSocket library by measurement (``python -m bench.perf_ws``,
    100-byte frames on one connection, per CPU-second): websockets' trio client ~116 K
    frames, trio-websocket ~44 K; in the ingest bench trio-websocket's reader task was
    28 % of spreadwatch's CPU. The venue connections use ``"websockets"``;
    ``"trio-websocket"`` stays for ``spreadwatch tail``, which reads close codes from
    trio-websocket's exceptions.

    We open and close the TCP stream ourselves: trio-websocket 0.12's ``aclose()``
    returns early when the server closed first and leaves its socket to the garbage
    collector, which leaked one file descriptor per venue-initiated disconnect.
    """
    if client not in ("websockets", "trio-websocket"):
        raise ValueError(f"unknown WebSocket client {client!r}")
    context = ssl_context or ssl.create_default_context()

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[WebSocketLike]:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a WebSocket URL: {url!r}")
        secure = parts.scheme == "wss"
        host = parts.hostname
        port = parts.port or (443 if secure else 80)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = host if port in (80, 443) else f"{host}:{port}"
        with trio.fail_after(connect_timeout_s):
            tcp = await trio.open_tcp_stream(host, port)
        async with tcp:
            if client == "websockets":
                async with _websockets_client(tcp, url, context if secure else None, host,
                                              message_queue_size, max_message_size,
                                              connect_timeout_s) as ws:
                    yield ws
                return
            stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
            if secure:
                stream = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=True)
                with trio.fail_after(connect_timeout_s):
                    await stream.do_handshake()  # certificate errors surface here, by name
            async with trio.open_nursery() as nursery:
                with trio.fail_after(connect_timeout_s):
                    tws = await trio_websocket.wrap_client_stream(
                        nursery, stream, host_header, resource,
                        message_queue_size=message_queue_size, max_message_size=max_message_size)
                try:
                    yield tws
                finally:
                    # a polite close handshake if the venue answers at once; a venue
                    # that does not must not hold a shutdown or a rotation
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_HANDSHAKE_S):
                        await tws.aclose()
                    nursery.cancel_scope.cancel()

    return connect


class _WebsocketsAdapter:
    """websockets' trio connection as :class:`WebSocketLike`."""

    __slots__ = ("get_message", "send_message")

    def __init__(self, ws: websockets.trio.client.ClientConnection) -> None:
        self.get_message = ws.recv
        self.send_message = ws.send


@asynccontextmanager
async def _websockets_client(tcp: trio.SocketStream, url: str, context: ssl.SSLContext | None, host: str,
                             queue: int, max_size: int, timeout_s: float) -> AsyncIterator[WebSocketLike]:
    # websockets does the TLS handshake on our stream (certificate errors surface by
    # name, as ssl.SSLCertVerificationError); no protocol-level pings (the codecs send
    # each venue's own heartbeat), no compression, no proxy from the environment.
    client = websockets.trio.client.connect(
        url, stream=tcp, ssl=context, server_hostname=host if context else None, compression=None,
        proxy=None, open_timeout=timeout_s, ping_interval=None, close_timeout=CLOSE_HANDSHAKE_S,
        max_size=max_size, max_queue=queue, user_agent_header=None)
    async with client as ws:
        yield _WebsocketsAdapter(ws)


class StaleFeed(Exception):
    """No market data arrived within the venue's silence limit."""


class VenueRejected(Exception):
    """The venue refused a subscription."""


#: errors that end one connection and are retried with backoff
RETRYABLE: tuple[type[BaseException], ...] = (
    websockets.exceptions.WebSocketException,  # closed, refused handshake, protocol error
    trio_websocket.ConnectionClosed,
    trio_websocket.HandshakeError,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    StaleFeed,
    VenueRejected,
)


def shard_of(symbol: str, shards: int) -> int:
    """Stable shard index of a symbol (the same in every process and run)."""
    return zlib.crc32(symbol.encode()) % shards


@dataclass(slots=True)
class QuoteSinks:
    """Where a connector's records go. Every put is non-blocking."""

    shards: Sequence[ConflatingChannel[tuple[str, str], Quote | VenueDown]]
    recorder: DropChannel[Any] | None
    _shard_index: dict[str, int] = field(default_factory=dict)

    def quote(self, quote: Quote) -> None:
        index = self._shard_index.get(quote.symbol)
        if index is None:
            index = shard_of(quote.symbol, len(self.shards))
            if len(self._shard_index) < 100_000:
                self._shard_index[quote.symbol] = index
        self.shards[index].put_nowait((quote.venue, quote.symbol), quote)

    def venue_down(self, venue: str, at_ns: int) -> None:
        marker = VenueDown(venue, at_ns)
        for shard in self.shards:
            shard.put_nowait((venue, ""), marker)


@dataclass(slots=True)
class ConnectionStatus:
    """Counters of one venue connection; written only by its connector."""

    venue: str
    connection: int
    streams: int = 0
    state: str = "idle"  # idle | connecting | subscribing | live | backoff
    connected: bool = False
    connects: int = 0
    reconnects: int = 0
    messages: int = 0
    data_messages: int = 0
    quotes: int = 0
    trades: int = 0
    bad_frames: int = 0
    unknown_symbols: int = 0
    acks: int = 0
    pongs: int = 0
    pings_answered: int = 0
    venue_errors: int = 0
    notices: int = 0
    stale_reconnects: int = 0
    rotations: int = 0
    open_connections: int = 0
    last_message_ns: int = 0
    last_data_ns: int = 0
    connected_at_ns: int = 0
    last_error: str | None = None
    last_bad_frame: str | None = None
    rate: float = 0.0
    _rate_window_start: float = 0.0
    _rate_window_count: int = 0

    def note_message(self, now_ns: int) -> None:
        self.messages += 1
        self.last_message_ns = now_ns
        self._rate_window_count += 1
        elapsed = now_ns / 1e9 - self._rate_window_start
        if elapsed >= 1.0:
            self.rate = self._rate_window_count / elapsed
            self._rate_window_start = now_ns / 1e9
            self._rate_window_count = 0

    def snapshot(self, now_ns: int) -> dict[str, Any]:
        age = (now_ns - self.last_message_ns) / 1e9 if self.last_message_ns else None
        rate = self.rate
        if self.last_message_ns and now_ns / 1e9 - self._rate_window_start > 2.0:
            rate = 0.0  # nothing arrived for a while: do not show an old rate
        return {
            "venue": self.venue,
            "connection": self.connection,
            "state": self.state,
            "connected": self.connected,
            "streams": self.streams,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "messages": self.messages,
            "data_messages": self.data_messages,
            "quotes": self.quotes,
            "trades": self.trades,
            "bad_frames": self.bad_frames,
            "unknown_symbols": self.unknown_symbols,
            "venue_errors": self.venue_errors,
            "notices": self.notices,
            "stale_reconnects": self.stale_reconnects,
            "rotations": self.rotations,
            "open_connections": self.open_connections,
            "rate": round(rate, 2),
            "last_message_age_s": round(age, 3) if age is not None else None,
            "last_error": self.last_error,
            "last_bad_frame": self.last_bad_frame,
        }


@dataclass(frozen=True, slots=True)
class ConnectionPlan:
    """What one connection subscribes: the venue's natives, with the codec built for them."""

    venue: str
    connection: int
    url: str
    natives: tuple[str, ...]
    codec: VenueCodec
    trades: bool


class ConnectPacer:
    """Spaces connection attempts to one venue at least ``interval_s`` apart.

    Shared by every connection of a venue (owned by its venue actor), so that many
    connections reconnecting at once stay within the venue's per-IP connection rate.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next = -float("inf")
        self.waited = 0

    async def wait(self) -> None:
        now = trio.current_time()
        at = max(now, self._next)
        self._next = at + self.interval_s
        if at > now:
            self.waited += 1
            await trio.sleep_until(at)
        else:
            await trio.lowlevel.checkpoint()


#: asks the venue for a fresh endpoint and token before each connect (KuCoin)
BootstrapFn = Callable[[], Awaitable[Bootstrap]]


class _Generation:
    """One physical connection of a logical connector; a rotation overlaps two of them."""

    def __init__(self, number: int, predecessor: _Generation | None) -> None:
        self.number = number
        self.predecessor = predecessor
        self.scope = trio.CancelScope()
        self.connected = False
        self.welcomed = trio.Event()  # the venue's welcome frame arrived (KuCoin)
        self.live = trio.Event()  # first market data arrived after subscribing
        self.rotate = trio.Event()  # age limit or venue notice: start a successor
        self.done = trio.Event()
        self.handed_off = False
        self.error: BaseException | None = None
        self.began = 0.0


async def run_connector(
    plan: ConnectionPlan,
    sinks: QuoteSinks,
    status: ConnectionStatus,
    *,
    venue_config: VenueConfig,
    config: ConnectorConfig,
    connect: ConnectFn,
    clock_ns: Callable[[], int] = time.time_ns,
    rng: random.Random | None = None,
    pacer: ConnectPacer | None = None,
    bootstrap: BootstrapFn | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep one logical venue connection alive until cancelled.

    Ready (``task_status.started()``) as soon as the loop runs: a venue that is down at
    start-up is retried, not a start-up failure. Never returns normally.

    A connection that fails is replaced after a capped, jittered backoff. A connection
    that must go (its age nears the venue's forced cut, or the venue announced a
    disconnect) is *rotated*: a successor connects and subscribes while the old one keeps
    delivering, and the old one is closed only once the successor delivers market data,
    so no gap appears.

    Resource handling: each socket lives in ``async with`` inside its generation's
    cancel scope; on any exit it is closed. A connection that ends on its own (error,
    silence) sends a :class:`VenueDown` marker to the shards, so its quotes never make a
    best price; one closed after a hand-off does not. A partial recorder batch is handed
    over before the connector ends.
    """
    rng = rng or random.Random()
    backoff = Backoff(config.backoff_initial_s, config.backoff_max_s, rng=rng)
    batch: list[Quote | Trade] = []
    status.streams = len(plan.natives)
    task_status.started()
    generations = itertools.count(1)
    current: _Generation | None = None
    try:
        async with trio.open_nursery() as nursery:
            while True:
                predecessor = current if current is not None and not current.done.is_set() else None
                gen = _Generation(next(generations), predecessor)
                status.state = "connecting" if predecessor is None else "rotating"
                nursery.start_soon(_run_generation, gen, plan, sinks, status, batch, venue_config,
                                   config, connect, clock_ns, rng, pacer, bootstrap)
                async with trio.open_nursery() as waiter:
                    waiter.start_soon(_set_when, gen.done, waiter.cancel_scope)
                    waiter.start_soon(_set_when, gen.rotate, waiter.cancel_scope)
                if not gen.done.is_set():
                    status.rotations += 1
                    current = gen  # it keeps running until its successor is live
                    continue
                # the generation ended on its own
                error = gen.error
                status.last_error = f"{type(error).__name__}: {error}" if error else None
                if isinstance(error, StaleFeed):
                    status.stale_reconnects += 1
                status.reconnects += 1
                if trio.current_time() - gen.began > 60.0:
                    backoff.reset()
                current = predecessor if predecessor is not None and not predecessor.done.is_set() else None
                status.state = "backoff"
                delay = backoff.next_delay()
                log.info("%s#%d: connection ended (%s); reconnect in %.2fs", plan.venue,
                         plan.connection, status.last_error, delay)
                await trio.sleep(delay)
    finally:
        status.state = "idle"
        _flush(batch, sinks)


async def _set_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _run_generation(gen: _Generation, plan: ConnectionPlan, sinks: QuoteSinks,
                          status: ConnectionStatus, batch: list[Quote | Trade],
                          venue_config: VenueConfig, config: ConnectorConfig, connect: ConnectFn,
                          clock_ns: Callable[[], int], rng: random.Random,
                          pacer: ConnectPacer | None, bootstrap: BootstrapFn | None) -> None:
    gen.began = trio.current_time()
    try:
        with gen.scope:
            try:
                if pacer is not None:
                    await pacer.wait()
                url, ping_interval = plan.url, plan.codec.ping_interval
                if bootstrap is not None:
                    with trio.fail_after(config.connect_timeout_s):
                        boot = await bootstrap()
                    url = boot.ws_url
                    ping_interval = boot.ping_interval_s or ping_interval
                async with connect(url) as ws:
                    status.connects += 1
                    status.open_connections += 1
                    status.connected = True
                    status.connected_at_ns = clock_ns()
                    gen.connected = True
                    try:
                        await _serve_connection(ws, gen, plan, sinks, status, batch, ping_interval,
                                                venue_config=venue_config, config=config,
                                                clock_ns=clock_ns, rng=rng)
                    finally:
                        status.open_connections -= 1
                        status.connected = status.open_connections > 0
            except* RETRYABLE as group:
                error: BaseException = group.exceptions[0]
                while isinstance(error, BaseExceptionGroup):
                    error = error.exceptions[0]
                gen.error = error
            except* (httpx.HTTPError, FrameError) as group:  # a failed bootstrap
                gen.error = group.exceptions[0]
    finally:
        _flush(batch, sinks)
        if gen.connected and not gen.handed_off:
            sinks.venue_down(plan.venue, clock_ns())
        gen.done.set()


def _flush(batch: list[Quote | Trade], sinks: QuoteSinks) -> None:
    if batch and sinks.recorder is not None:
        sinks.recorder.put_nowait(batch)
    batch.clear()


def rotation_delay(max_age_s: float, rng: random.Random) -> float:
    """When to rotate a connection the venue cuts after ``max_age_s``: well before, jittered."""
    margin = min(900.0, max_age_s * 0.05)
    return max(1.0, max_age_s - margin - rng.uniform(0, margin))


async def _serve_connection(
    ws: WebSocketLike,
    gen: _Generation,
    plan: ConnectionPlan,
    sinks: QuoteSinks,
    status: ConnectionStatus,
    batch: list[Quote | Trade],
    ping_interval: float | None,
    *,
    venue_config: VenueConfig,
    config: ConnectorConfig,
    clock_ns: Callable[[], int],
    rng: random.Random,
) -> None:
    codec = plan.codec
    last_data = [trio.current_time()]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read, ws, gen, codec, sinks, status, batch, last_data, config, clock_ns)
        status.state = "subscribing"
        if codec.waits_for_welcome:
            with trio.fail_after(config.connect_timeout_s):
                await gen.welcomed.wait()
        pace = 1.0 / codec.max_messages_per_second
        for message in codec.subscribe_messages(plan.natives, trades=plan.trades,
                                                now_ms=clock_ns() // 1_000_000):
            await ws.send_message(message)
            await trio.sleep(pace)
        status.state = "live"
        last_data[0] = trio.current_time()  # silence counts from the end of subscribing
        if ping_interval is not None:
            nursery.start_soon(_heartbeat, ws, codec, ping_interval, clock_ns)
        nursery.start_soon(_watchdog, last_data, venue_config.silence_reconnect_s)
        nursery.start_soon(_batcher, batch, sinks, config.batch_max_delay_s)
        max_age = venue_config.rotate_after_s or codec.max_connection_age_s
        if max_age:
            delay = venue_config.rotate_after_s or rotation_delay(max_age, rng)
            nursery.start_soon(_age_limit, gen, delay)


async def _age_limit(gen: _Generation, delay: float) -> None:
    await trio.sleep(delay)
    gen.rotate.set()


async def _read(ws: WebSocketLike, gen: _Generation, codec: VenueCodec, sinks: QuoteSinks,
                status: ConnectionStatus, batch: list[Quote | Trade], last_data: list[float],
                config: ConnectorConfig, clock_ns: Callable[[], int]) -> None:
    batch_max = config.batch_max_records
    recorder = sinks.recorder
    while True:
        frame = await ws.get_message()
        now = clock_ns()
        status.note_message(now)
        try:
            parsed = codec.parse(frame, now)
        except FrameError as exc:
            status.bad_frames += 1
            status.last_bad_frame = str(exc)[:200]
            if status.bad_frames <= 10 or status.bad_frames % 1000 == 0:
                log.warning("%s: malformed frame #%d: %s", status.venue, status.bad_frames, exc)
            continue
        kind = parsed.kind
        if kind is FrameKind.DATA:
            status.data_messages += 1
            status.last_data_ns = now
            last_data[0] = trio.current_time()
            for record in parsed.records:
                if type(record) is Quote:
                    status.quotes += 1
                    sinks.quote(record)
                else:
                    status.trades += 1
                if recorder is not None:
                    batch.append(record)
            if len(batch) >= batch_max:
                _flush(batch, sinks)
            if not gen.live.is_set():
                gen.live.set()
                previous = gen.predecessor
                if previous is not None:  # hand-off: the successor delivers, close the old one
                    previous.handed_off = True
                    previous.scope.cancel()
                    gen.predecessor = None
        elif kind is FrameKind.PING:
            if parsed.reply is not None:
                await ws.send_message(parsed.reply)
                status.pings_answered += 1
        elif kind is FrameKind.PONG:
            status.pongs += 1
        elif kind is FrameKind.ACK:
            status.acks += 1
        elif kind is FrameKind.UNKNOWN_SYMBOL:
            status.unknown_symbols += 1
        elif kind is FrameKind.ERROR:
            status.venue_errors += 1
            status.last_error = f"venue error: {parsed.detail}"[:300]
            log.warning("%s: venue error: %s", status.venue, parsed.detail)
        elif kind is FrameKind.INFO:
            gen.welcomed.set()
        elif kind is FrameKind.NOTICE:
            status.notices += 1
            log.info("%s: venue notice, rotating the connection: %s", status.venue, parsed.detail)
            gen.rotate.set()


async def _heartbeat(ws: WebSocketLike, codec: VenueCodec, interval: float,
                     clock_ns: Callable[[], int]) -> None:
    while True:
        await trio.sleep(interval)
        message = codec.ping_message(clock_ns() // 1_000_000)
        if message is not None:
            await ws.send_message(message)


async def _watchdog(last_data: list[float], silence_s: float) -> None:
    check = min(1.0, silence_s / 4)
    while True:
        await trio.sleep(check)
        silent_for = trio.current_time() - last_data[0]
        if silent_for > silence_s:
            raise StaleFeed(f"no market data for {silent_for:.1f}s (limit {silence_s}s)")


async def _batcher(batch: list[Quote | Trade], sinks: QuoteSinks, delay: float) -> None:
    while True:
        await trio.sleep(delay)
        _flush(batch, sinks)
