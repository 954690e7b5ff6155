"""A deterministic model of spot markets quoted on several venues.

The model is pure: no trio, no clock, no I/O. ``Market.step(dt)`` advances simulated
time by ``dt`` seconds and replaces :attr:`Market.snapshot` with a new immutable
:class:`MarketSnapshot`; readers hold a snapshot and never see a half-updated state.
Every random draw comes from one ``random.Random(seed)``, so the same symbols, venues,
seed and sequence of ``dt`` always give the same books, trades and windows.

Prices follow correlated random walks: one common market factor plus per-symbol
noise drive a fair price; each venue quotes around the fair price with a small
persistent, mean-reverting offset, a spread of a few basis points and random sizes.
A book changes at a per-symbol rate (liquid symbols more often), so quiet symbols can
go unchanged for seconds. With probability ``arb_probability`` per step an arbitrage
window opens on one symbol: one venue's quotes are shifted up so that its bid exceeds
another venue's ask by tens of basis points, for a few seconds, then it closes.

Cost: a step is event driven. Each (symbol, venue) pair carries the time of its next
book change and next trade in a heap; a step pops only the pairs that are due and
brings their fair price and venue offset forward lazily (exactly: Brownian increments
and Ornstein-Uhlenbeck decay over the time since they were last evaluated). So a step
costs O(changes), plus one copy of the book mapping when anything changed, not
O(symbols x venues): 2,000 symbols on one venue step in about 2 ms, and 2,000 on
eight venues in about 20 ms (quiet symbols make most of the cost disappear).

Symbols are listed per venue (some on one venue only) and may be listed but halted on
a venue (no book there), so discovery filtering has something to filter.
:meth:`Market.synthetic` (or :func:`synthetic_symbols`) builds a universe of any size,
the default symbols first, then generated ones with a long tail of quiet symbols.
"""

from __future__ import annotations

import heapq
import math
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

#: 2024-06-01T00:00:00Z; snapshots start here unless told otherwise, for determinism
DEFAULT_START_MS = 1_717_200_000_000

DEFAULT_VENUES: tuple[str, ...] = ("binance", "bybit")

#: relative size of each venue's 24 h volume (others get 0.3)
_VENUE_VOLUME_SHARE: Mapping[str, float] = MappingProxyType({
    "binance": 1.0, "okx": 0.5, "bybit": 0.4, "bitget": 0.3,
    "gate": 0.25, "mexc": 0.25, "htx": 0.2, "kucoin": 0.2,
})


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """One instrument of the universe: ``base``/``quote`` and where it is listed.

    ``venues`` is None when the symbol is listed on every venue. ``halted`` names the
    venues where it is listed but not trading: those venues publish no book for it.
    """

    base: str
    quote: str
    price: float
    quote_volume_24h: float
    venues: frozenset[str] | None = None
    halted: frozenset[str] = frozenset()

    @property
    def symbol(self) -> str:
        """Normalized name, ``BASE/QUOTE``."""
        return f"{self.base}/{self.quote}"

    @property
    def native(self) -> str:
        """Venue-native name as Binance and Bybit spell it, ``BASEQUOTE``."""
        return f"{self.base}{self.quote}"

    @property
    def price_decimals(self) -> int:
        """Decimals of the tick size: about six significant digits."""
        return max(2, 6 - math.floor(math.log10(self.price)))

    @property
    def tick(self) -> float:
        return 10.0 ** -self.price_decimals

    @property
    def size_decimals(self) -> int:
        """Decimals of the lot size: coarser for cheap coins."""
        return min(6, max(0, math.floor(math.log10(self.price)) + 1))

    def listed_on(self, venue: str) -> bool:
        return self.venues is None or venue in self.venues

    def trading_on(self, venue: str) -> bool:
        return self.listed_on(venue) and venue not in self.halted


