"""The simulated MEXC spot v3 venue against the real MEXC codec and connector.

REST discovery answered by the simulator goes through the codec's parsers; a raw
WebSocket client sends the codec's own messages and parses every reply with
``MexcCodec.parse``; the real connector runs against it through drops, forced cuts,
maintenance closes and rotations. I/O on loopback in real time with short configured
intervals, each test under an absolute ``trio.fail_after``.
"""

from __future__ import annotations

import functools
import gc
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import wsproto.events
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection

from actors.channels import ConflatingChannel, DropChannel
from actors.config import ConnectorConfig, VenueConfig
from actors.connector import ConnectionPlan, ConnectionStatus, QuoteSinks, run_connector, websocket_connector
from actors.discovery import fetch_venue
from actors.records import Quote, Side, SymbolInfo, Trade, VenueDown
from actors.venues import mexc as codec_module
from actors.venues.base import FrameError, FrameKind, Parsed, symbol_map
from actors.venues.mexc import MexcCodec
from app.sim import DEFAULT_SYMBOLS, Market, MarketParams, SimVenueConfig, SimVenueControl, SymbolSpec
from app.sim.mexc import (
    AGGRE_BOOK_TICKER,
    AGGRE_DEALS,
    DEALS_EVENT_TYPE,
    MexcWire,
    book_ticker_body,
    deal_item,
    deals_body,
    push_data,
)
from app.sim.server import run_sim_venues
from app.sim.wire import ConnectionView, Refusal
from tests.test_sim import RawClient, connect, start_venue

TIMEOUT = 5.0
FRAMES = Path(__file__).parent / "data" / "frames" / "mexc"
QUIET = MarketParams(max_update_rate=0.0, max_trade_rate=0.0, arb_probability=0.0)
BUSY = MarketParams(max_update_rate=40.0, max_trade_rate=20.0, arb_probability=0.0)
NATIVES = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
BOOK = "spot@public.aggre.bookTicker.v3.api.pb@100ms@"
DEALS = "spot@public.aggre.deals.v3.api.pb@100ms@"
#: listed on MEXC but not trading there: discovery must leave them out
HALTED = (
    SymbolSpec("PAUSED", "USDT", 2.0, 5e6, venues=frozenset({"mexc"}), halted=frozenset({"mexc"})),
    SymbolSpec("NOAPI", "USDT", 3.0, 5e6, venues=frozenset({"mexc"}), halted=frozenset({"mexc"})),
)


def mexc_market(params: MarketParams | None = None) -> Market:
    return Market((*DEFAULT_SYMBOLS, *HALTED), venues=("mexc",), seed=7, params=params)


def codec_for(natives: Sequence[str]) -> MexcCodec:
    """A codec for USDT symbols, as the connector builds it from discovery."""
    return MexcCodec(symbol_map([SymbolInfo("mexc", n, n[:-4], "USDT") for n in natives]))


def codec_for_market(market: Market) -> MexcCodec:
    return MexcCodec(symbol_map([
        SymbolInfo("mexc", f"{s.base}{s.quote}", s.base, s.quote) for s in market.listed("mexc")
    ]))


def parse(codec: MexcCodec, frame: str | bytes) -> Parsed:
    return codec.parse(frame, 1)


async def next_parsed(ws: WebSocketConnection, codec: MexcCodec,
                      predicate: Callable[[Parsed], bool]) -> Parsed:
    while True:
        parsed = parse(codec, await ws.get_message())
        if predicate(parsed):
            return parsed


async def until_closed(ws: WebSocketConnection) -> CloseReason:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    assert closed.value.reason is not None
    return closed.value.reason


# -- the protobuf writer ---------------------------------------------------------------


