"""Builds the actor tree from a configuration and runs it under one supervisor.

The tree (docs/architecture.md draws it):

    supervisor
      recorder                  <- DropChannel "recorder"  (connectors, shards)
      shard-0 .. shard-K-1      <- ConflatingChannel "shard-i" (connectors)
      hub                       <- ConflatingChannel "hub-states", DropChannel "hub-events"
                                   (shards), BlockingChannel "hub-control" (sessions)
      loop-monitor
      discovery                 -> Latest "plan"
      venue-<name>              -> one run_connector per connection, in its own nursery
      web (hypercorn)           -> one session actor per /feed client

Shutdown (SIGINT/SIGTERM, or the ``shutdown`` event): ingest stops first (discovery and
venues; each connector hands its partial batch to the recorder), then the recorder's
inbox is closed and the recorder writes everything and returns, then the rest is
cancelled. The whole sequence is bounded by ``server.shutdown_timeout_s``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from actors.budget import Budget, check_budget
from actors.channels import BlockingChannel, ConflatingChannel, DropChannel, Edge, Latest
from actors.config import Config
from actors.connector import ConnectFn, QuoteSinks, shard_of, websocket_connector
from actors.discovery import DiscoveryStatus, Plan, VenueState, run_discovery, run_venue
from actors.hub import Control, Hub, run_hub
from actors.monitor import HeapTrim, LoopLag, run_heap_trimmer, run_loop_monitor
from actors.recorder import RecorderStatus, run_recorder
from actors.records import Opportunity, Quote, VenueDown
from actors.replay import ReplayStatus
from actors.session import SessionCounters
from actors.shard import QueryKind, Shard, ShardOutputs, WindowQuery, merge_hub_state, run_shard
from actors.supervisor import ActorHandle, Supervisor

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Runtime:
    """What the web layer and /health read. Built once; each part has one owning actor."""

    config: Config
    budget: Budget
    supervisor: Supervisor
    edges: list[Edge]
    venue_states: Mapping[str, Any]  # VenueState, or serve's RemoteVenueState
    shards: list[Shard]
    shard_queries: list[BlockingChannel[WindowQuery]]
    hub: Hub
    hub_control: BlockingChannel[Control]
    recorder_status: RecorderStatus | None
    discovery_status: DiscoveryStatus
    plan: Latest[Plan]
    session_counters: SessionCounters
    loop_lag: LoopLag
    heap_trim: HeapTrim
    clock_ns: Callable[[], int]
    started_ns: int
    data_dir: Path
    urls: list[str] = field(default_factory=list)
    replay: ReplayStatus | None = None
    #: ``spreadwatch serve``: the NATS section of /health (client, peers, consumers)
    cluster: Callable[[], dict[str, Any]] | None = None

    def venues_snapshot(self) -> dict[str, Any]:
        now = self.clock_ns()
        return {name: state.snapshot(now) for name, state in self.venue_states.items()}

    async def query_window(self, symbol: str, timeout_s: float = 2.0,
                           kind: QueryKind = QueryKind.WINDOW) -> dict[str, Any] | None:
        """Ask the shard that owns ``symbol`` for its window (or, with ``kind``, the
        window's statistics); None when it has none.

        Raises trio.TooSlowError when the shard does not answer in time, and
        trio.WouldBlock when its query channel is full.
        """
        queries = self.shard_queries[shard_of(symbol, len(self.shard_queries))]
        send, receive = trio.open_memory_channel[dict[str, Any] | None](1)
        async with send, receive:
            if not queries.try_send(WindowQuery(symbol, send, kind)):
                raise trio.WouldBlock
            with trio.fail_after(timeout_s):
                return await receive.receive()


def feed_venues(venue_states: Mapping[str, Any], shards: list[Shard],
                clock_ns: Callable[[], int]) -> dict[str, Any]:
    """The compact per-venue view sent on the ``venues`` topic."""
    now = clock_ns()
    out: dict[str, Any] = {}
    for name, state in venue_states.items():
        snap = state.snapshot(now)
        age = snap["last_message_age_s"]
        stale = sum(shard.stale_counts.get(name, 0) for shard in shards)
        out[name] = {
            "connected": snap["connected"], "connections": snap["connections"],
            "messages": snap["messages"], "rate": snap["rate"],
            "last_message_age_s": None if age is None else round(age, 1),
            "reconnects": snap["reconnects"], "stale_symbols": stale,
        }
    return out


WebRunner = Callable[..., Any]
#: An actor that feeds quotes in place of discovery and the venues (replay):
#: ``async def source(sinks, *, task_status)``.
QuoteSource = Callable[..., Any]


async def run_spreadwatch(
    config: Config,
    *,
    shutdown: trio.Event,
    web: WebRunner | None = None,
    connect: ConnectFn | None = None,
    http_transport: httpx.AsyncBaseTransport | None = None,
    data_dir: Path | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
    source: QuoteSource | None = None,
    source_name: str = "replay",
    replay_status: ReplayStatus | None = None,
    venue_states: Mapping[str, Any] | None = None,
    actors: Sequence[tuple[str, Callable[..., Any], tuple[Any, ...]]] = (),
    cluster: Callable[[], dict[str, Any]] | None = None,
    opportunity_sink: DropChannel[Any] | None = None,
    task_status: trio.TaskStatus[Runtime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole pipeline until ``shutdown`` is set, then stop it gracefully.

    ``source`` (replay, or ``spreadwatch serve``'s NATS subscriber) replaces discovery and
    the venue actors: it is started as the actor ``source_name`` with the shards' and
    recorder's sinks; ``replay_status`` is shown on ``/health``. ``venue_states`` (serve:
    the ingest peers' reports) stands in for the local venues' states on /health and the
    feed; ``actors`` are more ``(name, fn, args)`` actors to supervise (serve: the NATS
    peers), started before the source; ``cluster`` is /health's ``nats`` section.
    ``opportunity_sink`` (serve, whose recorder is another process) takes the shards'
    opportunity events in the recorder's place.
    ``clock_ns`` is the clock of every actor (a replay clock in replay).

    ``web`` is the web server actor (``app.web.run_web``); None runs headless (tests).
    ``connect`` and ``http_transport`` are the I/O seams (WebSocket connect factory and
    httpx transport); by default the real network is used.
    """
    budget = check_budget(config, nats=cluster is not None)
    log.info("memory budget: %.0f MB (%s)", budget.total / 2**20,
             ", ".join(f"{k}={v / 2**20:.0f}" for k, v in budget.parts.items() if v))
    ch = config.channels
    n_shards = config.windows.shards
    venues = config.enabled_venues() if source is None else {}
    data_dir = data_dir or Path(config.recorder.data_dir)

    recorder_inbox: DropChannel[Quote | Any] | None = (
        DropChannel("recorder", ch.recorder_input) if config.recorder.enabled else None
    )
    shard_inboxes = [ConflatingChannel[tuple[str, str], Quote | VenueDown](f"shard-{i}", ch.shard_input_keys)
                     for i in range(n_shards)]
    shard_queries = [BlockingChannel[WindowQuery](f"shard-{i}-queries", ch.shard_queries)
                     for i in range(n_shards)]
    hub_states = ConflatingChannel[str, Any]("hub-states", ch.hub_state_keys, merge=merge_hub_state)
    hub_events = DropChannel[Opportunity]("hub-events", ch.hub_events)
    hub_control = BlockingChannel[Control]("hub-control", ch.hub_control)
    edges: list[Edge] = [*shard_inboxes, *shard_queries, hub_states, hub_events, hub_control]
    if recorder_inbox is not None:
        edges.insert(0, recorder_inbox)

    if recorder_inbox is None and opportunity_sink is not None:
        edges.append(opportunity_sink)
    outputs = ShardOutputs(hub_states, hub_events,
                           recorder_inbox if recorder_inbox is not None else opportunity_sink)
    # A replay may hold quotes of any configured venue.
    fee_venues = venues if source is None else config.venues
    fees = {name: v.taker_fee_bps for name, v in fee_venues.items()}
    stale = {name: int(v.stale_after_s * 1e9) for name, v in fee_venues.items()}
    per_shard_series = math.ceil(config.windows.max_series / n_shards)
    shards = [Shard(i, config.spreads, config.windows, fees, stale, outputs, per_shard_series)
              for i in range(n_shards)]
    local_states = {name: VenueState(name) for name in venues}
    shown_states: Mapping[str, Any] = local_states if venue_states is None else venue_states
    plan: Latest[Plan] = Latest("plan")
    sinks = QuoteSinks(shard_inboxes, recorder_inbox)
    connect = connect or websocket_connector(
        message_queue_size=ch.socket_queue, connect_timeout_s=config.connector.connect_timeout_s)
    recorder_status = RecorderStatus() if recorder_inbox is not None else None
    discovery_status = DiscoveryStatus()
    session_counters = SessionCounters()
    loop_lag = LoopLag(interval_s=config.server.loop_monitor_interval_s)
    heap_trim = HeapTrim(interval_s=config.server.malloc_trim_interval_s)

    async with httpx.AsyncClient(transport=http_transport,
                                 timeout=config.discovery.request_timeout_s) as client, \
            trio.open_nursery() as nursery:
        supervisor = Supervisor(nursery, backoff_initial_s=config.connector.backoff_initial_s,
                                backoff_max_s=config.connector.backoff_max_s)
        def ask_window(symbol: str, reply: trio.MemorySendChannel[dict[str, Any] | None]) -> bool:
            queries = shard_queries[shard_of(symbol, n_shards)]
            return queries.try_send(WindowQuery(symbol, reply, QueryKind.FEED_WINDOW))

        hub = Hub(config.feed, top_n=config.spreads.top_n,
                  venues=functools.partial(feed_venues, shown_states, shards, clock_ns),
                  ask_window=ask_window, clock_ns=clock_ns)
        runtime = Runtime(
            config=config, budget=budget, supervisor=supervisor, edges=edges,
            venue_states=shown_states, shards=shards, shard_queries=shard_queries, hub=hub,
            hub_control=hub_control, recorder_status=recorder_status,
            discovery_status=discovery_status, plan=plan, session_counters=session_counters,
            loop_lag=loop_lag, heap_trim=heap_trim, clock_ns=clock_ns, started_ns=clock_ns(),
            data_dir=data_dir, replay=replay_status, cluster=cluster,
        )

        recorder: ActorHandle | None = None
        if recorder_inbox is not None:
            recorder = await supervisor.start(
                "recorder", _recorder_actor, recorder_inbox, data_dir, config, clock_ns,
                recorder_status)
        for i, shard in enumerate(shards):
            await supervisor.start(f"shard-{i}", _shard_actor, shard, shard_inboxes[i],
                                   shard_queries[i], clock_ns)
        await supervisor.start("hub", run_hub, hub, hub_states, hub_events, hub_control)
        await supervisor.start("loop-monitor", run_loop_monitor, loop_lag)
        await supervisor.start("heap-trimmer", run_heap_trimmer, heap_trim)
        extra = {name: await supervisor.start(name, fn, *args) for name, fn, args in actors}
        ingest: list[ActorHandle] = []
        if source is not None:
            ingest.append(await supervisor.start(source_name, source, sinks))
        else:
            ingest.append(await supervisor.start(
                "discovery", _discovery_actor, plan, config, client, discovery_status, clock_ns))
        for name in venues:
            ingest.append(await supervisor.start(
                f"venue-{name}", _venue_actor, name, plan, sinks, local_states[name], config,
                connect, client, clock_ns))
        web_handle: ActorHandle | None = None
        if web is not None:
            web_handle = await supervisor.start("web", web, runtime)
        task_status.started(runtime)

        await shutdown.wait()
        log.info("shutting down")
        began = trio.current_time()
        with trio.move_on_after(config.server.shutdown_timeout_s) as scope:
            # Browsers first: a thousand feed sessions kept the loop busy enough that
            # ingest and the recorder could not finish within the deadline (bench
            # shutdown: 7.6 s, 161 rows abandoned). Their sends are bounded by then
            # (app/serve.py), and what is left of their closing runs on in the background.
            if web_handle is not None:
                web_handle.cancel()
                with trio.move_on_after(WEB_STOP_S):
                    await web_handle.wait()
                log.info("shutdown: web stopped in %.2fs", trio.current_time() - began)
            for handle in ingest:
                handle.cancel()
            for handle in ingest:
                await handle.wait()
            log.info("shutdown: ingest stopped in %.2fs", trio.current_time() - began)
            if recorder is not None and recorder_inbox is not None:
                recorder_inbox.close()
                await recorder.wait()
                log.info("shutdown: recorder stopped in %.2fs", trio.current_time() - began)
            if opportunity_sink is not None and OPPORTUNITY_ACTOR in extra:
                # serve: the last opportunity events go out (and are acked) before we stop
                opportunity_sink.close()
                await extra[OPPORTUNITY_ACTOR].wait()
        if scope.cancelled_caught:
            log.error("graceful shutdown took over %.1fs; cancelling the rest",
                      config.server.shutdown_timeout_s)
        nursery.cancel_scope.cancel()


#: seconds a graceful shutdown waits for the web server (its sessions' close frames)
#: before it stops ingest; the web server goes on closing meanwhile
WEB_STOP_S = 1.0

#: the actor that drains ``opportunity_sink`` (serve's publisher to the record stream)
OPPORTUNITY_ACTOR = "nats-opportunities"

#: seconds a cancelled recorder's shielded last flush may take (see _recorder_actor)
RECORDER_LAST_FLUSH_S = 0.4


# Adapters from the supervisor's uniform call (positional args + task_status) to each
# actor's keyword-only signature.

async def _recorder_actor(inbox: DropChannel[Any], data_dir: Path, config: Config,
                          clock_ns: Callable[[], int], status: RecorderStatus, *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    # The graceful path gives the recorder whatever is left of server.shutdown_timeout_s;
    # only when that runs out is it cancelled, and its shielded last flush then gets
    # RECORDER_LAST_FLUSH_S more, so SIGTERM -> exit stays within 5 s even on a slow disk.
    await run_recorder(inbox, data_dir=data_dir, flush_interval_s=config.recorder.flush_interval_s,
                       max_buffered_rows=config.recorder.max_buffered_rows, clock_ns=clock_ns,
                       status=status, shutdown_timeout_s=RECORDER_LAST_FLUSH_S,
                       task_status=task_status)


async def _shard_actor(shard: Shard, inbox: Any, queries: Any, clock_ns: Callable[[], int], *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    await run_shard(shard, inbox, queries, clock_ns=clock_ns, task_status=task_status)


async def _discovery_actor(plan: Latest[Plan], config: Config, client: httpx.AsyncClient,
                           status: DiscoveryStatus, clock_ns: Callable[[], int], *,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    await run_discovery(plan, config=config, client=client, status=status, clock_ns=clock_ns,
                        task_status=task_status)


async def _venue_actor(name: str, plan: Latest[Plan], sinks: QuoteSinks, state: VenueState,
                       config: Config, connect: ConnectFn, client: httpx.AsyncClient,
                       clock_ns: Callable[[], int], *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    await run_venue(name, plan, sinks, state, config=config, connect=connect, client=client,
                    clock_ns=clock_ns, task_status=task_status)
