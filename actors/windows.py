"""Rolling windows: fixed-capacity ring buffers with a series cap and a TTL.

A :class:`RingSeries` holds ``capacity`` slots of ``width`` float64 columns at a fixed
resolution (1 s by default); memory is allocated once, at creation, and never grows.
A :class:`SeriesStore` holds at most ``max_series`` of them, evicting the least recently
updated one when a new series would exceed the cap, and dropping series not updated
for ``ttl`` (FAILURE_MODES #16). Empty slots hold NaN.

Owned by one shard actor; nothing here is shared or locked.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

K = TypeVar("K", bound=Hashable)
NAN = math.nan
BYTES_PER_VALUE = 8
FloatArray = npt.NDArray[np.float64]


class RingSeries:
    """``width`` columns over the last ``capacity`` slots; slot numbers are absolute."""

    __slots__ = ("capacity", "columns", "head", "last_update_ns", "mode_max")

    def __init__(self, capacity: int, width: int, *, mode_max: bool = False) -> None:
        if capacity < 1 or width < 1:
            raise ValueError("capacity and width must be >= 1")
        self.capacity = capacity
        self.columns = [array("d", [NAN]) * capacity for _ in range(width)]
        self.head = -1
        self.last_update_ns = 0
        #: when True a slot keeps the maximum of the values recorded in it, else the last
        self.mode_max = mode_max

    @property
    def nbytes(self) -> int:
        return self.capacity * len(self.columns) * BYTES_PER_VALUE

    def record(self, slot: int, values: Sequence[float], now_ns: int) -> None:
        capacity = self.capacity
        if self.head < 0:
            self.head = slot
        elif slot > self.head:
            gap = slot - self.head
            for column in self.columns:
                if gap >= capacity:
                    for i in range(capacity):
                        column[i] = NAN
                else:
                    for s in range(self.head + 1, slot + 1):
                        column[s % capacity] = NAN
            self.head = slot
        elif slot <= self.head - capacity:
            return
        index = slot % capacity
        for column, value in zip(self.columns, values, strict=True):
            if self.mode_max:
                old = column[index]
                if not math.isnan(old) and old >= value:
                    continue
            column[index] = value
        self.last_update_ns = now_ns

    def arrays(self, first_slot: int, last_slot: int) -> list[FloatArray]:
        """Each column's values for slots ``first_slot..last_slot`` as new float64 arrays
        (NaN where empty); the ring itself is only read."""
        capacity = self.capacity
        slots = np.arange(first_slot, last_slot + 1)
        inside = (slots <= self.head) & (slots > self.head - capacity)
        out: list[FloatArray] = []
        for column in self.columns:
            ring = np.frombuffer(column, dtype=np.float64)
            values = np.full(len(slots), np.nan)
            values[inside] = ring[slots[inside] % capacity]
            out.append(values)
        return out

    def read(self, first_slot: int, last_slot: int) -> list[list[float | None]]:
        """Each column's values for slots ``first_slot..last_slot`` (None where empty)."""
        capacity = self.capacity
        out: list[list[float | None]] = []
        for column in self.columns:
            values: list[float | None] = []
            for s in range(first_slot, last_slot + 1):
                if s > self.head or s <= self.head - capacity:
                    values.append(None)
                else:
                    v = column[s % capacity]
                    values.append(None if math.isnan(v) else v)
            out.append(values)
        return out


class SeriesStore(Generic[K]):
    """At most ``max_series`` ring series, least recently updated evicted first."""

    def __init__(self, max_series: int, capacity: int, width: int, *, mode_max: bool = False) -> None:
        if max_series < 1:
            raise ValueError("max_series must be >= 1")
        self.max_series = max_series
        self.capacity = capacity
        self.width = width
        self.mode_max = mode_max
        self._series: OrderedDict[K, RingSeries] = OrderedDict()
        self.evicted_lru = 0
        self.evicted_ttl = 0

    def record(self, key: K, slot: int, values: Sequence[float], now_ns: int) -> None:
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                self._series.popitem(last=False)
                self.evicted_lru += 1
            series = RingSeries(self.capacity, self.width, mode_max=self.mode_max)
            self._series[key] = series
        else:
            self._series.move_to_end(key)
        series.record(slot, values, now_ns)

    def get(self, key: K) -> RingSeries | None:
        return self._series.get(key)

    def values(self) -> list[RingSeries]:
        """The series, least recently updated first (a copy of the order)."""
        return list(self._series.values())

    def expire(self, older_than_ns: int) -> int:
        """Drop series last updated before ``older_than_ns``; returns how many."""
        dropped = 0
        while self._series:
            key, series = next(iter(self._series.items()))
            if series.last_update_ns >= older_than_ns:
                break
            del self._series[key]
            dropped += 1
        self.evicted_ttl += dropped
        return dropped

    def __len__(self) -> int:
        return len(self._series)

    def bytes_per_series(self) -> int:
        return self.capacity * self.width * BYTES_PER_VALUE

    @property
    def nbytes(self) -> int:
        return len(self._series) * self.bytes_per_series()
