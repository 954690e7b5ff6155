"""Process vitals for /health: event-loop lag, task count, RSS.

The lag monitor is an actor that sleeps a fixed interval and measures how late it
wakes up; a late wake-up means something held the event loop (blocking I/O, a long
computation) for that long (FAILURE_MODES #20).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psutil
import trio


@dataclass(slots=True)
class LoopLag:
    """Written only by :func:`run_loop_monitor`."""

    interval_s: float = 0.1
    last_s: float = 0.0
    max_s: float = 0.0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=600))

    def snapshot(self) -> dict[str, Any]:
        recent = sorted(self.recent)
        p99 = recent[min(len(recent) - 1, int(len(recent) * 0.99))] if recent else 0.0
        return {
            "last_ms": round(self.last_s * 1000, 3),
            "p99_ms": round(p99 * 1000, 3),
            "max_ms": round(self.max_s * 1000, 3),
        }


async def run_loop_monitor(lag: LoopLag, *,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    while True:
        before = trio.current_time()
        await trio.sleep(lag.interval_s)
        late = max(0.0, trio.current_time() - before - lag.interval_s)
        lag.last_s = late
        lag.recent.append(late)
        if late > lag.max_s:
            lag.max_s = late


def task_count() -> int:
    """Tasks alive in this trio run, found by walking the task tree from the root."""
    root = trio.lowlevel.current_root_task()
    if root is None:
        return 0
    count = 0
    stack = [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)
