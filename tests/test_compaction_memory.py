"""bench/compaction_memory.py, run small so it cannot rot; its figures come from the bench.

The bench's criteria are judged on an hour's worth of parts; on a few parts the RSS
figures are noise, so this checks that both arms ran every round in their own process
and that the result is written for the report.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import compaction_memory


def test_both_arms_compact_every_round_and_the_result_is_written(tmp_path: Path) -> None:
    out = tmp_path / "compaction-memory.json"
    compaction_memory.main(["--parts", "12", "--rows", "200", "--rounds", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    assert [a["arm"] for a in result["arms"]] == ["mimalloc", "system"]  # each checks its pool
    for arm in result["arms"]:
        assert [s["round"] for s in arm["samples"]] == [0, 1, 2]
        assert all(s["rss_mb"] > 0 for s in arm["samples"])
    assert len(result["criteria"]) == 3 and result["command"].startswith("python -m bench.compaction_memory")


def test_an_hour_of_parts_is_what_the_compactor_reads(tmp_path: Path) -> None:
    from actors.recorder import compact_hour, hour_files

    compaction_memory.write_hour(tmp_path, parts=5, rows=100)
    live, dead = hour_files(tmp_path)
    assert len(live) == 5 and not dead
    result = compact_hour(tmp_path, "quotes", name_suffix="t-1")
    assert result.files_in == 5 and result.rows == 500
