"""RSS across hourly compactions: does each closed hour leave the process bigger?

    python -m bench.compaction_memory [--parts 3600] [--rows 3000] [--rounds 10]

Found by the one-hour soak (bench/findings.md): the first compaction of an hour of
quotes (~3,300 one-second part files, 9.4 M rows) raised the server's RSS by ~100 MB
while pyarrow's pool was back to 0 bytes allocated. This bench isolates that. It writes
an hour of synthetic quote parts the size of the soak's hour (``--parts`` files of
``--rows`` rows, one file a second, 8 venues, 200 symbols), then compacts a fresh copy
of that hour ``--rounds`` times in one process, each in a worker thread as the recorder
does, and samples RSS after each (after glibc's ``malloc_trim``, which the server's
heap-trimmer calls every 30 s). Two arms, each in its own fresh process, both running
``actors.recorder.compact_hour`` (which hands pyarrow's pool back when it is done):

* ``system``: pyarrow allocating from glibc's heap, as the server does
  (``ARROW_DEFAULT_MEMORY_POOL=system``, set in ``actors/__init__.py``);
* ``mimalloc``: pyarrow's bundled default, as the server ran before.

Passes when the ``system`` arm's RSS grows at most 2 MB over the second half of the
rounds, is below the ``mimalloc`` arm's after every round, and peaks lower during a
compaction (RSS sampled every 50 ms while the round runs). The first rounds' rise is
a warm-up (pyarrow's reader threads, the code it maps, allocator caches).

History (2026-12-06): the arms were then mimalloc with the pool released and mimalloc
without (``_compact_hour``). Released, RSS rose +2.1, +2.7, +1.2, +0.5 MB and then less
than 1 MB over the last six rounds, settling at 122-124 MB; without the release it sat
at 150-158 MB and moved by up to 22 MB from one round to the next. Prints the figures;
writes ``bench/results/compaction-memory.json`` (``python -m bench report`` renders it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actors.monitor import glibc_malloc_trim, rss_bytes
from actors.recorder import SCHEMAS, compact_hour
from bench.harness import ROOT, anon_mb, save_perf

MB = 2**20
HOUR_NS = 1_796_594_400 * 10**9  # an hour's start (2026-12-06 22:00 UTC)
VENUES = ("binance", "bybit", "okx", "mexc", "gate", "kucoin", "bitget", "htx")
LIMIT_MB = 2.0
ARMS = ("mimalloc", "system")  # pyarrow's allocator (ARROW_DEFAULT_MEMORY_POOL)


def write_hour(directory: Path, parts: int, rows: int, seed: int = 3) -> int:
    """``parts`` one-second part files of ``rows`` quotes each; the bytes written."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    schema = SCHEMAS["quotes"].with_metadata({b"spreadwatch.stream": b"quotes"})
    symbols = np.array([f"S{i:03d}/USDT" for i in range(200)], dtype=object)
    venues = np.array(VENUES, dtype=object)
    total = 0
    for i in range(parts):
        start = HOUR_NS + i * 10**9
        recv = start + np.sort(rng.integers(0, 10**9, rows))
        mid = rng.uniform(0.01, 60_000, rows)
        table = pa.table({
            "venue": venues[rng.integers(0, len(venues), rows)],
            "symbol": symbols[rng.integers(0, len(symbols), rows)],
            "bid": mid * 0.9999, "bid_size": rng.uniform(0, 1e5, rows),
            "ask": mid * 1.0001, "ask_size": rng.uniform(0, 1e5, rows),
            "venue_ts": recv // 10**6 - rng.integers(0, 50, rows),
            "recv_ts": recv, "seq": np.arange(i * rows, (i + 1) * rows),
        }, schema=schema)
        path = directory / f"part-{int(recv[0])}-bench-{i:06d}.parquet"
        pq.write_table(table, path, compression="zstd")
        total += path.stat().st_size
    return total


def run_arm(source: Path, work: Path, arm: str, rounds: int) -> dict[str, Any]:
    """In this process: compact a fresh copy of ``source`` ``rounds`` times."""
    backend = pa.default_memory_pool().backend_name
    if backend != arm:
        raise RuntimeError(f"arm {arm} runs with pyarrow's {backend} pool")
    trim = glibc_malloc_trim()
    samples = [{"round": 0, "rss_mb": round(rss_bytes() / MB, 1), "anon_mb": anon_mb(), "s": 0.0}]
    for i in range(1, rounds + 1):
        hour = work / f"{arm}-{i}"
        shutil.copytree(source, hour)
        failure: list[BaseException] = []

        def job(hour: Path = hour, failure: list[BaseException] = failure) -> None:
            try:
                compact_hour(hour, "quotes", name_suffix="bench-1")
            except BaseException as exc:  # reported below, in the main thread
                failure.append(exc)

        started = time.perf_counter()
        worker = threading.Thread(target=job)
        worker.start()
        peak = rss_bytes()
        while worker.is_alive():  # the round's peak, sampled every 50 ms
            peak = max(peak, rss_bytes())
            worker.join(0.05)
        if failure:
            raise failure[0]
        took = time.perf_counter() - started
        shutil.rmtree(hour)
        if trim is not None:  # as the server's heap-trimmer does every 30 s
            trim(0)
        samples.append({"round": i, "rss_mb": round(rss_bytes() / MB, 1), "anon_mb": anon_mb(),
                        "peak_mb": round(peak / MB, 1), "s": round(took, 2)})
        print(f"  {arm} round {i}: RSS {samples[-1]['rss_mb']:.1f} MB (peak {peak / MB:.1f}), "
              f"anonymous {samples[-1]['anon_mb']} MB, {took:.1f} s", flush=True)
    return {"arm": arm, "samples": samples,
            "arrow_max_mb": round(pa.default_memory_pool().max_memory() / MB, 1)}