def test_the_encoder_writes_the_documented_frames_byte_for_byte() -> None:
    """The documented pushes, encoded, are the stored wire bytes the codec tests use."""
    book_doc = orjson.loads((FRAMES / "book_ticker.json").read_bytes())
    ticker = book_doc["publicbookticker"]
    book = push_data(
        book_doc["channel"], book_doc["symbol"], book_doc["sendtime"], AGGRE_BOOK_TICKER,
        book_ticker_body(ticker["bidprice"], ticker["bidquantity"], ticker["askprice"],
                         ticker["askquantity"]),
    )
    deals_doc = orjson.loads((FRAMES / "deals.json").read_bytes())
    items = [
        deal_item(d["price"], d["quantity"], d["tradetype"], d["time"])
        for d in deals_doc["publicdeals"]["dealsList"]
    ]
    deals = push_data(
        deals_doc["channel"], deals_doc["symbol"], deals_doc["sendtime"], AGGRE_DEALS,
        deals_body(items, deals_doc["publicdeals"]["eventtype"]),
    )
    assert book == bytes.fromhex("".join((FRAMES / "book_ticker.pb.hex").read_text().split()))
    assert deals == bytes.fromhex("".join((FRAMES / "deals.pb.hex").read_text().split()))
    assert deals_doc["publicdeals"]["eventtype"] == DEALS_EVENT_TYPE


def test_encoded_books_and_trades_parse_with_the_codec() -> None:
    market = Market(venues=("mexc",), seed=2, params=BUSY)
    for _ in range(20):
        market.step(0.05)
    snapshot = market.snapshot
    wire = MexcWire(market)
    codec = codec_for_market(market)
    for (_, symbol), book in snapshot.books.items():
        frame = wire.encode_book(book, snapshot)
        assert isinstance(frame, bytes)
        (quote,) = parse(codec, frame).records
        assert isinstance(quote, Quote)
        assert (quote.symbol, quote.bid, quote.ask) == (symbol, book.bid, book.ask)
        assert (quote.bid_size, quote.ask_size, quote.venue_ts) == (
            book.bid_size, book.ask_size, snapshot.now_ms)
    trades = [t for t in snapshot.trades if t.symbol == "BTC/USDT"]
    assert trades
    (deals,) = wire.encode_trades(trades)
    parsed = parse(codec, deals)
    assert parsed.kind is FrameKind.DATA
    assert [(t.price, t.size, t.side, t.venue_ts) for t in parsed.records if isinstance(t, Trade)] == [
        (t.price, t.size, Side.BUY if t.taker_buy else Side.SELL, t.ts_ms) for t in trades
    ]


def test_refusals_and_malformed_frames_are_what_the_codec_rejects() -> None:
    market = Market(venues=("mexc",), seed=1)
    wire = MexcWire(market)
    conn = ConnectionView("sim-mexc-1")
    codec = codec_for_market(market)
    message = codec.subscribe_messages(["BTCUSDT"], trades=True)[0]
    for why in Refusal:
        (frame,) = wire.refuse(conn, message, why, market.snapshot).frames
        assert parse(codec, frame).kind is FrameKind.ERROR
        assert orjson.loads(frame)["id"] == 1
    malformed = [wire.malformed(conn, n, market.snapshot) for n in range(9)]
    assert len(set(malformed)) == 9
    for frame in malformed:
        assert isinstance(frame, bytes)
        with pytest.raises(FrameError):
            parse(codec, frame)


# -- REST ------------------------------------------------------------------------------


