"""Symbol discovery over REST, and the per-venue manager that turns it into connections.

Discovery asks each venue for its own instrument metadata (base and quote asset,
trading status) and 24 h volumes, normalizes symbols from that metadata (never by
string surgery), filters by quote asset and volume, and picks the symbols to watch:
those listed on at least ``min_venues`` venues, by total volume, up to
``max_symbols`` (or the explicit list in ``config.toml``).

The result is one immutable :class:`Plan`, replaced as a whole on every refresh
(FAILURE_MODES #5: registries are replaced, never appended). A venue whose REST call
fails keeps its previous plan and is retried at the next refresh.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from actors.channels import Latest
from actors.config import Config, VenueConfig
from actors.connector import (
    ConnectFn,
    ConnectionPlan,
    ConnectionStatus,
    ConnectPacer,
    QuoteSinks,
    run_connector,
)
from actors.records import SymbolInfo
from actors.supervisor import describe_error
from actors.venues.base import Bootstrap, FrameError, VenueBootstrap
from actors.venues.registry import VENUES

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VenuePlan:
    venue: str
    symbols: tuple[SymbolInfo, ...]

    @property
    def natives(self) -> tuple[str, ...]:
        return tuple(s.native for s in self.symbols)


@dataclass(frozen=True, slots=True)
class Plan:
    venues: Mapping[str, VenuePlan]
    symbols: tuple[str, ...]
    at_ns: int


@dataclass(slots=True)
class DiscoveryStatus:
    """Written only by the discovery actor."""

    refreshes: int = 0
    failures: int = 0
    last_refresh_ns: int = 0
    listed: dict[str, int] = field(default_factory=dict)
    #: trading instruments left out by the quote-asset and volume filters
    filtered_out: dict[str, int] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)
    watched_symbols: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "refreshes": self.refreshes,
            "failures": self.failures,
            "last_refresh_ns": self.last_refresh_ns,
            "listed": dict(self.listed),
            "filtered_out": dict(self.filtered_out),
            "last_error": dict(self.last_error),
            "watched_symbols": self.watched_symbols,
        }


async def fetch_venue(client: httpx.AsyncClient, venue: str, vconf: VenueConfig,
                      aliases: Mapping[str, str]) -> list[SymbolInfo]:
    """Instruments of one venue with their 24 h quote volume. Raises on any failure."""
    module = VENUES[venue]
    instruments_req, tickers_req = module.discovery.discovery_requests()
    base = vconf.rest_url.rstrip("/")
    responses: list[bytes] = []
    for req in (instruments_req, tickers_req):
        response = await client.get(base + req.path, params=dict(req.params))
        response.raise_for_status()
        responses.append(response.content)
    infos = module.discovery.parse_instruments(responses[0], aliases)
    volumes = module.discovery.parse_volumes(responses[1])
    return [
        SymbolInfo(i.venue, i.native, i.base, i.quote, volumes.get(i.native, 0.0)) for i in infos
    ]


def select(listings: Mapping[str, list[SymbolInfo]], config: Config) -> tuple[str, ...]:
    """The normalized symbols to watch, given every venue's filtered listing."""
    disc = config.discovery
    if disc.symbols:
        return tuple(sorted(set(disc.symbols)))
    venues_of: dict[str, set[str]] = {}
    volume: dict[str, float] = {}
    for venue, infos in listings.items():
        for info in infos:
            venues_of.setdefault(info.symbol, set()).add(venue)
            volume[info.symbol] = volume.get(info.symbol, 0.0) + info.quote_volume_24h
    need = min(disc.min_venues, max(1, len(listings)))
    eligible = [s for s, vs in venues_of.items() if len(vs) >= need]
    eligible.sort(key=lambda s: (-volume[s], s))
    return tuple(sorted(eligible[: disc.max_symbols]))


def filter_listing(infos: list[SymbolInfo], vconf: VenueConfig, config: Config) -> list[SymbolInfo]:
    quotes = set(config.discovery.quote_assets)
    return [
        i for i in infos
        if (not quotes or i.quote in quotes)
        and vconf.min_quote_volume <= i.quote_volume_24h <= vconf.max_quote_volume
    ]


