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
  ``min_duration_s``, tracks its peak and time-weighted mean, and closes when the spread
  falls back or a leg goes stale (by age or by its venue's disconnect).

Event time decides, not processing time: every decision is taken at the time of the
event that caused it (a quote's ``recv_ts``, a disconnect's ``at_ns``, the moment a leg
reaches its staleness limit, the moment a pending window reaches ``min_duration_s``).
Before a symbol takes a new quote it is brought up to that quote's time
(:meth:`Shard._advance`). So the same quotes give the same opportunities, with the same
times, whatever the batching and whenever the ticks run: live, or replayed at any speed.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import trio

from actors.channels import BlockingChannel, ConflatingChannel, DropChannel
from actors.config import SpreadsConfig, WindowsConfig
from actors.records import Opportunity, OpportunityState, Quote, VenueDown
from actors.spreads import CrossSpread, all_cross_spreads, best_and_above, quote_problem, venue_spread_bps
from actors.stats import VenueSlots, window_statistics
from actors.ticks import next_tick
from actors.windows import SeriesStore

log = logging.getLogger(__name__)

OppKey = tuple[str, str, str]
DEFAULT_STALE_NS = 10_000_000_000
DOWNS_KEPT = 64  # recent disconnects per venue remembered for the statistics' forward fill
STATS_CACHED = 64  # statistics answers kept per shard (each valid until the next slot)


class QueryKind(enum.Enum):
    WINDOW = "window"  # the chart snapshot: bid/ask per venue and best net per slot
    STATS = "stats"    # statistics per venue pair over the window
    FEED_WINDOW = "feed_window"  # the window snapshot for the feed: never None


@dataclass(frozen=True, slots=True)
class WindowQuery:
    """Ask the owning shard about a symbol's window; the answer (None when the shard
    has nothing for the symbol) goes to ``reply``."""

    symbol: str
    reply: trio.MemorySendChannel[dict[str, Any] | None]
    kind: QueryKind = QueryKind.WINDOW


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
class _Track:
    """One (symbol, buy venue, sell venue) window above the threshold, open or pending.

    The net spread is piecewise constant between evaluations, so its time-weighted mean
    is exact: ``area`` integrates net x time since ``first_ns``.
    """

    first_ns: int
    last_ns: int
    peak_net: float
    last: CrossSpread
    area: float = 0.0
    is_open: bool = False

    def accumulate(self, now_ns: int) -> None:
        if now_ns > self.last_ns:
            self.area += self.last.net_bps * (now_ns - self.last_ns)
            self.last_ns = now_ns

    def update(self, pair: CrossSpread) -> None:
        self.last = pair
        if pair.net_bps > self.peak_net:
            self.peak_net = pair.net_bps

    @property
    def mean_net(self) -> float:
        elapsed = self.last_ns - self.first_ns
        return self.area / elapsed if elapsed > 0 else self.last.net_bps


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
    recent_downs: dict[str, deque[int]] = field(default_factory=dict)
    stats_cache: OrderedDict[str, tuple[int, dict[str, Any]]] = field(default_factory=OrderedDict)
    #: per symbol, the first slot the next ``window:`` delta must carry
    window_sent: dict[str, int] = field(default_factory=dict)
    tracks: dict[str, dict[tuple[str, str], _Track]] = field(default_factory=dict)
    evaluated_at: dict[str, int] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    #: stale quotes per venue as of the last sweep; an immutable value replaced each
    #: sweep, so other actors may read it without asking the shard
    stale_counts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    opps_dirty: bool = True
    symbols_dirty: bool = False
    stats: ShardStats = field(init=False)
    quote_series: SeriesStore[tuple[str, str]] = field(init=False)
    spread_series: SeriesStore[str] = field(init=False)
    resolution_ns: int = field(init=False)
    min_duration_ns: int = field(init=False)

    def __post_init__(self) -> None:
        self.stats = ShardStats(self.index)
        capacity = max(1, self.windows.length_s // self.windows.resolution_s)
        self.quote_series = SeriesStore(self.max_series, capacity, 2)
        self.spread_series = SeriesStore(self.max_series, capacity, 1, mode_max=True)
        self.resolution_ns = self.windows.resolution_s * 1_000_000_000
        self.min_duration_ns = round(self.spreads.min_duration_s * 1e9)

    @property
    def open(self) -> dict[OppKey, _Track]:
        """The windows that are open (emitted), by key."""
        return {(s, *p): t for s, ts in self.tracks.items() for p, t in ts.items() if t.is_open}

    @property
    def pending(self) -> dict[OppKey, _Track]:
        """The windows above the threshold that have not lasted ``min_duration_s`` yet."""
        return {(s, *p): t for s, ts in self.tracks.items() for p, t in ts.items() if not t.is_open}

    # -- ingest ---------------------------------------------------------------------

    def apply(self, batch: Mapping[tuple[str, str], Quote | VenueDown], now_ns: int) -> None:
        """Apply a batch in event-time order (``recv_ts``, ``at_ns``).

        ``now_ns`` is unused by the logic: every decision is taken at the time of the event
        that caused it, so the same quotes give the same opportunities however they are
        batched and whenever the ticks run (live, or replayed at any speed).
        """
        del now_ns
        for item in sorted(batch.values(), key=_event_time):
            if type(item) is VenueDown:
                self._venue_down(item)
            else:
                assert type(item) is Quote
                self._quote(item)

    def _venue_down(self, marker: VenueDown) -> None:
        self.stats.venue_downs += 1
        affected = [symbol for symbol, book in self.books.items()
                    if (quote := book.get(marker.venue)) is not None and quote.recv_ts <= marker.at_ns]
        # bring each symbol up to the disconnect with the venue still counted as up
        times = {symbol: self._advance(symbol, marker.at_ns) for symbol in affected}
        if marker.at_ns > self.venue_down_at.get(marker.venue, 0):
            self.venue_down_at[marker.venue] = marker.at_ns
            downs = self.recent_downs.get(marker.venue)
            if downs is None:
                downs = self.recent_downs[marker.venue] = deque(maxlen=DOWNS_KEPT)
            downs.append(marker.at_ns)
        # the quotes stay in the books, stale from now on (shown with "stale": true)
        for symbol in affected:
            self._evaluate(symbol, times[symbol])

    def _quote(self, quote: Quote) -> None:
        stats = self.stats
        stats.quotes += 1
        if quote_problem(quote) is not None:
            stats.invalid += 1
            return
        if quote.recv_ts <= self.venue_down_at.get(quote.venue, 0):
            stats.stale_dropped += 1
            return
        symbol = quote.symbol
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = {}
            stats.symbols = len(self.books)
        old = book.get(quote.venue)
        if old is not None and quote.seq and old.seq and quote.seq < old.seq:
            stats.out_of_order += 1
            return
        at = self._advance(symbol, quote.recv_ts)
        book[quote.venue] = quote
        self._evaluate(symbol, at)
        slot = quote.recv_ts // self.resolution_ns
        self.quote_series.record((symbol, quote.venue), slot, (quote.bid, quote.ask), quote.recv_ts)

    # -- spreads and opportunities -------------------------------------------------

    def stale_at(self, quote: Quote) -> int:
        """The moment ``quote`` goes stale by age (it is fresh strictly before it)."""
        return quote.recv_ts + self.stale_after_ns.get(quote.venue, DEFAULT_STALE_NS)

    def is_fresh(self, quote: Quote, now_ns: int) -> bool:
        return (now_ns < self.stale_at(quote)
                and quote.recv_ts > self.venue_down_at.get(quote.venue, 0))

    def fresh_quotes(self, symbol: str, now_ns: int) -> dict[str, Quote]:
        book = self.books.get(symbol, {})
        return {v: q for v, q in book.items() if self.is_fresh(q, now_ns)}

    def _advance(self, symbol: str, until_ns: int) -> int:
        """Evaluate ``symbol`` at every moment before ``until_ns`` where something changed
        without a new quote: a leg going stale, a pending window reaching ``min_duration_s``.

        Returns the time to evaluate the next event at: ``until_ns``, or the symbol's last
        evaluation time when ``until_ns`` is earlier (events never go back in time).
        """
        last = self.evaluated_at.get(symbol, 0)
        if until_ns <= last:
            return last
        book = self.books.get(symbol, {})
        min_ns = self.min_duration_ns
        while True:
            due = until_ns + 1
            for quote in book.values():
                t = self.stale_at(quote)
                if last < t < due:
                    due = t
            for track in self.tracks.get(symbol, {}).values():
                if not track.is_open:
                    t = track.first_ns + min_ns
                    if last < t < due:
                        due = t
            if due > until_ns:
                return until_ns
            self._evaluate(symbol, due)
            last = due

    def _evaluate(self, symbol: str, now_ns: int) -> None:
        self.evaluated_at[symbol] = now_ns
        self.dirty.add(symbol)
        fresh = self.fresh_quotes(symbol, now_ns)
        best, pairs = best_and_above(fresh, self.fees_bps, self.spreads.threshold_bps)
        if best is not None:
            self.spread_series.record(symbol, now_ns // self.resolution_ns, (best.net_bps,), now_ns)
        above = {(pair.buy_venue, pair.sell_venue): pair for pair in pairs}
        tracks = self.tracks.get(symbol)
        if tracks is None:
            if not above:
                return
            tracks = self.tracks[symbol] = {}
        for venues, track in list(tracks.items()):
            track.accumulate(now_ns)
            still = above.pop(venues, None)
            if still is None:
                del tracks[venues]
                if track.is_open:
                    self._close((symbol, *venues), track, now_ns)
                continue
            track.update(still)
            if track.is_open:
                self.opps_dirty = True
            elif now_ns - track.first_ns >= self.min_duration_ns:
                self._open((symbol, *venues), track)
        for venues, pair in above.items():
            track = tracks[venues] = _Track(first_ns=now_ns, last_ns=now_ns, peak_net=pair.net_bps,
                                            last=pair)
            if self.min_duration_ns == 0:
                self._open((symbol, *venues), track)
        if not tracks:
            del self.tracks[symbol]

    def _open(self, key: OppKey, track: _Track) -> None:
        track.is_open = True
        self.stats.opportunities_opened += 1
        self.stats.open_opportunities += 1
        self._emit(key, track, OpportunityState.OPEN, 0)
        self.opps_dirty = True

    def _close(self, key: OppKey, track: _Track, now_ns: int) -> None:
        self.stats.opportunities_closed += 1
        self.stats.open_opportunities -= 1
        self._emit(key, track, OpportunityState.CLOSE, now_ns)
        self.opps_dirty = True

    def _emit(self, key: OppKey, track: _Track, state: OpportunityState, closed_at: int) -> None:
        event = _opportunity(key, track, state, closed_at)
        self.outputs.events.put_one_nowait(event)
        if self.outputs.recorder is not None:
            self.outputs.recorder.put_one_nowait(event)

    def sweep(self, now_ns: int) -> None:
        """Bring every symbol up to ``now_ns`` (legs going stale, windows reaching their
        minimum duration) and expire windows and books past the TTL."""
        for symbol in list(self.books):
            self._advance(symbol, now_ns)
        ttl_ns = int(self.windows.ttl_s * 1e9)
        self.quote_series.expire(now_ns - ttl_ns)
        self.spread_series.expire(now_ns - ttl_ns)
        stale_books = [s for s, b in self.books.items()
                       if all(now_ns - q.recv_ts > ttl_ns for q in b.values())]
        for symbol in stale_books:
            del self.books[symbol]
            self.evaluated_at.pop(symbol, None)
            self.window_sent.pop(symbol, None)
        stale: dict[str, int] = {}
        for book in self.books.values():
            for venue, quote in book.items():
                if not self.is_fresh(quote, now_ns):
                    stale[venue] = stale.get(venue, 0) + 1
        self.stale_counts = MappingProxyType(stale)
        stats = self.stats
        stats.symbols = len(self.books)
        stats.series = len(self.quote_series) + len(self.spread_series)
        stats.series_bytes = self.quote_series.nbytes + self.spread_series.nbytes
        stats.evicted_lru = self.quote_series.evicted_lru + self.spread_series.evicted_lru
        stats.evicted_ttl = self.quote_series.evicted_ttl + self.spread_series.evicted_ttl

    # -- publishing ----------------------------------------------------------------

    def publish(self, now_ns: int) -> None:
        """Offer the hub the state of every symbol that changed. A payload the full
        hub inbox dropped is offered again at the next tick (its symbol stays dirty), so
        the hub never keeps a superseded state once the overload is over."""
        states = self.outputs.states
        now_slot = now_ns // self.resolution_ns
        if self.dirty or self.symbols_dirty:
            # the symbol list first: the hub forgets the topics of symbols it does not know
            self.symbols_dirty = not states.put_nowait(f"symbols#{self.index}", sorted(self.books))
        dropped: set[str] = set(self.dirty) if self.symbols_dirty else set()
        for symbol in self.dirty - dropped:
            fresh = self.fresh_quotes(symbol, now_ns)
            book = self.books.get(symbol, {})
            sent = states.put_nowait(f"quotes:{symbol}", quotes_payload(symbol, book, fresh))
            pairs = all_cross_spreads(fresh, self.fees_bps) if len(fresh) > 1 else []
            sent &= states.put_nowait(f"spreads:{symbol}", spreads_payload(symbol, pairs))
            # the slots written since the last delta: the previous delta's last slot may
            # have changed after it was sent, so it is sent again (clients replace by time)
            first = max(self.window_sent.get(symbol, now_slot), now_slot - self.quote_series.capacity + 1)
            if states.put_nowait(f"window:{symbol}", self._window_slots(symbol, first, now_slot)):
                self.window_sent[symbol] = now_slot
            else:
                sent = False
            if not sent:
                dropped.add(symbol)
        self.dirty = dropped
        if self.opps_dirty:
            rows = [opportunity_row(_opportunity(k, t, OpportunityState.UPDATE, 0), now_ns)
                    for k, t in self.open.items()]
            self.opps_dirty = not states.put_nowait(f"opportunities#{self.index}", rows)

    # -- queries -------------------------------------------------------------------

    def window(self, symbol: str, now_ns: int) -> dict[str, Any] | None:
        """The symbol's window from its first filled slot to now; None when unknown."""
        book = self.books.get(symbol)
        venues = [v for v in self.fees_bps if self.quote_series.get((symbol, v)) is not None]
        if book is None and not venues:
            return None
        last = now_ns // self.resolution_ns
        first = last - self.quote_series.capacity + 1
        if venues:
            first = max(first, min(self._first_filled(symbol, v) for v in venues))
        return self._window_slots(symbol, min(first, last), last)

    def _window_slots(self, symbol: str, first: int, last: int) -> dict[str, Any]:
        """Slots ``first..last`` of the symbol's series (the shape of ``/api/window``)."""
        res = self.windows.resolution_s
        out_venues: dict[str, dict[str, list[float | None]]] = {}
        for v in sorted(self.fees_bps):
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

    def statistics(self, symbol: str, now_ns: int) -> dict[str, Any] | None:
        """Statistics per venue pair over the window (see :mod:`actors.stats`).

        About 10 ms for 8 venues over 3,600 slots, so an answer is cached until the
        next slot begins: however often it is asked, a symbol costs one computation
        per ``resolution_s``.
        """
        res_ns = self.resolution_ns
        last = now_ns // res_ns
        cached = self.stats_cache.get(symbol)
        if cached is not None and cached[0] == last:
            self.stats_cache.move_to_end(symbol)
            return cached[1]
        first = last - self.quote_series.capacity + 1
        venues: dict[str, VenueSlots] = {}
        for venue in sorted(self.fees_bps):
            series = self.quote_series.get((symbol, venue))
            if series is None:
                continue
            bid, ask = series.arrays(first, last)
            fresh_slots = -(-self.stale_after_ns.get(venue, DEFAULT_STALE_NS) // res_ns)
            downs = [d // res_ns - first for d in self.recent_downs.get(venue, ()) if d // res_ns >= first]
            venues[venue] = VenueSlots(bid, ask, fresh_slots, downs)
        if not venues:
            return None
        doc = window_statistics(venues, self.fees_bps, self.spreads.threshold_bps)
        answer = {"symbol": symbol, "resolution_s": self.windows.resolution_s,
                  "from": first * self.windows.resolution_s, "to": last * self.windows.resolution_s, **doc}
        self.stats_cache[symbol] = (last, answer)
        self.stats_cache.move_to_end(symbol)
        if len(self.stats_cache) > STATS_CACHED:
            self.stats_cache.popitem(last=False)
        return answer

    def _first_filled(self, symbol: str, venue: str) -> int:
        series = self.quote_series.get((symbol, venue))
        if series is None or series.head < 0:
            return 1 << 62
        cap = series.capacity
        for s in range(series.head - cap + 1, series.head + 1):
            if s >= 0 and not math.isnan(series.columns[0][s % cap]):
                return s
        return series.head


def _event_time(item: Quote | VenueDown) -> int:
    return item.at_ns if isinstance(item, VenueDown) else item.recv_ts


def _opportunity(key: OppKey, track: _Track, state: OpportunityState, closed_at: int) -> Opportunity:
    last = track.last
    return Opportunity(
        symbol=key[0], buy_venue=key[1], sell_venue=key[2], state=state,
        gross_bps=last.gross_bps, net_bps=last.net_bps, peak_net_bps=track.peak_net,
        mean_net_bps=track.mean_net,
        buy_price=last.buy.ask, buy_size=last.buy.ask_size,
        sell_price=last.sell.bid, sell_size=last.sell.bid_size,
        opened_at=track.first_ns, closed_at=closed_at,
    )


def _r(x: float, digits: int = 3) -> float:
    return round(x, digits)


def empty_window(symbol: str, resolution_s: int) -> dict[str, Any]:
    return {"symbol": symbol, "resolution_s": resolution_s, "t": [], "venues": {}, "best_net_bps": []}


def merge_window_delta(older: dict[str, Any], newer: dict[str, Any]) -> dict[str, Any]:
    """One ``window:`` delta holding the slots of both (``newer`` wins where both have a
    slot), so a delta replaced in a conflating channel before anyone read it loses no
    slot. Slots between the two that neither holds are None."""
    res = newer["resolution_s"]
    t_old, t_new = older["t"], newer["t"]
    if not t_old:
        return newer
    if not t_new:
        return older
    first, last = min(t_old[0], t_new[0]), max(t_old[-1], t_new[-1])
    times = list(range(first, last + 1, res))
    index = {t: i for i, t in enumerate(times)}

    def spread(values_old: list[Any] | None, values_new: list[Any] | None) -> list[Any]:
        out: list[Any] = [None] * len(times)
        for t_list, values in ((t_old, values_old), (t_new, values_new)):
            if values is not None:
                for t, v in zip(t_list, values, strict=True):
                    out[index[t]] = v
        return out

    venues: dict[str, dict[str, list[Any]]] = {}
    for v in sorted(set(older["venues"]) | set(newer["venues"])):
        o, n = older["venues"].get(v), newer["venues"].get(v)
        venues[v] = {side: spread(o[side] if o else None, n[side] if n else None) for side in ("bid", "ask")}
    return {"symbol": newer["symbol"], "resolution_s": res, "t": times, "venues": venues,
            "best_net_bps": spread(older["best_net_bps"], newer["best_net_bps"])}


def merge_hub_state(key: str, older: Any, newer: Any) -> Any:
    """The hub inbox's merge: window deltas combine, every other topic state is whole."""
    return merge_window_delta(older, newer) if key.startswith("window:") else None


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
    opened_ms = o.opened_at // 1_000_000
    end_ms = (o.closed_at or now_ns) // 1_000_000
    return {
        "symbol": o.symbol, "buy_venue": o.buy_venue, "sell_venue": o.sell_venue,
        "gross_bps": _r(o.gross_bps), "net_bps": _r(o.net_bps), "peak_net_bps": _r(o.peak_net_bps),
        "mean_net_bps": _r(o.mean_net_bps),
        "buy_price": o.buy_price, "buy_size": o.buy_size,
        "sell_price": o.sell_price, "sell_size": o.sell_size,
        "opened_at": opened_ms, "closed_at": o.closed_at // 1_000_000,
        "duration_ms": max(0, end_ms - opened_ms),
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
        period = shard.spreads.tick_s
        while True:
            # on the grid every shard shares (actors/ticks.py), so the hub can follow at once
            await trio.sleep_until(next_tick(trio.current_time(), period))
            now = clock_ns()
            shard.sweep(now)
            shard.publish(now)

    async def answer() -> None:
        while True:
            query = await queries.receive()
            shard.stats.queries += 1
            now = clock_ns()
            answer_doc: dict[str, Any] | None
            if query.kind is QueryKind.STATS:
                answer_doc = shard.statistics(query.symbol, now)
            elif query.kind is QueryKind.FEED_WINDOW:
                answer_doc = shard.window(query.symbol, now) or empty_window(query.symbol,
                                                                            shard.windows.resolution_s)
            else:
                answer_doc = shard.window(query.symbol, now)
            try:
                query.reply.send_nowait(answer_doc)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the asker gave up or already has an answer

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ingest)
        nursery.start_soon(tick)
        nursery.start_soon(answer)
        task_status.started()
