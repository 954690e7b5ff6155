"""The scale-out roles as separate OS processes, joined by a real nats-server on loopback:
two ``spreadwatch ingest`` (disjoint venues, each with its own simulated venues), two
``spreadwatch serve``, one ``spreadwatch record``; then processes are killed, NATS is
restarted and the recorder is stopped and started again, and the rest must keep working.

tests/test_roles.py runs the same roles in one trio run. Here every process is started
as a user would (``python -m app.cli ROLE ...``), its output goes to a file under
``tmp_path`` (quoted in every assertion message), and every process is killed (its whole
process group: an ingest's simulator too) when the test ends, whatever happened.

What is checked is what a user sees: ``/health`` of each serve (venues, ``nats.client``,
``nats.peers`` with each peer's announced ``stats``), frames of the msgpack ``/feed``
read with the project's reference client (app/tail.py), the final counts an ingest logs
when it stops, and the Parquet files under the recorder's data directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.dataset as ds
import pytest
import trio

from actors.recorder import hour_dirs, hour_files
from app.tail import open_feed
from tests import nats_server as nats_server_module
from tests.nats_server import NatsServer
from tests.processes import free_port

nats_server = nats_server_module.nats_server  # the fixture

ROOT = Path(__file__).resolve().parent.parent
INGEST_A = ("binance", "bybit")
INGEST_B = ("okx", "gate")
VENUES = INGEST_A + INGEST_B
SYMBOL = "BTC/USDT"  # listed on every simulated venue
PEER_INTERVAL_S = 0.2
PEER_TIMEOUT_S = 1.0
#: how late past peer_timeout_s a dead ingest's venues may still show connected: one poll
#: of /health, and the serve's backlog of announcements on a loaded 2-core machine
DOWN_SLACK_S = 1.0
STARTUP_S = 45.0
STEP_S = 15.0

#: (section, key) -> value: short intervals so that the whole file runs in well under a minute
OVERRIDES: dict[tuple[str, str], str] = {
    ("nats", "peer_interval_s"): str(PEER_INTERVAL_S),
    ("nats", "peer_timeout_s"): str(PEER_TIMEOUT_S),
    ("nats", "ack_timeout_s"): "0.5",
    ("nats", "backoff_max_s"): "0.5",
    # A NATS server that shuts down can strand a message it was delivering to a pull just
    # then (lost in flight; what arrived before its 409 "Server Shutdown" is kept): the
    # stream delivers it again after ack_wait_s. 5 s keeps that within the test, and stays
    # well above the ~1.3 s a batch takes from delivery to ack (a 1 s pull, a 0.2 s
    # flush), so nothing comes twice.
    ("nats", "ack_wait_s"): "5.0",
    ("recorder", "flush_interval_s"): "0.2",
    ("discovery", "max_symbols"): "20",  # fewer subscriptions: less CPU for 8 processes
}

FINAL_COUNTS = re.compile(r"ingest: (\d+) records published, (\d+) acked by the stream, "
                          r"(\d+) dropped before publishing")


def write_config(tmp_path: Path) -> Path:
    """config.toml with :data:`OVERRIDES` applied (each key must exist exactly once)."""
    section = ""
    seen: set[tuple[str, str]] = set()
    out = []
    for line in (ROOT / "config.toml").read_text().splitlines():
        header = re.fullmatch(r"\s*\[([^\]]+)\].*", line)
        if header:
            section = header.group(1).strip()
        key = re.match(r"\s*([A-Za-z_]+)\s*=", line)
        if key and (section, key.group(1)) in OVERRIDES:
            assert (section, key.group(1)) not in seen
            seen.add((section, key.group(1)))
            line = f"{key.group(1)} = {OVERRIDES[(section, key.group(1))]}"
        out.append(line)
    assert seen == set(OVERRIDES), f"config.toml lacks {set(OVERRIDES) - seen}"
    path = tmp_path / "config.toml"
    path.write_text("\n".join(out) + "\n")
    return path


class Proc:
    """One ``python -m app.cli`` child in its own process group, output to a file."""

    def __init__(self, name: str, args: Iterable[str], log_path: Path) -> None:
        self.name = name
        self.args = tuple(args)
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *self.args], cwd=ROOT, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def send(self, signum: int) -> None:
        if self.running():
            self.popen.send_signal(signum)

    async def wait_exit(self, within_s: float) -> int | None:
        with trio.move_on_after(within_s):
            while self.popen.poll() is None:
                await trio.sleep(0.05)
        return self.popen.poll()

    def kill_group(self) -> None:
        """SIGKILL the process and whatever it started (its process group), then reap it."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)


