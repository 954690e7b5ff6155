"""actors/nats.py against a real nats-server (tests/nats_server.py) and against fake,
hostile servers on loopback. Real time throughout: every test is bounded by fail_after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.nats import (
    DEFAULT_MAX_PAYLOAD,
    JetStream,
    JetStreamError,
    Msg,
    NatsClient,
    NatsError,
    NatsStatus,
    NoResponders,
    encode_headers,
    open_nats,
    parse_ack_subject,
    parse_headers,
)
from tests import nats_server as nats_server_module
from tests.nats_server import NatsServer, free_port

nats_server = nats_server_module.nats_server  # the fixture, under its name

ROOT = Path(__file__).resolve().parent.parent


def fast_nats(servers: list[str], **options: Any) -> AbstractAsyncContextManager[NatsClient]:
    """open_nats with quick reconnects, for the tests that take a server away."""
    return open_nats(servers, backoff_initial_s=0.05, backoff_max_s=0.2, connect_timeout_s=1.0, **options)


async def connected(client: NatsClient, within_s: float = 5.0) -> None:
    with trio.fail_after(within_s):
        await client.wait_connected()


async def until(predicate: Callable[[], bool], within_s: float = 5.0, every_s: float = 0.01) -> None:
    with trio.fail_after(within_s):
        while not predicate():
            await trio.sleep(every_s)


async def receive_n(sub: object, n: int, within_s: float = 5.0) -> list[Msg]:
    out: list[Msg] = []
    with trio.fail_after(within_s):
        for _ in range(n):
            out.append(await sub.receive())  # type: ignore[attr-defined]
    return out


# -- pure pieces ------------------------------------------------------------------------------


def test_headers_round_trip_and_status_line() -> None:
    block = encode_headers({"A": "1", "Nats-Msg-Id": "x y"})
    assert block == b"NATS/1.0\r\nA: 1\r\nNats-Msg-Id: x y\r\n\r\n"
    assert parse_headers(block) == ({"A": "1", "Nats-Msg-Id": "x y"}, None, "")
    assert parse_headers(b"NATS/1.0 404 No Messages\r\n\r\n") == ({}, 404, "No Messages")
    assert parse_headers(b"NATS/1.0 503\r\n\r\n") == ({}, 503, "")
    with pytest.raises(ValueError):
        parse_headers(b"HTTP/1.1 200 OK\r\n\r\n")
    with pytest.raises(ValueError):
        encode_headers({"bad key": "v"})
    with pytest.raises(ValueError):
        encode_headers({"K": "line\r\nbreak"})


def test_ack_subject_both_forms() -> None:
    assert parse_ack_subject("$JS.ACK.S.C.2.17.5.1700000000000000000.3") == (
        "S", "C", 2, 17, 5, 1700000000000000000, 3)
    assert parse_ack_subject("$JS.ACK.hub.ACCHASH.S.C.1.9.4.1700000000000000001.0.r4nd") == (
        "S", "C", 1, 9, 4, 1700000000000000001, 0)
    for bad in ("$JS.ACK.S.C.1", "_INBOX.x.y", "$JS.ACK.S.C.a.b.c.d.e", "$JS.ACK.a.b.S.C.1.2.3.4.5"):
        with pytest.raises(ValueError):
            parse_ack_subject(bad)


def test_bad_urls_and_subjects_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="TLS"):
        NatsClient(["tls://x:1"], name="t", status=NatsStatus(), max_outbound_bytes=1, connect_timeout_s=1,
                   ping_interval_s=1, max_pings_out=1, backoff_initial_s=0.1, backoff_max_s=1)
    client = NatsClient(["nats://127.0.0.1:1"], name="t", status=NatsStatus(), max_outbound_bytes=1000,
                        connect_timeout_s=1, ping_interval_s=1, max_pings_out=1, backoff_initial_s=0.1,
                        backoff_max_s=1)
    with pytest.raises(ValueError):
        client.publish("has space", b"")
    with pytest.raises(ValueError):
        client.subscribe("")


# -- core protocol against a real server ----------------------------------------------------


async def test_pub_sub_round_trip_with_headers(nats_server: NatsServer) -> None:
    async with open_nats([nats_server.url]) as nc:
        await connected(nc)
        sub = nc.subscribe("rt.a")
        other = nc.subscribe("rt.*")
        await nc.flush(2)
        assert nc.publish("rt.a", b"hello")
        assert nc.publish("rt.a", b"with headers", reply="reply.here",
                          headers={"X-Id": "42", "Content-Type": "text/plain"})
        assert nc.publish("rt.b", b"only the wildcard")
        first, second = await receive_n(sub, 2)
        assert (first.subject, first.reply, first.payload, first.headers, first.status) == (
            "rt.a", None, b"hello", None, None)
        assert (second.subject, second.reply, second.payload) == ("rt.a", "reply.here", b"with headers")
        assert second.headers == {"X-Id": "42", "Content-Type": "text/plain"}
        assert [m.payload for m in await receive_n(other, 3)] == [b"hello", b"with headers", b"only the wildcard"]
        with pytest.raises(trio.WouldBlock):
            sub.receive_nowait()
        snap = nc.status.snapshot()
        assert snap["state"] == "connected" and snap["connects"] == 1 and snap["server"] == nats_server.url
        assert snap["published"] == 3 and snap["received"] == 5
        assert snap["published_bytes"] == len(b"hello" b"with headers" b"only the wildcard")
        assert snap["protocol_errors"] == 0 and snap["server_errors"] == 0


async def test_payload_sizes_up_to_max_payload_and_one_above(nats_server: NatsServer) -> None:
    async with open_nats([nats_server.url], max_outbound_bytes=16 << 20) as nc:
        await connected(nc)
        assert nc.max_payload == DEFAULT_MAX_PAYLOAD  # from the server's INFO (its default)
        sub = nc.subscribe("size.t", max_pending_bytes=32 << 20)
        await nc.flush(2)
        sizes = [0, 1, 2, 100, 4095, 4096, 65_535, 65_536, 300_001, nc.max_payload - 1, nc.max_payload]
        payloads = [os.urandom(n) for n in sizes]
        for p in payloads:
            assert nc.publish("size.t", p)
        assert nc.publish("size.t", b"h" * 100, headers={"K": "v"})
        got = await receive_n(sub, len(payloads) + 1)
        assert [m.payload for m in got[:-1]] == payloads
        assert got[-1].payload == b"h" * 100 and got[-1].headers == {"K": "v"}
        # one byte above, bare or through the header block: refused, counted, nothing sent
        assert not nc.publish("size.t", b"x" * (nc.max_payload + 1))
        assert not nc.publish("size.t", b"x" * (nc.max_payload - 5), headers={"K": "v"})
        assert nc.status.publish_oversize == 2 and "max_payload" in (nc.status.last_error or "")
        await nc.flush(2)
        with pytest.raises(trio.WouldBlock):
            sub.receive_nowait()
        assert nc.status.published == len(payloads) + 1


async def test_many_messages_in_one_read_are_parsed_in_order(nats_server: NatsServer) -> None:
    async with open_nats([nats_server.url]) as nc:
        await connected(nc)
        sub = nc.subscribe("many.t", max_pending_msgs=20_000)
        await nc.flush(2)
        n = 10_000
        for i in range(n):  # no checkpoint in between: one buffer, a few big writes
            assert nc.publish("many.t", b"m%d" % i, headers={"i": str(i)} if i % 7 == 0 else None)
        await nc.flush(5)
        assert sub.pending_msgs == n
        first = await sub.receive_batch(100)
        assert len(first) == 100 and sub.pending_msgs == n - 100
        got = first + [sub.receive_nowait() for _ in range(100)] + sub.receive_batch_nowait()
        assert sub.receive_batch_nowait() == []
        assert [m.payload for m in got] == [b"m%d" % i for i in range(n)]
        assert all(m.headers == {"i": str(i)} for i, m in enumerate(got) if i % 7 == 0)
        assert sub.pending_msgs == 0 and sub.pending_bytes == 0 and sub.dropped == 0


async def test_queue_group_members_share(nats_server: NatsServer) -> None:
    async with open_nats([nats_server.url]) as nc:
        await connected(nc)
        members = [nc.subscribe("q.t", queue="workers") for _ in range(2)]
        everyone = nc.subscribe("q.t")
        await nc.flush(2)
        n = 200
        for i in range(n):
            assert nc.publish("q.t", b"%d" % i)
        await nc.flush(2)
        assert everyone.pending_msgs == n
        counts = [m.pending_msgs for m in members]
        assert sum(counts) == n and all(c > 0 for c in counts), counts
        shared = {m.receive_nowait().payload for member, c in zip(members, counts, strict=True)
                  for m in [member] * c}
        assert shared == {b"%d" % i for i in range(n)}


async def test_unsubscribe_stops_delivery(nats_server: NatsServer) -> None:
    async with open_nats([nats_server.url]) as nc:
        await connected(nc)
        sub = nc.subscribe("u.t")
        control = nc.subscribe("u.t")
        await nc.flush(2)
        nc.publish("u.t", b"one")
        await nc.flush(2)
        sub.unsubscribe()
        sub.unsubscribe()  # idempotent
        nc.publish("u.t", b"two")
        await nc.flush(2)
        assert [m.payload for m in await receive_n(control, 2)] == [b"one", b"two"]
        assert nc.status.received == 3  # the server sent "two" once: UNSUB reached it
        assert sub.receive_nowait().payload == b"one"  # pending before unsubscribe stays
        with pytest.raises(trio.EndOfChannel):
            await sub.receive()
        assert [m async for m in sub] == []


async def test_pending_limits_drop_the_new_message_and_count(nats_server: NatsServer) -> None:
    async with open_nats([nats_server.url]) as nc:
        await connected(nc)
        by_count = nc.subscribe("slow.t", max_pending_msgs=10)
        by_bytes = nc.subscribe("slow.t", max_pending_bytes=1000)
        await nc.flush(2)
        for i in range(25):
            nc.publish("slow.t", b"%03d" % i + b"." * 297)  # 300 bytes
        await nc.flush(2)  # the server sends our messages before the PONG
        assert nc.status.received == 50
        assert (by_count.pending_msgs, by_count.dropped) == (10, 15)
        assert (by_bytes.pending_msgs, by_bytes.pending_bytes, by_bytes.dropped) == (3, 900, 22)
        assert nc.status.slow_consumer_drops == 37
        assert [by_count.receive_nowait().payload[:3] for _ in range(10)] == [b"%03d" % i for i in range(10)]
        # room again: new messages are kept
        nc.publish("slow.t", b"late")
        await nc.flush(2)
        assert by_count.receive_nowait().payload == b"late"


async def test_publish_never_blocks_and_is_capped_while_down_then_delivered(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", port=free_port())  # not started: nothing listens
    cap = 10_000
    async with fast_nats([server.url], max_outbound_bytes=cap) as nc:
        sub = nc.subscribe("buf.t")  # goes out with CONNECT, before the buffered messages
        await until(lambda: nc.status.connect_failures >= 2)
        assert not nc.connected and nc.status.state in ("connecting", "backoff")
        assert "Error" in (nc.status.last_error or "")
        size = 100
        per = len(b"PUB buf.t %d\r\n" % size) + size + 2
        started = time.perf_counter()
        results = [nc.publish("buf.t", b"%03d" % i + b"-" * (size - 3)) for i in range(200)]
        assert time.perf_counter() - started < 0.5  # a plain function: it cannot block
        accepted = results.count(True)
        assert accepted == cap // per and results[:accepted] == [True] * accepted
        assert not any(results[accepted:])
        assert nc.status.publish_dropped == 200 - accepted
        assert nc.status.outbound_bytes == accepted * per
        try:
            await trio.to_thread.run_sync(server.start)
            got = await receive_n(sub, accepted)
            assert [m.payload[:3] for m in got] == [b"%03d" % i for i in range(accepted)]
            assert nc.status.connects == 1 and nc.status.outbound_bytes == 0
        finally:
            await trio.to_thread.run_sync(server.stop)


async def test_reconnect_after_server_restart_resubscribes(nats_server: NatsServer) -> None:
    async with fast_nats([nats_server.url]) as nc:
        await connected(nc)
        sub = nc.subscribe("re.t")
        queued = nc.subscribe("re.q", queue="g")
        await nc.flush(2)
        nc.publish("re.t", b"before")
        assert (await receive_n(sub, 1))[0].payload == b"before"
        await trio.to_thread.run_sync(nats_server.restart)
        await until(lambda: nc.status.reconnects == 1 and nc.connected)
        assert nc.status.connects == 2 and nc.status.state == "connected"
        nc.publish("re.t", b"after")
        nc.publish("re.q", b"queued after")
        assert (await receive_n(sub, 1))[0].payload == b"after"
        assert (await receive_n(queued, 1))[0].payload == b"queued after"


async def test_request_reply_timeout_and_no_responders(nats_server: NatsServer) -> None:
    async with open_nats([nats_server.url]) as nc, trio.open_nursery() as nursery:
        await connected(nc)
        service = nc.subscribe("svc.upper")
        silent = nc.subscribe("svc.silent")

        async def serve() -> None:
            async for msg in service:
                assert msg.reply
                nc.publish(msg.reply, msg.payload.upper(), headers={"Seen": msg.headers["K"]} if msg.headers else None)

        nursery.start_soon(serve)
        await nc.flush(2)
        reply = await nc.request("svc.upper", b"hello", timeout_s=2)
        assert reply.payload == b"HELLO" and reply.headers is None
        reply = await nc.request("svc.upper", b"again", timeout_s=2, headers={"K": "v"})
        assert reply.payload == b"AGAIN" and reply.headers == {"Seen": "v"}
        replies = []

        async def ask(i: int) -> None:
            replies.append((await nc.request("svc.upper", b"r%d" % i, timeout_s=2)).payload)

        async with trio.open_nursery() as many:
            for i in range(50):
                many.start_soon(ask, i)
        assert sorted(replies) == sorted(b"R%d" % i for i in range(50))
        began = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await nc.request("svc.silent", b"?", timeout_s=0.3)
        assert 0.29 <= trio.current_time() - began < 1.0
        assert silent.pending_msgs == 1
        began = trio.current_time()
        with pytest.raises(NoResponders):
            await nc.request("svc.nobody", b"?", timeout_s=5)
        assert trio.current_time() - began < 1.0
        assert nc.pending_requests == 0
        nursery.cancel_scope.cancel()


async def test_pending_request_fails_promptly_on_disconnect(nats_server: NatsServer) -> None:
    async with fast_nats([nats_server.url]) as nc:
        await connected(nc)
        nc.subscribe("svc.never")  # someone listens (no 503), nobody answers
        await nc.flush(2)
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, nats_server.kill)
            with pytest.raises(NatsError, match="disconnected"):
                await nc.request("svc.never", b"?", timeout_s=10)
        assert trio.current_time() - began < 3.0
        assert nc.pending_requests == 0


async def test_flush_times_out_while_down(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", port=free_port())
    async with fast_nats([server.url]) as nc:
        with pytest.raises(trio.TooSlowError):
            await nc.flush(0.2)


async def test_interop_with_nats_py(nats_server: NatsServer) -> None:
    """nats-py (independent code) sees our HPUB as we meant it, and we read its HMSG."""
    script = textwrap.dedent("""
        import asyncio, json, sys
        import nats

        async def main():
            nc = await nats.connect(sys.argv[1])
            seen = asyncio.get_running_loop().create_future()

            async def on(msg):
                if not seen.done():
                    seen.set_result(msg)

            await nc.subscribe("interop.in", cb=on)
            await nc.flush()
            print("ready", flush=True)
            msg = await asyncio.wait_for(seen, 10)
            await nc.publish("interop.out", json.dumps({"data": msg.data.decode(), "headers": msg.headers,
                                                        "reply": msg.reply}).encode(),
                             headers={"From": "nats-py", "Multi": "a b c"})
            await nc.flush()
            await nc.close()

        asyncio.run(main())
    """)
    async with open_nats([nats_server.url]) as nc:
        await connected(nc)
        out = nc.subscribe("interop.out")
        await nc.flush(2)
        proc = await trio.lowlevel.open_process([sys.executable, "-c", script, nats_server.url],
                                                stdout=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            with trio.fail_after(20):
                line = b""
                while not line.endswith(b"\n"):
                    line += await proc.stdout.receive_some(100)
                assert line.strip() == b"ready"
                assert nc.publish("interop.in", b"from trio", reply="inbox.x", headers={"Trace": "t-1", "E": ""})
                msg = (await receive_n(out, 1, within_s=10))[0]
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await proc.stdout.aclose()
        assert proc.returncode == 0
        assert msg.headers == {"From": "nats-py", "Multi": "a b c"}
        assert json.loads(msg.payload) == {"data": "from trio", "headers": {"Trace": "t-1", "E": ""},
                                           "reply": "inbox.x"}


# -- lifecycle ----------------------------------------------------------------------------------


def _tasks() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks)
    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


async def test_exit_and_cancellation_leave_no_task_and_close_the_socket(nats_server: NatsServer) -> None:
    before = _tasks()
    async with open_nats([nats_server.url]) as nc:
        await connected(nc)
        conn = nc._conn
        assert conn is not None
        sock = conn.stream.socket
        sub = nc.subscribe("bye.t")
        assert _tasks() >= before + 4  # actor, reader, writer, pinger
        nc.publish("bye.t", b"flushed on exit")
    assert _tasks() == before
    assert sock.fileno() == -1
    assert nc.status.state == "closed" and not nc.connected
    assert not nc.publish("bye.t", b"after close")
    assert [m.payload async for m in sub] in ([], [b"flushed on exit"])  # closed: the loop ends
    with pytest.raises(trio.EndOfChannel):
        await sub.receive()
    with pytest.raises(NatsError):
        await nc.wait_connected()

    # cancelled from outside, while a task waits in receive()
    with trio.move_on_after(0.3) as scope:
        async with open_nats([nats_server.url]) as nc2:
            await connected(nc2)
            conn2 = nc2._conn
            assert conn2 is not None
            sock2 = conn2.stream.socket
            await nc2.subscribe("never.t").receive()
    assert scope.cancelled_caught
    assert _tasks() == before and sock2.fileno() == -1

    # an exception from the body comes out as itself
    with pytest.raises(KeyError, match="mine"):
        async with open_nats([nats_server.url]):
            raise KeyError("mine")
    assert _tasks() == before


async def test_exit_flushes_what_is_buffered(nats_server: NatsServer) -> None:
    async with open_nats([nats_server.url]) as reader:
        await connected(reader)
        sub = reader.subscribe("exit.t", max_pending_msgs=5000)
        await reader.flush(2)
        async with open_nats([nats_server.url]) as writer:
            await connected(writer)
            for i in range(3000):
                writer.publish("exit.t", b"%d" % i)
        got = await receive_n(sub, 3000)
        assert got[-1].payload == b"2999"


# -- fake and hostile servers ---------------------------------------------------------------------

INFO = b'INFO {"server_id":"FAKE","version":"2.10.0","proto":1,"headers":true,"max_payload":1048576}\r\n'
Handler = Callable[[trio.SocketStream, int], Awaitable[None]]


@asynccontextmanager
async def fake_server(handler: Handler) -> AsyncIterator[str]:
    """A loopback TCP server; ``handler(stream, n)`` serves its n-th connection (from 1)."""
    count = 0

    async def serve(stream: trio.SocketStream) -> None:
        nonlocal count
        count += 1
        try:
            await handler(stream, count)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        yield f"nats://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


async def handshake(stream: trio.SocketStream) -> bytes:
    """INFO, read up to the client's first PING, PONG; what the client sent."""
    await stream.send_all(INFO)
    got = b""
    while b"PING\r\n" not in got:
        data = await stream.receive_some(65536)
        if not data:
            raise trio.BrokenResourceError
        got += data
    await stream.send_all(b"PONG\r\n")
    return got


