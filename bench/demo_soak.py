"""Run `spreadwatch demo` for a while and report throughput and memory from /health.

    python bench/demo_soak.py --minutes 5 [--clients 20] [--port 8765]

Starts the real program in a subprocess (simulated venues on loopback), optionally
connects feed clients that subscribe to opportunities and a few symbols, samples
/health every --every seconds, prints one line per sample, and writes
bench/out/demo_soak.md with the figures. Bounded in time; stops by itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import msgpack
import trio
import trio_websocket

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def feed_clients(port: int, n: int, seconds: float, counts: list[int], closes: dict[int, int]) -> None:
    async def client(i: int) -> None:
        url = f"ws://127.0.0.1:{port}/feed"
        with trio.move_on_after(seconds):
            try:
                await session(url, i)
            except trio_websocket.ConnectionClosed as exc:  # the server stops at the end
                closes[exc.reason.code] = closes.get(exc.reason.code, 0) + 1

    async def session(url: str, i: int) -> None:
        async with trio_websocket.open_websocket_url(url, message_queue_size=256) as ws:
            for topic in ("opportunities", "venues", "quotes:BTC/USDT", "spreads:ETH/USDT"):
                await ws.send_message(msgpack.packb({"op": "subscribe", "topic": topic}))
            while True:
                frame = msgpack.unpackb(await ws.get_message())
                counts[i] += 1
                if frame.get("kind") == "ping":
                    await ws.send_message(msgpack.packb({"op": "pong", "ts": frame["data"]["ts"]}))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(client, i)

    trio.run(main)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    port = args.port or free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="sw-soak-"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "demo", "--port", str(port), "--data-dir", str(data_dir),
         "--log-level", "WARNING"],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    samples: list[dict[str, float]] = []
    counts = [0] * args.clients
    closes: dict[int, int] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(2.0)  # let the clients see their close frames
        else:
            print("demo did not become healthy within 30 s", file=sys.stderr)
            return 1
        total = args.minutes * 60
        if args.clients:
            threading.Thread(target=feed_clients, args=(port, args.clients, total + 5, counts, closes),
                             daemon=True).start()
        start = time.monotonic()
        print(f"{'t_s':>6} {'quotes/s':>9} {'rows/s':>8} {'rss_mb':>7} {'budget':>7} {'tasks':>6} {'lag_p99':>8} {'sessions':>8}")
        prev = None
        while time.monotonic() - start < total:
            time.sleep(args.every)
            doc = httpx.get(base + "/health", timeout=5).json()
            now = time.monotonic() - start
            quotes = sum(v["quotes"] for v in doc["venues"].values())
            rows = sum((doc["recorder"] or {}).get("rows_written", {}).values())
            if prev is not None:
                dt = now - prev["t"]
                sample = {
                    "t": now, "quotes_s": (quotes - prev["quotes"]) / dt, "rows_s": (rows - prev["rows"]) / dt,
                    "rss_mb": doc["process"]["rss_mb"], "budget_mb": doc["process"]["budget_mb"],
                    "tasks": doc["process"]["tasks"], "lag_p99_ms": doc["process"]["loop_lag"]["p99_ms"],
                    "sessions": doc["sessions"]["count"],
                }
                samples.append(sample)
                print(f"{now:6.0f} {sample['quotes_s']:9.0f} {sample['rows_s']:8.0f} {sample['rss_mb']:7.1f} "
                      f"{sample['budget_mb']:7.0f} {sample['tasks']:6.0f} {sample['lag_p99_ms']:8.2f} {sample['sessions']:8.0f}")
            prev = {"t": now, "quotes": quotes, "rows": rows}
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(timeout=15)
        exit_s = time.monotonic() - sent
        time.sleep(2.0)  # let the clients see their close frames
    finally:
        if proc.poll() is None:
            proc.kill()
    if not samples:
        return 1
    half = samples[len(samples) // 2:]
    mean = lambda key, rows=samples: sum(s[key] for s in rows) / len(rows)  # noqa: E731
    lines = [
        "# demo soak",
        "",
        f"- command: `python bench/demo_soak.py --minutes {args.minutes:g} --clients {args.clients}`",
        f"- duration: {samples[-1]['t']:.0f} s, {len(samples)} samples every {args.every:g} s",
        f"- quotes through the pipeline: {mean('quotes_s'):.0f}/s (mean), recorder rows written: {mean('rows_s'):.0f}/s",
        f"- RSS: first {samples[0]['rss_mb']:.1f} MB, last {samples[-1]['rss_mb']:.1f} MB, "
        f"max {max(s['rss_mb'] for s in samples):.1f} MB (budget {samples[-1]['budget_mb']:.0f} MB)",
        f"- RSS slope over the second half: {(half[-1]['rss_mb'] - half[0]['rss_mb']) / max(1.0, half[-1]['t'] - half[0]['t']) * 60:.2f} MB/min",
        f"- tasks: first {samples[0]['tasks']:.0f}, last {samples[-1]['tasks']:.0f}; loop lag p99 (last): {samples[-1]['lag_p99_ms']:.2f} ms",
        f"- feed clients: {args.clients}, frames received: {sum(counts)}, close codes at shutdown: {closes}",
        f"- SIGTERM -> exit code {code} in {exit_s:.2f} s",
    ]
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_soak.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
