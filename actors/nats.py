"""A trio-native NATS client: the core protocol and the JetStream pieces we use.

Why not nats-py: it runs its own reader, flusher, pinger and reconnect tasks on an
asyncio loop, outside our nursery tree; every socket, timer and task here lives in a trio
nursery owned by :func:`open_nats` and is gone when it exits (measured against nats-py in
``bench/perf_nats.py``).

Structure, like ``actors/connector.py``: :func:`open_nats` starts one connection actor
(``NatsClient._run``) that connects, serves and reconnects forever with capped, jittered
backoff (``actors.backoff``). Per connection, three tasks share one nursery that is torn
down whole on disconnect, so nothing survives from one connection to the next:

* the reader parses the server's byte stream from one bounded ``bytearray`` (a line longer
  than ``MAX_LINE`` without CRLF, or a message above ``max_payload + PAYLOAD_SLACK``, is a
  protocol error: counted, the connection is redone) and hands each message to its
  subscription without awaiting;
* the writer writes the outbound buffer in big coalesced writes, woken by an event;
* the pinger PINGs every ``ping_interval_s`` and drops a connection that left
  ``max_pings_out`` PINGs unanswered.

What survives a reconnect is the client's own state: the subscriptions (every connect
SUBs every live one afresh) and the outbound buffer of publishes (capped at
``max_outbound_bytes``; ``publish`` never blocks: it refuses and counts). Bytes handed to
a write that fails are lost, as with every core NATS client (at most once); JetStream's
acks and ``Nats-Msg-Id`` dedup are the way to at-least-once.

Bounds: subscription pending (messages, bytes; the new message is dropped and counted),
outbound bytes, outstanding requests (``MAX_REQUESTS``), subscriptions
(``MAX_SUBSCRIPTIONS``), header blocks (``MAX_HEADER_BYTES``), one protocol line
(``MAX_LINE``), one message (``max_payload + PAYLOAD_SLACK``).

Errors: connection errors (OSError, broken/closed streams, timeouts, protocol errors,
fatal ``-ERR``\\s) end the connection and are retried with backoff, recorded in
``status.last_error``. A well-framed message whose header block is malformed or too large
is dropped and counted (``bad_messages``); the connection stays. Anything else is a bug
and propagates out of ``open_nats``.
"""

from __future__ import annotations

import itertools
import logging
import random
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import trio

from actors.backoff import Backoff

log = logging.getLogger(__name__)

CLIENT_VERSION = "0.1.0"
DEFAULT_PORT = 4222
#: what we assume before the server's INFO says otherwise (the server's own default)
DEFAULT_MAX_PAYLOAD = 1 << 20
#: one protocol line (INFO can carry a cluster's connect_urls; 64 KiB is ample)
MAX_LINE = 64 * 1024
#: a message may exceed max_payload by its header block, within this slack
PAYLOAD_SLACK = 64 * 1024
#: one message's header block, ours or received
MAX_HEADER_BYTES = 64 * 1024
#: requests waiting for their reply at once
MAX_REQUESTS = 65_536
#: live subscriptions of one client
MAX_SUBSCRIPTIONS = 65_536
#: validated publish subjects kept encoded
SUBJECT_CACHE = 4096
#: bytes asked of the socket per read
READ_SIZE = 256 * 1024
#: a connection that lived this long resets the reconnect backoff
STABLE_CONNECTION_S = 10.0
#: the best-effort flush of the outbound buffer when open_nats exits
CLOSE_FLUSH_S = 0.5
#: server errors that do not end the connection (the server keeps it open)
NON_FATAL_ERRORS = ("permissions violation", "invalid subject", "invalid publish subject",
                    "invalid queue name")

_CRLF = b"\r\n"
_PING = b"PING\r\n"
_PONG = b"PONG\r\n"


class NatsError(Exception):
    """A NATS operation failed (disconnected, refused, server error)."""


class NoResponders(NatsError):
    """A request found nobody subscribed to its subject (status 503)."""


class ProtocolError(NatsError):
    """The server sent something that is not the NATS protocol; the connection is redone."""


class ServerError(NatsError):
    """A fatal ``-ERR`` from the server; the connection is redone."""


class StaleConnection(NatsError):
    """The server left our PINGs unanswered."""


#: errors that end one connection and are retried with backoff
RETRYABLE: tuple[type[BaseException], ...] = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    ProtocolError,
    ServerError,
    StaleConnection,
    NatsError,
)


@dataclass(slots=True)
class Msg:
    subject: str
    reply: str | None
    payload: bytes
    headers: dict[str, str] | None = None
    status: int | None = None
    description: str = ""


@dataclass(slots=True)
class NatsStatus:
    """Counters of one client; written only by it, read by /health through ``snapshot``."""

    state: str = "idle"  # idle | connecting | connected | backoff | closed
    server: str = ""
    connects: int = 0
    reconnects: int = 0  # established connections that were lost (and are being redone)
    connect_failures: int = 0  # attempts that never got to "connected"
    last_error: str | None = None
    published: int = 0
    published_bytes: int = 0
    publish_dropped: int = 0  # refused: the outbound buffer was full
    publish_oversize: int = 0  # refused: payload + headers above the server's max_payload
    received: int = 0
    received_bytes: int = 0
    slow_consumer_drops: int = 0
    bad_messages: int = 0  # well-framed messages with a malformed or oversized header block
    server_errors: int = 0
    protocol_errors: int = 0
    outbound_bytes: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Reply:
    """One waiter for one reply (a request's message or a PONG)."""

    __slots__ = ("error", "event", "gen", "msg")

    def __init__(self, gen: int = 0) -> None:
        self.event = trio.Event()
        self.msg: Msg | None = None
        self.error: NatsError | None = None
        self.gen = gen

    def fail(self, error: NatsError) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()


