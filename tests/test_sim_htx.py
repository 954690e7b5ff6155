"""The simulated HTX venue against the HTX codec and the real connector.

Every server frame is gzip bytes; each is fed to ``HtxCodec.parse`` exactly as the
connector would. I/O tests run on loopback in real time with short configured
intervals, each under an absolute ``trio.fail_after``.
"""

from __future__ import annotations

import base64
import functools
import gc
import gzip
import random
from dataclasses import replace
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
from actors.records import Quote, SymbolInfo, Trade, VenueDown
from actors.venues import htx as htx_codec
from actors.venues.base import FrameError, FrameKind, Parsed
from actors.venues.htx import HtxCodec
from app.sim import Market, MarketParams, SimVenueControl, SymbolSpec, run_sim_venues
from app.sim.htx import HtxWire
from app.sim.wire import ConnectionView
from tests.test_sim import connect, start_venue

TIMEOUT = 5.0
FRAMES = Path(__file__).parent / "data" / "frames" / "htx"
QUIET = MarketParams(max_update_rate=0.0, max_trade_rate=0.0, arb_probability=0.0)
BUSY = MarketParams(max_trade_rate=20.0, arb_probability=0.0)
#: a small universe with a listed symbol that does not trade on HTX (ltcht, as documented)
UNIVERSE = (
    SymbolSpec("BTC", "USDT", 60000.0, 2e9),
    SymbolSpec("ETH", "USDT", 3000.0, 1e9),
    SymbolSpec("LTC", "HT", 12.9, 1e7, halted=frozenset({"htx"})),
    SymbolSpec("HTX", "USDT", 0.015, 2e6),
)
BBO_KEYS = {"ch", "ts", "tick"}
BBO_TICK_KEYS = {"seqId", "ask", "askSize", "bid", "bidSize", "quoteTime", "symbol"}
TRADE_TICK_KEYS = {"id", "ts", "data"}
TRADE_KEYS = {"id", "ts", "tradeId", "amount", "price", "direction"}


# -- helpers ---------------------------------------------------------------------------


def codec_for(market: Market) -> HtxCodec:
    """A codec mapping every symbol the market lists on HTX."""
    return HtxCodec({
        f"{s.base}{s.quote}".lower(): SymbolInfo("htx", f"{s.base}{s.quote}".lower(), s.base, s.quote)
        for s in market.listed("htx")
    })


def gunzip(message: str | bytes) -> Any:
    assert isinstance(message, bytes), f"HTX sends binary frames only, got {message!r}"
    return orjson.loads(gzip.decompress(message))


async def receive(ws: WebSocketConnection, codec: HtxCodec) -> tuple[Parsed, Any]:
    """The next frame, parsed by the codec, with its gunzipped JSON."""
    message = await ws.get_message()
    return codec.parse(message, 0), gunzip(message)


async def next_reply(ws: WebSocketConnection, codec: HtxCodec) -> tuple[Parsed, Any]:
    """The next frame that is not market data or a server ping."""
    while True:
        parsed, body = await receive(ws, codec)
        if parsed.kind not in (FrameKind.DATA, FrameKind.PING):
            return parsed, body


