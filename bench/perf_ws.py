"""Issue 8: receiving 100-byte frames on one WebSocket client connection, per library.

    python -m bench.perf_ws [--frames 200000 --size 100 --repeats 2
                             --results bench/results/perf-ws.json]

A loopback server (its own process, ``python -m bench.perf_ws serve``) accepts a
WebSocket handshake (wsproto) and then writes ``--frames`` text frames of ``--size``
bytes as fast as the client reads them, from a prebuilt buffer, so the client is the
bottleneck; then it closes. Each client runs in a fresh process
(``python -m bench.perf_ws client --lib LIB``) and receives every frame one message at a
time, as a connector does, counting its own CPU seconds (user + system, all threads)
and wall seconds from the first message to the last:

* ``trio-websocket``: what ``actors/connector.py`` uses (``message_queue_size`` 256, as
  ``channels.socket_queue``);
* ``websockets-trio``: websockets' trio client (``websockets.trio.client``, shipped
  since websockets 15.x; here the installed version);
* ``websockets-asyncio``: websockets' asyncio client on the standard event loop;
* ``websockets-asyncio-uvloop``: the same on uvloop (what cryptofeed runs by default);
* ``trio-bulk-reference``: not a library, a reference point: a trio TCP stream read 64 KiB
  at a time, its unmasked, unfragmented server frames split in a plain Python loop and
  decoded to ``str``, every frame of a read handed over at once. It handles nothing
  else (no ping, close, fragments or extensions), so it bounds what a receive path on
  trio could cost when it stops paying a task switch and a parser object per message.

Libraries run in turn, ``--repeats`` times each (interleaved). The figure is frames per
CPU-second (the machine is shared, so wall rates vary with its load); frames per
wall-second is reported beside it. This measures and reports; the connector keeps its
library unless a decision is made elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULT = BENCH / "results" / "perf-ws.json"
LIBS = ("trio-websocket", "websockets-trio", "websockets-asyncio", "websockets-asyncio-uvloop",
        "trio-bulk-reference")


def cpu_now() -> float:
    """CPU seconds of this process, user + system, every thread (ns resolution)."""
    return time.process_time()


# -- the server --------------------------------------------------------------------------


def build_blob(size: int, count: int) -> bytes:
    """``count`` unmasked text frames of ``size`` payload bytes each."""
    frames = []
    for i in range(count):
        body = (b'{"u":%d,"s":"BTCUSDT","b":"67000.1","a":"67000.2","B":"1.5","A":"2.5"}' % i)
        payload = (body + b" " * size)[:size]
        header = b"\x81" + bytes([size]) if size < 126 else b"\x81\x7e" + size.to_bytes(2, "big")
        frames.append(header + payload)
    return b"".join(frames)


async def serve_client(stream: Any, frames: int, blob: bytes, per_blob: int) -> None:
    import trio
    import wsproto
    import wsproto.events as ev

    conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    accepted = False
    while not accepted:
        data = await stream.receive_some(65536)
        if not data:
            return
        conn.receive_data(data)
        for event in conn.events():
            if isinstance(event, ev.Request):
                await stream.send_all(conn.send(ev.AcceptConnection()))
                accepted = True
    try:
        left = frames
        while left >= per_blob:
            await stream.send_all(blob)
            left -= per_blob
        if left:
            await stream.send_all(blob[: left * (len(blob) // per_blob)])
        # the client closes once it has every frame: answer its close frame, hang up
        if await stream.receive_some(65536):
            await stream.send_all(b"\x88\x02\x03\xe8")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


async def serve_main(frames: int, size: int) -> None:
    import functools

    import trio

    per_blob = 1000
    blob = build_blob(size, per_blob)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(
            trio.serve_tcp, functools.partial(serve_client, frames=frames, blob=blob, per_blob=per_blob),
            0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        sys.stdout.write(json.dumps({"url": f"ws://127.0.0.1:{port}/"}) + "\n")
        sys.stdout.flush()


# -- the clients -------------------------------------------------------------------------


def _result(frames: int, t0: tuple[float, float], t1: tuple[float, float]) -> dict[str, float]:
    return {"frames": frames, "wall_s": t1[0] - t0[0], "cpu_s": t1[1] - t0[1]}


async def _timed(recv: Callable[[], Awaitable[object]], frames: int) -> dict[str, float]:
    """The first frame untimed (the connection settles), then ``frames - 1`` timed."""
    await recv()
    t0 = (time.perf_counter(), cpu_now())
    for _ in range(frames - 1):
        await recv()
    t1 = (time.perf_counter(), cpu_now())
    return _result(frames - 1, t0, t1)


async def client_trio_websocket(url: str, frames: int) -> dict[str, float]:
    import trio_websocket

    async with trio_websocket.open_websocket_url(url, message_queue_size=256) as ws:
        return await _timed(ws.get_message, frames)


async def client_websockets_trio(url: str, frames: int) -> dict[str, float]:
    from websockets.trio.client import connect

    async with connect(url, compression=None) as ws:
        return await _timed(ws.recv, frames)


async def client_websockets_asyncio(url: str, frames: int) -> dict[str, float]:
    from websockets.asyncio.client import connect

    async with connect(url, compression=None) as ws:
        return await _timed(ws.recv, frames)


async def client_trio_bulk(url: str, frames: int) -> dict[str, float]:
    import base64
    from urllib.parse import urlsplit

    import trio

    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    key = base64.b64encode(os.urandom(16))
    await stream.send_all(b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                          % ((parts.path or "/").encode(), parts.hostname.encode(), parts.port, key))
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive_some(65536)
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {head[:100]!r}")
    received = 0
    t0 = (0.0, 0.0)
    while received < frames:
        if not buffer or received == 0:
            buffer += await stream.receive_some(65536)
        batch: list[str] = []
        pos, end = 0, len(buffer)
        while pos + 2 <= end:
            n = buffer[pos + 1] & 0x7F
            start = pos + 2
            if n == 126:
                if pos + 4 > end:
                    break
                n = int.from_bytes(buffer[pos + 2:pos + 4], "big")
                start = pos + 4
            elif n == 127:
                if pos + 10 > end:
                    break
                n = int.from_bytes(buffer[pos + 2:pos + 10], "big")
                start = pos + 10
            if start + n > end:
                break
            batch.append(buffer[start:start + n].decode())
            pos = start + n
        buffer = buffer[pos:]
        if batch and received == 0:
            t0 = (time.perf_counter(), cpu_now())
            received = 1
            batch = batch[1:]
        received += len(batch)
        if received < frames:
            buffer += await stream.receive_some(65536)
    t1 = (time.perf_counter(), cpu_now())
    await stream.aclose()
    return _result(received - 1, t0, t1)


def client_main(lib: str, url: str, frames: int) -> dict[str, Any]:
    if lib == "trio-websocket":
        import trio

        result = trio.run(client_trio_websocket, url, frames)
    elif lib == "websockets-trio":
        import trio

        result = trio.run(client_websockets_trio, url, frames)
    elif lib == "trio-bulk-reference":
        import trio

        result = trio.run(client_trio_bulk, url, frames)
    elif lib == "websockets-asyncio":
        import asyncio

        result = asyncio.run(client_websockets_asyncio(url, frames))
    elif lib == "websockets-asyncio-uvloop":
        import uvloop

        result = uvloop.run(client_websockets_asyncio(url, frames))
    else:
        raise ValueError(f"unknown library {lib!r}")
    return {"lib": lib, **result}


# -- the parent ----------------------------------------------------------------------------


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("trio", "trio-websocket", "websockets", "wsproto", "uvloop")}


def run(out: Path, *, frames: int = 200_000, size: int = 100, repeats: int = 2,
        libs: tuple[str, ...] = LIBS) -> dict[str, Any]:
    """Measure every library in ``libs``; ``out`` is the working directory (logs)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (out / "perf-ws-server.log").open("wb") as server_log:
        server = subprocess.Popen([sys.executable, "-m", "bench.perf_ws", "serve", "--frames", str(frames),
                                   "--size", str(size)], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=server_log, env=env)
        try:
            assert server.stdout is not None
            url = json.loads(server.stdout.readline())["url"]
            runs: list[dict[str, Any]] = []
            for r in range(repeats):
                for lib in (libs if r % 2 == 0 else libs[::-1]):
                    proc = subprocess.run([sys.executable, "-m", "bench.perf_ws", "client", "--lib", lib,
                                           "--url", url, "--frames", str(frames)], cwd=ROOT, env=env,
                                          capture_output=True, text=True, timeout=120, check=False)
                    if proc.returncode != 0:
                        raise RuntimeError(f"{lib} client failed: {proc.stderr[-2000:]}")
                    doc = json.loads(proc.stdout.strip().splitlines()[-1])
                    doc["frames_per_cpu_s"] = doc["frames"] / doc["cpu_s"] if doc["cpu_s"] else 0.0
                    doc["frames_per_wall_s"] = doc["frames"] / doc["wall_s"] if doc["wall_s"] else 0.0
                    runs.append(doc)
                    print(f"  {lib:26s} {doc['frames_per_cpu_s']:10,.0f} frames/CPU-s "
                          f"{doc['frames_per_wall_s']:10,.0f} frames/s", flush=True)
        finally:
            server.kill()
            server.wait(timeout=10)
    summary: dict[str, dict[str, float]] = {}
    for lib in libs:
        mine = [x for x in runs if x["lib"] == lib]
        f = sum(x["frames"] for x in mine)
        c = sum(x["cpu_s"] for x in mine)
        w = sum(x["wall_s"] for x in mine)
        summary[lib] = {"frames": f, "cpu_s": round(c, 3), "wall_s": round(w, 3),
                        "frames_per_cpu_s": f / c if c else 0.0, "frames_per_wall_s": f / w if w else 0.0}
    base = summary[libs[0]]["frames_per_cpu_s"]
    for lib in libs:
        summary[lib]["vs_" + libs[0]] = summary[lib]["frames_per_cpu_s"] / base if base else 0.0
    return {"name": "perf-ws", "title": f"Receiving {size}-byte frames on one WebSocket client connection",
            "params": {"frames": frames, "size": size, "repeats": repeats}, "versions": versions(),
            "figures": summary, "runs": runs}


