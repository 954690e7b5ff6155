"""The real connector (trio-websocket, real codecs) against the simulated venues on
loopback: resubscription after forced drops, no duplicate subscriptions, silent venues
reconnected, sockets closed (no leaked socket warnings)."""

from __future__ import annotations

import functools
import gc
import random

import trio
import trio_websocket

from actors.channels import ConflatingChannel, DropChannel
from actors.config import ConnectorConfig, VenueConfig
from actors.connector import ConnectionPlan, ConnectionStatus, QuoteSinks, run_connector, websocket_connector
from actors.records import Quote, SymbolInfo, VenueDown
from actors.venues.binance import BinanceCodec
from actors.venues.bybit import BybitCodec
from app.sim.server import SimVenueControl, run_sim_venues

NATIVES = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


async def _run(venue: str, rounds: int, silent: bool = False) -> tuple[SimVenueControl, ConnectionStatus, int]:
    control = SimVenueControl()
    inbox = ConflatingChannel[tuple[str, str], Quote | VenueDown]("s", 1000)
    sinks = QuoteSinks([inbox], DropChannel[object]("rec", 10_000))
    status = ConnectionStatus(venue, 0)
    symbols = {n: SymbolInfo(venue, n, n[:-4], "USDT") for n in NATIVES}
    codec = BinanceCodec(symbols) if venue == "binance" else BybitCodec(symbols)
    vconf = VenueConfig(rest_url="x", ws_url="x", silence_reconnect_s=1.5)
    cconf = ConnectorConfig(backoff_initial_s=0.05, backoff_max_s=0.2)
    quotes_seen = 0
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(functools.partial(run_sim_venues, (venue,), seed=1,
                                                              controls={venue: control}))
            ep = endpoints[venue]
            url = ep.ws_url.rstrip("/") + codec.ws_path(NATIVES)
            plan = ConnectionPlan(venue, 0, url, NATIVES, codec, True)
            connect = websocket_connector(message_queue_size=64, connect_timeout_s=5)
            await nursery.start(functools.partial(
                run_connector, plan, sinks, status, venue_config=vconf, config=cconf, connect=connect,
                rng=random.Random(2)))
            for round_ in range(rounds):
                await control.wait_for(lambda s, r=round_: s.connections_accepted == r + 1
                                       and s.topics_subscribed >= (r + 1) * len(NATIVES) * 2)
                while not inbox.receive_batch_nowait():
                    await trio.sleep(0.05)
                quotes_seen += 1
                if silent and round_ == 0:
                    control.go_silent()
                    await control.wait_for(lambda s: s.connections_accepted == 2)
                    control.resume()
                elif round_ < rounds - 1:
                    control.drop_connections()
            nursery.cancel_scope.cancel()
    gc.collect()  # a leaked socket would surface here as a ResourceWarning (an error in this suite)
    return control, status, quotes_seen


async def test_binance_connector_resubscribes_after_every_drop_without_duplicates() -> None:
    control, status, quotes_seen = await _run("binance", rounds=4)
    stats = control.statistics()
    assert stats.connections_accepted == 4
    assert stats.duplicate_subscriptions == 0
    assert stats.rejected_topics == 0
    assert status.reconnects == 3 and quotes_seen == 4
    per_connection = {}
    for event in control.subscription_log():
        if event.action == "subscribe":
            per_connection.setdefault(event.connection, []).append(event.topic)
    expected = sorted(f"{n.lower()}@{kind}" for n in NATIVES for kind in ("bookTicker", "trade"))
    assert [sorted(topics) for topics in per_connection.values()] == [expected] * 4


async def test_bybit_connector_heartbeats_and_resubscribes() -> None:
    control, status, _ = await _run("bybit", rounds=3)
    stats = control.statistics()
    assert stats.connections_accepted == 3
    assert stats.duplicate_subscriptions == 0 and stats.rejected_topics == 0
    assert status.venue_errors == 0 and status.bad_frames == 0


async def test_silent_venue_is_detected_and_reconnected() -> None:
    control, status, _ = await _run("bybit", rounds=2, silent=True)
    assert status.stale_reconnects == 1
    assert control.statistics().connections_accepted == 2


async def test_wss_connect_seam_speaks_tls_and_closes_its_socket() -> None:
    """The real venues are all wss://: the connect seam does TLS with certificate checks."""
    import ssl

    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def echo(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        message = await ws.get_message()
        await ws.send_message(f"echo {message} {request.path}")
        await ws.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(
                trio_websocket.serve_websocket, echo, "127.0.0.1", 0, ssl_context=server_context))
            port = server.port
            connect = websocket_connector(message_queue_size=4, connect_timeout_s=5, ssl_context=client_context)
            async with connect(f"wss://localhost:{port}/ws?x=1") as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "echo hello /ws?x=1"
            untrusted = websocket_connector(message_queue_size=4, connect_timeout_s=5)
            try:
                async with untrusted(f"wss://localhost:{port}/ws"):
                    raise AssertionError("an untrusted certificate was accepted")
            except (trio.BrokenResourceError, ssl.SSLError, trio_websocket.HandshakeError):
                pass
            nursery.cancel_scope.cancel()
    gc.collect()
