"""The real program, as a user runs it: `spreadwatch demo`, /health, SIGTERM, Parquet."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import msgpack
import pyarrow.dataset as ds
import trio
import trio_websocket

from tests.processes import free_port, start_cli, wait_for_health

ROOT = Path(__file__).resolve().parent.parent


async def _venues_quoting(port: int, symbol: str, within_s: float) -> set[str]:
    seen: set[str] = set()
    with trio.move_on_after(within_s):
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/feed") as ws:
            await ws.send_message(msgpack.packb({"op": "subscribe", "topic": f"quotes:{symbol}"}))
            while len(seen) < 8:
                frame = msgpack.unpackb(await ws.get_message())
                if frame["topic"] == f"quotes:{symbol}":
                    seen.update(v for v, q in frame["data"]["venues"].items() if not q["stale"])
    return seen


def test_demo_serves_health_and_exits_0_on_sigterm_with_readable_parquet(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    proc = start_cli("demo", "--port", str(port), "--data-dir", str(data))
    try:
        # "ok": every actor running, every venue connected
        health = wait_for_health(port, lambda doc: doc["status"] == "ok")
        assert health is not None, "/health not ok within 30 s"
        running = {a["name"] for a in health["actors"] if a["state"] == "running"}
        venues = set(health["venues"])
        assert {"binance", "bybit"} <= venues
        assert {f"venue-{v}" for v in venues} <= running
        assert all(v["connected"] for v in health["venues"].values())
        # issue 3: all eight simulated venues connected, each with a message rate above zero
        assert venues == {"binance", "bybit", "okx", "mexc", "gate", "kucoin", "bitget", "htx"}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            if all(v["rate"] > 0 for v in health["venues"].values()):
                break
            time.sleep(0.5)
        assert all(v["rate"] > 0 for v in health["venues"].values()), health["venues"]
        # ... and quotes from all eight on the feed
        seen = trio.run(_venues_quoting, port, "BTC/USDT", 15.0)
        assert seen == venues
        time.sleep(1)  # let some quotes be recorded
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output[-3000:]
    assert took < 5.0, f"exit took {took:.2f}s"
    assert "Traceback" not in output, output[-3000:]
    quotes = ds.dataset(data / "quotes", format="parquet", partitioning="hive").to_table()
    assert set(quotes.column("venue").to_pylist()) == venues
    assert not [p for p in data.rglob("*") if p.name.endswith(".tmp")]
