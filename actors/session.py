"""One browser session on ``/feed``: its own actor, bounded in every direction.

The session owns a :class:`~actors.hub.Outbox` that the hub fills without waiting, and
two loops: the reader runs in the session's own task, the writer in the one child task
of its nursery (a task per loop, with a timer task for the heartbeat, was measured at
~4 KiB more per idle session: ``bench/perf_memory.py``):

* the reader validates client messages (size, rate, msgpack shape, topic grammar,
  topic count) and forwards subscribe/unsubscribe to the hub's control channel
  without waiting (a full channel is answered with a "busy" error, not a stall);
* the writer sends outbox frames, each send under a deadline (``send_timeout_s``): a
  client that stopped reading cannot hold the session, let alone anyone else
  (FAILURE_MODES #6). A session opened with ``?batch=1`` gets every frame pending when
  its socket is ready in one WebSocket message (MessagePack values back to back, up to
  :data:`BATCH_BYTES`): the per-message cost of the web stack, measured as the largest
  share of the server's CPU at 1000 sessions, is paid once per tick instead of once
  per topic;
* the heartbeat, checked by the writer at least once a second (it waits for frames
  under that deadline), pings the client every ``heartbeat_interval_s`` and closes the
  session when it has been silent for ``heartbeat_timeout_s`` (half-open clients, #7)
  or its outbox has kept overflowing (each overflow within ``lag_limit_s`` of the
  previous one) for longer than ``lag_limit_s``. A send in progress delays a check by
  at most ``send_timeout_s``, after which the send deadline closes the session anyway.

Whatever ends the session, ``finally`` closes the outbox and tells the hub, so a dead
session never stays in the fan-out (FAILURE_MODES #7). Close codes are documented in
``docs/feed-protocol.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
import trio

from actors.channels import BlockingChannel
from actors.config import FeedConfig
from actors.hub import (
    SESSION_TOPIC,
    Control,
    Join,
    Leave,
    Outbox,
    SessionHandle,
    Subscribe,
    Unsubscribe,
    encode_frame,
)

log = logging.getLogger(__name__)

#: most bytes of frames one batched WebSocket message carries (one frame always goes)
BATCH_BYTES = 64 * 1024

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013
CLOSE_LAGGING = 4001
CLOSE_HEARTBEAT = 4002

_SYMBOL = r"[A-Z0-9]{1,30}/[A-Z0-9]{1,30}"
TOPIC_RE = re.compile(rf"(?:opportunities|venues|symbols|(?:quotes|spreads|window):{_SYMBOL})")


class FeedSocket(Protocol):
    """The transport seam: the web layer adapts its WebSocket to this."""

    async def receive(self) -> bytes | str: ...
    async def send(self, data: bytes) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


class SessionClosed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class SessionCounters:
    """Feed-wide counters of client misbehaviour; written by sessions, read by /health."""

    bad_messages: int = 0
    rate_limited: int = 0
    closed_lagging: int = 0
    closed_heartbeat: int = 0
    closed_abuse: int = 0
    closed_send_timeout: int = 0
    refused_full: int = 0
    bad_handshakes: int = 0
    broken_connections: int = 0
    #: connections aborted by the web server because a socket send stalled past
    #: send_timeout_s (the transport's own deadline; app/serve.py)
    stalled_sends: int = 0

    def snapshot(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Session:
    __slots__ = ("abuse", "batch_bytes", "clock_ns", "config", "control", "counters", "handle",
                 "last_heard", "seq", "sock", "tokens", "tokens_at", "topics")

    def __init__(self, sock: FeedSocket, control: BlockingChannel[Control], config: FeedConfig,
                 counters: SessionCounters, clock_ns: Callable[[], int], remote: str,
                 batch: bool = False) -> None:
        self.sock = sock
        #: 0: one frame per message (get_batch always takes the first frame)
        self.batch_bytes = BATCH_BYTES if batch else 0
        self.control = control
        self.config = config
        self.counters = counters
        self.clock_ns = clock_ns
        self.handle = SessionHandle(Outbox(config.outbox_frames, config.lag_limit_s, config.outbox_bytes),
                                    remote=remote)
        self.topics: set[str] = set()
        self.seq = 0
        self.abuse = 0
        self.last_heard = trio.current_time()
        self.tokens = config.max_messages_per_s
        self.tokens_at = trio.current_time()

    def _frame(self, kind: str, data: Any) -> bytes:
        self.seq += 1
        return encode_frame(SESSION_TOPIC, kind, self.seq, data, self.clock_ns() // 1_000_000)

    def _error(self, code: str, message: str, *, abuse: bool = True, topic: str | None = None) -> None:
        data = {"code": code, "message": message}
        if topic is not None:
            data["topic"] = topic
        self.handle.outbox.offer(self._frame("error", data))
        if abuse:
            self.abuse += 1
            if self.abuse >= self.config.abuse_limit:
                self.counters.closed_abuse += 1
                raise SessionClosed(CLOSE_POLICY, "too many bad messages")

    def _rate_ok(self) -> bool:
        now = trio.current_time()
        rate = self.config.max_messages_per_s
        self.tokens = min(rate, self.tokens + (now - self.tokens_at) * rate)
        self.tokens_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    async def reader(self) -> None:
        config = self.config
        while True:
            data = await self.sock.receive()
            self.last_heard = trio.current_time()
            if len(data) > config.max_message_bytes:
                self.counters.bad_messages += 1
                raise SessionClosed(CLOSE_TOO_BIG, f"message over {config.max_message_bytes} bytes")
            if not self._rate_ok():
                self.counters.rate_limited += 1
                self._error("rate_limited", f"at most {config.max_messages_per_s:g} messages/s")
                continue
            self.handle_message(data)

    def handle_message(self, data: bytes | str) -> None:
        if isinstance(data, str):
            self.counters.bad_messages += 1
            self._error("bad_message", "send binary msgpack frames, not text")
            return
        try:
            # unpackb caps lengths by the (already size-checked) input length
            message = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException):
            self.counters.bad_messages += 1
            self._error("bad_message", "not a msgpack map")
            return
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            self.counters.bad_messages += 1
            self._error("bad_message", "expected a map with a string 'op'")
            return
        op = message["op"]
        if op == "pong":
            return
        if op == "ping":
            self.handle.outbox.offer(self._frame("pong", {"ts": self.clock_ns() // 1_000_000}))
            return
        if op not in ("subscribe", "unsubscribe"):
            self.counters.bad_messages += 1
            self._error("unknown_op", f"unknown op {op[:40]!r}")
            return
        topic = message.get("topic")
        if not isinstance(topic, str) or len(topic) > 80 or not TOPIC_RE.fullmatch(topic):
            self.counters.bad_messages += 1
            shown = topic[:80] if isinstance(topic, str) else type(topic).__name__
            self._error("bad_topic", f"invalid topic {shown!r}",
                        topic=topic if isinstance(topic, str) else None)
            return
        if op == "subscribe":
            if topic in self.topics:
                return
            if len(self.topics) >= self.config.max_topics_per_session:
                self._error("too_many_topics",
                            f"at most {self.config.max_topics_per_session} topics per session",
                            topic=topic)
                return
            max_windows = self.config.max_window_topics_per_session
            windows = sum(t.startswith("window:") for t in self.topics)
            if topic.startswith("window:") and windows >= max_windows:
                self._error("too_many_topics", f"at most {max_windows} window topics per session",
                            topic=topic)
                return
            if not self.control.try_send(Subscribe(self.handle, topic)):
                self._error("busy", "server busy, retry", abuse=False, topic=topic)
                return
            self.topics.add(topic)
        else:
            if topic not in self.topics:
                return
            if not self.control.try_send(Unsubscribe(self.handle, topic)):
                self._error("busy", "server busy, retry", abuse=False, topic=topic)
                return
            self.topics.discard(topic)

    async def writer(self) -> None:
        """Send outbox frames; run the heartbeat checks at least every ``check`` seconds."""
        config = self.config
        outbox = self.handle.outbox
        timeout = config.send_timeout_s
        check = min(1.0, config.heartbeat_interval_s)
        now = trio.current_time()
        next_check = now + check
        next_ping = now + config.heartbeat_interval_s
        batch: list[bytes] | None = None
        while True:
            # One cancel scope serves every wait and send until its deadline passes: the
            # next check while waiting for frames, the send deadline while sending. (A
            # scope per wait and per send was a tenth of the server's profile at a
            # thousand sessions; a busy session's scope now lasts until it idles a second.)
            sending = False
            with trio.CancelScope(deadline=next_check) as scope:
                while True:
                    if batch is None:
                        # get_batch takes frames only after its last await: a deadline here loses none
                        try:
                            batch = await outbox.get_batch(self.batch_bytes)
                        except trio.EndOfChannel:
                            raise SessionClosed(CLOSE_GOING_AWAY, "server shutting down") from None
                    now = trio.current_time()
                    if now >= next_check:
                        next_check, next_ping = self._check(now, check, next_ping)
                    if scope.cancel_called:
                        # its deadline passed after the frames woke this task and before it
                        # ran: the scope stays cancelled, so the send takes the next one
                        break
                    sending = True
                    scope.deadline = now + timeout
                    await self.sock.send(b"".join(batch))
                    batch = None
                    sending = False
                    scope.deadline = next_check
            if sending:
                self.counters.closed_send_timeout += 1
                raise SessionClosed(CLOSE_LAGGING, f"send took over {timeout:g}s")
            now = trio.current_time()
            if now >= next_check:
                next_check, next_ping = self._check(now, check, next_ping)

    def _check(self, now: float, check: float, next_ping: float) -> tuple[float, float]:
        """The heartbeat checks, then a ping if one is due: the next check and ping times."""
        self.heartbeat(now)
        if now >= next_ping:
            next_ping = now + self.config.heartbeat_interval_s
            self.handle.outbox.offer(self._frame("ping", {"ts": self.clock_ns() // 1_000_000}))
        return now + check, next_ping

    def heartbeat(self, now: float) -> None:
        """Close a silent session, or one whose outbox has kept overflowing."""
        config = self.config
        if now - self.last_heard > config.heartbeat_timeout_s:
            self.counters.closed_heartbeat += 1
            raise SessionClosed(CLOSE_HEARTBEAT, "heartbeat timeout")
        if self.handle.outbox.lagging_for(now) > config.lag_limit_s:
            self.counters.closed_lagging += 1
            raise SessionClosed(CLOSE_LAGGING, "client too far behind; reconnect")


async def run_session(
    sock: FeedSocket,
    control: BlockingChannel[Control],
    *,
    config: FeedConfig,
    counters: SessionCounters,
    clock_ns: Callable[[], int] = time.time_ns,
    remote: str = "",
    batch: bool = False,
) -> tuple[int, str]:
    """Serve one feed client until it leaves or breaks a rule; return the close code and reason.

    Resource handling: the session closes the socket itself (shielded, time-limited) with
    the code that ended it, closes its outbox and asks the hub to forget it.
    """
    session = _Session(sock, control, config, counters, clock_ns, remote, batch)
    handle = session.handle
    # anything but a normal end below (cancellation: the server is stopping) is 1001
    code, reason = CLOSE_GOING_AWAY, "server shutting down"
    try:
        if not control.try_send(Join(handle)):
            counters.refused_full += 1
            code, reason = CLOSE_TRY_LATER, "server busy"
            return code, reason
        with trio.move_on_after(5.0):
            await handle.admitted.wait()
        if not handle.accepted:
            counters.refused_full += 1
            code, reason = CLOSE_TRY_LATER, "too many sessions"
            return code, reason
        ended = (CLOSE_NORMAL, "")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.writer)
                await session.reader()
        except* SessionClosed as group:
            closed = group.exceptions[0]
            assert isinstance(closed, SessionClosed)
            ended = (closed.code, closed.reason)
        code, reason = ended
        return code, reason
    finally:
        handle.outbox.close()
        if handle.accepted:
            control.try_send(Leave(handle))
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            try:
                await sock.close(code, reason)
            except Exception as exc:  # the peer may be gone already
                log.debug("session %d: close failed: %s", handle.id, exc)