async def drain(stream: trio.SocketStream, into: list[bytes] | None = None) -> None:
    while data := await stream.receive_some(65536):
        if into is not None:
            into.append(data)


async def test_split_reads_are_parsed() -> None:
    """One blob of 300 messages, fed in one write and then in tiny odd-sized pieces."""
    blob = b"".join((b"MSG fake.s 1 %d\r\n%s\r\n" % (len(p), p) if i % 3 else
                     b"HMSG fake.s 1 r.%d 18 %d\r\nNATS/1.0\r\nN: %d\r\n\r\n%s\r\n" % (
                         i, 18 + len(p), i % 10, p))
                    for i in range(300) for p in [b"payload-%d" % i + b"z" * (i % 50)])

    async def handler(stream: trio.SocketStream, n: int) -> None:
        sent = await handshake(stream)
        assert b"SUB fake.s 1\r\n" in sent
        await stream.send_all(blob)
        for i in range(0, len(blob), 7):
            await stream.send_all(blob[i:i + 7])
        await drain(stream)

    async with fake_server(handler) as url, open_nats([url]) as nc:
        sub = nc.subscribe("fake.s", max_pending_msgs=1000)
        got = await receive_n(sub, 600)
        for copy in (got[:300], got[300:]):
            assert [m.payload for m in copy] == [b"payload-%d" % i + b"z" * (i % 50) for i in range(300)]
            assert copy[3].headers == {"N": "3"} and copy[3].reply == "r.3"
            assert copy[1].headers is None and copy[1].reply is None
        assert nc.status.protocol_errors == 0 and nc.status.received == 600


