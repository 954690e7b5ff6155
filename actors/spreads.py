"""Spread arithmetic: pure functions over quotes, no clock, no I/O.

Definitions (all in basis points, 1 bp = 0.01 %):

* a venue's own spread: ``(ask - bid) / mid``;
* the cross spread of buying on venue A and selling on venue B:
  gross ``(B.bid - A.ask) / A.ask``; net of taker fees
  ``(B.bid * (1 - fee_B) - A.ask * (1 + fee_A)) / A.ask``, i.e. what is left per unit
  of quote currency spent on A after paying both venues' taker fees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from actors.records import Quote

BPS = 10_000.0


def quote_problem(q: Quote) -> str | None:
    """Why a quote must not be used, or None when it is valid."""
    bid, ask = q.bid, q.ask
    if not (math.isfinite(bid) and math.isfinite(ask)):
        return "non-finite price"
    if bid <= 0 or ask <= 0:
        return "non-positive price"
    if bid > ask:
        return "crossed book"
    if not (math.isfinite(q.bid_size) and math.isfinite(q.ask_size)) or q.bid_size < 0 or q.ask_size < 0:
        return "invalid size"
    return None


def venue_spread_bps(q: Quote) -> float:
    mid = (q.bid + q.ask) / 2
    return (q.ask - q.bid) / mid * BPS


@dataclass(frozen=True, slots=True)
class CrossSpread:
    buy_venue: str
    sell_venue: str
    gross_bps: float
    net_bps: float
    buy: Quote
    sell: Quote


def cross_spread(buy: Quote, sell: Quote, fee_buy_bps: float, fee_sell_bps: float) -> CrossSpread:
    gross = (sell.bid - buy.ask) / buy.ask * BPS
    net = (sell.bid * (1 - fee_sell_bps / BPS) - buy.ask * (1 + fee_buy_bps / BPS)) / buy.ask * BPS
    return CrossSpread(buy.venue, sell.venue, gross, net, buy, sell)


def all_cross_spreads(quotes: Mapping[str, Quote], fees_bps: Mapping[str, float]) -> list[CrossSpread]:
    """Every ordered pair of distinct venues, best net first; ties go to the pair whose
    (buy venue, sell venue) names sort first, so the best pair never depends on the order
    quotes arrived in."""
    pairs = [
        cross_spread(buy, sell, fees_bps.get(buy.venue, 0.0), fees_bps.get(sell.venue, 0.0))
        for buy in quotes.values()
        for sell in quotes.values()
        if buy.venue != sell.venue
    ]
    pairs.sort(key=lambda c: (-c.net_bps, c.buy_venue, c.sell_venue))
    return pairs


def best_and_above(quotes: Mapping[str, Quote], fees_bps: Mapping[str, float],
                   threshold_bps: float) -> tuple[CrossSpread | None, list[CrossSpread]]:
    """The best pair (as :func:`all_cross_spreads` would rank it first) and every pair
    whose net spread is above ``threshold_bps`` with a positive gross, best first.

    Same arithmetic as :func:`cross_spread`, but only the pairs returned become objects:
    this runs for every quote, and with 8 venues building and sorting all 56 pairs was
    most of a shard's time.
    """
    venues = sorted(quotes)
    if len(venues) < 2:
        return None, []
    costs = []     # (quote, ask, ask * (1 + fee))
    proceeds = []  # (bid, bid * (1 - fee))
    for v in venues:
        q = quotes[v]
        fee = fees_bps.get(v, 0.0) / BPS
        costs.append((q, q.ask, q.ask * (1 + fee)))
        proceeds.append((q.bid, q.bid * (1 - fee)))
    best_net = -math.inf
    best: tuple[int, int] = (0, 1)
    above: list[tuple[int, int]] = []
    for i, (_, ask, cost) in enumerate(costs):
        for j, (bid, gain) in enumerate(proceeds):
            if i == j:
                continue
            net = (gain - cost) / ask * BPS
            if net > best_net:
                best_net, best = net, (i, j)
            if net > threshold_bps and bid > ask:
                above.append((i, j))

    def pair(ij: tuple[int, int]) -> CrossSpread:
        buy_q, sell_q = costs[ij[0]][0], costs[ij[1]][0]
        return cross_spread(buy_q, sell_q, fees_bps.get(buy_q.venue, 0.0), fees_bps.get(sell_q.venue, 0.0))

    pairs = [pair(ij) for ij in above]
    pairs.sort(key=lambda c: (-c.net_bps, c.buy_venue, c.sell_venue))
    return pair(best), pairs
