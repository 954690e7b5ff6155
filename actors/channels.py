"""Bounded channels between actors, each with one declared overflow policy.

Every edge of the pipeline is one of these, sized from ``config.toml``; nothing here
can grow without limit. The three policies (see docs/architecture.md for which edge
uses which):

* ``BLOCK``: :class:`BlockingChannel`, a trio memory channel; the sender waits. Used
  only where the receiver is known to be fast and the sender may wait (control edges).
* ``CONFLATE``: :class:`ConflatingChannel`, the latest value per key; a newer value
  replaces a pending older one (counted as ``conflated``). The key space is bounded:
  a value for a new key past ``capacity`` is dropped and counted.
* ``DROP``: :class:`DropChannel`, a FIFO of items; items past ``capacity`` are dropped
  and counted, never queued.

Conflating and drop channels hand items over in batches: a receiver gets everything
pending in one call, so records never cross an edge one per await. Senders never
await; a put is a plain method call and cannot block the sending actor.

Closing: :meth:`close` is called by whoever knows that no more items will come. Puts
after that are dropped and counted; receivers drain what is pending and then get
:class:`trio.EndOfChannel`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import trio

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Policy(enum.Enum):
    BLOCK = "block"
    CONFLATE = "conflate"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class EdgeStatistics:
    """A snapshot of one edge's counters, as shown on ``/health``."""

    name: str
    policy: Policy
    capacity: int
    used: int
    peak: int
    delivered: int
    dropped: int
    conflated: int

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "policy": self.policy.value,
            "capacity": self.capacity,
            "used": self.used,
            "peak": self.peak,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "conflated": self.conflated,
        }


class Edge(Protocol):
    name: str

    def statistics(self) -> EdgeStatistics: ...


def _check_capacity(name: str, capacity: int) -> None:
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"edge {name!r}: capacity must be a positive integer, got {capacity!r}")