@pytest.mark.parametrize("garbage", [
    pytest.param(b"GARBAGE\r\n", id="unknown-op"),
    pytest.param(b"MSG fake.s 1 5\r\nhello world\r\n", id="size-too-small"),
    pytest.param(b"MSG fake.s 1 99999999\r\n", id="size-above-max-payload"),
    pytest.param(b"MSG fake.s 1 -5\r\nhello\r\n", id="negative-size"),
    pytest.param(b"MSG fake.s one 5\r\nhello\r\n", id="bad-sid"),
    pytest.param(b"HMSG fake.s 1 20 5\r\nhello\r\n", id="header-longer-than-message"),
    pytest.param(b"x" * 70_000, id="no-crlf"),
    pytest.param(b"INFO [1,2]\r\n", id="info-not-object"),
    pytest.param(b"-ERR 'Authorization Violation'\r\n", id="fatal-server-error"),
])
async def test_hostile_server_counts_and_reconnects(garbage: bytes) -> None:
    async def handler(stream: trio.SocketStream, n: int) -> None:
        await handshake(stream)
        if n == 1:
            await stream.send_all(garbage)
        await stream.send_all(b"MSG fake.s 1 4\r\ngood\r\n")
        await drain(stream)

    async with fake_server(handler) as url, fast_nats([url]) as nc:
        sub = nc.subscribe("fake.s")
        await until(lambda: nc.status.connects >= 2 and nc.connected)
        msg = (await receive_n(sub, 1))[0]
        assert msg.payload == b"good"
        assert nc.status.reconnects == 1 and nc.status.last_error
        if garbage.startswith(b"-ERR"):
            assert nc.status.server_errors == 1 and nc.status.protocol_errors == 0
            assert "Authorization Violation" in nc.status.last_error
        else:
            assert nc.status.protocol_errors == 1
            assert "ProtocolError" in nc.status.last_error


