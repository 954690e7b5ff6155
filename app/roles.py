"""The scale-out roles: ``spreadwatch ingest``, ``serve`` and ``record``, joined by NATS.

    ingest (venues A, B)  ─┐  <p>.quotes.<venue>   (core NATS) ──> serve, serve, ...
    ingest (venues C, D)  ─┤  <p>.records.<venue>  (JetStream stream) ──> record
                           └  <p>.peers.<role>.<id> (every process) ──> serve's /health

Each role is the one-process pipeline cut at an edge that was already bounded and
non-blocking: an ingest process runs discovery and its venues' connectors into a
conflating quote edge and a drop-and-count record edge, as a one-process run feeds its
shards and recorder, and its publishers drain those edges to NATS; a serve process runs
shards, hub and web with the NATS subscriber as the source of quotes (as a replay is);
a record process runs the recorder with the stream's consumer as its only producer.
``spreadwatch demo`` and ``run`` stay one process with no NATS (app/runtime.py).

Every process announces itself; serve processes show every peer on /health and mark
the venues of a silent ingest process stale at once (docs/architecture.md, "Scale-out").
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import trio

from actors.bridge import (
    ConsumerStats,
    Peer,
    Peers,
    PublisherStats,
    RecordConsumer,
    RecordPublisher,
    RemoteVenueState,
    Subjects,
    SubscriberStats,
    process_id,
    run_peer_announcer,
    run_peer_listener,
    run_quote_publisher,
    run_quote_subscriber,
)
from actors.budget import check_budget
from actors.channels import ConflatingChannel, DropChannel, Latest
from actors.config import Config, NatsConfig
from actors.connector import ConnectFn, QuoteSinks, websocket_connector
from actors.discovery import DiscoveryStatus, Plan, VenueState
from actors.monitor import HeapTrim, run_heap_trimmer
from actors.nats import JetStream, NatsClient, NatsStatus, open_nats
from actors.recorder import RecorderStatus
from actors.records import Quote, VenueDown
from actors.supervisor import ActorHandle, Supervisor
from app.runtime import (
    OPPORTUNITY_ACTOR,
    RECORDER_LAST_FLUSH_S,
    Runtime,
    WebRunner,
    _discovery_actor,
    _recorder_actor,
    _venue_actor,
    run_spreadwatch,
)

log = logging.getLogger(__name__)

ROLES = ("ingest", "serve", "record")


def _nats(config: NatsConfig, ident: str, status: NatsStatus) -> Any:
    return open_nats(config.servers, name=ident, status=status,
                     max_outbound_bytes=config.max_outbound_bytes,
                     connect_timeout_s=config.connect_timeout_s,
                     backoff_initial_s=config.backoff_initial_s, backoff_max_s=config.backoff_max_s)


@dataclasses.dataclass(slots=True)
class IngestRuntime:
    """What an ingest process holds; tests and the announcer read it."""

    ident: str
    venues: list[str]
    nc: NatsClient
    supervisor: Supervisor
    venue_states: dict[str, VenueState]
    quotes: ConflatingChannel[tuple[str, str], Quote | VenueDown]
    records: DropChannel[Any]
    stats: PublisherStats
    discovery: DiscoveryStatus

    def snapshot(self) -> dict[str, Any]:
        return {"publisher": self.stats.snapshot(),
                "edges": [self.quotes.statistics().as_dict(), self.records.statistics().as_dict()],
                "actors": [{k: a[k] for k in ("name", "state", "restarts")}
                           for a in self.supervisor.snapshot()]}


async def run_ingest(
    config: Config, *, shutdown: trio.Event, venues: Sequence[str] | None = None,
    connect: ConnectFn | None = None, http_transport: httpx.AsyncBaseTransport | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
    task_status: trio.TaskStatus[IngestRuntime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect to ``venues`` (default: every enabled venue) and publish to NATS.

    Discovery still looks at every enabled venue, so that ingest processes sharing the
    venues between them agree on the symbols (a symbol is watched when enough venues list
    it, wherever those venues are connected from).
    """
    enabled = config.enabled_venues()
    mine = list(enabled) if not venues else list(venues)
    unknown = [v for v in mine if v not in enabled]
    if unknown:
        raise ValueError(f"not enabled in the configuration: {', '.join(unknown)}")
    check_budget(config, nats=True)
    ident = process_id("ingest")
    ch = config.channels
    quotes = ConflatingChannel[tuple[str, str], Quote | VenueDown]("nats-quotes", ch.shard_input_keys)
    records: DropChannel[Any] = DropChannel("nats-records", ch.recorder_input)
    sinks = QuoteSinks([quotes], records if config.recorder.enabled else None)
    connect = connect or websocket_connector(
        message_queue_size=ch.socket_queue, connect_timeout_s=config.connector.connect_timeout_s)
    subjects = Subjects(config.nats.subject_prefix)
    stats = PublisherStats()
    status = NatsStatus()
    states = {name: VenueState(name) for name in mine}
    plan: Latest[Plan] = Latest("plan")
    discovery = DiscoveryStatus()

    async with _nats(config.nats, ident, status) as nc, \
            httpx.AsyncClient(transport=http_transport,
                              timeout=config.discovery.request_timeout_s) as client, \
            trio.open_nursery() as nursery:
        supervisor = Supervisor(nursery, backoff_initial_s=config.connector.backoff_initial_s,
                                backoff_max_s=config.connector.backoff_max_s)
        runtime = IngestRuntime(ident, mine, nc, supervisor, states, quotes, records, stats,
                                discovery)
        js = JetStream(nc)
        publisher = RecordPublisher(
            nc, js, subjects=subjects, src=ident, stream=config.nats.stream,
            stream_max_bytes=config.nats.stream_max_bytes,
            stream_max_age_s=config.nats.stream_max_age_s,
            max_unacked=config.nats.max_unacked_batches, ack_timeout_s=config.nats.ack_timeout_s,
            stats=stats, clock_ns=clock_ns)
        record_handle: ActorHandle | None = None
        if config.recorder.enabled:
            record_handle = await supervisor.start("nats-records", _method_actor, publisher.run,
                                                   records)
        await supervisor.start("heap-trimmer", run_heap_trimmer,
                               HeapTrim(interval_s=config.server.malloc_trim_interval_s))
        quote_handle = await supervisor.start(
            "nats-quotes", _quote_publisher_actor, nc, quotes, subjects, ident,
            config.nats.publish_interval_s, stats, clock_ns)
        await supervisor.start(
            "nats-announce", _announcer_actor, nc, subjects, "ingest", ident,
            config.nats.peer_interval_s,
            lambda now: {name: state.snapshot(now) for name, state in states.items()},
            runtime.snapshot, clock_ns)
        ingest = [await supervisor.start("discovery", _discovery_actor, plan, config, client,
                                         discovery, clock_ns)]
        for name in mine:
            ingest.append(await supervisor.start(
                f"venue-{name}", _venue_actor, name, plan, sinks, states[name], config, connect,
                client, clock_ns))
        log.info("ingest %s: venues %s -> %s", ident, ", ".join(mine), ", ".join(config.nats.servers))
        task_status.started(runtime)

        await shutdown.wait()
        log.info("shutting down")
        with trio.move_on_after(config.server.shutdown_timeout_s):
            for handle in ingest:
                handle.cancel()
            for handle in ingest:
                await handle.wait()
            # The connectors handed their partial batches over; publish them, then wait
            # (bounded by ack_timeout_s) for the stream's acks.
            quotes.close()
            await quote_handle.wait()
            if record_handle is not None:
                records.close()
                await record_handle.wait()
        log.info("ingest: %d records published, %d acked by the stream, %d dropped before "
                 "publishing", stats.records, stats.records_acked, records.statistics().dropped)
        nursery.cancel_scope.cancel()