async def test_rest_discovery_parses_with_the_codec_and_leaves_out_halted_symbols(
    nursery: trio.Nursery,
) -> None:
    market = mexc_market()
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "mexc", market=market)
        async with httpx.AsyncClient(base_url=endpoints.rest_url) as client:
            info = await client.get("/api/v3/exchangeInfo")
            tickers = await client.get("/api/v3/ticker/24hr")
            one = (await client.get("/api/v3/ticker/24hr", params={"symbol": "MXUSDT"})).json()
            two = (await client.get("/api/v3/exchangeInfo", params={"symbols": "MXUSDT,BTCUSDT"})).json()
            bad = await client.get("/api/v3/ticker/24hr", params={"symbol": "NOPEUSDT"})
            bad_info = await client.get("/api/v3/exchangeInfo", params={"symbol": "btcusdt"})
            post = await client.post("/api/v3/exchangeInfo")
            server_time = (await client.get("/api/v3/time")).json()
            listing = await fetch_venue(client, "mexc", VenueConfig(rest_url=endpoints.rest_url), {})
    instruments = codec_module.parse_instruments(info.content, {})
    volumes = codec_module.parse_volumes(tickers.content)
    listed = {f"{s.base}{s.quote}" for s in market.listed("mexc")}
    trading = {f"{s.base}{s.quote}" for s in market.listed("mexc") if s.trading_on("mexc")}
    assert {i.native for i in instruments} == trading == {i.native for i in listing}
    assert {"PAUSEDUSDT", "NOAPIUSDT"} <= listed - trading
    assert "BTCFDUSD" not in listed and "MXUSDT" in trading
    by_native = {i.native: i for i in instruments}
    assert by_native["ETHBTC"].symbol == "ETH/BTC"
    assert volumes.keys() == listed
    assert volumes["PAUSEDUSDT"] == volumes["NOAPIUSDT"] == 0.0
    assert volumes["BTCUSDT"] > volumes["CKBUSDT"] > 0.0
    assert all(i.quote_volume_24h > 0.0 for i in listing)
    raw = {s["symbol"]: s for s in info.json()["symbols"]}
    assert (raw["PAUSEDUSDT"]["status"], raw["PAUSEDUSDT"]["isSpotTradingAllowed"]) == ("2", True)
    assert (raw["NOAPIUSDT"]["status"], raw["NOAPIUSDT"]["isSpotTradingAllowed"]) == ("1", False)
    assert (raw["BTCUSDT"]["status"], raw["BTCUSDT"]["isSpotTradingAllowed"]) == ("1", True)
    expected = orjson.loads((FRAMES / "exchange_info.json").read_bytes())["symbols"][0]
    assert raw["BTCUSDT"].keys() == expected.keys()
    halted_ticker = next(t for t in tickers.json() if t["symbol"] == "PAUSEDUSDT")
    assert halted_ticker["quoteVolume"] is None and halted_ticker["bidQty"] == ""
    documented = orjson.loads((FRAMES / "ticker_24hr_volumes.json").read_bytes())[0]
    assert one.keys() == documented.keys() and one["symbol"] == "MXUSDT"
    assert float(one["quoteVolume"]) > 0 and float(one["bidPrice"]) < float(one["askPrice"])
    assert [s["symbol"] for s in two["symbols"]] == ["MXUSDT", "BTCUSDT"]
    for response in (bad, bad_info):
        assert response.status_code == 400
        assert response.json() == {"code": -1121, "msg": "Invalid symbol."}
        with pytest.raises(FrameError):
            codec_module.parse_volumes(response.content)
    assert post.status_code == 405
    assert server_time["serverTime"] >= market.snapshot.now_ms - 60_000
    assert control.statistics().rest_requests == 10


# -- WebSocket: the codec's messages and the sim's answers ------------------------------


