"""The memory budget, computed from the configuration alone (FAILURE_MODES #1, #16, #17).

Every bounded structure contributes ``bound x bytes per item``. Per-item sizes are
upper estimates of the Python objects involved (a Quote with its floats, ints and dict
slot is about 300 bytes); ring buffers are exact (float64 arrays allocated at creation).
``bench/`` measures real RSS against these figures; ``python -m bench.perf_memory``
measures three of them directly (figures as of issue 8):

* a buffered recorder row: 75 B (quote), 139 B (trade with a 24-character id), 126 B
  (opportunity), tracemalloc and RSS alike -> :data:`RECORDER_ROW_BYTES` 256 (was 400);
* a window series' fixed part: 534 B traced, 567 B RSS -> :data:`SERIES_OVERHEAD_BYTES`;
* a feed session, outbox contents apart: 29.9 KiB idle, 35.3 KiB on five topics (RSS
  slope over 0 to 1,000 sessions) -> :data:`SESSION_BYTES` plus
  :data:`SUBSCRIPTION_BYTES` per topic it may hold (counted until then nowhere but in
  the baseline).

A configuration whose budget exceeds ``memory_ceiling_mb`` is refused at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from actors.config import Config, ConfigError
from actors.shard import STATS_CACHED

RECORD_BYTES = 320          # a Quote/Trade/Opportunity in a channel, with its key
RECORDER_ROW_BYTES = 256    # one buffered row across the recorder's column lists
TOPIC_STATE_BYTES = 2_048   # one topic payload held by the hub
MSGPACK_FLOAT_BYTES = 9     # a float64 in msgpack (None is 1 byte)
OPPORTUNITY_ROW_BYTES = 400 # one opportunity row in a frame, msgpack, keys included
SERIES_OVERHEAD_BYTES = 600 # the RingSeries object, its arrays' headers, the LRU slot
STATS_ANSWER_BYTES = 64 * 1024  # one cached statistics answer (56 pairs of 10 figures, as dicts)
SESSION_BYTES = 40 * 1024   # one feed session's connection, tasks and state, outbox contents apart
SUBSCRIPTION_BYTES = 2_048  # one topic a session follows (its sets, the hub's index)
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


def compute_budget(config: Config, *, nats: bool = False) -> Budget:
    """``nats``: a scale-out role's process, which also holds the NATS client's buffers."""
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
        "session_outboxes": config.feed.max_sessions * (config.feed.outbox_bytes + max_frame_bytes(config)),
        "sessions": config.feed.max_sessions * (SESSION_BYTES
                                                + config.feed.max_topics_per_session * SUBSCRIPTION_BYTES),
        "socket_queues": 64 * ch.socket_queue * 1_024,
        # outbound buffer + the quote subscription's pending bytes + the peers' and the
        # publish acks' subscriptions (actors/bridge.py sets those two)
        "nats": (config.nats.max_outbound_bytes + config.nats.max_pending_bytes + (48 << 20)
                 if nats else 0),
    }
    return Budget(parts)


def window_snapshot_bytes(config: Config) -> int:
    """Upper bound of a ``window:<SYMBOL>`` snapshot frame: bid and ask of every enabled
    venue and the best net spread, one float per slot each, plus the slot times."""
    capacity = max(1, config.windows.length_s // config.windows.resolution_s)
    columns = 2 * len(config.enabled_venues()) + 2
    return capacity * columns * MSGPACK_FLOAT_BYTES + 1_024


def max_frame_bytes(config: Config) -> int:
    """The largest single frame the hub can queue: an outbox always takes one frame
    when empty, so each holds at most ``outbox_bytes`` plus this."""
    venues = len(config.enabled_venues())
    return max(window_snapshot_bytes(config),
               config.spreads.top_n * OPPORTUNITY_ROW_BYTES + 1_024,
               venues * venues * 120 + 1_024)  # a spreads:<SYMBOL> frame: every ordered pair


def check_budget(config: Config, *, nats: bool = False) -> Budget:
    """The budget, or ConfigError when it exceeds the configured ceiling."""
    budget = compute_budget(config, nats=nats)
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
