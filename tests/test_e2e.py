"""End to end, in one process: simulated Binance and Bybit on loopback, the whole pipeline,
the web server; a feed client receives quotes of both venues, Parquet holds them, and a
graceful shutdown leaves no task behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import msgpack
import pyarrow.dataset as ds
import trio
import trio_websocket

from actors.monitor import task_count
from tests.pipeline import sim_pipeline

ROOT = Path(__file__).resolve().parent.parent


async def _get_json(client: httpx.AsyncClient, url: str) -> tuple[int, Any]:
    response = await client.get(url)
    return response.status_code, response.json()


async def test_demo_pipeline_end_to_end(tmp_path: Path) -> None:
    baseline = task_count()
    with trio.fail_after(60):
        async with sim_pipeline(tmp_path, ("binance", "bybit"), seed=3) as runtime:
            base = runtime.urls[0]
            async with httpx.AsyncClient() as client:
                with trio.fail_after(15):
                    while True:
                        status, health = await _get_json(client, base + "/health")
                        if status == 200:
                            break
                        await trio.sleep(0.2)
                assert health["status"] == "ok"
                assert {a["name"] for a in health["actors"]} >= {"venue-binance", "venue-bybit", "hub", "recorder",
                                                                 "heap-trimmer"}
                assert health["process"]["heap_trim"]["interval_s"] == 30.0
                assert all(v["connected"] for v in health["venues"].values())
                assert set(health["venues"]) == {"binance", "bybit"}

                seen: dict[str, dict[str, Any]] = {}
                async with trio_websocket.open_websocket_url(base.replace("http", "ws") + "/feed") as ws:
                    await ws.send_message(msgpack.packb({"op": "subscribe", "topic": "quotes:BTC/USDT"}))
                    await ws.send_message(msgpack.packb({"op": "subscribe", "topic": "opportunities"}))
                    with trio.fail_after(10):
                        while set(seen) != {"binance", "bybit"}:
                            frame = msgpack.unpackb(await ws.get_message())
                            assert {"topic", "kind", "ts", "seq", "data"} <= set(frame)
                            if frame["topic"] == "quotes:BTC/USDT":
                                seen.update(frame["data"]["venues"])
                    # hypercorn #225: an upgrade request with trailing bytes must not take the server,
                    # or this open session, down
                    host, port = base.removeprefix("http://").split(":")
                    stream = await trio.open_tcp_stream(host, int(port))
                    async with stream:
                        await stream.send_all(
                            b"GET /feed HTTP/1.1\r\nHost: " + host.encode() + b"\r\nUpgrade: websocket\r\n"
                            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            b"Sec-WebSocket-Version: 13\r\n\r\n\x81\x85garbage-after-the-handshake")
                        with trio.move_on_after(1):
                            await stream.receive_some(4096)
                    status, health = await _get_json(client, base + "/health")
                    assert status == 200 and health["sessions"]["count"] == 1
                    assert health["sessions"]["broken_connections"] + health["sessions"]["bad_handshakes"] >= 1
                    before = trio.current_time()
                    while trio.current_time() - before < 0.6:  # the open session still gets frames
                        assert msgpack.unpackb(await ws.get_message())["topic"]

                for venue, quote in seen.items():
                    assert 0 < quote["bid"] <= quote["ask"], venue
                # the client left: its session ends and the hub forgets it (hypercorn #210)
                with trio.fail_after(3):
                    while (await _get_json(client, base + "/health"))[1]["sessions"]["count"]:
                        await trio.sleep(0.1)

                status, window = await _get_json(client, base + "/api/window?symbol=BTC/USDT")
                assert status == 200 and set(window["venues"]) == {"binance", "bybit"}
                status, _ = await _get_json(client, base + "/api/window?symbol=../../etc")
                assert status == 400
                status, stats = await _get_json(client, base + "/api/stats?symbol=BTC/USDT")
                assert status == 200 and {(p["buy_venue"], p["sell_venue"]) for p in stats["pairs"]} == {
                    ("binance", "bybit"), ("bybit", "binance")}
                assert stats["best"]["samples"] >= 1
                status, _ = await _get_json(client, base + "/api/stats?symbol=NOPE/USDT")
                assert status == 404
                metrics = (await client.get(base + "/metrics")).text
                assert 'spreadwatch_venue_connected{venue="bybit"} 1.0' in metrics
    assert task_count() == baseline

    quotes = ds.dataset(tmp_path / "quotes", format="parquet", partitioning="hive").to_table()
    assert set(quotes.column("venue").to_pylist()) == {"binance", "bybit"}
    assert quotes.num_rows > 50
    assert not list(tmp_path.rglob("*.tmp"))
