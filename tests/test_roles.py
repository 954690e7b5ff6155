"""The scale-out roles (app/roles.py) in one trio run, against a real nats-server on loopback
and simulated venues: two ingest processes' worth of venues, a serve, a record.

tests/test_roles_processes.py runs the same roles as separate processes and kills them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pyarrow.dataset as ds
import trio

from actors.bridge import Peers, PublisherStats, RecordPublisher, RemoteVenueState, Subjects, _PeerDoc
from actors.channels import DropChannel
from actors.config import Config, load_config
from actors.nats import JetStream, NatsStatus, open_nats
from actors.records import Opportunity, OpportunityState
from app.cli import point_at
from app.roles import IngestRuntime, RecordRuntime, run_ingest, run_record, run_serve
from app.runtime import Runtime
from app.sim.server import run_sim_venues
from app.web import run_web
from tests import nats_server as nats_server_module
from tests.nats_server import NatsServer

nats_server = nats_server_module.nats_server  # the fixture

ROOT = Path(__file__).resolve().parent.parent
VENUES = ("binance", "bybit", "okx")


def _config(endpoints: dict[str, Any], nats_url: str, data_dir: Path) -> Config:
    config = point_at(load_config(ROOT / "config.toml"),
                      {n: (e.rest_url, e.ws_url) for n, e in endpoints.items()})
    return dataclasses.replace(
        config,
        server=dataclasses.replace(config.server, port=0),
        recorder=dataclasses.replace(config.recorder, data_dir=str(data_dir), flush_interval_s=0.2),
        nats=dataclasses.replace(config.nats, servers=(nats_url,), peer_interval_s=0.2,
                                 peer_timeout_s=1.0, ack_timeout_s=0.5))


class Role:
    """One role running in the test's nursery, stopped gracefully on demand."""

    def __init__(self, runtime: Any, shutdown: trio.Event, stopped: trio.Event) -> None:
        self.runtime = runtime
        self.shutdown = shutdown
        self.stopped = stopped

    async def stop(self) -> None:
        self.shutdown.set()
        with trio.fail_after(6):
            await self.stopped.wait()


async def start_role(nursery: trio.Nursery, fn: Callable[..., Any], config: Config,
                     **kwargs: Any) -> Role:
    shutdown, stopped = trio.Event(), trio.Event()

    async def run(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await fn(config, shutdown=shutdown, task_status=task_status, **kwargs)
        finally:
            stopped.set()

    runtime = await nursery.start(run)
    return Role(runtime, shutdown, stopped)


@asynccontextmanager
async def cluster(tmp_path: Path, server: NatsServer) -> AsyncIterator[tuple[Config, trio.Nursery]]:
    async with trio.open_nursery() as nursery:
        endpoints = await nursery.start(functools.partial(run_sim_venues, VENUES, seed=3))
        yield _config(endpoints, server.url, tmp_path / "data"), nursery
        nursery.cancel_scope.cancel()


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "",
                   state: Callable[[], Any] | None = None) -> None:
    try:
        with trio.fail_after(timeout_s):
            while not predicate():
                await trio.sleep(0.05)
    except trio.TooSlowError:
        detail = f"; {state()}" if state is not None else ""
        raise AssertionError(f"not within {timeout_s} s: {what}{detail}") from None


def _nats_client(url: str) -> Any:
    return open_nats([url], name="test", status=NatsStatus())


def _written(status: Any) -> int:
    return sum(status.rows_written.get(s, 0) for s in ("quotes", "trades"))


def _rows(data_dir: Path, stream: str) -> int:
    path = data_dir / stream
    if not path.exists():
        return 0
    return ds.dataset(str(path), format="parquet", partitioning="hive").count_rows()


