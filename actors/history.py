"""Recorded history for the charts: each venue's bid/ask and the best net spread, read back
from the recorder's Parquet files (``GET /api/history``, documented in docs/http-api.md).

Reading follows the recorder's rules (:mod:`actors.recorder`): only the hour directories
that overlap the requested range are listed (partition pruning by path), each through
:func:`~actors.recorder.hour_files` so that a compaction in progress never shows a row
twice; only the columns needed are read (projection), and the symbol, venue and time
filters are pushed down into the Parquet scan.

Downsampling: the range ``[from, to)`` is cut into at most ``max_points`` buckets of
equal width (whole milliseconds). Each bucket that holds at least one quote gives one
point: a venue's bid and ask are those of its latest quote at the bucket's last quote,
if that quote is still fresh then (``venues.<v>.stale_after_s``), else null; the best net
spread is the maximum, over the bucket's quotes, of the best net spread right after each
quote: the best, over ordered pairs of venues whose quotes are both fresh then, of the
live shard's own formula (:func:`actors.spreads.cross_spread`, fees from
``venues.<v>.taker_fee_bps``), evaluated on whole numpy columns (one column per venue:
its quote in force at each row) rather than quote by quote. A bucket holding one quote
per venue shows exactly the recorded values. Quotes up to the longest ``stale_after_s`` before
``from`` seed the book so the first bucket starts from the state the live system had.

Bounds: the range is at most ``max_range_s``; the files in range may hold at most
``max_rows_scanned`` rows (read from their footers before any data is read), and at most
``max_rows_used`` rows may match the filters. Everything here is blocking: the web layer
runs :func:`read_history` in a worker thread.

Error handling: a bad parameter raises :class:`HistoryError` with status 400, no data for
the symbol in range 404, a range holding too many rows 413. ``OSError`` and Arrow errors
from the files propagate (the web layer answers 500 and logs).
"""

from __future__ import annotations

import math
import pathlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from actors.recorder import NS_PER_HOUR, SCHEMAS, hour_files, partition_dir
from actors.records import Quote
from actors.spreads import cross_spread

__all__ = [
    "HistoryError",
    "HistoryLimits",
    "HistoryQuery",
    "parse_history_query",
    "parse_time",
    "read_history",
    "stream_files",
]

NS_PER_MS = 1_000_000
SYMBOL_RE = re.compile(r"[A-Z0-9]{1,30}/[A-Z0-9]{1,30}")
_VENUE_RE = re.compile(r"[a-z0-9_]{1,32}")
_LISTING_ATTEMPTS = 3


class HistoryError(Exception):
    """A history request that cannot be answered; ``status`` is the HTTP status to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """The caps on one history request."""

    max_range_s: float = 24 * 3600.0
    max_points: int = 5_000
    max_venues: int = 8
    max_rows_scanned: int = 5_000_000
    # ~100 MB of columns at the peak with 8 venues (measured: 500k rows took 190 MB RSS)
    max_rows_used: int = 250_000


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A validated request: ``[from_ns, to_ns)``; empty ``venues`` means every venue."""

    symbol: str
    venues: tuple[str, ...]
    from_ns: int
    to_ns: int
    max_points: int