async def closed_code(ws: WebSocketConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    return closed.value.reason.code, closed.value.reason.reason or ""


# -- REST discovery ----------------------------------------------------------------------


async def test_rest_discovery_parses_with_the_codec_and_drops_non_trading_symbols(
    nursery: trio.Nursery,
) -> None:
    market = Market(UNIVERSE, venues=("htx",), seed=2)
    with trio.fail_after(TIMEOUT):
        endpoints, _ = await start_venue(nursery, "htx", market=market)
        instruments_request, tickers_request = htx_codec.discovery_requests()
        async with httpx.AsyncClient(base_url=endpoints.rest_url) as http:
            instruments = await http.get(instruments_request.path, params=instruments_request.params)
            tickers = await http.get(tickers_request.path, params=tickers_request.params)
            incremental = (await http.get(instruments_request.path, params={"ts": "1"})).json()
            bad_ts = (await http.get(instruments_request.path, params={"ts": "soon"})).json()
            timestamp = (await http.get("/v1/common/timestamp")).json()
            missing = await http.get("/v1/common/symbols")
            posted = await http.post(tickers_request.path)
    infos = htx_codec.parse_instruments(instruments.content, {})
    assert sorted((i.native, i.symbol) for i in infos) == [
        ("btcusdt", "BTC/USDT"), ("ethusdt", "ETH/USDT"), ("htxusdt", "HTX/USDT")]
    raw = instruments.json()
    documented = orjson.loads((FRAMES / "settings_common_symbols.json").read_bytes())
    assert raw.keys() == documented.keys() and isinstance(raw["ts"], str) and raw["full"] == 1
    assert all(entry.keys() == documented["data"][0].keys() for entry in raw["data"])
    halted = next(e for e in raw["data"] if e["sc"] == "ltcht")
    assert (halted["state"], halted["te"], halted["bc"], halted["qc"]) == ("suspend", False, "ltc", "ht")
    volumes = htx_codec.parse_volumes(tickers.content)
    assert volumes.keys() == {"btcusdt", "ethusdt", "htxusdt"}
    assert volumes["btcusdt"] == pytest.approx(market.quote_volume_24h("htx", "BTC/USDT"))
    assert volumes["btcusdt"] > volumes["ethusdt"] > volumes["htxusdt"] > 0
    ticker_keys = orjson.loads((FRAMES / "market_tickers.json").read_bytes())["data"][0].keys()
    assert all(t.keys() == ticker_keys for t in tickers.json()["data"])
    assert all(not isinstance(v, str) for t in tickers.json()["data"] for k, v in t.items() if k != "symbol")
    assert incremental["status"] == "ok" and incremental["data"] == [] and incremental["full"] == 0
    with pytest.raises(FrameError, match="invalid-parameter"):
        htx_codec.parse_instruments(orjson.dumps(bad_ts), {})
    assert timestamp["status"] == "ok" and isinstance(timestamp["data"], int)
    assert (missing.status_code, posted.status_code) == (404, 405)


# -- WebSocket protocol ----------------------------------------------------------------


async def test_codec_subscriptions_are_acked_then_bbo_and_trades_parse_as_documented(
    nursery: trio.Nursery,
) -> None:
    market = Market(venues=("htx",), seed=3, params=BUSY)
    codec = codec_for(market)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "htx", market=market)
        assert endpoints.ws_url.endswith("/ws") and codec.ws_path(["btcusdt"]) == ""
        async with connect(endpoints.ws_url + codec.ws_path(["btcusdt"])) as ws:
            for message in codec.subscribe_messages(["btcusdt", "ethusdt"], trades=True):
                assert isinstance(message, str)
                await ws.send_message(message)
            acks: list[Any] = []
            books: dict[str, tuple[Quote, Any]] = {}
            trades: list[tuple[Trade, Any]] = []
            while len(acks) < 4 or len(books) < 2 or not trades:
                parsed, body = await receive(ws, codec)
                if parsed.kind is FrameKind.ACK:
                    acks.append(body)
                    continue
                assert parsed.kind is FrameKind.DATA, (parsed, body)
                assert len(acks) >= 1  # nothing flows before the first subscription
                for record in parsed.records:
                    if isinstance(record, Quote):
                        books[record.symbol] = (record, body)
                    else:
                        trades.append((record, body))
    assert [(a["id"], a["status"], a["subbed"]) for a in acks] == [
        ("1", "ok", "market.btcusdt.bbo"), ("2", "ok", "market.btcusdt.trade.detail"),
        ("3", "ok", "market.ethusdt.bbo"), ("4", "ok", "market.ethusdt.trade.detail")]
    assert all(a.keys() == {"id", "status", "subbed", "ts"} for a in acks)
    assert books.keys() == {"BTC/USDT", "ETH/USDT"}
    for symbol, (quote, body) in books.items():
        native = symbol.replace("/", "").lower()
        assert body.keys() == BBO_KEYS and body["tick"].keys() == BBO_TICK_KEYS
        assert body["ch"] == f"market.{native}.bbo" and body["tick"]["symbol"] == native
        tick = body["tick"]
        assert all(isinstance(tick[k], float | int) for k in ("ask", "askSize", "bid", "bidSize"))
        assert 0 < quote.bid < quote.ask and quote.seq == tick["seqId"] > 0
        assert quote.venue_ts == tick["quoteTime"] <= body["ts"]
    trade, body = trades[0]
    assert body.keys() == BBO_KEYS and body["tick"].keys() == TRADE_TICK_KEYS
    assert all(item.keys() == TRADE_KEYS for item in body["tick"]["data"])
    assert all(item["direction"] in ("buy", "sell") for item in body["tick"]["data"])
    assert isinstance(body["tick"]["data"][0]["id"], float)  # the obsolete id, as documented
    assert trade.symbol in books and trade.price > 0 and trade.trade_id.isdigit()
    stats = control.statistics()
    assert (stats.topics_subscribed, stats.duplicate_subscriptions, stats.rejected_topics) == (4, 0, 0)


