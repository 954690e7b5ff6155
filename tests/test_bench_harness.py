"""The load and fault harness itself (``python -m bench``), run briefly so it cannot rot.

The long scenarios run from ``bench/`` (figures in ``bench/RESULTS.md``); here two of
them run end to end for seconds, against the real program and simulators in child
processes, with results written to a temporary directory: a graceful shutdown under
load (exit 0 within 5 s, every row the recorder wrote on disk, none abandoned) and a
SIGKILL under load followed by a restart (loss no longer than the flush interval).
Their criteria must all pass, and the result and plot must be written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import slope_per_min
from bench.loadgen import Histogram

ROOT = Path(__file__).resolve().parent.parent


def _bench(tmp_path: Path, *args: str, timeout: float) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-m", "bench", *args, "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)
    name = args[0]
    assert (tmp_path / f"{name}.png").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, object] = json.loads((tmp_path / f"{name}.json").read_text())
    failed = [c for c in result["criteria"] if not c["passed"]]  # type: ignore[attr-defined]
    assert not failed and proc.returncode == 0, (failed, proc.stdout[-3000:])
    return result


def test_shutdown_scenario_runs_end_to_end(tmp_path: Path) -> None:
    result = _bench(tmp_path, "shutdown", "--seconds", "8", "--sessions", "30", "--every", "2",
                    timeout=180)
    figures = result["figures"]
    assert isinstance(figures, dict) and sum(figures["on_disk"].values()) > 0
    # the sampler splits the RSS with the server's memory probe (?peek=1) and smaps_rollup
    samples = result["samples"]
    assert isinstance(samples, list) and samples
    for sample in samples:
        assert 0 < sample["malloc_in_use_mb"] < sample["anon_mb"] < sample["rss_mb"], sample
        assert sample["malloc_free_mb"] >= 0 and sample["arrow_mb"] >= 0
        assert sample["arrow_pool"] == "system"  # pyarrow's memory is in the heap the trimmer trims


def test_crash_scenario_runs_end_to_end(tmp_path: Path) -> None:
    result = _bench(tmp_path, "crash", "--seconds", "8", "--sessions", "10", "--rounds", "1",
                    "--every", "2", timeout=240)
    figures = result["figures"]
    assert isinstance(figures, dict) and len(figures["losses_s"]) == 1


def test_latency_histogram_quantiles_and_merge() -> None:
    a, b = Histogram(), Histogram()
    for ms in range(1, 101):  # 1..100 ms
        a.add(float(ms))
    b.add(2500.0)  # a coarse bucket
    a.merge(Histogram.from_json(json.loads(json.dumps(b.to_json()))))
    assert a.count == 101
    assert a.quantile(0.5) == pytest.approx(51.1)  # upper edge of the 0.1 ms bucket of 51 ms
    assert a.quantile(1.0) == 2510.0
    assert a.max_ms == 2500.0


def test_slope_is_per_minute_and_ignores_warm_up() -> None:
    samples = [{"t": float(t), "v": (1000.0 if t < 60 else 100.0 + t / 60)} for t in range(0, 600, 10)]
    assert slope_per_min(samples, "v", 60.0) == pytest.approx(1.0)