class DropChannel(Generic[T]):
    """A bounded FIFO of items; overflow is dropped and counted.

    Any number of actors may put; receivers take batches. ``capacity`` counts items,
    not batches, so the memory bound is ``capacity`` items whatever the batch sizes.
    """

    def __init__(self, name: str, capacity: int) -> None:
        _check_capacity(name, capacity)
        self.name = name
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._peak = 0
        self._delivered = 0
        self._dropped = 0

    def put_nowait(self, items: Iterable[T]) -> int:
        """Queue as many of ``items`` as fit; drop and count the rest. Returns how many fit."""
        if self._closed:
            n = sum(1 for _ in items)
            self._dropped += n
            return 0
        room = self.capacity - len(self._items)
        accepted = 0
        for item in items:
            if accepted < room:
                self._items.append(item)
                accepted += 1
            else:
                self._dropped += 1
        if accepted:
            if len(self._items) > self._peak:
                self._peak = len(self._items)
            self._lot.unpark_all()
        return accepted

    def put_one_nowait(self, item: T) -> bool:
        return self.put_nowait((item,)) == 1

    def receive_batch_nowait(self, max_items: int | None = None) -> list[T]:
        """Take up to ``max_items`` pending items (all when None); may return an empty list."""
        items = self._items
        if max_items is None or max_items >= len(items):
            batch = list(items)
            items.clear()
        else:
            batch = [items.popleft() for _ in range(max_items)]
        self._delivered += len(batch)
        return batch

    async def receive_batch(self, max_items: int | None = None) -> list[T]:
        """Wait for at least one item, then take up to ``max_items`` of them.

        Raises :class:`trio.EndOfChannel` once the channel is closed and drained.
        """
        await trio.lowlevel.checkpoint()
        while not self._items:
            if self._closed:
                raise trio.EndOfChannel
            await self._lot.park()
        return self.receive_batch_nowait(max_items)

    def close(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def statistics(self) -> EdgeStatistics:
        return EdgeStatistics(
            self.name, Policy.DROP, self.capacity, len(self._items), self._peak,
            self._delivered, self._dropped, 0,
        )


class ConflatingChannel(Generic[K, V]):
    """The latest value per key; receivers take every pending key at once.

    At most ``capacity`` keys are pending. A newer value for a pending key replaces the
    older one, or, when ``merge`` is given and returns a value for the key, is combined
    with it (``merge(key, older, newer)``; for values that are partial updates, like the
    slots of a window delta); either way counted as ``conflated``. A value for a new key
    when ``capacity`` keys are pending is dropped (counted as ``dropped``).
    """

    def __init__(self, name: str, capacity: int,
                 merge: Callable[[K, V, V], V | None] | None = None) -> None:
        _check_capacity(name, capacity)
        self.name = name
        self.capacity = capacity
        self._merge = merge
        self._pending: dict[K, V] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._peak = 0
        self._delivered = 0
        self._dropped = 0
        self._conflated = 0

    def put_nowait(self, key: K, value: V) -> bool:
        """Set the pending value of ``key``. Returns False when it was dropped."""
        pending = self._pending
        if self._closed:
            self._dropped += 1
            return False
        if key in pending:
            self._conflated += 1
            if self._merge is not None:
                merged = self._merge(key, pending[key], value)
                if merged is not None:
                    value = merged
        elif len(pending) >= self.capacity:
            self._dropped += 1
            return False
        pending[key] = value
        if len(pending) > self._peak:
            self._peak = len(pending)
        self._lot.unpark_all()
        return True

    def receive_batch_nowait(self) -> dict[K, V]:
        batch = self._pending
        self._pending = {}
        self._delivered += len(batch)
        return batch

    async def receive_batch(self) -> dict[K, V]:
        """Wait until some key is pending, then take all pending values, oldest key first.

        Raises :class:`trio.EndOfChannel` once the channel is closed and drained.
        """
        await trio.lowlevel.checkpoint()
        while not self._pending:
            if self._closed:
                raise trio.EndOfChannel
            await self._lot.park()
        return self.receive_batch_nowait()

    def close(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    def __len__(self) -> int:
        return len(self._pending)

    def statistics(self) -> EdgeStatistics:
        return EdgeStatistics(
            self.name, Policy.CONFLATE, self.capacity, len(self._pending), self._peak,
            self._delivered, self._dropped, self._conflated,
        )


class BlockingChannel(Generic[T]):
    """A trio memory channel with a bound and a peak counter; the sender waits when full.

    ``try_send`` is the non-blocking variant for senders that must never wait: it
    returns False (counted as dropped) when the channel is full, so the caller can
    answer "busy" instead of losing the item silently.
    """

    def __init__(self, name: str, capacity: int) -> None:
        _check_capacity(name, capacity)
        self.name = name
        self.capacity = capacity
        self._send, self._receive = trio.open_memory_channel[T](capacity)
        self._peak = 0
        self._delivered = 0
        self._dropped = 0

    def _note_used(self) -> None:
        used = self._send.statistics().current_buffer_used
        if used > self._peak:
            self._peak = used

    async def send(self, item: T) -> None:
        await self._send.send(item)
        self._note_used()

    def try_send(self, item: T) -> bool:
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self._dropped += 1
            return False
        self._note_used()
        return True

    async def receive(self) -> T:
        item = await self._receive.receive()
        self._delivered += 1
        return item

    def receive_nowait(self) -> T:
        item = self._receive.receive_nowait()
        self._delivered += 1
        return item

    async def receive_batch(self) -> list[T]:
        """Wait for one item, then take every item pending behind it (one scheduling
        point for the lot, as the other channels' ``receive_batch``).

        Raises :class:`trio.EndOfChannel` once the channel is closed and drained.
        """
        batch = [await self.receive()]
        while True:
            try:
                batch.append(self.receive_nowait())
            except trio.WouldBlock:
                return batch

    def statistics(self) -> EdgeStatistics:
        used = self._send.statistics().current_buffer_used
        return EdgeStatistics(
            self.name, Policy.BLOCK, self.capacity, used, self._peak,
            self._delivered, self._dropped, 0,
        )


class Latest(Generic[T]):
    """A single latest value with a version; readers wait for a newer one.

    The writer replaces the value (an immutable object) as a whole; readers never see a
    half-built one. Holds one value, so it is bounded by construction.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._value: T | None = None
        self._version = 0
        self._lot = trio.lowlevel.ParkingLot()

    def set(self, value: T) -> None:
        self._value = value
        self._version += 1
        self._lot.unpark_all()

    @property
    def version(self) -> int:
        return self._version

    def get(self) -> T | None:
        return self._value

    async def wait_newer(self, version: int) -> tuple[int, T]:
        """Wait until the version is greater than ``version``; return (version, value)."""
        await trio.lowlevel.checkpoint()
        while self._version <= version or self._value is None:
            await self._lot.park()
        return self._version, self._value
