"""The simulated Bitget v2 venue against Bitget's own codec, and the real connector.

REST discovery, subscribe acks, ``books1`` and ``trade`` pushes, the text
``ping``/``pong``, error events, malformed frames and the venue's closes, each on real
loopback sockets with short timeouts under an absolute ``trio.fail_after``.
"""

from __future__ import annotations

import functools
import gc
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection, wrap_client_stream

from actors.channels import ConflatingChannel, DropChannel
from actors.config import ConnectorConfig, VenueConfig
from actors.connector import ConnectionPlan, ConnectionStatus, QuoteSinks, run_connector, websocket_connector
from actors.records import Quote, SymbolInfo, Trade, VenueDown
from actors.venues import bitget
from actors.venues.base import FrameError, FrameKind, Parsed, symbol_map
from actors.venues.bitget import BitgetCodec
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
    run_sim_venues,
)
from app.sim.bitget import BitgetWire

TIMEOUT = 5.0
FRAMES = Path(__file__).parent / "data" / "frames" / "bitget"
NATIVES = ("BTCUSDT", "ETHUSDT", "BGBUSDT")
#: listed on Bitget but not trading there: discovery must drop it
HALTED = SymbolSpec("LUNA", "USDT", 0.5, 0.0, venues=frozenset({"bitget"}),
                    halted=frozenset({"bitget"}))
BOOK_KEYS = {"action", "arg", "data", "ts"}
BOOK_DATA_KEYS = {"asks", "bids", "checksum", "seq", "ts"}
TRADE_ITEM_KEYS = {"ts", "price", "size", "side", "tradeId"}


# -- helpers ---------------------------------------------------------------------------


async def start_bitget(nursery: trio.Nursery, **overrides: Any) -> tuple[SimEndpoints, SimVenueControl]:
    market = Market((*DEFAULT_SYMBOLS, HALTED), ("bitget",), seed=7,
                    params=MarketParams(max_trade_rate=20.0))
    await nursery.start(functools.partial(run_market, market, interval_s=0.01))
    control = SimVenueControl()
    config = replace(SimVenueConfig.for_venue("bitget"), publish_interval_s=0.005, **overrides)
    endpoints = await nursery.start(
        functools.partial(run_sim_venue, "bitget", market, control=control, config=config))
    return endpoints, control


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[WebSocketConnection]:
    """trio-websocket over a TCP stream the test owns and always closes."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, f"{parts.hostname}:{parts.port}",
                                      parts.path or "/")
        try:
            yield ws
        finally:
            with trio.move_on_after(1.0, shield=True):
                await ws.aclose()
            nursery.cancel_scope.cancel()


async def discover(rest_url: str) -> tuple[list[SymbolInfo], dict[str, float], bytes]:
    symbols_req, tickers_req = bitget.discovery_requests()
    async with httpx.AsyncClient(base_url=rest_url) as client:
        symbols = (await client.get(symbols_req.path)).content
        tickers = (await client.get(tickers_req.path)).content
    return bitget.parse_instruments(symbols, {}), bitget.parse_volumes(tickers), symbols


def codec_for(infos: Sequence[SymbolInfo]) -> BitgetCodec:
    return BitgetCodec(symbol_map(infos))


async def parse_next(ws: WebSocketConnection, codec: BitgetCodec) -> tuple[str | bytes, Parsed]:
    frame = await ws.get_message()
    return frame, codec.parse(frame, 1)


async def until_closed(ws: WebSocketConnection) -> CloseReason:
    """Read (and drop) frames until the venue closes; its close reason."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    reason = closed.value.reason
    assert reason is not None
    return reason


