"""The memory budget, computed from the configuration alone (FAILURE_MODES #1, #16, #17).

Every bounded structure contributes ``bound x bytes per item``. Per-item sizes are
upper estimates of the Python objects involved (a Quote with its floats, ints and dict
slot is about 300 bytes; a buffered recorder row about 400 bytes across its column
lists); ring buffers are exact (float64 arrays allocated at creation). ``bench/``
measures real RSS against these figures. A configuration whose budget exceeds
``memory_ceiling_mb`` is refused at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from actors.config import Config, ConfigError
from actors.shard import STATS_CACHED

RECORD_BYTES = 320          # a Quote/Trade/Opportunity in a channel, with its key
RECORDER_ROW_BYTES = 400    # one buffered row across the recorder's column lists
TOPIC_STATE_BYTES = 2_048   # one topic payload held by the hub
FRAME_BYTES = 4_096         # one encoded frame in a session outbox (upper estimate)
SERIES_OVERHEAD_BYTES = 600 # the RingSeries object, its arrays' headers, the LRU slot
STATS_ANSWER_BYTES = 64 * 1024  # one cached statistics answer (56 pairs of 10 figures, as dicts)
BASELINE_BYTES = 160 * 1024 * 1024  # interpreter, libraries, web server, idle tasks


@dataclass(frozen=True, slots=True)
class Budget:
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "total_mb": round(self.total / 2**20, 1),
            "parts_mb": {k: round(v / 2**20, 2) for k, v in self.parts.items()},
        }


def compute_budget(config: Config) -> Budget:
    ch = config.channels
    win = config.windows
    capacity = max(1, win.length_s // win.resolution_s)
    per_shard = math.ceil(win.max_series / win.shards)
    series = win.shards * per_shard
    parts = {
        "baseline": BASELINE_BYTES,
        "windows_quotes": series * (capacity * 2 * 8 + SERIES_OVERHEAD_BYTES),
        "windows_spreads": series * (capacity * 8 + SERIES_OVERHEAD_BYTES),
        "shard_inboxes": win.shards * ch.shard_input_keys * RECORD_BYTES,
        "shard_queries": win.shards * ch.shard_queries * 256,
        "stats_cache": win.shards * STATS_CACHED * STATS_ANSWER_BYTES,
        "recorder_input": ch.recorder_input * RECORD_BYTES if config.recorder.enabled else 0,
        "recorder_buffers": (config.recorder.max_buffered_rows * RECORDER_ROW_BYTES
                             if config.recorder.enabled else 0),
        "hub_states": ch.hub_state_keys * TOPIC_STATE_BYTES,
        "hub_events": ch.hub_events * RECORD_BYTES,
        "hub_control": ch.hub_control * 256,
        "session_outboxes": config.feed.max_sessions * config.feed.outbox_frames * FRAME_BYTES,
        "socket_queues": 64 * ch.socket_queue * 1_024,
    }
    return Budget(parts)


def check_budget(config: Config) -> Budget:
    """The budget, or ConfigError when it exceeds the configured ceiling."""
    budget = compute_budget(config)
    ceiling = int(config.memory_ceiling_mb * 2**20)
    if budget.total > ceiling:
        biggest = sorted(budget.parts.items(), key=lambda kv: -kv[1])[:3]
        detail = ", ".join(f"{k}={v / 2**20:.0f} MB" for k, v in biggest)
        raise ConfigError(
            f"memory_ceiling_mb: the configured bounds need up to {budget.total / 2**20:.0f} MB, "
            f"over the ceiling of {config.memory_ceiling_mb:.0f} MB (largest: {detail}); "
            "lower those bounds or raise the ceiling"
        )
    return budget