async def test_server_pings_are_answered_with_the_codecs_pong_or_the_connection_closes(
    nursery: trio.Nursery,
) -> None:
    market = Market(venues=("htx",), seed=1, params=QUIET)
    codec = codec_for(market)
    seen: list[Parsed] = []

    async def answer(ws: WebSocketConnection, reply: Any) -> None:
        """Answer every ping with ``reply(parsed)`` until the venue closes the socket."""
        try:
            while True:
                parsed = codec.parse(await ws.get_message(), 0)
                seen.append(parsed)
                if parsed.kind is FrameKind.PING:
                    assert parsed.reply is not None
                    await ws.send_message(reply(parsed))
        except ConnectionClosed:
            pass

    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "htx", market=market, app_ping_interval_s=0.05)
        async with connect(endpoints.ws_url) as ponger, connect(endpoints.ws_url) as mute, \
                connect(endpoints.ws_url) as liar, trio.open_nursery() as inner:
            inner.start_soon(answer, ponger, lambda p: p.reply)
            inner.start_soon(answer, liar, lambda p: orjson.dumps({"pong": int(p.detail) + 1}).decode())
            pings = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    pings.append(codec.parse(await mute.get_message(), 0))
            mute_close = closed.value.reason
            await control.wait_for(lambda s: s.closed_no_pong == 2)
            await ponger.send_message('{"ping": 42}')  # a client ping gets the matching pong
            while not any(p.kind is FrameKind.PONG for p in seen):
                await trio.sleep(0.01)
            stats = await control.wait_for(lambda s: s.app_pongs_received >= 3)
            assert ponger.closed is None and liar.closed is not None
            inner.cancel_scope.cancel()
    assert mute_close.code == 1008 and "pong" in (mute_close.reason or "")
    assert [p.kind for p in pings] == [FrameKind.PING, FrameKind.PING]
    assert [p.detail for p in seen if p.kind is FrameKind.PONG] == ["42"]
    assert stats.closed_no_pong == 2 and stats.app_pings_sent >= 7


