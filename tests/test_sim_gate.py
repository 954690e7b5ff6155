"""The simulated Gate v4 spot venue against Gate's codec, discovery and the real connector.

Loopback sockets in real time with short configured intervals, each test under an
absolute ``trio.fail_after``. The simulator (``app/sim/gate.py``) is written from Gate's
documentation independently of the codec, so every frame it sends going through
``GateCodec.parse`` (and its REST bodies through the discovery parsers) checks both.
"""

from __future__ import annotations

import functools
import gc
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import wsproto.events
from trio_websocket import ConnectionClosed, WebSocketConnection

from actors.channels import ConflatingChannel, DropChannel
from actors.config import ConnectorConfig, VenueConfig
from actors.connector import ConnectionPlan, ConnectionStatus, QuoteSinks, run_connector, websocket_connector
from actors.records import Quote, SymbolInfo, Trade, VenueDown
from actors.venues import gate
from actors.venues.base import FrameError, FrameKind, Parsed, symbol_map
from actors.venues.gate import GateCodec
from app.sim import (
    DEFAULT_SYMBOLS,
    Market,
    MarketParams,
    SimVenueConfig,
    SimVenueControl,
    SimVenueStatistics,
    SymbolSpec,
    run_sim_venues,
)
from app.sim.gate import GateWire
from tests.test_sim import RawClient, connect, start_venue

TIMEOUT = 5.0
QUIET = MarketParams(max_update_rate=0.0, max_trade_rate=0.0, arb_probability=0.0)
FRAMES = Path(__file__).parent / "data" / "frames" / "gate"
#: listed on Gate but not trading there: discovery must leave it out
HALTED = SymbolSpec("OLD", "USDT", 1.5, 2e6, venues=frozenset({"gate"}), halted=frozenset({"gate"}))
PAIRS = ("BTC_USDT", "ETH_USDT", "GT_USDT")
BOOK_KEYS = {"time", "time_ms", "channel", "event", "result"}
BOOK_RESULT_KEYS = {"t", "u", "s", "b", "B", "a", "A"}
#: the documented trade, less its repeated ``id_market`` key
TRADE_RESULT_KEYS = {"id", "id_market", "create_time", "create_time_ms", "side", "currency_pair",
                     "amount", "price", "range"}


def gate_market(params: MarketParams | None = None, seed: int = 1) -> Market:
    return Market((*DEFAULT_SYMBOLS, HALTED), venues=("gate",), seed=seed, params=params)


def codec_for(market: Market) -> GateCodec:
    """A codec knowing every pair the market lists on Gate (the halted one included)."""
    return GateCodec(symbol_map([
        SymbolInfo("gate", f"{s.base}_{s.quote}", s.base, s.quote) for s in market.listed("gate")
    ]))


async def parsed(ws: WebSocketConnection, codec: GateCodec) -> tuple[Parsed, Any]:
    frame = await ws.get_message()
    assert isinstance(frame, str)  # Gate's JSON endpoint sends text only
    return codec.parse(frame, 1), orjson.loads(frame)


async def next_kind(ws: WebSocketConnection, codec: GateCodec, kind: FrameKind) -> tuple[Parsed, Any]:
    while True:
        result, message = await parsed(ws, codec)
        if result.kind is kind:
            return result, message


# -- REST ------------------------------------------------------------------------------


