"""The venues spreadwatch knows, by name: each one's codec factory and discovery helpers.

Read-only: :data:`VENUES` is a :class:`types.MappingProxyType` built once at import, so
no code can add or swap a venue at run time. A new venue is one module under
``actors/venues/`` and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from actors.records import SymbolInfo
from actors.venues import binance, bybit
from actors.venues.base import VenueCodec, VenueDiscovery


@dataclass(frozen=True, slots=True)
class VenueModule:
    """The entry points of one venue module.

    ``codec_factory`` builds a codec for one connection from the symbol map of the
    current discovery; ``discovery`` holds the pure REST discovery helpers (the venue
    module itself, whose module-level functions implement :class:`VenueDiscovery`).
    """

    name: str
    codec_factory: Callable[[Mapping[str, SymbolInfo]], VenueCodec]
    discovery: VenueDiscovery


VENUES: Mapping[str, VenueModule] = MappingProxyType(
    {
        binance.VENUE: VenueModule(binance.VENUE, binance.BinanceCodec, binance),
        bybit.VENUE: VenueModule(bybit.VENUE, bybit.BybitCodec, bybit),
    }
)