async def test_errors_unsubscribe_duplicates_and_topic_lists_answer_as_htx_documents(
    nursery: trio.Nursery,
) -> None:
    market = Market(UNIVERSE, venues=("htx",), seed=1, params=QUIET)
    codec = codec_for(market)
    requests = [
        ('{"sub":"market.nosuchusdt.bbo","id":"a"}', [(FrameKind.ERROR, "invalid topic market.nosuchusdt.bbo")]),
        ('{"sub":"market.BTCUSDT.bbo","id":"b"}', [(FrameKind.ERROR, "invalid topic market.BTCUSDT.bbo")]),
        ('{"sub":"market.ltcht.bbo","id":"c"}', [(FrameKind.ERROR, "symbol trade not open now")]),
        ("sub market.btcusdt.bbo", [(FrameKind.ERROR, "not json string")]),
        ('{"unsub":"market.btcusdt.bbo","id":"d"}', [(FrameKind.ERROR, "unsub with not subbed topic")]),
        ('{"sub":["market.btcusdt.bbo","market.ethusdt.bbo"],"id":"e"}',
         [(FrameKind.ACK, "market.btcusdt.bbo"), (FrameKind.ACK, "market.ethusdt.bbo")]),
        ('{"sub":"market.btcusdt.bbo","id":"f"}', [(FrameKind.ACK, "market.btcusdt.bbo")]),
        ('{"unsub":"market.ethusdt.bbo","id":"g"}', [(FrameKind.ACK, "market.ethusdt.bbo")]),
        ('{"pong":"later"}', [(FrameKind.ERROR, "invalid ping")]),
        ('{"hello":1,"id":"h"}', [(FrameKind.ERROR, "invalid topic")]),
    ]
    answers = []
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "htx", market=market)
        async with connect(endpoints.ws_url) as ws:
            for request, expected in requests:
                await ws.send_message(request)
                for _ in expected:
                    answers.append(await next_reply(ws, codec))
            subscriptions = control.subscriptions()
    expected_all = [e for _, expected in requests for e in expected]
    assert [p.kind for p, _ in answers] == [kind for kind, _ in expected_all]
    for (parsed, body), (kind, text) in zip(answers, expected_all, strict=True):
        if kind is FrameKind.ERROR:
            assert body["status"] == "error" and body["err-code"] == "bad-request"
            assert body["err-msg"] == text and text in parsed.detail
        else:
            assert text in (body.get("subbed"), body.get("unsubbed"))
    assert answers[0][1]["id"] == "a" and answers[0][1].keys() == {"id", "status", "err-code", "err-msg", "ts"}
    assert "id" not in answers[3][1]  # not JSON: nothing to echo
    assert subscriptions == {1: frozenset({"market.btcusdt.bbo"})}
    stats = control.statistics()
    assert (stats.topics_subscribed, stats.duplicate_subscriptions, stats.topics_unsubscribed,
            stats.rejected_topics) == (2, 1, 1, 3)


async def test_a_subscription_over_the_cap_or_refused_by_control_parses_as_error(
    nursery: trio.Nursery,
) -> None:
    market = Market(venues=("htx",), seed=1, params=QUIET)
    codec = codec_for(market)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "htx", market=market, max_topics=2)
        async with connect(endpoints.ws_url) as ws, connect(endpoints.ws_url) as other:
            for message in codec.subscribe_messages(["btcusdt"], trades=True):
                await ws.send_message(message)
            ok = [await next_reply(ws, codec), await next_reply(ws, codec)]
            (over,) = codec.subscribe_messages(["ethusdt"], trades=False)
            await ws.send_message(over)
            capped = await next_reply(ws, codec)
            control.reject_subscriptions(True)
            (refused_message,) = codec.subscribe_messages(["solusdt"], trades=False)
            await other.send_message(refused_message)
            refused = await next_reply(other, codec)
            subscriptions = control.subscriptions()
    assert [p.kind for p, _ in ok] == [FrameKind.ACK, FrameKind.ACK]
    assert capped[0].kind is FrameKind.ERROR and capped[1]["err-msg"] == "429 too many request"
    assert capped[1]["id"] == orjson.loads(over)["id"]
    assert refused[0].kind is FrameKind.ERROR
    assert refused[1]["err-msg"] == "invalid topic market.solusdt.bbo"
    assert subscriptions == {1: frozenset({"market.btcusdt.bbo", "market.btcusdt.trade.detail"}),
                             2: frozenset()}
    stats = control.statistics()
    assert (stats.refused_over_cap, stats.refused_by_control, stats.rejected_topics) == (1, 1, 2)