def test_documented_limits_and_url() -> None:
    config = SimVenueConfig.for_venue("bitget")
    assert config is BitgetWire.config
    assert (config.client_ping_timeout_s, config.max_incoming_per_s, config.max_topics) == (120.0, 10, 1000)
    assert (config.max_connection_age_s, config.subscribe_timeout_s) == (24 * 3600.0, 30.0)
    assert config.ping_interval_s is None and config.app_ping_interval_s is None  # no server pings
    # the documented URL is the whole path: the codec appends nothing
    assert BitgetWire.ws_path == BitgetWire.ws_url_suffix == "/v2/ws/public"
    assert BitgetCodec({}).ws_path(NATIVES) == ""


# -- REST ------------------------------------------------------------------------------


async def test_rest_discovery_parses_with_the_codec_and_drops_halted_symbols(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_bitget(nursery)
        infos, volumes, symbols_body = await discover(endpoints.rest_url)
        async with httpx.AsyncClient(base_url=endpoints.rest_url) as client:
            one = await client.get("/api/v2/spot/market/tickers", params={"symbol": "ETHUSDT"})
            unknown = await client.get("/api/v2/spot/public/symbols", params={"symbol": "NOPEUSDT"})
            posted = await client.post("/api/v2/spot/public/symbols")
            missing = await client.get("/api/v2/spot/public/nothing")
            server_time = (await client.get("/api/v2/public/time")).json()
    by_native = {i.native: i for i in infos}
    assert by_native["BTCUSDT"] == SymbolInfo("bitget", "BTCUSDT", "BTC", "USDT")
    assert by_native["ETHBTC"] == SymbolInfo("bitget", "ETHBTC", "ETH", "BTC")
    assert "BGBUSDT" in by_native and "MNTUSDT" not in by_native  # Bitget's own, Bybit's own
    assert "LUNAUSDT" not in by_native
    raw = {s["symbol"]: s for s in orjson.loads(symbols_body)["data"]}
    assert raw["LUNAUSDT"]["status"] == "halt" and raw["BTCUSDT"]["status"] == "online"
    documented = orjson.loads((FRAMES / "symbols.json").read_bytes())["data"][0]
    assert raw["BTCUSDT"].keys() == documented.keys()
    assert all(isinstance(v, str) for v in raw["BTCUSDT"].values())
    assert set(volumes) == set(raw)  # tickers for every listed symbol, halted ones too
    assert volumes["LUNAUSDT"] == 0.0 and volumes["BTCUSDT"] > volumes["CKBUSDT"] > 0.0
    ticker = one.json()
    assert ticker["code"] == "00000" and [t["symbol"] for t in ticker["data"]] == ["ETHUSDT"]
    documented_ticker = orjson.loads((FRAMES / "tickers.json").read_bytes())["data"][0]
    assert ticker["data"][0].keys() == documented_ticker.keys()
    assert unknown.status_code == 400 and unknown.json()["code"] == "40034"
    with pytest.raises(FrameError, match="40034"):
        bitget.parse_instruments(unknown.content, {})
    assert (posted.status_code, missing.status_code) == (405, 404)
    assert int(server_time["data"]["serverTime"]) > 0
    assert control.statistics().rest_requests == 7


# -- WebSocket protocol ------------------------------------------------------------------


async def test_codec_subscribes_and_every_reply_parses(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_bitget(nursery)
        infos, _, _ = await discover(endpoints.rest_url)
        codec = codec_for(infos)
        await trio.sleep(0.3)  # some trades happen first: a trade subscriber gets them at once
        acks: list[str] = []
        quotes: dict[str, Quote] = {}
        trades: list[Trade] = []
        raw_books: list[Any] = []
        raw_trades: list[Any] = []
        actions: set[str] = set()
        after_book_ack: list[Parsed] = []
        async with connect(endpoints.ws_url + codec.ws_path(NATIVES)) as ws:
            for message in codec.subscribe_messages(NATIVES, trades=True):
                await ws.send_message(message)
            previous = ""
            while len(acks) < 6 or len(quotes) < 3 or "update" not in actions:
                frame, parsed = await parse_next(ws, codec)
                assert parsed.kind in (FrameKind.ACK, FrameKind.DATA), (frame, parsed)
                if previous.startswith("subscribe books1:"):
                    after_book_ack.append(parsed)
                if parsed.kind is FrameKind.ACK:
                    acks.append(parsed.detail)
                    previous = parsed.detail
                    continue
                previous = ""
                pushed = orjson.loads(frame)
                (raw_books if pushed["arg"]["channel"] == "books1" else raw_trades).append(pushed)
                if pushed["arg"]["channel"] == "trade":
                    actions.add(pushed["action"])
                for record in parsed.records:
                    if isinstance(record, Quote):
                        quotes[record.symbol] = record
                    else:
                        assert isinstance(record, Trade)
                        trades.append(record)
            await ws.send_message(codec.unsubscribe_messages(["ETHUSDT"], trades=True)[0])
            await ws.send_message(codec.ping_message(0) or "")
            unsubscribed: list[str] = []
            pong = False
            while len(unsubscribed) < 2 or not pong:
                frame, parsed = await parse_next(ws, codec)
                if parsed.kind is FrameKind.ACK:
                    unsubscribed.append(parsed.detail)
                pong = pong or parsed.kind is FrameKind.PONG
                assert parsed.kind in (FrameKind.ACK, FrameKind.DATA, FrameKind.PONG)
            subscriptions = control.subscriptions()
    assert sorted(acks) == sorted(f"subscribe {c}:{n}" for n in NATIVES for c in ("books1", "trade"))
    assert set(quotes) == {"BTC/USDT", "ETH/USDT", "BGB/USDT"}
    assert all(q.bid < q.ask and q.seq > 0 and q.venue_ts > 0 for q in quotes.values())
    # the current book follows each books1 ack at once
    assert len(after_book_ack) == 3 and all(p.kind is FrameKind.DATA for p in after_book_ack)
    assert trades and actions == {"snapshot", "update"}
    for message in raw_books:
        assert message.keys() == BOOK_KEYS and message["action"] == "snapshot"
        assert isinstance(message["ts"], int)
        (data,) = message["data"]
        assert data.keys() == BOOK_DATA_KEYS and data["checksum"] == 0
        assert isinstance(data["seq"], int) and isinstance(data["ts"], str)
        assert all(isinstance(v, str) for side in ("asks", "bids") for v in data[side][0])
    for message in raw_trades:
        assert message.keys() == BOOK_KEYS
        assert all(item.keys() == TRADE_ITEM_KEYS and item["side"] in ("buy", "sell")
                   for item in message["data"])
    assert sorted(unsubscribed) == ["unsubscribe books1:ETHUSDT", "unsubscribe trade:ETHUSDT"]
    assert subscriptions == {1: frozenset({"books1:BTCUSDT", "trade:BTCUSDT",
                                           "books1:BGBUSDT", "trade:BGBUSDT"})}
    stats = control.statistics()
    assert (stats.topics_subscribed, stats.topics_unsubscribed, stats.app_pings) == (6, 2, 1)
    assert stats.duplicate_subscriptions == 0 and stats.rejected_topics == 0


async def test_error_replies_parse_as_errors(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_bitget(nursery, max_topics=4)
        infos, _, _ = await discover(endpoints.rest_url)
        codec = codec_for(infos)
        arg = '{{"instType":"{}","channel":"{}","instId":"{}"}}'
        replies: dict[str, list[tuple[str | bytes, Parsed]]] = {}
        async with connect(endpoints.ws_url) as ws:
            async def ask(name: str, message: str, count: int = 1) -> None:
                """The next ``count`` replies; book pushes count only right after an ack."""
                await ws.send_message(message)
                got: list[tuple[str | bytes, Parsed]] = []
                after_ack = False
                while len(got) < count:
                    frame, parsed = await parse_next(ws, codec)
                    if parsed.kind is FrameKind.DATA and not after_ack:
                        continue  # BTCUSDT's pushes, once subscribed
                    got.append((frame, parsed))
                    after_ack = parsed.kind is FrameKind.ACK
                replies[name] = got

            await ask("unknown", '{"op":"subscribe","args":[' + arg.format("SPOT", "books1", "NOPEUSDT") + "]}")
            await ask("hello", "hello")
            await ask("channel", '{"op":"subscribe","args":[' + arg.format("SPOT", "books400", "BTCUSDT") + "]}")
            await ask("futures", '{"op":"subscribe","args":['
                      + arg.format("USDT-FUTURES", "books1", "BTCUSDT") + "]}")
            await ask("lower", '{"op":"subscribe","args":[' + arg.format("SPOT", "books1", "btcusdt") + "]}", 2)
            await ask("again", '{"op":"subscribe","args":[' + arg.format("SPOT", "books1", "BTCUSDT") + "]}", 2)
            await ask("cap", str(codec.subscribe_messages(["ETHUSDT", "SOLUSDT"], trades=True)[0]), 4)
            control.reject_subscriptions(True)
            await ask("rejected", str(codec.subscribe_messages(["ETHUSDT"], trades=False)[0]))
            control.reject_subscriptions(False)
            request = codec.subscribe_messages(["BTCUSDT"], trades=False)[0]
            assert isinstance(request, str)
            big = request.replace(
                '"books1"', '"books1","pad":"' + "x" * 4100 + '"')
            await ask("oversize", big)
            subscriptions = control.subscriptions()
    documented = orjson.loads((FRAMES / "subscribe_error.json").read_bytes())
    (frame, parsed), = replies["unknown"]
    assert orjson.loads(frame) == documented and frame == orjson.dumps(documented).decode()
    assert parsed.kind is FrameKind.ERROR and "30001" in parsed.detail
    for name, code in (("hello", 30002), ("channel", 30016), ("futures", 30001), ("oversize", 30016)):
        (frame, parsed), = replies[name]
        assert parsed.kind is FrameKind.ERROR and orjson.loads(frame)["code"] == code, name
    assert orjson.loads(replies["hello"][0][0]) == {
        "event": "error", "code": 30002, "msg": "Unrecognized request:hello"}
    # a lower-case instId is acked upper case; a second subscribe is acked again, with the book
    for name in ("lower", "again"):
        (_, ack), (_, book) = replies[name]
        assert ack.kind is FrameKind.ACK and ack.detail == "subscribe books1:BTCUSDT"
        assert book.kind is FrameKind.DATA and book.records[0].symbol == "BTC/USDT"
    cap = replies["cap"]
    assert [p.kind for _, p in cap] == [FrameKind.ERROR] * 4
    assert {orjson.loads(f)["code"] for f, _ in cap} == {30006}
    (frame, parsed), = replies["rejected"]
    assert parsed.kind is FrameKind.ERROR and orjson.loads(frame)["code"] == 30001
    assert subscriptions == {1: frozenset({"books1:BTCUSDT"})}
    stats = control.statistics()
    assert (stats.refused_over_cap, stats.refused_by_control) == (1, 1)
    assert (stats.topics_subscribed, stats.duplicate_subscriptions) == (1, 1)
    assert stats.rejected_topics == 3 + 4 + 1 + 1  # unknown, channel, futures; cap; rejected; oversize


async def test_malformed_frames_raise_frame_error(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_bitget(nursery)
        infos, _, _ = await discover(endpoints.rest_url)
        codec = codec_for(infos)
        async with connect(endpoints.ws_url) as ws:
            await ws.send_message(codec.subscribe_messages(["BTCUSDT"], trades=False)[0])
            await control.wait_for(lambda s: s.topics_subscribed == 1)
            assert control.send_malformed(3) == 1
            errors: list[FrameError] = []
            while len(errors) < 3:
                frame = await ws.get_message()
                try:
                    parsed = codec.parse(frame, 1)
                except FrameError as exc:
                    errors.append(exc)
                else:
                    assert parsed.kind in (FrameKind.ACK, FrameKind.DATA)
    assert "invalid JSON" in str(errors[0])
    assert "asks" in str(errors[1]) and "side" in str(errors[2])


async def test_heartbeat_rate_limit_and_subscribe_deadline(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_bitget(
            nursery, client_ping_timeout_s=0.4, subscribe_timeout_s=0.3)
        codec = codec_for((await discover(endpoints.rest_url))[0])
        subscribe = codec.subscribe_messages(["BTCUSDT"], trades=False)[0]
        async with connect(endpoints.ws_url) as pinging, connect(endpoints.ws_url) as silent, \
                connect(endpoints.ws_url) as idle, connect(endpoints.ws_url) as chatty:
            for _ in range(11):  # Bitget accepts 10 messages a second, pings included
                await chatty.send_message("ping")
            rate = await until_closed(chatty)
            await pinging.send_message(subscribe)
            await silent.send_message(subscribe)
            start = trio.current_time()

            async def keep_pinging() -> None:
                while True:
                    await pinging.send_message(codec.ping_message(0) or "")
                    await trio.sleep(0.1)

            async with trio.open_nursery() as pings:
                pings.start_soon(keep_pinging)
                no_subscription = await until_closed(idle)
                no_ping = await until_closed(silent)
                silent_for = trio.current_time() - start
                frames = [codec.parse(await pinging.get_message(), 1).kind for _ in range(20)]
                assert not pinging.closed
                pings.cancel_scope.cancel()
    assert no_ping.code == 1008 and 0.35 <= silent_for < 1.5
    assert (no_subscription.code, rate.code) == (1008, 1008)
    assert FrameKind.PONG in frames and FrameKind.DATA in frames
    stats = control.statistics()
    assert (stats.closed_no_ping, stats.closed_no_subscription, stats.closed_rate_limit) == (1, 1, 1)


async def test_force_cut_age_limit_and_shutdown_close_with_1001(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_bitget(nursery)
        aged, aged_control = await start_bitget(nursery, max_connection_age_s=0.2)
        async with connect(endpoints.ws_url) as a:
            await control.wait_for(lambda s: s.connections_open == 1)
            assert control.force_cut() == 1
            cut = await until_closed(a)
        async with connect(endpoints.ws_url) as b:
            await control.wait_for(lambda s: s.connections_open == 1)
            assert control.announce_shutdown(grace_s=0.1) == 1
            shutdown = await until_closed(b)  # no notice frame: Bitget documents none
        async with connect(aged.ws_url) as c:
            aged_out = await until_closed(c)
    assert (cut.code, shutdown.code, aged_out.code) == (1001, 1001, 1001)
    stats = control.statistics()
    assert (stats.closed_age_limit, stats.closed_maintenance, stats.notices_sent) == (1, 1, 0)
    assert aged_control.statistics().closed_age_limit == 1


# -- the real connector ------------------------------------------------------------------


async def _run_connector(faults: Sequence[str], *, rotate_after_s: float = 0.0,
                         ping_interval_s: float | None = None,
                         ) -> tuple[SimVenueControl, ConnectionStatus, int]:
    """Connect, wait for quotes, then apply each fault and wait for quotes again.

    Returns the control, the connector's status and how many VenueDown markers the
    shards got meanwhile (one per connection that ended without a hand-off). With
    ``ping_interval_s`` the codec pings that often and the venue wants a ping within
    three such intervals (Bitget: every 30 s, cut after 2 min).
    """
    control = SimVenueControl()
    inbox = ConflatingChannel[tuple[str, str], Quote | VenueDown]("s", 1000)
    sinks = QuoteSinks([inbox], DropChannel[object]("rec", 10_000))
    status = ConnectionStatus("bitget", 0)
    vconf = VenueConfig(rest_url="x", ws_url="x", silence_reconnect_s=1.5, rotate_after_s=rotate_after_s)
    cconf = ConnectorConfig(backoff_initial_s=0.05, backoff_max_s=0.2)
    configs = {}
    if ping_interval_s is not None:
        configs["bitget"] = replace(SimVenueConfig.for_venue("bitget"),
                                    client_ping_timeout_s=3 * ping_interval_s)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(functools.partial(
                run_sim_venues, ("bitget",), seed=1, controls={"bitget": control}, configs=configs))
            ep = endpoints["bitget"]
            infos, _, _ = await discover(ep.rest_url)
            codec = codec_for([i for i in infos if i.native in NATIVES])
            if ping_interval_s is not None:
                codec.ping_interval = ping_interval_s
            plan = ConnectionPlan("bitget", 0, ep.ws_url + codec.ws_path(NATIVES), NATIVES, codec, True)
            await nursery.start(functools.partial(
                run_connector, plan, sinks, status, venue_config=vconf, config=cconf,
                connect=websocket_connector(message_queue_size=64, connect_timeout_s=5),
                rng=random.Random(2)))

            downs: list[VenueDown] = []

            async def quotes_for(connections: int) -> None:
                """Once connection ``connections`` alone is open and subscribed, a new quote."""
                await control.wait_for(lambda s: s.connections_accepted >= connections
                                       and s.connections_open == 1
                                       and s.topics_subscribed >= connections * len(NATIVES) * 2)
                stale = inbox.receive_batch_nowait().values()  # may predate this connection
                downs.extend(d for d in stale if isinstance(d, VenueDown))
                while True:
                    batch = inbox.receive_batch_nowait().values()
                    downs.extend(d for d in batch if isinstance(d, VenueDown))
                    if any(isinstance(q, Quote) for q in batch):
                        return
                    await trio.sleep(0.02)

            await quotes_for(1)
            for n, fault in enumerate(faults, start=2):
                if fault == "drop":
                    control.drop_connections()
                elif fault == "cut":
                    control.force_cut()
                elif fault == "shutdown":
                    control.announce_shutdown(grace_s=0.05)
                else:  # "rotate": the connector's own timer, nothing to inject
                    pass
                await quotes_for(n)
            await control.wait_for(lambda s: s.connections_open == 1)
            nursery.cancel_scope.cancel()
    gc.collect()  # a leaked socket would surface here as a ResourceWarning
    return control, status, len(downs)


def _subscribed_per_connection(control: SimVenueControl) -> list[list[str]]:
    per: dict[int, list[str]] = {}
    for event in control.subscription_log():
        if event.action == "subscribe":
            per.setdefault(event.connection, []).append(event.topic)
    return [sorted(topics) for topics in per.values()]


async def test_connector_gets_quotes_and_resubscribes_after_drops_cuts_and_shutdowns() -> None:
    control, status, downs = await _run_connector(("drop", "cut", "shutdown"))
    stats = control.statistics()
    assert stats.connections_accepted == 4 and status.reconnects == 3
    assert stats.duplicate_subscriptions == 0 and stats.rejected_topics == 0
    assert (stats.dropped_by_control, stats.closed_age_limit, stats.closed_maintenance) == (1, 1, 1)
    expected = sorted(f"{c}:{n}" for n in NATIVES for c in ("books1", "trade"))
    assert _subscribed_per_connection(control) == [expected] * 4
    assert status.venue_errors == 0 and status.bad_frames == 0 and status.acks == 4 * 6
    assert downs == 3


async def test_connector_heartbeats_and_rotates_without_a_gap() -> None:
    control, status, downs = await _run_connector(("rotate",), rotate_after_s=0.5, ping_interval_s=0.15)
    stats = control.statistics()
    # the codec's text ping keeps the venue's heartbeat watchdog content; pong parses as PONG
    assert stats.closed_no_ping == 0 and stats.app_pings >= 3 and status.pongs >= 3
    assert status.rotations >= 1 and status.reconnects == 0
    assert downs == 0  # the successor delivered before its predecessor closed: no gap
    assert stats.duplicate_subscriptions == 0 and stats.rejected_topics == 0
    assert status.venue_errors == 0 and status.bad_frames == 0
