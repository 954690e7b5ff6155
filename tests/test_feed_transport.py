"""The feed's send deadline holds over the real transport (hypercorn), not only over the
session's socket seam: hypercorn writes inside a shielded ``send_all``, so without the
web server's own guard (app/serve.py) a client that stopped reading held its session
for as long as it kept the socket open, and held a graceful shutdown until the CLI's
last-resort deadline (FAILURE_MODES #6)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgpack
import trio
import trio_websocket

from actors.config import Config
from app.runtime import Runtime
from tests.pipeline import sim_pipeline

#: every topic kind for eight symbols: enough traffic to fill small socket buffers fast
SYMBOLS = ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "TRX", "LINK")
TOPICS = ["opportunities", "venues", "symbols"] + [
    f"{kind}:{base}/USDT" for base in SYMBOLS for kind in ("quotes", "spreads", "window")]


def _feed(**changes: Any) -> Any:
    def configure(config: Config) -> Config:
        # only the send deadline may end these sessions
        feed = dataclasses.replace(config.feed, lag_limit_s=600.0, heartbeat_timeout_s=600.0,
                                   heartbeat_interval_s=300.0, max_messages_per_s=100.0, **changes)
        return dataclasses.replace(config, feed=feed)
    return configure


async def _never_reading_client(nursery: trio.Nursery, base: str) -> trio.SocketStream:
    """A client that subscribes to everything and then never reads: a one-message queue
    and a 4 KiB socket receive buffer, so the server's sends stall within seconds. Its
    background reader runs in ``nursery``; the caller closes the returned stream."""
    host, port = base.removeprefix("http://").split(":")
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    ws = await trio_websocket.wrap_client_stream(nursery, stream, f"{host}:{port}", "/feed",
                                                 message_queue_size=1)
    for topic in TOPICS:
        await ws.send_message(msgpack.packb({"op": "subscribe", "topic": topic}))
    return stream


@asynccontextmanager
async def _deadline(limit_s: float) -> AsyncIterator[list[trio.SocketStream]]:
    """``trio.fail_after`` that also reaches a send stuck inside hypercorn's shield.

    A plain deadline cannot end such a send, so a regression would hang the test instead
    of failing it. When ``limit_s`` passes, the client sockets the body put in the yielded
    list are closed (which ends any send to them) and the body's ``TooSlowError`` follows.
    """
    clients: list[trio.SocketStream] = []

    async def close_clients_when_due() -> None:
        await trio.sleep(limit_s)
        for stream in clients:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as watchdog:
        watchdog.start_soon(close_clients_when_due)
        with trio.fail_after(limit_s):
            yield clients
        watchdog.cancel_scope.cancel()


async def _sessions(client: httpx.AsyncClient, base: str) -> dict[str, Any]:
    doc: dict[str, Any] = (await client.get(base + "/health")).json()
    return {**doc["sessions"], "lagging_sessions": doc["hub"]["lagging_sessions"]}


async def _wait_for(client: httpx.AsyncClient, base: str, done: Callable[[dict[str, Any]], bool],
                    within_s: float) -> None:
    """Poll ``/health``'s session figures until ``done`` holds; TooSlowError past ``within_s``."""
    with trio.fail_after(within_s):
        while not done(await _sessions(client, base)):
            await trio.sleep(0.1)


@asynccontextmanager
async def _a_client_that_never_reads(
    tmp_path: Path, send_timeout_s: float,
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient, str]]:
    """The pipeline with one never-reading feed client, and an HTTP client for /health."""
    async with _deadline(45) as streams, trio.open_nursery() as clients:
        async with sim_pipeline(tmp_path, ("binance", "bybit"), seed=5, symbols=25,
                                configure=_feed(send_timeout_s=send_timeout_s)) as runtime, \
                httpx.AsyncClient() as client:
            streams.append(await _never_reading_client(clients, runtime.urls[0]))
            yield runtime, client, runtime.urls[0]
        # the client is still connected and still not reading until here
        clients.cancel_scope.cancel()
        for stream in streams:
            await trio.aclose_forcefully(stream)


async def test_a_client_that_stopped_reading_is_cut_after_the_send_timeout(tmp_path: Path) -> None:
    async with _a_client_that_never_reads(tmp_path, send_timeout_s=1.0) as (_, client, base):
        await _wait_for(client, base, lambda s: s["stalled_sends"] > 0, 30)
        # the stalled connection was aborted and its session left the hub
        await _wait_for(client, base, lambda s: s["count"] == 0, 3)
        assert (await _sessions(client, base))["stalled_sends"] == 1


async def test_a_stalled_send_does_not_hold_a_graceful_shutdown(tmp_path: Path) -> None:
    async with _a_client_that_never_reads(tmp_path, send_timeout_s=120.0) as (runtime, client, base):
        # the session's outbox overflows: its writer is stuck in a socket send
        await _wait_for(client, base, lambda s: s["lagging_sessions"] > 0, 30)
        await trio.sleep(1.0)
        began = trio.current_time()
    stopped_in = trio.current_time() - began
    assert runtime.session_counters.stalled_sends == 1
    assert stopped_in < 2.0, f"graceful shutdown took {stopped_in:.2f}s"


async def _messages(url: str, count: int) -> list[list[Any]]:
    """The first ``count`` messages of a session on every topic, each decoded into its values."""
    messages: list[list[Any]] = []
    async with trio_websocket.open_websocket_url(url) as ws:
        for topic in TOPICS:
            await ws.send_message(msgpack.packb({"op": "subscribe", "topic": topic}))
        while len(messages) < count:
            unpacker = msgpack.Unpacker()
            unpacker.feed(await ws.get_message())
            messages.append(list(unpacker))
    return messages


async def test_a_batched_session_gets_the_same_frames_several_to_a_message(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with sim_pipeline(tmp_path, ("binance", "bybit"), seed=5, symbols=25,
                                configure=_feed()) as runtime:
            url = runtime.urls[0].replace("http://", "ws://") + "/feed"
            plain = await _messages(url, 200)
            batched = await _messages(url + "?batch=1", 60)
    assert all(len(values) == 1 for values in plain)
    assert max(len(values) for values in batched) > 1
    frames = [frame for values in batched for frame in values]
    assert len(frames) > len(batched)
    # in order: every data topic starts with its snapshot, then consecutive sequence numbers
    last: dict[str, int] = {}
    for frame in frames:
        topic = frame["topic"]
        if topic == "_":
            continue
        if topic not in last:
            assert frame["kind"] == "snapshot"
        else:
            assert frame["seq"] == last[topic] + 1, (topic, last[topic], frame["seq"])
        last[topic] = frame["seq"]
    assert {"opportunities", "quotes:BTC/USDT", "spreads:BTC/USDT"} <= set(last)
