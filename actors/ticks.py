"""Aligned ticks: the shards publish on the same grid, the hub broadcasts just after.

Each shard publishes its changed state every ``spreads.tick_s`` and the hub broadcasts
every ``feed.tick_s``. With free-running sleeps the two phases were unrelated, so a state
waited a uniform 0..tick_s in the hub's inbox before going out: half a tick on average,
a whole tick at p99, on top of the shard's own wait (bench/performance.md, fan-out
latency). On one grid of the trio clock (shared by every actor of the process) every
shard publishes at ``k * tick_s`` and the hub takes their states ``HUB_LAG_S`` later.
A shard that is late under load is taken at the next tick, as before.
"""

from __future__ import annotations

import math

#: how long after the shards' grid point the hub broadcasts: room for every shard to
#: publish (each publish is a few ms of Python at most), far below a tick
HUB_LAG_S = 0.01


def next_tick(now: float, period: float, offset: float = 0.0) -> float:
    """The first time ``k * period + offset`` strictly after ``now``."""
    if period <= 0:
        raise ValueError(f"period must be positive, got {period}")
    k = math.floor((now - offset) / period) + 1
    at = k * period + offset
    return at if at > now else at + period


def hub_lag(period: float) -> float:
    """The hub's offset from the grid: ``HUB_LAG_S``, or a tenth of a short tick."""
    return min(HUB_LAG_S, period / 10)