class Cluster:
    """The processes of one test, and their logs for assertion messages."""

    def __init__(self, tmp_path: Path, server: NatsServer) -> None:
        self.server = server
        self.config = write_config(tmp_path)
        self.data_dir = tmp_path / "data"
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.procs: list[Proc] = []
        self.ports: dict[str, int] = {}

    def start(self, name: str, role: str, *args: str) -> Proc:
        proc = Proc(name, (role, "--config", str(self.config), "--nats", self.server.url, *args),
                    self.logs / f"{name}.log")
        self.procs.append(proc)
        return proc

    def ingest(self, name: str, venues: Iterable[str]) -> Proc:
        return self.start(name, "ingest", "--simulated", "--venues", ",".join(venues))

    def serve(self, name: str) -> Proc:
        self.ports[name] = port = free_port()
        return self.start(name, "serve", "--port", str(port))

    def record(self, name: str) -> Proc:
        return self.start(name, "record", "--data-dir", str(self.data_dir))

    def describe(self, chars: int = 2500) -> str:
        parts = []
        for proc in self.procs:
            state = "running" if proc.running() else f"exited {proc.popen.returncode}"
            parts.append(f"--- {proc.name} (pid {proc.pid}, {state}) {proc.log_path}:\n"
                         f"{proc.log()[-chars:]}")
        parts.append(f"--- nats-server {self.server.log_path}:\n{self.server.log_tail(1500)}")
        return "\n".join(parts)

    def close(self) -> None:
        for proc in self.procs:
            proc.kill_group()


@pytest.fixture
def cluster(tmp_path: Path, nats_server: NatsServer) -> Iterator[Cluster]:
    c = Cluster(tmp_path, nats_server)
    try:
        yield c
    finally:
        c.close()


# --- what the processes show ------------------------------------------------------------

async def get_health(client: httpx.AsyncClient, port: int) -> dict[str, Any] | None:
    """/health's document (200 healthy, 503 unhealthy: both are documents), or None."""
    try:
        response = await client.get(f"http://127.0.0.1:{port}/health", timeout=3)
    except httpx.TransportError:
        return None
    if response.status_code not in (200, 503):
        return None
    doc: dict[str, Any] = response.json()
    return doc


async def wait_health(client: httpx.AsyncClient, cluster: Cluster, serve: str,
                      until: Callable[[dict[str, Any]], bool], what: str,
                      within_s: float = STEP_S) -> dict[str, Any]:
    port = cluster.ports[serve]
    last: dict[str, Any] | None = None
    with trio.move_on_after(within_s):
        while True:
            doc = await get_health(client, port)
            if doc is not None:
                last = doc
                if until(doc):
                    return doc
            await trio.sleep(0.1)
    raise AssertionError(f"{serve}: not within {within_s} s: {what}\n"
                         f"last /health: {_brief(last)}\n{cluster.describe()}")


def _brief(doc: dict[str, Any] | None) -> Any:
    if doc is None:
        return None
    nats = doc.get("nats") or {}
    return {"status": doc.get("status"),
            "venues": {v: {k: doc["venues"][v].get(k) for k in ("connected", "quotes", "peer")}
                       for v in VENUES if v in doc.get("venues", {})},
            "client": (nats.get("client") or {}).get("state"), "quotes": nats.get("quotes"),
            "peers": [{k: p.get(k) for k in ("id", "role", "state", "last_seen_s")}
                      for p in nats.get("peers", [])]}


def venues_live(doc: dict[str, Any], venues: Iterable[str]) -> bool:
    return all(doc["venues"][v]["connected"] and doc["venues"][v]["quotes"] > 0 for v in venues)


def venues_down(doc: dict[str, Any], venues: Iterable[str]) -> bool:
    return all(not doc["venues"][v]["connected"] for v in venues)


def quotes_of(doc: dict[str, Any], venues: Iterable[str]) -> dict[str, int]:
    return {v: int(doc["venues"][v]["quotes"]) for v in venues}