def build_plan(listings: Mapping[str, list[SymbolInfo]], config: Config, now_ns: int) -> Plan:
    symbols = select(listings, config)
    wanted = set(symbols)
    venues = {
        venue: VenuePlan(venue, tuple(sorted((i for i in infos if i.symbol in wanted),
                                             key=lambda i: i.native)))
        for venue, infos in listings.items()
    }
    return Plan(venues=venues, symbols=symbols, at_ns=now_ns)


async def run_discovery(
    plan_cell: Latest[Plan],
    *,
    config: Config,
    client: httpx.AsyncClient,
    status: DiscoveryStatus,
    clock_ns: Callable[[], int] = time.time_ns,
    retry_s: float = 5.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Discover now and every ``refresh_interval_s``; publish each new plan to ``plan_cell``.

    Ready at once (connectors wait for the first plan). Failed venues are retried after
    ``retry_s`` until every venue has answered once, then at the refresh interval.
    """
    task_status.started()
    listings: dict[str, list[SymbolInfo]] = {}
    venues = config.enabled_venues()
    aliases = config.discovery.aliases
    while True:
        failed = False
        results: dict[str, list[SymbolInfo] | BaseException] = {}

        async def one(venue: str, vconf: VenueConfig, results: dict[str, Any] = results) -> None:
            try:
                results[venue] = await fetch_venue(client, venue, vconf, aliases)
            except (httpx.HTTPError, FrameError, OSError) as exc:
                results[venue] = exc

        async with trio.open_nursery() as nursery:
            for venue, vconf in venues.items():
                nursery.start_soon(one, venue, vconf)
        for venue, result in results.items():
            if isinstance(result, BaseException):
                failed = True
                status.failures += 1
                status.last_error[venue] = describe_error(result)
                log.warning("discovery of %s failed: %s", venue, status.last_error[venue])
                continue
            status.last_error.pop(venue, None)
            status.listed[venue] = len(result)
            kept = filter_listing(result, venues[venue], config)
            status.filtered_out[venue] = len(result) - len(kept)
            listings[venue] = kept  # replaced whole, never appended
        status.refreshes += 1
        status.last_refresh_ns = clock_ns()
        if listings:
            plan = build_plan(listings, config, clock_ns())
            status.watched_symbols = len(plan.symbols)
            previous = plan_cell.get()
            if previous is None or previous.venues != plan.venues:
                plan_cell.set(plan)
                log.info("discovery: watching %d symbols on %s", len(plan.symbols),
                         ", ".join(f"{v}={len(p.symbols)}" for v, p in plan.venues.items()))
        missing = failed or len(listings) < len(venues)
        await trio.sleep(retry_s if missing else config.discovery.refresh_interval_s)


@dataclass(slots=True)
class VenueState:
    """The connections of one venue; the list is replaced when the plan changes."""

    venue: str
    connections: list[ConnectionStatus] = field(default_factory=list)
    plans: int = 0
    symbols_over_limit: int = 0
    pacer: ConnectPacer | None = None

    def snapshot(self, now_ns: int) -> dict[str, Any]:
        conns = [c.snapshot(now_ns) for c in self.connections]
        ages = [c["last_message_age_s"] for c in conns if c["last_message_age_s"] is not None]
        return {
            "connected": bool(conns) and all(c["connected"] for c in conns),
            "connections": len(conns),
            "messages": sum(c["messages"] for c in conns),
            "quotes": sum(c["quotes"] for c in conns),
            "rate": round(sum(c["rate"] for c in conns), 2),
            "last_message_age_s": max(ages) if ages else None,
            "reconnects": sum(c["reconnects"] for c in conns),
            "rotations": sum(c["rotations"] for c in conns),
            "notices": sum(c["notices"] for c in conns),
            "bad_frames": sum(c["bad_frames"] for c in conns),
            "streams": sum(c["streams"] for c in conns),
            "symbols_over_limit": self.symbols_over_limit,
            "paced_connects": self.pacer.waited if self.pacer else 0,
            "detail": conns,
        }


async def run_venue(
    venue: str,
    plan_cell: Latest[Plan],
    sinks: QuoteSinks,
    state: VenueState,
    *,
    config: Config,
    connect: ConnectFn,
    client: httpx.AsyncClient | None = None,
    bootstrap_override: Callable[[], Awaitable[Bootstrap]] | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one venue's connections for the current plan; start afresh when it changes.

    The symbols are split across as many connections as the venue's per-connection
    stream limit requires, up to the venue's connection cap (symbols beyond it are
    counted as ``symbols_over_limit``, never silently dropped). Connection attempts of
    all of the venue's connections share one pacer (the venue's per-IP connection
    rate). Each connection is a :func:`run_connector` in this actor's nursery; a new plan
    cancels them all (each closes its socket) and starts new ones.
    """
    vconf = config.venues[venue]
    module = VENUES[venue]
    state.pacer = ConnectPacer(module.connect_interval_s)
    bootstrap = bootstrap_override
    if module.bootstrap is not None and bootstrap is None:
        if client is None:
            raise ValueError(f"venue {venue} needs an HTTP client for its token bootstrap")
        bootstrap = functools.partial(fetch_bootstrap, client, vconf.rest_url, module.bootstrap)
    task_status.started()
    version, plan = await plan_cell.wait_newer(0)
    while True:
        current = plan.venues.get(venue, VenuePlan(venue, ()))
        state.plans += 1
        async with trio.open_nursery() as nursery:
            _start_connections(nursery, current, module, sinks, state, vconf, config, connect,
                               clock_ns, bootstrap)
            while True:
                version, plan = await plan_cell.wait_newer(version)
                if plan.venues.get(venue, VenuePlan(venue, ())) != current:
                    nursery.cancel_scope.cancel()
                    break


async def fetch_bootstrap(client: httpx.AsyncClient, rest_url: str, helper: VenueBootstrap) -> Bootstrap:
    """POST the venue's token bootstrap and parse it (KuCoin's ``bullet-public``)."""
    request = helper.bootstrap_request()
    response = await client.request(request.method, rest_url.rstrip("/") + request.path,
                                    params=dict(request.params))
    response.raise_for_status()
    return helper.parse_bootstrap(response.content, uuid.uuid4().hex)


def plan_connections(natives: tuple[str, ...], streams_per_connection: int, streams_per_symbol: int,
                     max_connections: int) -> tuple[list[tuple[str, ...]], int]:
    """Split ``natives`` into connections; return the chunks and how many symbols did not fit."""
    per_conn = max(1, streams_per_connection // streams_per_symbol)
    chunks = [natives[i:i + per_conn] for i in range(0, len(natives), per_conn)]
    kept = chunks[:max_connections]
    return kept, len(natives) - sum(len(c) for c in kept)


def _start_connections(nursery: trio.Nursery, vplan: VenuePlan, module: Any, sinks: QuoteSinks,
                       state: VenueState, vconf: VenueConfig, config: Config,
                       connect: ConnectFn, clock_ns: Callable[[], int],
                       bootstrap: Callable[[], Awaitable[Bootstrap]] | None) -> None:
    symbols = {s.native: s for s in vplan.symbols}
    natives = vplan.natives
    state.symbols_over_limit = 0
    if not natives:
        state.connections = []
        return
    probe = module.codec_factory(symbols)
    chunks, over = plan_connections(natives, probe.max_streams_per_connection,
                                    2 if vconf.subscribe_trades else 1, module.max_connections)
    if over:
        state.symbols_over_limit = over
        log.warning("%s: %d symbols exceed %d connections x %d streams and are not watched",
                    vplan.venue, over, module.max_connections, probe.max_streams_per_connection)
    statuses = []
    for index, chunk in enumerate(chunks):
        codec = module.codec_factory(symbols)
        url = vconf.ws_url.rstrip("/") + codec.ws_path(chunk)
        status = ConnectionStatus(venue=vplan.venue, connection=index)
        statuses.append(status)
        conn_plan = ConnectionPlan(vplan.venue, index, url, chunk, codec, vconf.subscribe_trades)
        nursery.start_soon(functools.partial(
            run_connector, conn_plan, sinks, status, venue_config=vconf,
            config=config.connector, connect=connect, clock_ns=clock_ns, pacer=state.pacer,
            bootstrap=bootstrap))
    state.connections = statuses
