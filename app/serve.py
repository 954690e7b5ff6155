"""Serving the ASGI app on trio with hypercorn, one connection's failure contained.

hypercorn 0.18's trio worker (``hypercorn.trio.serve``) runs every connection in one
handler nursery, so an exception escaping one connection cancels every other
connection and ends the server. That is reachable from outside: a WebSocket upgrade
request followed at once by more bytes (hypercorn #225) leaves h11 in its ERROR state,
and hypercorn's attempt to answer it with an error response raises from its own read
loop. Measured here: one such request from any client dropped every browser session
and took the web actor down until the supervisor restarted it.

:func:`serve` is hypercorn's worker loop with one change: each connection runs in a
handler that counts, logs and contains such an exception. It drives hypercorn's own
``TCPServer`` and ``Lifespan``; the pin ``hypercorn<0.19`` in pyproject.toml guards
these names, and ``tests/test_e2e.py`` sends the hostile request and checks that the
other connections live on. Plain HTTP only: TLS for browsers belongs to a proxy.

A second change: hypercorn writes every outgoing byte inside a *shielded* ``send_all``
(``TCPServer.protocol_send``), so no deadline of the application's reaches a send to a
client that stopped reading; a session's ``send_timeout_s`` was measured to have no
effect, and such a send held its session (and, at shutdown, the whole server) for as
long as the client kept its socket open. Each connection's stream is therefore wrapped
in :class:`GuardedStream`, whose ``send_all`` carries its own deadline (a cancel scope
inside the shield still fires): a send that stalls past it aborts the connection, which
hypercorn then handles as a disconnect. When the server is cancelled, every send in
flight and every later one gets :data:`CLOSING_SEND_S` at most.

A third: hypercorn's ``protocol_send`` takes a lock, opens a shielded cancel scope and
awaits the stream's ``send_all`` (itself two scheduling points and, here, the guard's
deadline scope) for every WebSocket message. With a thousand feed sessions that path was
the largest share of the server's CPU (py-spy: ~40 % of all samples, a fifth of them in
cancel scopes). :class:`FastSendTCPServer` takes the (free) lock as ``trio.Lock`` does
(same scheduling point) and writes the message with one non-blocking ``write``; only a
message the socket does not take whole goes the guarded way, in order, still holding the
lock. (Without that scheduling point, ``tests/test_e2e.py``'s hypercorn #225 request was
upgraded and then never noticed its client leaving.)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

log = logging.getLogger(__name__)

#: seconds a send may take once the server is stopping (close frames, last responses)
CLOSING_SEND_S = 0.2


class SendGuard:
    """The deadlines of every connection's sends: ``limit_s`` each, shortened at shutdown."""

    def __init__(self, limit_s: float, on_stall: Callable[[], None]) -> None:
        self.limit_s = limit_s
        self.on_stall = on_stall
        self.closing = False
        self._scopes: set[trio.CancelScope] = set()

    @contextmanager
    def deadline(self) -> Iterator[trio.CancelScope]:
        """A cancel scope for one send: ``limit_s``, or what is left once closing."""
        limit = min(self.limit_s, CLOSING_SEND_S) if self.closing else self.limit_s
        with trio.CancelScope(deadline=trio.current_time() + limit) as scope:
            self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)

    def close(self) -> None:
        """The server is stopping: no send may take longer than :data:`CLOSING_SEND_S`."""
        self.closing = True
        deadline = trio.current_time() + CLOSING_SEND_S
        for scope in self._scopes:
            scope.deadline = min(scope.deadline, deadline)


