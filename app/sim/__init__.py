"""Simulated venues that speak the real wire formats on loopback.

They power ``spreadwatch demo`` and the tests, without internet. ``market`` is a pure,
seeded model of books and trades on several venues; each ``app/sim/<venue>.py`` is a
pure encoder of one venue's REST and WebSocket formats (written from the venue's
documentation, independently of the connector's codecs, so they can test them) under
the contract of ``wire.py``; ``server`` runs them with trio, hypercorn and
trio-websocket, with fault injection and an optional chaos actor.

Start everything for a demo::

    async with trio.open_nursery() as nursery:
        endpoints = await nursery.start(partial(run_sim_venues, ("binance", "bybit"), seed=1))
        # endpoints["binance"].rest_url, endpoints["bybit"].ws_url, ...

``run_sim_venues(..., chaos=30.0)`` adds a random fault every 30 s on average.
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
    synthetic_symbols,
)
from app.sim.server import (
    VENUES,
    ChaosEvent,
    Fault,
    SimVenueControl,
    SimVenueStatistics,
    SubscriptionEvent,
    available_venues,
    make_wire,
    run_chaos,
    run_market,
    run_sim_venue,
    run_sim_venues,
)
from app.sim.wire import SimEndpoints, SimVenueConfig

__all__ = [
    "DEFAULT_SYMBOLS",
    "DEFAULT_VENUES",
    "VENUES",
    "ArbWindow",
    "ChaosEvent",
    "Fault",
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
    "available_venues",
    "make_wire",
    "run_chaos",
    "run_market",
    "run_sim_venue",
    "run_sim_venues",
    "synthetic_symbols",
]
