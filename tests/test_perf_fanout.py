"""Short run of issue 8's fan-out bench (bench/perf_fanout.py): 20 sessions for a few
seconds against the real program and the simulated venues. It checks that the bench
produces CPU and latency figures in the documented JSON shape, not their values (the
full run is `python -m bench.perf_fanout`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import perf_fanout
from bench.harness import ROOT


def test_profile_attribution_counts_fanout_stacks(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text("main (app/cli.py:1);run_hub.<locals>.tick (actors/hub.py:2);Hub.broadcast (actors/hub.py:3) 3\n"
                   "main (app/cli.py:1);run_shard.<locals>.tick (actors/shard.py:9) 1\n")
    top = perf_fanout.top_functions(raw)
    assert top["samples"] == 4 and top["fanout_pct"] == 75.0
    assert top["exclusive_pct"]["Hub.broadcast (hub.py)"] == 75.0


def test_a_short_run_gives_cpu_and_latency_figures(tmp_path: Path) -> None:
    # a child process, as a user runs it (the harness's log files live as long as it does)
    results = tmp_path / "perf-fanout.json"
    subprocess.run([sys.executable, "-m", "bench.perf_fanout", "--sessions", "20", "--loadgens", "1",
                    "--baseline-s", "2", "--window-s", "4", "--warm-s", "1", "--work", str(tmp_path / "work"),
                    "--results", str(results)], cwd=ROOT, check=True, timeout=150)
    doc = json.loads(results.read_text())
    assert doc["name"] == "perf-fanout" and doc["params"]["sessions"] == 20
    assert {"machine", "command", "when", "criteria", "figures"} <= set(doc)
    f = doc["figures"]
    assert f["sessions_held"] == 20
    for phase in ("baseline", "loaded"):
        assert f[phase]["server_cpu_s"] > 0 and 0 < f[phase]["server_cpu_pct"] < 400
        assert f[phase]["health_answered"]
    assert f["loaded"]["hub_frames_offered_per_s"] > 0
    assert set(f["loaded"]["others_cpu_pct"]) == {"sim", "fanout-0"}
    assert f["delivered"]["frames_per_s"] > 0 and f["delivered"]["messages_per_s"] > 0
    assert f["fanout_us_per_message"] is not None and f["fanout_cpu_pct_at_nominal"] is not None
    age = f["latency_ms"]["quote_age"]
    assert age["count"] > 0 and 0 < age["p50"] <= age["p99"]
    assert f["latency_ms"]["quote_server"]["count"] == age["count"]
    assert f["latency_ms"]["delivery"]["count"] > 0
    assert [c["passed"] in (True, False) for c in doc["criteria"]] == [True] * 3
    assert "quote age" in perf_fanout.table(doc)
