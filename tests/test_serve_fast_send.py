"""The web server's fast send path (app/serve.py ``FastSendTCPServer``): a message the
socket takes whole is written at once, without the guarded ``send_all`` (its cancel scopes
and scheduling points); anything else takes the guarded path, bytes in order, one message
never interleaved with another, a broken socket reported as ``Closed``."""

from __future__ import annotations

import math
import socket
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.trio.worker_context import WorkerContext

from app.serve import FastSendTCPServer, GuardedStream, SendGuard


class _Protocol:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def handle(self, event: Any) -> None:
        self.events.append(event)


class _CountingStream(GuardedStream):
    sends = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends += 1
        await super().send_all(data)


def _server(stream: trio.SocketStream, limit_s: float = math.inf) -> tuple[FastSendTCPServer, _Protocol]:
    guarded = _CountingStream(stream, SendGuard(limit_s, lambda: None))
    server = FastSendTCPServer(None, Config(), WorkerContext(None), {},  # type: ignore[arg-type]
                               guarded)  # type: ignore[arg-type]
    protocol = _Protocol()
    server.protocol = protocol  # type: ignore[assignment]
    return server, protocol


def _pair() -> tuple[trio.SocketStream, socket.socket]:
    a, b = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), b


async def test_a_message_the_socket_takes_whole_is_written_without_the_guarded_send() -> None:
    stream, peer = _pair()
    server, _ = _server(stream)
    with peer:
        for i in range(3):
            await server.protocol_send(RawData(bytes([i]) * 1000))
        peer.setblocking(False)
        assert peer.recv(8192) == b"".join(bytes([i]) * 1000 for i in range(3))
    assert server.stream.sends == 0  # type: ignore[attr-defined]
    await stream.aclose()


async def test_messages_larger_than_the_socket_buffer_arrive_whole_and_in_order() -> None:
    stream, peer = _pair()
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server, _ = _server(stream)
    messages = [bytes([i]) * (50_000 + i) for i in range(20)]
    received = bytearray()

    total = sum(len(m) for m in messages)

    def read_all() -> None:
        peer.settimeout(5.0)  # lost bytes end the read instead of hanging the test
        while len(received) < total:
            try:
                chunk = peer.recv(65536)
            except TimeoutError:
                return
            received.extend(chunk)

    async def send(ms: list[bytes]) -> None:
        for m in ms:
            await server.protocol_send(RawData(m))

    with peer, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, read_all)
            # two senders at once: each message must still arrive in one piece
            nursery.start_soon(send, messages[0::2])
            nursery.start_soon(send, messages[1::2])
    assert len(received) == total
    pos = 0
    seen = []
    while pos < len(received):
        i = received[pos]
        length = 50_000 + i
        assert received[pos:pos + length] == bytes([i]) * length, f"message {i} interleaved"
        seen.append(i)
        pos += length
    assert sorted(seen) == list(range(20))
    assert [i for i in seen if i % 2 == 0] == list(range(0, 20, 2))  # each sender's order kept
    assert [i for i in seen if i % 2 == 1] == list(range(1, 20, 2))
    await stream.aclose()


async def test_a_broken_connection_is_handed_to_the_protocol_as_closed() -> None:
    stream, peer = _pair()
    server, protocol = _server(stream)
    peer.close()
    for _ in range(3):  # the first write may still land in the kernel's buffer
        await server.protocol_send(RawData(b"y" * 100_000))
    assert any(isinstance(e, Closed) for e in protocol.events)
    assert not server.send_lock.locked()
    await stream.aclose()


async def test_a_stalled_remainder_still_meets_the_guards_deadline() -> None:
    stream, peer = _pair()
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server, protocol = _server(stream, limit_s=0.2)
    with peer, trio.fail_after(5):
        await server.protocol_send(RawData(b"z" * 10_000_000))  # the peer never reads
    assert any(isinstance(e, Closed) for e in protocol.events)