def table(result: dict[str, Any]) -> str:
    lines = [result["title"], f"{'library':26s} {'frames/CPU-s':>13s} {'frames/s':>10s} {'vs trio-websocket':>18s}"]
    for lib, s in result["figures"].items():
        lines.append(f"{lib:26s} {s['frames_per_cpu_s']:13,.0f} {s['frames_per_wall_s']:10,.0f} "
                     f"{s['vs_trio-websocket']:17.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        import trio

        p = argparse.ArgumentParser(prog="python -m bench.perf_ws serve")
        p.add_argument("--frames", type=int, required=True)
        p.add_argument("--size", type=int, default=100)
        a = p.parse_args(argv[1:])
        trio.run(serve_main, a.frames, a.size)
        return 0
    if argv and argv[0] == "client":
        p = argparse.ArgumentParser(prog="python -m bench.perf_ws client")
        p.add_argument("--lib", choices=LIBS, required=True)
        p.add_argument("--url", required=True)
        p.add_argument("--frames", type=int, required=True)
        a = p.parse_args(argv[1:])
        print(json.dumps(client_main(a.lib, a.url, a.frames)))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.perf_ws", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=BENCH / "out")
    parser.add_argument("--results", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    from bench.harness import save_perf

    result = run(args.work, frames=args.frames, size=args.size, repeats=args.repeats)
    save_perf(result, "bench.perf_ws", argv, args.results, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