async def test_two_ingests_a_serve_and_a_recorder_see_every_venue(
        tmp_path: Path, nats_server: NatsServer) -> None:
    async with cluster(tmp_path, nats_server) as (config, nursery):
        record = await start_role(nursery, run_record, config)
        serve = await start_role(nursery, run_serve, config, web=run_web)
        first = await start_role(nursery, run_ingest, config, venues=["binance", "bybit"])
        second = await start_role(nursery, run_ingest, config, venues=["okx"])
        runtime: Runtime = serve.runtime
        assert runtime.cluster is not None

        def venues_connected() -> bool:
            snap = runtime.venues_snapshot()
            return all(snap[v]["connected"] and snap[v]["quotes"] > 0 for v in VENUES)

        await wait_for(venues_connected, what="every venue connected, seen from serve")
        # The shards got quotes of every venue through NATS, and spreads across processes.
        # A symbol's book in serve holds venues of both ingest processes: the spreads
        # across them are computed in one place.
        await wait_for(lambda: any(
            {"okx"} < set(book) and set(book) & {"binance", "bybit"}
            for shard in runtime.shards for book in shard.books.values()),
            what="a book with venues of both ingest processes")
        async with httpx.AsyncClient() as client:
            health = (await client.get(f"{runtime.urls[0]}/health")).json()
            metrics = await client.get(f"{runtime.urls[0]}/metrics")
        assert metrics.status_code == 200, metrics.text[:500]
        assert "spreadwatch_nats_connected 1.0" in metrics.text
        assert metrics.text.count('spreadwatch_nats_peer_up{peer="ingest-') == 2
        # the ingest peers' venue reports have every field a local venue's has
        assert metrics.text.count('spreadwatch_venue_bad_frames_total{venue=') == len(VENUES)
        roles = sorted(p["role"] for p in health["nats"]["peers"] if p["state"] == "up")
        assert roles == ["ingest", "ingest", "record", "serve"]
        assert health["nats"]["client"]["state"] == "connected"
        assert health["nats"]["quotes"]["bad_batches"] == 0
        assert health["nats"]["quotes"]["hop"]["p50_ms"] is not None
        assert {a["name"] for a in health["actors"]} >= {"nats-quotes", "nats-peers", "nats-announce",
                                                         "nats-opportunities"}
        assert health["nats"]["opportunities"]["stream_ready"] is True

        # The recorder gets every record the ingest processes' connectors produced.
        await trio.sleep(1.0)
        for ingest in (first, second):
            await ingest.stop()
        published = sum(r.runtime.stats.records for r in (first, second))
        acked = sum(r.runtime.stats.records_acked for r in (first, second))
        assert published > 0 and acked == published
        recorder: RecordRuntime = record.runtime
        await wait_for(lambda: recorder.consumer.records == published, what="every record consumed")
        await record.stop()
        status = recorder.recorder.snapshot()
        written = sum(status["rows_written"][s] for s in ("quotes", "trades"))
        assert written == published
        assert _rows(Path(config.recorder.data_dir), "quotes") + _rows(
            Path(config.recorder.data_dir), "trades") == published
        assert recorder.consumer.bad_batches == 0
        await serve.stop()


async def test_a_recorder_stopped_and_restarted_loses_no_rows(
        tmp_path: Path, nats_server: NatsServer) -> None:
    async with cluster(tmp_path, nats_server) as (config, nursery):
        ingest = await start_role(nursery, run_ingest, config, venues=list(VENUES))
        record = await start_role(nursery, run_record, config)
        runtime: IngestRuntime = ingest.runtime
        await wait_for(lambda: record.runtime.consumer.acked > 0, what="a first ack")
        await record.stop()
        first_written = _written(record.runtime.recorder)
        stopped_at = runtime.stats.records_acked
        # Records go on into the stream while no recorder runs ...
        await wait_for(lambda: runtime.stats.records_acked > stopped_at + 500,
                       what="records stored while no recorder runs")
        record = await start_role(nursery, run_record, config)
        await trio.sleep(0.5)
        await ingest.stop()
        published = runtime.stats.records
        assert runtime.stats.records_acked == published
        # ... and the restarted recorder catches up on all of them, exactly once.
        second = record.runtime.recorder
        await wait_for(lambda: first_written + _written(second) >= published,
                       what="the restarted recorder caught up",
                       state=lambda: (first_written, published, record.runtime.snapshot()))
        await record.stop()
        assert first_written + _written(second) == published
        data_dir = Path(config.recorder.data_dir)
        assert _rows(data_dir, "quotes") + _rows(data_dir, "trades") == published


