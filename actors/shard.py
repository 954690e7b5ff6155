"""Window shards: each owns the symbols that hash to it, and everything about them.

A shard keeps the latest fresh quote per (symbol, venue), computes each venue's own
spread and every ordered venue pair's cross spread, tracks opportunities from open to
close, and keeps rolling 1-second windows. It is the only owner of that state
(FAILURE_MODES #9, #10): other actors send it quotes over its conflating inbox, ask it
window queries over its query channel, and receive immutable payloads from it.

Correctness rules applied here:

* a crossed or invalid quote (bid > ask, non-positive, NaN, negative size) is counted
  and dropped, never stored;
* an update whose venue sequence number is lower than the stored one is counted and
  dropped (out of order);
* a quote older than its venue's ``stale_after_s``, or received before its venue's last
  disconnect, is stale: it never makes a best price or an opportunity, and is shown as
  stale;
* an opportunity opens when a pair's net spread stays above ``threshold_bps`` for
  ``min_duration_s``, tracks its peak, and closes when the spread falls back or a leg
  goes stale.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.channels import BlockingChannel, ConflatingChannel, DropChannel
from actors.config import SpreadsConfig, WindowsConfig
from actors.records import Opportunity, OpportunityState, Quote, VenueDown
from actors.spreads import CrossSpread, all_cross_spreads, quote_problem, venue_spread_bps
from actors.windows import SeriesStore

log = logging.getLogger(__name__)

OppKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class WindowQuery:
    """Ask the owning shard for a symbol's window; the answer goes to ``reply``."""

    symbol: str
    reply: trio.MemorySendChannel[dict[str, Any] | None]


