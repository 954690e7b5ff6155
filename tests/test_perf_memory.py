"""bench/perf_memory.py's in-process parts, tiny: the figures budget.py assumes stay upper bounds.

A regression that makes a window series or a buffered recorder row bigger than
``actors/budget.py`` assumes fails here (tracemalloc's count, which is exact for the
Python objects involved; the RSS figures of a tiny run are noise and are only shaped).
The session part needs a server and a client process: ``python -m bench.perf_memory``.
"""

from __future__ import annotations

import json
from pathlib import Path

from actors.budget import RECORDER_ROW_BYTES, SERIES_OVERHEAD_BYTES
from bench.perf_memory import linear_fit, run, table


def test_in_process_figures_are_positive_and_within_the_budget(tmp_path: Path) -> None:
    out = tmp_path / "perf-memory.json"
    result = run(tmp_path / "work", tiny=True, sessions=False, results=out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert {"name", "title", "command", "when", "machine", "criteria", "windows", "recorder",
            "sessions"} <= set(result)
    assert result["name"] == "perf-memory" and result["sessions"] == []

    windows = result["windows"]
    for name, width in (("quotes", 2), ("spreads", 1)):
        f = windows[name]
        ring = windows["capacity"] * width * 8
        assert f["ring_bytes"] == ring
        assert ring < f["bytes_per_series"] <= ring + SERIES_OVERHEAD_BYTES, (name, f)
        assert 0 < f["overhead_bytes"] <= SERIES_OVERHEAD_BYTES
        assert f["budget_bytes"] == ring + SERIES_OVERHEAD_BYTES

    recorder = result["recorder"]
    assert recorder["budget_bytes"] == RECORDER_ROW_BYTES
    for stream in ("quotes", "trades", "opportunities"):
        per = recorder[stream]["bytes_per_row"]
        assert 0 < per <= RECORDER_ROW_BYTES, (stream, per)
        assert isinstance(recorder[stream]["bytes_per_row_rss"], float)
    # a quote row is 7 numbers (8 bytes each) and 2 shared strings (a pointer each)
    assert recorder["quotes"]["bytes_per_row"] >= 7 * 8 + 2 * 8

    criteria = result["criteria"]
    assert [c["passed"] for c in criteria] == [True, True, True]
    assert all({"text", "measured", "passed"} <= set(c) for c in criteria)
    assert "recorder row trades" in table(result)


def test_linear_fit_recovers_a_line() -> None:
    fit = linear_fit([(0, 100.0), (250, 100.0 + 250 * 30_000), (1000, 100.0 + 1000 * 30_000)])
    assert abs(fit["slope"] - 30_000) < 1e-6 and abs(fit["intercept"] - 100.0) < 1e-3
    assert abs(fit["r2"] - 1.0) < 1e-12