async def test_bad_header_block_drops_the_message_not_the_connection() -> None:
    async def handler(stream: trio.SocketStream, n: int) -> None:
        await handshake(stream)
        await stream.send_all(b"HMSG fake.s 1 14 16\r\nHTTP/1.1 200\r\nhi\r\n"
                              b"PING\r\n"
                              b"MSG fake.s 1 4\r\ngood\r\n"
                              b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n"
                              b"MSG fake.s 1 5\r\nstill\r\n")
        got: list[bytes] = []
        with trio.move_on_after(2):
            while b"PONG\r\n" not in b"".join(got):
                got.append(await stream.receive_some(65536))
        await stream.send_all(b"MSG fake.s 1 %d\r\n%s\r\n" % (len(b"".join(got)), b"".join(got)))
        await drain(stream)

    async with fake_server(handler) as url, fast_nats([url]) as nc:
        sub = nc.subscribe("fake.s")
        got = await receive_n(sub, 3)
        assert [m.payload for m in got[:2]] == [b"good", b"still"]
        assert b"PONG\r\n" in got[2].payload  # the client answered the server's PING
        assert nc.status.bad_messages == 1 and nc.status.server_errors == 1
        assert nc.status.connects == 1 and nc.status.protocol_errors == 0


async def test_unanswered_pings_redo_the_connection() -> None:
    async def handler(stream: trio.SocketStream, n: int) -> None:
        await handshake(stream)  # answers the handshake PING only
        await drain(stream)

    async with fake_server(handler) as url, fast_nats([url], ping_interval_s=0.1, max_pings_out=2) as nc:
        began = trio.current_time()
        await until(lambda: nc.status.reconnects >= 1, within_s=3)
        assert trio.current_time() - began >= 0.25  # two unanswered PINGs, then the check
        assert "PINGs unanswered" in (nc.status.last_error or "")