async def test_rest_discovery_parses_with_the_codec_and_leaves_out_untradable_pairs(
    nursery: trio.Nursery,
) -> None:
    market = gate_market()
    pairs_request, tickers_request = gate.discovery_requests()
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "gate", market=market)
        async with httpx.AsyncClient(base_url=endpoints.rest_url) as client:
            pairs = await client.get(pairs_request.path, params=dict(pairs_request.params))
            tickers = await client.get(tickers_request.path, params=dict(tickers_request.params))
            one = await client.get("/api/v4/spot/tickers", params={"currency_pair": "GT_USDT"})
            pair = await client.get("/api/v4/spot/currency_pairs/ETH_USDT")
            unknown = await client.get("/api/v4/spot/tickers", params={"currency_pair": "NOPE_USDT"})
            server_time = (await client.get("/api/v4/spot/time")).json()
            posted = await client.post("/api/v4/spot/tickers")
    instruments = gate.parse_instruments(pairs.content, {"XBT": "BTC"})
    volumes = gate.parse_volumes(tickers.content)
    natives = {i.native for i in instruments}
    listed = {f"{s.base}_{s.quote}" for s in market.listed("gate")}
    assert "OLD_USDT" in listed and "OLD_USDT" not in natives
    assert natives == listed - {"OLD_USDT"}
    assert {"GT_USDT", "BTC_USDT", "ETH_BTC"} <= natives and "MNT_USDT" not in natives
    btc = next(i for i in instruments if i.native == "BTC_USDT")
    assert (btc.symbol, btc.venue) == ("BTC/USDT", "gate")
    assert set(volumes) == listed and volumes["OLD_USDT"] == 0.0
    assert volumes["BTC_USDT"] == pytest.approx(market.quote_volume_24h("gate", "BTC/USDT"))
    assert all(volumes[n] > 0 for n in natives)
    # the documented shapes, key for key
    documented_pair = orjson.loads((FRAMES / "currency_pairs.json").read_bytes())[1]
    documented_ticker = orjson.loads((FRAMES / "tickers.json").read_bytes())[1]
    by_id = {p["id"]: p for p in pairs.json()}
    assert all(p.keys() == documented_pair.keys() for p in by_id.values())
    assert by_id["OLD_USDT"]["trade_status"] == "untradable"
    assert by_id["BTC_USDT"]["trade_status"] == "tradable"
    assert all(t.keys() >= documented_ticker.keys() for t in tickers.json())
    assert [t["currency_pair"] for t in one.json()] == ["GT_USDT"]
    assert pair.json()["id"] == "ETH_USDT" and pair.json()["precision"] == market.spec("ETH/USDT").price_decimals
    assert unknown.status_code == 400 and unknown.json()["label"] == "INVALID_CURRENCY_PAIR"
    with pytest.raises(FrameError, match="INVALID_CURRENCY_PAIR"):
        gate.parse_volumes(unknown.content)
    assert server_time == {"server_time": pytest.approx(market.snapshot.now_ms, abs=1000)}
    assert posted.status_code == 405
    assert control.statistics().rest_requests == 7


# -- WebSocket -------------------------------------------------------------------------


