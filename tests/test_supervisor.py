"""Supervision: readiness before 'started', restart with backoff, failures visible, clean stop."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from actors.monitor import task_count
from actors.supervisor import Supervisor


async def test_failing_actor_is_restarted_and_reported(autojump_clock: trio.testing.MockClock) -> None:
    runs: list[float] = []

    async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        runs.append(trio.current_time())
        task_status.started()
        await trio.sleep(1)
        if len(runs) < 4:
            raise RuntimeError(f"boom {len(runs)}")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        sup = Supervisor(nursery, backoff_initial_s=1.0, backoff_max_s=4.0)
        await sup.start("flaky", flaky)
        await trio.sleep(60)
        [info] = sup.snapshot()
        assert info["restarts"] == 3
        assert info["state"] == "running"
        assert info["last_error"] == "RuntimeError: boom 3"
        gaps = [b - a for a, b in itertools.pairwise(runs)]
        # each gap = 1 s of running + a jittered backoff in [d/2, d], d = 1, 2, 4
        for gap, ceiling in zip(gaps, (1.0, 2.0, 4.0), strict=True):
            assert 1 + ceiling / 2 <= gap <= 1 + ceiling
        nursery.cancel_scope.cancel()


async def test_start_waits_until_the_actor_is_ready(autojump_clock: trio.testing.MockClock) -> None:
    async def slow_start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(5)
        task_status.started()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        sup = Supervisor(nursery)
        before = trio.current_time()
        await sup.start("slow", slow_start)
        assert trio.current_time() - before == pytest.approx(5)
        assert sup.snapshot()[0]["state"] == "running"
        nursery.cancel_scope.cancel()


async def test_returning_actor_is_not_restarted_and_handles_finish() -> None:
    async def once(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async with trio.open_nursery() as nursery:
        sup = Supervisor(nursery)
        handle = await sup.start("once", once)
        await handle.wait()
        assert sup.snapshot()[0]["state"] == "stopped"


async def test_non_restartable_failure_before_ready_propagates() -> None:
    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise ValueError("bad wiring")

    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="bad wiring"), flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            sup = Supervisor(nursery)
            await sup.start("broken", broken, restart=False)


async def test_cancel_stops_an_actor_and_leaves_no_task(autojump_clock: trio.testing.MockClock) -> None:
    async def ticker(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as inner:
            inner.start_soon(trio.sleep_forever)
            while True:
                await trio.sleep(1)

    baseline = task_count()
    async with trio.open_nursery() as nursery:
        sup = Supervisor(nursery)
        handles = [await sup.start(f"t{i}", ticker) for i in range(10)]
        assert task_count() > baseline + 20
        for handle in handles:
            handle.cancel()
        for handle in handles:
            await handle.wait()
        assert {a["state"] for a in sup.snapshot()} == {"cancelled"}
    assert task_count() == baseline