class GuardedStream:
    """A connection's socket stream whose ``send_all`` cannot outlive the guard's deadline.

    Only what hypercorn's ``TCPServer`` uses is provided; no ``do_handshake``, so it
    treats the connection as plain TCP. A stalled send closes the socket (a partly sent
    frame leaves nothing else to do) and raises ``BrokenResourceError``.
    """

    __slots__ = ("_guard", "_stream", "receive_some", "socket")

    def __init__(self, stream: trio.SocketStream, guard: SendGuard) -> None:
        self._stream = stream
        self._guard = guard
        self.socket = stream.socket
        # the stream's own method: no wrapper coroutine per read (nor its frame held,
        # for the life of every connection, while it waits for the client)
        self.receive_some: Callable[[int | None], Awaitable[bytes | bytearray]] = stream.receive_some

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        guard = self._guard
        with guard.deadline() as scope:
            await self._stream.send_all(data)
        if scope.cancelled_caught:
            guard.on_stall()
            await trio.aclose_forcefully(self._stream)
            raise trio.BrokenResourceError(f"send stalled for {guard.limit_s:g}s; connection aborted")

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Write what the socket takes now, without waiting: the number of bytes written.
        0 when it takes nothing or fails; :meth:`send_all` then waits, or raises trio's
        error for the failure."""
        try:
            return os.write(self.socket.fileno(), data)
        except OSError:
            return 0

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class FastSendTCPServer(TCPServer):
    """hypercorn's connection, a message the socket takes whole written in one ``write``.

    Same contract as hypercorn's ``protocol_send``: bytes go out in order under the
    connection's send lock, shielded from cancellation (the guard's deadline still
    bounds a stalled send), and a broken or closed socket is handed to the protocol as
    ``Closed``. When the lock is held (a send is waiting for the socket), hypercorn's own
    path queues behind it.
    """

    async def protocol_send(self, event: Event) -> None:
        lock = self.send_lock
        if not isinstance(event, RawData) or lock.locked():
            await super().protocol_send(event)
            return
        stream: GuardedStream = self.stream  # type: ignore[assignment]
        data = event.data
        # the scheduling of trio.Lock.acquire, kept: a cancelled sender sends nothing, and
        # the other tasks run once between taking the lock and writing, as with hypercorn
        await trio.lowlevel.checkpoint_if_cancelled()
        lock.acquire_nowait()
        try:
            await trio.lowlevel.cancel_shielded_checkpoint()
            sent = stream.send_nowait(data)
            if sent < len(data):
                with trio.CancelScope(shield=True):
                    await stream.send_all(memoryview(data)[sent:])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.protocol.handle(Closed())
        finally:
            lock.release()

    async def _read_data(self) -> None:
        """hypercorn's read loop, reading the socket itself when there is no read timeout
        (ours). What a connection holds while it waits for its client was the largest
        part of an idle feed session (``bench/perf_memory.py``): hypercorn's
        ``fail_after(read_timeout or inf)`` scope and context manager (~1.2 KiB), and
        trio's ``SocketStream.receive_some`` chain of frames and conflict detector
        (~1.8 KiB); here only the ``wait_readable`` registration stays. A non-blocking
        ``read`` of the socket's current descriptor (-1, so EBADF, once closed: never a
        reused one) either gets bytes, an end of file, or EAGAIN and a wait. Data read
        without waiting is followed by a checkpoint, as trio's ``receive_some`` does."""
        if self.config.read_timeout is not None:
            await super()._read_data()
            return
        sock = self.stream.socket
        while True:
            try:
                data = os.read(sock.fileno(), MAX_RECV)
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_readable(sock)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                continue
            except OSError:  # reset, or closed (EBADF) by a stalled send's abort
                break
            await trio.lowlevel.checkpoint()
            await self.protocol.handle(RawData(data))
            if data == b"":
                break
        await self.protocol.handle(Closed())


async def serve(
    app: Any,
    config: Config,
    *,
    on_connection_error: Callable[[BaseException], None],
    send_timeout_s: float = math.inf,
    on_send_stall: Callable[[], None] = lambda: None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled; ready (with the bound URLs) once listening.

    Error handling: an exception raised by one connection's protocol handling is passed
    to ``on_connection_error`` and logged; that connection is closed and every other
    one carries on. A socket send that takes over ``send_timeout_s`` aborts its
    connection and calls ``on_send_stall``. Cancellation ends all connections, each
    send then bounded by :data:`CLOSING_SEND_S`.
    """
    guard = SendGuard(send_timeout_s, on_send_stall)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await FastSendTCPServer(wrapped, config, context, ConnectionState(lifespan_state.copy()),
                                    GuardedStream(stream, guard))  # type: ignore[arg-type]
        except Exception as exc:  # one broken connection must not end the server
            on_connection_error(exc)
            log.warning("web: a connection failed and was closed: %s: %s", type(exc).__name__, exc)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        sockets = config.create_sockets()
        listeners = []
        binds = []
        for sock in sockets.insecure_sockets:
            sock.listen(config.backlog)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
            binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
        async with trio.open_nursery() as server_nursery:
            server_nursery.start_soon(_close_guard_on_cancel, guard)
            await server_nursery.start(trio.serve_listeners, handle, listeners)
            task_status.started(binds)


async def _close_guard_on_cancel(guard: SendGuard) -> None:
    try:
        await trio.sleep_forever()
    finally:
        guard.close()