async def test_opportunities_from_two_serves_are_recorded_once(
        tmp_path: Path, nats_server: NatsServer) -> None:
    """Every serve publishes the opportunity events its shards emit (there is no recorder
    in a serve); two serves fed the same quotes emit the same events, and the stream keeps
    one of each (Nats-Msg-Id = the event's identity), so the recorder writes each once."""
    events = [Opportunity(f"S{i}/USDT", "binance", "okx", state, 12.0, 8.0, 9.0, 7.5, 100.0, 1.0,
                          100.1, 2.0, 1_000 + i, 9_000 + i if state is OpportunityState.CLOSE else 0)
              for i in range(20) for state in (OpportunityState.OPEN, OpportunityState.CLOSE)]
    async with cluster(tmp_path, nats_server) as (config, nursery):
        record = await start_role(nursery, run_record, config)
        subjects = Subjects(config.nats.subject_prefix)
        stats = [PublisherStats(), PublisherStats()]
        async with _nats_client(nats_server.url) as nc, trio.open_nursery() as serves:
            for i, serve_stats in enumerate(stats):
                inbox: DropChannel[Any] = DropChannel(f"serve-{i}", 1000)
                publisher = RecordPublisher(
                    nc, JetStream(nc), subjects=subjects, src=f"serve-{i}",
                    stream=config.nats.stream, stream_max_bytes=config.nats.stream_max_bytes,
                    stream_max_age_s=config.nats.stream_max_age_s, max_unacked=100,
                    ack_timeout_s=0.5, stats=serve_stats)
                await serves.start(publisher.run, inbox)
                assert inbox.put_nowait(events) == len(events)
            await wait_for(lambda: all(s.records_acked == len(events) for s in stats),
                           what="both serves' events acked", state=lambda: stats)
            serves.cancel_scope.cancel()
        assert sum(s.record_duplicates for s in stats) == len(events)
        recorder: RecordRuntime = record.runtime
        await wait_for(lambda: recorder.recorder.rows_written.get("opportunities", 0) == len(events),
                       what="each event written once", state=lambda: recorder.snapshot())
        await record.stop()
        table = ds.dataset(str(Path(config.recorder.data_dir) / "opportunities"), format="parquet",
                           partitioning="hive").to_table()
        assert table.num_rows == len(events)
        assert sorted(zip(table["symbol"].to_pylist(), table["state"].to_pylist(), strict=True)) == \
            sorted((e.symbol, e.state.value) for e in events)
        assert recorder.consumer.bad_batches == 0


def test_a_peers_venue_report_of_the_wrong_shape_keeps_the_never_connected_values() -> None:
    """Announcements come from any client of the NATS server: a field of the wrong type
    must not reach /health or /metrics (which format every field as a number)."""
    peers = Peers(timeout_s=5.0, clock_ns=lambda: 2_000_000_000)
    doc = _PeerDoc(id="ingest-x", role="ingest", pid=1, host="h", started_ns=0,
                   sent_ns=2_000_000_000,
                   venues={"okx": {"connected": "yes", "quotes": 7, "rate": math.nan,
                                   "bad_frames": True, "last_message_age_s": 0.5}})
    peers.update(doc, 2_000_000_000)
    snap = RemoteVenueState("okx", peers).snapshot(2_000_000_000)
    assert snap["connected"] is False and snap["quotes"] == 7
    assert snap["rate"] == 0 and snap["bad_frames"] == 0 and snap["last_message_age_s"] == 0.5
    assert snap["peer"] == "ingest-x"
    assert set(RemoteVenueState("gate", peers).snapshot(0)) >= {"bad_frames", "rotations", "streams"}
