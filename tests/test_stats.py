"""Window statistics: hand-computed cases for the forward fill and every figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trio
import trio.testing

from actors.channels import BlockingChannel, ConflatingChannel
from actors.records import Quote, VenueDown
from actors.shard import QueryKind, WindowQuery, run_shard
from actors.stats import VenueSlots, forward_fill, window_statistics
from tests.test_shard import FEES, STALE, T0, S, feed, make, net, q

nan = math.nan


def arr(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


def test_forward_fill_is_bounded_by_freshness_and_stops_at_disconnects() -> None:
    assert same(forward_fill(arr(1, nan, nan, nan), 3, ()), arr(1, 1, 1, nan))
    assert same(forward_fill(arr(nan, 2, nan, 4, nan), 1, ()), arr(nan, 2, nan, 4, nan))
    # down in slot 1: slot 1 and later see only values from slot 2 on
    assert same(forward_fill(arr(1, nan, nan, nan), 10, [1]), arr(1, nan, nan, nan))
    assert same(forward_fill(arr(1, 7, 5, nan), 10, [1]), arr(1, nan, 5, 5))
    assert same(forward_fill(arr(1, nan, nan), 10, [5, -1]), arr(1, 1, 1))  # outside the window


def test_pair_best_and_venue_figures_by_hand() -> None:
    x = VenueSlots(bid=arr(99, nan, nan, 99), ask=arr(100, nan, nan, 100), fresh_slots=2)
    y = VenueSlots(bid=arr(101, 101, 102, nan), ask=arr(102, 102, 103, nan), fresh_slots=10)
    doc = window_statistics({"y": y, "x": x}, {"x": 0.0, "y": 0.0}, threshold_bps=150.0)
    assert doc["slots"] == 4
    xy, yx = doc["pairs"]
    # buy x sell y: slot 0 and 1 -> 100 bps, slot 2 has no x quote (fresh 2 slots), slot 3 -> 200
    assert (xy["buy_venue"], xy["sell_venue"]) == ("x", "y")
    assert xy == {"buy_venue": "x", "sell_venue": "y", "samples": 3, "coverage": 0.75,
                  "min": 100.0, "max": 200.0, "mean": pytest.approx(133.3333),
                  "p50": 100.0, "p95": pytest.approx(190.0),  # linear: 100 + 0.9 * (200 - 100)
                  "above_share": pytest.approx(0.3333)}
    assert (yx["buy_venue"], yx["min"], yx["max"]) == (
        "y", pytest.approx((99 - 103) / 103 * 1e4, abs=1e-4), pytest.approx((99 - 102) / 102 * 1e4, abs=1e-4))
    assert doc["best"]["samples"] == 3 and doc["best"]["max"] == 200.0 and doc["best"]["min"] == 100.0
    # x's own spread: (100 - 99) / 99.5 in slots 0, 1, 3
    assert doc["venues"]["x"]["samples"] == 3
    assert doc["venues"]["x"]["mean"] == pytest.approx(1 / 99.5 * 1e4, abs=1e-4)


def test_fees_lower_every_figure_and_an_empty_pair_has_none() -> None:
    x = VenueSlots(bid=arr(99, 99), ask=arr(100, 100), fresh_slots=1)
    y = VenueSlots(bid=arr(101, 101), ask=arr(102, 102), fresh_slots=1)
    z = VenueSlots(bid=arr(nan, nan), ask=arr(nan, nan), fresh_slots=1)
    doc = window_statistics({"x": x, "y": y, "z": z}, {"x": 10.0, "y": 5.0}, threshold_bps=0.0)
    best = doc["pairs"][0]
    assert (best["buy_venue"], best["sell_venue"]) == ("x", "y")
    assert best["mean"] == pytest.approx(net(100, 10, 101, 5), abs=1e-4)
    assert best["above_share"] == 1.0
    empty = [p for p in doc["pairs"] if "z" in (p["buy_venue"], p["sell_venue"])]
    assert len(empty) == 4 and all(p["samples"] == 0 and p["mean"] is None for p in empty)
    assert doc["venues"]["z"] == {"samples": 0, "mean": None, "p50": None, "p95": None}


def test_shard_statistics_follow_its_windows_staleness_and_disconnects() -> None:
    shard, _, _ = make(length_s=10)
    feed(shard, q("a", 99.0, 100.0, T0), q("b", 101.0, 102.0, T0), now=T0)
    feed(shard, q("a", 99.0, 100.0, T0 + 4 * S), now=T0 + 4 * S)
    feed(shard, VenueDown("b", T0 + 2 * S), now=T0 + 4 * S)
    doc = shard.statistics("BTC/USDT", T0 + 9 * S)
    assert doc is not None and doc["slots"] == 10 and doc["to"] == T0 // S + 9
    ab = next(p for p in doc["pairs"] if (p["buy_venue"], p["sell_venue"]) == ("a", "b"))
    # b's quote (slot 0) holds in slot 1 and is cut by its disconnect in slot 2
    assert ab["samples"] == 2 and ab["mean"] == pytest.approx(net(100, 10, 101, 5), abs=1e-4)
    assert doc["venues"]["a"]["samples"] == 9  # a: slots 0..4 and its slot-4 quote fresh until 8
    assert shard.statistics("ETH/USDT", T0) is None
    assert STALE["a"] == 5 * S and FEES["a"] == 10.0


async def test_the_shard_answers_statistics_queries(autojump_clock: trio.testing.MockClock) -> None:
    shard, _, _ = make()
    inbox = ConflatingChannel[tuple[str, str], Quote | VenueDown]("in", 100)
    queries = BlockingChannel[WindowQuery]("q", 4)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: run_shard(shard, inbox, queries, clock_ns=lambda: T0 + S,
                                                          task_status=task_status))
        inbox.put_nowait(("a", "BTC/USDT"), q("a", 99.0, 100.0, T0))
        inbox.put_nowait(("b", "BTC/USDT"), q("b", 101.0, 102.0, T0))
        await trio.sleep(0.3)
        send, receive = trio.open_memory_channel[dict[str, object] | None](1)
        await queries.send(WindowQuery("BTC/USDT", send, QueryKind.STATS))
        answer = await receive.receive()
        assert answer is not None and answer["symbol"] == "BTC/USDT"
        assert isinstance(answer["best"], dict) and answer["best"]["samples"] == 2
        nursery.cancel_scope.cancel()


def test_an_answer_is_computed_once_per_slot() -> None:
    shard, _, _ = make(length_s=10)
    feed(shard, q("a", 99.0, 100.0, T0), q("b", 101.0, 102.0, T0), now=T0)
    first = shard.statistics("BTC/USDT", T0 + S // 10)
    assert shard.statistics("BTC/USDT", T0 + S // 2) is first
    later = shard.statistics("BTC/USDT", T0 + S)
    assert later is not first and later is not None and later["to"] == T0 // S + 1
