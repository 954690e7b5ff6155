"""Replay: recorded quotes fed through the live pipeline as if a venue sent them.

``spreadwatch replay`` runs the whole runtime (shards, hub, web, UI) on a
:class:`ReplayClock` that maps the event loop's time to recorded time,
``clock = t0 + (now - w0) * speed``, and starts :func:`run_replay` in place of discovery
and the venue actors. The replay actor reads the quotes under ``data_dir`` in ``recv_ts``
order and hands each to the shards (:class:`~actors.connector.QuoteSinks`) when the clock
reaches its ``recv_ts``; quotes keep their recorded ``recv_ts``. Since the shards decide
on event time, replaying a recorded hour gives the opportunities that were recorded live,
provided the live shards saw every recorded quote (their inboxes conflate a quote that a
newer one of the same venue and symbol overtakes; a replay never does: it hands a quote
over only once its shard has applied the previous one, and holds the clock back while it
reads, see :class:`ReplayClock`). The rate is therefore bounded by the shards, not by
``--speed`` alone.

Reading: hour by hour (the recorder's reading rule, :func:`~actors.recorder.hour_files`),
each hour in as many time slices as keep one read under ``max_rows_per_read`` rows
(counted from the file footers), each slice sorted by ``recv_ts`` in a worker thread and
handed over in chunks of ``chunk_rows``. Memory stays at one slice.

Resource handling: owns nothing but its :class:`ReplayStatus`. When every quote is sent
it marks the status finished and waits (the UI keeps showing the last state) until
cancelled. Error handling: ``OSError`` and Arrow errors reading a slice are counted,
logged and the slice is skipped (one bad file does not end a replay); anything else is a
bug and propagates.
"""

from __future__ import annotations

import logging
import math
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import trio

from actors.connector import QuoteSinks, shard_of
from actors.recorder import NS_PER_HOUR, SCHEMAS, hour_dirs, hour_files
from actors.records import Quote

__all__ = ["ReplayClock", "ReplayStatus", "recorded_span", "run_replay"]

logger = logging.getLogger(__name__)


class ReplayClock:
    """Recorded time in ns: ``t0_ns + (trio.current_time() - w0) * speed``, held back so it
    never passes a quote the replay has not handed over yet.

    The hold is what makes a replay deterministic when reading lags (a slow disk, a worker
    thread): the shards never sweep past the time of a quote still to come, so every quote
    is applied at its own ``recv_ts`` as it was live. It starts at ``t0_ns``; the replay
    actor moves it forward (:meth:`hold`) and releases it when every quote is sent.

    Must be created inside ``trio.run`` (``w0`` defaults to the current trio time). Use it
    as the runtime's ``clock_ns``.
    """

    __slots__ = ("hold_ns", "speed", "t0_ns", "w0")

    def __init__(self, t0_ns: int, speed: float = 1.0, w0: float | None = None) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        self.t0_ns = t0_ns
        self.speed = speed
        self.w0 = trio.current_time() if w0 is None else w0
        self.hold_ns: int | None = t0_ns

    def mapped(self) -> int:
        """Recorded time from the loop's time alone, ignoring the hold."""
        return self.t0_ns + round((trio.current_time() - self.w0) * 1e9 * self.speed)

    def __call__(self) -> int:
        now = self.mapped()
        hold = self.hold_ns
        return now if hold is None or now <= hold else hold

    def hold(self, at_ns: int | None) -> None:
        """Let the clock reach ``at_ns`` at most (never lower than before); None releases it."""
        if at_ns is None or self.hold_ns is None:
            self.hold_ns = at_ns
        elif at_ns > self.hold_ns:
            self.hold_ns = at_ns

    def deadline(self, at_ns: int) -> float:
        """The trio time at which the clock reads ``at_ns``."""
        return self.w0 + (at_ns - self.t0_ns) / 1e9 / self.speed


@dataclass(slots=True)
class ReplayStatus:
    """The replay's progress, read by ``/health``; only the replay actor writes it."""

    from_ns: int = 0
    to_ns: int = 0
    speed: float = 1.0
    hours: int = 0
    quotes_sent: int = 0
    last_recv_ts: int = 0
    read_errors: int = 0
    last_error: str | None = None
    finished: bool = False

    def snapshot(self) -> dict[str, Any]:
        return {
            "from_ms": self.from_ns // 1_000_000, "to_ms": self.to_ns // 1_000_000,
            "speed": self.speed, "hours": self.hours, "quotes_sent": self.quotes_sent,
            "position_ms": self.last_recv_ts // 1_000_000, "read_errors": self.read_errors,
            "last_error": self.last_error, "finished": self.finished,
        }