@dataclasses.dataclass(slots=True)
class ServeCluster:
    """A serve process's NATS parts, for /health."""

    ident: str
    nc: NatsClient
    peers: Peers
    stats: SubscriberStats
    opportunities: PublisherStats

    def snapshot(self) -> dict[str, Any]:
        return {"id": self.ident, "client": self.nc.status.snapshot(),
                "quotes": self.stats.snapshot(), "opportunities": self.opportunities.snapshot(),
                "peers": self.peers.snapshot(),
                "peer_announcements_refused": self.peers.refused,
                "peer_announcements_bad": self.peers.bad}


async def run_serve(
    config: Config, *, shutdown: trio.Event, web: WebRunner | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
    task_status: trio.TaskStatus[Runtime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Shards, hub and web, fed from NATS; the recorder is ``spreadwatch record``'s job."""
    ident = process_id("serve")
    config = dataclasses.replace(config, recorder=dataclasses.replace(config.recorder, enabled=False))
    subjects = Subjects(config.nats.subject_prefix)
    status = NatsStatus()
    stats = SubscriberStats()
    peers = Peers(timeout_s=config.nats.peer_timeout_s, clock_ns=clock_ns)
    remote = {name: RemoteVenueState(name, peers) for name in config.enabled_venues()}
    sinks_cell: list[QuoteSinks] = []

    def peer_down(peer: Peer, now_ns: int) -> None:
        # The venues only that peer connected are stale from now on, not stale_after_s later.
        if peer.doc.role != "ingest" or not sinks_cell:
            return
        for venue in peer.doc.venues:
            snap = peers.venue_snapshot(venue, now_ns)
            if snap is None or snap.get("peer") == peer.doc.id:
                sinks_cell[0].venue_down(venue, now_ns)

    # The shards' opportunity events go to the record stream (there is no recorder here);
    # every serve publishes them, and the stream keeps one copy of each event.
    opportunities: DropChannel[Any] = DropChannel("nats-opportunities", config.channels.hub_events)
    opportunity_stats = PublisherStats()

    async with _nats(config.nats, ident, status) as nc:
        cluster = ServeCluster(ident, nc, peers, stats, opportunity_stats)
        publisher = RecordPublisher(
            nc, JetStream(nc), subjects=subjects, src=ident, stream=config.nats.stream,
            stream_max_bytes=config.nats.stream_max_bytes,
            stream_max_age_s=config.nats.stream_max_age_s,
            max_unacked=config.nats.max_unacked_batches, ack_timeout_s=config.nats.ack_timeout_s,
            stats=opportunity_stats, clock_ns=clock_ns)

        async def source(sinks: QuoteSinks, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            sinks_cell[:] = [sinks]
            await run_quote_subscriber(
                nc, sinks, subjects=subjects, stats=stats,
                max_pending_msgs=config.nats.max_pending_msgs,
                max_pending_bytes=config.nats.max_pending_bytes, clock_ns=clock_ns,
                task_status=task_status)

        actors: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = [
            (OPPORTUNITY_ACTOR, _method_actor, (publisher.run, opportunities)),
            ("nats-peers", _listener_actor, (nc, peers, subjects, config.nats.peer_interval_s,
                                             peer_down)),
            ("nats-announce", _announcer_actor, (nc, subjects, "serve", ident,
                                                 config.nats.peer_interval_s, None,
                                                 stats.snapshot, clock_ns)),
        ]
        await run_spreadwatch(config, shutdown=shutdown, web=web, clock_ns=clock_ns, source=source,
                              source_name="nats-quotes", venue_states=remote, actors=actors,
                              cluster=cluster.snapshot, opportunity_sink=opportunities,
                              task_status=task_status)


@dataclasses.dataclass(slots=True)
class RecordRuntime:
    ident: str
    nc: NatsClient
    supervisor: Supervisor
    recorder: RecorderStatus
    consumer: ConsumerStats
    inbox: DropChannel[Any]

    def snapshot(self) -> dict[str, Any]:
        return {"recorder": self.recorder.snapshot(), "consumer": self.consumer.snapshot(),
                "actors": [{k: a[k] for k in ("name", "state", "restarts")}
                           for a in self.supervisor.snapshot()]}


async def run_record(
    config: Config, *, shutdown: trio.Event, clock_ns: Callable[[], int] = time.time_ns,
    task_status: trio.TaskStatus[RecordRuntime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Record what the stream holds; ack each batch once the recorder wrote it."""
    check_budget(config, nats=True)
    ident = process_id("record")
    subjects = Subjects(config.nats.subject_prefix)
    status = NatsStatus()
    stats = ConsumerStats()
    recorder_status = RecorderStatus()
    inbox: DropChannel[Any] = DropChannel("recorder", config.channels.recorder_input)
    data_dir = Path(config.recorder.data_dir)
    async with _nats(config.nats, ident, status) as nc, trio.open_nursery() as nursery:
        supervisor = Supervisor(nursery, backoff_initial_s=config.connector.backoff_initial_s,
                                backoff_max_s=config.connector.backoff_max_s)
        runtime = RecordRuntime(ident, nc, supervisor, recorder_status, stats, inbox)
        consumer = RecordConsumer(
            nc, JetStream(nc), inbox, recorder_status, subjects=subjects,
            stream=config.nats.stream, consumer=config.nats.consumer,
            stream_max_bytes=config.nats.stream_max_bytes,
            stream_max_age_s=config.nats.stream_max_age_s, fetch_batch=config.nats.fetch_batch,
            ack_wait_s=config.nats.ack_wait_s, stats=stats)
        recorder = await supervisor.start("recorder", _recorder_actor, inbox, data_dir, config,
                                          clock_ns, recorder_status)
        await supervisor.start("heap-trimmer", run_heap_trimmer,
                               HeapTrim(interval_s=config.server.malloc_trim_interval_s))
        await supervisor.start("nats-announce", _announcer_actor, nc, subjects, "record", ident,
                               config.nats.peer_interval_s, None, runtime.snapshot, clock_ns)
        fetcher = await supervisor.start("nats-consumer", _method_actor, consumer.run)
        log.info("record %s: stream %s -> %s", ident, config.nats.stream, data_dir)
        task_status.started(runtime)

        await shutdown.wait()
        log.info("shutting down")
        with trio.move_on_after(config.server.shutdown_timeout_s - RECORDER_LAST_FLUSH_S):
            # Let the pull in flight finish (<= 1 s): its messages go to the recorder, not
            # to a vanished inbox the stream would wait ack_wait_s on.
            consumer.stop()
            with trio.move_on_after(1.5):
                await fetcher.wait()
            fetcher.cancel()
            await fetcher.wait()
            inbox.close()
            await recorder.wait()
        # Whatever the recorder wrote is acked now; the rest goes back to the stream now.
        acked = consumer.ack_durable()
        returned = consumer.nak_unwritten()
        with trio.move_on_after(0.5):
            await nc.flush(0.5)
        log.info("record: acked %d batches at shutdown, %d returned for redelivery", acked,
                 returned)
        nursery.cancel_scope.cancel()


# Adapters from the supervisor's uniform call (positional args + task_status).

async def _method_actor(method: Callable[..., Any], *args: Any,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    await method(*args, task_status=task_status)


async def _quote_publisher_actor(nc: NatsClient, quotes: Any, subjects: Subjects, src: str,
                                 interval_s: float, stats: PublisherStats,
                                 clock_ns: Callable[[], int], *,
                                 task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    await run_quote_publisher(nc, quotes, subjects=subjects, src=src, interval_s=interval_s,
                              stats=stats, clock_ns=clock_ns, task_status=task_status)


async def _announcer_actor(nc: NatsClient, subjects: Subjects, role: str, ident: str,
                           interval_s: float,
                           venues: Callable[[int], Mapping[str, dict[str, Any]]] | None,
                           stats: Callable[[], dict[str, Any]] | None, clock_ns: Callable[[], int],
                           *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    await run_peer_announcer(nc, subjects=subjects, role=role, ident=ident, interval_s=interval_s,
                             venues=venues, stats=stats, clock_ns=clock_ns, task_status=task_status)


async def _listener_actor(nc: NatsClient, peers: Peers, subjects: Subjects, interval_s: float,
                          on_down: Callable[[Peer, int], None], *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    await run_peer_listener(nc, peers, subjects=subjects, interval_s=interval_s, on_down=on_down,
                            task_status=task_status)
