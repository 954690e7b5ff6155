"""Issue 3: the connector's reconnect, resubscription, staleness, notice handling and
gap-free rotation, on virtual time, with every venue's real codec and documented frames
(JSON, protobuf, gzip; client pings, server pings; token bootstrap)."""

from __future__ import annotations

import functools
import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from actors.channels import ConflatingChannel, DropChannel
from actors.config import ConnectorConfig, VenueConfig
from actors.connector import ConnectionPlan, ConnectionStatus, QuoteSinks, run_connector
from actors.records import Quote, SymbolInfo, VenueDown
from actors.venues.base import FrameKind, VenueCodec
from actors.venues.registry import VENUES
from tests.fakes import FakeVenue, virtual_clock_ns

FRAMES = Path(__file__).parent / "data" / "frames"


def _text(venue: str, name: str) -> str:
    return (FRAMES / venue / name).read_text()


@dataclass(frozen=True)
class Family:
    book: Callable[[], str | bytes]
    notice: Callable[[], str | bytes] | None = None
    greeting: str | None = None


FAMILIES = {
    "binance": Family(lambda: _text("binance", "book_ticker.json"),
                      lambda: _text("binance", "server_shutdown.json")),
    "bybit": Family(lambda: _text("bybit", "orderbook_1_snapshot.json")),
    "okx": Family(lambda: _text("okx", "bbo_tbt.json"), lambda: _text("okx", "notice.json")),
    "mexc": Family(lambda: bytes.fromhex("".join(_text("mexc", "book_ticker.pb.hex").split()))),
    "gate": Family(lambda: _text("gate", "book_ticker.json"), lambda: _text("gate", "upgrade_notice.json")),
    "kucoin": Family(lambda: _text("kucoin", "level1.json"), greeting=_text("kucoin", "welcome.json")),
    "bitget": Family(lambda: _text("bitget", "books1_snapshot.json")),
    "htx": Family(lambda: gzip.compress(_text("htx", "bbo.json").encode())),
}
CONNECTOR = ConnectorConfig(backoff_initial_s=1.0, backoff_max_s=8.0, batch_max_delay_s=0.5)


def test_every_registered_venue_has_a_family() -> None:
    assert set(FAMILIES) == set(VENUES)


def _setup(venue: str, **vconf: float) -> tuple[FakeVenue, ConnectionPlan, QuoteSinks, ConnectionStatus,
                                                ConflatingChannel[tuple[str, str], Quote | VenueDown]]:
    family = FAMILIES[venue]
    module = VENUES[venue]
    # the documented frame names its own native symbol: ask the codec which
    probe = module.codec_factory({})
    unknown = probe.parse(family.book(), 0)
    assert unknown.kind is FrameKind.UNKNOWN_SYMBOL, unknown
    native = unknown.detail
    symbols = {native: SymbolInfo(venue, native, "AAA", "BBB")}
    codec: VenueCodec = module.codec_factory(symbols)
    parsed = codec.parse(family.book(), 0)
    assert parsed.kind is FrameKind.DATA and isinstance(parsed.records[0], Quote)
    inbox = ConflatingChannel[tuple[str, str], Quote | VenueDown]("shard", 100)
    sinks = QuoteSinks([inbox], DropChannel[object]("rec", 10_000))
    plan = ConnectionPlan(venue, 0, "ws://fake/", (native,), codec, True)
    return FakeVenue(greeting=family.greeting), plan, sinks, ConnectionStatus(venue, 0), inbox


async def _start(nursery: trio.Nursery, venue: FakeVenue, plan: ConnectionPlan, sinks: QuoteSinks,
                 status: ConnectionStatus, vconf: VenueConfig) -> None:
    await nursery.start(functools.partial(
        run_connector, plan, sinks, status, venue_config=vconf, config=CONNECTOR, connect=venue.connect,
        clock_ns=virtual_clock_ns, rng=random.Random(3)))


async def _feed(venue: FakeVenue, frame: Callable[[], str | bytes], every: float) -> None:
    while True:
        for conn in venue.connections:
            if not conn.closed:
                conn.push(frame())
        await trio.sleep(every)


def _subscriptions(messages: list[str | bytes]) -> list[str]:
    return sorted(str(m) for m in messages if "ping" not in str(m).lower())