def _s(base: str, price: float, volume_musd: float, quote: str = "USDT") -> SymbolSpec:
    return SymbolSpec(base, quote, price, volume_musd * 1e6)


#: ~55 spot symbols with roughly realistic prices (0.01 to 60 000) and 24 h volumes
DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    _s("BTC", 60000.0, 2000), _s("ETH", 3000.0, 1000), _s("SOL", 150.0, 500),
    _s("BNB", 580.0, 200), _s("XRP", 0.55, 300), _s("DOGE", 0.12, 250),
    _s("ADA", 0.45, 90), _s("AVAX", 28.0, 80), _s("TRX", 0.12, 60),
    _s("DOT", 6.5, 50), _s("LINK", 14.0, 70), _s("TON", 5.5, 60),
    _s("LTC", 75.0, 60), _s("BCH", 380.0, 50), _s("UNI", 7.5, 40),
    _s("ATOM", 6.5, 30), _s("ETC", 22.0, 25), _s("FIL", 4.5, 25),
    _s("APT", 7.0, 30), _s("ARB", 0.75, 45), _s("OP", 1.7, 35),
    _s("NEAR", 5.0, 40), _s("INJ", 22.0, 30), _s("SUI", 1.1, 60),
    _s("SEI", 0.4, 25), _s("TIA", 6.0, 25), _s("RENDER", 6.0, 30),
    _s("AAVE", 140.0, 25), _s("MKR", 2000.0, 15), _s("LDO", 1.4, 15),
    _s("CRV", 0.3, 15), _s("SAND", 0.3, 10), _s("MANA", 0.3, 8),
    _s("AXS", 5.0, 8), _s("EGLD", 28.0, 5), _s("ALGO", 0.15, 8),
    _s("RUNE", 4.0, 15), _s("GRT", 0.17, 10), _s("IMX", 1.4, 8),
    _s("STX", 1.7, 10), _s("WIF", 2.0, 80), _s("ORDI", 35.0, 30),
    _s("YFI", 6000.0, 4), _s("PAXG", 2400.0, 5), _s("WLD", 2.0, 40),
    _s("ENS", 20.0, 6), _s("COMP", 50.0, 5), _s("HBAR", 0.07, 15),
    _s("XLM", 0.1, 12), _s("CHZ", 0.07, 8), _s("GALA", 0.025, 10),
    _s("VET", 0.025, 8), _s("JASMY", 0.02, 12), _s("CKB", 0.0125, 3),
    _s("ETH", 0.05, 40, quote="BTC"), _s("BTC", 60000.0, 300, quote="USDC"),
    _s("ETH", 3000.0, 120, quote="USDC"),
    # listed on one venue only
    SymbolSpec("BTC", "FDUSD", 60000.0, 900e6, venues=frozenset({"binance"})),
    SymbolSpec("FDUSD", "USDT", 1.0, 400e6, venues=frozenset({"binance"})),
    SymbolSpec("MNT", "USDT", 0.8, 20e6, venues=frozenset({"bybit"})),
    SymbolSpec("OKB", "USDT", 45.0, 15e6, venues=frozenset({"okx"})),
    SymbolSpec("KCS", "USDT", 9.0, 3e6, venues=frozenset({"kucoin"})),
    SymbolSpec("GT", "USDT", 8.0, 4e6, venues=frozenset({"gate"})),
    SymbolSpec("BGB", "USDT", 1.1, 10e6, venues=frozenset({"bitget"})),
    SymbolSpec("MX", "USDT", 3.0, 5e6, venues=frozenset({"mexc"})),
    SymbolSpec("HTX", "USDT", 0.015, 2e6, venues=frozenset({"htx"})),
    # listed but not trading
    SymbolSpec(
        "BTC", "BUSD", 60000.0, 0.0,
        venues=frozenset({"binance"}), halted=frozenset({"binance"}),
    ),
)


