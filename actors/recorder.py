"""The recorder actor: every quote, trade and opportunity event, written to Parquet.

Layout (see docs/architecture.md)::

    <data_dir>/<stream>/date=YYYY-MM-DD/hour=HH/part-<first_event_ns>-<run>-<seq>.parquet

``stream`` is one of :data:`STREAMS`; date and hour are UTC and come from each row's
event time: ``recv_ts`` for quotes and trades, ``closed_at`` when set (CLOSE) and
``opened_at`` otherwise (OPEN, UPDATE) for opportunities. Nothing else from a record
becomes part of a path: venues and symbols are column values only.

Columns are the record's fields in declaration order (:data:`SCHEMAS`); opportunities
add ``duration_ns``. Enums are lower-case strings (``"buy"``, ``"open"``). Timestamps
stay ``int64`` exactly as in :mod:`actors.records` (``venue_ts`` ms, 0 when the venue
gives none; every other time ns since the epoch, ``closed_at`` 0 while open), so rows
round-trip exactly and a 0 sentinel never turns into a bogus 1970 timestamp; each
field's ``unit`` is in the Arrow field metadata. Files are zstd-compressed and carry
``spreadwatch.schema`` (:data:`SCHEMA_VERSION`) and ``spreadwatch.stream`` in their
key-value metadata.

Rules:

* Rows are buffered columnar per (stream, hour): ``array.array`` for numbers (8 bytes
  a value, no Python objects kept alive), lists for strings. A flush writes one new
  file per buffered partition, every ``flush_interval_s`` and early once
  ``flush_rows`` rows are buffered.
* ``max_buffered_rows`` is a hard cap over all partitions: the recorder never takes
  more from its inbox than fits under it. While the disk fails and the cap is reached
  it stops receiving, so the inbox (a drop-and-count :class:`~actors.channels.DropChannel`)
  overflows and counts the drops; memory stays bounded.
* All file work (building tables, Parquet encoding, fsync, rename) runs in a worker
  thread through ``trio.to_thread.run_sync``; the event loop never blocks on the disk.
* Files appear atomically: a temp name readers ignore (``.<name>.tmp``), fsync,
  ``os.replace``, fsync of the directory. Temp files left by a crash are removed at
  start-up.
* Compaction: once an hour is closed (``compact_after_s`` past its end), a separate
  task of the recorder merges the hour's files into one ``compacted-*.parquet`` file
  (written atomically like any other file) whose key-value metadata lists the names of
  the files it replaces (``spreadwatch.replaces``), then deletes them. The reading
  rule, :func:`hour_files`: in an hour directory, a file named in the ``replaces`` list
  of a compacted file is not data. So a reader never sees a row twice nor misses one,
  whenever it lists the directory; a crash between the two steps leaves files that the
  rule hides and the next start-up deletes. Rows that arrive for an hour already
  compacted land in a new part file and are compacted again later.
* The recorder holds at most three files open at once: the flush writes one file at a time, and
  compaction reads one part at a time into its one output file.

Resource handling: the recorder owns its buffers, its compaction task and its
:class:`RecorderStatus`; it does not close its inbox. Periodic flushing is a deadline on
the receive, no timer task or thread.

Error handling: an ``OSError`` from the writer (disk full, permissions) is counted,
logged and retried with capped exponential backoff; the rows stay buffered and recording
resumes when the disk recovers. A compaction that fails is counted and logged; after an
``OSError`` the hour is tried again at the next check, after a file it cannot read or of
an older schema it is left uncompacted (still readable) until the next start-up. A
record that is not a Quote, Trade or Opportunity, or
whose fields have the wrong types, is counted in ``rows_rejected`` and skipped. On
cancellation the recorder drains its inbox and writes what it holds in a shielded scope
limited to ``shutdown_timeout_s``, then re-raises; rows it could not write by then are
counted in ``rows_abandoned`` and logged. When the inbox is closed and drained it writes
everything it holds and returns. Any other exception is a bug and propagates (after the
same best-effort final flush).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import pathlib
import re
import secrets
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, BinaryIO, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import trio

from actors.channels import DropChannel
from actors.records import Opportunity, OpportunityState, Quote, Side, Trade

__all__ = [
    "SCHEMAS",
    "SCHEMA_VERSION",
    "STREAMS",
    "AtomicParquetWriter",
    "CompactionResult",
    "PartitionWriter",
    "RecorderStatus",
    "compact_hour",
    "hour_dirs",
    "hour_files",
    "hour_of_dir",
    "partition_dir",
    "recover",
    "remove_temp_files",
    "run_recorder",
]

logger = logging.getLogger(__name__)

STREAMS = ("quotes", "trades", "opportunities")
SCHEMA_VERSION = "2"  # 2: opportunities gained mean_net_bps
TEMP_PREFIX = "."
TEMP_SUFFIX = ".parquet.tmp"
PART_PREFIX = "part-"
COMPACTED_PREFIX = "compacted-"
REPLACES_KEY = b"spreadwatch.replaces"

NS_PER_HOUR = 3_600 * 1_000_000_000
_MAX_INT64 = 2**63 - 1
# Records taken per receive: bounds the time one batch holds the event loop (~1.5 ms).
_MAX_BATCH = 1024


def _field(name: str, type_: pa.DataType, unit: str | None = None) -> pa.Field:
    return pa.field(name, type_, nullable=False, metadata={"unit": unit} if unit else None)


SCHEMAS: Mapping[str, pa.Schema] = MappingProxyType({
    "quotes": pa.schema([
        _field("venue", pa.string()),
        _field("symbol", pa.string()),
        _field("bid", pa.float64()),
        _field("bid_size", pa.float64()),
        _field("ask", pa.float64()),
        _field("ask_size", pa.float64()),
        _field("venue_ts", pa.int64(), "ms"),
        _field("recv_ts", pa.int64(), "ns"),
        _field("seq", pa.int64()),
    ]),
    "trades": pa.schema([
        _field("venue", pa.string()),
        _field("symbol", pa.string()),
        _field("price", pa.float64()),
        _field("size", pa.float64()),
        _field("side", pa.string()),
        _field("venue_ts", pa.int64(), "ms"),
        _field("recv_ts", pa.int64(), "ns"),
        _field("trade_id", pa.string()),
    ]),
    "opportunities": pa.schema([
        _field("symbol", pa.string()),
        _field("buy_venue", pa.string()),
        _field("sell_venue", pa.string()),
        _field("state", pa.string()),
        _field("gross_bps", pa.float64()),
        _field("net_bps", pa.float64()),
        _field("peak_net_bps", pa.float64()),
        _field("mean_net_bps", pa.float64()),
        _field("buy_price", pa.float64()),
        _field("buy_size", pa.float64()),
        _field("sell_price", pa.float64()),
        _field("sell_size", pa.float64()),
        _field("opened_at", pa.int64(), "ns"),
        _field("closed_at", pa.int64(), "ns"),
        _field("duration_ns", pa.int64(), "ns"),
    ]),
})
"""Arrow schema of each stream; the column order is the row order of the buffers."""

_SIDE_NAMES = MappingProxyType({side: side.name.lower() for side in Side})
_CLOSE = OpportunityState.CLOSE

Row = tuple[object, ...]


def _text(value: object) -> str:
    if type(value) is not str:
        raise TypeError(f"expected str, got {type(value).__name__}")
    return value


def _quote_row(q: Quote) -> tuple[int, Row]:
    return q.recv_ts, (
        _text(q.venue), _text(q.symbol), q.bid, q.bid_size, q.ask, q.ask_size,
        q.venue_ts, q.recv_ts, q.seq,
    )


def _trade_row(t: Trade) -> tuple[int, Row]:
    return t.recv_ts, (
        _text(t.venue), _text(t.symbol), t.price, t.size, _SIDE_NAMES[t.side],
        t.venue_ts, t.recv_ts, _text(t.trade_id),
    )


def _opportunity_row(o: Opportunity) -> tuple[int, Row]:
    event_ns = o.closed_at if o.state is _CLOSE and o.closed_at else o.opened_at
    return event_ns, (
        _text(o.symbol), _text(o.buy_venue), _text(o.sell_venue), o.state.value,
        o.gross_bps, o.net_bps, o.peak_net_bps, o.mean_net_bps, o.buy_price, o.buy_size,
        o.sell_price, o.sell_size, o.opened_at, o.closed_at, o.duration_ns,
    )


# type(record) -> (stream, row builder); exact types only, so a subclass cannot
# smuggle in a different layout.
_ROW_BUILDERS: Mapping[type, tuple[str, Callable[[Any], tuple[int, Row]]]] = MappingProxyType({
    Quote: ("quotes", _quote_row),
    Trade: ("trades", _trade_row),
    Opportunity: ("opportunities", _opportunity_row),
})


def _hour_of(event_ns: object) -> int:
    if type(event_ns) is not int or not 0 <= event_ns <= _MAX_INT64:
        raise ValueError(f"event time {event_ns!r} is not a non-negative int64 of ns")
    return event_ns // NS_PER_HOUR


def partition_dir(data_dir: pathlib.Path, stream: str, hour: int) -> pathlib.Path:
    """The directory of ``stream``'s partition for ``hour`` (hours since the epoch, UTC).

    Raises ValueError for a stream outside :data:`STREAMS`: only fixed names and
    formatted integers ever become path components.
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}; expected one of {STREAMS}")
    start = datetime.fromtimestamp(hour * 3_600, tz=UTC)
    return data_dir / stream / f"date={start:%Y-%m-%d}" / f"hour={start:%H}"