async def test_codec_subscribes_and_every_reply_parses(nursery: trio.Nursery) -> None:
    codec = codec_for(NATIVES)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "mexc", market=mexc_market(BUSY))
        assert endpoints.ws_url.endswith("/ws")
        async with connect(endpoints.ws_url + codec.ws_path(NATIVES)) as ws:
            messages = codec.subscribe_messages(NATIVES, trades=True)
            for message in messages:
                await ws.send_message(message)
            ack_frames = [await ws.get_message() for _ in messages]
            quotes: dict[str, Quote] = {}
            trades: list[Trade] = []
            raw_data: list[bytes] = []
            while len(quotes) < len(NATIVES) or not trades:
                frame = await ws.get_message()
                assert isinstance(frame, bytes)  # data is binary protobuf
                raw_data.append(frame)
                parsed = parse(codec, frame)
                assert parsed.kind is FrameKind.DATA
                for record in parsed.records:
                    if isinstance(record, Quote):
                        quotes[record.symbol] = record
                    else:
                        trades.append(record)
            ping = codec.ping_message(0)
            assert ping is not None
            await ws.send_message(ping)
            pong_frame = await ws.get_message()
            while isinstance(pong_frame, bytes):  # data still flowing
                pong_frame = await ws.get_message()
            unsubscribe = codec.unsubscribe_messages(["SOLUSDT"], trades=True)
            await ws.send_message(unsubscribe[0])
            unsub_ack = await next_parsed(ws, codec, lambda p: p.kind is not FrameKind.DATA)
            subscriptions = control.subscriptions()
    assert [parse(codec, a).kind for a in ack_frames] == [FrameKind.ACK]
    ack = orjson.loads(ack_frames[0])
    assert (ack["id"], ack["code"]) == (1, 0)
    assert ack["msg"].split(",") == [f"{prefix}{n}" for n in NATIVES for prefix in (BOOK, DEALS)]
    assert set(quotes) == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
    assert all(q.venue == "mexc" and 0 < q.bid < q.ask and q.seq == 0 for q in quotes.values())
    assert all(t.symbol in quotes and t.side in (Side.BUY, Side.SELL) for t in trades)
    assert not any(f[:1] == b"{" for f in raw_data)
    assert isinstance(pong_frame, str) and orjson.loads(pong_frame) == {"id": 0, "code": 0, "msg": "PONG"}
    assert parse(codec, pong_frame).kind is FrameKind.PONG
    assert unsub_ack.kind is FrameKind.ACK
    assert subscriptions == {1: frozenset(f"{p}{n}" for n in ("BTCUSDT", "ETHUSDT") for p in (BOOK, DEALS))}
    stats = control.statistics()
    assert (stats.topics_subscribed, stats.topics_unsubscribed, stats.app_pings) == (6, 2, 1)


async def test_unknown_channels_are_blocked_and_partial_requests_half_succeed(
    nursery: trio.Nursery,
) -> None:
    codec = codec_for(NATIVES)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "mexc", market=mexc_market(QUIET))
        async with connect(endpoints.ws_url) as ws:
            replies: list[Any] = []
            for params in (
                [f"{BOOK}NOPEUSDT"],
                [f"{BOOK}btcusdt"],
                ["spot@public.aggre.bookTicker.v3.api.pb@10ms@BTCUSDT"],
                [f"{BOOK}BTCUSDT", f"{DEALS}BTCUSDT", f"{BOOK}NOPEUSDT"],
                [f"{BOOK}BTCUSDT"],
            ):
                await ws.send_message(orjson.dumps({"method": "SUBSCRIPTION", "params": params,
                                                    "id": len(replies) + 1}).decode())
                replies.append(await ws.get_message())
            for bad in ("{nope", '{"method":"SUBSCRIBE","params":["x"],"id":9}',
                        '{"method":"SUBSCRIPTION","params":[],"id":10}', "[1]"):
                await ws.send_message(bad)
                replies.append(await ws.get_message())
            subscriptions = control.subscriptions()
    kinds = [parse(codec, r).kind for r in replies]
    assert kinds == [FrameKind.ERROR] * 4 + [FrameKind.ACK] + [FrameKind.ERROR] * 4
    decoded = [orjson.loads(r) for r in replies]
    assert [d["id"] for d in decoded] == [1, 2, 3, 4, 5, 0, 9, 10, 0]
    assert decoded[0] == {
        "id": 1, "code": 0,
        "msg": f"Not Subscribed successfully! [{BOOK}NOPEUSDT].  Reason\uff1a Blocked! ",
    }
    assert decoded[3]["msg"] == orjson.loads((FRAMES / "subscribe_partly_refused.json").read_bytes())["msg"]
    assert decoded[4] == {"id": 5, "code": 0, "msg": f"{BOOK}BTCUSDT"}
    assert all(d["code"] != 0 for d in decoded[5:])
    assert subscriptions == {1: frozenset({f"{BOOK}BTCUSDT", f"{DEALS}BTCUSDT"})}
    stats = control.statistics()
    assert (stats.topics_subscribed, stats.rejected_topics, stats.duplicate_subscriptions) == (2, 4, 1)


