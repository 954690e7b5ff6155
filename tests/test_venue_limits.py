"""Issue 3: with 2,000 symbols on one venue, connections, streams per connection, subscribe
pacing and connection attempts stay within the venue's documented limits, for every venue."""

from __future__ import annotations

import functools
import itertools

import pytest
import trio
import trio.testing

from actors.channels import ConflatingChannel, DropChannel, Latest
from actors.config import parse_config
from actors.connector import QuoteSinks
from actors.discovery import Plan, VenuePlan, VenueState, run_venue
from actors.records import SymbolInfo
from actors.venues.registry import VENUES
from tests.fakes import FakeVenue, virtual_clock_ns

N_SYMBOLS = 2000


@pytest.mark.parametrize("venue", sorted(VENUES))
async def test_two_thousand_symbols_stay_within_the_venue_limits(
        autojump_clock: trio.testing.MockClock, venue: str) -> None:
    module = VENUES[venue]
    infos = tuple(SymbolInfo(venue, f"C{i:04d}USDT", f"C{i:04d}", "USDT", 1e6) for i in range(N_SYMBOLS))
    config = parse_config({"connector": {"batch_max_delay_s": 5.0},
                           "venues": {venue: {"rest_url": "http://x", "ws_url": "ws://x",
                                              "silence_reconnect_s": 3600.0}}})
    plan: Latest[Plan] = Latest("plan")
    plan.set(Plan(venues={venue: VenuePlan(venue, infos)}, symbols=tuple(i.symbol for i in infos), at_ns=0))
    fake = FakeVenue(greeting='{"id":"w","type":"welcome"}' if venue == "kucoin" else None)
    state = VenueState(venue)
    sinks = QuoteSinks([ConflatingChannel("s", 10)], DropChannel("r", 10))

    connect_kwargs = {}
    if module.bootstrap is not None:
        from actors.venues.base import Bootstrap

        counter = itertools.count()

        async def fake_bootstrap() -> Bootstrap:
            return Bootstrap(f"ws://x/?token=t{next(counter)}", ping_interval_s=None)

        connect_kwargs["bootstrap"] = fake_bootstrap

    async with trio.open_nursery() as nursery:
        runner = functools.partial(run_venue, venue, plan, sinks, state, config=config, connect=fake.connect,
                                   clock_ns=virtual_clock_ns)
        if module.bootstrap is not None:
            from actors import discovery

            # the bootstrap seam is the HTTP client; here it is replaced by a function
            runner = functools.partial(_run_venue_with_bootstrap, discovery, connect_kwargs["bootstrap"],
                                       venue, plan, sinks, state, config, fake)
        await nursery.start(runner)
        # until every planned connection is open and has finished subscribing
        while not state.connections or any(c.state != "live" for c in state.connections):
            await trio.sleep(1.0)
        nursery.cancel_scope.cancel()

    probe = module.codec_factory({i.native: i for i in infos})
    streams_per_symbol = 2  # book + trades, the default
    watched = N_SYMBOLS - state.symbols_over_limit
    connections = fake.connections
    # every connection that was opened was needed, and no more than the venue allows
    assert 1 <= len(connections) <= module.max_connections
    assert len(connections) == len(state.connections)
    assert state.symbols_over_limit == max(0, N_SYMBOLS - module.max_connections
                                           * (probe.max_streams_per_connection // streams_per_symbol))
    # connection attempts are paced by the venue's per-IP rate
    opened = sorted(c.opened_at for c in connections)
    assert all(b - a >= module.connect_interval_s - 1e-9 for a, b in itertools.pairwise(opened))
    subscribed = 0
    for conn in connections:
        messages = [m for m in conn.sent if "ping" not in str(m).lower()]
        # subscribe messages on one connection never exceed the venue's message rate
        times = conn.sent_at[: len(messages)]
        assert all(b - a >= 1.0 / probe.max_messages_per_second - 1e-9 for a, b in itertools.pairwise(times))
        streams = sum(_streams_in(venue, m) for m in messages)
        assert streams <= probe.max_streams_per_connection
        subscribed += streams
    assert subscribed == watched * streams_per_symbol


async def _run_venue_with_bootstrap(discovery, bootstrap, venue, plan, sinks, state, config, fake, *,
                                    task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
    await discovery.run_venue(venue, plan, sinks, state, config=config, connect=fake.connect,
                              clock_ns=virtual_clock_ns, bootstrap_override=bootstrap, task_status=task_status)


def _streams_in(venue: str, message: str | bytes) -> int:
    """How many streams one subscribe message asks for, read back from its text."""
    import orjson

    body = orjson.loads(message)
    if "params" in body:  # Binance, MEXC
        return len(body["params"])
    if "args" in body:  # Bybit, OKX, Bitget
        return len(body["args"])
    if "payload" in body:  # Gate
        return len(body["payload"])
    if "topic" in body:  # KuCoin: /spotMarket/level1:A,B,C
        return len(body["topic"].split(":", 1)[1].split(","))
    if "sub" in body:  # HTX
        return 1
    raise AssertionError(f"{venue}: unknown subscribe shape {body}")
