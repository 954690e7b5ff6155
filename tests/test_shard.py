"""Shard logic: spread math, validation, staleness, opportunity lifecycle, bounded windows."""

from __future__ import annotations

import dataclasses
import math

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.budget import SERIES_OVERHEAD_BYTES, compute_budget
from actors.channels import BlockingChannel, ConflatingChannel, DropChannel
from actors.config import SpreadsConfig, WindowsConfig, load_config
from actors.records import Opportunity, OpportunityState, Quote, VenueDown
from actors.shard import Shard, ShardOutputs, WindowQuery, run_shard
from actors.spreads import all_cross_spreads, best_and_above, cross_spread, quote_problem, venue_spread_bps
from actors.windows import RingSeries

S = 1_000_000_000
T0 = 1_700_000_000 * S
FEES = {"a": 10.0, "b": 5.0, "c": 0.0}
STALE = {"a": 5 * S, "b": 5 * S, "c": 5 * S}


def q(venue: str, bid: float, ask: float, t: int, seq: int = 0, symbol: str = "BTC/USDT") -> Quote:
    return Quote(venue, symbol, bid, 1.0, ask, 2.0, 0, t, seq)


def make(threshold: float = 0.0, min_duration: float = 0.0, max_series: int = 100,
         length_s: int = 60) -> tuple[Shard, DropChannel[Opportunity], ConflatingChannel]:
    states = ConflatingChannel[str, object]("states", 1000)
    events = DropChannel[Opportunity]("events", 1000)
    recorder = DropChannel[object]("rec", 1000)
    shard = Shard(0, SpreadsConfig(threshold_bps=threshold, min_duration_s=min_duration),
                  WindowsConfig(length_s=length_s, max_series=max_series, ttl_s=600), FEES, STALE,
                  ShardOutputs(states, events, recorder), max_series)
    return shard, events, states


def feed(shard: Shard, *quotes: Quote | VenueDown, now: int) -> None:
    shard.apply({(x.venue, getattr(x, "symbol", "")): x for x in quotes}, now)


def test_spread_math_is_exact() -> None:
    buy, sell = q("a", 99.0, 100.0, T0), q("b", 101.0, 102.0, T0)
    assert venue_spread_bps(buy) == pytest.approx(1 / 99.5 * 1e4)
    c = cross_spread(buy, sell, 10.0, 5.0)
    assert c.gross_bps == pytest.approx(100.0)  # (101 - 100) / 100
    # 101 * (1 - 0.0005) - 100 * (1 + 0.001) = 100.9495 - 100.1 = 0.8495 -> 84.95 bps
    assert c.net_bps == pytest.approx(84.95)
    pairs = all_cross_spreads({"a": buy, "b": sell}, FEES)
    assert [(p.buy_venue, p.sell_venue) for p in pairs] == [("a", "b"), ("b", "a")]
    assert pairs[1].gross_bps == pytest.approx((99.0 - 102.0) / 102.0 * 1e4)


@pytest.mark.parametrize(("bid", "ask", "problem"), [
    (101.0, 100.0, "crossed book"), (0.0, 1.0, "non-positive price"), (-1.0, 1.0, "non-positive price"),
    (math.nan, 1.0, "non-finite price"), (1.0, math.inf, "non-finite price"), (100.0, 100.0, None),
])
def test_quote_validation(bid: float, ask: float, problem: str | None) -> None:
    assert quote_problem(q("a", bid, ask, T0)) == problem


def test_invalid_and_out_of_order_quotes_are_counted_and_dropped() -> None:
    shard, _, _ = make()
    feed(shard, q("a", 100, 101, T0, seq=5), now=T0)
    feed(shard, q("a", 102, 101, T0 + 1, seq=6), now=T0)  # crossed
    feed(shard, q("a", 90, 91, T0 + 2, seq=4), now=T0)  # older sequence number
    assert shard.books["BTC/USDT"]["a"].seq == 5
    assert (shard.stats.invalid, shard.stats.out_of_order) == (1, 1)


