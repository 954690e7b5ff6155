"""Window statistics: pure functions over the aligned slot arrays of one symbol.

Input: for each venue, its bid and ask per slot over the window (NaN where the venue
sent nothing in that slot), how many slots a quote stays fresh (its ``stale_after_s``
in slots), and the slots at which the venue disconnected.

A venue's quote in slot ``j`` is the last one received in slots ``j - fresh + 1 .. j``,
and never one from before a disconnect that happened in between (forward fill, bounded
the same way the live shard bounds staleness). On those filled series, per ordered pair
(buy on A's ask, sell on B's bid) and slot, the net spread is the same formula as
:func:`actors.spreads.cross_spread`; a slot counts only where both legs have a quote.

Per pair: ``samples`` (slots with both legs), ``coverage`` (samples / slots in the
window), ``min``, ``max``, ``mean``, ``p50``, ``p95`` of the net spread in bps
(percentiles interpolate linearly between slot values), and ``above_share``, the share
of those slots whose net spread is above the threshold. ``best`` gives the same figures
for the best pair in each slot; each venue's own spread gets mean/p50/p95.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from actors.spreads import BPS

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class VenueSlots:
    """One venue's window, aligned with every other venue's."""

    bid: FloatArray
    ask: FloatArray
    fresh_slots: int
    down_slots: Sequence[int] = ()  # slot indexes (0-based in the window) of disconnects


def forward_fill(values: FloatArray, fresh_slots: int, down_slots: Sequence[int]) -> FloatArray:
    """``values`` with each NaN replaced by the last value at most ``fresh_slots - 1``
    slots before it, not reaching across a disconnect (a slot in ``down_slots`` and
    everything after it only see values from that slot on that arrived after it: the
    slot's own value is dropped, since it may predate the disconnect)."""
    n = len(values)
    positions = np.arange(n)
    valid = ~np.isnan(values)
    source = np.maximum.accumulate(np.where(valid, positions, -1))
    floor = np.full(n, -1)
    for d in down_slots:
        if 0 <= d < n:
            floor[d] = d + 1
    floor = np.maximum.accumulate(floor)
    usable = (source >= 0) & (source >= floor) & (positions - source < max(1, fresh_slots))
    out = np.full(n, np.nan)
    out[usable] = values[source[usable]]
    return out


def quantile_sorted(values: FloatArray, q: float) -> float:
    """The ``q`` quantile of sorted ``values``, interpolating linearly between the two
    nearest ranks (numpy's default method; one sort serves every quantile)."""
    position = q * (len(values) - 1)
    lo = int(position)
    hi = min(lo + 1, len(values) - 1)
    return float(values[lo] + (values[hi] - values[lo]) * (position - lo))


def _summary(net: FloatArray, slots: int, threshold_bps: float) -> dict[str, Any]:
    samples = int(net.size)
    if samples == 0:
        return {"samples": 0, "coverage": 0.0, "min": None, "max": None, "mean": None,
                "p50": None, "p95": None, "above_share": None}
    ordered = np.sort(net)
    return {
        "samples": samples,
        "coverage": round(samples / slots, 4) if slots else 0.0,
        "min": _round(ordered[0]), "max": _round(ordered[-1]), "mean": _round(ordered.mean()),
        "p50": _round(quantile_sorted(ordered, 0.5)), "p95": _round(quantile_sorted(ordered, 0.95)),
        "above_share": round(float(np.count_nonzero(ordered > threshold_bps)) / samples, 4),
    }


def _round(x: Any) -> float:
    return round(float(x), 4)


def window_statistics(venues: Mapping[str, VenueSlots], fees_bps: Mapping[str, float],
                      threshold_bps: float) -> dict[str, Any]:
    """Statistics of every ordered venue pair, the best pair per slot, and each venue's
    own spread, over the slots the arrays cover."""
    names = sorted(venues)
    filled: dict[str, tuple[FloatArray, FloatArray]] = {}
    slots = 0
    for name in names:
        v = venues[name]
        slots = max(slots, len(v.bid))
        filled[name] = (forward_fill(v.bid, v.fresh_slots, v.down_slots),
                        forward_fill(v.ask, v.fresh_slots, v.down_slots))
    pairs: list[dict[str, Any]] = []
    best = np.full(slots, -np.inf)
    for buy in names:
        ask = filled[buy][1]
        fee_buy = fees_bps.get(buy, 0.0) / BPS
        for sell in names:
            if sell == buy:
                continue
            bid = filled[sell][0]
            fee_sell = fees_bps.get(sell, 0.0) / BPS
            with np.errstate(invalid="ignore"):
                net = (bid * (1 - fee_sell) - ask * (1 + fee_buy)) / ask * BPS
            both = ~np.isnan(net)
            np.fmax(best, np.where(both, net, -np.inf), out=best)
            pairs.append({"buy_venue": buy, "sell_venue": sell, **_summary(net[both], slots, threshold_bps)})
    pairs.sort(key=lambda p: (p["mean"] is None, -(p["mean"] or 0.0), p["buy_venue"], p["sell_venue"]))
    own: dict[str, Any] = {}
    for name in names:
        bid, ask = filled[name]
        both = ~(np.isnan(bid) | np.isnan(ask))
        spread = (ask[both] - bid[both]) / ((ask[both] + bid[both]) / 2) * BPS
        if spread.size:
            spread.sort()
            own[name] = {"samples": int(spread.size), "mean": _round(spread.mean()),
                         "p50": _round(quantile_sorted(spread, 0.5)),
                         "p95": _round(quantile_sorted(spread, 0.95))}
        else:
            own[name] = {"samples": 0, "mean": None, "p50": None, "p95": None}
    best_values = best[np.isfinite(best)]
    return {
        "slots": slots,
        "threshold_bps": threshold_bps,
        "best": _summary(best_values, slots, threshold_bps),
        "pairs": pairs,
        "venues": own,
    }