class PartitionWriter(Protocol):
    """Writes one table to ``path``; the recorder's only seam to the disk.

    Called in a worker thread, one call at a time. Returns the bytes written. Raises
    ``OSError`` when the file could not be written; then ``path`` must not exist.
    """

    def write(self, path: pathlib.Path, table: pa.Table, metadata: Mapping[bytes, bytes]) -> int:
        ...


@contextlib.contextmanager
def _atomic_file(final: pathlib.Path) -> Iterator[BinaryIO]:
    """A temp file beside ``final`` (``.<name>.tmp``, which readers and start-up ignore
    or remove); when the block ends normally it is fsynced and renamed over ``final``,
    when it raises (cancellation included) it is removed. The caller fsyncs the
    directory."""
    temp = final.parent / f"{TEMP_PREFIX}{final.name}.tmp"
    try:
        with open(temp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


class AtomicParquetWriter:
    """The real writer: a zstd Parquet file that appears atomically under ``path``.

    Writes ``.<name>.tmp`` in the same directory, fsyncs it, renames it over ``path``
    and fsyncs the directory, so a reader sees either no file or the complete file,
    and a file that is visible survives a crash. Directories it creates are fsynced
    into their parents as well.
    """

    def __init__(self, compression: str = "zstd") -> None:
        self.compression = compression

    def write(self, path: pathlib.Path, table: pa.Table, metadata: Mapping[bytes, bytes]) -> int:
        directory = path.parent
        _make_dirs_durable(directory)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        with _atomic_file(path) as f:
            pq.write_table(table, f, compression=self.compression)
            size = f.tell()
        _fsync_dir(directory)
        return size


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs_durable(directory: pathlib.Path) -> None:
    if directory.is_dir():
        return
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        _fsync_dir(path.parent)


def remove_temp_files(data_dir: pathlib.Path) -> int:
    """Delete temp files (``.*.parquet.tmp``) a crash left under each stream's directory.

    Returns how many were removed. Errors are logged, never raised: a directory that
    cannot be read is skipped, and the writer reports real trouble when it writes.
    """

    def log_walk_error(exc: OSError) -> None:
        logger.warning("recorder: cannot scan %s for temp files: %s", exc.filename, exc)

    removed = 0
    for stream in STREAMS:
        root = data_dir / stream
        try:
            if not root.is_dir():
                continue
        except OSError as exc:
            logger.warning("recorder: cannot scan %s for temp files: %s", root, exc)
            continue
        for dirpath, _dirnames, filenames in os.walk(root, onerror=log_walk_error):
            for name in filenames:
                if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                    try:
                        os.unlink(os.path.join(dirpath, name))
                    except OSError as exc:
                        logger.warning("recorder: cannot remove temp file: %s", exc)
                    else:
                        removed += 1
    return removed


_DATE_RE = re.compile(r"date=(\d{4})-(\d{2})-(\d{2})")
_HOUR_RE = re.compile(r"hour=(\d{2})")
_NAME_NS_RE = re.compile(r"(?:part|compacted)-(\d{1,19})-")
# Opportunities sort by when they opened, then closed; the others by receive time.
_SORT_KEYS: Mapping[str, list[tuple[str, str]]] = MappingProxyType({
    "quotes": [("recv_ts", "ascending")],
    "trades": [("recv_ts", "ascending")],
    "opportunities": [("opened_at", "ascending"), ("closed_at", "ascending")],
})


def hour_of_dir(hour_dir: pathlib.Path) -> int | None:
    """Hours since the epoch of a ``date=YYYY-MM-DD/hour=HH`` directory; None if not one."""
    date = _DATE_RE.fullmatch(hour_dir.parent.name)
    hour = _HOUR_RE.fullmatch(hour_dir.name)
    if date is None or hour is None:
        return None
    try:
        start = datetime(int(date[1]), int(date[2]), int(date[3]), int(hour[1]), tzinfo=UTC)
    except ValueError:
        return None
    return int(start.timestamp()) // 3_600


def hour_dirs(data_dir: pathlib.Path, stream: str) -> list[tuple[int, pathlib.Path]]:
    """Every hour directory of ``stream`` as (hour since the epoch, path), oldest first."""
    root = data_dir / stream
    found: list[tuple[int, pathlib.Path]] = []
    if stream not in STREAMS or not root.is_dir():
        return found
    for date_dir in root.iterdir():
        if not date_dir.name.startswith("date=") or not date_dir.is_dir():
            continue
        for path in date_dir.iterdir():
            hour = hour_of_dir(path)
            if hour is not None and path.is_dir():
                found.append((hour, path))
    found.sort()
    return found


def _data_names(hour_dir: pathlib.Path) -> list[str]:
    return sorted(
        name for name in os.listdir(hour_dir)
        if name.endswith(".parquet") and not name.startswith((TEMP_PREFIX, "_"))
    )


def _replaced_by(path: pathlib.Path) -> list[str]:
    raw = (pq.read_metadata(path).metadata or {}).get(REPLACES_KEY)
    if raw is None:
        return []
    names = json.loads(raw)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: malformed {REPLACES_KEY.decode()} metadata")
    return names


def hour_files(hour_dir: pathlib.Path) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """The reading rule: (files holding the hour's data, files superseded by a compaction).

    A data file is a ``*.parquet`` file whose name starts neither with ``.`` (temp files)
    nor ``_``. A file named in the ``spreadwatch.replaces`` metadata of a ``compacted-*``
    file of the same directory is superseded: its rows are in that compacted file. Readers
    read the first list only. A reader that lists the directory while a compaction runs
    may find a listed file gone when it opens it (``FileNotFoundError``): it lists again.
    Raises ``OSError`` when the directory cannot be listed or a compacted file's footer
    cannot be read.
    """
    names = _data_names(hour_dir)
    superseded: set[str] = set()
    if len(names) > 1:
        for name in names:
            if name.startswith(COMPACTED_PREFIX):
                superseded.update(_replaced_by(hour_dir / name))
    live = [hour_dir / n for n in names if n not in superseded]
    dead = [hour_dir / n for n in names if n in superseded]
    return live, dead


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What one :func:`compact_hour` call did."""

    files_in: int = 0
    rows: int = 0
    bytes_written: int = 0
    superseded_removed: int = 0
    path: pathlib.Path | None = None


def _first_ns_of(path: pathlib.Path) -> int:
    match = _NAME_NS_RE.match(path.name)
    return int(match[1]) if match else 0


def _remove_files(paths: Iterable[pathlib.Path]) -> int:
    removed = 0
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed += 1
    return removed


def compact_hour(
    hour_dir: pathlib.Path, stream: str, *, name_suffix: str, row_group_rows: int = 65_536,
    compression: str = "zstd", check_cancelled: Callable[[], None] | None = None,
) -> CompactionResult:
    """Merge the data files of one hour directory into one ``compacted-*`` file.

    Blocking (call it in a worker thread). First deletes files an earlier compaction
    superseded but could not delete. Does nothing more when the hour already is one
    compacted file. Otherwise reads the files (oldest first by the event time in their
    names) one row group at a time, so memory stays at about one row group however big
    the hour: a part is one row group; an earlier compacted file, re-opened by late rows,
    is read group by group. Sorts each row group by event time, writes them as row groups
    of about ``row_group_rows`` rows into a temp file, fsyncs it, renames it into place
    (its metadata names the files it replaces), fsyncs the directory, then deletes the
    replaced files and fsyncs the directory again.

    ``check_cancelled`` (``trio.from_thread.check_cancelled`` in the recorder) is called
    before each row group is read and before the rename; what it raises aborts the
    compaction and removes its temp file, so a cancelled compaction ends within one row
    group's time and leaves the hour as it was.

    Raises ``OSError`` on disk errors and ``ValueError`` (or an Arrow error) for a file
    whose columns differ from :data:`SCHEMAS` (an older schema version) or one that cannot
    be read; the directory then holds what it held before, plus perhaps a temp file that
    start-up removes.
    """
    try:
        return _compact_hour(hour_dir, stream, name_suffix=name_suffix, row_group_rows=row_group_rows,
                             compression=compression, check_cancelled=check_cancelled)
    finally:
        # An hour's parts pass through pyarrow's pool and its reader threads; with
        # mimalloc (pyarrow's default, before actors/__init__.py chose glibc's heap) the
        # pool kept what they freed and each compaction left RSS ~10-70 MB higher than
        # before it. It is given back here, whichever allocator pyarrow uses
        # (bench/compaction_memory.py).
        pa.default_memory_pool().release_unused()


def _compact_hour(
    hour_dir: pathlib.Path, stream: str, *, name_suffix: str, row_group_rows: int,
    compression: str, check_cancelled: Callable[[], None] | None,
) -> CompactionResult:
    schema = SCHEMAS[stream]
    live, dead = hour_files(hour_dir)
    removed = _remove_files(dead)
    if dead:
        _fsync_dir(hour_dir)
    if not live or (len(live) == 1 and live[0].name.startswith(COMPACTED_PREFIX)):
        return CompactionResult(superseded_removed=removed)
    live.sort(key=lambda p: (_first_ns_of(p), p.name))
    layout = [(f.name, f.type) for f in schema]
    for path in live:
        try:
            columns = [(f.name, f.type) for f in pq.read_schema(path)]
        except pa.ArrowInvalid as exc:
            raise ValueError(f"{path}: not a readable Parquet file: {exc}") from exc
        if columns != layout:
            # An older schema version of this stream: such hours are left as they are.
            raise ValueError(f"{path}: columns differ from schema {SCHEMA_VERSION} of {stream}")
    name = f"{COMPACTED_PREFIX}{_first_ns_of(live[0])}-{name_suffix}.parquet"
    final = hour_dir / name
    metadata = {
        b"spreadwatch.schema": SCHEMA_VERSION.encode(),
        b"spreadwatch.stream": stream.encode(),
        REPLACES_KEY: json.dumps([p.name for p in live]).encode(),
    }
    rows = 0
    with _atomic_file(final) as f:
        with pq.ParquetWriter(f, schema.with_metadata(metadata), compression=compression) as out:
            pending: list[pa.Table] = []
            pending_rows = 0
            for path in live:
                # One row group at a time: a part is one, but an earlier compaction's
                # output (late rows re-open a compacted hour) is the whole hour. Read at
                # once it took ~170 bytes of pyarrow's pool a row: 589 MB for 3.6 M
                # quotes, where the soak's hours hold 9.4 M.
                with pq.ParquetFile(path) as source:
                    for group in range(source.num_row_groups):
                        if check_cancelled is not None:
                            check_cancelled()
                        table = source.read_row_group(group, columns=schema.names)
                        table = table.cast(schema).sort_by(_SORT_KEYS[stream])
                        pending.append(table)
                        pending_rows += table.num_rows
                        if pending_rows >= row_group_rows:
                            out.write_table(pa.concat_tables(pending), row_group_size=pending_rows)
                            rows += pending_rows
                            pending, pending_rows = [], 0
            if pending:
                out.write_table(pa.concat_tables(pending), row_group_size=pending_rows)
                rows += pending_rows
        size = f.tell()
        if check_cancelled is not None:
            check_cancelled()
    _fsync_dir(hour_dir)
    removed += _remove_files(p for p in live if p != final)
    _fsync_dir(hour_dir)
    return CompactionResult(files_in=len(live), rows=rows, bytes_written=size,
                            superseded_removed=removed, path=final)


def recover(data_dir: pathlib.Path) -> tuple[int, int, list[tuple[str, int]]]:
    """Start-up clean-up of ``data_dir``, in a worker thread.

    Removes temp files, finishes compactions a crash interrupted (deletes the files a
    compacted file supersedes), and lists the hours that still need compacting (any hour
    with more than one data file or a ``part-*`` file). Returns (temp files removed,
    superseded files removed, [(stream, hour)]). Errors are logged, never raised.
    """
    temps = remove_temp_files(data_dir)
    superseded = 0
    pending: list[tuple[str, int]] = []
    for stream in STREAMS:
        try:
            dirs = hour_dirs(data_dir, stream)
        except OSError as exc:
            logger.warning("recorder: cannot scan %s: %s", data_dir / stream, exc)
            continue
        for hour, path in dirs:
            try:
                live, dead = hour_files(path)
                superseded += _remove_files(dead)
                if dead:
                    _fsync_dir(path)
            except (OSError, ValueError, pa.ArrowException) as exc:
                logger.warning("recorder: cannot recover %s: %s", path, exc)
                continue
            if len(live) > 1 or any(p.name.startswith(PART_PREFIX) for p in live):
                pending.append((stream, hour))
    return temps, superseded, pending


@dataclass(slots=True)
class RecorderStatus:
    """The recorder's counters, read by ``/health``; only the recorder writes them.

    Times are wall-clock ns from the recorder's ``clock_ns`` (0 = never).
    ``last_error`` is the latest write error while writes are failing, None once a
    flush succeeds again; ``write_errors`` and ``last_error_ns`` keep the history.
    """

    max_buffered_rows: int = 0
    buffered_rows: int = 0
    peak_buffered_rows: int = 0
    buffered_partitions: int = 0
    rows_written: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    rows_rejected: int = 0
    rows_abandoned: int = 0
    files_written: int = 0
    bytes_written: int = 0
    write_errors: int = 0
    last_flush_ns: int = 0
    last_error: str | None = None
    last_error_ns: int = 0
    temp_files_cleaned: int = 0
    compactions: int = 0
    files_compacted: int = 0
    superseded_removed: int = 0
    compaction_errors: int = 0
    last_compaction_error: str | None = None
    hours_to_compact: int = 0
    #: records taken from the inbox so far, written or rejected or buffered
    records_taken: int = 0
    #: the first ``durable_through`` records taken are on disk (or were rejected): set when
    #: a flush leaves nothing buffered. ``spreadwatch record`` acks stream messages by it.
    durable_through: int = 0

    @property
    def state(self) -> str:
        """``failing`` while writes fail, ``full`` when the row cap is reached (the inbox
        then drops), else ``ok``."""
        if self.last_error is not None:
            return "failing"
        if self.max_buffered_rows and self.buffered_rows >= self.max_buffered_rows:
            return "full"
        return "ok"

    def snapshot(self) -> dict[str, object]:
        """A plain snapshot, safe to serialize and to keep."""
        return {
            "state": self.state,
            "max_buffered_rows": self.max_buffered_rows,
            "buffered_rows": self.buffered_rows,
            "peak_buffered_rows": self.peak_buffered_rows,
            "buffered_partitions": self.buffered_partitions,
            "rows_written": dict(self.rows_written),
            "rows_rejected": self.rows_rejected,
            "rows_abandoned": self.rows_abandoned,
            "records_taken": self.records_taken,
            "durable_through": self.durable_through,
            "files_written": self.files_written,
            "bytes_written": self.bytes_written,
            "write_errors": self.write_errors,
            "last_flush_ns": self.last_flush_ns,
            "last_error": self.last_error,
            "last_error_ns": self.last_error_ns,
            "temp_files_cleaned": self.temp_files_cleaned,
            "compactions": self.compactions,
            "files_compacted": self.files_compacted,
            "superseded_removed": self.superseded_removed,
            "compaction_errors": self.compaction_errors,
            "last_compaction_error": self.last_compaction_error,
            "hours_to_compact": self.hours_to_compact,
        }


class _PartitionBuffer:
    """The pending rows of one (stream, hour), one container per column."""

    __slots__ = ("appends", "columns", "first_event_ns", "rows")

    def __init__(self, schema: pa.Schema, first_event_ns: int) -> None:
        self.columns: list[list[str] | array[float] | array[int]] = [
            [] if pa.types.is_string(f.type)
            else array("d") if pa.types.is_floating(f.type)
            else array("q")
            for f in schema
        ]
        # Bound once: appending is the recorder's hot path.
        self.appends: list[Callable[[Any], None]] = [c.append for c in self.columns]
        self.first_event_ns = first_event_ns
        self.rows = 0

    def append(self, row: Row) -> None:
        """Append one row; on a value of the wrong type nothing is appended and it raises."""
        n = self.rows
        try:
            for append, value in zip(self.appends, row, strict=True):
                append(value)
        except BaseException:
            for column in self.columns:
                del column[n:]
            raise
        self.rows = n + 1


def _string_array(values: list[str]) -> pa.Array:
    try:
        return pa.array(values, type=pa.string())
    except UnicodeEncodeError:
        # A lone surrogate cannot be UTF-8; keep the row, escape the character.
        return pa.array(
            [v.encode("utf-8", "backslashreplace").decode("utf-8") for v in values],
            type=pa.string(),
        )


def _build_table(stream: str, buffer: _PartitionBuffer) -> pa.Table:
    schema = SCHEMAS[stream]
    arrays = []
    for f, column in zip(schema, buffer.columns, strict=True):
        if isinstance(column, array):
            # tobytes() copies, so no buffer export pins the array.array afterwards.
            data = pa.py_buffer(column.tobytes())
            arrays.append(pa.Array.from_buffers(f.type, len(column), [None, data]))
        else:
            arrays.append(_string_array(column))
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_partition(
    writer: PartitionWriter, path: pathlib.Path, stream: str, buffer: _PartitionBuffer,
) -> int:
    """Worker-thread side of one flush: build the table, hand it to the writer."""
    table = _build_table(stream, buffer)
    metadata = {
        b"spreadwatch.schema": SCHEMA_VERSION.encode(),
        b"spreadwatch.stream": stream.encode(),
    }
    return writer.write(path, table, metadata)


class _Recorder:
    """The buffers and flush logic; driven by :func:`run_recorder`, one task only."""

    def __init__(
        self, *, data_dir: pathlib.Path, max_buffered_rows: int, clock_ns: Callable[[], int],
        writer: PartitionWriter, status: RecorderStatus,
    ) -> None:
        self.data_dir = data_dir
        self.cap = max_buffered_rows
        self.clock_ns = clock_ns
        self.writer = writer
        self.status = status
        self.partitions: dict[tuple[str, int], _PartitionBuffer] = {}
        self.buffered = 0
        # Unique per run: file names never collide across restarts, even for replays.
        self.run_id = secrets.token_hex(4)
        self.file_seq = 0
        self.rejected_unlogged = 0
        self.last_rejection = ""
        # (stream, hour) with files that may need compacting; shared with the compactor
        # task (same thread, so no lock).
        self.to_compact: set[tuple[str, int]] = set()

    @property
    def room(self) -> int:
        return self.cap - self.buffered

    def add(self, records: Iterable[object]) -> None:
        partitions = self.partitions
        taken = 0
        for record in records:
            taken += 1
            entry = _ROW_BUILDERS.get(type(record))
            if entry is None:
                self._reject(f"not a recordable record: {type(record).__name__}")
                continue
            stream, row_of = entry
            try:
                event_ns, row = row_of(record)
                key = (stream, _hour_of(event_ns))
                buffer = partitions.get(key)
                if buffer is None:
                    buffer = _PartitionBuffer(SCHEMAS[stream], event_ns)
                    buffer.append(row)
                    partitions[key] = buffer
                else:
                    buffer.append(row)
            except (TypeError, ValueError, OverflowError, KeyError, AttributeError) as exc:
                self._reject(f"{stream} row: {exc}")
                continue
            self.buffered += 1
        status = self.status
        status.records_taken += taken
        status.buffered_rows = self.buffered
        status.buffered_partitions = len(partitions)
        if self.buffered > status.peak_buffered_rows:
            status.peak_buffered_rows = self.buffered
        if not partitions:  # all rejected: nothing of theirs will ever be written
            status.durable_through = status.records_taken

    def _reject(self, reason: str) -> None:
        self.status.rows_rejected += 1
        self.rejected_unlogged += 1
        self.last_rejection = reason

    def log_rejections(self) -> None:
        # Once per flush at most, so a stream of bad records cannot flood the log.
        if self.rejected_unlogged:
            logger.warning(
                "recorder: rejected %d records since the last flush (last: %s)",
                self.rejected_unlogged, self.last_rejection,
            )
            self.rejected_unlogged = 0

    async def flush(self, *, abandon_on_cancel: bool = False) -> bool:
        """Write every buffered partition to a new file. Returns False if any write failed.

        Partitions that fail stay buffered for the next attempt; the others are written.
        """
        ok = True
        for key in list(self.partitions):
            stream, hour = key
            buffer = self.partitions[key]
            self.file_seq += 1
            name = f"part-{buffer.first_event_ns}-{self.run_id}-{self.file_seq:06d}.parquet"
            path = partition_dir(self.data_dir, stream, hour) / name
            try:
                nbytes = await trio.to_thread.run_sync(
                    _write_partition, self.writer, path, stream, buffer,
                    abandon_on_cancel=abandon_on_cancel,
                )
            except OSError as exc:
                ok = False
                self._note_error(f"writing {path}: {exc.strerror or exc}")
                continue
            del self.partitions[key]
            self.to_compact.add(key)
            self.buffered -= buffer.rows
            status = self.status
            status.rows_written[stream] += buffer.rows
            status.files_written += 1
            status.bytes_written += nbytes
            status.buffered_rows = self.buffered
            status.buffered_partitions = len(self.partitions)
        if ok:
            self.status.last_flush_ns = self.clock_ns()
            self.status.last_error = None
        if not self.partitions:
            self.status.durable_through = self.status.records_taken
        return ok

    def _note_error(self, message: str) -> None:
        status = self.status
        status.write_errors += 1
        status.last_error = message
        status.last_error_ns = self.clock_ns()
        logger.warning("recorder: write failed, rows kept for retry: %s", message)

    def abandon(self, why: str) -> None:
        if self.buffered:
            logger.error("recorder: %s; %d buffered rows were not written", why, self.buffered)
            self.status.rows_abandoned += self.buffered
        self.partitions.clear()
        self.buffered = 0
        self.status.buffered_rows = 0
        self.status.buffered_partitions = 0


async def run_recorder(
    inbox: DropChannel[Quote | Trade | Opportunity],
    *,
    data_dir: pathlib.Path,
    max_buffered_rows: int,
    flush_interval_s: float = 1.0,
    flush_rows: int | None = None,
    retry_max_s: float = 30.0,
    shutdown_timeout_s: float = 5.0,
    compact_after_s: float | None = 60.0,
    compact_check_s: float = 10.0,
    clock_ns: Callable[[], int] = time.time_ns,
    writer: PartitionWriter | None = None,
    status: RecorderStatus | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Record everything from ``inbox`` under ``data_dir`` until cancelled or closed.

    ``max_buffered_rows`` is the hard cap on rows held in memory; ``flush_rows``
    (default half the cap) triggers an early flush. Failed writes are retried after
    ``flush_interval_s``, doubling up to ``retry_max_s``. ``writer`` defaults to
    :class:`AtomicParquetWriter`; ``status`` (created if not given) is updated in
    place for ``/health``.

    An hour is compacted (see the module docstring) once ``clock_ns()`` is
    ``compact_after_s`` past its end, checked every ``compact_check_s``; the grace lets
    late rows (batches in flight, opportunities opened before the hour ended) land first.
    ``compact_after_s=None`` turns compaction off.

    Signals ``task_status.started()`` once :func:`recover` has cleaned up after an
    earlier crash (temp files, interrupted compactions) and listed the hours left
    uncompacted.
    When ``inbox`` is closed and drained, returns once everything is written (retrying
    failed writes for as long as it takes). On cancellation drains the inbox, writes
    what it can in a shielded scope of at most ``shutdown_timeout_s`` (a write still
    running at that deadline is abandoned to its thread), and re-raises.
    """
    if max_buffered_rows < 1:
        raise ValueError(f"max_buffered_rows must be >= 1, got {max_buffered_rows!r}")
    if flush_rows is None:
        flush_rows = max(1, max_buffered_rows // 2)
    if not 1 <= flush_rows <= max_buffered_rows:
        raise ValueError(f"flush_rows must be in 1..{max_buffered_rows}, got {flush_rows!r}")
    for name, value in (
        ("flush_interval_s", flush_interval_s), ("retry_max_s", retry_max_s),
        ("shutdown_timeout_s", shutdown_timeout_s), ("compact_check_s", compact_check_s),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")

    status = status if status is not None else RecorderStatus()
    status.max_buffered_rows = max_buffered_rows
    status.buffered_rows = status.buffered_partitions = 0
    recorder = _Recorder(
        data_dir=data_dir, max_buffered_rows=max_buffered_rows, clock_ns=clock_ns,
        writer=writer if writer is not None else AtomicParquetWriter(), status=status,
    )

    if compact_after_s is not None and compact_after_s < 0:
        raise ValueError(f"compact_after_s must be >= 0, got {compact_after_s!r}")
    cleaned, superseded, pending = await trio.to_thread.run_sync(recover, data_dir)
    if cleaned or superseded:
        logger.info("recorder: removed %d temp files and %d compacted-away files left by an "
                    "earlier run", cleaned, superseded)
    status.temp_files_cleaned += cleaned
    status.superseded_removed += superseded
    recorder.to_compact.update(pending)
    status.hours_to_compact = len(recorder.to_compact)
    task_status.started()

    if compact_after_s is None:
        await _record_until_done(recorder, inbox, flush_interval_s, flush_rows, retry_max_s,
                                 shutdown_timeout_s)
        return
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_compact_closed_hours, recorder, compact_after_s, compact_check_s)
            await _record_until_done(recorder, inbox, flush_interval_s, flush_rows, retry_max_s,
                                     shutdown_timeout_s)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Neither task opens a nursery, so the group is flat; the compactor only ends by
        # cancellation. Raise what the recording raised, as if there were no nursery.
        _cancelled, others = group.split(trio.Cancelled)
        raise (others or group).exceptions[0] from None


async def _record_until_done(
    recorder: _Recorder, inbox: DropChannel[Quote | Trade | Opportunity],
    flush_interval_s: float, flush_rows: int, retry_max_s: float, shutdown_timeout_s: float,
) -> None:
    try:
        await _record(recorder, inbox, flush_interval_s, flush_rows, retry_max_s)
        # Closed: write the rest, retrying as long as it takes; the caller may cancel.
        await _drain_and_flush(recorder, inbox, flush_interval_s, retry_max_s)
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(shutdown_timeout_s):
            try:
                await _drain_and_flush(
                    recorder, inbox, flush_interval_s, retry_max_s, abandon_on_cancel=True,
                )
            except Exception:
                logger.exception("recorder: final flush failed")
        recorder.abandon("stopped before the final flush completed")
        raise
    finally:
        # One line a shutdown check can hold the files against (bench/ reads it).
        status = recorder.status
        logger.info("recorder: stopped; rows written %s, abandoned %d, inbox dropped %d",
                    ",".join(f"{k}={v}" for k, v in status.rows_written.items()),
                    status.rows_abandoned, inbox.statistics().dropped)


async def _compact_closed_hours(
    recorder: _Recorder, compact_after_s: float, compact_check_s: float,
) -> None:
    """The compactor task: every ``compact_check_s``, compact each closed hour on the list."""
    after_ns = int(compact_after_s * 1e9)
    status = recorder.status
    while True:
        limit = (recorder.clock_ns() - after_ns) // NS_PER_HOUR
        due = sorted((hour, stream) for stream, hour in recorder.to_compact if hour < limit)
        for hour, stream in due:
            key = (stream, hour)
            # Off the list first: a flush into this hour meanwhile puts it back.
            recorder.to_compact.discard(key)
            recorder.file_seq += 1
            suffix = f"{recorder.run_id}-{recorder.file_seq:06d}"
            hour_dir = partition_dir(recorder.data_dir, stream, hour)
            try:
                # Not abandoned on cancel: the thread notices between parts and stops, so
                # no compaction outlives the recorder.
                result = await trio.to_thread.run_sync(functools.partial(
                    compact_hour, hour_dir, stream, name_suffix=suffix,
                    check_cancelled=trio.from_thread.check_cancelled,
                ))
            except FileNotFoundError:
                continue  # the hour directory is gone: nothing to compact
            except OSError as exc:
                recorder.to_compact.add(key)  # the disk may recover: retry at the next check
                status.compaction_errors += 1
                status.last_compaction_error = f"compacting {hour_dir}: {exc}"
                logger.warning("recorder: compaction failed, will retry: %s", exc)
                continue
            except (ValueError, pa.ArrowException) as exc:
                # A file of an older schema or one we cannot read: retrying cannot help; the
                # hour is left as it is (still readable) until the next start-up lists it.
                status.compaction_errors += 1
                status.last_compaction_error = f"compacting {hour_dir}: {exc}"
                logger.warning("recorder: hour left uncompacted: %s", exc)
                continue
            status.superseded_removed += result.superseded_removed
            if result.path is not None:
                status.compactions += 1
                status.files_compacted += result.files_in
                status.last_compaction_error = None
        status.hours_to_compact = len(recorder.to_compact)
        await trio.sleep(compact_check_s)


async def _record(
    recorder: _Recorder, inbox: DropChannel[Quote | Trade | Opportunity],
    flush_interval_s: float, flush_rows: int, retry_max_s: float,
) -> None:
    """The steady state: receive under the cap, flush on deadline or size, back off on errors.

    Returns when the inbox is closed and drained.
    """
    retry_delay = 0.0  # > 0 while writes are failing
    next_flush = trio.current_time() + flush_interval_s
    while True:
        room = recorder.room
        if room > 0:
            with trio.move_on_at(next_flush):
                try:
                    batch = await inbox.receive_batch(min(room, _MAX_BATCH))
                except trio.EndOfChannel:
                    return
                recorder.add(batch)
        else:
            # Full and the disk is failing: take nothing, let the inbox drop and count.
            await trio.sleep_until(next_flush)
        now = trio.current_time()
        due = now >= next_flush or (recorder.buffered >= flush_rows and not retry_delay)
        if not due:
            continue
        recorder.log_rejections()
        if not recorder.partitions:
            next_flush = now + flush_interval_s
        elif await recorder.flush():
            if retry_delay:
                logger.info("recorder: writes succeed again")
            retry_delay = 0.0
            next_flush = now + flush_interval_s
        else:
            retry_delay = min(retry_max_s, retry_delay * 2 if retry_delay else flush_interval_s)
            next_flush = trio.current_time() + retry_delay


async def _drain_and_flush(
    recorder: _Recorder, inbox: DropChannel[Quote | Trade | Opportunity],
    flush_interval_s: float, retry_max_s: float, *, abandon_on_cancel: bool = False,
) -> None:
    """Write everything buffered and pending in ``inbox``, never holding more than the cap.

    Retries failed writes with backoff until they succeed; callers bound it with a
    deadline or by cancelling.
    """
    retry_delay = min(flush_interval_s, retry_max_s)
    while True:
        room = recorder.room
        if room > 0:
            recorder.add(inbox.receive_batch_nowait(room))
        if not recorder.partitions:
            if not len(inbox):
                recorder.log_rejections()
                return
            continue
        if await recorder.flush(abandon_on_cancel=abandon_on_cancel):
            retry_delay = min(flush_interval_s, retry_max_s)
        else:
            await trio.sleep(retry_delay)
            retry_delay = min(retry_max_s, retry_delay * 2)
