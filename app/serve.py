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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

log = logging.getLogger(__name__)


async def serve(
    app: Any,
    config: Config,
    *,
    on_connection_error: Callable[[BaseException], None],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled; ready (with the bound URLs) once listening.

    Error handling: an exception raised by one connection's protocol handling is passed
    to ``on_connection_error`` and logged; that connection is closed and every other
    one carries on. Cancellation ends all connections.
    """
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await TCPServer(wrapped, config, context, ConnectionState(lifespan_state.copy()),
                            stream)  # type: ignore[arg-type]
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
            await server_nursery.start(trio.serve_listeners, handle, listeners)
            task_status.started(binds)
