"""The simulated OKX v5 venue against spreadwatch's OKX codec and connector.

REST discovery parsed by the codec's discovery helpers; a raw trio-websocket client
sending the codec's own requests and parsing every reply with ``OkxCodec.parse``; pure
checks of the per-connection limits; and the real connector surviving drops, a 64008
notice (rotation) and a venue-side cut. Loopback, real time, short configured timings,
each test under ``trio.fail_after``.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from actors.channels import ConflatingChannel, DropChannel
from actors.config import ConnectorConfig, VenueConfig
from actors.connector import ConnectionPlan, ConnectionStatus, QuoteSinks, run_connector, websocket_connector
from actors.discovery import fetch_venue
from actors.records import Quote, SymbolInfo, Trade, VenueDown
from actors.venues import okx as okx_codec
from actors.venues.base import FrameError, FrameKind, Parsed, symbol_map
from actors.venues.okx import OkxCodec
from app.sim import DEFAULT_SYMBOLS, Market, MarketParams, SimEndpoints, SimVenueConfig, SimVenueControl
from app.sim.market import SymbolSpec
from app.sim.okx import MAX_ARGS_BYTES, MAX_REQUESTS_PER_HOUR, OkxWire
from app.sim.server import run_sim_venues
from app.sim.wire import ConnectionView
from tests.test_sim import connect, start_venue

TIMEOUT = 5.0
FRAMES = Path(__file__).parent / "data" / "frames" / "okx"
#: a symbol OKX lists but does not trade: discovery must leave it out
HALTED = SymbolSpec("LUNA", "USDT", 0.5, 5e6, venues=frozenset({"okx"}), halted=frozenset({"okx"}))
SYMBOLS = (*DEFAULT_SYMBOLS, HALTED)
BUSY = MarketParams(max_trade_rate=40.0)
NATIVES = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
CONN_ID = re.compile(r"[0-9a-f]{8}")


def documented_keys(name: str) -> set[str]:
    """Keys of the first ``data`` entry of a stored documented frame."""
    return set(orjson.loads((FRAMES / name).read_bytes())["data"][0])


def okx_market(params: MarketParams | None = None) -> Market:
    return Market(SYMBOLS, ("okx",), seed=3, params=params)


async def start_okx(nursery: trio.Nursery, params: MarketParams | None = None,
                    **overrides: Any) -> tuple[SimEndpoints, SimVenueControl]:
    return await start_venue(nursery, "okx", market=okx_market(params), **overrides)


async def discover(endpoints: SimEndpoints) -> list[SymbolInfo]:
    async with httpx.AsyncClient() as client:
        return await fetch_venue(client, "okx", VenueConfig(rest_url=endpoints.rest_url), {})


async def parsed(ws: WebSocketConnection, codec: OkxCodec) -> tuple[Any, Parsed]:
    frame = await ws.get_message()
    assert isinstance(frame, str)  # OKX sends text only
    return frame, codec.parse(frame, 1)


async def next_kind(ws: WebSocketConnection, codec: OkxCodec, kind: FrameKind) -> tuple[Any, Parsed]:
    while True:
        frame, result = await parsed(ws, codec)
        if result.kind is kind:
            return frame, result


async def closed_with(ws: WebSocketConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    return closed.value.reason.code, closed.value.reason.reason or ""


# -- REST ------------------------------------------------------------------------------


async def test_rest_discovery_parses_with_the_codec_and_leaves_out_suspended(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_okx(nursery)
        infos = await discover(endpoints)
        async with httpx.AsyncClient(base_url=endpoints.rest_url) as client:
            instruments = (await client.get("/api/v5/public/instruments",
                                            params={"instType": "SPOT"})).json()
            tickers = (await client.get("/api/v5/market/tickers", params={"instType": "SPOT"})).json()
            no_type = await client.get("/api/v5/market/tickers")
            bad_type = await client.get("/api/v5/public/instruments", params={"instType": "SPOTS"})
            one = (await client.get("/api/v5/market/ticker", params={"instId": "ETH-BTC"})).json()
            posted = await client.post("/api/v5/market/tickers", params={"instType": "SPOT"})
    by_native = {i.native: i for i in infos}
    assert "LUNA-USDT" not in by_native
    btc = by_native["BTC-USDT"]
    assert (btc.symbol, btc.quote_volume_24h > 1e8) == ("BTC/USDT", True)
    assert by_native["ETH-BTC"].symbol == "ETH/BTC" and "OKB-USDT" in by_native
    assert "MNT-USDT" not in by_native  # listed on Bybit only
    raw = {i["instId"]: i for i in instruments["data"]}
    assert (instruments["code"], instruments["msg"]) == ("0", "")
    assert raw["LUNA-USDT"]["state"] == "suspend" and raw["BTC-USDT"]["state"] == "live"
    assert set(raw["BTC-USDT"]) == documented_keys("instruments_spot.json")
    assert (raw["BTC-USDT"]["tickSz"], raw["BTC-USDT"]["lotSz"]) == ("0.01", "0.00001")
    assert len(infos) == len(raw) - 1
    for ticker in tickers["data"]:
        assert set(ticker) == documented_keys("tickers_spot.json")
        assert all(isinstance(v, str) for v in ticker.values())
    assert {t["instId"] for t in tickers["data"]} == set(by_native)
    assert okx_codec.parse_volumes(orjson.dumps(one)) == {"ETH-BTC": pytest.approx(
        by_native["ETH-BTC"].quote_volume_24h)}
    for response in (no_type, bad_type):
        assert response.status_code == 400
        with pytest.raises(FrameError):
            okx_codec.parse_instruments(response.content, {})
    assert bad_type.json() == {"code": "51000", "msg": "Parameter instType error", "data": []}
    assert posted.status_code == 405
    assert control.statistics().rest_requests == 8


# -- WebSocket, a raw client speaking the codec's messages -----------------------------


async def test_codec_subscribe_is_acked_per_arg_then_documented_books_and_trades(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_okx(nursery, BUSY)
        codec = OkxCodec(symbol_map(await discover(endpoints)))
        async with connect(endpoints.ws_url + codec.ws_path(NATIVES[:2])) as ws:
            [request] = codec.subscribe_messages(NATIVES[:2], trades=True)
            await ws.send_message(request)
            acks = [await parsed(ws, codec) for _ in range(4)]
            books: dict[str, list[Any]] = {}
            trades: list[Any] = []
            while len(books) < 2 or min(len(b) for b in books.values()) < 2 or len(trades) < 2:
                frame, result = await parsed(ws, codec)
                assert result.kind is FrameKind.DATA, (frame, result)
                body = orjson.loads(frame)
                if body["arg"]["channel"] == "bbo-tbt":
                    books.setdefault(body["arg"]["instId"], []).append((body, result))
                else:
                    trades.append((body, result))
            await ws.send_message(codec.ping_message(0))
            pong_frame, pong = await next_kind(ws, codec, FrameKind.PONG)
            [unsubscribe] = codec.unsubscribe_messages(["ETH-USDT"], trades=False)
            await ws.send_message(unsubscribe)
            _, unsubscribed = await next_kind(ws, codec, FrameKind.ACK)
            subscriptions = control.subscriptions()
    for frame, result in acks:
        body = orjson.loads(frame)
        assert result.kind is FrameKind.ACK and body["event"] == "subscribe"
        assert body.keys() == {"id", "event", "arg", "connId"} and body["id"] == "1"
        assert CONN_ID.fullmatch(body["connId"])
    assert [orjson.loads(f)["arg"] for f, _ in acks] == orjson.loads(request)["args"]
    for inst_id, pushes in books.items():
        symbol = inst_id.replace("-", "/")
        seq_ids = []
        for body, result in pushes:
            [data] = body["data"]
            assert body.keys() == {"arg", "data"} and data.keys() == {"asks", "bids", "ts", "seqId"}
            for level in (*data["asks"], *data["bids"]):
                assert len(level) == 4 and all(isinstance(v, str) for v in level) and level[2] == "0"
            assert isinstance(data["seqId"], int) and data["ts"].isdigit()
            [quote] = result.records
            assert isinstance(quote, Quote) and quote.symbol == symbol and quote.seq == data["seqId"]
            assert 0 < quote.bid < quote.ask
            seq_ids.append(data["seqId"])
        assert seq_ids == sorted(seq_ids)
    assert set(books) == {"BTC-USDT", "ETH-USDT"}
    for body, result in trades:
        [data] = body["data"]
        assert data.keys() == documented_keys("trades.json") and isinstance(data["seqId"], int)
        [trade] = result.records
        assert isinstance(trade, Trade) and trade.symbol in ("BTC/USDT", "ETH/USDT")
        assert trade.trade_id == data["tradeId"]
    assert (pong_frame, pong.kind) == ("pong", FrameKind.PONG)
    assert unsubscribed.detail == "unsubscribe bbo-tbt ETH-USDT (id '2')"
    assert subscriptions == {1: frozenset({"bbo-tbt:BTC-USDT", "trades:BTC-USDT", "trades:ETH-USDT"})}
    stats = control.statistics()
    assert (stats.topics_subscribed, stats.topics_unsubscribed, stats.app_pings) == (4, 1, 1)


async def test_venue_errors_parse_as_errors(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_okx(nursery, max_topics=3)
        codec = OkxCodec(symbol_map(await discover(endpoints)))
        async with connect(endpoints.ws_url) as ws:
            mixed = {"id": "m1", "op": "subscribe", "args": [
                {"channel": "bbo-tbt", "instId": "BTC-USDT"},
                {"channel": "bbo-tbt", "instId": "NOPE-USDT"},
                {"channel": "tickers", "instId": "ETH-USDT"},
            ]}
            await ws.send_message(orjson.dumps(mixed).decode())
            replies = [await parsed(ws, codec) for _ in range(3)]
            for bad in ("{not json", '{"id":7,"op":"subscribe","args":[]}',
                        '{"op":"login","args":[]}'):
                await ws.send_message(bad)
                replies.append(await next_kind(ws, codec, FrameKind.ERROR))
            # the second subscribe would take the connection to 5 topics, over the cap of 3
            await ws.send_message(codec.subscribe_messages(["ETH-USDT", "SOL-USDT"], trades=True)[0])
            replies.append(await next_kind(ws, codec, FrameKind.ERROR))
            control.reject_subscriptions()
            await ws.send_message(codec.subscribe_messages(["SOL-USDT"], trades=True)[0])
            replies.append(await next_kind(ws, codec, FrameKind.ERROR))
            replies.append(await next_kind(ws, codec, FrameKind.ERROR))
            subscriptions = control.subscriptions()
    kinds = [r.kind for _, r in replies]
    assert kinds[0] is FrameKind.ACK and kinds[1:] == [FrameKind.ERROR] * 8
    bodies = [orjson.loads(f) for f, _ in replies]
    assert bodies[1] == {
        "id": "m1", "event": "error", "code": "60018",
        "msg": "Wrong URL or channel:bbo-tbt,instId:NOPE-USDT doesn't exist. Please use the "
               "correct URL, channel and parameters referring to API document.",
        "connId": bodies[0]["connId"],
    }
    assert bodies[2]["code"] == "60018" and "channel:tickers" in bodies[2]["msg"]
    assert [b["code"] for b in bodies[3:]] == ["60012", "60012", "60019", "60013", "60018", "60018"]
    assert bodies[3]["msg"] == "Invalid request: {not json" and "id" not in bodies[3]
    assert "code '60013'" in replies[6][1].detail and bodies[6]["id"] == "1"
    assert [b["msg"].split("instId:")[1].split(" ")[0] for b in bodies[7:]] == ["SOL-USDT"] * 2
    assert subscriptions == {1: frozenset({"bbo-tbt:BTC-USDT"})}
    stats = control.statistics()
    assert (stats.refused_over_cap, stats.refused_by_control, stats.topics_subscribed) == (1, 1, 1)
    assert stats.rejected_topics == 2 + 4 + 2


async def test_heartbeat_and_subscribe_deadlines(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_okx(nursery, client_ping_timeout_s=0.3,
                                             subscribe_timeout_s=0.2)
        codec = OkxCodec({})

        async def keep_pinging(ws: WebSocketConnection) -> None:
            while True:
                await ws.send_message(codec.ping_message(0))
                await next_kind(ws, codec, FrameKind.PONG)
                await trio.sleep(0.1)

        async with connect(endpoints.ws_url) as never_subscribes:
            code, reason = await closed_with(never_subscribes)
        assert (code, "subscription" in reason) == (1008, True)
        async with connect(endpoints.ws_url) as pinger, connect(endpoints.ws_url) as mute, \
                trio.open_nursery() as inner:
            for ws in (pinger, mute):
                await ws.send_message('{"op":"subscribe","args":[{"channel":"trades","instId":"CKB-USDT"}]}')
                assert codec.parse(await ws.get_message(), 1).kind is FrameKind.ACK
            inner.start_soon(keep_pinging, pinger)
            start = trio.current_time()
            code, reason = await closed_with(mute)
            elapsed = trio.current_time() - start
            await trio.sleep(0.3)
            assert pinger.closed is None
            inner.cancel_scope.cancel()
    assert (code, "ping" in reason) == (1008, True) and 0.2 <= elapsed < 1.0
    stats = control.statistics()
    assert (stats.closed_no_subscription, stats.closed_no_ping, stats.pings_sent) == (1, 1, 0)
    assert stats.app_pings >= 4


async def test_notice_malformed_frames_and_the_forced_cut(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_okx(nursery)
        codec = OkxCodec(symbol_map(await discover(endpoints)))
        async with connect(endpoints.ws_url) as ws:
            await ws.send_message(codec.subscribe_messages(["BTC-USDT"], trades=False)[0])
            await next_kind(ws, codec, FrameKind.DATA)
            assert control.send_malformed(3) == 1
            errors: list[str] = []
            while len(errors) < 3:
                frame = await ws.get_message()
                try:
                    codec.parse(frame, 1)
                except FrameError as exc:
                    errors.append(str(exc))
            assert control.announce_shutdown(grace_s=0.2) == 1
            notice_frame, notice = await next_kind(ws, codec, FrameKind.NOTICE)
            code, reason = await closed_with(ws)
        async with connect(endpoints.ws_url) as ws:
            await ws.send_message(codec.subscribe_messages(["BTC-USDT"], trades=False)[0])
            await next_kind(ws, codec, FrameKind.DATA)
            assert control.force_cut() == 1
            cut_code, cut_reason = await closed_with(ws)
    assert errors[0].startswith("invalid JSON")
    assert errors[1:] == ["missing field 'asks'", "missing field 'px'"]
    body = orjson.loads(notice_frame)
    assert body.keys() == {"event", "code", "msg", "connId"} and body["code"] == "64008"
    assert notice.detail.startswith("code '64008'")
    assert (code, reason) == (1001, "service upgrade")
    assert (cut_code, cut_reason) == (4004, "No data received in 30s.")
    stats = control.statistics()
    assert (stats.notices_sent, stats.closed_maintenance, stats.closed_age_limit) == (1, 1, 1)


# -- per-connection limits, checked on the wire module itself ------------------------


def _subscribe(args: Sequence[tuple[str, str]], request_id: str) -> str:
    return orjson.dumps({"id": request_id, "op": "subscribe", "args": [
        {"channel": channel, "instId": inst_id} for channel, inst_id in args]}).decode()


def test_args_over_64_kb_on_one_connection_are_refused() -> None:
    market = Market.synthetic(1000, ("okx",), seed=1)
    wire = OkxWire(market)
    conn = ConnectionView("sim-okx-1")
    snapshot = market.snapshot
    args = [(channel, f"{s.base}-{s.quote}") for s in market.listed("okx")
            for channel in ("bbo-tbt", "trades")]
    codec = OkxCodec({})
    refused = None
    for start in range(0, len(args), 100):
        reply = wire.on_message(conn, _subscribe(args[start:start + 100], str(start)), snapshot)
        if reply.rejected:
            refused = reply
            break
        assert len(reply.subscribed) == 100
    assert refused is not None and len(refused.rejected) == 100 and not refused.subscribed
    [frame] = refused.frames
    assert codec.parse(frame, 1).kind is FrameKind.ERROR and orjson.loads(frame)["code"] == "60013"
    assert wire.args_bytes(conn.topics) <= MAX_ARGS_BYTES < wire.args_bytes(
        conn.topics | {f"{c}:{i}" for c, i in args[len(conn.topics):len(conn.topics) + 100]})


def test_480_requests_an_hour_per_connection() -> None:
    market = okx_market()
    wire = OkxWire(market)
    conn, other = ConnectionView("sim-okx-1"), ConnectionView("sim-okx-2")
    snapshot = market.snapshot
    for n in range(MAX_REQUESTS_PER_HOUR):
        reply = wire.on_message(conn, _subscribe([("trades", "BTC-USDT")], str(n)), snapshot)
        assert OkxCodec({}).parse(reply.frames[0], 1).kind is FrameKind.ACK
    over = wire.on_message(conn, _subscribe([("trades", "ETH-USDT")], "x"), snapshot)
    assert orjson.loads(over.frames[0])["code"] == "60014" and over.rejected == ("trades:ETH-USDT",)
    assert wire.on_message(conn, "ping", snapshot).frames == ("pong",)  # pings do not count
    assert not wire.on_message(other, _subscribe([("trades", "ETH-USDT")], "y"), snapshot).rejected
    later = dataclasses.replace(snapshot, now_ms=snapshot.now_ms + 3_600_001)
    again = wire.on_message(conn, _subscribe([("trades", "ETH-USDT")], "z"), later)
    assert again.subscribed == ("trades:ETH-USDT",)


def test_documented_timings() -> None:
    config = SimVenueConfig.for_venue("okx")
    assert (config.subscribe_timeout_s, config.client_ping_timeout_s) == (30.0, 30.0)
    assert (config.shutdown_grace_s, config.resend_unchanged_s) == (30.0, 60.0)
    assert config.ping_interval_s is None and config.app_ping_interval_s is None
    assert config.max_connection_age_s is None and config.max_topics is None
    # the codec pings well inside OKX's 30 s
    assert OkxCodec.ping_interval is not None and OkxCodec.ping_interval < config.client_ping_timeout_s


# -- the real connector ----------------------------------------------------------------


async def test_connector_resubscribes_rotates_on_notice_and_reconnects_after_a_cut() -> None:
    control = SimVenueControl()
    inbox = ConflatingChannel[tuple[str, str], Quote | VenueDown]("s", 1000)
    sinks = QuoteSinks([inbox], DropChannel[object]("rec", 10_000))
    status = ConnectionStatus("okx", 0)
    config = dataclasses.replace(OkxWire.config, client_ping_timeout_s=1.0, shutdown_grace_s=5.0)
    vconf = VenueConfig(rest_url="x", ws_url="x", silence_reconnect_s=2.0)
    cconf = ConnectorConfig(backoff_initial_s=0.05, backoff_max_s=0.2)

    async def quotes_flow() -> None:
        inbox.receive_batch_nowait()
        while not inbox.receive_batch_nowait():
            await trio.sleep(0.02)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(functools.partial(
                run_sim_venues, ("okx",), seed=1, controls={"okx": control}, configs={"okx": config}))
            ep = endpoints["okx"]
            codec = OkxCodec(symbol_map(await discover(ep)))
            codec.ping_interval = 0.3  # the sim's watchdog is 1 s here, OKX's 30 s
            plan = ConnectionPlan("okx", 0, ep.ws_url + codec.ws_path(NATIVES), NATIVES, codec, True)
            await nursery.start(functools.partial(
                run_connector, plan, sinks, status, venue_config=vconf, config=cconf,
                connect=websocket_connector(message_queue_size=64, connect_timeout_s=5),
                rng=random.Random(2)))
            per_connection = 2 * len(NATIVES)
            await control.wait_for(lambda s: s.topics_subscribed == per_connection)
            await quotes_flow()
            await trio.sleep(1.6)  # well past the heartbeat watchdog: the codec's pings keep it open
            control.drop_connections()
            await control.wait_for(lambda s: s.topics_subscribed == 2 * per_connection)
            await quotes_flow()
            assert control.announce_shutdown() == 1  # 64008, 5 s grace: the connector rotates
            await control.wait_for(lambda s: s.topics_subscribed == 3 * per_connection
                                   and s.connections_open == 1)
            await quotes_flow()
            assert control.force_cut() == 1  # 4004
            await control.wait_for(lambda s: s.topics_subscribed == 4 * per_connection)
            await quotes_flow()
            nursery.cancel_scope.cancel()
    gc.collect()  # a leaked socket would surface here as a ResourceWarning
    stats = control.statistics()
    assert stats.connections_accepted == 4
    assert (stats.duplicate_subscriptions, stats.rejected_topics, stats.closed_no_ping) == (0, 0, 0)
    assert (stats.notices_sent, stats.closed_maintenance, stats.closed_age_limit) == (1, 0, 1)
    assert stats.app_pings >= 3
    assert (status.rotations, status.notices, status.reconnects) == (1, 1, 2)
    assert (status.venue_errors, status.bad_frames, status.unknown_symbols) == (0, 0, 0)
    topics: dict[int, list[str]] = {}
    for event in control.subscription_log():
        assert event.action == "subscribe"
        topics.setdefault(event.connection, []).append(event.topic)
    expected = sorted(f"{channel}:{n}" for n in NATIVES for channel in ("bbo-tbt", "trades"))
    assert [sorted(t) for t in topics.values()] == [expected] * 4
