"""The parts every bench scenario is built from: child processes and a /health sampler.

Each scenario runs the real program (``python -m app.cli run --config <generated>``)
against the simulated venues (``python -m app.sim``, its own process, with a control
port for faults) and, where it needs them, feed load generators (``python -m
bench.loadgen``) and the flooding venue (``python -m bench.flood``), every one a child
process on loopback. :class:`Run` owns them: whatever happens, leaving its ``with``
block kills what is still alive, so a failed scenario leaves nothing running.

:class:`Sampler` polls ``/health?objects=1`` from a thread every few seconds and keeps
one flat dict per sample (RSS, tasks, GC-tracked objects, loop lag, CPU share from
psutil, sessions, resyncs, per-edge depth and drops, venue counters, recorder rows).
Servers started by :meth:`Run.start_server` carry the bench-only memory probe
(``app/memprobe.py``); the sampler's ``?peek=1`` on it splits the RSS into glibc's heap
in use and free-but-held, its mmapped chunks and pyarrow's pool, without collecting or
trimming anything, and ``/proc/<pid>/smaps_rollup`` gives the anonymous share.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

from app.sim.server import VENUES
from bench.loadgen import HISTOGRAMS, KINDS, Histogram

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def save_perf(result: dict[str, Any], module: str, argv: list[str], path: Path,
              table: Callable[[dict[str, Any]], str]) -> None:
    """Stamp a perf bench's result with the machine, the command and the time, write it
    to ``path`` (bench/results/<name>.json, which ``python -m bench report`` renders) and
    print its table."""
    result["machine"] = machine()
    result["command"] = f"python -m {module} " + " ".join(shlex.quote(a) for a in argv)
    result["when"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(table(result))


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    freq = psutil.cpu_freq()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "cpu": model, "mhz": round(freq.current) if freq else None,
            "python": sys.version.split()[0]}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """A config.toml of ``sections`` (``{"feed": {...}, "venues.binance": {...}}``)."""
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in keys.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def venue_sections(endpoints: Mapping[str, Mapping[str, str]],
                   extra: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``[venues.<name>]`` sections: the given endpoints enabled, every other venue off."""
    out: dict[str, dict[str, Any]] = {}
    for name in VENUES:
        if name in endpoints:
            out[f"venues.{name}"] = {"enabled": True, "rest_url": endpoints[name]["rest_url"],
                                     "ws_url": endpoints[name]["ws_url"], **(extra or {})}
        else:
            out[f"venues.{name}"] = {"enabled": False}
    return out


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Run:
    """A scenario's working directory and child processes (killed on exit)."""

    directory: Path
    children: list[Child] = field(default_factory=list)

    def __enter__(self) -> Run:
        # a scenario's working files are its own: an earlier run's data must not count
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        return self

    def __exit__(self, *exc: object) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait(timeout=10)

    def spawn(self, name: str, args: list[str], *, stdout: int | IO[bytes] | None = None,
              stdin: int | None = None, env: Mapping[str, str] | None = None) -> Child:
        log = self.directory / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdin=stdin, stdout=stdout,
            stderr=log.open("wb"), env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def endpoints_of(self, child: Child, timeout: float = 60.0) -> dict[str, dict[str, str]]:
        """The JSON line of endpoints a simulator or flood child prints once listening."""
        assert child.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} did not report its endpoints; see {child.log}")
            line += child.proc.stdout.readline()
        doc: dict[str, dict[str, str]] = json.loads(line)
        return doc

    def start_sim(self, *, venues: Iterable[str] | None = None, control_port: int | None = None,
                  symbols: int | None = None, seed: int = 7) -> tuple[Child, dict[str, dict[str, str]]]:
        args = ["-m", "app.sim", "--seed", str(seed)]
        if venues is not None:
            args += ["--venues", ",".join(venues)]
        if control_port is not None:
            args += ["--control-port", str(control_port)]
        if symbols is not None:
            args += ["--symbols", str(symbols)]
        child = self.spawn("sim", args, stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        return child, self.endpoints_of(child)

    def start_server(self, sections: Mapping[str, Mapping[str, Any]], *, port: int,
                     name: str = "server") -> Child:
        config = write_config(self.directory / f"{name}.toml", sections)
        # the probe only answers when asked; ``?peek=1`` collects and trims nothing
        return self.spawn(name, ["-m", "app.cli", "run", "--config", str(config), "--port", str(port),
                                 "--log-level", "INFO"], env={"SPREADWATCH_MEMPROBE": "rss"})

    def start_loadgens(self, url: str, *, sessions: int, processes: int, seconds: float,
                       slow: int = 0, never: int = 0, topics: str | None = None,
                       reconnect: bool = False, tag: str = "load",
                       extra: list[str] | None = None) -> list[tuple[Child, Path]]:
        """``sessions`` split over ``processes`` load generators (slow/never ones too)."""
        out = []
        for i in range(processes):
            share = sessions // processes + (1 if i < sessions % processes else 0)
            slow_i = slow // processes + (1 if i < slow % processes else 0)
            never_i = never // processes + (1 if i < never % processes else 0)
            path = self.directory / f"{tag}-{i}.json"
            args = ["-m", "bench.loadgen", "--url", url, "--sessions", str(share), "--seconds", str(seconds),
                    "--slow", str(slow_i), "--never", str(never_i), "--out", str(path)]
            if topics is not None:
                args += ["--topics", topics]
            if reconnect:
                args.append("--reconnect")
            args += extra or []
            out.append((self.spawn(f"{tag}-{i}", args), path))
        return out


def wait_healthy(base: str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until /health answers with every venue connected; return that document."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(base + "/health", timeout=5)
            last = r.json()
            if all(v["connected"] for v in last["venues"].values()) and last["venues"]:
                return dict(last)
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(1.0)
    raise RuntimeError(f"{base} did not become healthy in {timeout:.0f} s; last: {str(last)[:500]}")


def wait_exit(child: Child, timeout: float) -> tuple[int | None, float]:
    """(exit code or None if still running, seconds waited)."""
    started = time.monotonic()
    try:
        code = child.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - started
    return code, time.monotonic() - started


def terminate(child: Child, timeout: float = 15.0) -> tuple[int | None, float]:
    child.proc.send_signal(signal.SIGTERM)
    return wait_exit(child, timeout)


def sim_command(port: int, line: str) -> str:
    """Send one command to the simulator's control port; return its answer line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.decode().strip()


def flatten(doc: Mapping[str, Any], t: float, cpu_pct: float) -> dict[str, Any]:
    """One sample: the /health figures the scenarios plot and judge."""
    process = doc["process"]
    hub = doc["hub"]
    venues = doc["venues"].values()
    recorder = doc.get("recorder") or {}
    edges: dict[str, dict[str, int]] = {}
    for edge in doc["channels"]:
        agg = edges.setdefault(edge["name"], {"used": 0, "capacity": 0, "dropped": 0, "conflated": 0,
                                              "delivered": 0})
        for key in agg:
            agg[key] += edge[key]
    return {
        "t": round(t, 2),
        "rss_mb": process["rss_mb"],
        "budget_mb": process["budget_mb"],
        "tasks": process["tasks"],
        "gc_objects": process.get("gc_objects"),
        "lag_last_ms": process["loop_lag"]["last_ms"],
        "lag_p99_ms": process["loop_lag"]["p99_ms"],
        "lag_max_ms": process["loop_lag"]["max_ms"],
        "arrow_pool": (process.get("heap_trim") or {}).get("arrow_pool"),
        "cpu_pct": round(cpu_pct, 1),
        "sessions": doc["sessions"]["count"],
        "lagging": doc["sessions"]["lagging"],
        "refused": doc["sessions"]["refused"],
        "closed_lagging": doc["sessions"].get("closed_lagging", 0),
        "closed_send_timeout": doc["sessions"].get("closed_send_timeout", 0),
        "closed_heartbeat": doc["sessions"].get("closed_heartbeat", 0),
        "stalled_sends": doc["sessions"].get("stalled_sends", 0),
        "resyncs": hub["resyncs"],
        "frames_offered": hub["frames_offered"],
        "frames_dropped": hub["frames_dropped"],
        "hub_topics": hub["topics"],
        "hub_subscriptions": hub["subscriptions"],
        "quotes": sum(v["quotes"] for v in venues),
        "messages": sum(v["messages"] for v in venues),
        "reconnects": sum(v["reconnects"] for v in venues),
        "open_connections": sum(c["open_connections"] for v in venues for c in v["detail"]),
        "connected_venues": sum(1 for v in venues if v["connected"]),
        "bad_frames": sum(v["bad_frames"] for v in venues),
        "rows_written": sum((recorder.get("rows_written") or {}).values()),
        "buffered_rows": recorder.get("buffered_rows", 0),
        "series": doc["windows"]["series"],
        "actors": len(doc["actors"]),
        "actors_running": sum(1 for a in doc["actors"] if a["state"] == "running"),
        "edges": edges,
    }


def anon_mb(pid: int | str = "self") -> float | None:
    """A process's anonymous RSS in MB (``/proc/<pid>/smaps_rollup``); None off Linux."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


class Sampler:
    """Samples ``/health?objects=1`` every ``every`` seconds from a thread."""

    def __init__(self, base: str, pid: int, every: float) -> None:
        self.base = base
        self.every = every
        self.process = psutil.Process(pid)
        self.samples: list[dict[str, Any]] = []
        self.errors = 0
        self.last_doc: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> Sampler:
        self.process.cpu_percent(None)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def take(self) -> dict[str, Any] | None:
        try:
            r = httpx.get(self.base + "/health?objects=1", timeout=10)
            doc = r.json()
            cpu = self.process.cpu_percent(None)
        except (httpx.TransportError, ValueError, psutil.Error):
            self.errors += 1
            return None
        self.last_doc = doc
        sample = flatten(doc, time.monotonic() - self.started, cpu)
        sample.update(self._memory())
        self.samples.append(sample)
        return sample

    def _memory(self) -> dict[str, float]:
        """The RSS's split (MB), as far as the probe and the kernel tell it; {} if neither."""
        mb = 1 / 2**20
        out: dict[str, float] = {}
        anon = anon_mb(self.process.pid)
        if anon is not None:
            out["anon_mb"] = anon
        try:
            doc = httpx.get(self.base + "/debug/memory?peek=1", timeout=10).json()
        except (httpx.TransportError, ValueError):
            return out
        malloc = doc.get("malloc") or {}
        arrow = doc.get("arrow") or {}
        for key, name in (("in_use", "malloc_in_use_mb"), ("free_held", "malloc_free_mb"),
                          ("mmapped", "malloc_mmap_mb")):
            if key in malloc:
                out[name] = round(malloc[key] * mb, 1)
        if "allocated" in arrow:
            out["arrow_mb"] = round(arrow["allocated"] * mb, 1)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            sample = self.take()
            if sample is not None:
                print(_line(sample), flush=True)


def _line(s: Mapping[str, Any]) -> str:
    return (f"t={s['t']:6.0f}s rss={s['rss_mb']:6.1f}MB tasks={s['tasks']:5d} objs={s['gc_objects'] or 0:8d} "
            f"lag99={s['lag_p99_ms']:7.1f}ms cpu={s['cpu_pct']:5.1f}% sess={s['sessions']:4d} "
            f"lagging={s['lagging']:3d} resyncs={s['resyncs']:6d} quotes={s['quotes']:9d} "
            f"reconn={s['reconnects']:5d}"
            + "".join(f" {label}={s[key]:.1f}" for key, label in (
                ("anon_mb", "anon"), ("malloc_in_use_mb", "m_use"), ("malloc_free_mb", "m_free"),
                ("malloc_mmap_mb", "m_mmap"), ("arrow_mb", "arrow")) if key in s))


def collect(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Merge the load generators' JSON results per session kind."""
    merged: dict[str, dict[str, Any]] = {}
    for path in paths:
        doc = json.loads(path.read_text())
        for kind, stats in doc["kinds"].items():
            into = merged.setdefault(kind, {**{h: Histogram() for h in HISTOGRAMS}, "closes": {}})
            for key, value in stats.items():
                if key in HISTOGRAMS:
                    into[key].merge(Histogram.from_json(value))
                elif key == "closes":
                    for code, n in value.items():
                        into["closes"][code] = into["closes"].get(code, 0) + n
                else:
                    into[key] = into.get(key, 0) + value
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        if kind not in merged or not merged[kind].get("sessions"):
            continue
        m = merged[kind]
        lat: Histogram = m.pop("latency")
        age: Histogram = m.pop("quote_age")
        in_server: Histogram = m.pop("quote_server")
        m["latency_ms"] = {"p50": lat.quantile(0.5), "p90": lat.quantile(0.9), "p99": lat.quantile(0.99),
                           "max": round(lat.max_ms, 1), "count": lat.count}
        m["quote_age_ms"] = {"p50": age.quantile(0.5), "p99": age.quantile(0.99), "count": age.count}
        m["quote_server_ms"] = {"p50": in_server.quantile(0.5), "p99": in_server.quantile(0.99),
                                "count": in_server.count}
        out[kind] = m
    return out


def slope_per_min(samples: list[dict[str, Any]], key: str, after_s: float) -> float:
    """Least-squares slope of ``key`` per minute over samples taken after ``after_s``."""
    pts = [(s["t"], s[key]) for s in samples if s["t"] >= after_s and s[key] is not None]
    if len(pts) < 3:
        return float("nan")
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    if var == 0:
        return 0.0
    return float(sum((t - mt) * (v - mv) for t, v in pts) / var * 60.0)