async def test_answered_pings_keep_the_connection() -> None:
    async def handler(stream: trio.SocketStream, n: int) -> None:
        await handshake(stream)
        while data := await stream.receive_some(65536):
            await stream.send_all(b"PONG\r\n" * data.count(b"PING\r\n"))

    async with fake_server(handler) as url, fast_nats([url], ping_interval_s=0.05, max_pings_out=1) as nc:
        await connected(nc)
        await trio.sleep(0.5)
        assert nc.status.connects == 1 and nc.status.reconnects == 0 and nc.connected


# -- JetStream --------------------------------------------------------------------------------------


async def test_ensure_stream_is_idempotent_and_updates_limits(nats_server: NatsServer) -> None:
    async with open_nats([nats_server.url]) as nc:
        await connected(nc)
        js = JetStream(nc)
        info = await js.ensure_stream("S1", ["s1.>"], max_bytes=1 << 20, max_age_s=60)
        assert info["config"]["max_bytes"] == 1 << 20 and info["config"]["subjects"] == ["s1.>"]
        assert info["config"]["duplicate_window"] == 60 * 10**9  # capped at max_age
        again = await js.ensure_stream("S1", ["s1.>"], max_bytes=1 << 20, max_age_s=60)
        assert again["created"] == info["created"] and again["config"] == info["config"]
        updated = await js.ensure_stream("S1", ["s1.>", "s1b.*"], max_bytes=2 << 20, max_age_s=3600,
                                         max_msgs=1000, duplicate_window_s=30)
        assert updated["config"]["max_bytes"] == 2 << 20 and updated["config"]["max_msgs"] == 1000
        current = (await js.stream_info("S1"))["config"]
        assert current["subjects"] == ["s1.>", "s1b.*"] and current["max_age"] == 3600 * 10**9
        assert current["duplicate_window"] == 30 * 10**9
        with pytest.raises(JetStreamError) as caught:
            await js.stream_info("NOPE")
        assert caught.value.code == 404 and caught.value.err_code == 10059


