"""The hub: latest state per topic, one encode per topic per tick, fan-out without waiting.

Shards publish immutable payloads into the hub's conflating inbox (latest per topic)
and opportunity events into a drop-and-count edge. Every ``feed.tick_s`` the hub takes
what changed, encodes one msgpack frame per changed topic, and offers the same bytes to
every subscribed session's :class:`Outbox` with a non-blocking call (FAILURE_MODES #6,
#12, #14). The hub never awaits a session.

A session whose outbox overflowed has lost intermediate frames: its outbox is marked
for resync, and once it has room the hub sends it a fresh snapshot of each of its
topics. Sequence numbers are per topic and shared by all sessions, so a client sees a
jump in ``seq`` where it missed frames.

Sessions join, subscribe, unsubscribe and leave through the hub's control channel; the
hub alone owns the subscription index and the session set (FAILURE_MODES #9).

``window:<SYMBOL>`` topics differ: their snapshot (the whole window, up to hundreds of
KB) is not held by the hub but asked of the owning shard (``ask_window``, a non-blocking
send of a query whose answer arrives on the hub's own reply channel and is taken at
the next tick); their deltas carry only the slots written since the previous delta. A
session joins a window topic's subscribers once its snapshot is queued, so it never
gets a delta before the snapshot. Snapshots, of any topic, are queued only where the
outbox has room for them; what does not fit waits for a later tick instead of
overflowing (a session following many large windows catches up one by one).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import trio

from actors.channels import BlockingChannel, ConflatingChannel, DropChannel
from actors.config import FeedConfig
from actors.records import Opportunity, OpportunityState
from actors.shard import empty_window, merge_window_delta, opportunity_row
from actors.ticks import hub_lag, next_tick

log = logging.getLogger(__name__)

SESSION_TOPIC = "_"
EVENTS_PER_FRAME = 256  # opportunity opens/closes in one `events` frame


def encode_frame(topic: str, kind: str, seq: int, data: Any, ts_ms: int) -> bytes:
    frame: bytes = msgpack.packb({"topic": topic, "kind": kind, "ts": ts_ms, "seq": seq, "data": data})
    return frame


class Outbox:
    """A session's bounded queue of encoded frames, filled by the hub, drained by the session.

    Bounds: at most ``capacity`` frames and ``max_bytes`` bytes pending; a frame is always
    taken when nothing is pending, so the memory an outbox holds is at most ``max_bytes``
    plus the largest frame. Overflow policy: when a frame does not fit, every pending
    frame is dropped (they are superseded by the snapshot that follows) and the outbox
    is marked for resync.
    Overflows less than ``lag_window_s`` apart form one run; :meth:`lagging_for` says how
    long the current run has lasted, so the session can close itself past its lag limit
    while a single burst is forgiven.

    One task at a time may wait in :meth:`get` (the session's writer); the outbox keeps
    a list and that one task rather than a deque and a ``ParkingLot``, which cost ~1 KiB
    more per idle session (``bench/perf_memory.py``).
    """

    __slots__ = ("_frames", "_waiter", "capacity", "closed", "delivered", "dropped", "lag_window_s",
                 "lagging_since", "max_bytes", "needs_resync", "overflowed_at", "overflows", "peak",
                 "pending_bytes")

    def __init__(self, capacity: int, lag_window_s: float = 10.0, max_bytes: int = 1 << 62) -> None:
        if capacity < 1:
            raise ValueError("outbox capacity must be >= 1")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.pending_bytes = 0
        self.lag_window_s = lag_window_s
        self.overflowed_at = 0.0
        self._frames: list[bytes] = []  # at most ``capacity`` (64): popping the front is cheap
        self._waiter: trio.lowlevel.Task | None = None
        self.closed = False
        self.needs_resync = False
        self.lagging_since: float | None = None
        self.overflows = 0
        self.dropped = 0
        self.delivered = 0
        self.peak = 0

    def offer(self, frame: bytes) -> bool:
        if self.closed:
            return False
        frames = self._frames
        if frames and (len(frames) >= self.capacity or self.pending_bytes + len(frame) > self.max_bytes):
            self.dropped += len(frames) + 1
            frames.clear()
            self.pending_bytes = 0
            self.overflows += 1
            self.needs_resync = True
            now = trio.current_time()
            if self.lagging_since is None or now - self.overflowed_at > self.lag_window_s:
                self.lagging_since = now  # a new run of overflows begins
            self.overflowed_at = now
            self._wake()
            return False
        frames.append(frame)
        self.pending_bytes += len(frame)
        if len(frames) > self.peak:
            self.peak = len(frames)
        if self._waiter is not None:
            self._wake()
        return True

    def _wake(self) -> None:
        task = self._waiter
        if task is not None:
            self._waiter = None
            trio.lowlevel.reschedule(task)

    async def _wait(self) -> None:
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already waiting for this outbox")
        self._waiter = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def has_room(self, n: int, nbytes: int = 0) -> bool:
        """Whether ``n`` more frames of ``nbytes`` in all would fit now."""
        return (self.capacity - len(self._frames) >= n
                and (not self._frames or self.pending_bytes + nbytes <= self.max_bytes))

    async def get(self) -> bytes:
        """Wait for the next frame. Raises :class:`trio.EndOfChannel` once closed."""
        await trio.lowlevel.checkpoint()
        while not self._frames:
            if self.closed:
                raise trio.EndOfChannel
            await self._wait()
        frame = self._frames.pop(0)
        self.pending_bytes -= len(frame)
        self.delivered += 1
        return frame

    async def get_batch(self, max_bytes: int) -> list[bytes]:
        """Wait for the next frame, then take every frame pending behind it, in order, up
        to ``max_bytes`` in all (the first frame always, whatever its size). Adds no delay:
        what is pending when the session can send again goes out together.
        Raises :class:`trio.EndOfChannel` once closed."""
        batch = [await self.get()]
        size = len(batch[0])
        frames = self._frames
        taken = 0
        for frame in frames:
            if size + len(frame) > max_bytes:
                break
            size += len(frame)
            taken += 1
        if taken:
            batch += frames[:taken]
            del frames[:taken]
        self.pending_bytes -= size - len(batch[0])
        self.delivered += len(batch) - 1
        return batch

    def lagging_for(self, now: float) -> float:
        """How long the current run of overflows has lasted (0 when not lagging)."""
        if self.lagging_since is None or now - self.overflowed_at > self.lag_window_s:
            return 0.0
        return now - self.lagging_since

    def close(self) -> None:
        self.closed = True
        self._frames.clear()
        self.pending_bytes = 0
        self._wake()

    def __len__(self) -> int:
        return len(self._frames)


@dataclass(eq=False, slots=True)
class SessionHandle:
    """The hub's view of one session. ``topics`` and ``resync`` are written only by the hub."""

    outbox: Outbox
    remote: str = ""
    id: int = 0  # assigned by the hub on admission
    topics: set[str] = field(default_factory=set)
    #: topics whose snapshot is still owed to the session (after a subscribe or a gap),
    #: longest owed first (an ordered set), so no topic starves behind the others
    resync: dict[str, None] = field(default_factory=dict)
    #: gaps resynchronized so far; each resync owes the topics from the next one on
    resyncs: int = 0
    admitted: trio.Event = field(default_factory=trio.Event)
    accepted: bool = False


@dataclass(frozen=True, slots=True)
class Join:
    session: SessionHandle


@dataclass(frozen=True, slots=True)
class Leave:
    session: SessionHandle


@dataclass(frozen=True, slots=True)
class Subscribe:
    session: SessionHandle
    topic: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    session: SessionHandle
    topic: str


Control = Join | Leave | Subscribe | Unsubscribe


@dataclass(slots=True)
class HubStats:
    sessions: int = 0
    sessions_refused: int = 0
    lagging_sessions: int = 0
    resyncs: int = 0
    frames_encoded: int = 0
    frames_offered: int = 0
    frames_dropped: int = 0
    topics: int = 0
    subscriptions: int = 0
    events: int = 0

    def snapshot(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


VenueSnapshot = Callable[[], dict[str, Any]]
#: ask the owning shard for a symbol's window snapshot, answer to the given channel;
#: False when its query channel is full (asked again next tick)
AskWindow = Callable[[str, "trio.MemorySendChannel[dict[str, Any] | None]"], bool]
WINDOW_PREFIX = "window:"
WINDOW_ANSWERS = 64  # window snapshots in flight from the shards to the hub
WINDOW_ASK_TIMEOUT_S = 5.0  # an unanswered window query (its shard restarted) is asked again


def is_window(topic: str) -> bool:
    return topic.startswith(WINDOW_PREFIX)


class Hub:
    """The hub's state and logic; driven by :func:`run_hub`."""

    def __init__(self, config: FeedConfig, *, top_n: int, venues: VenueSnapshot,
                 ask_window: AskWindow | None = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.config = config
        self.top_n = top_n
        self.venues = venues
        self.ask_window = ask_window
        self.clock_ns = clock_ns
        self.window_replies, self._window_answers = trio.open_memory_channel[dict[str, Any] | None](
            WINDOW_ANSWERS)
        #: window topics asked of a shard and not answered yet, with when they were asked
        self.windows_asked: dict[str, float] = {}
        #: window topics with a delta broadcast this tick: a snapshot queued after the
        #: broadcast takes that delta's slots in (they may be newer than the snapshot)
        self.window_deltas: set[str] = set()
        self.state: dict[str, Any] = {}
        self.seq: dict[str, int] = {}
        self.subscribers: dict[str, set[SessionHandle]] = {}
        self.sessions: set[SessionHandle] = set()
        self._opp_parts: dict[str, list[dict[str, Any]]] = {}
        self._symbol_parts: dict[str, list[str]] = {}
        self._next_session_id = itertools.count(1)
        self.stats = HubStats()

    # -- control ---------------------------------------------------------------------

    def control(self, message: Control) -> None:
        session = message.session
        if isinstance(message, Join):
            if len(self.sessions) >= self.config.max_sessions:
                self.stats.sessions_refused += 1
                session.accepted = False
            else:
                self.sessions.add(session)
                session.id = next(self._next_session_id)
                session.accepted = True
            session.admitted.set()
        elif isinstance(message, Leave):
            self._remove(session)
        elif session not in self.sessions:
            return
        elif isinstance(message, Subscribe):
            topic = message.topic
            if topic not in session.topics:
                session.topics.add(topic)
                if is_window(topic):
                    session.resync[topic] = None
                else:
                    self.subscribers.setdefault(topic, set()).add(session)
                    self._send_snapshot(session, topic)
        elif isinstance(message, Unsubscribe):
            session.topics.discard(message.topic)
            session.resync.pop(message.topic, None)
            self._unsubscribe(session, message.topic)
        self._count()

    def _remove(self, session: SessionHandle) -> None:
        self.sessions.discard(session)
        for topic in session.topics:
            self._unsubscribe(session, topic)
        session.topics.clear()
        session.resync.clear()

    def _count(self) -> None:
        self.stats.sessions = len(self.sessions)
        self.stats.subscriptions = sum(len(s) for s in self.subscribers.values())
        self.stats.topics = len(self.state)

    def _ts(self) -> int:
        return self.clock_ns() // 1_000_000

    def _snapshot_frame(self, topic: str) -> bytes:
        data = self.state.get(topic)
        if data is None:
            data = _empty(topic)
        self.stats.frames_encoded += 1
        return encode_frame(topic, "snapshot", self.seq.get(topic, 0), data, self._ts())

    def _send_snapshot(self, session: SessionHandle, topic: str) -> None:
        session.outbox.offer(self._snapshot_frame(topic))

    # -- ticks -----------------------------------------------------------------------

    def absorb(self, updates: dict[str, Any]) -> set[str]:
        """Take shard payloads; return the topics whose state changed."""
        changed: set[str] = set()
        for key, payload in updates.items():
            if key.startswith("opportunities#"):
                self._opp_parts[key] = payload
                changed.add("opportunities")
            elif key.startswith("symbols#"):
                self._symbol_parts[key] = payload
                changed.add("symbols")
            elif is_window(key):
                self.state[key] = payload  # only the latest slots: a delta, never a snapshot
                changed.add(key)
            else:
                self.state[key] = payload
                changed.add(key)
        if "opportunities" in changed:
            rows = [row for part in self._opp_parts.values() for row in part]
            rows.sort(key=lambda r: r["net_bps"], reverse=True)
            self.state["opportunities"] = {"open": rows[: self.top_n]}
        if "symbols" in changed:
            symbols = sorted({s for part in self._symbol_parts.values() for s in part})
            self.state["symbols"] = {"symbols": symbols}
            known = set(symbols)
            for topic in [t for t in self.state if ":" in t]:
                if topic.split(":", 1)[1] not in known:
                    del self.state[topic]
                    self.seq.pop(topic, None)
        venues = self.venues()
        if venues != self.state.get("venues"):
            self.state["venues"] = venues
            changed.add("venues")
        return changed

    def broadcast(self, topics: Iterable[str]) -> None:
        ts = self._ts()
        self.window_deltas.clear()
        for topic in topics:
            seq = self.seq.get(topic, 0) + 1
            self.seq[topic] = seq
            if is_window(topic):
                self.window_deltas.add(topic)
            subs = self.subscribers.get(topic)
            if not subs:
                continue
            frame = encode_frame(topic, "delta", seq, self.state.get(topic), ts)
            self._fan_out(frame, subs)

    def events(self, events: Iterable[Opportunity]) -> None:
        """One ``events`` frame per tick carrying that tick's opens and closes.

        A frame per event made a burst (a flooding venue, a venue going down and closing
        every window that uses it) longer than a fast client's whole outbox, so every
        subscriber was resynced each tick and finally closed 4001. Chunks of
        ``EVENTS_PER_FRAME`` keep a single frame's size bounded.
        """
        now = self.clock_ns()
        rows: list[dict[str, Any]] = []
        for event in events:
            self.stats.events += 1
            if event.state is OpportunityState.UPDATE:
                continue
            row = opportunity_row(event, now)
            row["state"] = event.state.value
            rows.append(row)
        if not rows:
            return
        subs = self.subscribers.get("opportunities")
        ts = self._ts()
        for start in range(0, len(rows), EVENTS_PER_FRAME):
            seq = self.seq.get("opportunities", 0) + 1
            self.seq["opportunities"] = seq
            if subs:
                chunk = rows[start:start + EVENTS_PER_FRAME]
                self._fan_out(encode_frame("opportunities", "events", seq, {"events": chunk}, ts), subs)

    def _fan_out(self, frame: bytes, subs: Iterable[SessionHandle]) -> None:
        stats = self.stats
        stats.frames_encoded += 1
        for session in subs:
            stats.frames_offered += 1
            if not session.outbox.offer(frame):
                stats.frames_dropped += 1

    def maintain(self) -> None:
        """Prune closed sessions; owe a snapshot of every topic to those that lost
        frames; queue owed snapshots where they fit; ask shards for window snapshots."""
        lagging = 0
        frames: dict[str, bytes] = {}  # one encode per topic per tick, shared by sessions
        windows = self._window_snapshots()
        wanted: set[str] = set()
        for session in list(self.sessions):
            outbox = session.outbox
            if outbox.closed:
                self._remove(session)
                continue
            if outbox.needs_resync:
                lagging += 1
                outbox.needs_resync = False
                self.stats.resyncs += 1
                # Start at the next topic each time: a session that takes only the first
                # queued snapshot before it overflows again (the rest dropped with it)
                # would otherwise only ever get the first topic's state.
                ordered = sorted(session.topics)
                start = session.resyncs % len(ordered) if ordered else 0
                session.resyncs += 1
                for topic in ordered[start:] + ordered[:start]:
                    session.resync.setdefault(topic, None)
                for topic in session.topics:
                    if is_window(topic):  # no deltas until its new snapshot is queued
                        self._unsubscribe(session, topic)
            for topic in list(session.resync):
                if is_window(topic):
                    frame = windows.get(topic)
                    if frame is None:
                        wanted.add(topic)
                        continue
                else:
                    frame = frames.get(topic)
                    if frame is None:
                        frame = frames[topic] = self._snapshot_frame(topic)
                if not outbox.has_room(1, len(frame)):
                    if is_window(topic):
                        wanted.add(topic)
                    break
                outbox.offer(frame)
                del session.resync[topic]
                if is_window(topic):
                    self.subscribers.setdefault(topic, set()).add(session)
        self._ask_windows(wanted)
        self.stats.lagging_sessions = lagging
        self._count()

    def _unsubscribe(self, session: SessionHandle, topic: str) -> None:
        subs = self.subscribers.get(topic)
        if subs is not None:
            subs.discard(session)
            if not subs:
                del self.subscribers[topic]

    def _window_snapshots(self) -> dict[str, bytes]:
        """The window snapshots the shards answered since the last tick, encoded once."""
        frames: dict[str, bytes] = {}
        while True:
            try:
                doc = self._window_answers.receive_nowait()
            except trio.WouldBlock:
                return frames
            if doc is None:
                continue
            topic = WINDOW_PREFIX + doc["symbol"]
            self.windows_asked.pop(topic, None)
            if topic in self.window_deltas:  # sent this tick to the others: fold it in
                doc = merge_window_delta(doc, self.state[topic])
            self.stats.frames_encoded += 1
            frames[topic] = encode_frame(topic, "snapshot", self.seq.get(topic, 0), doc, self._ts())

    def _ask_windows(self, topics: set[str]) -> None:
        now = trio.current_time()
        for topic, asked_at in list(self.windows_asked.items()):
            if now - asked_at > WINDOW_ASK_TIMEOUT_S:
                del self.windows_asked[topic]
        for topic in sorted(topics):
            if topic in self.windows_asked or len(self.windows_asked) >= WINDOW_ANSWERS:
                continue
            symbol = topic[len(WINDOW_PREFIX):]
            if self.ask_window is None:  # no shards (hub tests): an empty window
                self.window_replies.send_nowait(empty_window(symbol, 1))
                self.windows_asked[topic] = now
            elif self.ask_window(symbol, self.window_replies):
                self.windows_asked[topic] = now


def _empty(topic: str) -> Any:
    if topic == "opportunities":
        return {"open": []}
    if topic == "symbols":
        return {"symbols": []}
    if topic == "venues":
        return {}
    symbol = topic.split(":", 1)[1] if ":" in topic else ""
    if topic.startswith("quotes:"):
        return {"symbol": symbol, "venues": {}}
    if topic.startswith("spreads:"):
        return {"symbol": symbol, "best": None, "pairs": []}
    return None


async def run_hub(
    hub: Hub,
    states: ConflatingChannel[str, Any],
    events: DropChannel[Opportunity],
    control: BlockingChannel[Control],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the hub until cancelled: control requests as they come, fan-out every tick.

    Error handling: no I/O here; an exception is a bug and goes to the supervisor. On
    cancellation every session outbox is closed so sessions end promptly.
    """

    async def serve_control() -> None:
        # Everything pending per wake-up: each receive() is a scheduling point, and with a
        # thousand sessions' tasks a scheduling round took ~100 ms under load, so taking
        # one request per round admitted ~10 sessions a second; a reconnect burst of
        # hundreds then waited past the session's 5 s admission limit and was refused.
        while True:
            for message in await control.receive_batch():
                hub.control(message)

    async def tick() -> None:
        period = hub.config.tick_s
        lag = hub_lag(period)
        while True:
            # just after the shards' publish on the shared grid (actors/ticks.py)
            await trio.sleep_until(next_tick(trio.current_time(), period, lag))
            changed = hub.absorb(states.receive_batch_nowait())
            hub.events(events.receive_batch_nowait())
            hub.broadcast(changed)
            hub.maintain()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_control)
            nursery.start_soon(tick)
            task_status.started()
    finally:
        for session in hub.sessions:
            session.outbox.close()
