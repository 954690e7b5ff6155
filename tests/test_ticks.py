"""Aligned ticks (actors/ticks.py): the shards publish on one grid, the hub just after."""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
import trio
import trio.testing

from actors.channels import BlockingChannel, ConflatingChannel, DropChannel
from actors.config import SpreadsConfig, WindowsConfig
from actors.hub import Control, Hub, run_hub
from actors.records import Opportunity, Quote, VenueDown
from actors.session import SessionCounters, run_session
from actors.shard import Shard, ShardOutputs, WindowQuery, run_shard
from actors.ticks import HUB_LAG_S, hub_lag, next_tick
from tests.fakes import virtual_clock_ns
from tests.test_feed import FEED, FakeClient
from tests.test_shard import FEES, STALE


@pytest.mark.parametrize("now,period,offset,expected", [
    (0.0, 0.25, 0.0, 0.25),        # on a grid point: the next one, never now
    (0.1, 0.25, 0.0, 0.25),
    (0.25, 0.25, 0.01, 0.26),
    (0.26, 0.25, 0.01, 0.51),      # on the hub's point: the next one
    (1003.7, 0.25, 0.0, 1003.75),
    (-0.1, 0.25, 0.0, 0.0),
])
def test_next_tick_is_the_first_grid_point_strictly_after_now(
        now: float, period: float, offset: float, expected: float) -> None:
    assert next_tick(now, period, offset) == pytest.approx(expected)
    assert next_tick(now, period, offset) > now


def test_a_bad_period_is_refused() -> None:
    with pytest.raises(ValueError, match="period"):
        next_tick(1.0, 0.0)


def test_the_hub_follows_the_shards_within_a_tenth_of_a_tick() -> None:
    assert hub_lag(0.25) == HUB_LAG_S
    assert hub_lag(0.05) == pytest.approx(0.005)


async def test_loops_that_start_apart_tick_together(autojump_clock: trio.testing.MockClock) -> None:
    """Shards started at different moments publish at the same instants; the hub's
    broadcast comes HUB_LAG_S after each (before: a uniform 0..tick_s later)."""
    period = 0.25
    shard_times: list[list[float]] = [[], []]
    hub_times: list[float] = []

    async def shard(i: int) -> None:
        await trio.sleep(0.07 * (i + 1))  # supervisors start actors one after another
        for _ in range(4):
            await trio.sleep_until(next_tick(trio.current_time(), period))
            shard_times[i].append(trio.current_time())

    async def hub() -> None:
        await trio.sleep(0.2)
        for _ in range(4):
            await trio.sleep_until(next_tick(trio.current_time(), period, hub_lag(period)))
            hub_times.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(shard, 0)
        nursery.start_soon(shard, 1)
        nursery.start_soon(hub)
    assert shard_times[0] == shard_times[1]
    assert [h - s for h, s in zip(hub_times, shard_times[0], strict=True)] == pytest.approx(
        [HUB_LAG_S] * 4)


async def test_a_quote_reaches_a_session_within_a_tick_and_the_hub_lag(
        autojump_clock: trio.testing.MockClock) -> None:
    """A real shard and hub and a session: a quote waits for the shard's next grid point,
    then HUB_LAG_S for the hub, wherever in the tick it arrived and however the actors'
    start times fell (here the hub starts 0.2 s after the shard: free-running, it would
    broadcast 0.2 s after every shard publish)."""
    tick = 0.25
    states = ConflatingChannel[str, Any]("states", 1000)
    events = DropChannel[Opportunity]("events", 1000)
    control = BlockingChannel[Control]("control", 100)
    inbox = ConflatingChannel[tuple[str, str], Quote | VenueDown]("shard-0", 1000)
    queries = BlockingChannel[WindowQuery]("queries", 10)
    shard = Shard(0, SpreadsConfig(tick_s=tick), WindowsConfig(length_s=60, max_series=100, ttl_s=600),
                  FEES, STALE, ShardOutputs(states, events, None), 100)
    hub = Hub(FEED, top_n=10, venues=lambda: {}, clock_ns=virtual_clock_ns)
    client = FakeClient()
    topic = "quotes:BTC/USDT"
    sent: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(run_shard, shard, inbox, queries, clock_ns=virtual_clock_ns))
        await trio.sleep(0.2)
        await nursery.start(run_hub, hub, states, events, control)
        nursery.start_soon(functools.partial(run_session, client, control, config=FEED,
                                             counters=SessionCounters(), clock_ns=virtual_clock_ns))
        client.say({"op": "subscribe", "topic": topic})
        await trio.sleep(1.0)
        for i, phase in enumerate((0.01, 0.07, 0.13, 0.19, 0.24)):
            await trio.sleep_until(math.floor(trio.current_time() / tick + 1) * tick + phase)
            sent.append(trio.current_time())
            inbox.put_nowait(("binance", "BTC/USDT"), Quote("binance", "BTC/USDT", 100.0 + i, 1.0,
                                                           101.0 + i, 1.0, 0, virtual_clock_ns(), i))
            await trio.sleep(0.6)
        nursery.cancel_scope.cancel()
    deltas = [(f, t) for f, t in zip(client.frames, client.arrivals, strict=True)
              if f["topic"] == topic and f["kind"] == "delta"]
    assert len(deltas) == len(sent)
    for at, (_, arrived) in zip(sent, deltas, strict=True):
        publish = next_tick(at, tick)
        assert arrived - at <= publish - at + HUB_LAG_S + 1e-6, (at, arrived)
        assert arrived - publish == pytest.approx(HUB_LAG_S, abs=1e-6)