async def test_publish_dedups_by_msg_id(nats_server: NatsServer) -> None:
    async with open_nats([nats_server.url]) as nc:
        await connected(nc)
        js = JetStream(nc)
        await js.ensure_stream("S2", ["s2.>"], max_bytes=1 << 20, max_age_s=60)
        first = await js.publish("s2.a", b"one", timeout_s=2, msg_id="id-1")
        assert (first.stream, first.seq, first.duplicate) == ("S2", 1, False)
        again = await js.publish("s2.a", b"one", timeout_s=2, msg_id="id-1")
        assert (again.seq, again.duplicate) == (1, True)
        other = await js.publish("s2.b", b"two", timeout_s=2, msg_id="id-2")
        assert (other.seq, other.duplicate) == (2, False)
        plain = await js.publish("s2.c", b"three", timeout_s=2)
        assert plain.seq == 3
        assert (await js.stream_info("S2"))["state"]["messages"] == 3
        with pytest.raises(NoResponders):
            await js.publish("not.in.a.stream", b"x", timeout_s=2)


async def test_pull_consumer_ack_and_redelivery(nats_server: NatsServer) -> None:
    async with open_nats([nats_server.url]) as nc:
        await connected(nc)
        js = JetStream(nc)
        await js.ensure_stream("S3", ["s3.>"], max_bytes=1 << 20, max_age_s=60)
        info = await js.ensure_pull_consumer("S3", "C3", ack_wait_s=1.0, max_ack_pending=100)
        assert info["config"]["ack_wait"] == 10**9 and info["config"]["durable_name"] == "C3"
        same = await js.ensure_pull_consumer("S3", "C3", ack_wait_s=1.0, max_ack_pending=100)
        assert same["created"] == info["created"]
        for i in range(4):
            await js.publish(f"s3.{i}", b"p%d" % i, timeout_s=2)
        with trio.fail_after(3):
            got = await js.fetch("S3", "C3", 10, expires_s=0.5)
        assert [(m.subject, m.payload, m.stream_seq, m.consumer_seq, m.delivered) for m in got] == [
            (f"s3.{i}", b"p%d" % i, i + 1, i + 1, 1) for i in range(4)]
        assert [m.pending for m in got] == [3, 2, 1, 0]
        assert got[0].stream == "S3" and got[0].consumer == "C3" and got[0].timestamp_ns > 0
        assert got[0].ack() and got[1].ack() and got[2].in_progress()
        await nc.flush(2)
        began = trio.current_time()
        assert await js.fetch("S3", "C3", 10, expires_s=0.3) == []  # nothing until ack_wait
        assert trio.current_time() - began >= 0.25
        await trio.sleep(1.1)
        with trio.fail_after(3):
            again = await js.fetch("S3", "C3", 10, expires_s=0.5)
        assert sorted((m.payload, m.stream_seq, m.delivered) for m in again) == [(b"p2", 3, 2), (b"p3", 4, 2)]
        assert all(m.ack() for m in again)
        await nc.flush(2)
        # the limits change: the consumer is updated in place
        updated = await js.ensure_pull_consumer("S3", "C3", ack_wait_s=2.0, max_ack_pending=50)
        assert updated["config"]["ack_wait"] == 2 * 10**9 and updated["config"]["max_ack_pending"] == 50
        assert nc.pending_requests == 0 and len(nc._subs) == 1  # the request inbox only


