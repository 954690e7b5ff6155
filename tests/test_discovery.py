"""Discovery: symbols from venue metadata, filtered by quote asset and volume, on >= N venues;
the plan is replaced on refresh, never appended (FAILURE_MODES #5); failures retried."""

from __future__ import annotations

import gc

import httpx
import trio
import trio.testing

from actors.channels import Latest
from actors.config import parse_config
from actors.discovery import DiscoveryStatus, Plan, run_discovery
from tests.fakes import RestVenues, only


def config(**discovery: object) -> object:
    return parse_config({
        "discovery": {"refresh_interval_s": 60.0, "quote_assets": ["USDT", "BTC"], **discovery},
        "venues": only({
            "binance": {"rest_url": "http://binance.test", "ws_url": "ws://binance.test"},
            "bybit": {"rest_url": "http://bybit.test", "ws_url": "ws://bybit.test"},
        }),
    })


async def run(venues: RestVenues, cfg: object, seconds: float) -> tuple[Latest[Plan], DiscoveryStatus]:
    plan: Latest[Plan] = Latest("plan")
    status = DiscoveryStatus()
    async with httpx.AsyncClient(transport=httpx.MockTransport(venues.handler)) as client:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_discovery(
                plan, config=cfg, client=client, status=status, task_status=task_status))  # type: ignore[arg-type]
            await trio.sleep(seconds)
            nursery.cancel_scope.cancel()
    return plan, status


async def test_symbols_on_two_venues_from_metadata_trading_only(autojump_clock: trio.testing.MockClock) -> None:
    venues = RestVenues()
    plan, status = await run(venues, config(), 1)
    current = plan.get()
    assert current is not None
    # BTC/USDT and ETH/BTC trade on both; BNBUSDT only on binance; LUNA is not trading
    assert current.symbols == ("BTC/USDT", "ETH/BTC")
    assert [s.native for s in current.venues["bybit"].symbols] == ["BTCUSDT", "ETHBTC"]
    btc = next(s for s in current.venues["binance"].symbols if s.native == "BTCUSDT")
    assert (btc.base, btc.quote, btc.quote_volume_24h) == ("BTC", "USDT", 2638104726.450206)
    assert status.listed == {"binance": 3, "bybit": 2}
    assert status.filtered_out == {"binance": 0, "bybit": 0}


async def test_volume_and_quote_filters(autojump_clock: trio.testing.MockClock) -> None:
    venues = RestVenues()
    cfg = parse_config({
        "discovery": {"min_venues": 1},
        "venues": only({
            "binance": {"rest_url": "http://binance.test", "ws_url": "ws://b", "min_quote_volume": 5e7},
            "bybit": {"rest_url": "http://bybit.test", "ws_url": "ws://b"},
        }),
    })
    plan, status = await run(venues, cfg, 1)
    current = plan.get()
    assert current is not None
    assert [s.native for s in current.venues["binance"].symbols] == ["BTCUSDT"]  # BNB under 5e7
    assert current.symbols == ("BTC/USDT",)  # ETH/BTC: quote asset not in ["USDT"]
    # counted, not silently dropped: binance ETHBTC (quote) and BNBUSDT (volume), bybit ETHBTC
    assert status.filtered_out == {"binance": 2, "bybit": 1}


async def test_a_hundred_refreshes_replace_the_plan_and_never_grow(autojump_clock: trio.testing.MockClock) -> None:
    venues = RestVenues()
    plan: Latest[Plan] = Latest("plan")
    status = DiscoveryStatus()
    async with httpx.AsyncClient(transport=httpx.MockTransport(venues.handler)) as client:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_discovery(
                plan, config=config(), client=client, status=status, task_status=task_status))  # type: ignore[arg-type]
            await trio.sleep(60 * 5 + 1)
            gc.collect()
            objects = len(gc.get_objects())
            await trio.sleep(60 * 95)
            gc.collect()
            assert len(gc.get_objects()) - objects < 500
            nursery.cancel_scope.cancel()
    assert status.refreshes == 101
    assert plan.version == 1  # nothing changed, so the plan was never re-published
    current = plan.get()
    assert current is not None and len(current.symbols) == 2


async def test_a_failing_venue_is_retried_and_others_proceed(autojump_clock: trio.testing.MockClock) -> None:
    venues = RestVenues()
    venues.down.add("bybit.test")
    plan: Latest[Plan] = Latest("plan")
    status = DiscoveryStatus()
    async with httpx.AsyncClient(transport=httpx.MockTransport(venues.handler)) as client:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_discovery(
                plan, config=config(), client=client, status=status, retry_s=5.0,
                task_status=task_status))  # type: ignore[arg-type]
            await trio.sleep(1)
            first = plan.get()
            assert first is not None and set(first.venues) == {"binance"}
            assert "ConnectError" in status.last_error["bybit"]
            venues.down.clear()
            await trio.sleep(5)
            second = plan.get()
            assert second is not None and set(second.venues) == {"binance", "bybit"}
            assert second.symbols == ("BTC/USDT", "ETH/BTC")
            assert status.last_error == {}
            nursery.cancel_scope.cancel()