@dataclass(slots=True)
class ShardStats:
    """Counters of one shard; written only by the shard."""

    index: int
    quotes: int = 0
    invalid: int = 0
    out_of_order: int = 0
    stale_dropped: int = 0
    venue_downs: int = 0
    symbols: int = 0
    open_opportunities: int = 0
    opportunities_opened: int = 0
    opportunities_closed: int = 0
    queries: int = 0
    series: int = 0
    series_bytes: int = 0
    evicted_lru: int = 0
    evicted_ttl: int = 0

    def snapshot(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class _Open:
    opened_at: int
    peak_net: float
    last: CrossSpread


@dataclass(slots=True)
class ShardOutputs:
    states: ConflatingChannel[str, Any]
    events: DropChannel[Opportunity]
    recorder: DropChannel[Any] | None


@dataclass(slots=True)
class Shard:
    """The state of one shard and the logic over it; driven by :func:`run_shard`."""

    index: int
    spreads: SpreadsConfig
    windows: WindowsConfig
    fees_bps: Mapping[str, float]
    stale_after_ns: Mapping[str, int]
    outputs: ShardOutputs
    max_series: int
    books: dict[str, dict[str, Quote]] = field(default_factory=dict)
    venue_down_at: dict[str, int] = field(default_factory=dict)
    pending: dict[OppKey, int] = field(default_factory=dict)
    open: dict[OppKey, _Open] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    known_stale: set[tuple[str, str]] = field(default_factory=set)
    opps_dirty: bool = True
    stats: ShardStats = field(init=False)
    quote_series: SeriesStore[tuple[str, str]] = field(init=False)
    spread_series: SeriesStore[str] = field(init=False)
    resolution_ns: int = field(init=False)

    def __post_init__(self) -> None:
        self.stats = ShardStats(self.index)
        capacity = max(1, self.windows.length_s // self.windows.resolution_s)
        self.quote_series = SeriesStore(self.max_series, capacity, 2)
        self.spread_series = SeriesStore(self.max_series, capacity, 1, mode_max=True)
        self.resolution_ns = self.windows.resolution_s * 1_000_000_000

    # -- ingest ---------------------------------------------------------------------

    def apply(self, batch: Mapping[tuple[str, str], Quote | VenueDown], now_ns: int) -> None:
        touched: set[str] = set()
        for item in batch.values():
            if type(item) is VenueDown:
                self._venue_down(item, touched)
            else:
                assert type(item) is Quote
                self._quote(item, touched)
        for symbol in touched:
            self._evaluate(symbol, now_ns)

    def _venue_down(self, marker: VenueDown, touched: set[str]) -> None:
        self.stats.venue_downs += 1
        if marker.at_ns > self.venue_down_at.get(marker.venue, 0):
            self.venue_down_at[marker.venue] = marker.at_ns
        for symbol, book in self.books.items():
            quote = book.get(marker.venue)
            if quote is not None and quote.recv_ts <= marker.at_ns:
                del book[marker.venue]
                self.known_stale.discard((symbol, marker.venue))
                touched.add(symbol)

    def _quote(self, quote: Quote, touched: set[str]) -> None:
        stats = self.stats
        stats.quotes += 1
        if quote_problem(quote) is not None:
            stats.invalid += 1
            return
        if quote.recv_ts <= self.venue_down_at.get(quote.venue, 0):
            stats.stale_dropped += 1
            return
        book = self.books.get(quote.symbol)
        if book is None:
            book = self.books[quote.symbol] = {}
            stats.symbols = len(self.books)
        old = book.get(quote.venue)
        if old is not None and quote.seq and old.seq and quote.seq < old.seq:
            stats.out_of_order += 1
            return
        book[quote.venue] = quote
        self.known_stale.discard((quote.symbol, quote.venue))
        touched.add(quote.symbol)
        slot = quote.recv_ts // self.resolution_ns
        self.quote_series.record((quote.symbol, quote.venue), slot, (quote.bid, quote.ask),
                                 quote.recv_ts)

    # -- spreads and opportunities -------------------------------------------------

    def is_fresh(self, quote: Quote, now_ns: int) -> bool:
        limit = self.stale_after_ns.get(quote.venue, 10_000_000_000)
        return now_ns - quote.recv_ts <= limit and quote.recv_ts > self.venue_down_at.get(quote.venue, 0)

    def fresh_quotes(self, symbol: str, now_ns: int) -> dict[str, Quote]:
        book = self.books.get(symbol, {})
        return {v: q for v, q in book.items() if self.is_fresh(q, now_ns)}

    def _evaluate(self, symbol: str, now_ns: int) -> None:
        self.dirty.add(symbol)
        fresh = self.fresh_quotes(symbol, now_ns)
        pairs = all_cross_spreads(fresh, self.fees_bps) if len(fresh) > 1 else []
        if pairs:
            self.spread_series.record(symbol, now_ns // self.resolution_ns, (pairs[0].net_bps,),
                                      now_ns)
        threshold = self.spreads.threshold_bps
        min_ns = int(self.spreads.min_duration_s * 1e9)
        above: dict[OppKey, CrossSpread] = {}
        for pair in pairs:
            if pair.net_bps <= threshold or pair.gross_bps <= 0:
                break
            above[(symbol, pair.buy_venue, pair.sell_venue)] = pair
        for key, pair in above.items():
            current = self.open.get(key)
            if current is not None:
                current.last = pair
                if pair.net_bps > current.peak_net:
                    current.peak_net = pair.net_bps
                self.opps_dirty = True
                continue
            first = self.pending.setdefault(key, now_ns)
            if now_ns - first >= min_ns:
                del self.pending[key]
                self.open[key] = _Open(opened_at=first, peak_net=pair.net_bps, last=pair)
                self.stats.opportunities_opened += 1
                self._emit(key, self.open[key], OpportunityState.OPEN, 0)
                self.opps_dirty = True
        for key in [k for k in self.pending if k[0] == symbol and k not in above]:
            del self.pending[key]
        for key in [k for k in self.open if k[0] == symbol and k not in above]:
            closed = self.open.pop(key)
            self.stats.opportunities_closed += 1
            self._emit(key, closed, OpportunityState.CLOSE, now_ns)
            self.opps_dirty = True
        self.stats.open_opportunities = len(self.open)

    def _emit(self, key: OppKey, opp: _Open, state: OpportunityState, closed_at: int) -> None:
        event = _opportunity(key, opp, state, closed_at)
        self.outputs.events.put_one_nowait(event)
        if self.outputs.recorder is not None:
            self.outputs.recorder.put_one_nowait(event)

    def sweep(self, now_ns: int) -> None:
        """Re-evaluate symbols whose quotes went stale since the last look; expire windows."""
        evaluated: set[str] = set()
        for symbol, book in self.books.items():
            for venue, quote in book.items():
                key = (symbol, venue)
                if key not in self.known_stale and not self.is_fresh(quote, now_ns):
                    self.known_stale.add(key)
                    evaluated.add(symbol)
        for symbol in evaluated:
            self._evaluate(symbol, now_ns)
        # a pending window may reach min_duration without a new quote arriving
        for symbol in {key[0] for key in self.pending} - evaluated:
            self._evaluate(symbol, now_ns)
        ttl_ns = int(self.windows.ttl_s * 1e9)
        self.quote_series.expire(now_ns - ttl_ns)
        self.spread_series.expire(now_ns - ttl_ns)
        stale_books = [s for s, b in self.books.items()
                       if all(now_ns - q.recv_ts > ttl_ns for q in b.values())]
        for symbol in stale_books:
            for venue in self.books.pop(symbol):
                self.known_stale.discard((symbol, venue))
        stats = self.stats
        stats.symbols = len(self.books)
        stats.series = len(self.quote_series) + len(self.spread_series)
        stats.series_bytes = self.quote_series.nbytes + self.spread_series.nbytes
        stats.evicted_lru = self.quote_series.evicted_lru + self.spread_series.evicted_lru
        stats.evicted_ttl = self.quote_series.evicted_ttl + self.spread_series.evicted_ttl

    # -- publishing ----------------------------------------------------------------

    def publish(self, now_ns: int) -> None:
        states = self.outputs.states
        for symbol in self.dirty:
            fresh = self.fresh_quotes(symbol, now_ns)
            book = self.books.get(symbol, {})
            states.put_nowait(f"quotes:{symbol}", quotes_payload(symbol, book, fresh))
            pairs = all_cross_spreads(fresh, self.fees_bps) if len(fresh) > 1 else []
            states.put_nowait(f"spreads:{symbol}", spreads_payload(symbol, pairs))
        if self.dirty:
            states.put_nowait(f"symbols#{self.index}", sorted(self.books))
        self.dirty.clear()
        if self.opps_dirty:
            rows = [opportunity_row(_opportunity(k, o, OpportunityState.UPDATE, 0), now_ns)
                    for k, o in self.open.items()]
            states.put_nowait(f"opportunities#{self.index}", rows)
            self.opps_dirty = False

    # -- queries -------------------------------------------------------------------

    def window(self, symbol: str, now_ns: int) -> dict[str, Any] | None:
        book = self.books.get(symbol)
        venues = sorted(v for v in self.fees_bps if self.quote_series.get((symbol, v)) is not None)
        if book is None and not venues:
            return None
        res = self.windows.resolution_s
        last = now_ns // self.resolution_ns
        first = last - self.quote_series.capacity + 1
        if venues:
            first = max(first, min(self._first_filled(symbol, v) for v in venues))
        first = min(first, last)
        out_venues: dict[str, dict[str, list[float | None]]] = {}
        for v in venues:
            series = self.quote_series.get((symbol, v))
            if series is None:
                continue
            bid, ask = series.read(first, last)
            out_venues[v] = {"bid": bid, "ask": ask}
        spread = self.spread_series.get(symbol)
        best = spread.read(first, last)[0] if spread is not None else [None] * (last - first + 1)
        return {
            "symbol": symbol,
            "resolution_s": res,
            "t": [s * res for s in range(first, last + 1)],
            "venues": out_venues,
            "best_net_bps": best,
        }

    def _first_filled(self, symbol: str, venue: str) -> int:
        series = self.quote_series.get((symbol, venue))
        if series is None or series.head < 0:
            return 1 << 62
        cap = series.capacity
        for s in range(series.head - cap + 1, series.head + 1):
            if s >= 0 and not math.isnan(series.columns[0][s % cap]):
                return s
        return series.head


def _opportunity(key: OppKey, opp: _Open, state: OpportunityState, closed_at: int) -> Opportunity:
    last = opp.last
    return Opportunity(
        symbol=key[0], buy_venue=key[1], sell_venue=key[2], state=state,
        gross_bps=last.gross_bps, net_bps=last.net_bps, peak_net_bps=opp.peak_net,
        buy_price=last.buy.ask, buy_size=last.buy.ask_size,
        sell_price=last.sell.bid, sell_size=last.sell.bid_size,
        opened_at=opp.opened_at, closed_at=closed_at,
    )


def _r(x: float, digits: int = 3) -> float:
    return round(x, digits)


def quotes_payload(symbol: str, book: Mapping[str, Quote], fresh: Mapping[str, Quote]) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "venues": {
            v: {
                "bid": q.bid, "bid_size": q.bid_size, "ask": q.ask, "ask_size": q.ask_size,
                "recv_ms": q.recv_ts // 1_000_000, "spread_bps": _r(venue_spread_bps(q)),
                "stale": v not in fresh,
            }
            for v, q in sorted(book.items())
        },
    }


def spreads_payload(symbol: str, pairs: list[CrossSpread]) -> dict[str, Any]:
    rows = [
        {"buy_venue": p.buy_venue, "sell_venue": p.sell_venue,
         "gross_bps": _r(p.gross_bps), "net_bps": _r(p.net_bps)}
        for p in pairs
    ]
    return {"symbol": symbol, "best": rows[0] if rows else None, "pairs": rows}


def opportunity_row(o: Opportunity, now_ns: int) -> dict[str, Any]:
    end = o.closed_at or now_ns
    return {
        "symbol": o.symbol, "buy_venue": o.buy_venue, "sell_venue": o.sell_venue,
        "gross_bps": _r(o.gross_bps), "net_bps": _r(o.net_bps), "peak_net_bps": _r(o.peak_net_bps),
        "buy_price": o.buy_price, "buy_size": o.buy_size,
        "sell_price": o.sell_price, "sell_size": o.sell_size,
        "opened_at": o.opened_at // 1_000_000, "closed_at": o.closed_at // 1_000_000,
        "duration_ms": max(0, (end - o.opened_at) // 1_000_000),
    }


async def run_shard(
    shard: Shard,
    inbox: ConflatingChannel[tuple[str, str], Quote | VenueDown],
    queries: BlockingChannel[WindowQuery],
    *,
    clock_ns: Callable[[], int] = time.time_ns,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one shard until cancelled.

    Three loops in one nursery, all over the shard's own state: ingest (apply each
    conflated batch), tick (every ``spreads.tick_s``: staleness sweep, TTL eviction,
    publish changed payloads to the hub) and queries (answer window queries).

    Error handling: nothing here does I/O; an exception is a bug and goes to the
    supervisor, which restarts the shard with empty state (quotes refill within a tick).
    """

    async def ingest() -> None:
        while True:
            batch = await inbox.receive_batch()
            shard.apply(batch, clock_ns())

    async def tick() -> None:
        while True:
            await trio.sleep(shard.spreads.tick_s)
            now = clock_ns()
            shard.sweep(now)
            shard.publish(now)

    async def answer() -> None:
        while True:
            query = await queries.receive()
            shard.stats.queries += 1
            try:
                query.reply.send_nowait(shard.window(query.symbol, clock_ns()))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the asker gave up or already has an answer

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ingest)
        nursery.start_soon(tick)
        nursery.start_soon(answer)
        task_status.started()