async def test_thirty_channels_per_connection_then_refused_and_control_rejection(
    nursery: trio.Nursery,
) -> None:
    market = mexc_market(QUIET)
    natives = [f"{s.base}{s.quote}" for s in market.listed("mexc") if s.trading_on("mexc")][:16]
    codec = codec_for(natives)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "mexc", market=market)
        async with connect(endpoints.ws_url) as ws:
            messages = [*codec.subscribe_messages(natives[:10], trades=True),
                        *codec.subscribe_messages(natives[10:15], trades=True)]
            for message in messages:
                await ws.send_message(message)
            acks = [parse(codec, await ws.get_message()) for _ in messages]
            (over,) = codec.subscribe_messages(natives[15:16], trades=True)
            await ws.send_message(over)
            refused = await ws.get_message()
            subscriptions = control.subscriptions()
        async with connect(endpoints.ws_url) as ws:
            control.reject_subscriptions(True)
            (message,) = codec.subscribe_messages(natives[:1], trades=False)
            await ws.send_message(message)
            rejected = await ws.get_message()
    assert [a.kind for a in acks] == [FrameKind.ACK] * 3
    assert parse(codec, refused).kind is FrameKind.ERROR
    assert orjson.loads(refused) == {
        "id": 4, "code": 0,
        "msg": f"Not Subscribed successfully! [{BOOK}{natives[15]},{DEALS}{natives[15]}].  Reason\uff1a Blocked! ",
    }
    assert len(subscriptions[1]) == 30
    assert parse(codec, rejected).kind is FrameKind.ERROR
    stats = control.statistics()
    assert (stats.refused_over_cap, stats.refused_by_control, stats.topics_subscribed) == (1, 1, 30)


async def test_malformed_frames_raise_the_codecs_frame_error(nursery: trio.Nursery) -> None:
    codec = codec_for(NATIVES)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "mexc", market=mexc_market(QUIET))
        async with connect(endpoints.ws_url) as ws:
            (message,) = codec.subscribe_messages(["BTCUSDT"], trades=False)
            await ws.send_message(message)
            assert parse(codec, await ws.get_message()).kind is FrameKind.ACK
            assert control.send_malformed(6) == 1
            bad = [await ws.get_message() for _ in range(6)]
            await ws.send_message('{"method":"PING"}')
            pong = await ws.get_message()
    assert all(isinstance(b, bytes) for b in bad) and len(set(bad)) == 6
    for frame in bad:
        with pytest.raises(FrameError):
            parse(codec, frame)
    assert parse(codec, pong).kind is FrameKind.PONG


# -- WebSocket: heartbeats and the venue's own closes ----------------------------------


