"""bench/perf_scaleout.py (issue 9's figure: one vs two ingest processes, the NATS hop) in its
short mode, so it cannot rot: both split cases must move quotes end to end (venue -> ingest ->
NATS -> serve, and into the JetStream stream and the record process) and report the hop's
percentiles and the feed clients' quote age. No figure is judged for speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_scaleout_bench_moves_quotes_with_one_and_two_ingest_processes(tmp_path: Path) -> None:
    results = tmp_path / "perf-scaleout.json"
    proc = subprocess.run([sys.executable, "-m", "bench.perf_scaleout", "--quick", "--work", str(tmp_path / "work"),
                           "--results", str(results)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0 and results.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(results.read_text())
    assert {"name", "title", "params", "load", "modes", "figures", "command", "machine", "when"} <= result.keys()
    assert list(result["modes"]) == ["split-1", "split-2"]
    for mode, ingests in (("split-1", 1), ("split-2", 2)):
        r = result["modes"][mode]
        assert set(r["exit_codes"].values()) == {0}, (mode, r["exit_codes"])  # SIGTERM -> clean exit
        for phase in ("moderate", "saturation", "latency"):
            f = r[phase]
            ing = f["ingest"]
            assert ing["processes"] == ingests, (mode, phase)
            assert sorted(v for p in ing["per_process"] for v in p["venues"]) == sorted(result["params"]["venues"])
            assert all(p["quotes_per_s"] > 0 for p in ing["per_process"]), (mode, phase, ing)
            assert ing["records_acked_per_s"] > 0, (mode, phase)
            assert f["serve"]["quotes_per_s"] > 0 and f["record"]["records_per_s"] > 0, (mode, phase)
            assert f["serve"]["bad_batches"] == 0, (mode, phase)
            hop = f["serve"]["hop_ms"]
            assert 0 <= hop["p50_ms"] <= hop["p99_ms"] <= hop["max_ms"], (mode, phase, hop)
            assert f["cpu_pct"]["serve"] > 0 and f["cpu_pct"]["nats-server"] >= 0, (mode, phase)
        age = r["latency"]["feed"]["quote_age_ms"]
        assert age["count"] > 0 and 0 <= age["p50"] <= age["p99"], (mode, age)
    assert result["figures"]["saturation_quotes_per_s"]["split-2"] > 0
    assert "| split-2 | saturation | 2 |" in proc.stdout