def recorded_span(data_dir: pathlib.Path) -> tuple[int, int] | None:
    """(first, last) ``recv_ts`` of the recorded quotes, or None when there are none.

    Blocking. Reads only the ``recv_ts`` column of the first and last non-empty hours.
    """
    dirs = hour_dirs(data_dir, "quotes")
    first = last = None
    for _hour, path in dirs:
        first = _recv_ts_bound(path, pc.min)
        if first is not None:
            break
    for _hour, path in reversed(dirs):
        last = _recv_ts_bound(path, pc.max)
        if last is not None:
            break
    if first is None or last is None:
        return None
    return first, last


def _recv_ts_bound(hour_dir: pathlib.Path, fn: Callable[[Any], Any]) -> int | None:
    live, _ = hour_files(hour_dir)
    if not live:
        return None
    column = ds.dataset([str(p) for p in live], format="parquet").to_table(columns=["recv_ts"])
    value = fn(column.column("recv_ts")).as_py()
    return None if value is None else int(value)


def _slices(hour_dir: pathlib.Path, hour: int, from_ns: int, to_ns: int,
            max_rows: int) -> tuple[list[str], list[tuple[int, int]]]:
    live, _ = hour_files(hour_dir)
    files = [str(p) for p in live]
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    start = max(from_ns, hour * NS_PER_HOUR)
    end = min(to_ns, (hour + 1) * NS_PER_HOUR)
    count = max(1, math.ceil(rows / max_rows))
    step = math.ceil((end - start) / count)
    return files, [(a, min(end, a + step)) for a in range(start, end, step)]


def _read_slice(files: list[str], start_ns: int, end_ns: int) -> pa.Table:
    dataset = ds.dataset(files, schema=SCHEMAS["quotes"], format="parquet")
    table = dataset.to_table(filter=(pc.field("recv_ts") >= start_ns) & (pc.field("recv_ts") < end_ns))
    return table.sort_by([("recv_ts", "ascending"), ("venue", "ascending"), ("seq", "ascending")])


def _to_quotes(table: pa.Table) -> list[Quote]:
    columns = [table.column(name).to_pylist() for name in SCHEMAS["quotes"].names]
    return [Quote(*row) for row in zip(*columns, strict=True)]


async def run_replay(
    sinks: QuoteSinks,
    *,
    data_dir: pathlib.Path,
    clock: ReplayClock,
    from_ns: int,
    to_ns: int,
    status: ReplayStatus | None = None,
    max_rows_per_read: int = 1_000_000,
    chunk_rows: int = 4096,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Feed the quotes recorded in ``[from_ns, to_ns)`` to ``sinks`` on ``clock``; see module doc."""
    status = status if status is not None else ReplayStatus()
    status.from_ns, status.to_ns, status.speed = from_ns, to_ns, clock.speed
    status.finished = False
    dirs = await trio.to_thread.run_sync(hour_dirs, data_dir, "quotes")
    hours = [(h, p) for h, p in dirs if (h + 1) * NS_PER_HOUR > from_ns and h * NS_PER_HOUR < to_ns]
    status.hours = len(hours)
    task_status.started()
    for hour, path in hours:
        try:
            files, slices = await trio.to_thread.run_sync(_slices, path, hour, from_ns, to_ns,
                                                          max_rows_per_read)
        except (OSError, ValueError, pa.ArrowException) as exc:
            _note_error(status, f"listing {path}: {exc}")
            continue
        for start, end in slices:
            try:
                table = await trio.to_thread.run_sync(_read_slice, files, start, end)
            except (OSError, ValueError, pa.ArrowException) as exc:
                _note_error(status, f"reading {path}: {exc}")
                continue
            for offset in range(0, table.num_rows, chunk_rows):
                quotes = await trio.to_thread.run_sync(_to_quotes, table.slice(offset, chunk_rows))
                await _feed(quotes, sinks, clock, status)
    clock.hold(None)
    status.finished = True
    logger.info("replay: finished, %d quotes sent", status.quotes_sent)
    await trio.sleep_forever()


async def _feed(quotes: list[Quote], sinks: QuoteSinks, clock: ReplayClock,
                status: ReplayStatus) -> None:
    """Hand each quote over at its time, and only once its shard has applied the previous
    one: the conflating shard inbox never replaces a replayed quote, whatever the speed."""
    shards = sinks.shards
    for quote in quotes:
        clock.hold(quote.recv_ts - 1)
        if clock.mapped() < quote.recv_ts:
            await trio.sleep_until(clock.deadline(quote.recv_ts))
        inbox = shards[shard_of(quote.symbol, len(shards))]
        sinks.quote(quote)
        status.quotes_sent += 1
        status.last_recv_ts = quote.recv_ts
        # A shard applies a batch in the same step as it takes it from its inbox.
        while len(inbox):
            await trio.lowlevel.checkpoint()
        clock.hold(quote.recv_ts)
    await trio.lowlevel.checkpoint()


def _note_error(status: ReplayStatus, message: str) -> None:
    status.read_errors += 1
    status.last_error = message
    logger.warning("replay: skipped: %s", message)
