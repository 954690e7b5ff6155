"""Simulated venues that speak the real wire formats on loopback.

They power ``spreadwatch demo`` and the tests, without internet. ``market`` is a pure,
seeded model of books and trades on several venues; ``binance`` and ``bybit`` are pure
encoders of those venues' REST and WebSocket formats (written from the venues'
documentation, independently of the connector's codecs, so they can test them);
``server`` runs them with trio, hypercorn and trio-websocket, with fault injection.

Start everything for a demo::

    async with trio.open_nursery() as nursery:
        endpoints = await nursery.start(partial(run_sim_venues, ("binance", "bybit"), seed=1))
        # endpoints["binance"].rest_url, endpoints["bybit"].ws_url, ...
"""

from app.sim.market import (
    DEFAULT_SYMBOLS,
    DEFAULT_VENUES,
    ArbWindow,
    Market,
    MarketParams,
    MarketSnapshot,
    SimTrade,
    SymbolSpec,
    TopOfBook,
)
from app.sim.server import (
    VENUES,
    SimEndpoints,
    SimVenueConfig,
    SimVenueControl,
    SimVenueStatistics,
    SubscriptionEvent,
    run_market,
    run_sim_venue,
    run_sim_venues,
)

__all__ = [
    "DEFAULT_SYMBOLS",
    "DEFAULT_VENUES",
    "VENUES",
    "ArbWindow",
    "Market",
    "MarketParams",
    "MarketSnapshot",
    "SimEndpoints",
    "SimTrade",
    "SimVenueConfig",
    "SimVenueControl",
    "SimVenueStatistics",
    "SubscriptionEvent",
    "SymbolSpec",
    "TopOfBook",
    "run_market",
    "run_sim_venue",
    "run_sim_venues",
]
