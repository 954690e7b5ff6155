"""The records that cross every channel: one schema for all venues.

Records are immutable, declared once here. :class:`Quote` and :class:`Trade`, built tens
of thousands of times a second, are ``msgspec.Struct`` s (frozen, outside the cyclic
GC: they hold only scalars): one took ~0.1 us to build where a frozen slotted dataclass
took ~1.7 us, more than decoding the frame it came from (``python -m bench.perf_codec``).
The rest are frozen slotted dataclasses. Prices and sizes are
floats parsed from the venue's decimal text (or number); timestamps are integers:
``venue_ts`` in milliseconds as the venue gives it (0 when it gives none) and
``recv_ts`` in nanoseconds since the epoch, stamped by the connector on receipt.
Symbols are normalized ``BASE/QUOTE`` strings, built from the venue's own metadata.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import msgspec


class Side(enum.IntEnum):
    """Taker side of a trade."""

    UNKNOWN = 0
    BUY = 1
    SELL = 2


class Quote(msgspec.Struct, frozen=True, gc=False):
    """Best bid and ask of one symbol on one venue at one moment."""

    venue: str
    symbol: str
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    venue_ts: int
    recv_ts: int
    seq: int = 0


class Trade(msgspec.Struct, frozen=True, gc=False):
    """One public trade."""

    venue: str
    symbol: str
    price: float
    size: float
    side: Side
    venue_ts: int
    recv_ts: int
    trade_id: str = ""


@dataclass(frozen=True, slots=True)
class VenueDown:
    """Marker a connector emits when its connection is lost.

    Every quote of ``venue`` received at or before ``at_ns`` is stale from then on.
    """

    venue: str
    at_ns: int


class OpportunityState(enum.Enum):
    OPEN = "open"
    UPDATE = "update"
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class Opportunity:
    """One cross-venue window: buy ``symbol`` on ``buy_venue``'s ask, sell on ``sell_venue``'s bid.

    Spreads are in basis points of the buy venue's ask: ``net_bps``/``gross_bps`` as of the
    event, ``peak_net_bps`` the highest net since ``opened_at``, ``mean_net_bps`` the
    time-weighted mean net since ``opened_at`` (up to the event). Sizes are the top of
    book on each leg. ``closed_at`` is 0 while the window is open. Times are nanoseconds
    since the epoch.
    """

    symbol: str
    buy_venue: str
    sell_venue: str
    state: OpportunityState
    gross_bps: float
    net_bps: float
    peak_net_bps: float
    mean_net_bps: float
    buy_price: float
    buy_size: float
    sell_price: float
    sell_size: float
    opened_at: int
    closed_at: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.symbol, self.buy_venue, self.sell_venue)

    @property
    def duration_ns(self) -> int:
        return self.closed_at - self.opened_at if self.closed_at else 0


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """One tradable instrument as a venue describes it, mapped to our normalized name."""

    venue: str
    native: str
    base: str
    quote: str
    quote_volume_24h: float = 0.0
    #: ``BASE/QUOTE``, built once: codecs read it for every quote they emit
    symbol: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbol", f"{self.base}/{self.quote}")


Record = Quote | Trade
