"""Shard logic: spread math, validation, staleness, opportunity lifecycle, bounded windows."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from actors.channels import BlockingChannel, ConflatingChannel, DropChannel
from actors.config import SpreadsConfig, WindowsConfig
from actors.records import Opportunity, OpportunityState, Quote, VenueDown
from actors.shard import Shard, ShardOutputs, WindowQuery, run_shard
from actors.spreads import all_cross_spreads, cross_spread, quote_problem, venue_spread_bps

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
    assert "b" not in shard.books["BTC/USDT"]
    assert events.receive_batch_nowait()[0].state is OpportunityState.CLOSE
    feed(shard, q("b", 101.0, 102.0, T0), now=T0 + 2)  # received before the disconnect: refused
    assert "b" not in shard.books["BTC/USDT"]
    assert shard.stats.stale_dropped == 1


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