def table(result: dict[str, Any]) -> str:
    lines = ["| arm | RSS before | after round 1 | after last round | last - first round | highest peak |",
             "|---|---|---|---|---|---|"]
    for arm in result["arms"]:
        s = arm["samples"]
        lines.append(f"| {arm['arm']} | {s[0]['rss_mb']:.1f} MB | {s[1]['rss_mb']:.1f} MB | "
                     f"{s[-1]['rss_mb']:.1f} MB | {s[-1]['rss_mb'] - s[1]['rss_mb']:+.1f} MB | "
                     f"{max(x.get('peak_mb', 0.0) for x in s[1:]):.1f} MB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.compaction_memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=3600)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compaction-memory.json")
    # internal: one arm in this (fresh) process, its result as JSON on stdout's last line
    parser.add_argument("--arm", choices=ARMS, default=None)
    parser.add_argument("--source", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.arm is not None:
        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(run_arm(args.source, Path(work), args.arm, args.rounds)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "hour"
        started = time.perf_counter()
        size = write_hour(source, args.parts, args.rows)
        print(f"an hour of quotes: {args.parts} parts x {args.rows} rows, {size / MB:.0f} MB "
              f"({time.perf_counter() - started:.0f} s to write)", flush=True)
        arms = []
        for arm in ARMS:
            proc = subprocess.run([sys.executable, "-m", "bench.compaction_memory", "--arm", arm,
                                   "--source", str(source), "--rounds", str(args.rounds)],
                                  cwd=ROOT, capture_output=True, text=True, check=True,
                                  env={**os.environ, "ARROW_DEFAULT_MEMORY_POOL": arm})
            print(proc.stdout.rsplit("\n", 2)[0], flush=True)
            arms.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    system = next(a for a in arms if a["arm"] == "system")["samples"]
    mimalloc = next(a for a in arms if a["arm"] == "mimalloc")["samples"]
    half = len(system) // 2  # rounds from here on are past the warm-up

    def growth(samples: list[dict[str, Any]]) -> float:
        return float(samples[-1]["rss_mb"] - samples[half]["rss_mb"])

    def peak(samples: list[dict[str, Any]]) -> float:
        return max(float(x["peak_mb"]) for x in samples[1:])

    result: dict[str, Any] = {
        "name": "compaction-memory",
        "title": f"RSS across hourly compactions ({args.rounds} rounds of {args.parts} x {args.rows} quotes)",
        "params": {"parts": args.parts, "rows": args.rows, "rounds": args.rounds, "bytes": size},
        "criteria": [{
            "text": f"RSS settles: it grows <= {LIMIT_MB:g} MB over the second half of the rounds "
                    f"(round {half} to {args.rounds})",
            "measured": f"{growth(system):+.1f} MB with glibc's heap; {growth(mimalloc):+.1f} MB with mimalloc. "
                        f"Round by round: " + ", ".join(f"{r['rss_mb']:.0f}" for r in system) + " / "
                        + ", ".join(f"{k['rss_mb']:.0f}" for k in mimalloc) + " MB",
            "passed": growth(system) <= LIMIT_MB,
        }, {
            "text": "glibc's heap (trimmed) leaves RSS lower after every round than mimalloc",
            "measured": ", ".join(f"{r['rss_mb']:.0f} vs {k['rss_mb']:.0f} MB"
                                  for r, k in zip(system[1:], mimalloc[1:], strict=True)),
            "passed": all(r["rss_mb"] < k["rss_mb"] for r, k in zip(system[1:], mimalloc[1:], strict=True)),
        }, {
            "text": "glibc's heap peaks lower during a compaction than mimalloc (highest of all rounds)",
            "measured": f"{peak(system):.0f} vs {peak(mimalloc):.0f} MB",
            "passed": peak(system) < peak(mimalloc),
        }],
        "arms": arms,
    }
    save_perf(result, "bench.compaction_memory", argv, args.out, table)
    return 0 if all(c["passed"] for c in result["criteria"]) else 1


if __name__ == "__main__":
    sys.exit(main())
