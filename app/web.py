"""The web layer: UI, ``/feed`` WebSocket, ``/health``, ``/metrics``, ``/api/window``,
``/api/history`` (recorded data, read in a worker thread; docs/http-api.md).

Quart-trio on hypercorn, run as one actor of the supervisor's tree (:func:`run_web`).
The app is built per runtime by :func:`create_asgi` (the HTTP routes by :func:`create_app`);
it holds no module-level state and reaches the pipeline only through the
:class:`~app.runtime.Runtime` it is given: sessions talk to the hub over its control
channel, window queries go to the owning shard over its query channel.

``/feed`` is served straight on ASGI (:func:`feed_endpoint`), not through Quart's
websocket wrapper: measured with ``bench/perf_memory.py``, Quart's per-connection
machinery (two more tasks, a memory channel, a request context, a header copy) was
~16 KiB of the ~53 KiB an idle session cost, and every frame sent passed through it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Awaitable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import hypercorn.config
import orjson
import pyarrow as pa
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope, WebsocketScope
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Response, abort, request, send_file
from quart_trio import QuartTrio

from actors.history import HistoryError, HistoryLimits, parse_history_query, read_history
from actors.session import CLOSE_NORMAL, SessionClosed, run_session
from actors.shard import QueryKind
from app.health import health_snapshot, metrics_registry
from app.memprobe import install as install_memprobe
from app.runtime import Runtime
from app.serve import serve

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
NODE_MODULES = Path(__file__).resolve().parent.parent / "node_modules"

#: /vendor/<name> -> file under node_modules (installed by `npm ci` at set-up)
VENDOR_FILES: Mapping[str, str] = MappingProxyType({
    "uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
    "msgpack.min.js": "@msgpack/msgpack/dist.umd/msgpack.min.js",
    "msgpack.min.js.map": "@msgpack/msgpack/dist.umd/msgpack.min.js.map",
})

SYMBOL_RE = re.compile(r"[A-Z0-9]{1,30}/[A-Z0-9]{1,30}")


class AsgiFeedSocket:
    """The session's transport seam on an accepted ASGI WebSocket (hypercorn's WSStream).

    The client leaving (``websocket.disconnect``) ends the session as a normal close."""

    __slots__ = ("_receive", "_send")

    def __init__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        self._receive = receive
        self._send = send

    async def receive(self) -> bytes | str:
        while True:
            event = await self._receive()
            if event["type"] == "websocket.receive":
                data = event.get("bytes")
                if data is not None:
                    return data
                return event.get("text") or ""
            if event["type"] == "websocket.disconnect":
                raise SessionClosed(CLOSE_NORMAL, "client left")

    async def send(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data, "text": None})

    async def close(self, code: int, reason: str) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


def _header(scope: WebsocketScope, name: bytes) -> str | None:
    """The first value of a request header (ASGI names are lower-case)."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def feed_endpoint(runtime: Runtime, scope: WebsocketScope, receive: ASGIReceiveCallable,
                        send: ASGISendCallable) -> None:
    """``/feed``: check the Origin, accept, run the session (``?batch=1``: batched messages)."""
    event = await receive()
    if event["type"] != "websocket.connect":
        return
    config = runtime.config
    if not origin_allowed(_header(scope, b"origin"), _header(scope, b"host"), config.server.allowed_origins):
        runtime.session_counters.bad_messages += 1
        body = b"origin not allowed"
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        else:  # a server without the extension answers a close before accept with 403
            await send({"type": "websocket.close", "code": 1008, "reason": "origin not allowed"})
        return
    try:
        await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    except h11.LocalProtocolError as exc:
        # hypercorn #225: bytes after the upgrade request leave h11 in its ERROR
        # state; an exception escaping here would take the whole server down.
        runtime.session_counters.bad_handshakes += 1
        log.info("feed: broken WebSocket handshake: %s", exc)
        with contextlib.suppress(h11.LocalProtocolError):
            await send({"type": "websocket.close", "code": 1002, "reason": "protocol error"})
        return
    client = scope.get("client")
    remote = str(client[0]) if client else ""
    query = scope.get("query_string", b"").decode("latin-1")
    batch = next((v for k, v in parse_qsl(query) if k == "batch"), None) == "1"
    code, reason = await run_session(
        AsgiFeedSocket(receive, send), runtime.hub_control, config=config.feed,
        counters=runtime.session_counters, clock_ns=runtime.clock_ns, remote=remote, batch=batch,
    )
    log.debug("session %s closed: %d %s", remote, code, reason)


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Same origin, or listed in ``server.allowed_origins``. Non-browser clients send none."""
    if origin is None:
        return True
    if origin in allowed:
        return True
    parts = urlsplit(origin)
    return bool(host) and parts.netloc == host and parts.scheme in ("http", "https")


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status=status, mimetype="application/json")


def create_app(runtime: Runtime) -> QuartTrio:
    app = QuartTrio(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    config = runtime.config

    @app.after_request
    async def security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:",
        )
        return response

    @app.route("/")
    async def index() -> Any:
        return await send_file(STATIC_DIR / "index.html")

    @app.route("/vendor/<name>")
    async def vendor(name: str) -> Any:
        rel = VENDOR_FILES.get(name)
        if rel is None:
            abort(404)
        path = NODE_MODULES / rel
        if not path.is_file():
            return Response(f"{name} is missing: run the set-up (npm ci)", status=404)
        return await send_file(path)

    @app.route("/health")
    async def health() -> Response:
        # ?objects=1 adds the count of objects the garbage collector tracks (a walk of
        # the whole heap, ~50 ms at a million objects: asked for by bench/, not by the UI)
        doc, healthy = health_snapshot(runtime, objects=request.args.get("objects") == "1")
        return _json(doc, 200 if healthy else 503)

    registry = metrics_registry(runtime)

    @app.route("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @app.route("/api/window")
    async def window() -> Response:
        return await shard_answer(QueryKind.WINDOW)

    @app.route("/api/stats")
    async def stats() -> Response:
        return await shard_answer(QueryKind.STATS)

    async def shard_answer(kind: QueryKind) -> Response:
        symbol = request.args.get("symbol", "")
        if not SYMBOL_RE.fullmatch(symbol):
            return _json({"error": "symbol must look like BASE/QUOTE, e.g. BTC/USDT"}, 400)
        try:
            doc = await runtime.query_window(symbol, kind=kind)
        except trio.WouldBlock:
            return _json({"error": "busy, retry"}, 503)
        except trio.TooSlowError:
            return _json({"error": "timed out, retry"}, 503)
        if doc is None:
            return _json({"error": f"unknown symbol {symbol}"}, 404)
        return _json(doc)

    history_limits = HistoryLimits()
    # Two history reads at a time; more get 503 rather than queueing behind the disk.
    history_threads = trio.CapacityLimiter(2)

    @app.route("/api/history")
    async def history() -> Response:
        try:
            query = parse_history_query(request.args, known_venues=config.venues,
                                        limits=history_limits)
            if history_threads.available_tokens == 0:
                return _json({"error": "busy, retry"}, 503)
            doc = await trio.to_thread.run_sync(functools.partial(
                read_history, runtime.data_dir, query,
                fees_bps={n: v.taker_fee_bps for n, v in config.venues.items()},
                stale_after_ns={n: round(v.stale_after_s * 1e9) for n, v in config.venues.items()},
                limits=history_limits,
            ), limiter=history_threads, abandon_on_cancel=True)
        except HistoryError as exc:
            return _json({"error": exc.message}, exc.status)
        except (OSError, pa.ArrowException) as exc:
            log.warning("history: cannot read %s: %s", runtime.data_dir, exc)
            return _json({"error": "cannot read the recorded data"}, 500)
        return _json(doc)

    install_memprobe(app)  # bench only: nothing unless SPREADWATCH_MEMPROBE is set
    return app


def create_asgi(runtime: Runtime) -> Any:
    """The ASGI app hypercorn serves: WebSocket ``/feed`` straight to :func:`feed_endpoint`,
    everything else (HTTP routes, lifespan, any other WebSocket path) to the Quart app."""
    app = create_app(runtime)

    # not a coroutine function: it hands back the chosen app's coroutine, so no frame of
    # its own stays alive for the life of every session
    def asgi(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> Awaitable[None]:
        if scope["type"] == "websocket" and scope["path"] == "/feed":
            return feed_endpoint(runtime, scope, receive, send)
        return app(scope, receive, send)

    return asgi


async def run_web(runtime: Runtime, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the app with hypercorn until cancelled; ready once the socket listens."""
    config = runtime.config
    app = create_asgi(runtime)
    hconfig = hypercorn.config.Config()
    hconfig.bind = [f"{config.server.host}:{config.server.port}"]
    hconfig.websocket_max_message_size = config.feed.max_message_bytes
    # No WebSocket-level pings from hypercorn: each cost a task and a timer per session
    # (~3 KiB, bench/perf_memory.py), and a pong is invisible to the session, which pings
    # at the application level every heartbeat_interval_s and closes silent clients.
    hconfig.websocket_ping_interval = None
    hconfig.graceful_timeout = 1.0
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    def connection_failed(exc: BaseException) -> None:
        runtime.session_counters.broken_connections += 1

    def send_stalled() -> None:
        runtime.session_counters.stalled_sends += 1

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(functools.partial(
            serve, app, hconfig, on_connection_error=connection_failed,
            send_timeout_s=config.feed.send_timeout_s, on_send_stall=send_stalled))
        runtime.urls = list(binds)
        log.info("serving on %s", ", ".join(binds))
        task_status.started()

