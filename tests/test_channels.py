"""The three overflow policies: bounded by construction, drops counted, batches handed over."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors.channels import BlockingChannel, ConflatingChannel, DropChannel, Latest, Policy


async def test_drop_channel_keeps_capacity_and_counts_the_rest() -> None:
    ch = DropChannel[int]("rec", 5)
    assert ch.put_nowait(range(3)) == 3
    assert ch.put_nowait(range(10)) == 2
    stats = ch.statistics()
    assert (stats.used, stats.peak, stats.dropped, stats.policy) == (5, 5, 8, Policy.DROP)
    assert await ch.receive_batch(max_items=4) == [0, 1, 2, 0]
    assert await ch.receive_batch() == [1]
    assert ch.statistics().delivered == 5
    assert ch.statistics().used == 0


async def test_drop_channel_receiver_wakes_on_put_and_ends_after_close() -> None:
    ch = DropChannel[str]("rec", 10)
    got: list[list[str]] = []

    async def consume() -> None:
        while True:
            try:
                got.append(await ch.receive_batch())
            except trio.EndOfChannel:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        ch.put_nowait(["a", "b"])
        await trio.testing.wait_all_tasks_blocked()
        ch.put_nowait(["c"])
        ch.close()
    assert got == [["a", "b"], ["c"]]
    assert ch.put_nowait(["late"]) == 0
    assert ch.statistics().dropped == 1


async def test_conflating_channel_keeps_latest_per_key_and_caps_keys() -> None:
    ch = ConflatingChannel[str, int]("shard", 2)
    assert ch.put_nowait("a", 1)
    assert ch.put_nowait("a", 2)
    assert ch.put_nowait("b", 1)
    assert not ch.put_nowait("c", 1)  # a third key does not fit
    stats = ch.statistics()
    assert (stats.used, stats.conflated, stats.dropped, stats.peak) == (2, 1, 1, 2)
    assert await ch.receive_batch() == {"a": 2, "b": 1}
    assert ch.put_nowait("c", 3)
    assert ch.receive_batch_nowait() == {"c": 3}
    assert ch.statistics().delivered == 3


async def test_conflating_channel_receive_is_a_checkpoint_and_closes() -> None:
    ch = ConflatingChannel[str, int]("x", 4)
    ch.put_nowait("k", 1)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await ch.receive_batch()
    ch.close()
    assert await ch.receive_batch() == {"k": 1}
    with pytest.raises(trio.EndOfChannel):
        await ch.receive_batch()


async def test_blocking_channel_try_send_refuses_when_full() -> None:
    ch = BlockingChannel[int]("ctl", 2)
    assert ch.try_send(1) and ch.try_send(2)
    assert not ch.try_send(3)
    stats = ch.statistics()
    assert (stats.used, stats.peak, stats.dropped, stats.policy) == (2, 2, 1, Policy.BLOCK)
    assert await ch.receive() == 1
    await ch.send(4)
    assert ch.receive_nowait() == 2
    assert ch.receive_nowait() == 4


async def test_latest_wakes_readers_with_newest_value_only() -> None:
    cell = Latest[str]("plan")
    seen: list[tuple[int, str]] = []

    async def reader() -> None:
        version = 0
        for _ in range(2):
            version, value = await cell.wait_newer(version)
            seen.append((version, value))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        cell.set("a")
        cell.set("b")  # a reader that was not scheduled in between sees only the latest
        await trio.testing.wait_all_tasks_blocked()
        cell.set("c")
    assert seen == [(2, "b"), (3, "c")]


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        DropChannel("bad", capacity)
