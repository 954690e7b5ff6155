"""Fill the rolling windows to their cap and compare RSS with the computed budget.

    python bench/window_budget.py [--config config.toml] [--max-series N] [--length-s S]
                                  [--shards K] [--no-fill-slots]

Builds the shards exactly as the runtime does (``ceil(max_series / shards)`` series per
shard, the configured resolution and length), measures RSS, then pushes quotes through
``Shard.apply`` for twice as many (symbol, venue) series as the cap allows, two venues
per symbol, so both stores (bid/ask per symbol and venue, best net spread per symbol)
reach their caps and the least recently updated series are evicted on the way. With
slot filling on (the default) every slot of every surviving series is then written, so
the rings are full, not just allocated. RSS is measured again after a collection.

Prints the figures and writes bench/out/window_budget.md. Passes when the RSS growth
is within 20 % of the budget's window parts (``windows_quotes + windows_spreads``).
Exit code 0 on pass, 1 on fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.budget import compute_budget  # noqa: E402
from actors.channels import ConflatingChannel, DropChannel  # noqa: E402
from actors.config import load_config  # noqa: E402
from actors.monitor import rss_bytes  # noqa: E402
from actors.records import Quote  # noqa: E402
from actors.shard import Shard, ShardOutputs  # noqa: E402

MB = 2**20
S = 1_000_000_000
VENUES = ("binance", "bybit")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config.toml")
    parser.add_argument("--max-series", type=int, default=None)
    parser.add_argument("--length-s", type=int, default=None)
    parser.add_argument("--shards", type=int, default=None)
    parser.add_argument("--no-fill-slots", action="store_true", help="only allocate the rings")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "window_budget.md")
    args = parser.parse_args()

    config = load_config(args.config)
    windows = config.windows
    changes = {k: v for k, v in (("max_series", args.max_series), ("length_s", args.length_s),
                                 ("shards", args.shards)) if v is not None}
    windows = dataclasses.replace(windows, **changes)
    config = dataclasses.replace(config, windows=windows)
    budget = compute_budget(config)
    window_budget = budget.parts["windows_quotes"] + budget.parts["windows_spreads"]

    per_shard = math.ceil(windows.max_series / windows.shards)
    fees = {v: 10.0 for v in VENUES}
    stale = {v: 10 * S for v in VENUES}
    shards = [
        Shard(i, config.spreads, windows, fees, stale,
              ShardOutputs(ConflatingChannel("states", 16), DropChannel("events", 16), None), per_shard)
        for i in range(windows.shards)
    ]
    gc.collect()
    rss_before = rss_bytes()

    t0 = 1_800_000_000 * S
    symbols = windows.max_series  # x 2 venues = twice the quote-series cap
    started = time.perf_counter()
    for i in range(symbols):
        shard = shards[i % windows.shards]
        now = t0 + i * 1_000_000
        batch = {(v, f"S{i}/USDT"): Quote(v, f"S{i}/USDT", 100.0 + j * 0.01, 1.0, 100.005 + j * 0.01, 1.0, 0, now)
                 for j, v in enumerate(VENUES)}
        shard.apply(batch, now)
    allocated_s = time.perf_counter() - started

    filled_points = 0
    if not args.no_fill_slots:
        started_fill = time.perf_counter()
        for shard in shards:
            for store in (shard.quote_series, shard.spread_series):
                cap = store.capacity
                for series in store.values():
                    last = series.head
                    width = len(series.columns)
                    for slot in range(last - cap + 1, last + 1):
                        series.record(slot, (100.0,) * width, t0)
                    filled_points += cap * width
        fill_s = time.perf_counter() - started_fill
    else:
        fill_s = 0.0
    now = t0 + symbols * 1_000_000
    for shard in shards:
        shard.sweep(now)
    gc.collect()
    rss_after = rss_bytes()

    quote_series = sum(len(s.quote_series) for s in shards)
    spread_series = sum(len(s.spread_series) for s in shards)
    evicted = sum(s.stats.evicted_lru for s in shards)
    ring_bytes = sum(s.stats.series_bytes for s in shards)
    growth = rss_after - rss_before
    ratio = growth / window_budget
    passed = abs(ratio - 1.0) <= 0.20

    lines = [
        "# Windows filled to the cap: RSS against the computed budget",
        "",
        f"Command: `python bench/window_budget.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`",
        "",
        f"- configuration: max_series {windows.max_series}, shards {windows.shards} "
        f"({per_shard} series a shard), length {windows.length_s} s at {windows.resolution_s} s "
        f"({windows.length_s // windows.resolution_s} slots)",
        f"- offered: {symbols} symbols x {len(VENUES)} venues = {symbols * len(VENUES)} bid/ask series; "
        f"kept {quote_series} bid/ask series and {spread_series} best-spread series; "
        f"{evicted} evicted (least recently updated)",
        f"- slots written: {'every slot of every kept series' if filled_points else 'none (rings only allocated)'}"
        f" ({filled_points:,} values, {fill_s:.1f} s); series creation through Shard.apply {allocated_s:.1f} s",
        f"- ring buffers held (exact): {ring_bytes / MB:.1f} MB",
        f"- budget, window parts (windows_quotes + windows_spreads): {window_budget / MB:.1f} MB",
        f"- RSS before {rss_before / MB:.1f} MB, after {rss_after / MB:.1f} MB: growth {growth / MB:.1f} MB",
        f"- growth / budget = {ratio:.3f} -> {'PASS' if passed else 'FAIL'} (criterion: within 20 %)",
        f"- whole budget {budget.total / MB:.0f} MB (includes the 160 MB baseline allowance, channels, "
        f"outboxes and recorder buffers at their bounds); RSS after {rss_after / MB:.0f} MB",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
