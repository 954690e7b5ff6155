"""The NATS edges of the scale-out roles: quotes and records out of ``ingest``, into
``serve`` and ``record``; every process announcing itself to the others.

Subjects (``<p>`` is ``nats.subject_prefix``):

* ``<p>.quotes.<venue>``: core NATS, fire and forget. An ingest process conflates quotes
  per (venue, symbol) for ``nats.publish_interval_s`` and publishes one batch per venue
  (actors/wire.py). Quotes are state, not history: a newer one replaces an older one, so
  a batch lost to a slow consumer costs freshness, never correctness, and it is counted.
* ``<p>.records.<venue>``: captured by the JetStream stream ``nats.stream``. Every quote
  and trade, batched as the connectors batch them for a recorder; each batch carries a
  ``Nats-Msg-Id`` and is published again until the stream acknowledges it (the stream's
  duplicate window drops the copies), within ``nats.max_unacked_batches``.
* ``<p>.peers.<role>.<id>``: each process's announcement every ``nats.peer_interval_s``:
  role, pid, its venues' connection state, its NATS counters. ``serve`` shows them all on
  ``/health`` and marks a peer down when it has been silent ``nats.peer_timeout_s``.

Nothing here blocks a producer: publishes go to the client's bounded outbound buffer
(refusals are counted), and every subscription has pending limits (drops are counted
as slow-consumer drops by the client).
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
import trio

from actors.channels import ConflatingChannel, DropChannel
from actors.connector import QuoteSinks
from actors.discovery import VenueState
from actors.nats import JetStream, JsMsg, NatsClient, NatsError
from actors.recorder import RecorderStatus
from actors.records import Opportunity, Quote, Trade, VenueDown
from actors.wire import (
    WireError,
    decode_batch,
    decode_opportunities,
    encode_batch,
    encode_opportunities,
    opportunity_id,
)

log = logging.getLogger(__name__)

#: rows in one quote message: ~50 bytes a row keeps a batch well under NATS's 1 MiB payload
MAX_QUOTES_PER_MESSAGE = 4096
#: records in one record message (the connectors hand over at most 512 at a time)
MAX_RECORDS_PER_MESSAGE = 1024
#: announcements larger than this are refused (a peer's is ~2 KB a venue)
MAX_PEER_BYTES = 256 * 1024
#: peers remembered at most; announcements from new ones beyond that are counted and ignored
MAX_PEERS = 256

_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class Subjects:
    prefix: str

    def quotes(self, venue: str) -> str:
        return f"{self.prefix}.quotes.{venue}"

    def records(self, venue: str) -> str:
        return f"{self.prefix}.records.{venue}"

    def peer(self, role: str, ident: str) -> str:
        return f"{self.prefix}.peers.{role}.{ident}"

    @property
    def all_quotes(self) -> str:
        return f"{self.prefix}.quotes.*"

    @property
    def all_records(self) -> str:
        return f"{self.prefix}.records.*"

    @property
    def all_peers(self) -> str:
        return f"{self.prefix}.peers.*.*"

    @property
    def opportunities(self) -> str:
        return f"{self.prefix}.opportunities"

    @property
    def stream_subjects(self) -> list[str]:
        """What the record stream captures: every venue's records, and the opportunity
        events of the serve processes."""
        return [self.all_records, self.opportunities]

    def venue_of(self, subject: str) -> str:
        """The venue token of a quotes or records subject ("" when there is none)."""
        head, _, venue = subject.rpartition(".")
        return venue if head in (f"{self.prefix}.quotes", f"{self.prefix}.records") else ""


def process_id(role: str) -> str:
    """A subject-safe id unique to this run of a role: ``<role>-<host>-<pid>-<random>``
    (the random part tells restarts with a recycled pid, and roles run in one process
    by tests, apart)."""
    host = _TOKEN.sub("_", socket.gethostname())[:32] or "host"
    return f"{role}-{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _group(records: Iterable[Quote | Trade | Opportunity]
           ) -> tuple[dict[str, list[Quote | Trade]], list[Opportunity]]:
    by_venue: dict[str, list[Quote | Trade]] = {}
    opportunities: list[Opportunity] = []
    for record in records:
        if type(record) is Opportunity:
            opportunities.append(record)
            continue
        assert type(record) is Quote or type(record) is Trade
        rows = by_venue.get(record.venue)
        if rows is None:
            rows = by_venue[record.venue] = []
        rows.append(record)
    return by_venue, opportunities


# --- ingest: quotes ---------------------------------------------------------------------

@dataclass(slots=True)
class PublisherStats:
    """Counters of an ingest process's NATS publishers (only they write them)."""

    quote_batches: int = 0
    quotes: int = 0
    quotes_refused: int = 0          # in batches the client refused (its buffer was full)
    record_batches: int = 0
    records: int = 0
    records_acked: int = 0
    record_duplicates: int = 0       # acks that said the stream had the batch already
    ack_errors: int = 0              # error replies (no stream, stream full, no responders)
    resends: int = 0
    unacked: int = 0
    unacked_peak: int = 0
    stream_ready: bool = False
    last_error: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