async def test_pull_requests_answer_recent_trades_at_most_once_per_100_ms(nursery: trio.Nursery) -> None:
    market = Market(venues=("htx",), seed=4, params=BUSY)
    codec = codec_for(market)
    with trio.fail_after(TIMEOUT):
        endpoints, _ = await start_venue(nursery, "htx", market=market)
        async with connect(endpoints.ws_url) as ws:
            while not any(t.venue == "htx" and t.symbol == "BTC/USDT" for t in market.snapshot.trades):
                await trio.sleep(0.02)
            await ws.send_message('{"req":"market.btcusdt.trade.detail","id":"r1"}')
            await ws.send_message('{"req":"market.btcusdt.trade.detail","id":"r2"}')
            pulled, too_soon = await next_reply(ws, codec), await next_reply(ws, codec)
            await trio.sleep(0.15)
            await ws.send_message('{"req":"market.btcusdt.bbo","id":"r3"}')
            no_bbo = await next_reply(ws, codec)
    assert pulled[0].kind is FrameKind.INFO
    body = pulled[1]
    assert (body["id"], body["status"], body["rep"]) == ("r1", "ok", "market.btcusdt.trade.detail")
    assert body["data"] and all(item.keys() == TRADE_KEYS for item in body["data"])
    assert [i["ts"] for i in body["data"]] == sorted((i["ts"] for i in body["data"]), reverse=True)
    assert too_soon[0].kind is FrameKind.ERROR and too_soon[1]["err-msg"] == "429 too many request"
    assert no_bbo[0].kind is FrameKind.ERROR and no_bbo[1]["id"] == "r3"


async def test_malformed_frames_are_gzip_the_codec_rejects(nursery: trio.Nursery) -> None:
    market = Market(venues=("htx",), seed=5)
    codec = codec_for(market)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "htx", market=market)
        async with connect(endpoints.ws_url) as ws:
            await ws.send_message('{"sub":"market.btcusdt.bbo","id":"1"}')
            assert (await next_reply(ws, codec))[0].kind is FrameKind.ACK
            assert control.send_malformed(6) == 1
            errors: list[str] = []
            while len(errors) < 6:
                message = await ws.get_message()
                assert isinstance(message, bytes)
                try:
                    codec.parse(message, 0)
                except FrameError as exc:
                    errors.append(str(exc))
            await ws.send_message('{"ping": 7}')
            after = await next_reply(ws, codec)
    assert sum("truncated gzip" in e for e in errors) == 2
    assert sum("invalid JSON" in e for e in errors) == 2
    assert sum("seqId" in e for e in errors) == 2
    assert after[0].kind is FrameKind.PONG and after[1] == {"pong": 7}
    wire = HtxWire(market)
    view = ConnectionView("sim-htx-9")
    assert len({wire.malformed(view, n, market.snapshot) for n in range(9)}) == 9


async def test_force_cut_and_maintenance_close_with_1001_and_no_notice(nursery: trio.Nursery) -> None:
    market = Market(venues=("htx",), seed=1, params=QUIET)
    with trio.fail_after(TIMEOUT):
        endpoints, control = await start_venue(nursery, "htx", market=market)
        async with connect(endpoints.ws_url) as a, connect(endpoints.ws_url) as b:
            await control.wait_for(lambda s: s.connections_open == 2)
            assert control.force_cut() == 2
            cut = [await closed_code(a), await closed_code(b)]
        async with connect(endpoints.ws_url) as c:
            await control.wait_for(lambda s: s.connections_open == 1)
            assert control.announce_shutdown(grace_s=0.05) == 1
            maintenance = await closed_code(c)  # no notice frame: straight to the close
    assert all(code == 1001 for code, _ in cut)
    assert maintenance[0] == 1001
    stats = control.statistics()
    assert (stats.closed_age_limit, stats.closed_maintenance, stats.notices_sent) == (2, 1, 0)
    assert HtxWire(market).notice(ConnectionView("x"), 0) is None