@dataclass(frozen=True, slots=True)
class MarketParams:
    """Dynamics of the model. Volatilities are per square root of a second."""

    market_vol: float = 2e-4
    idio_vol: float = 1.5e-4
    #: stationary standard deviation of a venue's offset from the fair price (bps)
    venue_offset_bps: float = 1.5
    #: mean reversion rate of venue offsets (per second)
    offset_reversion: float = 0.2
    #: book updates per second for the most liquid symbol (quiet ones get ~1/30 of it)
    max_update_rate: float = 20.0
    #: trades per second for the most liquid symbol
    max_trade_rate: float = 4.0
    #: probability per step that an arbitrage window opens (at 20 steps/s: one per 10 s)
    arb_probability: float = 0.005
    arb_gross_bps: tuple[float, float] = (15.0, 60.0)
    arb_duration_s: tuple[float, float] = (2.0, 6.0)
    #: trades kept in each snapshot (the feed reads those newer than it has seen)
    trade_history: int = 512


@dataclass(frozen=True, slots=True)
class TopOfBook:
    """Best bid and ask of one symbol on one venue.

    ``update_id`` increases by one per change of this book; ``seq`` is the venue's
    cross sequence, increasing across all of its books; ``ts_ms`` is when it changed.
    """

    venue: str
    symbol: str
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    update_id: int
    seq: int
    ts_ms: int


@dataclass(frozen=True, slots=True)
class SimTrade:
    """One public trade. ``seq`` orders all trades of the market."""

    venue: str
    symbol: str
    trade_id: int
    price: float
    size: float
    taker_buy: bool
    ts_ms: int
    seq: int


@dataclass(frozen=True, slots=True)
class ArbWindow:
    """An open arbitrage window: ``rich_venue``'s bid is above ``cheap_venue``'s ask."""

    symbol: str
    rich_venue: str
    cheap_venue: str
    gross_bps: float
    shift_bps: float
    opened_ms: int
    closes_ms: int


@dataclass(frozen=True, slots=True)
class MarketSnapshot:
    """The market at one moment. Immutable; a step makes a new one.

    ``changed`` holds the (venue, symbol) keys whose book changed in the step that
    made this snapshot (version - 1 to version): a reader that saw the previous
    version needs to look at those only.
    """

    version: int
    now_ms: int
    books: Mapping[tuple[str, str], TopOfBook]
    trades: tuple[SimTrade, ...]
    windows: tuple[ArbWindow, ...]
    changed: frozenset[tuple[str, str]] = frozenset()

    def book(self, venue: str, symbol: str) -> TopOfBook | None:
        return self.books.get((venue, symbol))


#: book and trade events share one heap; the low bit of an event's code says which
_BOOK_EVENT = 0
_TRADE_EVENT = 1
#: lowest price of a generated symbol: every venue can quote it with 8 decimals
_MIN_SYNTHETIC_PRICE = 0.011