async def test_subscribe_acks_then_books_and_trades_parse_as_the_codecs_records(
    nursery: trio.Nursery,
) -> None:
    market = gate_market()
    codec = codec_for(market)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "gate", market=market)
        assert endpoints.ws_url.endswith("/ws/v4/")
        async with connect(endpoints.ws_url.rstrip("/") + codec.ws_path(PAIRS)) as ws:
            messages = codec.subscribe_messages(PAIRS, trades=True, now_ms=market.snapshot.now_ms)
            assert len(messages) == 2
            acks: list[Any] = []
            quotes: dict[str, Quote] = {}
            books: list[Any] = []
            trades: list[tuple[Trade, Any]] = []
            await ws.send_message(messages[0])
            result, ack = await parsed(ws, codec)  # nothing comes before the first ack
            assert result.kind is FrameKind.ACK, result
            acks.append(ack)
            await ws.send_message(messages[1])
            while len(acks) < 2 or len(quotes) < len(PAIRS) or len(trades) < 2:
                result, message = await parsed(ws, codec)
                if result.kind is FrameKind.ACK:
                    acks.append(message)
                    continue
                assert result.kind is FrameKind.DATA, result
                [record] = result.records
                if isinstance(record, Quote):
                    quotes[record.symbol] = record
                    books.append(message)
                else:
                    assert isinstance(record, Trade)
                    trades.append((record, message))
            await ws.send_message(codec.ping_message(market.snapshot.now_ms) or "")
            pong, pong_message = await next_kind(ws, codec, FrameKind.PONG)
            for message in codec.unsubscribe_messages(PAIRS[1:], trades=True,
                                                      now_ms=market.snapshot.now_ms):
                await ws.send_message(message)
                await next_kind(ws, codec, FrameKind.ACK)
            subscriptions = control.subscriptions()
    assert set(quotes) == {"BTC/USDT", "ETH/USDT", "GT/USDT"}
    assert [a["channel"] for a in acks] == ["spot.book_ticker", "spot.trades"]
    for ack, request_id in zip(acks, (1, 2), strict=True):
        assert ack["event"] == "subscribe" and ack["result"] == {"status": "success"}
        assert ack["id"] == request_id and ack["payload"] == list(PAIRS)
        assert len(ack["conn_id"]) == 16 and len(ack["trace_id"]) == 32
    for book in books:
        assert book.keys() == BOOK_KEYS and book["result"].keys() == BOOK_RESULT_KEYS
        assert (book["channel"], book["event"]) == ("spot.book_ticker", "update")
        result = book["result"]
        assert all(isinstance(result[k], str) for k in "bBaA")
        assert isinstance(result["t"], int) and isinstance(result["u"], int)
        assert not result["b"].endswith("0") or "." not in result["b"]  # trimmed, as documented
    for quote in quotes.values():
        assert quote.venue == "gate" and 0 < quote.bid < quote.ask and quote.seq >= 1
    for trade, message in trades:
        assert message["result"].keys() == TRADE_RESULT_KEYS
        assert isinstance(message["result"]["create_time_ms"], str)
        assert len(message["result"]["price"].partition(".")[2]) == 10
        assert trade.symbol in quotes and trade.trade_id == str(message["result"]["id"])
    assert pong_message.keys() == {"time", "time_ms", "channel", "event", "error", "result"}
    assert pong.kind is FrameKind.PONG
    assert subscriptions == {1: frozenset({"spot.book_ticker.BTC_USDT", "spot.trades.BTC_USDT"})}
    stats = control.statistics()
    assert (stats.topics_subscribed, stats.topics_unsubscribed, stats.app_pings) == (6, 4, 1)
    assert stats.duplicate_subscriptions == stats.rejected_topics == 0


async def test_stale_time_unknown_pairs_channels_and_bad_json_parse_as_errors(
    nursery: trio.Nursery,
) -> None:
    market = gate_market(QUIET)
    codec = codec_for(market)
    now_ms = market.snapshot.now_ms
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "gate", market=market)
        async with connect(endpoints.ws_url) as ws:
            replies: list[tuple[Parsed, Any]] = []
            requests: list[str | bytes] = [
                *codec.subscribe_messages(["BTC_USDT"], trades=False, now_ms=now_ms - 61_000),
                *codec.subscribe_messages(["BTC_USDT"], trades=False, now_ms=now_ms + 120_000),
                codec.ping_message(now_ms - 300_000) or "",
                *codec.subscribe_messages(["BTC_USDT", "NOPE_USDT"], trades=False, now_ms=now_ms),
                dumps_request(now_ms, channel="spot.nope", payload=["BTC_USDT"]),
                dumps_request(now_ms, channel="spot.trades", event="subscrib", payload=["BTC_USDT"]),
                dumps_request(now_ms, channel="spot.trades", payload="BTC_USDT"),
                dumps_request(None, channel="spot.trades", payload=["BTC_USDT"]),
                "{not json",
            ]
            for request in requests:
                await ws.send_message(request)
                replies.append(await parsed(ws, codec))
            # less than a minute off is fine
            await ws.send_message(
                codec.subscribe_messages(["BTC_USDT"], trades=False, now_ms=now_ms - 55_000)[0])
            accepted, _ = await parsed(ws, codec)
            subscriptions = control.subscriptions()
    assert all(r.kind is FrameKind.ERROR for r, _ in replies), replies
    codes = [m["error"]["code"] for _, m in replies]
    assert codes == [2, 2, 2, 2, 2, 2, 1, 1, 1]
    texts = [m["error"]["message"] for _, m in replies]
    assert texts[0] == "gap between request Timestamp and server time exceeds 60" == texts[2]
    assert texts[3] == "unknown currency pair NOPE_USDT"
    assert "(id 1)" in replies[0][0].detail and replies[0][1]["result"] == {"status": "fail"}
    assert replies[0][1]["channel"] == "spot.book_ticker" and replies[0][1]["event"] == "subscribe"
    assert accepted.kind is FrameKind.ACK
    assert subscriptions == {1: frozenset({"spot.book_ticker.BTC_USDT"})}
    stats = control.statistics()
    assert (stats.topics_subscribed, stats.app_pings) == (1, 0)