async def test_protocol_pings_and_a_client_that_does_not_pong_is_closed(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(
            nursery, "mexc", market=mexc_market(QUIET), ping_interval_s=0.05, pong_timeout_s=0.2
        )
        async with connect(endpoints.ws_url) as ws:  # trio-websocket answers pings itself
            answered = await control.wait_for(lambda s: s.pongs_received >= 2)
            await ws.send_message('{"method":"PING"}')
            assert orjson.loads(await ws.get_message())["msg"] == "PONG"
        client, accepted = await RawClient.handshake(endpoints.ws_url, "/ws")
        async with client.stream:
            assert isinstance(accepted, wsproto.events.AcceptConnection)
            event = await client.next_event()
    assert answered.closed_no_pong == 0
    assert isinstance(event, wsproto.events.CloseConnection) and event.code == 1008
    assert client.pings
    assert control.statistics().closed_no_pong == 1


async def test_no_ping_no_subscription_and_over_a_hundred_messages_a_second_close(
    nursery: trio.Nursery,
) -> None:
    codec = codec_for(NATIVES)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(
            nursery, "mexc", market=mexc_market(QUIET), client_ping_timeout_s=0.4,
            subscribe_timeout_s=0.2,
        )
        async with connect(endpoints.ws_url) as idle, connect(endpoints.ws_url) as silent, \
                connect(endpoints.ws_url) as pinging:
            (message,) = codec.subscribe_messages(["BTCUSDT"], trades=False)
            for ws in (silent, pinging):
                await ws.send_message(message)
                assert parse(codec, await ws.get_message()).kind is FrameKind.ACK
            no_subscription = await until_closed(idle)
            for _ in range(6):
                await pinging.send_message('{"method":"PING"}')
                assert parse(codec, await pinging.get_message()).kind is FrameKind.PONG
                await trio.sleep(0.1)
            no_ping = await until_closed(silent)
            await pinging.send_message('{"method":"PING"}')
            assert parse(codec, await pinging.get_message()).kind is FrameKind.PONG
        async with connect(endpoints.ws_url) as flood:
            for _ in range(101):
                await flood.send_message('{"method":"PING"}')
            flooded = await until_closed(flood)
    assert no_subscription.code == 1008 and "subscription" in (no_subscription.reason or "")
    assert no_ping.code == 1008 and "ping" in (no_ping.reason or "")
    assert flooded.code == 1008
    stats = control.statistics()
    assert (stats.closed_no_subscription, stats.closed_no_ping, stats.closed_rate_limit) == (1, 1, 1)


async def test_forced_cut_and_maintenance_close_with_1001_and_no_notice(nursery: trio.Nursery) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "mexc", market=mexc_market(QUIET))
        async with connect(endpoints.ws_url) as a, connect(endpoints.ws_url) as b:
            await control.wait_for(lambda s: s.connections_open == 2)
            assert control.force_cut() == 2
            cuts = [await until_closed(a), await until_closed(b)]
        async with connect(endpoints.ws_url) as c:
            await control.wait_for(lambda s: s.connections_open == 1)
            assert control.announce_shutdown(grace_s=0.05) == 1
            maintenance = await until_closed(c)  # no notice frame before it
    assert all(c.code == 1001 and "24 hours" in (c.reason or "") for c in cuts)
    assert maintenance.code == 1001
    stats = control.statistics()
    assert (stats.closed_age_limit, stats.closed_maintenance, stats.notices_sent) == (2, 1, 0)
    assert SimVenueConfig.for_venue("mexc").max_topics == 30


# -- the real connector ----------------------------------------------------------------


