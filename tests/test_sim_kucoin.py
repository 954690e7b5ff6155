"""The simulated KuCoin classic spot venue, checked against the codec and the connector.

REST discovery and the bullet-public bootstrap are parsed with the codec's own
helpers; a raw WebSocket client sends the codec's messages and parses every reply with
``KucoinCodec.parse``; the real connector runs against the simulator with its token
bootstrap. Loopback, real time, short configured intervals, each test under an
absolute ``trio.fail_after``.
"""

from __future__ import annotations

import functools
import gc
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import trio
import wsproto
import wsproto.events
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from actors.channels import ConflatingChannel, DropChannel
from actors.config import ConnectorConfig, VenueConfig
from actors.connector import ConnectionPlan, ConnectionStatus, QuoteSinks, run_connector, websocket_connector
from actors.discovery import fetch_bootstrap
from actors.records import Quote, Side, SymbolInfo, Trade, VenueDown
from actors.venues import kucoin
from actors.venues.base import FrameError, FrameKind, Parsed, symbol_map
from actors.venues.kucoin import KucoinCodec
from app.sim import (
    DEFAULT_SYMBOLS,
    Market,
    MarketParams,
    SimEndpoints,
    SimVenueConfig,
    SimVenueControl,
    SymbolSpec,
    run_market,
    run_sim_venue,
)
from app.sim.kucoin import KucoinWire
from app.sim.wire import ConnectionView, Disconnect

TIMEOUT = 5.0
FRAMES = Path(__file__).parent / "data" / "frames" / "kucoin"
QUIET = MarketParams(max_update_rate=0.0, max_trade_rate=0.0, arb_probability=0.0)
LIVELY = MarketParams(max_update_rate=40.0, max_trade_rate=40.0, arb_probability=0.0)
#: listed on KuCoin but not trading: discovery must leave it out
HALTED = SymbolSpec("LUNA", "USDT", 0.5, 5e6, venues=frozenset({"kucoin"}),
                    halted=frozenset({"kucoin"}))
SYMBOLS = (*DEFAULT_SYMBOLS, HALTED)
NATIVES = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
RECV_TS = 1_700_000_000_000_000_000


def fixture(name: str) -> Any:
    return orjson.loads((FRAMES / name).read_bytes())


# -- helpers ---------------------------------------------------------------------------


async def start(
    nursery: trio.Nursery,
    *,
    params: MarketParams | None = None,
    ping_interval_ms: int = 18_000,
    ping_timeout_ms: int = 10_000,
    **overrides: Any,
) -> tuple[SimEndpoints, SimVenueControl, Market]:
    market = Market(SYMBOLS, ("kucoin",), seed=5, params=params)
    await nursery.start(functools.partial(run_market, market, interval_s=0.01))
    wire = KucoinWire(market, ping_interval_ms=ping_interval_ms, ping_timeout_ms=ping_timeout_ms)
    config = replace(wire.config, publish_interval_s=0.005, **overrides)
    control = SimVenueControl()
    endpoints = await nursery.start(functools.partial(
        run_sim_venue, "kucoin", market, control=control, config=config, wire=wire))
    return endpoints, control, market


async def discover(endpoints: SimEndpoints) -> dict[str, SymbolInfo]:
    async with httpx.AsyncClient(base_url=endpoints.rest_url) as http:
        body = (await http.get("/api/v2/symbols")).content
    return symbol_map(kucoin.parse_instruments(body, {}))


