"""``/health`` and ``/metrics``: every figure the post-mortem asked to watch, from one snapshot.

The snapshot is assembled on request from each owner's own counters (actors, channels,
venues, shards, hub, sessions, recorder, process); nothing is cached or shared.
``/metrics`` renders the same snapshot in Prometheus text format through a
per-application registry (no module-level registry).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from actors.monitor import rss_bytes, task_count
from app.runtime import Runtime


def health_snapshot(runtime: Runtime, *, objects: bool = False) -> tuple[dict[str, Any], bool]:
    """The /health document and whether the process is healthy.

    ``objects`` adds ``process.gc_objects`` (objects the garbage collector tracks) and
    ``process.gc_collections`` (collections per generation): costly, so on request only.
    """
    now = runtime.clock_ns()
    problems: list[str] = []
    actors = runtime.supervisor.snapshot()
    for actor in actors:
        if actor["state"] != "running":
            problems.append(f"actor {actor['name']} is {actor['state']}")
    venues = runtime.venues_snapshot()
    connected = [name for name, v in venues.items() if v["connected"]]
    if not connected and runtime.replay is None:
        problems.append("no venue connected")
    degraded = [f"venue {name} disconnected" for name in venues if name not in connected]
    recorder = runtime.recorder_status.snapshot() if runtime.recorder_status else None
    if recorder and recorder.get("last_error"):
        problems.append(f"recorder: {recorder['last_error']}")
    if recorder is not None:
        # The recorder's inbox drops while the recorder is full (slow or failing disk).
        recorder["inbox_dropped"] = sum(
            edge.statistics().dropped for edge in runtime.edges if edge.name == "recorder")
    cluster = runtime.cluster() if runtime.cluster is not None else None
    if cluster is not None:
        if cluster["client"]["state"] != "connected":
            problems.append(f"nats: {cluster['client']['state']} ({cluster['client']['last_error']})")
        degraded += [f"peer {peer['id']} ({peer['role']}) down"
                     for peer in cluster["peers"] if peer["state"] != "up"]
    shards = [s.stats.snapshot() for s in runtime.shards]
    series = sum(s["series"] for s in shards)
    channels = [edge.statistics().as_dict() for edge in runtime.edges]
    hub = runtime.hub.stats.snapshot()
    rss = rss_bytes()
    healthy = not problems
    status = "ok" if healthy and not degraded else ("degraded" if healthy else "unhealthy")
    doc = {
        "status": status,
        "problems": problems + degraded,
        "uptime_s": round((now - runtime.started_ns) / 1e9, 3),
        "actors": actors,
        "channels": channels,
        "venues": venues,
        "discovery": runtime.discovery_status.snapshot(),
        "sessions": {
            "count": hub["sessions"],
            "lagging": hub["lagging_sessions"],
            "refused": hub["sessions_refused"],
            "max": runtime.config.feed.max_sessions,
            **runtime.session_counters.snapshot(),
        },
        "hub": hub,
        "windows": {
            "series": series,
            "series_cap": runtime.config.windows.max_series * 2,
            "points": sum(s["series_bytes"] for s in shards) // 8,
            "bytes": sum(s["series_bytes"] for s in shards),
            "shards": shards,
        },
        "recorder": recorder,
        "replay": runtime.replay.snapshot() if runtime.replay is not None else None,
        "nats": cluster,
        "process": {
            "rss_mb": round(rss / 2**20, 1),
            "budget_mb": round(runtime.budget.total / 2**20, 1),
            "tasks": task_count(),
            "loop_lag": runtime.loop_lag.snapshot(),
            "heap_trim": runtime.heap_trim.snapshot(),
        },
        "budget": runtime.budget.as_dict(),
    }
    if objects:
        process: dict[str, Any] = doc["process"]  # type: ignore[assignment]
        process["gc_objects"] = len(gc.get_objects())
        process["gc_collections"] = [gen["collections"] for gen in gc.get_stats()]
    return doc, healthy


class _HealthCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        doc, healthy = health_snapshot(self.runtime)
        yield _gauge("spreadwatch_up", "1 when /health reports healthy", [], [([], int(healthy))])
        yield _gauge("spreadwatch_rss_bytes", "process resident memory", [],
                     [([], doc["process"]["rss_mb"] * 2**20)])
        yield _gauge("spreadwatch_memory_budget_bytes", "memory budget computed from config", [],
                     [([], self.runtime.budget.total)])
        yield _gauge("spreadwatch_tasks", "trio tasks alive", [], [([], doc["process"]["tasks"])])
        yield _gauge("spreadwatch_loop_lag_seconds", "event-loop lag, last sample", [],
                     [([], doc["process"]["loop_lag"]["last_ms"] / 1000)])
        yield _gauge("spreadwatch_actor_running", "1 when the actor is running", ["actor"],
                     [([a["name"]], int(a["state"] == "running")) for a in doc["actors"]])
        yield _counter("spreadwatch_actor_restarts", "actor restarts", ["actor"],
                       [([a["name"]], a["restarts"]) for a in doc["actors"]])
        edges = doc["channels"]
        for key, help_text in (("used", "items pending"), ("peak", "most items ever pending"),
                               ("capacity", "bound")):
            yield _gauge(f"spreadwatch_channel_{key}", f"channel {help_text}", ["channel", "policy"],
                         [([e["name"], e["policy"]], e[key]) for e in edges])
        for key in ("delivered", "dropped", "conflated"):
            yield _counter(f"spreadwatch_channel_{key}", f"channel items {key}", ["channel", "policy"],
                           [([e["name"], e["policy"]], e[key]) for e in edges])
        venues = doc["venues"]
        yield _gauge("spreadwatch_venue_connected", "1 when every connection of the venue is up",
                     ["venue"], [([v], int(s["connected"])) for v, s in venues.items()])
        for key in ("messages", "quotes", "reconnects", "bad_frames"):
            yield _counter(f"spreadwatch_venue_{key}", f"venue {key}", ["venue"],
                           [([v], s[key]) for v, s in venues.items()])
        yield _gauge("spreadwatch_venue_last_message_age_seconds", "age of the newest message",
                     ["venue"], [([v], s["last_message_age_s"] or 0.0) for v, s in venues.items()])
        sessions = doc["sessions"]
        yield _gauge("spreadwatch_sessions", "feed sessions", [], [([], sessions["count"])])
        yield _gauge("spreadwatch_sessions_lagging", "sessions awaiting resync", [],
                     [([], sessions["lagging"])])
        yield _gauge("spreadwatch_window_series", "rolling window series", [],
                     [([], doc["windows"]["series"])])
        yield _gauge("spreadwatch_window_bytes", "rolling window memory", [],
                     [([], doc["windows"]["bytes"])])
        recorder = doc["recorder"]
        if recorder:
            yield _gauge("spreadwatch_recorder_buffered_rows", "rows waiting to be written", [],
                         [([], recorder.get("buffered_rows", 0))])
            yield _counter("spreadwatch_recorder_write_errors", "failed writes", [],
                           [([], recorder.get("write_errors", 0))])
            yield _counter("spreadwatch_recorder_inbox_dropped", "records the full recorder dropped", [],
                           [([], recorder.get("inbox_dropped", 0))])
            yield _counter("spreadwatch_recorder_compactions", "closed hours compacted", [],
                           [([], recorder.get("compactions", 0))])
            yield _counter("spreadwatch_recorder_compaction_errors", "failed compactions", [],
                           [([], recorder.get("compaction_errors", 0))])
        cluster = doc.get("nats")
        if cluster:
            yield from _nats_metrics(cluster)


def _nats_metrics(cluster: dict[str, Any]) -> Iterator[Metric]:
    """``spreadwatch serve``: the NATS client, the quote subscription and the peers."""
    client, quotes = cluster["client"], cluster["quotes"]
    yield _gauge("spreadwatch_nats_connected", "1 when the NATS client is connected", [],
                 [([], int(client["state"] == "connected"))])
    for key, help_text in (("reconnects", "NATS connections lost"),
                           ("slow_consumer_drops", "messages a full subscription dropped"),
                           ("publish_dropped", "publishes refused, outbound buffer full"),
                           ("server_errors", "-ERR from the server")):
        yield _counter(f"spreadwatch_nats_{key}", help_text, [], [([], client[key])])
    for key, help_text in (("quotes", "quotes received from ingest processes"),
                           ("bad_batches", "quote batches that did not decode"),
                           ("gaps", "quote batches that never arrived")):
        yield _counter(f"spreadwatch_nats_quote_{key}", help_text, [], [([], quotes[key])])
    hop = quotes["hop"]
    yield _gauge("spreadwatch_nats_hop_seconds", "ingest publish to serve receipt", ["quantile"],
                 [([q], hop[f"{q}_ms"] / 1000) for q in ("p50", "p99") if hop.get(f"{q}_ms") is not None])
    yield _gauge("spreadwatch_nats_peer_up", "1 while the peer announces itself", ["role", "peer"],
                 [([p["role"], p["id"]], int(p["state"] == "up")) for p in cluster["peers"]])


def _gauge(name: str, doc: str, labels: list[str], samples: list[tuple[list[str], float]]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def _counter(name: str, doc: str, labels: list[str], samples: list[tuple[list[str], float]]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def metrics_registry(runtime: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_HealthCollector(runtime))
    return registry
