"""The heap trimmer (actors/monitor.py): glibc's freed heap goes back to the OS.

A burst of mid-sized buffers freed out of order leaves glibc holding their pages, and
RSS with them, until the top of the heap is free: the soak's RSS steps. The trimmer
must give those pages back, say on /health what it did, and do nothing (but say so)
where there is no ``malloc_trim`` or when it is turned off.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow
import pytest
import trio
import trio.testing

from actors.monitor import HeapTrim, glibc_malloc_trim, rss_bytes, run_heap_trimmer

MB = 2**20


def _leave_holes() -> list[bytes]:
    """~90 MB of 20-100 KB buffers (under glibc's mmap threshold, so on the heap), every
    other one freed: the free space is all holes, none of it at the top of the heap."""
    rng = random.Random(5)
    burst = [bytes(rng.randint(20_000, 100_000)) for _ in range(1800)]
    return burst[1::2]


@pytest.mark.skipif(glibc_malloc_trim() is None, reason="needs glibc's malloc_trim")
async def test_the_trimmer_gives_back_the_heap_a_burst_left_behind() -> None:
    kept = _leave_holes()
    held = rss_bytes()
    state = HeapTrim(interval_s=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_heap_trimmer, state)
        assert state.available
        with trio.fail_after(10):
            while state.trims < 2:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    # the first trim gave back most of the ~45 MB of holes; the second found little left
    assert state.released_bytes > 20 * MB, state.snapshot()
    assert held - rss_bytes() > 20 * MB
    assert state.last_released_bytes < state.released_bytes
    assert state.max_ms >= state.last_ms > 0
    snap = state.snapshot()
    assert snap["trims"] == 2 and snap["released_mb"] > 20 and snap["available"] is True
    assert sum(map(len, kept)) > 40 * MB  # what is still in use stays


@pytest.mark.parametrize("interval_s,find", [
    (30.0, lambda: None),              # no glibc: musl, macOS
    (0.0, glibc_malloc_trim),          # turned off in config.toml
])
async def test_without_malloc_trim_or_turned_off_it_says_so_and_only_waits(
        interval_s: float, find: Callable[[], Callable[[int], int] | None],
        autojump_clock: trio.testing.MockClock) -> None:
    state = HeapTrim(interval_s=interval_s)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_heap_trimmer, state, find)
        await trio.sleep(3600)
        assert state.snapshot()["available"] is False and state.trims == 0
        nursery.cancel_scope.cancel()  # it ends on cancellation like every actor


async def test_it_trims_every_interval_with_nothing_kept_back(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[int] = []

    def fake(pad: int) -> int:
        calls.append(pad)
        return 1

    state = HeapTrim(interval_s=30.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_heap_trimmer, state, lambda: fake)
        with trio.fail_after(1000):
            while state.trims < 3:
                await trio.sleep(1)
        # virtual time: no sooner than 30, 60 and 90 s (the clock jumps on while a trim
        # runs in its thread, so only the lower bound is exact)
        assert trio.current_time() >= 90
        nursery.cancel_scope.cancel()
    assert calls == [0, 0, 0]  # pad 0: keep no free space at the top of the heap either


def _arrow_pool_after_importing_actors(env: dict[str, str]) -> str:
    code = "import actors.recorder, pyarrow; print(pyarrow.default_memory_pool().backend_name)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[1], check=True)
    return proc.stdout.strip()


def test_pyarrow_allocates_from_the_heap_the_trimmer_trims() -> None:
    # In a fresh interpreter: pyarrow picks its allocator once, when first imported.
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    assert _arrow_pool_after_importing_actors(env) == "system"
    # an allocator the user chose is kept
    assert _arrow_pool_after_importing_actors({**env, "ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}) == "mimalloc"


async def test_health_names_pyarrows_allocator(autojump_clock: trio.testing.MockClock) -> None:
    state = HeapTrim(interval_s=30.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_heap_trimmer, state, lambda: None)
        nursery.cancel_scope.cancel()
    # what pyarrow really uses (in this process it depends on which test module imported
    # pyarrow first; the server imports actors first, as the test above does)
    assert state.snapshot()["arrow_pool"] == pyarrow.default_memory_pool().backend_name != ""