def test_config_follows_the_documented_heartbeat_and_no_undocumented_limits() -> None:
    config = HtxWire.config
    assert (config.app_ping_interval_s, config.max_missed_pongs) == (5.0, 2)
    assert config.ping_interval_s is None and config.client_ping_timeout_s is None
    assert config.max_topics is None and config.max_connection_age_s is None
    assert config.subscribe_timeout_s is None and config.max_incoming_per_s is None
    assert HtxWire.ws_path == HtxWire.ws_url_suffix == "/ws"


def test_gzip_members_carry_the_documented_header() -> None:
    """The sim's gzip members start like the documented one: mtime 0, best compression, Unix."""
    documented = base64.b64decode((FRAMES / "bbo.json.gz.b64").read_bytes())
    market = Market(venues=("htx",), seed=1)
    frame = HtxWire(market).encode_book(market.snapshot.books[("htx", "BTC/USDT")], market.snapshot)
    assert frame[:10] == documented[:10]


# -- the real connector ----------------------------------------------------------------


async def test_connector_answers_pings_and_resubscribes_after_drops_and_cuts() -> None:
    natives = ("btcusdt", "ethusdt")
    control = SimVenueControl()
    inbox = ConflatingChannel[tuple[str, str], Quote | VenueDown]("s", 1000)
    sinks = QuoteSinks([inbox], DropChannel[object]("rec", 10_000))
    status = ConnectionStatus("htx", 0)
    codec = HtxCodec({n: SymbolInfo("htx", n, n[:-4].upper(), "USDT") for n in natives})
    vconf = VenueConfig(rest_url="x", ws_url="x", silence_reconnect_s=2.0)
    cconf = ConnectorConfig(backoff_initial_s=0.05, backoff_max_s=0.2)
    config = replace(HtxWire.config, app_ping_interval_s=0.1)

    async def quotes_for_both() -> None:
        inbox.receive_batch_nowait()
        seen: set[str] = set()
        while seen != {"BTC/USDT", "ETH/USDT"}:
            await trio.sleep(0.02)
            seen |= {v.symbol for v in inbox.receive_batch_nowait().values() if isinstance(v, Quote)}

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(functools.partial(
                run_sim_venues, ("htx",), seed=1, controls={"htx": control}, configs={"htx": config}))
            url = endpoints["htx"].ws_url.rstrip("/") + codec.ws_path(natives)
            plan = ConnectionPlan("htx", 0, url, natives, codec, True)
            connect_fn = websocket_connector(message_queue_size=64, connect_timeout_s=5)
            await nursery.start(functools.partial(
                run_connector, plan, sinks, status, venue_config=vconf, config=cconf,
                connect=connect_fn, rng=random.Random(2)))
            for round_, fault in enumerate((control.drop_connections, control.force_cut, None)):
                await control.wait_for(lambda s, r=round_: s.connections_accepted == r + 1
                                       and s.topics_subscribed >= (r + 1) * 4)
                await quotes_for_both()
                if fault is not None:
                    await control.wait_for(lambda s: s.app_pongs_received >= 1)
                    assert fault() == 1
            nursery.cancel_scope.cancel()
    gc.collect()  # a leaked socket would surface here as a ResourceWarning (an error in this suite)
    stats = control.statistics()
    assert stats.connections_accepted == 3 and stats.closed_age_limit == 1
    assert stats.duplicate_subscriptions == 0 and stats.rejected_topics == 0
    assert stats.closed_no_pong == 0 and stats.app_pongs_received >= 2
    assert status.venue_errors == 0 and status.bad_frames == 0 and status.unknown_symbols == 0
    assert status.pings_answered >= 2 and status.acks == 12 and status.reconnects == 2
    per_connection: dict[int, list[str]] = {}
    for event in control.subscription_log():
        assert event.action == "subscribe"
        per_connection.setdefault(event.connection, []).append(event.topic)
    expected = sorted(f"market.{n}.{kind}" for n in natives for kind in ("bbo", "trade.detail"))
    assert [sorted(topics) for topics in per_connection.values()] == [expected] * 3
