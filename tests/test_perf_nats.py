"""bench/perf_nats.py (our trio NATS client against nats-py) in its short mode, so it
cannot rot: every client must move every message of every phase (the bench itself
fails a client that loses one) and report CPU and latency figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_nats_bench_every_client_moves_messages(tmp_path: Path) -> None:
    results = tmp_path / "perf-nats.json"
    proc = subprocess.run([sys.executable, "-m", "bench.perf_nats", "--quick", "--work", str(tmp_path / "work"),
                           "--results", str(results)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0 and results.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(results.read_text())
    assert {"name", "title", "params", "versions", "figures", "runs", "command", "machine"} <= result.keys()
    libs = result["params"]["libs"]
    assert libs == ["trio", "trio-batch", "nats-py", "nats-py-uvloop"]
    assert set(result["figures"]) == {f"{m}-{s}" for m in ("pub", "pubsub", "latency") for s in (200, 16384)}
    for key, per_lib in result["figures"].items():
        for lib in libs:
            f = per_lib[lib]
            assert f["messages"] > 0 and f["cpu_s"] > 0 and f["msgs_per_cpu_s"] > 0, (key, lib)
            if key.startswith("latency"):
                assert 0 < f["p50_us"] <= f["p99_us"] <= f["max_us"], (key, lib)
    planned = {(r["mode"], r["size"]): r["count"] for r in result["runs"]}
    assert all(r["messages"] == planned[r["mode"], r["size"]] for r in result["runs"])
    assert "| pubsub | 200 B | trio-batch |" in proc.stdout