def test_opportunity_opens_after_min_duration_tracks_peak_and_closes() -> None:
    shard, events, _ = make(threshold=10.0, min_duration=1.0)
    feed(shard, q("a", 99.0, 100.0, T0), q("b", 100.5, 101.0, T0), now=T0)  # net 35 bps
    assert not shard.open and not events.receive_batch_nowait()
    feed(shard, q("b", 100.8, 101.0, T0 + S // 2), now=T0 + S // 2)
    assert not shard.open
    shard.sweep(T0 + S)  # still above after 1 s with no new quote: opens on the sweep
    [opened] = events.receive_batch_nowait()
    assert (opened.state, opened.buy_venue, opened.sell_venue) == (OpportunityState.OPEN, "a", "b")
    assert opened.opened_at == T0
    assert opened.net_bps == pytest.approx((100.8 * 0.9995 - 100 * 1.001) / 100 * 1e4)
    feed(shard, q("b", 101.5, 102.0, T0 + 2 * S), now=T0 + 2 * S)
    feed(shard, q("b", 100.0, 100.2, T0 + 3 * S), now=T0 + 3 * S)  # back below
    [closed] = events.receive_batch_nowait()
    assert closed.state is OpportunityState.CLOSE
    assert closed.closed_at == T0 + 3 * S
    assert closed.duration_ns == 3 * S
    assert closed.peak_net_bps == pytest.approx((101.5 * 0.9995 - 100 * 1.001) / 100 * 1e4)
    assert shard.stats.opportunities_opened == shard.stats.opportunities_closed == 1


def test_a_brief_spike_shorter_than_min_duration_never_opens() -> None:
    shard, events, _ = make(threshold=10.0, min_duration=1.0)
    feed(shard, q("a", 99.0, 100.0, T0), q("b", 100.5, 101.0, T0), now=T0)
    feed(shard, q("b", 99.0, 99.5, T0 + S // 2), now=T0 + S // 2)
    shard.sweep(T0 + 2 * S)
    assert not events.receive_batch_nowait()
    assert not shard.pending


def test_stale_leg_closes_the_opportunity_and_is_shown_stale() -> None:
    shard, events, states = make()
    feed(shard, q("a", 99.0, 100.0, T0), q("b", 101.0, 102.0, T0), now=T0)
    assert events.receive_batch_nowait()[0].state is OpportunityState.OPEN
    feed(shard, q("a", 99.0, 100.0, T0 + 4 * S), now=T0 + 4 * S)  # b's quote is 4 s old: fresh
    assert not events.receive_batch_nowait()
    shard.sweep(T0 + 6 * S)  # b is 6 s old: stale
    [closed] = events.receive_batch_nowait()
    assert closed.state is OpportunityState.CLOSE
    shard.publish(T0 + 6 * S)
    published = states.receive_batch_nowait()
    assert published["quotes:BTC/USDT"]["venues"]["b"]["stale"] is True
    assert published["quotes:BTC/USDT"]["venues"]["a"]["stale"] is False
    assert published["spreads:BTC/USDT"]["best"] is None
    assert published["opportunities#0"] == []


def test_venue_down_removes_its_quotes_and_closes_opportunities() -> None:
    shard, events, _ = make()
    feed(shard, q("a", 99.0, 100.0, T0), q("b", 101.0, 102.0, T0), now=T0)
    events.receive_batch_nowait()
    feed(shard, VenueDown("b", T0 + 1), now=T0 + 1)
    assert not shard.is_fresh(shard.books["BTC/USDT"]["b"], T0 + 1)
    assert events.receive_batch_nowait()[0].state is OpportunityState.CLOSE
    shard.publish(T0 + 1)
    published = shard.outputs.states.receive_batch_nowait()
    assert published["quotes:BTC/USDT"]["venues"]["b"]["stale"] is True  # kept, marked
    assert published["spreads:BTC/USDT"]["best"] is None
    feed(shard, q("b", 101.5, 102.0, T0), now=T0 + 2)  # received before the disconnect: refused
    assert shard.books["BTC/USDT"]["b"].bid == 101.0
    assert shard.stats.stale_dropped == 1
    feed(shard, q("b", 101.5, 102.0, T0 + 3), now=T0 + 3)  # after it: fresh again
    assert shard.is_fresh(shard.books["BTC/USDT"]["b"], T0 + 3)


def test_window_series_are_capped_and_memory_is_bounded() -> None:
    shard, _, _ = make(max_series=10, length_s=60)
    for i in range(50):
        feed(shard, q("a", 1.0, 1.1, T0 + i * S, symbol=f"S{i}/USDT"), now=T0 + i * S)
    assert len(shard.quote_series) == 10
    assert shard.quote_series.evicted_lru == 40
    assert shard.quote_series.nbytes == 10 * 60 * 2 * 8
    shard.sweep(T0 + 50 * S)
    assert shard.stats.series_bytes <= 10 * 60 * 2 * 8 + 10 * 60 * 8
    shard.sweep(T0 + 50 * S + 601 * S)  # past the TTL
    assert len(shard.quote_series) == 0


def test_window_holds_one_value_per_second_with_gaps_as_none() -> None:
    shard, _, _ = make(length_s=10)
    feed(shard, q("a", 99.0, 100.0, T0), q("b", 101.0, 102.0, T0), now=T0)
    feed(shard, q("a", 98.0, 99.0, T0 + 3 * S), now=T0 + 3 * S)
    doc = shard.window("BTC/USDT", T0 + 3 * S)
    assert doc is not None
    assert doc["t"] == [T0 // S + i for i in range(4)]
    assert doc["venues"]["a"]["bid"] == [99.0, None, None, 98.0]
    assert doc["venues"]["b"]["ask"] == [102.0, None, None, None]
    assert doc["best_net_bps"][0] == pytest.approx((101 * 0.9995 - 100 * 1.001) / 100 * 1e4)
    assert shard.window("ETH/USDT", T0) is None


async def test_run_shard_answers_queries_and_publishes_on_tick(autojump_clock: trio.testing.MockClock) -> None:
    shard, _, states = make()
    inbox = ConflatingChannel[tuple[str, str], Quote | VenueDown]("in", 100)
    queries = BlockingChannel[WindowQuery]("q", 4)
    now = [T0]
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_shard(shard, inbox, queries, clock_ns=lambda: now[0],
                                                          task_status=task_status))
        inbox.put_nowait(("a", "BTC/USDT"), q("a", 99.0, 100.0, T0))
        await trio.sleep(0.3)
        assert "quotes:BTC/USDT" in states.receive_batch_nowait()
        send, receive = trio.open_memory_channel[object](1)
        await queries.send(WindowQuery("BTC/USDT", send))  # type: ignore[arg-type]
        answer = await receive.receive()
        assert isinstance(answer, dict) and answer["symbol"] == "BTC/USDT"
        nursery.cancel_scope.cancel()


async def test_concurrent_queries_during_ingest_are_consistent(autojump_clock: trio.testing.MockClock) -> None:
    """FAILURE_MODES #9/#10: many readers while quotes stream in; one owner, no torn answers."""
    shard, _, _ = make(length_s=120)
    inbox = ConflatingChannel[tuple[str, str], Quote | VenueDown]("in", 100)
    queries = BlockingChannel[WindowQuery]("q", 8)
    now = [T0]
    answers: list[dict[str, object]] = []

    async def writer() -> None:
        for i in range(600):
            now[0] = T0 + i * S // 5
            bid = 100.0 + i
            inbox.put_nowait(("a", "BTC/USDT"), q("a", bid, bid + 0.5, now[0], seq=i + 1))
            inbox.put_nowait(("b", "BTC/USDT"), q("b", bid, bid + 0.5, now[0], seq=i + 1))
            await trio.sleep(0.2)

    async def reader() -> None:
        for _ in range(100):
            send, receive = trio.open_memory_channel[dict[str, object] | None](1)
            while not queries.try_send(WindowQuery("BTC/USDT", send)):
                await trio.sleep(0.01)
            answer = await receive.receive()
            if answer is not None:
                answers.append(answer)
            await trio.sleep(0.37)

    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_shard(shard, inbox, queries, clock_ns=lambda: now[0],
                                                          task_status=task_status))
        async with trio.open_nursery() as clients:
            clients.start_soon(writer)
            for _ in range(20):
                clients.start_soon(reader)
        nursery.cancel_scope.cancel()
    assert len(answers) >= 1900
    for answer in answers:
        t = answer["t"]
        venues = answer["venues"]
        assert isinstance(t, list) and isinstance(venues, dict)
        for venue in ("a", "b"):
            bids, asks = venues[venue]["bid"], venues[venue]["ask"]
            assert len(bids) == len(asks) == len(t)
            for bid, ask in zip(bids, asks, strict=True):
                assert (bid is None) == (ask is None)  # never half a point
                assert bid is None or ask == bid + 0.5
        # both venues are fed together, so their last points agree in every answer
        assert venues["a"]["bid"][-1] == venues["b"]["bid"][-1]


# -- issue 4: hand-computed lifecycle cases ------------------------------------------

def net(buy_ask: float, fee_buy: float, sell_bid: float, fee_sell: float) -> float:
    return (sell_bid * (1 - fee_sell / 1e4) - buy_ask * (1 + fee_buy / 1e4)) / buy_ask * 1e4


def test_fees_apply_to_both_legs_in_both_directions() -> None:
    # buy on b (5 bps) at 100, sell on a (10 bps) at 100.5:
    # 100.5 * 0.999 - 100 * 1.0005 = 100.3995 - 100.05 = 0.3495 -> 34.95 bps; gross 50 bps
    c = cross_spread(q("b", 99.0, 100.0, T0), q("a", 100.5, 101.0, T0), 5.0, 10.0)
    assert (c.gross_bps, c.net_bps) == (pytest.approx(50.0), pytest.approx(34.95))
    # a fee-free leg only pays the other leg's fee: 100.5 - 100 * 1.001 = 0.4 -> 40 bps
    assert cross_spread(q("a", 99.0, 100.0, T0), q("c", 100.5, 101.0, T0), 10.0, 0.0).net_bps == \
        pytest.approx(40.0)


def test_ties_go_to_the_pair_whose_names_sort_first_whatever_the_arrival_order() -> None:
    fees = {"x": 10.0, "y": 10.0, "z": 0.0}
    z, y, x = q("z", 99.0, 100.0, T0), q("y", 101.0, 102.0, T0), q("x", 101.0, 102.0, T0)
    for order in ({"y": y, "x": x, "z": z}, {"z": z, "x": x, "y": y}):
        pairs = all_cross_spreads(order, fees)
        assert [(p.buy_venue, p.sell_venue) for p in pairs[:2]] == [("z", "x"), ("z", "y")]
        assert pairs[0].net_bps == pairs[1].net_bps == pytest.approx(net(100, 0, 101, 10))


def test_open_and_close_events_carry_duration_peak_mean_and_sizes() -> None:
    shard, events, _ = make(threshold=10.0)
    n1, n2 = net(100, 10, 100.5, 5), net(100, 10, 100.9, 5)  # 35.0 and 74.8 bps
    feed(shard, q("a", 99.0, 100.0, T0), Quote("b", "BTC/USDT", 100.5, 3.0, 101.0, 4.0, 0, T0), now=T0)
    [opened] = events.receive_batch_nowait()
    assert (opened.state, opened.opened_at, opened.closed_at) == (OpportunityState.OPEN, T0, 0)
    assert (opened.net_bps, opened.peak_net_bps, opened.mean_net_bps) == (
        pytest.approx(n1), pytest.approx(n1), pytest.approx(n1))
    assert (opened.buy_price, opened.buy_size, opened.sell_price, opened.sell_size) == (100.0, 2.0, 100.5, 3.0)
    feed(shard, q("b", 100.9, 101.0, T0 + S), now=T0 + S)  # n1 held for 1 s
    feed(shard, q("b", 100.0, 100.2, T0 + 4 * S), now=T0 + 4 * S)  # n2 held for 3 s, then below
    [closed] = events.receive_batch_nowait()
    assert (closed.state, closed.closed_at, closed.duration_ns) == (OpportunityState.CLOSE, T0 + 4 * S, 4 * S)
    assert closed.peak_net_bps == pytest.approx(n2)
    assert closed.mean_net_bps == pytest.approx((n1 * 1 + n2 * 3) / 4)
    assert closed.net_bps == pytest.approx(n2)  # the last net above the threshold


def test_a_stale_leg_closes_at_the_moment_it_went_stale_not_at_the_sweep() -> None:
    shard, events, _ = make()
    feed(shard, q("a", 99.0, 100.0, T0), q("b", 101.0, 102.0, T0), now=T0)
    events.receive_batch_nowait()
    feed(shard, q("a", 99.0, 100.0, T0 + 3 * S), now=T0 + 3 * S)
    shard.sweep(T0 + 9 * S)  # the sweep runs late; b went stale at T0 + 5 s (STALE = 5 s)
    [closed] = events.receive_batch_nowait()
    assert closed.closed_at == T0 + 5 * S


def test_a_window_that_lasted_min_duration_opens_even_if_no_tick_ran_in_between() -> None:
    shard, events, _ = make(threshold=10.0, min_duration=1.0)
    feed(shard, q("a", 99.0, 100.0, T0), q("b", 100.5, 101.0, T0), now=T0)
    # no sweep ran; the next quote, 1.5 s later, drops the spread below the threshold
    feed(shard, q("b", 99.0, 99.5, T0 + 3 * S // 2), now=T0 + 3 * S // 2)
    opened, closed = events.receive_batch_nowait()
    assert (opened.state, opened.opened_at) == (OpportunityState.OPEN, T0)
    assert (closed.state, closed.closed_at) == (OpportunityState.CLOSE, T0 + 3 * S // 2)


def test_a_venue_going_down_closes_at_the_disconnect_time() -> None:
    shard, events, _ = make()
    feed(shard, q("a", 99.0, 100.0, T0), q("b", 101.0, 102.0, T0), now=T0)
    events.receive_batch_nowait()
    feed(shard, VenueDown("a", T0 + 2 * S), now=T0 + 3 * S)
    [closed] = events.receive_batch_nowait()
    assert (closed.closed_at, closed.mean_net_bps) == (T0 + 2 * S, pytest.approx(net(100, 10, 101, 5)))


def test_published_rows_show_duration_and_mean() -> None:
    shard, _, states = make()
    feed(shard, q("a", 99.0, 100.0, T0), q("b", 101.0, 102.0, T0), now=T0)
    shard.publish(T0 + 2500 * 1_000_000)
    [row] = states.receive_batch_nowait()["opportunities#0"]
    assert row["duration_ms"] == 2500 and row["buy_venue"] == "a" and row["sell_venue"] == "b"
    assert row["mean_net_bps"] == round(net(100, 10, 101, 5), 3)


# -- issue 4: properties ----------------------------------------------------------------

VENUES = ("a", "b", "c")
prices = st.floats(min_value=90.0, max_value=110.0, allow_nan=False)
bad_prices = st.sampled_from([math.nan, math.inf, -1.0, 0.0])


@st.composite
def quote_streams(draw: st.DrawFn) -> list[Quote | VenueDown]:
    """Quotes (some invalid or crossed) and disconnects over ~30 s, in time order."""
    items: list[Quote | VenueDown] = []
    t = T0
    for _ in range(draw(st.integers(1, 60))):
        t += draw(st.integers(0, 3 * S))
        venue = draw(st.sampled_from(VENUES))
        kind = draw(st.integers(0, 9))
        if kind == 0:
            items.append(VenueDown(venue, t))
            continue
        bid = draw(prices)
        ask = bid + draw(st.floats(0.0, 1.0))
        if kind == 1:
            bid = draw(bad_prices)
        elif kind == 2:
            bid, ask = ask + 0.5, bid  # crossed
        items.append(Quote(venue, "BTC/USDT", bid, 1.0, ask, 1.0, 0, t))
    return items


def run_stream_seen(items: list[Quote | VenueDown], sweep_every: int, threshold: float = 0.0,
                    min_duration: float = 0.0) -> list[tuple[Opportunity, int]]:
    """Each event, with how many items had been fed when it was emitted."""
    shard, events, _ = make(threshold=threshold, min_duration=min_duration)
    out: list[tuple[Opportunity, int]] = []
    next_sweep = T0
    for i, item in enumerate(items):
        t = item.at_ns if isinstance(item, VenueDown) else item.recv_ts
        while sweep_every and next_sweep < t:
            shard.sweep(next_sweep)
            next_sweep += sweep_every
        out.extend((e, i) for e in events.receive_batch_nowait())
        feed(shard, item, now=t)
        out.extend((e, i + 1) for e in events.receive_batch_nowait())
    shard.sweep(T0 + 10**6 * S)
    out.extend((e, len(items)) for e in events.receive_batch_nowait())
    return out


def run_stream(items: list[Quote | VenueDown], sweep_every: int, threshold: float = 0.0,
               min_duration: float = 0.0) -> list[Opportunity]:
    return [e for e, _ in run_stream_seen(items, sweep_every, threshold, min_duration)]


@settings(max_examples=150, deadline=None)
@given(quote_streams())
def test_an_opportunity_never_uses_a_stale_or_invalid_quote(items: list[Quote | VenueDown]) -> None:
    for event, seen in run_stream_seen(items, sweep_every=S // 4):
        if event.state is not OpportunityState.OPEN:
            continue
        at = event.opened_at  # min_duration 0: opened when first seen, with these legs
        before = items[:seen]
        for venue, price, side in ((event.buy_venue, event.buy_price, "ask"),
                                   (event.sell_venue, event.sell_price, "bid")):
            downs = [x.at_ns for x in before if isinstance(x, VenueDown) and x.venue == venue]
            used = [x for x in before if isinstance(x, Quote) and x.venue == venue
                    and quote_problem(x) is None and not any(d >= x.recv_ts for d in downs)]
            assert used, "a leg with no valid quote before the opening"
            leg = used[-1]
            assert getattr(leg, side) == price
            assert at - leg.recv_ts < STALE[venue]


@settings(max_examples=100, deadline=None)
@given(quote_streams(), st.sampled_from([0, S // 10, S // 4, 3 * S]), st.sampled_from([0.0, 0.5, 2.0]))
def test_opportunities_do_not_depend_on_when_ticks_run(items: list[Quote | VenueDown], sweep_every: int,
                                                       min_duration: float) -> None:
    """Event time decides: a replay at any speed, or a live run with any tick phase, gives
    the same opportunities."""
    reference = run_stream(items, sweep_every=0, threshold=5.0, min_duration=min_duration)
    assert run_stream(items, sweep_every=sweep_every, threshold=5.0, min_duration=min_duration) == reference
    for event in reference:
        assert event.peak_net_bps >= event.mean_net_bps - 1e-9
        assert event.peak_net_bps >= event.net_bps - 1e-9


@given(prices, st.floats(0.0, 5.0), prices, st.floats(0.0, 100.0), st.floats(0.0, 100.0))
def test_net_never_exceeds_gross(buy_ask: float, width: float, sell_bid: float, fee_buy: float,
                                 fee_sell: float) -> None:
    c = cross_spread(q("a", buy_ask - width, buy_ask, T0), q("b", sell_bid, sell_bid + width, T0),
                     fee_buy, fee_sell)
    assert c.net_bps <= c.gross_bps + 1e-9


@given(st.integers(1, 50), st.lists(st.tuples(st.integers(0, 500), st.floats(-1e6, 1e6)), max_size=300))
def test_a_ring_never_exceeds_its_capacity(capacity: int, writes: list[tuple[int, float]]) -> None:
    ring = RingSeries(capacity, 2)
    for i, (slot, value) in enumerate(writes):
        ring.record(slot, (value, value), i)
        assert all(len(column) == capacity for column in ring.columns)
        assert ring.nbytes == capacity * 2 * 8
        values = ring.read(ring.head - 3 * capacity, ring.head)[0]
        assert sum(v is not None for v in values) <= capacity


def test_more_series_than_the_cap_evict_least_recently_updated_within_the_budget() -> None:
    config = load_config(None)
    config = dataclasses.replace(config, windows=dataclasses.replace(config.windows, max_series=6, shards=2,
                                                                     length_s=120))
    budget = compute_budget(config)
    per_shard = 3
    shards = []
    for index in range(2):
        shard = Shard(index, config.spreads, config.windows, FEES, STALE,
                      ShardOutputs(ConflatingChannel("s", 100), DropChannel("e", 100), None), per_shard)
        shards.append(shard)
    for i in range(40):  # 20 symbols x 2 venues = 40 series offered, 6 allowed
        shard = shards[i % 2]
        feed(shard, q("a", 1.0, 1.1, T0 + i * S, symbol=f"S{i}/USDT"),
             q("b", 1.0, 1.1, T0 + i * S, symbol=f"S{i}/USDT"), now=T0 + i * S)
    for shard in shards:
        shard.sweep(T0 + 40 * S)
        assert len(shard.quote_series) == per_shard
        assert shard.stats.evicted_lru >= 40 // 2 - per_shard
        # the most recently updated series survive
        assert shard.quote_series.get(("S38/USDT" if shard.index == 0 else "S39/USDT", "b")) is not None
    used = sum(s.quote_series.nbytes for s in shards)
    assert used == 6 * 120 * 2 * 8
    # the budget counts every allowed series at full capacity plus its object overhead
    assert used <= budget.parts["windows_quotes"]
    assert budget.parts["windows_quotes"] - used == 6 * SERIES_OVERHEAD_BYTES
    assert sum(s.spread_series.nbytes for s in shards) <= budget.parts["windows_spreads"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(("a", "b", "c", "d", "e")),
                       st.tuples(prices, st.floats(0.0, 3.0), st.floats(0.0, 30.0)), max_size=5),
       st.sampled_from([-50.0, 0.0, 5.0, 40.0]))
def test_the_fast_path_ranks_exactly_as_every_pair_would(books: dict[str, tuple[float, float, float]],
                                                         threshold: float) -> None:
    quotes = {v: q(v, bid, bid + width, T0) for v, (bid, width, _) in books.items()}
    fees = {v: fee for v, (_, _, fee) in books.items()}
    every = all_cross_spreads(quotes, fees)
    best, above = best_and_above(quotes, fees, threshold)
    assert best == (every[0] if every else None)
    assert above == [p for p in every if p.net_bps > threshold and p.gross_bps > 0]