async def bullet_url(endpoints: SimEndpoints, connect_id: str = "c1") -> str:
    async with httpx.AsyncClient() as http:
        boot = await fetch_bootstrap(http, endpoints.rest_url, kucoin)
    # fetch_bootstrap makes up its own connect id: use ours, to check the welcome
    url, _, _ = boot.ws_url.partition("&connectId=")
    return f"{url}&connectId={connect_id}"


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[WebSocketConnection]:
    """trio-websocket's client over a TCP stream the test owns and always closes."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream, trio.open_nursery() as nursery:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        ws = await wrap_client_stream(nursery, stream, f"{parts.hostname}:{parts.port}", target)
        try:
            yield ws
        finally:
            with trio.move_on_after(1.0, shield=True):
                await ws.aclose()
            nursery.cancel_scope.cancel()


async def handshake(url: str) -> tuple[int, Any]:
    """A raw handshake: the HTTP status of the answer (101 if accepted) and its JSON body."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    status, body = 0, b""
    async with await trio.open_tcp_stream(parts.hostname, parts.port) as stream:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        await stream.send_all(conn.send(wsproto.events.Request(host=parts.netloc, target=target)))
        while True:
            for event in conn.events():
                if isinstance(event, wsproto.events.AcceptConnection):
                    return 101, None
                if isinstance(event, wsproto.events.RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        return status, None
                elif isinstance(event, wsproto.events.RejectData):
                    body += bytes(event.data)
                    if event.body_finished:
                        return status, orjson.loads(body)
            data = await stream.receive_some(65536)
            if not data:
                return status, None
            conn.receive_data(data)


async def parse_next(ws: WebSocketConnection, codec: KucoinCodec) -> tuple[Any, Parsed]:
    frame = await ws.get_message()
    assert isinstance(frame, str)  # KuCoin speaks JSON text only
    return orjson.loads(frame), codec.parse(frame, RECV_TS)


async def until_closed(ws: WebSocketConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    return closed.value.reason.code, closed.value.reason.reason or ""


# -- REST ------------------------------------------------------------------------------


async def test_rest_discovery_and_bootstrap_parse_with_the_codec(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control, market = await start(nursery)
        async with httpx.AsyncClient(base_url=endpoints.rest_url) as http:
            symbols = await http.get("/api/v2/symbols")
            usds = await http.get("/api/v2/symbols", params={"market": "BTC"})
            tickers = await http.get("/api/v1/market/allTickers")
            bullet = await http.post("/api/v1/bullet-public")
            wrong_method = await http.get("/api/v1/bullet-public")
            unknown = await http.get("/api/v1/no/such/path")
            timestamp = (await http.get("/api/v1/timestamp")).json()
    infos = kucoin.parse_instruments(symbols.content, {})
    natives = {i.native for i in infos}
    listed = {f"{s.base}-{s.quote}" for s in market.listed("kucoin")}
    assert "LUNA-USDT" in {item["symbol"] for item in symbols.json()["data"]}  # listed...
    assert natives == listed - {"LUNA-USDT"} and "KCS-USDT" in natives  # ...but not trading
    assert all(i.symbol == f"{i.base}/{i.quote}" for i in infos)
    doc_item = fixture("symbols.json")["data"][0]
    for item in symbols.json()["data"]:
        assert item.keys() == doc_item.keys()
        assert all(isinstance(item[k], type(v)) for k, v in doc_item.items() if v is not None)
    assert {item["symbol"] for item in usds.json()["data"]} == {"ETH-BTC"}

    volumes = kucoin.parse_volumes(tickers.content)
    assert volumes.keys() == listed and volumes["LUNA-USDT"] == 0.0
    assert volumes["BTC-USDT"] == pytest.approx(market.quote_volume_24h("kucoin", "BTC/USDT"))
    doc_ticker = fixture("all_tickers.json")["data"]["ticker"][0]
    btc = next(t for t in tickers.json()["data"]["ticker"] if t["symbol"] == "BTC-USDT")
    assert btc.keys() == doc_ticker.keys() and all(isinstance(v, str) for v in btc.values())
    assert not btc["buy"].endswith("0") or "." not in btc["buy"]  # no trailing zeros

    boot = kucoin.parse_bootstrap(bullet.content, "abc")
    data = bullet.json()["data"]
    assert data.keys() == fixture("bullet_public.json")["data"].keys()
    assert data["instanceServers"][0]["endpoint"] == endpoints.ws_url
    assert data["instanceServers"][0]["encrypt"] is False
    assert boot.ws_url == f"{endpoints.ws_url}?token={data['token']}&connectId=abc"
    assert (boot.ping_interval_s, boot.ping_timeout_s) == (18.0, 10.0)
    assert (wrong_method.status_code, unknown.status_code) == (405, 404)
    assert timestamp == {"code": "200000", "data": timestamp["data"]}
    assert control.statistics().rest_requests == 7


def test_tokens_expire_after_a_day_and_are_bounded() -> None:
    market = Market(SYMBOLS, ("kucoin",), seed=1, params=QUIET)
    wire = KucoinWire(market, max_tokens=3)
    endpoints = SimEndpoints("http://127.0.0.1:1", "ws://127.0.0.1:2/")

    def token() -> str:
        body = wire.rest("POST", "/api/v1/bullet-public", {}, market, endpoints).body
        return str(orjson.loads(body)["data"]["token"])

    def opens(tok: str) -> int:
        view = ConnectionView("sim-kucoin-1", query={"token": tok, "connectId": "x"})
        reject = wire.on_open(view, market.snapshot).reject
        return 101 if reject is None else reject.status

    tokens = [token() for _ in range(5)]
    assert len(set(tokens)) == 5 and wire.tokens_held == 3
    assert [opens(t) for t in tokens] == [401, 401, 101, 101, 101]
    market.step(24 * 3600.0 + 1.0)
    assert opens(tokens[-1]) == 401  # expired
    fresh = token()
    assert wire.tokens_held == 1 and opens(fresh) == 101  # expired ones are forgotten
    assert KucoinWire(market).config == SimVenueConfig.for_venue("kucoin")
    assert KucoinWire.config.client_ping_timeout_s == 28.0 and KucoinWire.config.max_topics == 400
    assert wire.notice(ConnectionView("c"), 0) is None  # KuCoin documents no notice
    for why in Disconnect:
        assert wire.closing(ConnectionView("c"), why, 0).code == 1001


# -- WebSocket protocol ----------------------------------------------------------------


async def test_handshake_needs_a_valid_token_and_a_connect_id(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control, market = await start(nursery, params=QUIET)
        url = await bullet_url(endpoints, "my-conn-1")
        token_only = url.partition("&connectId=")[0]
        answers = [
            await handshake(endpoints.ws_url),
            await handshake(endpoints.ws_url + "?token=forged&connectId=x"),
            await handshake(token_only),
        ]
        async with connect(url) as ws:
            welcome, parsed = await parse_next(ws, KucoinCodec({}))
        market.step(24 * 3600.0 + 1.0)  # the token expires
        expired = await handshake(url)
    assert answers == [
        (401, {"id": "", "type": "error", "code": 401, "data": "token is invalid"}),
        (401, {"id": "x", "type": "error", "code": 401, "data": "token is invalid"}),
        (400, {"id": "", "type": "error", "code": 400, "data": "connectId is invalid"}),
    ]
    assert expired == (401, {"id": "my-conn-1", "type": "error", "code": 401, "data": "token is expired"})
    assert welcome == {"id": "my-conn-1", "type": "welcome"}
    assert parsed.kind is FrameKind.INFO
    stats = control.statistics()
    assert (stats.handshakes_rejected, stats.connections_accepted) == (4, 1)


async def test_subscribe_acks_then_level1_and_match_frames_parse_as_data(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control, _ = await start(nursery, params=LIVELY)
        symbols = await discover(endpoints)
        codec = KucoinCodec(symbols)
        requests = codec.subscribe_messages(NATIVES, trades=True)
        acks: list[str] = []
        quotes: dict[str, Quote] = {}
        trades: list[Trade] = []
        level1 = match = None
        async with connect(await bullet_url(endpoints)) as ws:
            _, welcome = await parse_next(ws, codec)
            for request in requests:
                await ws.send_message(request)
            while len(acks) < len(requests) or len(quotes) < 3 or len(trades) < 3:
                raw, parsed = await parse_next(ws, codec)
                if parsed.kind is FrameKind.ACK:
                    acks.append(parsed.detail)
                    continue
                assert parsed.kind is FrameKind.DATA, raw
                for record in parsed.records:
                    if isinstance(record, Quote):
                        quotes[record.symbol] = record
                        level1 = raw
                    else:
                        assert isinstance(record, Trade)
                        trades.append(record)
                        match = raw
            subscriptions = control.subscriptions()
    assert welcome.kind is FrameKind.INFO
    assert acks == [orjson.loads(r)["id"] for r in requests] == ["1", "2"]
    assert set(quotes) == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
    assert all(0 < q.bid < q.ask and q.bid_size > 0 and q.seq == 0 for q in quotes.values())
    assert {t.symbol for t in trades} <= set(quotes)
    assert all(t.side in (Side.BUY, Side.SELL) and t.price > 0 and t.trade_id for t in trades)
    assert subscriptions == {1: frozenset(f"{c}:{n}" for n in NATIVES
                                          for c in ("/spotMarket/level1", "/market/match"))}
    # the documented shapes: key sets, strings where KuCoin sends strings
    doc_level1, doc_match = fixture("level1.json"), fixture("match.json")
    assert level1 is not None and match is not None
    assert level1.keys() == doc_level1.keys() and level1["data"].keys() == doc_level1["data"].keys()
    assert all(isinstance(v, str) for v in (*level1["data"]["asks"], *level1["data"]["bids"]))
    assert isinstance(level1["data"]["timestamp"], int) and level1["subject"] == "level1"
    assert match.keys() == doc_match.keys() and match["data"].keys() == doc_match["data"].keys()
    assert all(isinstance(v, str) for v in match["data"].values())
    assert match["subject"] == "trade.l3match" and len(match["data"]["time"]) == 19


async def test_pings_get_pongs_and_a_silent_client_is_closed(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control, _ = await start(nursery, params=QUIET, ping_interval_ms=100,
                                            ping_timeout_ms=150)
        codec = KucoinCodec({})
        async with connect(await bullet_url(endpoints)) as pinger, \
                connect(await bullet_url(endpoints)) as mute:
            await pinger.get_message()  # welcome
            start_at = trio.current_time()
            pongs = []
            with trio.move_on_after(0.6):
                while True:
                    ping = codec.ping_message(0)
                    assert ping is not None
                    await pinger.send_message(ping)
                    _, parsed = await parse_next(pinger, codec)
                    pongs.append((orjson.loads(ping)["id"], parsed))
                    await trio.sleep(0.1)
            assert pinger.closed is None
            await mute.get_message()  # welcome
            code, reason = await until_closed(mute)
            elapsed = trio.current_time() - start_at
    assert len(pongs) >= 4
    assert all(p.kind is FrameKind.PONG and p.detail == sent for sent, p in pongs)
    assert code == 1008 and "ping" in reason and 0.25 <= elapsed < 1.5
    stats = control.statistics()
    assert stats.closed_no_ping == 1 and stats.app_pings == len(pongs)


async def test_refusals_are_error_frames_and_subscribe_nothing(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control, _ = await start(nursery, params=QUIET, max_topics=4, max_incoming_per_s=None)
        codec = KucoinCodec(await discover(endpoints))

        async def request(ws: WebSocketConnection, body: dict[str, Any] | str) -> tuple[Any, Parsed]:
            await ws.send_message(body if isinstance(body, str) else orjson.dumps(body).decode())
            return await parse_next(ws, codec)

        def sub(request_id: Any, topic: str, **extra: Any) -> dict[str, Any]:
            return {"id": request_id, "type": "subscribe", "topic": topic, "privateChannel": False,
                    "response": True, **extra}

        many = ",".join(f"S{i}-USDT" for i in range(101))
        async with connect(await bullet_url(endpoints, "cid")) as ws:
            await ws.get_message()  # welcome
            replies = [
                await request(ws, sub(1, f"/spotMarket/level1:{many}")),
                await request(ws, sub(2, "/spotMarket/level1:BTC-USDT,NOPE-USDT")),
                await request(ws, sub(3, "/market/match: BTC-USDT")),
                await request(ws, sub(4, "/market/ticker:BTC-USDT")),
                await request(ws, sub(5, "/market/match:BTC-USDT", privateChannel=True)),
                await request(ws, "not json"),
            ]
            nothing = control.subscriptions()
            # the codec's own requests: level1 for three symbols fits, match then exceeds 4
            level1, matches = codec.subscribe_messages(NATIVES, trades=True)
            ok = await request(ws, level1)
            over = await request(ws, matches)
            control.reject_subscriptions(True)
            rejected = await request(ws, sub(7, "/market/match:BTC-USDT"))
            control.reject_subscriptions(False)
            duplicate = await request(ws, sub(8, "/spotMarket/level1:BTC-USDT"))
            await ws.send_message(orjson.dumps(sub(9, "/market/match:KCS-USDT", response=False)).decode())
            await ws.send_message('{"id":"p","type":"ping"}')
            after_silent_ack = await parse_next(ws, codec)
            unsubscribe = await request(ws, {"id": 10, "type": "unsubscribe",
                                             "topic": "/spotMarket/level1:BTC-USDT,ETH-USDT",
                                             "privateChannel": False, "response": True})
            left = control.subscriptions()
    errors = [raw for raw, _ in (*replies, over, rejected)]
    assert all(p.kind is FrameKind.ERROR for _, p in (*replies, over, rejected))
    assert [(e["id"], e["code"]) for e in errors] == [
        ("1", 509), ("2", 404), ("3", 400), ("4", 404), ("5", 400), ("cid", 400), ("2", 509), ("7", 400)]
    assert errors[0]["data"] == "exceed max subscription count limitation of 100 per time"
    assert errors[1]["data"] == "topic /spotMarket/level1:NOPE-USDT is not found"
    assert errors[2]["data"] == "topic /market/match: BTC-USDT is invalid"
    assert errors[6]["data"] == "exceed max subscription count limitation of 400 per session"
    assert all(e.keys() == {"id", "type", "code", "data"} for e in errors)
    assert nothing == {1: frozenset()}
    assert ok[1].kind is FrameKind.ACK and duplicate[1].kind is FrameKind.ACK
    assert after_silent_ack[0] == {"id": "p", "type": "pong"}  # response false: no ack
    assert unsubscribe[0] == {"id": "10", "type": "ack"}
    assert left == {1: frozenset({"/spotMarket/level1:SOL-USDT", "/market/match:KCS-USDT"})}
    stats = control.statistics()
    assert (stats.refused_over_cap, stats.refused_by_control) == (1, 1)
    assert stats.duplicate_subscriptions == 1 and stats.topics_unsubscribed == 2


async def test_malformed_frames_raise_frame_error_and_the_feed_goes_on(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control, _ = await start(nursery, params=QUIET)
        codec = KucoinCodec(await discover(endpoints))
        async with connect(await bullet_url(endpoints)) as ws:
            await ws.get_message()  # welcome
            assert control.send_malformed(6) == 1
            bad = [await ws.get_message() for _ in range(6)]
            await ws.send_message('{"id":"after","type":"ping"}')
            _, pong = await parse_next(ws, codec)
    assert len(set(bad)) == 6 and all(isinstance(b, str) for b in bad)
    for frame in bad:
        with pytest.raises(FrameError):
            codec.parse(frame, RECV_TS)
    assert pong.kind is FrameKind.PONG and pong.detail == "after"


async def test_forced_cut_and_maintenance_close_with_1001_and_no_notice(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control, _ = await start(nursery, params=QUIET)
        aged, aged_control, _ = await start(nursery, params=QUIET, max_connection_age_s=0.2)
        async with connect(await bullet_url(endpoints)) as ws:
            await ws.get_message()  # welcome
            assert control.force_cut() == 1
            cut = await until_closed(ws)
        async with connect(await bullet_url(endpoints)) as ws:
            await ws.get_message()
            assert control.announce_shutdown(grace_s=0.1) == 1
            maintenance = await until_closed(ws)  # nothing before the close
        async with connect(await bullet_url(aged)) as ws:
            await ws.get_message()
            start_at = trio.current_time()
            age = await until_closed(ws)
            elapsed = trio.current_time() - start_at
    assert cut == (1001, "token expired: connections last 24 hours")
    assert maintenance == (1001, "server maintenance")
    assert age[0] == 1001 and 0.1 <= elapsed < 1.0
    stats = control.statistics()
    assert (stats.closed_age_limit, stats.closed_maintenance, stats.notices_sent) == (1, 1, 0)
    assert aged_control.statistics().closed_age_limit == 1


# -- the real connector ----------------------------------------------------------------


async def test_connector_bootstraps_heartbeats_and_recovers_from_drops_cuts_and_maintenance(
    nursery: trio.Nursery,
) -> None:
    """Through the token bootstrap: quotes flow, its pings (every 0.15 s, from the
    bullet answer) keep the connection past the 0.8 s deadline, and a drop, a forced cut
    and an unannounced maintenance close are each followed by a fresh bootstrap and one
    clean resubscription."""
    with trio.fail_after(8):
        endpoints, control, _ = await start(nursery, params=LIVELY, ping_interval_ms=150,
                                            ping_timeout_ms=650)
        symbols = await discover(endpoints)
        inbox = ConflatingChannel[tuple[str, str], Quote | VenueDown]("s", 1000)
        sinks = QuoteSinks([inbox], DropChannel[object]("rec", 10_000))
        status = ConnectionStatus("kucoin", 0)
        plan = ConnectionPlan("kucoin", 0, endpoints.ws_url, NATIVES, KucoinCodec(symbols), True)
        async with httpx.AsyncClient() as http, trio.open_nursery() as inner:
            await inner.start(functools.partial(
                run_connector, plan, sinks, status,
                venue_config=VenueConfig(rest_url="x", ws_url="x", silence_reconnect_s=2.0),
                config=ConnectorConfig(backoff_initial_s=0.05, backoff_max_s=0.2),
                connect=websocket_connector(message_queue_size=64, connect_timeout_s=5),
                rng=random.Random(2),
                bootstrap=functools.partial(fetch_bootstrap, http, endpoints.rest_url, kucoin)))
            faults = (lambda: None, control.drop_connections, control.force_cut,
                      lambda: control.announce_shutdown(grace_s=0.05))
            for round_, fault in enumerate(faults, start=1):
                fault()
                await control.wait_for(lambda s, r=round_: s.connections_accepted == r
                                       and s.topics_subscribed >= r * 6)
                seen = status.quotes
                while status.quotes <= seen + 3:
                    await trio.sleep(0.02)
                if round_ == 1:
                    await trio.sleep(1.0)  # beyond the 0.8 s ping deadline
                    assert control.statistics().connections_accepted == 1
            received = inbox.receive_batch_nowait()
            inner.cancel_scope.cancel()
    gc.collect()  # a leaked socket would surface here as a ResourceWarning (an error in this suite)
    stats = control.statistics()
    assert stats.connections_accepted == 4 and stats.handshakes_rejected == 0
    assert stats.duplicate_subscriptions == 0 and stats.rejected_topics == 0
    assert (stats.closed_no_ping, stats.closed_age_limit, stats.closed_maintenance) == (0, 1, 1)
    assert stats.app_pings >= 5 and stats.rest_requests >= 5  # discovery + one bullet per connect
    assert status.reconnects == 3 and status.venue_errors == 0 and status.bad_frames == 0
    assert status.pongs >= 5 and status.acks == 4 * 2
    per_connection: dict[int, list[str]] = {}
    for event in control.subscription_log():
        assert event.action == "subscribe"
        per_connection.setdefault(event.connection, []).append(event.topic)
    expected = sorted(f"{c}:{n}" for n in NATIVES for c in ("/spotMarket/level1", "/market/match"))
    assert [sorted(topics) for topics in per_connection.values()] == [expected] * 4
    assert {key[1] for key, value in received.items() if isinstance(value, Quote)} <= {
        "BTC/USDT", "ETH/USDT", "SOL/USDT"}
