"""Process vitals for /health: event-loop lag, task count, RSS; and the heap trimmer.

The lag monitor is an actor that sleeps a fixed interval and measures how late it
wakes up; a late wake-up means something held the event loop (blocking I/O, a long
computation) for that long (FAILURE_MODES #20).

The heap trimmer is an actor that asks glibc to give the free pages it holds back to
the OS (``malloc_trim(0)``) every ``server.malloc_trim_interval_s``. Why: glibc keeps
what a burst freed (a thousand sessions' batched messages held while their clients
lag, a venue's snapshots after a reconnect storm) in its heap, where it counts in RSS
until the very top of the heap is free. The soak saw RSS rise and fall in 20-65 MB
steps that way while the heap in use stayed flat, so RSS measured the worst burst so
far, not what the process holds. A trim costs ~1 ms (8 ms the first time on a 90 MB
heap with 66 MB to give back) and runs in a worker thread; where there is no glibc
(musl, macOS) the actor does nothing and /health says so. pyarrow allocates from the
same heap (``ARROW_DEFAULT_MEMORY_POOL=system``, set in :mod:`actors`), so what an hourly
compaction freed goes back too; /health names pyarrow's allocator beside the trims.
"""

from __future__ import annotations

import ctypes
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import pyarrow
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


def glibc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    trim: Callable[[int], int] = fn
    return trim


@dataclass(slots=True)
class HeapTrim:
    """Written only by :func:`run_heap_trimmer`."""

    interval_s: float = 30.0
    available: bool = False
    trims: int = 0
    released_bytes: int = 0  # RSS given back, summed over the trims that lowered it
    last_released_bytes: int = 0
    last_ms: float = 0.0
    max_ms: float = 0.0
    arrow_pool: str = ""  # pyarrow's allocator: "system" puts its memory in the trimmed heap

    def snapshot(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "arrow_pool": self.arrow_pool,
            "interval_s": self.interval_s,
            "trims": self.trims,
            "released_mb": round(self.released_bytes / 2**20, 1),
            "last_released_mb": round(self.last_released_bytes / 2**20, 1),
            "last_ms": round(self.last_ms, 3),
            "max_ms": round(self.max_ms, 3),
        }


async def run_heap_trimmer(state: HeapTrim,
                           find_trim: Callable[[], Callable[[int], int] | None] = glibc_malloc_trim, *,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Every ``state.interval_s``, give glibc's free heap pages back to the OS."""
    trim = find_trim()
    state.available = trim is not None and state.interval_s > 0
    state.arrow_pool = pyarrow.default_memory_pool().backend_name
    task_status.started()
    if trim is None or state.interval_s <= 0:
        await trio.sleep_forever()
        return
    while True:
        await trio.sleep(state.interval_s)
        before = rss_bytes()
        started = time.perf_counter()
        # in a worker thread: ctypes lets go of the GIL, so the loop runs on meanwhile
        await trio.to_thread.run_sync(trim, 0)
        took_ms = (time.perf_counter() - started) * 1000
        released = max(0, before - rss_bytes())
        state.trims += 1
        state.last_ms = took_ms
        state.max_ms = max(state.max_ms, took_ms)
        state.last_released_bytes = released
        state.released_bytes += released