def dumps_request(now_ms: int | None, *, channel: str, event: str = "subscribe",
                  payload: object) -> str:
    request: dict[str, object] = {"channel": channel, "event": event, "payload": payload}
    if now_ms is not None:
        request["time"] = now_ms // 1000
    return orjson.dumps(request).decode()


async def test_over_the_cap_and_refused_by_control_parse_as_errors(nursery: trio.Nursery) -> None:
    market = gate_market(QUIET)
    codec = codec_for(market)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "gate", market=market, max_topics=3)
        async with connect(endpoints.ws_url) as ws:
            now_ms = market.snapshot.now_ms
            [books] = codec.subscribe_messages(["BTC_USDT", "ETH_USDT"], trades=False, now_ms=now_ms)
            await ws.send_message(books)
            ok, _ = await parsed(ws, codec)
            [trades] = codec.subscribe_messages(["BTC_USDT", "ETH_USDT"], trades=False, now_ms=now_ms)
            trades = str(trades).replace("spot.book_ticker", "spot.trades")
            await ws.send_message(trades)
            over, over_message = await next_kind(ws, codec, FrameKind.ERROR)
            after_cap = control.subscriptions()
            control.reject_subscriptions(True)
            [more] = codec.subscribe_messages(["GT_USDT"], trades=False, now_ms=now_ms)
            await ws.send_message(more)
            refused, refused_message = await next_kind(ws, codec, FrameKind.ERROR)
            control.reject_subscriptions(False)
            await ws.send_message(more)
            accepted, _ = await next_kind(ws, codec, FrameKind.ACK)
            subscriptions = control.subscriptions()
    assert ok.kind is FrameKind.ACK and accepted.kind is FrameKind.ACK
    assert over_message["error"] == {"code": 2, "message": "too many subscriptions on this connection"}
    assert over_message["channel"] == "spot.trades" and over_message["id"] == 2
    assert refused_message["error"] == {"code": 2, "message": "unknown currency pair GT_USDT"}
    assert "code 2" in over.detail and "GT_USDT" in refused.detail
    assert after_cap == {1: frozenset({"spot.book_ticker.BTC_USDT", "spot.book_ticker.ETH_USDT"})}
    assert subscriptions == {1: after_cap[1] | {"spot.book_ticker.GT_USDT"}}
    stats = control.statistics()
    assert (stats.refused_over_cap, stats.refused_by_control, stats.rejected_topics) == (1, 1, 3)


async def test_malformed_frames_raise_the_codecs_frame_error(nursery: trio.Nursery) -> None:
    market = gate_market()
    codec = codec_for(market)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "gate", market=market)
        async with connect(endpoints.ws_url) as ws:
            for message in codec.subscribe_messages(["BTC_USDT"], trades=False,
                                                    now_ms=market.snapshot.now_ms):
                await ws.send_message(message)
            await next_kind(ws, codec, FrameKind.DATA)
            assert control.send_malformed(3) == 1
            errors: list[str] = []
            while len(errors) < 3:
                frame = await ws.get_message()
                try:
                    codec.parse(frame, 1)
                except FrameError as exc:
                    errors.append(str(exc))
            await ws.send_message(codec.ping_message(market.snapshot.now_ms) or "")
            await next_kind(ws, codec, FrameKind.PONG)
    assert "invalid JSON" in errors[0]
    assert "missing field 's'" in errors[1]
    assert "result: expected a JSON object" in errors[2]
    assert control.statistics().malformed_sent == 3


