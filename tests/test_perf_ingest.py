"""Issue 8's ingest bench (``bench/perf_ingest.py``) and websocket receive bench
(``bench/perf_ws.py``), run tiny so they cannot rot.

Each runs as ``python -m`` in a child process, as it is run by hand, with its result
written to a temporary directory. The ingest run must show both sides (spreadwatch's
pipeline and cryptofeed) processing frames from the flooding venue: a side that
processes nothing fails the test, whatever the ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _bench(module: str, tmp_path: Path, *args: str, timeout: float) -> tuple[dict[str, Any], str]:
    results = tmp_path / f"{module}.json"
    proc = subprocess.run([sys.executable, "-m", f"bench.{module}", *args, "--work", str(tmp_path / "work"),
                           "--results", str(results)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0 and results.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    doc: dict[str, Any] = json.loads(results.read_text())
    return doc, proc.stdout


def test_ingest_bench_both_sides_process_frames(tmp_path: Path) -> None:
    result, printed = _bench("perf_ingest", tmp_path, "--seconds", "1", "--rounds", "1", "--warmup", "0.5",
                             "--rate", "50000", "--symbols", "10", timeout=180)
    assert {"name", "title", "params", "criteria", "figures", "windows", "command", "machine"} <= result.keys()
    figures = result["figures"]
    assert set(figures["sides"]) == {"spreadwatch", "cryptofeed"}
    for side, s in figures["sides"].items():
        assert s["frames"] > 0, f"{side} processed no frame"
        assert s["cpu_s"] > 0 and s["frames_per_cpu_s"] > 0, side
        assert s["flood"]["sent"] > 0 and {"offered", "not_sent"} <= s["flood"].keys(), side
    spreadwatch = figures["sides"]["spreadwatch"]
    assert spreadwatch["quotes"] > 0 and spreadwatch["bad_frames"] == 0
    assert "recorder" in spreadwatch["edges"] and "recorder_inbox_dropped" in spreadwatch
    assert figures["ratio"] > 0
    assert [w["side"] for w in result["windows"]] == ["spreadwatch", "cryptofeed"]
    assert "ratio spreadwatch / cryptofeed" in printed


def test_ws_bench_every_library_receives(tmp_path: Path) -> None:
    result, printed = _bench("perf_ws", tmp_path, "--frames", "20000", "--repeats", "1", timeout=120)
    assert set(result["figures"]) == {"trio-websocket", "websockets-trio", "websockets-asyncio",
                                      "websockets-asyncio-uvloop", "trio-bulk-reference"}
    for lib, s in result["figures"].items():
        assert s["frames"] == 19999 and s["frames_per_cpu_s"] > 0, lib
    assert "trio-websocket" in printed