async def _run_connector(
    scenario: Callable[[SimVenueControl, ConnectionStatus, Callable[[], Any]], Any],
    *,
    sim_config: SimVenueConfig | None = None,
    rotate_after_s: float = 0.0,
    ping_interval_s: float | None = None,
) -> tuple[SimVenueControl, ConnectionStatus]:
    control = SimVenueControl()
    inbox = ConflatingChannel[tuple[str, str], Quote | VenueDown]("s", 1000)
    sinks = QuoteSinks([inbox], DropChannel[object]("rec", 10_000))
    status = ConnectionStatus("mexc", 0)
    codec = codec_for(NATIVES)
    if ping_interval_s is not None:
        codec.ping_interval = ping_interval_s
    vconf = VenueConfig(rest_url="x", ws_url="x", silence_reconnect_s=2.0, rotate_after_s=rotate_after_s)
    cconf = ConnectorConfig(backoff_initial_s=0.05, backoff_max_s=0.2)
    config = replace(sim_config or MexcWire.config, publish_interval_s=0.005)

    async def quotes_arrive() -> None:
        inbox.receive_batch_nowait()
        while not any(isinstance(q, Quote) for q in inbox.receive_batch_nowait().values()):
            await trio.sleep(0.02)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(functools.partial(
                run_sim_venues, ("mexc",), seed=1, interval_s=0.02, params=BUSY,
                controls={"mexc": control}, configs={"mexc": config}))
            url = endpoints["mexc"].ws_url.rstrip("/") + codec.ws_path(NATIVES)
            plan = ConnectionPlan("mexc", 0, url, NATIVES, codec, True)
            connect_fn = websocket_connector(message_queue_size=64, connect_timeout_s=5)
            await nursery.start(functools.partial(
                run_connector, plan, sinks, status, venue_config=vconf, config=cconf,
                connect=connect_fn, rng=random.Random(2)))
            await scenario(control, status, quotes_arrive)
            nursery.cancel_scope.cancel()
    gc.collect()  # a leaked socket would surface here as a ResourceWarning (an error in this suite)
    return control, status


def _subscribed_per_connection(control: SimVenueControl) -> list[list[str]]:
    per_connection: dict[int, list[str]] = {}
    for event in control.subscription_log():
        if event.action == "subscribe":
            per_connection.setdefault(event.connection, []).append(event.topic)
    return [sorted(topics) for topics in per_connection.values()]


EXPECTED_TOPICS = sorted(f"{p}{n}" for n in NATIVES for p in (BOOK, DEALS))


async def test_connector_gets_quotes_and_resubscribes_after_drops_and_cuts() -> None:
    async def scenario(control: SimVenueControl, status: ConnectionStatus, quotes: Any) -> None:
        faults: list[tuple[int, Callable[[], int] | None]] = [
            (1, control.drop_connections), (2, control.force_cut),
            (3, lambda: control.announce_shutdown(grace_s=0.05)), (4, None),
        ]
        for accepted, fault in faults:
            await control.wait_for(lambda s, n=accepted: s.connections_accepted == n
                                   and s.topics_subscribed >= n * len(EXPECTED_TOPICS))
            await quotes()
            if fault is not None:
                assert fault() == 1

    control, status = await _run_connector(scenario)
    stats = control.statistics()
    assert stats.connections_accepted == 4 and status.reconnects == 3
    assert (stats.dropped_by_control, stats.closed_age_limit, stats.closed_maintenance) == (1, 1, 1)
    assert stats.duplicate_subscriptions == 0 and stats.rejected_topics == 0
    assert _subscribed_per_connection(control) == [EXPECTED_TOPICS] * 4
    assert status.venue_errors == 0 and status.bad_frames == 0 and status.unknown_symbols == 0
    assert status.acks == 4 and status.quotes > 0 and status.trades > 0


async def test_connector_heartbeat_keeps_the_connection_and_rotates_before_the_cut() -> None:
    sim_config = replace(MexcWire.config, client_ping_timeout_s=0.5, max_connection_age_s=3.0)

    async def scenario(control: SimVenueControl, status: ConnectionStatus, quotes: Any) -> None:
        await quotes()
        await control.wait_for(lambda s: s.app_pings >= 4)
        await control.wait_for(lambda s: s.connections_accepted == 2)
        await control.wait_for(lambda s: s.connections_open == 1)
        await quotes()

    control, status = await _run_connector(
        scenario, sim_config=sim_config, rotate_after_s=1.2, ping_interval_s=0.15
    )
    stats = control.statistics()
    assert stats.closed_no_ping == 0 and stats.closed_age_limit == 0
    assert stats.duplicate_subscriptions == 0
    assert status.rotations >= 1 and status.reconnects == 0 and status.pongs >= 4
    assert _subscribed_per_connection(control)[:2] == [EXPECTED_TOPICS] * 2