def peers(doc: dict[str, Any], role: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
    return [p for p in doc["nats"]["peers"]
            if (role is None or p["role"] == role) and (state is None or p["state"] == state)]


def ingest_peer(doc: dict[str, Any], venues: Iterable[str]) -> dict[str, Any] | None:
    """The newest ingest peer that connects exactly ``venues``."""
    found = [p for p in peers(doc, "ingest") if set(p["venues"]) == set(venues)]
    return max(found, key=lambda p: -p["last_seen_s"]) if found else None


def peer_by_pid(doc: dict[str, Any], pid: int) -> dict[str, Any] | None:
    found = [p for p in doc["nats"]["peers"] if p["pid"] == pid]
    return found[-1] if found else None


def peer_state(doc: dict[str, Any], pid: int) -> str | None:
    peer = peer_by_pid(doc, pid)
    return None if peer is None else str(peer["state"])


def publisher_acked(doc: dict[str, Any], *venue_sets: Iterable[str]) -> int:
    """Records the ingest peers of ``venue_sets`` last announced as acked by the stream."""
    total = 0
    for venues in venue_sets:
        peer = ingest_peer(doc, venues)
        if peer is None:
            return -1
        total += int(peer["stats"]["publisher"]["records_acked"])
    return total


def consumer_acked(doc: dict[str, Any], pid: int) -> int:
    """Batches the recorder of ``pid`` last announced as acked (-1: no such peer)."""
    peer = peer_by_pid(doc, pid)
    return -1 if peer is None else int(peer["stats"]["consumer"]["acked"])


def peer_connects(doc: dict[str, Any], pid: int) -> int:
    peer = peer_by_pid(doc, pid)
    return 0 if peer is None else int(peer["nats"]["connects"])


def client_connected(doc: dict[str, Any]) -> bool:
    return bool(doc["nats"]["client"]["state"] == "connected")


async def quotes_frame(cluster: Cluster, serve: str, accept: Callable[[dict[str, Any]], bool],
                       what: str, within_s: float = STEP_S) -> dict[str, Any]:
    """The data of the first ``quotes:SYMBOL`` frame on ``serve``'s /feed that ``accept``s,
    read with the reference client."""
    url = f"ws://127.0.0.1:{cluster.ports[serve]}/feed"
    last: Any = None
    frames = 0
    with trio.move_on_after(within_s):
        async with open_feed(url, [f"quotes:{SYMBOL}"], connect_timeout_s=5) as feed:
            async for frame in feed:
                if frame.topic != f"quotes:{SYMBOL}" or frame.kind not in ("snapshot", "delta"):
                    continue
                frames += 1
                last = frame.data
                if isinstance(frame.data, dict) and isinstance(frame.data.get("venues"), dict) \
                        and accept(frame.data["venues"]):
                    return frame.data
    raise AssertionError(f"{serve}: no quotes:{SYMBOL} frame within {within_s} s: {what}\n"
                         f"{frames} frames, the last: {last}\n{cluster.describe()}")


def fresh_since(venues: Iterable[str], since_ms: int) -> Callable[[dict[str, Any]], bool]:
    """A frame's venues include fresh quotes of ``venues`` received after ``since_ms``."""
    wanted = tuple(venues)

    def accept(book: dict[str, Any]) -> bool:
        return all(v in book and not book[v]["stale"] and book[v]["bid"] <= book[v]["ask"]
                   and book[v]["recv_ms"] > since_ms for v in wanted)
    return accept


def rows_by_venue(data_dir: Path) -> Counter[str]:
    """Rows on disk per venue, quotes and trades, by the recorder's reading rule."""
    counts: Counter[str] = Counter()
    for stream in ("quotes", "trades"):
        for _, hour_dir in hour_dirs(data_dir, stream):
            live, _ = hour_files(hour_dir)
            if not live:
                continue
            table = ds.dataset([str(p) for p in live], format="parquet").to_table(columns=["venue"])
            counts.update(table.column("venue").to_pylist())
    return counts


def final_counts(proc: Proc) -> tuple[int, int, int]:
    """(published, acked, dropped) from the line an ingest logs once it has stopped."""
    found = FINAL_COUNTS.findall(proc.log())
    assert len(found) == 1, f"{proc.name}: no final counts logged:\n{proc.log()[-3000:]}"
    published, acked, dropped = (int(x) for x in found[0])
    return published, acked, dropped


async def stop(cluster: Cluster, proc: Proc, within_s: float = 8.0) -> None:
    """SIGTERM: a graceful stop, exit code 0 within ``within_s``."""
    proc.send(signal.SIGTERM)
    code = await proc.wait_exit(within_s)
    assert code == 0, f"{proc.name}: exit code {code} after SIGTERM\n{cluster.describe()}"
    assert re.search(r"spreadwatch: stopped$", proc.log(), re.MULTILINE), proc.log()[-2000:]


# --- the tests --------------------------------------------------------------------------

async def test_roles_as_processes_survive_kills_a_nats_restart_and_a_recorder_restart(
        cluster: Cluster) -> None:
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    record1 = cluster.record("record-1")
    serve1 = cluster.serve("serve-1")
    serve2 = cluster.serve("serve-2")
    ingest_a = cluster.ingest("ingest-a", INGEST_A)
    ingest_b = cluster.ingest("ingest-b", INGEST_B)
    serves = ("serve-1", "serve-2")

    async with httpx.AsyncClient() as client:
        # 1. Both serve processes see every venue of both ingest processes, and every peer.
        def all_up(doc: dict[str, Any]) -> bool:
            return (venues_live(doc, VENUES) and client_connected(doc)
                    and sorted(p["role"] for p in peers(doc, state="up"))
                    == ["ingest", "ingest", "record", "serve", "serve"])

        for serve in serves:
            doc = await wait_health(client, cluster, serve, all_up,
                                    "4 venues live from 2 ingest processes, 5 peers up", STARTUP_S)
            assert doc["nats"]["quotes"]["bad_batches"] == 0
            a, b = ingest_peer(doc, INGEST_A), ingest_peer(doc, INGEST_B)
            assert a is not None and a["pid"] == ingest_a.pid, _brief(doc)
            assert b is not None and b["pid"] == ingest_b.pid, _brief(doc)
            assert {doc["venues"][v]["peer"] for v in INGEST_A} == {a["id"]}
            assert {doc["venues"][v]["peer"] for v in INGEST_B} == {b["id"]}
        timings["all up"] = time.monotonic() - t0

        # ... and a feed client of each gets one frame of a symbol with fresh quotes from
        # the venues of both ingest processes: the serve joined them in one book.
        for serve in serves:
            await quotes_frame(cluster, serve, fresh_since(VENUES, 0),
                               "fresh quotes of all 4 venues in one frame")

        # 2. The recorder stopped gracefully and started again; records go on into the stream
        # meanwhile (checked at the end: no row lost, none written twice).
        await stop(cluster, record1)
        assert re.search(r"record: acked \d+ batches at shutdown", record1.log()), record1.log()[-2000:]
        doc = await wait_health(client, cluster, "serve-1",
                                lambda d: peer_state(d, record1.pid) == "down",
                                "the stopped recorder shown down")
        acked_before = publisher_acked(doc, INGEST_A, INGEST_B)
        await wait_health(client, cluster, "serve-1",
                          lambda d: publisher_acked(d, INGEST_A, INGEST_B) > acked_before + 200,
                          "records acked by the stream while no recorder runs")
        record2 = cluster.record("record-2")
        await wait_health(client, cluster, "serve-1",
                          lambda d: peer_state(d, record2.pid) == "up"
                          and consumer_acked(d, record2.pid) > 0,
                          "the restarted recorder acking", STARTUP_S)
        timings["recorder restarted"] = time.monotonic() - t0

        # 3. An ingest process killed: its venues are shown disconnected on both serves within
        # peer_timeout_s, its peer down; the other ingest's venues go on updating on both.
        before: dict[str, dict[str, int]] = {}
        for serve in serves:
            before[serve] = quotes_of(await wait_health(client, cluster, serve, client_connected,
                                                        "connected"), INGEST_A)
        killed_at = time.monotonic()
        killed_ms = time.time_ns() // 1_000_000
        ingest_b.popen.send_signal(signal.SIGKILL)

        def b_gone(doc: dict[str, Any]) -> bool:
            return venues_down(doc, INGEST_B) and peer_state(doc, ingest_b.pid) == "down"

        for serve in serves:
            doc = await wait_health(client, cluster, serve, b_gone,
                                    "the killed ingest's venues disconnected and its peer down")
            timings[f"down on {serve}"] = elapsed = time.monotonic() - killed_at
            assert elapsed <= PEER_TIMEOUT_S + DOWN_SLACK_S, (
                f"{serve}: the killed ingest's venues shown disconnected after {elapsed:.2f} s "
                f"(peer_timeout_s {PEER_TIMEOUT_S})")
            assert [p["pid"] for p in peers(doc, "ingest", "down")] == [ingest_b.pid], _brief(doc)
            assert doc["status"] == "degraded", _brief(doc)
        b_last_acked = publisher_acked(doc, INGEST_B)
        for serve in serves:
            counts = before[serve]

            def a_updating(doc: dict[str, Any], counts: dict[str, int] = counts) -> bool:
                return venues_live(doc, INGEST_A) and all(
                    q > counts[v] for v, q in quotes_of(doc, INGEST_A).items())

            await wait_health(client, cluster, serve, a_updating,
                              "the other ingest's venues still updating")

            def a_fresh_b_stale(book: dict[str, Any]) -> bool:
                return fresh_since(INGEST_A, killed_ms)(book) and all(
                    v in book and book[v]["stale"] for v in INGEST_B)

            await quotes_frame(cluster, serve, a_fresh_b_stale,
                               "binance, bybit quotes received after the kill; okx, gate stale")
        assert await ingest_b.wait_exit(1) == -signal.SIGKILL

        # 4. A serve process killed: the other goes on serving.
        serve2.popen.send_signal(signal.SIGKILL)
        assert await serve2.wait_exit(5) == -signal.SIGKILL
        await wait_health(client, cluster, "serve-1",
                          lambda d: peer_state(d, serve2.pid) == "down" and venues_live(d, INGEST_A),
                          "the killed serve shown down, the rest live")
        await quotes_frame(cluster, "serve-1", fresh_since(INGEST_A, time.time_ns() // 1_000_000),
                           "serve-1 still feeding fresh quotes")
        timings["serve killed"] = time.monotonic() - t0

        # 5. NATS restarted (same port, same store): everything reconnects, quotes flow again,
        # the recorder goes on.
        doc = await wait_health(client, cluster, "serve-1", client_connected, "connected")
        connects = doc["nats"]["client"]["connects"]
        record_acked = consumer_acked(doc, record2.pid)
        restart_at = time.monotonic()
        await trio.to_thread.run_sync(cluster.server.restart)
        restarted_ms = time.time_ns() // 1_000_000
        doc = await wait_health(
            client, cluster, "serve-1",
            lambda d: client_connected(d) and d["nats"]["client"]["connects"] > connects,
            "serve-1 connected to the restarted NATS")
        quotes_then = doc["nats"]["quotes"]["quotes"]

        def recovered(doc: dict[str, Any]) -> bool:
            return (doc["nats"]["quotes"]["quotes"] > quotes_then and venues_live(doc, INGEST_A)
                    and peer_state(doc, ingest_a.pid) == "up" and peer_connects(doc, ingest_a.pid) >= 2
                    and peer_state(doc, record2.pid) == "up" and peer_connects(doc, record2.pid) >= 2
                    and consumer_acked(doc, record2.pid) > record_acked)

        await wait_health(client, cluster, "serve-1", recovered,
                          "quotes flowing, the ingest and the recorder back after the NATS restart")
        await quotes_frame(cluster, "serve-1", fresh_since(INGEST_A, restarted_ms),
                           "fresh quotes after the NATS restart")
        timings["nats recovered"] = time.monotonic() - restart_at

        # 6. The ingest stopped gracefully: everything it published was acked by the stream,
        # and the recorder (stopped and restarted on the way, NATS restarted under it) wrote
        # every row exactly once.
        await stop(cluster, ingest_a)
        published, acked, _dropped = final_counts(ingest_a)
        assert published > 0 and acked == published, (published, acked)
        data_dir = cluster.data_dir
        caught_up_at = time.monotonic()
        with trio.move_on_after(STEP_S):
            while sum(rows_by_venue(data_dir)[v] for v in INGEST_A) < published:
                await trio.sleep(0.2)
        timings["recorder caught up"] = time.monotonic() - caught_up_at
        last = await get_health(client, cluster.ports["serve-1"])
        recorder_stats = None if last is None else (peer_by_pid(last, record2.pid) or {}).get("stats")
        await stop(cluster, record2)
        rows = rows_by_venue(data_dir)
        assert sum(rows[v] for v in INGEST_A) == published, (
            f"rows of {INGEST_A} on disk {rows}, published and acked {published}; "
            f"the recorder's last stats {recorder_stats}\n{cluster.describe()}")
        # The killed ingest's records: at least those its last announcement said were acked.
        assert sum(rows[v] for v in INGEST_B) >= b_last_acked > 0, (rows, b_last_acked)
        assert set(rows) == set(VENUES), rows
        assert not list(data_dir.rglob("*.tmp"))
        await stop(cluster, serve1)
    timings["total"] = time.monotonic() - t0
    print("timings:", {k: round(v, 2) for k, v in timings.items()})