async def test_fetch_on_empty_returns_nothing_after_expires(nats_server: NatsServer) -> None:
    async with open_nats([nats_server.url]) as nc:
        await connected(nc)
        js = JetStream(nc)
        await js.ensure_stream("S4", ["s4.>"], max_bytes=1 << 20, max_age_s=60)
        await js.ensure_pull_consumer("S4", "C4", ack_wait_s=5, max_ack_pending=10, filter_subject="s4.x")
        await js.publish("s4.y", b"filtered out", timeout_s=2)
        began = trio.current_time()
        assert await js.fetch("S4", "C4", 5, expires_s=0.4) == []
        assert 0.35 <= trio.current_time() - began < 1.0
        with pytest.raises(JetStreamError) as caught:
            await js.fetch("S4", "NO-SUCH-CONSUMER", 1, expires_s=0.3)
        assert caught.value.code in (404, 409, 503)  # 503: no consumer answers the pull
        with trio.move_on_after(0.1):  # cancelled mid-fetch: no subscription left behind
            await js.fetch("S4", "C4", 5, expires_s=2)
        assert len(nc._subs) == 1


async def test_fetch_after_server_restart(nats_server: NatsServer) -> None:
    async with fast_nats([nats_server.url]) as nc:
        await connected(nc)
        js = JetStream(nc)
        await js.ensure_stream("S5", ["s5.>"], max_bytes=1 << 20, max_age_s=600)
        await js.ensure_pull_consumer("S5", "C5", ack_wait_s=5, max_ack_pending=10)
        for i in range(3):
            await js.publish("s5.t", b"%d" % i, timeout_s=2, msg_id=f"m{i}")
        first = await js.fetch("S5", "C5", 1, expires_s=0.5)
        assert [m.payload for m in first] == [b"0"] and first[0].ack()
        await nc.flush(2)
        await trio.to_thread.run_sync(nats_server.restart)
        await until(lambda: nc.status.reconnects == 1 and nc.connected)
        with trio.fail_after(5):
            while True:  # JetStream may answer a moment after the client port does
                try:
                    got = await js.fetch("S5", "C5", 10, expires_s=0.5)
                except JetStreamError:
                    await trio.sleep(0.1)
                    continue
                if got:
                    break
        assert [(m.payload, m.stream_seq) for m in got] == [(b"1", 2), (b"2", 3)]
        assert (await js.publish("s5.t", b"2", timeout_s=2, msg_id="m2")).duplicate  # the window survived


async def test_a_pull_ended_by_server_shutdown_keeps_what_it_received(nats_server: NatsServer) -> None:
    """nats-server ends a pull in progress with 409 Server Shutdown when it stops: the
    messages that came before are delivered on the server's side, so fetch returns them
    (dropped, they would wait ack_wait_s for redelivery; seen with a 30 s ack wait)."""
    async with fast_nats([nats_server.url]) as nc:
        await connected(nc)
        js = JetStream(nc)
        await js.ensure_stream("S6", ["s6.>"], max_bytes=1 << 20, max_age_s=600)
        await js.ensure_pull_consumer("S6", "C6", ack_wait_s=30, max_ack_pending=100)
        for i in range(5):
            await js.publish("s6.t", b"%d" % i, timeout_s=2)
        got: list[Any] = []
        before = nc.status.received

        async def pull() -> None:
            got.extend(await js.fetch("S6", "C6", 10, expires_s=5))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pull)
            await until(lambda: nc.status.received >= before + 5)  # the five came; the pull waits on
            await trio.to_thread.run_sync(nats_server.stop)
        assert [m.payload for m in got] == [b"%d" % i for i in range(5)]