async def run_quote_publisher(
    nc: NatsClient, quotes: ConflatingChannel[tuple[str, str], Quote | VenueDown], *,
    subjects: Subjects, src: str, interval_s: float, stats: PublisherStats,
    clock_ns: Callable[[], int] = time.time_ns,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Publish what the connectors conflated, one batch per venue every ``interval_s``.

    The connectors put into ``quotes`` (one conflating edge, like a shard's inbox), so a
    symbol that ticks ten times in an interval costs one row.
    """
    seq = itertools.count(1)
    task_status.started()
    while True:
        try:
            pending = await quotes.receive_batch()
        except trio.EndOfChannel:
            return
        by_venue: dict[str, list[Quote]] = {}
        downs: dict[str, int] = {}
        for item in pending.values():
            if type(item) is Quote:
                by_venue.setdefault(item.venue, []).append(item)
            elif isinstance(item, VenueDown):
                downs[item.venue] = max(item.at_ns, downs.get(item.venue, 0))
        now = clock_ns()
        for venue in by_venue.keys() | downs.keys():
            rows = by_venue.get(venue, [])
            down = downs.get(venue)
            for start in range(0, max(len(rows), 1), MAX_QUOTES_PER_MESSAGE):
                chunk = rows[start:start + MAX_QUOTES_PER_MESSAGE]
                payload = encode_batch(venue, src, next(seq), now, chunk,
                                       down_ns=down if start == 0 else None)
                if nc.publish(subjects.quotes(venue), payload):
                    stats.quote_batches += 1
                    stats.quotes += len(chunk)
                else:
                    stats.quotes_refused += len(chunk)
        await trio.sleep(interval_s)


# --- ingest: records --------------------------------------------------------------------

@dataclass(slots=True)
class _Unacked:
    subject: str
    payload: bytes
    msg_id: str
    records: int
    sent_at: float


class RecordPublisher:
    """Records into the JetStream stream, at least once, de-duplicated by the stream.

    A batch stays in ``unacked`` (bounded by ``max_unacked``) until the stream's ack
    arrives, and is published again every ``ack_timeout_s`` while it does not (only while
    connected: during an outage the client's buffer keeps the first copy). While
    ``unacked`` is full the publisher takes nothing more from its inbox, which then drops
    and counts on its own edge: an ingest process never waits on NATS.
    """

    def __init__(self, nc: NatsClient, js: JetStream, *, subjects: Subjects, src: str,
                 stream: str, stream_max_bytes: int, stream_max_age_s: float,
                 max_unacked: int, ack_timeout_s: float, stats: PublisherStats,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.nc = nc
        self.js = js
        self.subjects = subjects
        self.src = src
        self.stream = stream
        self.stream_max_bytes = stream_max_bytes
        self.stream_max_age_s = stream_max_age_s
        self.max_unacked = max_unacked
        self.ack_timeout_s = ack_timeout_s
        self.stats = stats
        self.clock_ns = clock_ns
        self.unacked: dict[int, _Unacked] = {}
        self._room = trio.Event()
        self._seq = itertools.count(1)
        # The run id makes message ids unique across restarts of a process with the same pid.
        self._run = f"{src}-{time.time_ns():x}"
        self._inbox = ""

    async def run(self, records: DropChannel[Any], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._inbox = inbox = self.nc.new_inbox()
        acks = self.nc.subscribe(f"{inbox}.*", max_pending_msgs=2 * self.max_unacked + 100,
                                 max_pending_bytes=16 << 20)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._ensure_stream)
                nursery.start_soon(self._take_acks, acks)
                nursery.start_soon(self._resend)
                task_status.started()
                await self._publish_from(records)
                # The inbox was closed (shutdown): wait a little for the last acks.
                with trio.move_on_after(self.ack_timeout_s):
                    while self.unacked:
                        self._room = trio.Event()
                        await self._room.wait()
                nursery.cancel_scope.cancel()
        finally:
            acks.unsubscribe()

    async def _publish_from(self, records: DropChannel[Any]) -> None:
        while True:
            while len(self.unacked) >= self.max_unacked:
                self._room = trio.Event()
                await self._room.wait()
            try:
                batch = await records.receive_batch(MAX_RECORDS_PER_MESSAGE)
            except trio.EndOfChannel:
                return
            now_ns = self.clock_ns()
            by_venue, opportunities = _group(batch)
            for venue, rows in by_venue.items():
                seq = next(self._seq)
                payload = encode_batch(venue, self.src, seq, now_ns, rows)
                self._add(seq, _Unacked(self.subjects.records(venue), payload,
                                        f"{self._run}-{seq}", len(rows), trio.current_time()))
            # One message per opportunity event, its id the event's identity: several serve
            # processes publish the same events, and the stream keeps one of each.
            for event in opportunities:
                seq = next(self._seq)
                payload = encode_opportunities(self.src, now_ns, (event,))
                self._add(seq, _Unacked(self.subjects.opportunities, payload,
                                        opportunity_id(event), 1, trio.current_time()))
            self._note_unacked()

    def _add(self, seq: int, item: _Unacked) -> None:
        self.unacked[seq] = item
        self.stats.record_batches += 1
        self.stats.records += item.records
        self._send(seq, item)

    def _send(self, seq: int, item: _Unacked) -> bool:
        return self.nc.publish(item.subject, item.payload, reply=f"{self._inbox}.{seq}",
                               headers={"Nats-Msg-Id": item.msg_id})

    def _note_unacked(self) -> None:
        self.stats.unacked = len(self.unacked)
        self.stats.unacked_peak = max(self.stats.unacked_peak, self.stats.unacked)
        if len(self.unacked) < self.max_unacked:
            self._room.set()

    async def _take_acks(self, acks: Any) -> None:
        async for msg in acks:
            seq_text = msg.subject.rpartition(".")[2]
            if not seq_text.isdigit():
                continue
            seq = int(seq_text)
            if msg.status is not None:  # 503: no stream listens on the subject (yet)
                self.stats.ack_errors += 1
                self.stats.last_error = f"publish ack: status {msg.status} {msg.description}".strip()
                continue
            try:
                doc = orjson.loads(msg.payload)
            except orjson.JSONDecodeError:
                self.stats.ack_errors += 1
                continue
            if not isinstance(doc, dict) or "error" in doc:
                self.stats.ack_errors += 1
                self.stats.last_error = f"publish ack: {doc.get('error') if isinstance(doc, dict) else doc}"
                continue
            item = self.unacked.pop(seq, None)
            if item is None:
                continue  # the ack of a copy
            self.stats.records_acked += item.records
            if doc.get("duplicate"):
                self.stats.record_duplicates += 1
            self._note_unacked()
            if not self.unacked:
                self._room.set()

    async def _resend(self) -> None:
        while True:
            await trio.sleep(self.ack_timeout_s / 2)
            if not self.nc.connected or not self.unacked:
                continue
            now = trio.current_time()
            for seq, item in list(self.unacked.items()):
                if now - item.sent_at < self.ack_timeout_s:
                    break  # oldest first: the rest are younger
                item.sent_at = now
                if not self._send(seq, item):
                    break
                self.stats.resends += 1
                # Keep insertion order = send order, so the scan above can stop early.
                self.unacked.pop(seq)
                self.unacked[seq] = item

    async def _ensure_stream(self) -> None:
        """Create or update the stream; again after every reconnect (NATS may have come back
        without its store)."""
        seen_connects = -1
        delay = 0.1
        while True:
            await self.nc.wait_connected()
            if self.nc.status.connects == seen_connects:
                await trio.sleep(0.5)
                continue
            try:
                await self.js.ensure_stream(
                    self.stream, self.subjects.stream_subjects, max_bytes=self.stream_max_bytes,
                    max_age_s=self.stream_max_age_s)
            except (NatsError, trio.TooSlowError) as exc:
                self.stats.stream_ready = False
                self.stats.last_error = f"stream {self.stream}: {exc!r}"
                log.warning("stream %s not ready: %r", self.stream, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            seen_connects = self.nc.status.connects
            self.stats.stream_ready = True


# --- serve: quotes in -------------------------------------------------------------------

class _Percentiles:
    """The last ``size`` samples of a latency, for p50/p99 on /health and the bench."""

    def __init__(self, size: int = 4096) -> None:
        self.samples: collections.deque[int] = collections.deque(maxlen=size)

    def add(self, value: int) -> None:
        self.samples.append(value)

    def snapshot(self) -> dict[str, float | None]:
        if not self.samples:
            return {"p50_ms": None, "p99_ms": None, "max_ms": None}
        ordered = sorted(self.samples)
        n = len(ordered)
        return {"p50_ms": round(ordered[n // 2] / 1e6, 3),
                "p99_ms": round(ordered[min(n - 1, (n * 99) // 100)] / 1e6, 3),
                "max_ms": round(ordered[-1] / 1e6, 3)}


@dataclass(slots=True)
class SubscriberStats:
    """Counters of a process's NATS consumers (only they write them)."""

    batches: int = 0
    quotes: int = 0
    trades: int = 0
    bad_batches: int = 0
    last_bad: str | None = None
    gaps: int = 0                    # batches a sender numbered that never arrived
    hop: _Percentiles = field(default_factory=_Percentiles)
    _next_seq: dict[str, int] = field(default_factory=dict)

    def note_seq(self, src: str, seq: int) -> None:
        expected = self._next_seq.get(src)
        if expected is not None and seq > expected:
            self.gaps += seq - expected
        if expected is None and len(self._next_seq) >= MAX_PEERS:
            return
        if expected is None or seq >= expected:
            self._next_seq[src] = seq + 1

    def bad(self, reason: str) -> None:
        self.bad_batches += 1
        if self.bad_batches <= 10 or self.bad_batches % 1000 == 0:
            log.warning("bad batch on NATS (%d so far): %s", self.bad_batches, reason)
        self.last_bad = reason[:200]

    def snapshot(self) -> dict[str, Any]:
        return {"batches": self.batches, "quotes": self.quotes, "trades": self.trades,
                "bad_batches": self.bad_batches, "last_bad": self.last_bad, "gaps": self.gaps,
                "hop": self.hop.snapshot()}


async def run_quote_subscriber(
    nc: NatsClient, sinks: QuoteSinks, *, subjects: Subjects, stats: SubscriberStats,
    max_pending_msgs: int, max_pending_bytes: int, clock_ns: Callable[[], int] = time.time_ns,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Feed every venue's quote batches into the shards' conflating inboxes.

    This is the ``source`` of a serve process's pipeline (in place of discovery and the
    venues). Taking a batch is cheap (decode, one conflating put per quote), so a serve
    process that falls behind conflates in its shard inboxes as one process does; past the
    subscription's pending limits the client drops whole batches and counts them.
    """
    sub = nc.subscribe(subjects.all_quotes, max_pending_msgs=max_pending_msgs,
                       max_pending_bytes=max_pending_bytes)
    try:
        task_status.started()
        async for msg in sub:
            venue = subjects.venue_of(msg.subject)
            try:
                batch = decode_batch(msg.payload, venue=venue)
            except WireError as exc:
                stats.bad(f"{msg.subject}: {exc}")
                continue
            stats.batches += 1
            stats.hop.add(clock_ns() - batch.sent_ns)
            stats.note_seq(batch.src, batch.seq)
            for quote in batch.quotes:
                sinks.quote(quote)
            stats.quotes += len(batch.quotes)
            if batch.down_ns is not None:
                sinks.venue_down(batch.venue, batch.down_ns)
    finally:
        sub.unsubscribe()


# --- peers ------------------------------------------------------------------------------

class _PeerDoc(msgspec.Struct, frozen=True):
    id: str
    role: str
    pid: int
    host: str
    started_ns: int
    sent_ns: int
    venues: dict[str, dict[str, Any]] = {}
    nats: dict[str, Any] = {}
    stats: dict[str, Any] = {}


_peer_decoder = msgspec.msgpack.Decoder(_PeerDoc)
_peer_encoder = msgspec.msgpack.Encoder()


@dataclass(slots=True)
class Peer:
    doc: _PeerDoc
    first_seen_ns: int
    last_seen_ns: int
    announcements: int = 1
    down_reported: bool = False


class Peers:
    """What the other processes last said about themselves; read by /health."""

    def __init__(self, *, timeout_s: float, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.timeout_ns = int(timeout_s * 1e9)
        self.clock_ns = clock_ns
        self.peers: dict[str, Peer] = {}
        self.refused = 0
        self.bad = 0

    def update(self, doc: _PeerDoc, now_ns: int) -> None:
        peer = self.peers.get(doc.id)
        if peer is None:
            if len(self.peers) >= MAX_PEERS:
                self._forget_oldest_down(now_ns)
            if len(self.peers) >= MAX_PEERS:
                self.refused += 1
                return
            self.peers[doc.id] = Peer(doc, now_ns, now_ns)
            log.info("peer %s (%s) is up", doc.id, doc.role)
            return
        if not self.is_up(peer, now_ns):
            log.info("peer %s (%s) is back", doc.id, doc.role)
        peer.doc = doc
        peer.last_seen_ns = now_ns
        peer.announcements += 1
        peer.down_reported = False

    def _forget_oldest_down(self, now_ns: int) -> None:
        down = [p for p in self.peers.values() if not self.is_up(p, now_ns)]
        if down:
            oldest = min(down, key=lambda p: p.last_seen_ns)
            del self.peers[oldest.doc.id]

    def is_up(self, peer: Peer, now_ns: int) -> bool:
        return now_ns - peer.last_seen_ns <= self.timeout_ns

    def newly_down(self, now_ns: int) -> list[Peer]:
        """Peers that went silent since the last call (each reported once)."""
        out = []
        for peer in self.peers.values():
            if not peer.down_reported and not self.is_up(peer, now_ns):
                peer.down_reported = True
                out.append(peer)
        return out

    def venue_snapshot(self, venue: str, now_ns: int) -> dict[str, Any] | None:
        """The freshest ingest peer's view of ``venue``, aged to now; None if none has it."""
        best: Peer | None = None
        for peer in self.peers.values():
            if peer.doc.role == "ingest" and venue in peer.doc.venues:
                if best is None or (self.is_up(peer, now_ns), peer.last_seen_ns) > (
                        self.is_up(best, now_ns), best.last_seen_ns):
                    best = peer
        if best is None:
            return None
        snap = _venue_fields(venue, best.doc.venues[venue], now_ns)
        up = self.is_up(best, now_ns)
        lag_s = (now_ns - best.doc.sent_ns) / 1e9
        age = snap.get("last_message_age_s")
        if isinstance(age, int | float):
            snap["last_message_age_s"] = round(age + max(lag_s, 0.0), 3)
        if not up:
            snap["connected"] = False
            snap["rate"] = 0.0
        snap["peer"] = best.doc.id
        return snap

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock_ns()
        out = []
        for peer in self.peers.values():
            doc = peer.doc
            out.append({
                "id": doc.id, "role": doc.role, "host": doc.host, "pid": doc.pid,
                "state": "up" if self.is_up(peer, now) else "down",
                "last_seen_s": round((now - peer.last_seen_ns) / 1e9, 3),
                "uptime_s": round((doc.sent_ns - doc.started_ns) / 1e9, 1),
                "announcements": peer.announcements,
                "venues": {name: {k: v.get(k) for k in ("connected", "rate", "reconnects")}
                           for name, v in doc.venues.items()},
                "nats": doc.nats, "stats": doc.stats,
            })
        return out


def _venue_fields(venue: str, reported: Mapping[str, Any], now_ns: int) -> dict[str, Any]:
    """A peer's report of a venue in the shape of a local venue's snapshot: a field of the
    wrong type (a peer is an input like any other) keeps the never-connected value, so
    /health and /metrics can rely on every field."""
    out = VenueState(venue).snapshot(now_ns)
    for key, default in out.items():
        value = reported.get(key, default)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int | float) or default is None:
            ok = (isinstance(value, int | float) and not isinstance(value, bool)
                  and math.isfinite(value)) or (default is None and value is None)
        else:
            ok = isinstance(value, type(default))
        if ok:
            out[key] = value
    return out


class RemoteVenueState:
    """A venue as the ingest peers report it, in place of a local VenueState (serve)."""

    def __init__(self, venue: str, peers: Peers) -> None:
        self.venue = venue
        self.peers = peers

    def snapshot(self, now_ns: int) -> dict[str, Any]:
        snap = self.peers.venue_snapshot(self.venue, now_ns)
        if snap is None:  # no ingest process has it: the shape of a venue never connected
            return {**VenueState(self.venue).snapshot(now_ns), "peer": None}
        return snap


async def run_peer_announcer(
    nc: NatsClient, *, subjects: Subjects, role: str, ident: str, interval_s: float,
    venues: Callable[[int], Mapping[str, dict[str, Any]]] | None = None,
    stats: Callable[[], dict[str, Any]] | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Announce this process every ``interval_s``."""
    started = clock_ns()
    host = socket.gethostname()[:64]
    subject = subjects.peer(role, ident)
    task_status.started()
    while True:
        now = clock_ns()
        doc = _PeerDoc(
            id=ident, role=role, pid=os.getpid(), host=host, started_ns=started, sent_ns=now,
            venues={name: {k: v for k, v in snap.items() if k != "detail"}
                    for name, snap in (venues(now) if venues else {}).items()},
            nats=nc.status.snapshot(), stats=stats() if stats else {})
        payload = _peer_encoder.encode(doc)
        if len(payload) <= MAX_PEER_BYTES:
            nc.publish(subject, payload)
        else:
            log.warning("announcement of %d bytes not sent (limit %d)", len(payload), MAX_PEER_BYTES)
        await trio.sleep(interval_s)


async def run_peer_listener(
    nc: NatsClient, peers: Peers, *, subjects: Subjects, interval_s: float,
    on_down: Callable[[Peer, int], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``peers`` current; call ``on_down`` once for each peer that goes silent."""
    sub = nc.subscribe(subjects.all_peers, max_pending_msgs=10_000, max_pending_bytes=32 << 20)
    try:
        async with trio.open_nursery() as nursery:
            async def watch() -> None:
                while True:
                    await trio.sleep(interval_s)
                    now = peers.clock_ns()
                    for peer in peers.newly_down(now):
                        log.warning("peer %s (%s) is down: silent %.1fs", peer.doc.id, peer.doc.role,
                                    (now - peer.last_seen_ns) / 1e9)
                        if on_down is not None:
                            on_down(peer, now)

            nursery.start_soon(watch)
            task_status.started()
            async for msg in sub:
                if len(msg.payload) > MAX_PEER_BYTES:
                    peers.bad += 1
                    continue
                try:
                    doc = _peer_decoder.decode(msg.payload)
                except msgspec.DecodeError:
                    peers.bad += 1
                    continue
                if msg.subject != subjects.peer(doc.role, doc.id):
                    peers.bad += 1
                    continue
                peers.update(doc, peers.clock_ns())
    finally:
        sub.unsubscribe()


# --- record: records in, acked once written ---------------------------------------------

@dataclass(slots=True)
class ConsumerStats:
    fetches: int = 0
    fetch_errors: int = 0
    messages: int = 0
    records: int = 0
    acked: int = 0
    ack_refused: int = 0
    bad_batches: int = 0
    awaiting_write: int = 0
    consumer_ready: bool = False
    last_error: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class RecordConsumer:
    """Pulls record batches from the stream into the recorder; acks each once it is on disk.

    A message is acknowledged only when the recorder reports (``durable_through``) that
    every record it took up to and including the message's was written: a recorder that
    is stopped, killed or failing to write leaves the rest unacknowledged, and the stream
    delivers it again after ``ack_wait_s``. Records are put into ``inbox`` only when they
    all fit, so the recorder's edge never drops one here. Bad batches are counted and
    terminated (they would never become good).

    A graceful stop: cancel :meth:`run`, let the recorder write everything, then call
    :meth:`ack_durable` once more.
    """

    def __init__(self, nc: NatsClient, js: JetStream, inbox: DropChannel[Any],
                 recorder: RecorderStatus, *, subjects: Subjects, stream: str, consumer: str,
                 stream_max_bytes: int, stream_max_age_s: float, fetch_batch: int,
                 ack_wait_s: float, stats: ConsumerStats, max_ack_pending: int = 20_000) -> None:
        self.nc = nc
        self.js = js
        self.inbox = inbox
        self.recorder = recorder
        self.subjects = subjects
        self.stream = stream
        self.consumer = consumer
        self.stream_max_bytes = stream_max_bytes
        self.stream_max_age_s = stream_max_age_s
        self.fetch_batch = fetch_batch
        self.ack_wait_s = ack_wait_s
        self.stats = stats
        self.max_ack_pending = max_ack_pending
        self.awaiting: collections.deque[tuple[int, JsMsg]] = collections.deque()
        self.put_total = 0
        self._stopping = trio.Event()

    def ack_durable(self) -> int:
        """Ack every message whose records are all written; returns how many."""
        durable = self.recorder.durable_through
        awaiting = self.awaiting
        n = 0
        while awaiting and awaiting[0][0] <= durable:
            _, msg = awaiting.popleft()
            n += 1
            if msg.ack():
                self.stats.acked += 1
            else:
                self.stats.ack_refused += 1
        self.stats.awaiting_write = len(awaiting)
        return n

    def stop(self) -> None:
        """Graceful stop: the current pull (at most ``expires`` = 1 s) is taken in full,
        then :meth:`run` returns. Cancelling a pull instead would strand the messages the
        server sends to it: they come again only after ``ack_wait_s``."""
        self._stopping.set()

    def nak_unwritten(self) -> int:
        """At shutdown, after :meth:`ack_durable`: hand what was not written back to the
        stream at once (a restarted recorder gets it now, not ``ack_wait_s`` later)."""
        n = 0
        while self.awaiting:
            _, msg = self.awaiting.popleft()
            msg.nak()
            n += 1
        self.stats.awaiting_write = 0
        return n

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._acker)
            task_status.started()
            await self._fetch_loop()
            nursery.cancel_scope.cancel()

    async def _acker(self) -> None:
        while True:
            self.ack_durable()
            await trio.sleep(0.05)

    async def _ensure(self) -> None:
        await self.nc.wait_connected()
        await self.js.ensure_stream(self.stream, self.subjects.stream_subjects,
                                    max_bytes=self.stream_max_bytes, max_age_s=self.stream_max_age_s)
        await self.js.ensure_pull_consumer(self.stream, self.consumer, ack_wait_s=self.ack_wait_s,
                                           max_ack_pending=self.max_ack_pending)

    async def _fetch_loop(self) -> None:
        stats = self.stats
        delay = 0.1
        while not self._stopping.is_set():
            if not stats.consumer_ready:
                try:
                    await self._ensure()
                except (NatsError, trio.TooSlowError) as exc:
                    stats.last_error = f"consumer {self.consumer}: {exc!r}"
                    await trio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                stats.consumer_ready = True
                delay = 0.1
            want = min(self.fetch_batch, self.max_ack_pending - len(self.awaiting))
            if want < 1:
                await trio.sleep(0.05)
                continue
            try:
                msgs = await self.js.fetch(self.stream, self.consumer, want, expires_s=1.0)
            except (NatsError, trio.TooSlowError) as exc:
                stats.fetch_errors += 1
                stats.last_error = f"fetch: {exc!r}"
                stats.consumer_ready = False  # the consumer may be gone (NATS lost its store)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            stats.fetches += 1
            for msg in msgs:
                await self._take(msg)

    async def _take(self, msg: JsMsg) -> None:
        stats = self.stats
        stats.messages += 1
        rows: list[Quote | Trade | Opportunity]
        try:
            if msg.subject == self.subjects.opportunities:
                rows = list(decode_opportunities(msg.payload))
            else:
                batch = decode_batch(msg.payload, venue=self.subjects.venue_of(msg.subject))
                rows = [*batch.quotes, *batch.trades]
        except WireError as exc:
            stats.bad_batches += 1
            stats.last_error = f"{msg.subject}: {exc}"[:200]
            msg.term()  # it would never become good: the stream must not deliver it again
            return
        inbox = self.inbox
        for start in range(0, len(rows), inbox.capacity):
            part = rows[start:start + inbox.capacity]
            # The recorder drains its inbox every flush at the latest; a short poll keeps
            # DropChannel free of a second wake-up mechanism.
            while inbox.capacity - len(inbox) < len(part):  # noqa: ASYNC110
                await trio.sleep(0.01)
            accepted = inbox.put_nowait(part)
            self.put_total += accepted
            stats.records += accepted
            if accepted < len(part):  # the inbox was closed under us: let the stream resend
                msg.nak()
                return
        self.awaiting.append((self.put_total, msg))
