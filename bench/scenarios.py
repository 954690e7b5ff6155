"""The issue 7 scenarios: each runs the real program, judges it, and returns a result.

A result is a plain dict (``bench/results/<name>.json``): the command, the parameters,
criteria (what was required, what was measured, passed or not), figures, and the
/health samples the plots are drawn from. ``bench/report.py`` turns the set of results
into ``bench/RESULTS.md``. Every scenario is bounded in time and stops by itself.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import trio
import trio.testing

from actors.recorder import hour_dirs, hour_files
from app.sim.server import VENUES
from bench.harness import (
    Child,
    Run,
    Sampler,
    collect,
    free_port,
    sim_command,
    slope_per_min,
    terminate,
    venue_sections,
    wait_exit,
    wait_healthy,
)
from bench.virtual_soak import simulate

SOAK_TOPICS = "opportunities,quotes:BTC/USDT,spreads:ETH/USDT,venues"


def criterion(text: str, measured: str, passed: bool) -> dict[str, Any]:
    return {"text": text, "measured": measured, "passed": bool(passed)}


@dataclass
class Stack:
    """A running server (and its simulator) with its sampler."""

    run: Run
    server: Child
    sim: Child
    base: str
    url: str
    control_port: int
    data_dir: Path
    sampler: Sampler


def sections(endpoints: dict[str, dict[str, str]], data_dir: Path, **overrides: dict[str, Any]
             ) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"recorder": {"data_dir": str(data_dir)}}
    out.update(venue_sections(endpoints))
    for name, keys in overrides.items():
        out.setdefault(name, {}).update(keys)
    return out


@contextmanager
def stack(run: Run, *, every: float, symbols: int | None = None, name: str = "server",
          extra_endpoints: dict[str, dict[str, str]] | None = None,
          overrides: dict[str, dict[str, Any]] | None = None) -> Iterator[Stack]:
    control = free_port()
    venues = None
    if extra_endpoints:
        venues = [v for v in VENUES if v not in extra_endpoints]
    sim, endpoints = run.start_sim(control_port=control, symbols=symbols, venues=venues)
    endpoints.update(extra_endpoints or {})
    port = free_port()
    data_dir = run.directory / "data"
    server = run.start_server(sections(endpoints, data_dir, **(overrides or {})), port=port, name=name)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, timeout=90)
    with Sampler(base, server.proc.pid, every) as sampler:
        sampler.take()
        yield Stack(run, server, sim, base, f"ws://127.0.0.1:{port}/feed", control, data_dir, sampler)


def _finish_loadgens(loadgens: list[tuple[Child, Path]], timeout: float = 60.0) -> dict[str, Any]:
    for child, _ in loadgens:
        wait_exit(child, timeout)
    return collect(path for _, path in loadgens if path.exists())


# -- soak ------------------------------------------------------------------------------


def soak(out: Path, *, minutes: float = 10.0, sessions: int = 1000, loadgens: int = 2,
         every: float = 10.0) -> dict[str, Any]:
    """1000 feed sessions against the eight simulated venues; RSS flat after warm-up."""
    seconds = minutes * 60
    with Run(out / "soak") as run, stack(run, every=every, overrides={"feed": {"max_sessions": sessions}}) as st:
        gens = run.start_loadgens(st.url, sessions=sessions, processes=loadgens, seconds=seconds,
                                  topics=SOAK_TOPICS, reconnect=True)
        time.sleep(seconds + 3)
        clients = _finish_loadgens(gens)
        st.sampler.take()
        code, exit_s = terminate(st.server)
    # judged while the sessions are up (the last sample is taken after the clients left)
    samples = [s for s in st.sampler.samples if s["sessions"] >= 0.95 * sessions] or st.sampler.samples
    warm = min(max(60.0, seconds / 3), seconds / 2)
    rss_slope = slope_per_min(samples, "rss_mb", warm)
    after = [s for s in samples if s["t"] >= warm]
    peak_sessions = max(s["sessions"] for s in samples)
    tasks_after = [s["tasks"] for s in after]
    objs_slope = slope_per_min(samples, "gc_objects", warm)
    fast = clients.get("fast", {})
    rss_rise = after[-1]["rss_mb"] - after[0]["rss_mb"] if after else float("nan")
    return {
        "name": "soak", "title": f"Soak: {sessions} feed sessions, 8 simulated venues, {minutes:g} min",
        "params": {"minutes": minutes, "sessions": sessions, "loadgens": loadgens, "topics": SOAK_TOPICS},
        "criteria": [
            criterion(f"{sessions} sessions held", f"peak {peak_sessions} at once", peak_sessions >= sessions),
            criterion("RSS slope ~ 0 after warm-up (|slope| <= 0.5 MB/min after "
                      f"{warm:.0f} s)", f"{rss_slope:+.3f} MB/min ({rss_rise:+.1f} MB from "
                      f"{after[0]['rss_mb']:.1f} to {after[-1]['rss_mb']:.1f} MB)",
                      abs(rss_slope) <= 0.5),
            criterion("task count flat after warm-up (spread <= 2 % of sessions)",
                      f"{min(tasks_after)}..{max(tasks_after)}",
                      max(tasks_after) - min(tasks_after) <= max(10, sessions // 50)),
            criterion("SIGTERM -> exit 0 within 5 s", f"exit {code} in {exit_s:.2f} s",
                      code == 0 and exit_s <= 5.0),
        ],
        "figures": {"rss_slope_mb_per_min": rss_slope, "gc_objects_slope_per_min": objs_slope,
                    # where RSS moved, if it did: glibc's heap in use, and free but held
                    **{f"{key[:-3]}_slope_mb_per_min": slope_per_min(samples, key, warm)
                       for key in ("malloc_in_use_mb", "malloc_free_mb", "anon_mb")
                       if all(key in s for s in samples)},
                    "heap_trim": (st.sampler.last_doc or {}).get("process", {}).get("heap_trim"),
                    "rss_after_clients_left_mb": st.sampler.samples[-1]["rss_mb"],
                    "clients": clients, "exit_code": code, "exit_s": exit_s,
                    "fast_latency_ms": fast.get("latency_ms")},
        "samples": st.sampler.samples,
    }


# -- virtual-time soak ------------------------------------------------------------------


def virtual(out: Path, *, hours: int = 24) -> dict[str, Any]:
    """24 simulated hours on an autojump clock: task and object counts flat."""
    directory = out / "virtual"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    data_dir = directory / "data"

    def show(s: Any) -> None:
        print(f"hour {s.hour:3d} tasks={s.tasks} objects={s.gc_objects} rss={s.rss_mb} MB "
              f"series={s.series} reconnects={s.reconnects} wall={s.wall_s} s", flush=True)

    async def main() -> Any:
        return await simulate(data_dir, hours=hours, on_hour=show)

    day = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    rows = [dataclasses.asdict(s) for s in day.samples]
    later = rows[2:]
    tasks = [r["tasks"] for r in later]
    objects = [r["gc_objects"] for r in later]
    obj_slope = slope_per_min([{"t": r["hour"] * 60.0, "v": r["gc_objects"]} for r in later], "v", 0.0)
    return {
        "name": "virtual", "title": f"Virtual-time soak: {hours} simulated hours (autojump clock)",
        "params": {"hours": hours},
        "criteria": [
            criterion("task count flat after hour 2 (spread <= 10: a connector between phases)",
                      f"{min(tasks)}..{max(tasks)}", max(tasks) - min(tasks) <= 10),
            criterion("GC-tracked objects flat after hour 2 (spread < 3,000, slope ~ 0)",
                      f"{min(objects)}..{max(objects)}, {obj_slope:+.0f} objects/hour",
                      max(objects) - min(objects) < 3000),
            criterion("every task ends at shutdown", f"{day.tasks_before} before, {day.tasks_after} after",
                      day.tasks_after == day.tasks_before),
            criterion("hourly refreshes and reconnects ran", f"{day.refreshes} refreshes, "
                      f"{day.reconnects} reconnects", day.refreshes >= hours and day.reconnects > 0),
        ],
        "figures": {"wall_s": rows[-1]["wall_s"], "refreshes": day.refreshes, "reconnects": day.reconnects},
        "samples": [{"t": r["hour"] * 3600.0, **r} for r in rows],
    }


# -- reconnect storm --------------------------------------------------------------------


def storm(out: Path, *, minutes: float = 10.0, drops_per_min: float = 100.0, sessions: int = 100,
          every: float = 10.0) -> dict[str, Any]:
    """Venues drop our connections ``drops_per_min`` times a minute."""
    seconds = minutes * 60
    rng = random.Random(11)
    drops = 0
    with Run(out / "storm") as run, stack(run, every=every) as st:
        venues = sorted(st.sampler.last_doc["venues"]) if st.sampler.last_doc else []
        settle = 45.0  # longer than backoff_max_s (30 s): the storm drives backoffs to the cap
        gens = run.start_loadgens(st.url, sessions=sessions, processes=1, seconds=seconds + settle + 15,
                                  topics=SOAK_TOPICS, reconnect=True)
        before = _sim_status(st.control_port)
        started = time.monotonic()
        interval = 60.0 / drops_per_min
        while time.monotonic() - started < seconds:
            answer = sim_command(st.control_port, f"drop {rng.choice(venues)}")
            drops += answer.startswith("ok")
            time.sleep(max(0.0, started + drops * interval - time.monotonic()))
        storm_end = time.monotonic() - st.sampler.started
        time.sleep(settle)  # let the last reconnects (after capped backoffs) settle
        final = st.sampler.take()
        after = _sim_status(st.control_port)
        clients = _finish_loadgens(gens)
        code, exit_s = terminate(st.server)
    # Counts are judged during the storm only: after it every venue is connected again
    # and holds more tasks than the storm's average, which would read as growth.
    samples = [s for s in st.sampler.samples
               if s["sessions"] >= 0.95 * sessions and s["t"] <= storm_end] or st.sampler.samples
    warm = min(60.0, seconds / 2)
    settled = [s for s in samples if s["t"] >= warm]
    tasks = [s["tasks"] for s in settled]
    task_slope = slope_per_min(samples, "tasks", warm)
    obj_slope = slope_per_min(samples, "gc_objects", warm)
    rss_slope = slope_per_min(samples, "rss_mb", warm)
    dups = sum(v["duplicate_subscriptions"] for v in after.values()) - sum(
        v["duplicate_subscriptions"] for v in before.values())
    accepted = sum(v["connections_accepted"] for v in after.values()) - sum(
        v["connections_accepted"] for v in before.values())
    open_end = sum(v["connections_open"] for v in after.values())
    open_start = sum(v["connections_open"] for v in before.values())
    assert final is not None
    return {
        "name": "storm", "title": f"Reconnect storm: {drops_per_min:g} drops a minute for {minutes:g} min",
        "params": {"minutes": minutes, "drops_per_min": drops_per_min, "sessions": sessions},
        "criteria": [
            criterion(f"drops delivered ({drops_per_min:g}/min)", f"{drops} drops, {accepted} reconnections "
                      "accepted by the venues", drops >= minutes * drops_per_min * 0.95),
            criterion("task count flat (slope ~ 0 after warm-up)",
                      f"{min(tasks)}..{max(tasks)}, slope {task_slope:+.2f}/min", abs(task_slope) < 1.0),
            criterion("GC-tracked objects flat (slope < 0.1 %/min of the level)",
                      f"slope {obj_slope:+.0f}/min at ~{settled[-1]['gc_objects']:,}",
                      abs(obj_slope) < 0.001 * settled[-1]["gc_objects"]),
            criterion("no duplicate subscriptions (simulator's count)", f"{dups}", dups == 0),
            criterion("no growth of registries: open venue connections back to the start",
                      f"{open_start} at start, {open_end} at end; hub topics "
                      f"{settled[0]['hub_topics']} -> {final['hub_topics']}",
                      open_end == open_start and final["hub_topics"] <= settled[0]["hub_topics"] + 5),
            criterion("every venue connected again at the end", f"{final['connected_venues']} of "
                      f"{len(venues)}", final["connected_venues"] == len(venues)),
            criterion("SIGTERM -> exit 0 within 5 s", f"exit {code} in {exit_s:.2f} s",
                      code == 0 and exit_s <= 5.0),
        ],
        "figures": {"drops": drops, "accepted": accepted, "rss_slope_mb_per_min": rss_slope,
                    "reconnects_seen": final["reconnects"], "clients": clients},
        "samples": st.sampler.samples,
    }


def _sim_status(port: int) -> dict[str, dict[str, Any]]:
    answer = sim_command(port, "status")
    doc: dict[str, dict[str, Any]] = json.loads(answer.removeprefix("ok "))["venues"]
    return doc


# -- slow clients -----------------------------------------------------------------------


def slow(out: Path, *, minutes: float = 3.0, sessions: int = 500, every: float = 5.0) -> dict[str, Any]:
    """10 % of sessions read with 500 ms latency, 5 % never read: fast ones unaffected."""
    seconds = minutes * 60
    n_slow, n_never = sessions // 10, sessions // 20
    n_fast = sessions - n_slow - n_never
    runs: dict[str, Any] = {}
    all_samples: dict[str, list[dict[str, Any]]] = {}
    for label, k_slow, k_never in (("baseline", 0, 0), ("with_slow", n_slow, n_never)):
        with Run(out / f"slow-{label}") as run, stack(run, every=every) as st:
            gens = run.start_loadgens(st.url, sessions=n_fast + k_slow + k_never, processes=2,
                                      seconds=seconds, slow=k_slow, never=k_never, topics=SOAK_TOPICS,
                                      tag=label)
            time.sleep(seconds + 3)
            runs[label] = _finish_loadgens(gens)
            st.sampler.take()
            terminate(st.server)
        all_samples[label] = st.sampler.samples
    base = runs["baseline"]["fast"]["latency_ms"]
    with_slow = runs["with_slow"]
    fast = with_slow["fast"]["latency_ms"]
    slow_k, never_k = with_slow.get("slow", {}), with_slow.get("never", {})
    # A session that does not read cannot see its close frame: the server's counters say
    # how each slow one ended (4001 for an outbox lagging too long or a send timing out;
    # a TCP abort, counted in stalled_sends, once its socket took over send_timeout_s to
    # accept bytes: docs/feed-protocol.md §3).
    end = all_samples["with_slow"][-1]
    closed = {k: end.get(k, 0) - all_samples["with_slow"][0].get(k, 0)
              for k in ("closed_lagging", "closed_send_timeout", "closed_heartbeat", "stalled_sends")}
    # With batched messages a client reading every 0.5 s takes everything pending per
    # read (up to 64 KiB), which can keep up: then it has no gap to be resynced for.
    slow_handled = (slow_k.get("resyncs", 0) + slow_k.get("closes", {}).get("4001", 0) > 0
                    or (slow_k.get("gaps", 0) == 0 and slow_k.get("frames", 0) > 0))
    never_closed = sum(closed.values())
    ratio = fast["p99"] / base["p99"] if base["p99"] else float("nan")
    return {
        "name": "slow", "title": f"Slow clients: {sessions} sessions, {n_slow} read every 0.5 s, "
                                 f"{n_never} never read",
        "params": {"minutes": minutes, "sessions": sessions, "slow": n_slow, "never": n_never},
        "criteria": [
            criterion("fast sessions' p99 delivery latency within 10 % of a run without slow ones",
                      f"{fast['p99']} ms vs {base['p99']} ms (x{ratio:.2f}); p50 {fast['p50']} vs "
                      f"{base['p50']} ms", ratio <= 1.10),
            criterion("fast sessions lose nothing (no sequence gaps, no resyncs)",
                      f"{with_slow['fast']['gaps']} gaps, {with_slow['fast']['resyncs']} resyncs",
                      with_slow["fast"]["gaps"] == 0 and with_slow["fast"]["resyncs"] == 0),
            criterion("slow sessions lose nothing unannounced: each gap answered by a resync "
                      "snapshot, or closed (4001) as documented, or no gap at all",
                      f"{slow_k.get('resyncs', 0)} resyncs, {slow_k.get('gaps', 0)} gaps, closes "
                      f"{slow_k.get('closes', {})}, {slow_k.get('frames', 0):,} frames", slow_handled),
            criterion("sessions that never read are closed (4001) or cut (stalled send)",
                      f"server closed {closed} "
                      f"(never-reading sessions: {n_never}; closes the clients saw: "
                      f"{never_k.get('closes', {})})", never_closed >= n_never),
        ],
        "figures": {"runs": runs},
        "samples": all_samples["with_slow"],
        "baseline_samples": all_samples["baseline"],
    }


# -- overload ---------------------------------------------------------------------------


def overload(out: Path, *, normal_rate: float = 2000.0, overload_rate: float = 150_000.0,
             phases: str = "60,120,120", sessions: int = 100, every: float = 5.0) -> dict[str, Any]:
    """The flooding Binance offers ~10x what the pipeline takes, then load returns to normal.

    ``phases``: seconds of normal load, of overload, and of normal load again.
    """
    a, b, c = (float(x) for x in phases.split(","))
    phases_s = (a, b, c)
    profile = ",".join(f"{s:g}:{r:g}" for s, r in zip(phases_s, (normal_rate, overload_rate, normal_rate),
                                                       strict=True))
    with Run(out / "overload") as run:
        flood_out = run.directory / "flood.json"
        flood = run.spawn("flood", ["-m", "bench.flood", "--profile", profile, "--out", str(flood_out)],
                          stdout=subprocess.PIPE)
        flood_endpoints = run.endpoints_of(flood)
        t0 = time.monotonic()
        with stack(run, every=every, extra_endpoints=flood_endpoints,
                   overrides={"venues.binance": {"subscribe_trades": False}}) as st:
            gens = run.start_loadgens(st.url, sessions=sessions, processes=1, seconds=sum(phases_s),
                                      topics=SOAK_TOPICS, reconnect=True)
            offset = time.monotonic() - t0  # flood phases started before the server was up
            deadline = t0 + sum(phases_s) + 2
            while not flood_out.exists() and time.monotonic() < deadline + 30:
                time.sleep(max(0.5, deadline - time.monotonic()))
            final = st.sampler.take()
            clients = _finish_loadgens(gens, timeout=30)
            code, exit_s = terminate(st.server)
    flood_doc = json.loads(flood_out.read_text())
    samples = st.sampler.samples
    budget = samples[-1]["budget_mb"]
    bounds = [offset, phases_s[0], phases_s[0] + phases_s[1], sum(phases_s)]
    for s in samples:
        flood_t = s["t"] + offset
        s["phase"] = 0 if flood_t < bounds[1] else 1 if flood_t < bounds[2] else 2
    over = [s for s in samples if s["phase"] == 1]
    rec = [s for s in samples if s["phase"] == 2]
    processed = _rate(over, "messages")
    offered = flood_doc["phases"][1]["offered"] / phases_s[1]
    edges: dict[str, dict[str, int]] = {}
    if over:
        first, last = over[0]["edges"], (rec[0] if rec else over[-1])["edges"]
        for name, e in last.items():
            d = {k: e[k] - first.get(name, {}).get(k, 0) for k in ("dropped", "conflated")}
            if d["dropped"] or d["conflated"]:
                edges[name] = d
    tail = rec[-6:] if len(rec) >= 6 else rec
    normal = [s for s in samples if s["phase"] == 0]
    lag_normal = max((s["lag_p99_ms"] for s in normal), default=float("nan"))
    lag_tail = max((s["lag_p99_ms"] for s in tail), default=float("nan"))
    assert final is not None
    return {
        "name": "overload", "title": "Overload: one venue floods ~10x what the pipeline takes, then calms",
        "params": {"profile": profile, "sessions": sessions},
        "criteria": [
            criterion("offered >= 10x what the pipeline took", f"offered {offered:,.0f}/s, taken "
                      f"{processed:,.0f} messages/s (x{offered / processed if processed else 0:.1f})",
                      processed > 0 and offered >= 10 * processed),
            criterion("RSS stays under the computed budget", f"max {max(s['rss_mb'] for s in samples):.1f} "
                      f"MB, budget {budget:.0f} MB", max(s["rss_mb"] for s in samples) < budget),
            criterion("drops counted per edge", ", ".join(f"{k}: {v}" for k, v in edges.items()) or "none",
                      bool(edges)),
            criterion("recovers: every venue connected, loop lag p99 back under 2x its "
                      "pre-overload level in the last 30 s", f"{final['connected_venues']} venues; lag p99 "
                      f"{lag_tail:.1f} ms vs {lag_normal:.1f} ms before",
                      final["connected_venues"] == 8 and lag_tail <= 2 * max(lag_normal, 10.0)),
            criterion("SIGTERM -> exit 0 within 5 s", f"exit {code} in {exit_s:.2f} s",
                      code == 0 and exit_s <= 5.0),
        ],
        "figures": {"flood": flood_doc, "taken_per_s": processed, "offered_per_s": offered,
                    "edges": edges, "clients": clients},
        "samples": samples,
    }


def _rate(samples: list[dict[str, Any]], key: str) -> float:
    if len(samples) < 2:
        return 0.0
    return float((samples[-1][key] - samples[0][key]) / (samples[-1]["t"] - samples[0]["t"]))


# -- graceful shutdown and crash --------------------------------------------------------


def _files(data_dir: Path, stream: str) -> list[Path]:
    """Every live data file of ``stream`` (the recorder's reading rule, every hour)."""
    return [f for _hour, hour_dir in hour_dirs(data_dir, stream) for f in hour_files(hour_dir)[0]]


def _rows_on_disk(data_dir: Path) -> dict[str, int]:
    out = {}
    for stream in ("quotes", "trades", "opportunities"):
        files = _files(data_dir, stream)
        out[stream] = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return out


def _stopped_line(log: Path) -> dict[str, Any] | None:
    for line in log.read_text(errors="replace").splitlines():
        if "recorder: stopped; rows written" in line:
            written = line.split("rows written ", 1)[1].split(",")
            counts = {}
            for part in written:
                if "=" in part:
                    k, v = part.strip().split("=")
                    counts[k] = int(v)
            abandoned = int(line.split("abandoned ")[1].split(",")[0])
            return {"written": counts, "abandoned": abandoned}
    return None


def shutdown(out: Path, *, seconds: float = 60.0, sessions: int = 1000, every: float = 5.0) -> dict[str, Any]:
    """SIGTERM under full load (8 venues, 1000 sessions): exit 0 within 5 s, nothing lost."""
    with Run(out / "shutdown") as run, stack(run, every=every, overrides={"feed": {"max_sessions": sessions}}) as st:
        gens = run.start_loadgens(st.url, sessions=sessions, processes=2, seconds=seconds + 30,
                                  topics=SOAK_TOPICS, reconnect=True)
        time.sleep(seconds)
        under = st.sampler.take()
        code, exit_s = terminate(st.server, timeout=30)
        clients = _finish_loadgens(gens, timeout=60)
    stopped = _stopped_line(st.server.log)
    disk = _rows_on_disk(st.data_dir)
    written = stopped["written"] if stopped else {}
    assert under is not None
    return {
        "name": "shutdown", "title": f"Graceful shutdown under full load ({sessions} sessions, 8 venues)",
        "params": {"seconds": seconds, "sessions": sessions},
        "criteria": [
            criterion("under full load when stopped", f"{under['sessions']} sessions, "
                      f"{under['connected_venues']} venues, {under['buffered_rows']} rows buffered",
                      under["sessions"] >= sessions * 0.95 and under["connected_venues"] == 8),
            criterion("SIGTERM -> exit 0 within 5 s", f"exit {code} in {exit_s:.2f} s",
                      code == 0 and exit_s <= 5.0),
            criterion("nothing buffered lost: the recorder abandoned 0 rows and every row it wrote is "
                      "on disk", f"abandoned {stopped['abandoned'] if stopped else '?'}; written "
                      f"{written}; on disk {disk}",
                      stopped is not None and stopped["abandoned"] == 0 and all(
                          disk.get(k, 0) == v for k, v in written.items())),
        ],
        "figures": {"exit_code": code, "exit_s": exit_s, "written": written, "on_disk": disk,
                    "clients": clients},
        "samples": st.sampler.samples,
    }


def crash(out: Path, *, seconds: float = 60.0, sessions: int = 200, every: float = 5.0,
          rounds: int = 3) -> dict[str, Any]:
    """SIGKILL under load, restart: data lost <= the recorder's flush interval."""
    flush_s = 1.0
    losses: list[float] = []
    restarts: list[float] = []
    kills: list[int] = []
    with Run(out / "crash") as run:
        control = free_port()
        _sim, endpoints = run.start_sim(control_port=control)
        data_dir = run.directory / "data"
        conf = sections(endpoints, data_dir, recorder={"flush_interval_s": flush_s})
        samples: list[dict[str, Any]] = []
        for i in range(rounds):
            port = free_port()
            server = run.start_server(conf, port=port, name=f"server-{i}")
            base = f"http://127.0.0.1:{port}"
            t_start = time.monotonic()
            wait_healthy(base, timeout=90)
            restarts.append(time.monotonic() - t_start)
            gens = run.start_loadgens(f"ws://127.0.0.1:{port}/feed", sessions=sessions, processes=1,
                                      seconds=seconds + 10, topics=SOAK_TOPICS, tag=f"load-{i}")
            with Sampler(base, server.proc.pid, every) as sampler:
                time.sleep(seconds)
            samples.extend({**s, "t": s["t"] + i * (seconds + 10)} for s in sampler.samples)
            kills.append(time.time_ns())
            server.proc.kill()
            server.proc.wait()
            for child, _ in gens:
                child.proc.kill()
        # a last start recovers what the kills left, then stops cleanly
        port = free_port()
        server = run.start_server(conf, port=port, name="server-final")
        wait_healthy(f"http://127.0.0.1:{port}", timeout=90)
        code, exit_s = terminate(server)
    table = ds.dataset(_files(data_dir, "quotes"), format="parquet").to_table(
        columns=["recv_ts"])
    recv = sorted(table.column("recv_ts").cast("int64").to_pylist())
    for kill_ns in kills:
        i = bisect.bisect_right(recv, kill_ns)
        last = recv[i - 1] if i else 0
        losses.append((kill_ns - last) / 1e9)
    temp_left = list(data_dir.rglob("*.parquet.tmp"))
    return {
        "name": "crash", "title": f"Crash: SIGKILL under load ({sessions} sessions, 8 venues), restart; "
                                  f"{rounds} rounds",
        "params": {"seconds": seconds, "sessions": sessions, "rounds": rounds, "flush_interval_s": flush_s},
        "criteria": [
            criterion(f"data lost per kill <= the flush interval ({flush_s:g} s)",
                      ", ".join(f"{x:.2f} s" for x in losses), all(x <= flush_s for x in losses)),
            criterion("restart is healthy and every file readable", f"restarts healthy in "
                      f"{', '.join(f'{x:.1f}' for x in restarts)} s; {len(recv):,} quote rows read",
                      len(recv) > 0 and len(restarts) == rounds),
            criterion("no temporary file left after recovery", f"{len(temp_left)} left", not temp_left),
            criterion("the final start stops cleanly (exit 0 within 5 s)", f"exit {code} in {exit_s:.2f} s",
                      code == 0 and exit_s <= 5.0),
        ],
        "figures": {"losses_s": losses, "restart_s": restarts, "rows": len(recv)},
        "samples": samples,
    }


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {"soak": soak, "virtual": virtual, "storm": storm, "slow": slow, "overload": overload,
             "shutdown": shutdown, "crash": crash}