async def test_protocol_pings_keep_a_ponging_client_and_close_a_silent_one(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(
            nursery, "gate", market=gate_market(QUIET), ping_interval_s=0.05, pong_timeout_s=0.2,
        )
        async with connect(endpoints.ws_url):  # trio-websocket answers pings itself
            stats = await control.wait_for(lambda s: s.pongs_received >= 3)
        client, accepted = await RawClient.handshake(endpoints.ws_url, "/ws/v4/")
        async with client.stream:
            assert isinstance(accepted, wsproto.events.AcceptConnection)
            event = await client.next_event()
        no_slash, rejected = await RawClient.handshake(endpoints.ws_url, "/ws/v4")
        async with no_slash.stream:
            pass
    assert stats.pings_sent >= 3
    assert isinstance(event, wsproto.events.CloseConnection) and event.code == 1008
    assert client.pings
    assert isinstance(rejected, wsproto.events.RejectConnection) and rejected.status_code == 404
    assert control.statistics().closed_no_pong == 1


async def test_upgrade_notice_parses_as_notice_and_cuts_close_with_1001(
    nursery: trio.Nursery,
) -> None:
    market = gate_market(QUIET)
    codec = codec_for(market)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "gate", market=market)
        async with connect(endpoints.ws_url) as ws:
            await control.wait_for(lambda s: s.connections_open == 1)
            start = trio.current_time()
            assert control.announce_shutdown(grace_s=0.2) == 1
            notice, notice_message = await parsed(ws, codec)
            with pytest.raises(ConnectionClosed) as maintenance:
                await ws.get_message()
            elapsed = trio.current_time() - start
        async with connect(endpoints.ws_url) as ws:
            await control.wait_for(lambda s: s.connections_open == 1)
            assert control.force_cut() == 1
            with pytest.raises(ConnectionClosed) as cut:
                await ws.get_message()
    documented = orjson.loads((FRAMES / "upgrade_notice.json").read_bytes())
    assert notice.kind is FrameKind.NOTICE and "upgrade" in notice.detail
    assert notice_message.keys() == documented.keys()
    assert notice_message["result"] == documented["result"]
    for closed in (maintenance.value.reason, cut.value.reason):
        assert closed is not None and closed.code == 1001
    assert 0.15 <= elapsed < 1.5
    stats = control.statistics()
    assert (stats.notices_sent, stats.closed_maintenance, stats.closed_age_limit) == (1, 1, 1)


def test_config_holds_gates_documented_behaviour() -> None:
    config = SimVenueConfig.for_venue("gate")
    assert config is GateWire.config
    assert config.ping_interval_s is not None and config.client_ping_timeout_s is None
    assert config.max_topics is None and config.max_incoming_per_s is None
    assert config.max_connection_age_s is None and config.subscribe_timeout_s is None
    assert GateWire.ws_path == GateWire.ws_url_suffix == "/ws/v4/"


# -- the real connector ----------------------------------------------------------------


class Harness:
    """The real connector (trio-websocket, GateCodec) against run_sim_venues' Gate."""

    def __init__(self, control: SimVenueControl) -> None:
        self.control = control
        self.inbox = ConflatingChannel[tuple[str, str], Quote | VenueDown]("s", 1000)
        self.status = ConnectionStatus("gate", 0)

    async def quotes(self) -> int:
        """Wait for fresh quotes (anything queued before is dropped first)."""
        self.inbox.receive_batch_nowait()
        while True:
            batch = self.inbox.receive_batch_nowait()
            fresh = sum(isinstance(v, Quote) for v in batch.values())
            if fresh:
                return fresh
            await trio.sleep(0.02)