def parse_time(name: str, text: str) -> int:
    """Nanoseconds since the epoch from integer milliseconds or ISO 8601 (UTC if no zone)."""
    text = text.strip()
    if re.fullmatch(r"\d{1,16}", text):
        return int(text) * NS_PER_MS
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise HistoryError(400, f"{name}: expected milliseconds since the epoch or an ISO 8601 "
                                f"time such as 2024-03-01T12:00:00Z, got {text[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = moment.timestamp()
    if seconds < 0:
        raise HistoryError(400, f"{name}: before 1970")
    return round(seconds * 1e6) * 1_000


def parse_history_query(
    args: Mapping[str, str], *, known_venues: Collection[str], limits: HistoryLimits,
) -> HistoryQuery:
    """Validate the query-string parameters; raises :class:`HistoryError` (400)."""
    unknown = sorted(set(args) - {"symbol", "venues", "from", "to", "max_points"})
    if unknown:
        raise HistoryError(400, f"unknown parameter(s): {', '.join(unknown)[:100]}")
    symbol = args.get("symbol", "")
    if not SYMBOL_RE.fullmatch(symbol):
        raise HistoryError(400, "symbol must look like BASE/QUOTE, e.g. BTC/USDT")
    venues: tuple[str, ...] = ()
    raw_venues = args.get("venues", "")
    if raw_venues:
        names = raw_venues.split(",")
        if len(names) > limits.max_venues:
            raise HistoryError(400, f"venues: at most {limits.max_venues}, got {len(names)}")
        bad = [n for n in names if not _VENUE_RE.fullmatch(n) or n not in known_venues]
        if bad:
            raise HistoryError(400, f"venues: unknown venue(s) {', '.join(bad)[:100]} "
                                    f"(known: {', '.join(sorted(known_venues))})")
        venues = tuple(dict.fromkeys(names))
    for name in ("from", "to"):
        if not args.get(name):
            raise HistoryError(400, f"{name} is required (milliseconds since the epoch or ISO 8601)")
    from_ns, to_ns = parse_time("from", args["from"]), parse_time("to", args["to"])
    if to_ns <= from_ns:
        raise HistoryError(400, "to must be after from")
    if to_ns - from_ns > limits.max_range_s * 1e9:
        raise HistoryError(400, f"range too long: at most {limits.max_range_s:g} s")
    raw_points = args.get("max_points", "500")
    if not re.fullmatch(r"\d{1,9}", raw_points) or not 1 <= int(raw_points) <= limits.max_points:
        raise HistoryError(400, f"max_points must be an integer in 1..{limits.max_points}")
    return HistoryQuery(symbol, venues, from_ns, to_ns, int(raw_points))


def stream_files(data_dir: pathlib.Path, stream: str, from_ns: int, to_ns: int) -> list[pathlib.Path]:
    """The data files of ``stream`` for the hours overlapping ``[from_ns, to_ns)``.

    Partition pruning by path: only those hour directories are listed, each by the
    recorder's reading rule. Raises ``OSError`` when a directory cannot be read.
    """
    files: list[pathlib.Path] = []
    for hour in range(from_ns // NS_PER_HOUR, (to_ns - 1) // NS_PER_HOUR + 1):
        hour_dir = partition_dir(data_dir, stream, hour)
        try:
            live, _superseded = hour_files(hour_dir)
        except FileNotFoundError:
            continue
        files.extend(live)
    return files


def _read_quotes(
    data_dir: pathlib.Path, query: HistoryQuery, start_ns: int, limits: HistoryLimits,
) -> tuple[pa.Table, int]:
    """(the matching quotes, sorted by recv_ts; rows in the files scanned)."""
    schema = SCHEMAS["quotes"]
    for attempt in range(_LISTING_ATTEMPTS):
        files = stream_files(data_dir, "quotes", start_ns, query.to_ns)
        try:
            scanned = sum(pq.read_metadata(f).num_rows for f in files)
            if scanned > limits.max_rows_scanned:
                raise HistoryError(413, f"the range holds {scanned} recorded quotes, more than "
                                        f"{limits.max_rows_scanned}: ask for a shorter range")
            if not files:
                return schema.empty_table(), 0
            condition = ((pc.field("symbol") == query.symbol)
                         & (pc.field("recv_ts") >= start_ns) & (pc.field("recv_ts") < query.to_ns))
            if query.venues:
                condition &= pc.field("venue").isin(list(query.venues))
            dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
            table = dataset.to_table(columns=["venue", "bid", "ask", "recv_ts"], filter=condition)
        except FileNotFoundError:
            # A compaction replaced a file between the listing and the read: list again.
            if attempt + 1 == _LISTING_ATTEMPTS:
                raise
            continue
        if table.num_rows > limits.max_rows_used:
            raise HistoryError(413, f"{table.num_rows} quotes of {query.symbol} in range, more "
                                    f"than {limits.max_rows_used}: ask for a shorter range")
        return table.sort_by([("recv_ts", "ascending")]), scanned
    raise AssertionError("unreachable")  # pragma: no cover


class _Columns:
    """One venue's quote in force at every row, as columns: what :func:`cross_spread` reads
    (``venue``, ``bid``, ``ask``), so the live formula runs on whole columns at once."""

    __slots__ = ("ask", "bid", "fresh", "venue")

    def __init__(self, venue: str, bid: npt.NDArray[np.float64], ask: npt.NDArray[np.float64],
                 fresh: npt.NDArray[np.bool_]) -> None:
        self.venue = venue
        self.bid = bid
        self.ask = ask
        self.fresh = fresh


def _venue_columns(venue: str, is_venue: npt.NDArray[np.bool_], ts: npt.NDArray[np.int64],
                   bid: npt.NDArray[np.float64], ask: npt.NDArray[np.float64], stale_ns: int) -> _Columns:
    rows = np.arange(len(ts))
    last = np.maximum.accumulate(np.where(is_venue, rows, -1))  # its latest quote at each row
    has = last >= 0
    at = np.where(has, last, 0)
    # fresh at each row's time, as the shard judges it: strictly before recv_ts + stale
    fresh = has & (ts < ts[at] + stale_ns)
    return _Columns(venue, np.where(has, bid[at], np.nan), np.where(has, ask[at], np.nan), fresh)


def _optional(values: npt.NDArray[np.float64]) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


def read_history(
    data_dir: pathlib.Path, query: HistoryQuery, *, fees_bps: Mapping[str, float],
    stale_after_ns: Mapping[str, int], limits: HistoryLimits | None = None,
    default_stale_ns: int = 10_000_000_000,
) -> dict[str, Any]:
    """Answer ``query`` from the quotes under ``data_dir`` (blocking; see the module doc)."""
    limits = limits or HistoryLimits()
    venues_of_interest = query.venues or tuple(stale_after_ns)
    seed_ns = max((stale_after_ns.get(v, default_stale_ns) for v in venues_of_interest),
                  default=default_stale_ns)
    table, scanned = _read_quotes(data_dir, query, max(0, query.from_ns - seed_ns), limits)
    ts = table.column("recv_ts").to_numpy()
    first = int(np.searchsorted(ts, query.from_ns))
    used = len(ts) - first
    if not used:
        raise HistoryError(404, f"no recorded quotes of {query.symbol} between "
                                f"{query.from_ns // NS_PER_MS} and {query.to_ns // NS_PER_MS} "
                                "(ms since the epoch)")
    venue_codes = table.column("venue").combine_chunks().dictionary_encode()
    names: list[str] = venue_codes.dictionary.to_pylist()
    codes = venue_codes.indices.to_numpy(zero_copy_only=False)
    bid = table.column("bid").to_numpy()
    ask = table.column("ask").to_numpy()
    books = [_venue_columns(name, codes == i, ts, bid, ask, stale_after_ns.get(name, default_stale_ns))
             for i, name in enumerate(names)]

    # The best net spread right after each quote: the live formula over every ordered pair
    # of venues whose quotes are both fresh then (NaN where fewer than two are).
    best = np.full(len(ts), np.nan)
    for buy in books:
        for sell in books:
            if buy is sell:
                continue
            pair = cross_spread(cast(Quote, buy), cast(Quote, sell), fees_bps.get(buy.venue, 0.0),
                                fees_bps.get(sell.venue, 0.0))
            net = cast("npt.NDArray[np.float64]", pair.net_bps)
            np.fmax(best, np.where(buy.fresh & sell.fresh, net, np.nan), out=best)

    range_ms = (query.to_ns - query.from_ns + NS_PER_MS - 1) // NS_PER_MS
    width_ns = max(1, math.ceil(range_ms / query.max_points)) * NS_PER_MS
    bucket = (ts[first:] - query.from_ns) // width_ns
    starts = np.concatenate(([0], np.flatnonzero(np.diff(bucket)) + 1))
    last_rows = first + np.concatenate((starts[1:] - 1, [used - 1]))
    series: dict[str, dict[str, list[float | None]]] = {}
    for book in sorted(books, key=lambda b: b.venue):
        fresh = book.fresh[last_rows]
        series[book.venue] = {"bid": _optional(np.where(fresh, book.bid[last_rows], np.nan)),
                              "ask": _optional(np.where(fresh, book.ask[last_rows], np.nan))}
    return {
        "symbol": query.symbol,
        "from": query.from_ns // NS_PER_MS,
        "to": query.to_ns // NS_PER_MS,
        "bucket_ms": width_ns // NS_PER_MS,
        "rows": used,
        "rows_scanned": scanned,
        "t": ((query.from_ns + bucket[starts] * width_ns) // NS_PER_MS).tolist(),
        "venues": series,
        "best_net_bps": _optional(np.fmax.reduceat(best[first:], starts)),
    }