@pytest.mark.parametrize("name", sorted(FAMILIES))
async def test_drops_reconnect_with_backoff_and_the_same_subscription(
        autojump_clock: trio.testing.MockClock, name: str) -> None:
    venue, plan, sinks, status, _ = _setup(name)
    vconf = VenueConfig(rest_url="x", ws_url="x", silence_reconnect_s=1000.0)
    async with trio.open_nursery() as nursery:
        await _start(nursery, venue, plan, sinks, status, vconf)
        nursery.start_soon(_feed, venue, FAMILIES[name].book, 0.5)
        for round_ in range(3):
            while len(venue.connections) < round_ + 1:
                await venue.opened.park()
            await trio.sleep(5)
            venue.live.drop()
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert status.reconnects == 3 and status.connects == 4
    subscriptions = [_subscriptions(c.sent) for c in venue.connections]
    # the ids in the messages differ; the subscribed topics must not: compare their shape
    assert all(len(s) == len(subscriptions[0]) >= 1 for s in subscriptions)
    assert status.quotes > 0 and status.bad_frames == 0


@pytest.mark.parametrize("name", sorted(FAMILIES))
async def test_silence_is_detected_whatever_heartbeats_say(autojump_clock: trio.testing.MockClock, name: str) -> None:
    venue, plan, sinks, status, inbox = _setup(name)
    vconf = VenueConfig(rest_url="x", ws_url="x", silence_reconnect_s=10.0)
    async with trio.open_nursery() as nursery:
        await _start(nursery, venue, plan, sinks, status, vconf)
        while not venue.connections:
            await venue.opened.park()
        await trio.sleep(12.5)
        pending = inbox.receive_batch_nowait()
        nursery.cancel_scope.cancel()
    assert status.stale_reconnects >= 1
    assert (name, "") in pending  # VenueDown: its quotes are stale now


@pytest.mark.parametrize("name", sorted(FAMILIES))
async def test_rotation_before_the_cut_leaves_no_gap(autojump_clock: trio.testing.MockClock, name: str) -> None:
    venue, plan, sinks, status, inbox = _setup(name)
    vconf = VenueConfig(rest_url="x", ws_url="x", silence_reconnect_s=60.0, rotate_after_s=120.0)
    async with trio.open_nursery() as nursery:
        await _start(nursery, venue, plan, sinks, status, vconf)
        nursery.start_soon(_feed, venue, FAMILIES[name].book, 0.5)
        await trio.sleep(400)
        pending = inbox.receive_batch_nowait()  # everything since the start, before shutdown
        nursery.cancel_scope.cancel()
    assert status.rotations >= 3 and status.reconnects == 0
    assert all(c.closed for c in venue.connections[:-1])
    assert (name, "") not in pending  # never a VenueDown: the hand-offs left no gap


@pytest.mark.parametrize("name", sorted(n for n, f in FAMILIES.items() if f.notice is not None))
async def test_a_venue_notice_rotates_without_a_gap(autojump_clock: trio.testing.MockClock, name: str) -> None:
    venue, plan, sinks, status, inbox = _setup(name)
    vconf = VenueConfig(rest_url="x", ws_url="x", silence_reconnect_s=60.0)
    notice = FAMILIES[name].notice
    assert notice is not None
    async with trio.open_nursery() as nursery:
        await _start(nursery, venue, plan, sinks, status, vconf)
        nursery.start_soon(_feed, venue, FAMILIES[name].book, 0.5)
        await trio.sleep(10)
        venue.live.push(notice())
        await trio.sleep(10)
        pending = inbox.receive_batch_nowait()
        nursery.cancel_scope.cancel()
    assert status.notices == 1 and status.rotations == 1 and status.reconnects == 0
    assert len(venue.connections) == 2 and venue.connections[0].closed
    assert (name, "") not in pending


def test_notice_frames_are_notices() -> None:
    for name, family in FAMILIES.items():
        if family.notice is not None:
            assert VENUES[name].codec_factory({}).parse(family.notice(), 0).kind is FrameKind.NOTICE, name
    assert json.loads(FAMILIES["kucoin"].greeting or "{}")["type"] == "welcome"
