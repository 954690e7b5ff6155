"""Issue 4 on the running pipeline: simulated venues on loopback with frequent arbitrage
windows, the whole pipeline and the web server; a feed client sees opportunities open
with venues, net spread and duration, and close when a leg's venue is disconnected."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import msgpack
import pyarrow.dataset as ds
import pytest
import trio
import trio_websocket

from app.sim.market import DEFAULT_SYMBOLS, MarketParams
from app.sim.server import SimVenueControl
from tests.pipeline import sim_pipeline

ROOT = Path(__file__).resolve().parent.parent
VENUES = ("binance", "bybit", "okx")


async def _frames(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    while True:
        frame = msgpack.unpackb(await ws.get_message())
        if frame["kind"] == "ping":
            await ws.send_message(msgpack.packb({"op": "pong", "ts": frame["data"]["ts"]}))
            continue
        return frame  # type: ignore[no-any-return]


async def test_opportunities_open_on_the_feed_and_close_when_a_leg_venue_drops(tmp_path: Path) -> None:
    controls = {name: SimVenueControl() for name in VENUES}
    params = MarketParams(arb_probability=0.05, arb_duration_s=(20.0, 30.0), arb_gross_bps=(60.0, 90.0))
    # (trio-websocket's client close waits for the server's answer while its one-message
    # queue is full, so a failing assertion would wait for the deadline to end the test)
    with trio.fail_after(45):
        async with sim_pipeline(
                tmp_path, VENUES, seed=11, params=params, controls=controls, symbols=DEFAULT_SYMBOLS[:4],
                configure=lambda c: dataclasses.replace(
                    c, spreads=dataclasses.replace(c.spreads, threshold_bps=5.0, min_duration_s=0.5))) as runtime:
            url = runtime.urls[0].replace("http://", "ws://") + "/feed"
            async with trio_websocket.open_websocket_url(url) as ws:
                await ws.send_message(msgpack.packb({"op": "subscribe", "topic": "opportunities"}))
                opened: dict[str, Any] | None = None
                listed = False
                with trio.fail_after(30):
                    while opened is None or not listed:
                        frame = await _frames(ws)
                        data = frame["data"]
                        if frame["kind"] == "events" and opened is None:
                            opened = next((e for e in data["events"] if e["state"] == "open"), None)
                        elif frame["kind"] == "delta" and opened is not None:
                            listed = any((r["symbol"], r["buy_venue"], r["sell_venue"]) ==
                                         (opened["symbol"], opened["buy_venue"], opened["sell_venue"])
                                         and r["duration_ms"] > 0 for r in data["open"])
                assert opened["buy_venue"] in VENUES and opened["sell_venue"] in VENUES
                assert opened["net_bps"] > 5.0 and opened["peak_net_bps"] >= opened["net_bps"]
                assert opened["buy_size"] > 0 and opened["sell_size"] > 0

                # the sell leg's venue goes down: its opportunities close at once, not after
                # the staleness limit
                leg = opened["sell_venue"]
                controls[leg].refuse_connections()
                dropped_at_ms = time.time_ns() // 1_000_000
                controls[leg].drop_connections()
                with trio.fail_after(5):
                    while True:
                        frame = await _frames(ws)
                        if frame["kind"] != "events":
                            continue
                        data = next((e for e in frame["data"]["events"] if e["state"] == "close"
                                     and (e["symbol"], e["buy_venue"], e["sell_venue"]) ==
                                     (opened["symbol"], opened["buy_venue"], leg)), None)
                        if data is not None:
                            break
                assert data["closed_at"] >= dropped_at_ms - 50
                assert data["duration_ms"] == data["closed_at"] - data["opened_at"] > 0
                assert data["peak_net_bps"] >= data["mean_net_bps"] > 5.0
                # every shard has taken the disconnect within a tick or two: then no open
                # window uses the venue (each shard publishes its list on its own tick)
                with trio.fail_after(2):
                    while True:
                        frame = await _frames(ws)
                        if frame["kind"] == "delta" and all(
                                leg not in (r["buy_venue"], r["sell_venue"]) for r in frame["data"]["open"]):
                            break
    # the same events are recorded
    rows = ds.dataset(tmp_path / "opportunities", format="parquet", partitioning="hive").to_table().to_pylist()
    key = (opened["symbol"], opened["buy_venue"], opened["sell_venue"])
    mine = [r for r in rows if (r["symbol"], r["buy_venue"], r["sell_venue"]) == key
            and r["opened_at"] // 1_000_000 == opened["opened_at"]]
    assert sorted(r["state"] for r in mine) == ["close", "open"]
    [close] = [r for r in mine if r["state"] == "close"]
    assert close["closed_at"] // 1_000_000 == data["closed_at"]
    assert close["mean_net_bps"] == pytest.approx(data["mean_net_bps"], abs=1e-3)