class Subscription:
    """Messages of one SUB, held in a bounded queue until received."""

    __slots__ = ("_bytes", "_client", "_closed", "_handler", "_lot", "_queue", "dropped",
                 "max_pending_bytes", "max_pending_msgs", "queue", "sid", "subject")

    def __init__(self, client: NatsClient, sid: int, subject: str, queue: str | None,
                 max_pending_msgs: int, max_pending_bytes: int,
                 handler: Callable[[Msg], None] | None = None) -> None:
        self._client = client
        self.sid = sid
        self.subject = subject
        self.queue = queue
        self.max_pending_msgs = max_pending_msgs
        self.max_pending_bytes = max_pending_bytes
        self.dropped = 0
        self._queue: deque[Msg] = deque()
        self._bytes = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._handler = handler

    @property
    def pending_msgs(self) -> int:
        return len(self._queue)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    @property
    def closed(self) -> bool:
        return self._closed

    def _deliver(self, msg: Msg) -> None:
        if self._handler is not None:
            self._handler(msg)
            return
        size = len(msg.payload)
        if len(self._queue) >= self.max_pending_msgs or self._bytes + size > self.max_pending_bytes:
            self.dropped += 1
            self._client.status.slow_consumer_drops += 1
            return
        self._queue.append(msg)
        self._bytes += size
        if self._lot:
            self._lot.unpark()

    def _close(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    def receive_nowait(self) -> Msg:
        """The next pending message; ``trio.WouldBlock`` when none, ``trio.EndOfChannel``
        once unsubscribed (or the client closed) and drained."""
        if self._queue:
            msg = self._queue.popleft()
            self._bytes -= len(msg.payload)
            return msg
        if self._closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> Msg:
        """Wait for the next message; ``trio.EndOfChannel`` once unsubscribed and drained."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                msg = self.receive_nowait()
            except trio.WouldBlock:
                await self._lot.park()
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            return msg

    def receive_batch_nowait(self, max_items: int | None = None) -> list[Msg]:
        """Take up to ``max_items`` pending messages (all when None); may be empty."""
        queue = self._queue
        if max_items is None or max_items >= len(queue):
            batch = list(queue)
            queue.clear()
            self._bytes = 0
        else:
            batch = [queue.popleft() for _ in range(max_items)]
            self._bytes -= sum(len(m.payload) for m in batch)
        return batch

    async def receive_batch(self, max_items: int | None = None) -> list[Msg]:
        """Wait for at least one message, then take up to ``max_items`` (all when None):
        one checkpoint for a whole batch, where ``receive`` costs one per message.
        ``trio.EndOfChannel`` once unsubscribed and drained."""
        await trio.lowlevel.checkpoint()
        while not self._queue:
            if self._closed:
                raise trio.EndOfChannel
            await self._lot.park()
        return self.receive_batch_nowait(max_items)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Msg:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def unsubscribe(self) -> None:
        """Stop delivery at once (UNSUB when connected); already pending messages stay
        receivable. Idempotent, never blocks."""
        self._client._unsubscribe(self)


@dataclass(frozen=True, slots=True)
class _Url:
    text: str  # without credentials: what status shows
    host: str
    port: int
    user: str | None
    password: str | None


def parse_url(url: str) -> _Url:
    """``nats://[user[:password]@]host[:port]`` (a user alone is a token)."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    if parts.scheme != "nats":
        raise ValueError(f"not a nats:// URL (TLS is not supported): {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in NATS URL {url!r}")
    port = parts.port or DEFAULT_PORT
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return _Url(f"nats://{shown}:{port}", host, port, user, password)


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """A ``NATS/1.0`` header block; ValueError for a key or value that cannot be framed."""
    out = ["NATS/1.0\r\n"]
    for key, value in headers.items():
        if not key or any(c in key for c in ": \t\r\n"):
            raise ValueError(f"bad NATS header name {key!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"bad NATS header value for {key!r}: contains CR or LF")
        out.append(f"{key}: {value}\r\n")
    out.append("\r\n")
    block = "".join(out).encode()
    if len(block) > MAX_HEADER_BYTES:
        raise ValueError(f"header block of {len(block)} bytes is above {MAX_HEADER_BYTES}")
    return block


def parse_headers(block: bytes) -> tuple[dict[str, str], int | None, str]:
    """Headers (last value wins), status code and description of a header block.

    ValueError when it is not a ``NATS/1.0`` block."""
    lines = block.decode("utf-8", "replace").split("\r\n")
    first = lines[0]
    if not first.startswith("NATS/1.0"):
        raise ValueError(f"header block does not start with NATS/1.0: {first[:40]!r}")
    status: int | None = None
    description = ""
    rest = first[8:].strip()
    if rest:
        code, _, description = rest.partition(" ")
        if len(code) != 3 or not code.isdigit():
            raise ValueError(f"bad status in header block: {first[:40]!r}")
        status = int(code)
        description = description.strip()
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"bad header line {line[:40]!r}")
        headers[key.strip()] = value.strip()
    return headers, status, description


def _subject_bytes(subject: str, what: str = "subject") -> bytes:
    data = subject.encode()
    if not data or b" " in data or b"\t" in data or b"\r" in data or b"\n" in data:
        raise ValueError(f"bad NATS {what} {subject!r}")
    return data


class _Conn:
    """One physical connection's state; dropped whole on disconnect."""

    __slots__ = ("ctl", "gen", "info", "info_event", "pings_out", "pong_waiters", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ctl = bytearray()  # SUB, UNSUB, PING, PONG: written before the publishes
        self.pong_waiters: deque[_Reply | None] = deque()  # one per PING sent, in order
        self.pings_out = 0
        self.info: dict[str, Any] = {}
        self.info_event = trio.Event()
        self.gen = 0  # > 0 once the connection went live


class NatsClient:
    """Use through :func:`open_nats`. Every method but the ``async`` ones never blocks."""

    def __init__(self, servers: Sequence[str], *, name: str, status: NatsStatus,
                 max_outbound_bytes: int, connect_timeout_s: float, ping_interval_s: float,
                 max_pings_out: int, backoff_initial_s: float, backoff_max_s: float,
                 rng: random.Random | None = None) -> None:
        if not servers:
            raise ValueError("open_nats needs at least one server URL")
        if max_outbound_bytes <= 0 or max_pings_out < 1 or ping_interval_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("max_outbound_bytes, ping_interval_s and connect_timeout_s must be > 0, "
                             "max_pings_out >= 1")
        self._urls = [parse_url(s) for s in servers]
        self._name = name
        self.status = status
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self.max_requests = MAX_REQUESTS
        self._max_out = max_outbound_bytes
        self._connect_timeout = connect_timeout_s
        self._ping_interval = ping_interval_s
        self._max_pings_out = max_pings_out
        self._backoff = Backoff(backoff_initial_s, backoff_max_s, rng=rng or random.Random())
        # survives reconnects
        self._subs: dict[int, Subscription] = {}
        self._sids = itertools.count(1)
        self._pub = bytearray()  # PUB/HPUB not yet handed to a write
        self._pub_appended = 0  # bytes ever appended to _pub
        self._pub_done = 0  # bytes ever handed to a write that finished (or failed)
        self._inflight = 0
        self._wake = trio.Event()
        self._written = trio.lowlevel.ParkingLot()
        self._connected_event = trio.Event()
        self._conn: _Conn | None = None
        self._live = False
        self._gen = 0
        self._closed = False
        # requests: one wildcard inbox subscription, a dict of waiters
        self._inbox_prefix = f"_INBOX.{secrets.token_hex(11)}."
        self._inboxes = itertools.count(1)
        self._resp_prefix = f"_INBOX.{secrets.token_hex(11)}."
        self._resp_sub: Subscription | None = None
        self._requests: dict[str, _Reply] = {}
        self._tokens = itertools.count(1)
        self._subject_cache: dict[str, bytes] = {}  # validated subjects, bounded

    # -- public, non-blocking -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._live

    @property
    def pending_requests(self) -> int:
        return len(self._requests)

    def publish(self, subject: str, payload: bytes, *, reply: str | None = None,
                headers: Mapping[str, str] | None = None) -> bool:
        """Buffer one message for the writer; False (counted) when refused. Never blocks.

        Refused when the client is closed, when payload + headers exceed the server's
        ``max_payload`` (``publish_oversize``, ``last_error``), or when the outbound buffer
        would exceed ``max_outbound_bytes`` (``publish_dropped``). While disconnected,
        messages wait in the same buffer and go out after the reconnect.
        ValueError for a subject or header that cannot be framed."""
        status = self.status
        if self._closed:
            status.publish_dropped += 1
            return False
        subj = self._subject_cache.get(subject)
        if subj is None:
            subj = _subject_bytes(subject)
            if len(self._subject_cache) >= SUBJECT_CACHE:
                self._subject_cache.clear()
            self._subject_cache[subject] = subj
        size = len(payload)
        if headers:
            block = encode_headers(headers)
            total = len(block) + size
            if reply:
                line = b"HPUB %s %s %d %d\r\n" % (subj, _subject_bytes(reply, "reply subject"),
                                                    len(block), total)
            else:
                line = b"HPUB %s %d %d\r\n" % (subj, len(block), total)
        else:
            block = b""
            total = size
            if reply:
                line = b"PUB %s %s %d\r\n" % (subj, _subject_bytes(reply, "reply subject"), size)
            else:
                line = b"PUB %s %d\r\n" % (subj, size)
        if total > self.max_payload:
            status.publish_oversize += 1
            status.last_error = (f"publish to {subject[:100]}: {total} bytes above "
                                 f"max_payload {self.max_payload}")
            return False
        n = len(line) + total + 2
        pub = self._pub
        if len(pub) + self._inflight + n > self._max_out:
            status.publish_dropped += 1
            return False
        pub += line
        if block:
            pub += block
        pub += payload
        pub += _CRLF
        self._pub_appended += n
        status.published += 1
        status.published_bytes += size
        status.outbound_bytes = len(pub) + self._inflight
        if not self._wake.is_set():
            self._wake.set()
        return True

    def subscribe(self, subject: str, *, queue: str | None = None, max_pending_msgs: int = 10_000,
                  max_pending_bytes: int = 64 << 20) -> Subscription:
        """A subscription that lives across reconnects until unsubscribed. Never blocks.

        When its pending limits are hit the new message is dropped and counted
        (``sub.dropped``, ``status.slow_consumer_drops``)."""
        return self._subscribe(subject, queue, max_pending_msgs, max_pending_bytes, None)

    def new_inbox(self) -> str:
        return f"{self._inbox_prefix}{next(self._inboxes)}"

    # -- public, async --------------------------------------------------------------------

    async def wait_connected(self) -> None:
        while not self._live:
            if self._closed:
                raise NatsError("client closed")
            await self._connected_event.wait()

    async def request(self, subject: str, payload: bytes, *, timeout_s: float,
                      headers: Mapping[str, str] | None = None) -> Msg:
        """Publish with a reply subject and wait for the first reply.

        ``trio.TooSlowError`` after ``timeout_s``; ``NoResponders`` on a 503 status reply;
        ``NatsError`` when the connection carrying it is lost, when the request could not
        be buffered, or when ``max_requests`` are already waiting."""
        if len(self._requests) >= self.max_requests:
            raise NatsError(f"{len(self._requests)} requests already waiting (max_requests)")
        if self._resp_sub is None:
            self._resp_sub = self._subscribe(f"{self._resp_prefix}*", None, 1, 1, self._on_response)
        token = str(next(self._tokens))
        # a request buffered while disconnected belongs to the next connection
        slot = _Reply(self._gen if self._live else self._gen + 1)
        self._requests[token] = slot
        try:
            with trio.fail_after(timeout_s):
                if not self.publish(subject, payload, reply=self._resp_prefix + token, headers=headers):
                    why = "client closed" if self._closed else "outbound buffer full or payload too big"
                    raise NatsError(f"request to {subject} not sent: {why}")
                await slot.event.wait()
        finally:
            self._requests.pop(token, None)
        if slot.error is not None:
            raise slot.error
        msg = slot.msg
        assert msg is not None
        if msg.status == 503:
            raise NoResponders(f"no responders on {subject}")
        return msg

    async def flush(self, timeout_s: float) -> None:
        """Wait until everything published so far was written and the server answered a
        PING sent after it. ``trio.TooSlowError`` on timeout, NatsError if the connection
        is lost meanwhile."""
        with trio.fail_after(timeout_s):
            await self.wait_connected()
            conn = self._conn
            gen = self._gen
            target = self._pub_appended
            while self._pub_done < target:
                if not self._live or self._gen != gen:
                    raise NatsError("disconnected")
                await self._written.park()
            if conn is None or not self._live or self._gen != gen:
                raise NatsError("disconnected")
            slot = _Reply(gen)
            conn.pong_waiters.append(slot)
            self._send_ctl(conn, _PING)
            await slot.event.wait()
        if slot.error is not None:
            raise slot.error

    # -- internals ------------------------------------------------------------------------

    def _subscribe(self, subject: str, queue: str | None, max_msgs: int, max_bytes: int,
                   handler: Callable[[Msg], None] | None) -> Subscription:
        if self._closed:
            raise NatsError("client closed")
        subj = _subject_bytes(subject)
        if queue is not None:
            _subject_bytes(queue, "queue group")
        if max_msgs < 1 or max_bytes < 1:
            raise ValueError("max_pending_msgs and max_pending_bytes must be >= 1")
        if len(self._subs) >= MAX_SUBSCRIPTIONS:
            raise NatsError(f"{len(self._subs)} subscriptions already (MAX_SUBSCRIPTIONS)")
        sid = next(self._sids)
        sub = Subscription(self, sid, subject, queue, max_msgs, max_bytes, handler)
        self._subs[sid] = sub
        if self._conn is not None:
            self._send_ctl(self._conn, _sub_line(subj, queue, sid))
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.pop(sub.sid, None) is not None and self._conn is not None:
            self._send_ctl(self._conn, b"UNSUB %d\r\n" % sub.sid)
        sub._close()

    def _send_ctl(self, conn: _Conn, line: bytes) -> None:
        conn.ctl += line
        if not self._wake.is_set():
            self._wake.set()

    def _on_response(self, msg: Msg) -> None:
        slot = self._requests.get(msg.subject[len(self._resp_prefix):])
        if slot is not None and not slot.event.is_set():
            slot.msg = msg
            slot.event.set()

    def _hello(self, conn: _Conn, url: _Url) -> bytes:
        """CONNECT, a SUB per live subscription, PING: the first bytes of a connection."""
        options: dict[str, Any] = {
            "verbose": False, "pedantic": False, "headers": True, "no_responders": True,
            "lang": "python-trio", "version": CLIENT_VERSION, "name": self._name, "protocol": 1,
        }
        if url.user is not None and url.password is not None:
            options["user"], options["pass"] = url.user, url.password
        elif url.user is not None:
            options["auth_token"] = url.user
        parts = [b"CONNECT " + orjson.dumps(options) + _CRLF]
        parts += [_sub_line(s.subject.encode(), s.queue, s.sid) for s in self._subs.values()]
        parts.append(_PING)
        return b"".join(parts)

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The connection actor: connect, serve, reconnect with backoff, until cancelled."""
        status = self.status
        task_status.started()
        for attempt in itertools.count():
            url = self._urls[attempt % len(self._urls)]
            status.state = "connecting"
            status.server = url.text
            error: BaseException | None = None
            conn: _Conn | None = None
            live_since = 0.0
            try:
                with trio.fail_after(self._connect_timeout):
                    stream = await trio.open_tcp_stream(url.host, url.port)
                async with stream:
                    conn = _Conn(stream)
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._reader, conn)
                            await self._handshake(conn, url)
                            live_since = trio.current_time()
                            self._gen += 1
                            conn.gen = self._gen
                            self._live = True
                            status.state = "connected"
                            status.connects += 1
                            self._connected_event.set()
                            log.info("nats: connected to %s", url.text)
                            nursery.start_soon(self._writer, conn)
                            nursery.start_soon(self._pinger, conn)
                    finally:
                        self._disconnected(conn)
            except* RETRYABLE as group:
                error = _first_leaf(group)
            if conn is not None and conn.gen:
                status.reconnects += 1
                if trio.current_time() - live_since > STABLE_CONNECTION_S:
                    self._backoff.reset()
            else:
                status.connect_failures += 1
            if isinstance(error, ProtocolError):
                status.protocol_errors += 1
            status.last_error = f"{type(error).__name__}: {error}"[:300] if error else "connection ended"
            status.state = "backoff"
            delay = self._backoff.next_delay()
            log.info("nats: %s: %s; reconnect in %.2fs", url.text, status.last_error, delay)
            await trio.sleep(delay)

    async def _handshake(self, conn: _Conn, url: _Url) -> None:
        with trio.fail_after(self._connect_timeout):
            await conn.info_event.wait()
            if conn.info.get("tls_required"):
                raise NatsError("the server requires TLS, which this client does not do")
            # from here on subscribe() queues its SUB on this connection
            self._conn = conn
            slot = _Reply()
            conn.pong_waiters.append(slot)
            await conn.stream.send_all(self._hello(conn, url))
            await slot.event.wait()

    def _disconnected(self, conn: _Conn | None) -> None:
        if conn is None:
            return
        if self._conn is conn:
            self._conn = None
        if not self._closed:
            self.status.state = "backoff"
        self._live = False
        if self._connected_event.is_set():
            self._connected_event = trio.Event()
        error = NatsError("disconnected")
        for waiter in conn.pong_waiters:
            if waiter is not None:
                waiter.fail(error)
        conn.pong_waiters.clear()
        if conn.gen:
            for slot in self._requests.values():
                if slot.gen <= conn.gen:
                    slot.fail(error)
        self._written.unpark_all()
        self.status.outbound_bytes = len(self._pub) + self._inflight

    async def _writer(self, conn: _Conn) -> None:
        stream = conn.stream
        status = self.status
        while True:
            if not conn.ctl and not self._pub:
                await self._wake.wait()
            self._wake = trio.Event()
            ctl, pub = conn.ctl, self._pub
            if ctl:
                conn.ctl = bytearray()
            if pub:
                self._pub = bytearray()
                self._inflight = len(pub)
            data = ctl + pub if ctl and pub else (ctl or pub)
            if not data:
                continue
            try:
                await stream.send_all(data)
            finally:
                self._inflight = 0
                self._pub_done += len(pub)
                status.outbound_bytes = len(self._pub)
                self._written.unpark_all()

    async def _pinger(self, conn: _Conn) -> None:
        while True:
            await trio.sleep(self._ping_interval)
            if conn.pings_out >= self._max_pings_out:
                raise StaleConnection(f"{conn.pings_out} PINGs unanswered "
                                      f"({self._ping_interval}s apart)")
            conn.pings_out += 1
            conn.pong_waiters.append(None)
            self._send_ctl(conn, _PING)

    async def _reader(self, conn: _Conn) -> None:
        stream = conn.stream
        buf = bytearray()
        while True:
            data = await stream.receive_some(READ_SIZE)
            if not data:
                raise trio.BrokenResourceError("the server closed the connection")
            buf += data
            try:
                consumed = self._process(conn, buf)
            except (ValueError, IndexError, UnicodeDecodeError, orjson.JSONDecodeError) as exc:
                raise ProtocolError(f"unparseable data from the server: {exc}") from exc
            if consumed:
                del buf[:consumed]

    def _process(self, conn: _Conn, buf: bytearray) -> int:
        """Handle every complete operation in ``buf``; the number of bytes consumed."""
        status = self.status
        subs = self._subs
        max_msg = self.max_payload + PAYLOAD_SLACK
        n = len(buf)
        pos = 0
        reply: bytearray | None
        while pos < n:
            end = buf.find(_CRLF, pos, pos + MAX_LINE + 2)
            if end < 0:
                if n - pos > MAX_LINE:
                    raise ProtocolError(f"no CRLF within {MAX_LINE} bytes")
                break
            if buf.startswith(b"MSG ", pos):
                args = buf[pos + 4:end].split()
                if len(args) == 3:
                    subject, sid, size_b = args
                    reply = None
                elif len(args) == 4:
                    subject, sid, reply, size_b = args
                else:
                    raise ProtocolError(f"bad MSG line {bytes(buf[pos:end])[:100]!r}")
                if not size_b.isdigit():
                    raise ProtocolError(f"bad MSG size {bytes(size_b)[:20]!r}")
                size = int(size_b)
                if size > max_msg:
                    raise ProtocolError(f"MSG of {size} bytes above max_payload {self.max_payload}")
                start = end + 2
                stop = start + size
                if stop + 2 > n:
                    break  # the rest has not arrived yet
                if buf[stop:stop + 2] != _CRLF:
                    raise ProtocolError("MSG payload not followed by CRLF (a lying size?)")
                pos = stop + 2
                status.received += 1
                status.received_bytes += size
                sub = subs.get(int(sid))
                if sub is not None:
                    sub._deliver(Msg(subject.decode(), reply.decode() if reply else None,
                                     bytes(buf[start:stop])))
                continue
            if buf.startswith(b"HMSG ", pos):
                args = buf[pos + 5:end].split()
                if len(args) == 4:
                    subject, sid, hdr_b, size_b = args
                    reply = None
                elif len(args) == 5:
                    subject, sid, reply, hdr_b, size_b = args
                else:
                    raise ProtocolError(f"bad HMSG line {bytes(buf[pos:end])[:100]!r}")
                if not size_b.isdigit() or not hdr_b.isdigit():
                    raise ProtocolError(f"bad HMSG sizes {bytes(hdr_b)[:20]!r} {bytes(size_b)[:20]!r}")
                size, hdr_len = int(size_b), int(hdr_b)
                if size > max_msg or hdr_len > size:
                    raise ProtocolError(f"HMSG sizes {hdr_len}/{size} impossible or above max_payload")
                start = end + 2
                stop = start + size
                if stop + 2 > n:
                    break
                if buf[stop:stop + 2] != _CRLF:
                    raise ProtocolError("HMSG payload not followed by CRLF (a lying size?)")
                pos = stop + 2
                status.received += 1
                status.received_bytes += size - hdr_len
                sub = subs.get(int(sid))
                if sub is None:
                    continue
                if hdr_len > MAX_HEADER_BYTES:
                    status.bad_messages += 1
                    continue
                try:
                    headers, code, description = parse_headers(bytes(buf[start:start + hdr_len]))
                except ValueError as exc:
                    status.bad_messages += 1
                    where = subject.decode(errors="replace")[:100]
                    status.last_error = f"bad message on {where}: {exc}"[:300]
                    continue
                sub._deliver(Msg(subject.decode(), reply.decode() if reply else None,
                                 bytes(buf[start + hdr_len:stop]), headers or None, code, description))
                continue
            line = bytes(buf[pos:end])
            pos = end + 2
            op, _, rest = line.partition(b" ")
            op = op.upper()
            if op == b"PING":
                self._send_ctl(conn, _PONG)
            elif op == b"PONG":
                conn.pings_out = 0
                if conn.pong_waiters:
                    waiter = conn.pong_waiters.popleft()
                    if waiter is not None:
                        waiter.event.set()
            elif op == b"+OK":
                pass
            elif op == b"-ERR":
                self._server_error(rest.decode("utf-8", "replace").strip().strip("'"))
            elif op == b"INFO":
                info = orjson.loads(rest)
                if not isinstance(info, dict):
                    raise ProtocolError("INFO is not a JSON object")
                conn.info = info
                max_payload = info.get("max_payload", DEFAULT_MAX_PAYLOAD)
                if isinstance(max_payload, int) and max_payload > 0:
                    self.max_payload = max_payload
                max_msg = self.max_payload + PAYLOAD_SLACK
                conn.info_event.set()
            else:
                raise ProtocolError(f"unknown operation {line[:60]!r}")
        return pos

    def _server_error(self, text: str) -> None:
        status = self.status
        status.server_errors += 1
        status.last_error = f"server error: {text}"[:300]
        if text.lower().startswith(NON_FATAL_ERRORS):
            log.warning("nats: server error: %s", text)
            return
        raise ServerError(text)

    def _close(self) -> None:
        self._closed = True
        self._live = False
        self.status.state = "closed"
        for sub in list(self._subs.values()):
            sub._close()
        self._subs.clear()
        error = NatsError("client closed")
        for slot in self._requests.values():
            slot.fail(error)
        self._connected_event.set()  # wake wait_connected(), which then raises

    async def _drain(self) -> None:
        """Wait for the writer to write what is buffered (bounded by the caller)."""
        target = self._pub_appended
        while self._live and self._pub_done < target:
            await self._written.park()


def _sub_line(subject: bytes, queue: str | None, sid: int) -> bytes:
    if queue:
        return b"SUB %s %s %d\r\n" % (subject, queue.encode(), sid)
    return b"SUB %s %d\r\n" % (subject, sid)


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


@asynccontextmanager
async def open_nats(servers: Sequence[str], *, name: str = "spreadwatch",
                    status: NatsStatus | None = None,
                    max_outbound_bytes: int = 8 << 20,
                    connect_timeout_s: float = 2.0,
                    ping_interval_s: float = 20.0, max_pings_out: int = 2,
                    backoff_initial_s: float = 0.1, backoff_max_s: float = 5.0,
                    ) -> AsyncIterator[NatsClient]:
    """A client whose connection actor runs in a nursery owned by this context manager.

    Yields at once: it does not wait for the first connect (an ingest process starts and
    buffers while NATS is down; ``await client.wait_connected()`` when that matters). Tries
    ``servers`` in turn, forever, with capped, jittered backoff. On exit: a best-effort
    flush of the outbound buffer (at most ``CLOSE_FLUSH_S``), then every task is cancelled
    and the socket closed. An exception from the body comes out as itself (not wrapped in
    an exception group)."""
    client = NatsClient(servers, name=name, status=status or NatsStatus(),
                        max_outbound_bytes=max_outbound_bytes, connect_timeout_s=connect_timeout_s,
                        ping_interval_s=ping_interval_s, max_pings_out=max_pings_out,
                        backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client._run)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_FLUSH_S):
                    await client._drain()
                client._close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        client._close()


# -- JetStream -------------------------------------------------------------------------------

JS_API = "$JS.API"
#: JetStream API error codes we act on
ERR_STREAM_NOT_FOUND = 10059
ERR_CONSUMER_NOT_FOUND = 10014
ERR_STREAM_NAME_IN_USE = 10058


class JetStreamError(NatsError):
    """A JetStream API error reply, or a pull status we do not expect."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"JetStream error {code}/{err_code}: {description}")
        self.code = code
        self.err_code = err_code
        self.description = description


@dataclass(slots=True)
class PubAck:
    stream: str
    seq: int
    duplicate: bool = False


@dataclass(slots=True)
class JsMsg:
    subject: str
    payload: bytes
    headers: dict[str, str] | None
    reply: str  # the $JS.ACK... subject
    stream_seq: int
    consumer_seq: int
    delivered: int
    pending: int
    stream: str = ""
    consumer: str = ""
    timestamp_ns: int = 0
    client: NatsClient | None = field(default=None, repr=False, compare=False)

    def _send(self, verb: bytes) -> bool:
        return self.client is not None and self.client.publish(self.reply, verb)

    def ack(self) -> bool:
        return self._send(b"+ACK")

    def nak(self) -> bool:
        return self._send(b"-NAK")

    def in_progress(self) -> bool:
        return self._send(b"+WPI")

    def term(self) -> bool:
        return self._send(b"+TERM")


def parse_ack_subject(reply: str) -> tuple[str, str, int, int, int, int, int]:
    """(stream, consumer, delivered, stream_seq, consumer_seq, timestamp_ns, pending) of a
    ``$JS.ACK`` subject, in its 9-token form or the newer one with domain and account hash
    tokens (12 or more). ValueError otherwise."""
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"not a JetStream ack subject: {reply[:200]!r}")
    if len(tokens) == 9:
        base = 2
    elif len(tokens) >= 12:
        base = 4  # $JS.ACK.<domain>.<account hash>.<stream>...
    else:
        raise ValueError(f"JetStream ack subject with {len(tokens)} tokens: {reply[:200]!r}")
    stream, consumer = tokens[base], tokens[base + 1]
    numbers = [int(t) for t in tokens[base + 2:base + 7]]
    delivered, sseq, cseq, ts, pending = numbers
    return stream, consumer, delivered, sseq, cseq, ts, pending


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


class JetStream:
    """The JetStream API over a :class:`NatsClient` (streams, pull consumers, publish)."""

    def __init__(self, client: NatsClient, *, api_timeout_s: float = 2.0, prefix: str = JS_API) -> None:
        self.client = client
        self.api_timeout_s = api_timeout_s
        self.prefix = prefix

    async def _api(self, op: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        payload = orjson.dumps(body) if body is not None else b""
        msg = await self.client.request(f"{self.prefix}.{op}", payload, timeout_s=self.api_timeout_s)
        return _api_reply(msg.payload)

    async def stream_info(self, name: str) -> dict[str, Any]:
        return await self._api(f"STREAM.INFO.{name}")

    async def ensure_stream(self, name: str, subjects: Sequence[str], *, max_bytes: int, max_age_s: float,
                            max_msgs: int = -1, storage: str = "file", discard: str = "old",
                            duplicate_window_s: float = 120.0) -> dict[str, Any]:
        """Create the stream, or update its config when it exists with other limits; its
        info. The duplicate window is capped at ``max_age_s`` (the server requires it)."""
        if storage not in ("file", "memory") or discard not in ("old", "new"):
            raise ValueError(f"storage must be file|memory, discard old|new: {storage!r}, {discard!r}")
        max_age = _ns(max_age_s)
        window = _ns(duplicate_window_s)
        if max_age > 0:
            window = min(window, max_age)
        wanted: dict[str, Any] = {
            "subjects": list(subjects), "max_bytes": max_bytes, "max_age": max_age, "max_msgs": max_msgs,
            "storage": storage, "discard": discard, "duplicate_window": window,
        }
        for _ in range(3):
            try:
                info = await self.stream_info(name)
            except JetStreamError as exc:
                if exc.err_code != ERR_STREAM_NOT_FOUND:
                    raise
                config = {"name": name, "retention": "limits", "max_consumers": -1, "num_replicas": 1,
                          **wanted}
                try:
                    return await self._api(f"STREAM.CREATE.{name}", config)
                except JetStreamError as exc2:
                    if exc2.err_code == ERR_STREAM_NAME_IN_USE:
                        continue  # created by someone else meanwhile: compare with theirs
                    raise
            current = info.get("config", {})
            if all(current.get(key) == value for key, value in wanted.items()):
                return info
            return await self._api(f"STREAM.UPDATE.{name}", {**current, **wanted})
        raise JetStreamError(0, 0, f"stream {name} neither found nor creatable")

    async def ensure_pull_consumer(self, stream: str, durable: str, *, ack_wait_s: float,
                                   max_ack_pending: int, max_deliver: int = -1,
                                   filter_subject: str | None = None) -> dict[str, Any]:
        """Create the durable pull consumer, or update it when its limits differ; its info."""
        wanted: dict[str, Any] = {
            "ack_policy": "explicit", "ack_wait": _ns(ack_wait_s), "max_ack_pending": max_ack_pending,
            "max_deliver": max_deliver,
        }
        if filter_subject:
            wanted["filter_subject"] = filter_subject
        try:
            info = await self._api(f"CONSUMER.INFO.{stream}.{durable}")
        except JetStreamError as exc:
            if exc.err_code != ERR_CONSUMER_NOT_FOUND:
                raise
        else:
            current = info.get("config", {})
            same = all(current.get(key) == value for key, value in wanted.items())
            if same and (filter_subject or not current.get("filter_subject")):
                return info
        config = {"durable_name": durable, "name": durable, "deliver_policy": "all",
                  "replay_policy": "instant", **wanted}
        return await self._api(f"CONSUMER.CREATE.{stream}.{durable}",
                               {"stream_name": stream, "config": config})

    async def publish(self, subject: str, payload: bytes, *, timeout_s: float,
                      msg_id: str | None = None) -> PubAck:
        """Publish and wait for the stream's ack. ``msg_id`` (``Nats-Msg-Id``) makes a
        retry within the stream's duplicate window a no-op (``duplicate=True``).
        JetStreamError on an error reply; NoResponders when no stream takes ``subject``."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        msg = await self.client.request(subject, payload, timeout_s=timeout_s, headers=headers)
        doc = _api_reply(msg.payload)
        try:
            return PubAck(str(doc["stream"]), int(doc["seq"]), bool(doc.get("duplicate", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise JetStreamError(0, 0, f"bad publish ack {msg.payload[:200]!r}") from exc

    async def fetch(self, stream: str, durable: str, batch: int, *, expires_s: float) -> list[JsMsg]:
        """One pull request for up to ``batch`` messages; what arrived until ``expires_s``
        (plus a small grace) or the server's 404/408 end-of-request status. A 409 (consumer
        deleted, leadership change, limits, server shutdown) ends the pull with what arrived
        before it, and raises JetStreamError when nothing did. The inbox subscription is
        removed however this ends."""
        if not 1 <= batch <= 100_000 or expires_s <= 0:
            raise ValueError("fetch needs 1 <= batch <= 100000 and expires_s > 0")
        client = self.client
        inbox = client.new_inbox()
        sub = client.subscribe(inbox, max_pending_msgs=batch + 16,
                               max_pending_bytes=min(256 << 20, batch * (client.max_payload + PAYLOAD_SLACK)))
        out: list[JsMsg] = []
        try:
            request = orjson.dumps({"batch": batch, "expires": _ns(expires_s)})
            next_subject = f"{self.prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
            if not client.publish(next_subject, request, reply=inbox):
                raise NatsError("pull request not sent: outbound buffer full or client closed")
            with trio.move_on_after(expires_s + max(0.1, expires_s * 0.1)):
                while len(out) < batch:
                    msg = await sub.receive()
                    if msg.status is not None:
                        if msg.status in (404, 408):
                            break
                        if msg.status == 100:  # idle heartbeat / flow control
                            continue
                        if msg.status == 503:
                            raise JetStreamError(503, 0, f"no responders: no consumer {stream}/{durable} "
                                                 "(or JetStream is not enabled)")
                        if out:
                            # e.g. 409 Server Shutdown: the messages that did arrive count as
                            # delivered on the server; dropping them here would leave them
                            # unacked until ack_wait. The next pull sees the error.
                            break
                        raise JetStreamError(msg.status, 0, msg.description or "pull request failed")
                    if msg.reply is None:
                        client.status.bad_messages += 1
                        continue
                    try:
                        s, c, delivered, sseq, cseq, ts, pending = parse_ack_subject(msg.reply)
                    except ValueError:
                        client.status.bad_messages += 1
                        continue
                    out.append(JsMsg(msg.subject, msg.payload, msg.headers, msg.reply, sseq, cseq, delivered,
                                     pending, s, c, ts, client))
        finally:
            sub.unsubscribe()
        return out


def _api_reply(payload: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise JetStreamError(0, 0, f"JetStream reply is not JSON: {payload[:200]!r}") from exc
    if not isinstance(doc, dict):
        raise JetStreamError(0, 0, f"JetStream reply is not an object: {payload[:200]!r}")
    error = doc.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise JetStreamError(0, 0, str(error)[:300])
        raise JetStreamError(int(error.get("code", 0)), int(error.get("err_code", 0)),
                             str(error.get("description", "")))
    return doc