async def run_against_connector(scenario: Any) -> Harness:
    natives = ("BTC_USDT", "ETH_USDT", "GT_USDT")
    codec = GateCodec({n: SymbolInfo("gate", n, n.split("_")[0], n.split("_")[1])
                       for n in natives})
    harness = Harness(SimVenueControl())
    sinks = QuoteSinks([harness.inbox], DropChannel[object]("rec", 10_000))
    vconf = VenueConfig(rest_url="x", ws_url="x", silence_reconnect_s=1.5)
    cconf = ConnectorConfig(backoff_initial_s=0.05, backoff_max_s=0.2)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(functools.partial(
                run_sim_venues, ("gate",), seed=1, controls={"gate": harness.control},
                configs={"gate": replace(GateWire.config, publish_interval_s=0.005)}))
            url = endpoints["gate"].ws_url.rstrip("/") + codec.ws_path(natives)
            plan = ConnectionPlan("gate", 0, url, natives, codec, True)
            connect_ws = websocket_connector(message_queue_size=64, connect_timeout_s=5)
            await nursery.start(functools.partial(
                run_connector, plan, sinks, harness.status, venue_config=vconf, config=cconf,
                connect=connect_ws, rng=random.Random(2)))
            await scenario(harness)
            nursery.cancel_scope.cancel()
    gc.collect()  # a leaked socket would surface here as a ResourceWarning (an error here)
    return harness


def subscribed_per_connection(control: SimVenueControl) -> list[list[str]]:
    per_connection: dict[int, list[str]] = {}
    for event in control.subscription_log():
        if event.action == "subscribe":
            per_connection.setdefault(event.connection, []).append(event.topic)
    return [sorted(topics) for _, topics in sorted(per_connection.items())]


EXPECTED_TOPICS = sorted(f"{channel}.{n}" for n in ("BTC_USDT", "ETH_USDT", "GT_USDT")
                         for channel in ("spot.book_ticker", "spot.trades"))


async def test_connector_gets_quotes_and_resubscribes_after_drops_without_duplicates() -> None:
    async def scenario(h: Harness) -> None:
        for round_ in range(1, 4):
            def subscribed(s: SimVenueStatistics, r: int = round_) -> bool:
                return s.connections_accepted == r and s.topics_subscribed == r * 6

            await h.control.wait_for(subscribed)
            assert await h.quotes() >= 1
            if round_ < 3:
                h.control.drop_connections()

    h = await run_against_connector(scenario)
    stats = h.control.statistics()
    assert stats.connections_accepted == 3
    assert stats.duplicate_subscriptions == stats.rejected_topics == 0
    assert subscribed_per_connection(h.control) == [EXPECTED_TOPICS] * 3
    assert h.status.reconnects == 2 and h.status.acks == 6
    assert h.status.venue_errors == h.status.bad_frames == h.status.unknown_symbols == 0


async def test_connector_rotates_on_the_upgrade_notice_and_reconnects_after_a_cut() -> None:
    async def scenario(h: Harness) -> None:
        await h.control.wait_for(lambda s: s.topics_subscribed == 6)
        await h.quotes()
        assert h.control.announce_shutdown(grace_s=5.0) == 1
        # the successor subscribes while the old connection still delivers, then takes over
        await h.control.wait_for(lambda s: s.connections_accepted == 2 and s.topics_subscribed == 12)
        await h.control.wait_for(lambda s: s.connections_open == 1)
        assert await h.quotes() >= 1
        assert h.control.force_cut() == 1
        await h.control.wait_for(lambda s: s.connections_accepted == 3 and s.topics_subscribed == 18)
        assert await h.quotes() >= 1

    h = await run_against_connector(scenario)
    stats = h.control.statistics()
    assert (stats.notices_sent, stats.closed_maintenance, stats.closed_age_limit) == (1, 0, 1)
    assert stats.duplicate_subscriptions == stats.rejected_topics == 0
    assert subscribed_per_connection(h.control) == [EXPECTED_TOPICS] * 3
    assert (h.status.notices, h.status.rotations, h.status.reconnects) == (1, 1, 1)
    assert h.status.venue_errors == h.status.bad_frames == 0