def synthetic_symbols(
    n: int, venues: Sequence[str] = DEFAULT_VENUES, seed: int = 0
) -> tuple[SymbolSpec, ...]:
    """A universe of exactly ``n`` symbols listed on at least one of ``venues``.

    The default symbols listed there come first (as many as fit), then generated ones
    with made-up base assets (``QZAB``, ...), prices from 0.011 to 50,000 and a long
    tail of small volumes, so that most generated symbols are quiet. With several
    venues a generated symbol is listed on each with probability 0.7 (at least one),
    and a few are halted on one venue. Deterministic for a seed; independent of the
    market's own random draws.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    venues = tuple(venues)
    defaults = [s for s in DEFAULT_SYMBOLS if any(s.listed_on(v) for v in venues)][:n]
    rng = random.Random(f"synthetic-symbols-{seed}")
    taken = {s.base for s in DEFAULT_SYMBOLS}
    specs = list(defaults)
    while len(specs) < n:
        base = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 5)))
        if base in taken:
            continue
        taken.add(base)
        roll = rng.random()
        quote = "USDT" if roll < 0.85 else "USDC" if roll < 0.95 else "BTC"
        price = 10.0 ** rng.uniform(math.log10(_MIN_SYNTHETIC_PRICE), 4.7)
        if quote == "BTC":
            price = max(price / 60000.0 * 1e3, _MIN_SYNTHETIC_PRICE)
        # long tail: most symbols trade well under 10 M a day
        volume = 10.0 ** min(rng.expovariate(1.0 / 0.9) + 4.5, 9.5)
        listed: frozenset[str] | None = None
        halted: frozenset[str] = frozenset()
        if len(venues) > 1:
            chosen = frozenset(v for v in venues if rng.random() < 0.7) or frozenset(
                {rng.choice(venues)}
            )
            listed = None if len(chosen) == len(venues) else chosen
            if rng.random() < 0.02:
                halted = frozenset({rng.choice(sorted(chosen))})
        specs.append(SymbolSpec(base, quote, price, volume, venues=listed, halted=halted))
    return tuple(specs)


@dataclass(slots=True)
class _SymbolState:
    """One symbol's dynamics. ``log_fair`` is as of ``fair_t`` (when the common factor
    stood at ``fair_common``); ``offsets[i]`` (venue ``i``) is as of ``offsets_t[i]``."""

    spec: SymbolSpec
    log_fair: float
    beta: float
    idio_vol: float
    spread_bps: float
    update_rate: float
    trade_rate: float
    typical_size: float
    fair_t: float
    price_decimals: int
    size_decimals: int
    tick: float
    fair_common: float = 0.0
    offsets: list[float] = field(default_factory=list)
    offsets_t: list[float] = field(default_factory=list)


class Market:
    """The simulated market: symbols quoted on venues, stepped explicitly.

    Only symbols listed on at least one of ``venues`` are kept. Books exist for
    (venue, symbol) pairs where the symbol trades; the first snapshot already holds
    one for each.
    """

    def __init__(
        self,
        symbols: Sequence[SymbolSpec] = DEFAULT_SYMBOLS,
        venues: Sequence[str] = DEFAULT_VENUES,
        seed: int = 0,
        *,
        params: MarketParams | None = None,
        start_ms: int = DEFAULT_START_MS,
    ) -> None:
        if not venues:
            raise ValueError("Market needs at least one venue")
        if len(set(venues)) != len(venues):
            raise ValueError(f"duplicate venue in {list(venues)!r}")
        self._venues = tuple(venues)
        self._specs = tuple(s for s in symbols if any(s.listed_on(v) for v in venues))
        names = [s.symbol for s in self._specs]
        if len(set(names)) != len(names):
            raise ValueError("duplicate symbol in the universe")
        self._by_symbol = {s.symbol: s for s in self._specs}
        self._listed = {v: tuple(s for s in self._specs if s.listed_on(v)) for v in self._venues}
        self._params = params or MarketParams()
        self._rng = random.Random(seed)
        self._now = start_ms / 1000.0
        self._common = 0.0
        self._version = 0
        self._windows_opened = 0
        self._trade_seq = 0
        self._venue_seq = {v: self._rng.randrange(10**9, 10**10) for v in self._venues}
        self._trade_ids: dict[tuple[str, str], int] = {}
        self._volumes: dict[tuple[str, str], float] = {}
        self._windows: dict[str, ArbWindow] = {}
        self._states = [self._new_state(s) for s in self._specs]
        #: (state, venue index) of every (symbol, venue) pair with a book
        self._pairs = tuple(
            (st, i) for st in self._states for i, v in enumerate(self._venues)
            if st.spec.trading_on(v)
        )
        self._pair_keys = tuple((self._venues[i], st.spec.symbol) for st, i in self._pairs)
        self._pair_of = {key: index for index, key in enumerate(self._pair_keys)}
        self._venue_index = {v: i for i, v in enumerate(self._venues)}
        #: symbols that trade on two venues or more: where a window can open
        self._multi = tuple(
            st for st in self._states if sum(st.spec.trading_on(v) for v in self._venues) >= 2
        )
        books: dict[tuple[str, str], TopOfBook] = {}
        for (st, i), key in zip(self._pairs, self._pair_keys, strict=True):
            books[key] = self._quote(st, i, update_id=1)
            self._trade_ids[key] = self._rng.randrange(10**6, 10**8)
        #: (due time, code): code // 2 is the pair index, code % 2 the kind of event
        self._events: list[tuple[float, int]] = []
        for index, (st, _) in enumerate(self._pairs):
            self._schedule(index, _BOOK_EVENT, st.update_rate)
            self._schedule(index, _TRADE_EVENT, st.trade_rate)
        self._snapshot = MarketSnapshot(0, self.now_ms, MappingProxyType(books), (), ())

    @classmethod
    def synthetic(
        cls,
        n: int,
        venues: Sequence[str] = DEFAULT_VENUES,
        seed: int = 0,
        *,
        params: MarketParams | None = None,
        start_ms: int = DEFAULT_START_MS,
    ) -> Market:
        """A market of exactly ``n`` symbols (see :func:`synthetic_symbols`)."""
        return cls(synthetic_symbols(n, venues, seed), venues, seed,
                   params=params, start_ms=start_ms)

    def _new_state(self, spec: SymbolSpec) -> _SymbolState:
        rng = self._rng
        p = self._params
        # liquidity in [0, 1]: log of volume between 1 M and 2 G
        liquidity = min(1.0, max(0.0, math.log10(max(spec.quote_volume_24h, 1e6) / 1e6) / 3.3))
        # below 1 M a day, rates fall further with volume (down to a tenth at 100 k), so
        # that the long tail of a large universe is quiet, as it is on real venues
        tail = min(1.0, max(0.1, spec.quote_volume_24h / 1e6))
        st = _SymbolState(
            spec=spec,
            log_fair=math.log(spec.price),
            beta=rng.uniform(0.6, 1.4),
            idio_vol=p.idio_vol * rng.uniform(0.5, 2.0),
            spread_bps=(1.0 + 7.0 * (1.0 - liquidity)) * rng.uniform(0.8, 1.2),
            update_rate=p.max_update_rate * (1.0 / 30.0 + liquidity * (29.0 / 30.0)) * tail,
            trade_rate=p.max_trade_rate * (0.05 + 0.95 * liquidity) * tail,
            typical_size=rng.uniform(200.0, 5000.0) / spec.price,
            fair_t=self._now,
            price_decimals=spec.price_decimals,
            size_decimals=spec.size_decimals,
            tick=spec.tick,
        )
        for venue in self._venues:
            st.offsets.append(rng.gauss(0.0, p.venue_offset_bps * 1e-4))
            st.offsets_t.append(self._now)
            share = _VENUE_VOLUME_SHARE.get(venue, 0.3)
            volume = spec.quote_volume_24h * share * rng.uniform(0.8, 1.2)
            self._volumes[(venue, spec.symbol)] = volume if spec.trading_on(venue) else 0.0
        return st

    def _schedule(self, pair: int, kind: int, rate: float) -> None:
        if rate > 0.0:
            due = self._now + self._rng.expovariate(rate)
            heapq.heappush(self._events, (due, 2 * pair + kind))

    # -- read access -----------------------------------------------------------------

    @property
    def venues(self) -> tuple[str, ...]:
        return self._venues

    @property
    def symbols(self) -> tuple[SymbolSpec, ...]:
        """Every symbol listed on at least one venue of this market."""
        return self._specs

    def listed(self, venue: str) -> tuple[SymbolSpec, ...]:
        """Symbols listed on ``venue``, trading or not."""
        return self._listed.get(venue, ())

    def spec(self, symbol: str) -> SymbolSpec:
        """The spec of a normalized symbol. Raises KeyError for an unknown one."""
        return self._by_symbol[symbol]

    def quote_volume_24h(self, venue: str, symbol: str) -> float:
        """Stable 24 h quote volume of ``symbol`` on ``venue`` (0 where not trading)."""
        return self._volumes.get((venue, symbol), 0.0)

    @property
    def snapshot(self) -> MarketSnapshot:
        return self._snapshot

    @property
    def now_ms(self) -> int:
        return round(self._now * 1000.0)

    @property
    def windows_opened(self) -> int:
        """Arbitrage windows opened since construction."""
        return self._windows_opened

    # -- dynamics --------------------------------------------------------------------

    def step(self, dt: float) -> None:
        """Advance the market by ``dt`` seconds and publish a new snapshot.

        A pair changes its book at most once per step (its next change is drawn from
        the step's time), like a venue's conflated best bid/ask.
        """
        if not dt > 0.0:
            raise ValueError(f"step needs dt > 0, got {dt!r}")
        rng = self._rng
        p = self._params
        self._now += dt
        now = self._now
        now_ms = self.now_ms
        self._common += rng.gauss(0.0, p.market_vol * math.sqrt(dt))

        forced: set[int] = set()
        for symbol, window in list(self._windows.items()):
            if window.closes_ms <= now_ms:
                del self._windows[symbol]
                forced.update(self._window_pairs(window))
        if rng.random() < p.arb_probability:
            opened = self._open_window(now_ms)
            if opened is not None:
                forced.update(self._window_pairs(opened))

        due_books: list[int] = []
        due_trades: list[int] = []
        events = self._events
        while events and events[0][0] <= now:
            _, code = heapq.heappop(events)
            pair, kind = divmod(code, 2)
            (due_books if kind == _BOOK_EVENT else due_trades).append(pair)
        old = self._snapshot
        changed: dict[tuple[str, str], TopOfBook] = {}
        for pair in (*due_books, *sorted(forced.difference(due_books))):
            st, i = self._pairs[pair]
            key = self._pair_keys[pair]
            changed[key] = self._quote(st, i, update_id=old.books[key].update_id + 1)
        for pair in due_books:
            self._schedule(pair, _BOOK_EVENT, self._pairs[pair][0].update_rate)
        new_trades: list[SimTrade] = []
        for pair in due_trades:
            st = self._pairs[pair][0]
            key = self._pair_keys[pair]
            new_trades.append(self._trade(st, changed.get(key) or old.books[key], now_ms))
            self._schedule(pair, _TRADE_EVENT, st.trade_rate)

        self._version += 1
        books: Mapping[tuple[str, str], TopOfBook] = old.books
        if changed:
            merged = dict(old.books)
            merged.update(changed)
            books = MappingProxyType(merged)
        trades = old.trades
        if new_trades:
            trades = (*old.trades, *new_trades)[-p.trade_history:]
        self._snapshot = MarketSnapshot(
            self._version, now_ms, books, trades, tuple(self._windows.values()),
            frozenset(changed),
        )

    def _window_pairs(self, window: ArbWindow) -> tuple[int, ...]:
        return (self._pair_of[(window.rich_venue, window.symbol)],
                self._pair_of[(window.cheap_venue, window.symbol)])

    def _open_window(self, now_ms: int) -> ArbWindow | None:
        rng = self._rng
        p = self._params
        if not self._multi:
            return None
        st = rng.choice(self._multi)
        if st.spec.symbol in self._windows:
            return None  # that symbol already has one: no window this step
        rich, cheap = rng.sample([v for v in self._venues if st.spec.trading_on(v)], 2)
        gross = rng.uniform(*p.arb_gross_bps)
        # enough shift that rich's bid clears cheap's ask by ``gross`` despite spreads,
        # offsets and the jitter of the spread (up to 30 %) and of the offsets meanwhile
        offset_gap_bps = (self._offset(st, self._venue_index[cheap])
                          - self._offset(st, self._venue_index[rich])) * 1e4
        margin_bps = 4.0 * p.venue_offset_bps
        shift = gross + 1.3 * st.spread_bps + max(0.0, offset_gap_bps) + margin_bps
        window = ArbWindow(
            symbol=st.spec.symbol,
            rich_venue=rich,
            cheap_venue=cheap,
            gross_bps=gross,
            shift_bps=shift,
            opened_ms=now_ms,
            closes_ms=now_ms + round(1000.0 * rng.uniform(*p.arb_duration_s)),
        )
        self._windows[st.spec.symbol] = window
        self._windows_opened += 1
        return window

    def _fair(self, st: _SymbolState) -> float:
        """``st``'s log fair price now: common factor moves plus idiosyncratic noise."""
        elapsed = self._now - st.fair_t
        if elapsed > 0.0:
            st.log_fair += st.beta * (self._common - st.fair_common) + self._rng.gauss(
                0.0, st.idio_vol * math.sqrt(elapsed)
            )
            st.fair_t = self._now
            st.fair_common = self._common
        return st.log_fair

    def _offset(self, st: _SymbolState, i: int) -> float:
        """Venue ``i``'s offset now: exact Ornstein-Uhlenbeck decay since last evaluated."""
        elapsed = self._now - st.offsets_t[i]
        if elapsed > 0.0:
            p = self._params
            keep = math.exp(-p.offset_reversion * elapsed)
            noise = p.venue_offset_bps * 1e-4 * math.sqrt(1.0 - keep * keep)
            st.offsets[i] = st.offsets[i] * keep + self._rng.gauss(0.0, noise)
            st.offsets_t[i] = self._now
        return st.offsets[i]

    def _quote(self, st: _SymbolState, i: int, *, update_id: int) -> TopOfBook:
        rng = self._rng
        spec = st.spec
        venue = self._venues[i]
        log_mid = self._fair(st) + self._offset(st, i)
        window = self._windows.get(spec.symbol)
        if window is not None and window.rich_venue == venue:
            log_mid += window.shift_bps * 1e-4
        mid = math.exp(log_mid)
        half = 0.5 * st.spread_bps * 1e-4 * rng.uniform(0.7, 1.3)
        tick = st.tick
        bid_ticks = math.floor(mid * (1.0 - half) / tick)
        ask_ticks = max(math.ceil(mid * (1.0 + half) / tick), bid_ticks + 1)
        self._venue_seq[venue] += rng.randrange(1, 50)
        return TopOfBook(
            venue=venue,
            symbol=spec.symbol,
            bid=round(bid_ticks * tick, st.price_decimals),
            bid_size=self._size(st),
            ask=round(ask_ticks * tick, st.price_decimals),
            ask_size=self._size(st),
            update_id=update_id,
            seq=self._venue_seq[venue],
            ts_ms=self.now_ms,
        )

    def _size(self, st: _SymbolState) -> float:
        decimals = st.size_decimals
        size = round(st.typical_size * math.exp(0.8 * self._rng.gauss()), decimals)
        return max(size, 10.0 ** -decimals)

    def _trade(self, st: _SymbolState, book: TopOfBook, now_ms: int) -> SimTrade:
        taker_buy = self._rng.random() < 0.5
        key = (book.venue, book.symbol)
        self._trade_ids[key] += 1
        self._trade_seq += 1
        size = round(0.2 * st.typical_size * self._rng.lognormvariate(0.0, 1.0), st.size_decimals)
        return SimTrade(
            venue=book.venue,
            symbol=book.symbol,
            trade_id=self._trade_ids[key],
            price=book.ask if taker_buy else book.bid,
            size=max(size, 10.0 ** -st.size_decimals),
            taker_buy=taker_buy,
            ts_ms=now_ms,
            seq=self._trade_seq,
        )
