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
from actors.venues import binance, bitget, bybit, gate, htx, kucoin, mexc, okx
from actors.venues.base import VenueBootstrap, VenueCodec, VenueDiscovery


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
    #: least seconds between two connection attempts to this venue (its per-IP limit)
    connect_interval_s: float = 1.0
    #: most connections spreadwatch opens to this venue at once (its per-IP limit)
    max_connections: int = 50
    #: REST token bootstrap before every connect (KuCoin), or None
    bootstrap: VenueBootstrap | None = None


VENUES: Mapping[str, VenueModule] = MappingProxyType(
    {
        # Binance: 300 connection attempts per 5 min per IP
        binance.VENUE: VenueModule(binance.VENUE, binance.BinanceCodec, binance,
                                   connect_interval_s=1.0, max_connections=50),
        # Bybit: 500 new connections per 5 min per domain
        bybit.VENUE: VenueModule(bybit.VENUE, bybit.BybitCodec, bybit,
                                 connect_interval_s=0.6, max_connections=50),
        okx.VENUE: VenueModule(okx.VENUE, okx.OkxCodec, okx,
                               connect_interval_s=okx.CONNECT_INTERVAL_S,
                               max_connections=okx.MAX_CONNECTIONS),
        mexc.VENUE: VenueModule(mexc.VENUE, mexc.MexcCodec, mexc,
                                connect_interval_s=mexc.CONNECT_INTERVAL_S,
                                max_connections=mexc.MAX_CONNECTIONS),
        gate.VENUE: VenueModule(gate.VENUE, gate.GateCodec, gate,
                                connect_interval_s=gate.CONNECT_INTERVAL_S,
                                max_connections=gate.MAX_CONNECTIONS),
        kucoin.VENUE: VenueModule(kucoin.VENUE, kucoin.KucoinCodec, kucoin,
                                  connect_interval_s=kucoin.CONNECT_INTERVAL_S,
                                  max_connections=kucoin.MAX_CONNECTIONS, bootstrap=kucoin),
        bitget.VENUE: VenueModule(bitget.VENUE, bitget.BitgetCodec, bitget,
                                  connect_interval_s=bitget.CONNECT_INTERVAL_S,
                                  max_connections=bitget.MAX_CONNECTIONS),
        htx.VENUE: VenueModule(htx.VENUE, htx.HtxCodec, htx,
                               connect_interval_s=htx.CONNECT_INTERVAL_S,
                               max_connections=htx.MAX_CONNECTIONS),
    }
)
