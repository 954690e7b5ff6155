"""The reference client of the ``/feed`` protocol: ``spreadwatch tail`` and a small library.

    spreadwatch tail TOPIC [TOPIC ...] [--url ws://127.0.0.1:8000/feed]
                     [--count N] [--seconds S] [--json]

prints every frame of the topics, one line each (human-readable, or JSON lines with
``--json``), answers the server's heartbeat pings, and notes each sequence gap on
standard error. It ends after ``--count`` data frames, after ``--seconds``, or on
SIGINT/SIGTERM, with exit code 0 and a summary on standard error. A feed that cannot be
reached or that the server closes ends it with exit code 1 and a message naming the
cause (``docs/feed-protocol.md`` §7 for the close codes); bad arguments exit with 2.

As a library::

    async with open_feed("ws://127.0.0.1:8000/feed", ["opportunities"]) as feed:
        async for frame in feed:          # FeedFrame, decoded and checked
            ...

The feed object is an async iterator (a class, not an async generator). Server pings
are answered inside ``__anext__`` and still yielded, so a client that keeps iterating
stays connected. Per-topic sequence numbers are checked as the protocol documents:
``seq`` above the previous one plus one is a gap (``FeedFrame.missed`` says how many
frames were lost, ``FeedStats`` counts them), equal is a snapshot, lower is a counter
restart.

Error handling: :class:`FeedUnavailable` when the connection or the handshake fails,
:class:`FeedClosed` (with the close code and reason) when the server closes the
session, :class:`ValueError` for a topic outside the protocol's grammar or a URL that
is not ``ws://``/``wss://``. Frames that are not protocol frames are counted
(``FeedStats.bad_frames``) and skipped, never fatal.

Resource handling: the socket lives inside ``open_feed``'s block; leaving it closes
the WebSocket (code 1000, shielded, at most one second) and the TCP stream.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO
from urllib.parse import urlsplit

import msgpack
import orjson
import trio
import trio_websocket

from actors.connector import WebSocketLike, websocket_connector
from actors.session import TOPIC_RE

DEFAULT_URL = "ws://127.0.0.1:8000/feed"
SESSION_TOPIC = "_"
KINDS = frozenset({"snapshot", "delta", "events", "error", "ping", "pong"})
MAX_TOPIC_CHARS = 80  # the server's limit (docs/feed-protocol.md §4)

#: close codes of docs/feed-protocol.md §7, plus the ones a WebSocket library reports
CLOSE_MEANINGS: Mapping[int, str] = MappingProxyType({
    1000: "normal closure",
    1001: "the server is shutting down",
    1005: "closed without a code",
    1006: "connection lost",
    1008: "policy violation: too many bad messages",
    1009: "a client message was too big",
    1011: "server error",
    1013: "try again later: the server is full or busy",
    4001: "lagging: this client read too slowly",
    4002: "heartbeat timeout: nothing heard from this client in time",
})


class FeedUnavailable(Exception):
    """The feed could not be reached: refused, timed out, or the handshake was rejected."""


class FeedClosed(Exception):
    """The server (or the network) ended the session; ``code`` is the WebSocket close code."""

    def __init__(self, code: int, reason: str) -> None:
        meaning = CLOSE_MEANINGS.get(code, "unknown close code")
        super().__init__(f"feed closed with {code} ({meaning})" + (f": {reason}" if reason else ""))
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FeedFrame:
    """One server frame (docs/feed-protocol.md §3). ``missed``: frames lost just before it."""

    topic: str
    kind: str
    ts: int
    seq: int
    data: Any
    missed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "kind": self.kind, "ts": self.ts, "seq": self.seq, "data": self.data}


@dataclass(slots=True)
class FeedStats:
    """What a client saw. ``gaps``: sequence jumps; ``missed``: frames lost in them."""

    frames: int = 0
    bad_frames: int = 0
    errors: int = 0
    gaps: int = 0
    missed: int = 0
    pings_answered: int = 0
    gaps_by_topic: dict[str, int] = field(default_factory=dict)


class SeqTracker:
    """Per-topic sequence check as the protocol defines it (§3, "Sequence numbers")."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def check(self, topic: str, seq: int) -> int:
        """Record ``seq`` on ``topic``; return how many frames were skipped before it."""
        previous = self._last.get(topic)
        self._last[topic] = seq
        if previous is None or seq <= previous:
            return 0  # the first frame, a snapshot at the current number, or a restart
        return seq - previous - 1

    def forget(self, topic: str) -> None:
        self._last.pop(topic, None)


def check_topic(topic: str) -> str:
    """``topic`` if the protocol's grammar accepts it; else ValueError saying why."""
    if len(topic) > MAX_TOPIC_CHARS or not TOPIC_RE.fullmatch(topic):
        raise ValueError(
            f"invalid topic {topic[:MAX_TOPIC_CHARS]!r}: expected opportunities, venues, symbols "
            "or quotes|spreads|window:<BASE/QUOTE> such as quotes:BTC/USDT (upper case)")
    return topic


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a WebSocket URL: {url!r} (expected ws://HOST:PORT/feed)")
    return url


def parse_frame(raw: bytes | str) -> FeedFrame | None:
    """Decode one server message; None when it is not a protocol frame."""
    if not isinstance(raw, bytes):
        return None
    try:
        message = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not isinstance(message, dict):
        return None
    topic, kind, ts, seq = (message.get(k) for k in ("topic", "kind", "ts", "seq"))
    if not isinstance(topic, str) or kind not in KINDS:
        return None
    if not isinstance(ts, int) or not isinstance(seq, int) or isinstance(ts, bool) or isinstance(seq, bool):
        return None
    return FeedFrame(topic, str(kind), ts, seq, message.get("data"))


class Feed:
    """A connected session: subscribe, unsubscribe, and iterate over its frames."""

    def __init__(self, ws: WebSocketLike) -> None:
        self._ws = ws
        self._seq = SeqTracker()
        self.topics: set[str] = set()
        self.stats = FeedStats()

    async def subscribe(self, topic: str) -> None:
        check_topic(topic)
        self.topics.add(topic)
        self._seq.forget(topic)
        await self._send({"op": "subscribe", "topic": topic})

    async def unsubscribe(self, topic: str) -> None:
        check_topic(topic)
        self.topics.discard(topic)
        self._seq.forget(topic)
        await self._send({"op": "unsubscribe", "topic": topic})

    async def send_raw(self, message: bytes | str) -> None:
        """Send anything, protocol or not (tests of the server's input checks use this)."""
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def _send(self, message: dict[str, Any]) -> None:
        await self.send_raw(msgpack.packb(message))

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> FeedFrame:
        while True:
            try:
                raw = await self._ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                raise _closed(exc) from None
            frame = parse_frame(raw)
            if frame is None:
                self.stats.bad_frames += 1
                continue
            self.stats.frames += 1
            missed = self._seq.check(frame.topic, frame.seq)
            if missed:
                self.stats.gaps += 1
                self.stats.missed += missed
                self.stats.gaps_by_topic[frame.topic] = self.stats.gaps_by_topic.get(frame.topic, 0) + 1
                frame = FeedFrame(frame.topic, frame.kind, frame.ts, frame.seq, frame.data, missed)
            if frame.kind == "error":
                self.stats.errors += 1
            elif frame.topic == SESSION_TOPIC and frame.kind == "ping":
                data = frame.data if isinstance(frame.data, dict) else {}
                await self._send({"op": "pong", "ts": data.get("ts", frame.ts)})
                self.stats.pings_answered += 1
            return frame


def _closed(exc: trio_websocket.ConnectionClosed) -> FeedClosed:
    reason = exc.reason
    code = reason.code if reason is not None and reason.code is not None else 1006
    return FeedClosed(code, (reason.reason or "") if reason is not None else "")


_CONNECT_ERRORS = (OSError, trio_websocket.HandshakeError, trio.TooSlowError)


def _describe_connect_error(url: str, exc: BaseException) -> str:
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return f"{url}: the server refused the WebSocket handshake with HTTP {exc.status_code}"
    if isinstance(exc, trio.TooSlowError | trio_websocket.ConnectionTimeout):
        return f"{url}: no answer in time"
    if isinstance(exc, OSError):
        return f"{url}: cannot connect ({exc.strerror or exc})"
    return f"{url}: {exc}"


def _single_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    leaves = list(_leaves(group))
    return leaves[0] if len(leaves) == 1 else None


def _leaves(exc: BaseException) -> Iterable[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


@asynccontextmanager
async def open_feed(url: str, topics: Iterable[str] = (), *, connect_timeout_s: float = 10.0,
                    message_queue_size: int = 64) -> AsyncIterator[Feed]:
    """Connect to ``url``, subscribe to ``topics`` and hand over the :class:`Feed`.

    The WebSocket library runs a reader task in a nursery around the block; an
    exception leaving the block is handed on as itself, not as a one-member
    exception group.
    """
    check_url(url)
    wanted = [check_topic(t) for t in topics]
    connect = websocket_connector(message_queue_size=message_queue_size, connect_timeout_s=connect_timeout_s,
                                  client="trio-websocket")
    entered = False
    try:
        async with connect(url) as ws:
            entered = True
            feed = Feed(ws)
            for topic in wanted:
                await feed.subscribe(topic)
            yield feed
    except BaseExceptionGroup as group:
        leaf = _single_leaf(group)
        if leaf is None:
            raise
        if not entered and isinstance(leaf, _CONNECT_ERRORS):
            raise FeedUnavailable(_describe_connect_error(url, leaf)) from leaf
        raise leaf from None
    except _CONNECT_ERRORS as exc:
        if entered:
            raise
        raise FeedUnavailable(_describe_connect_error(url, exc)) from exc


# -- printing ---------------------------------------------------------------------------


def _num(value: Any, fmt: str = ".2f") -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return format(value, fmt)
    return "-"


def _bps(value: Any) -> str:
    text = _num(value, "+.2f")
    return text if text == "-" else f"{text} bps"


def _price(value: Any) -> str:
    return _num(value, ".10g")


def _opportunity(row: Any) -> str:
    if not isinstance(row, dict):
        return "?"
    return (f"{row.get('symbol')} buy {row.get('buy_venue')} @ {_price(row.get('buy_price'))} "
            f"sell {row.get('sell_venue')} @ {_price(row.get('sell_price'))} net {_bps(row.get('net_bps'))}")


def summarize(frame: FeedFrame) -> str:
    """The human-readable part of a frame's line: what a trader would want at a glance."""
    data, topic, kind = frame.data, frame.topic, frame.kind
    if kind == "error":
        d = data if isinstance(data, dict) else {}
        return f"{d.get('code', '?')}: {d.get('message', '')}"
    if kind in ("ping", "pong"):
        return ""
    if not isinstance(data, dict):
        return repr(data)[:200]
    if topic == "opportunities":
        if kind == "events":
            rows = data.get("events")
            rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
            return "; ".join(f"{r.get('state', '?')} {_opportunity(r)}" for r in rows) or "no events"
        rows = data.get("open")
        rows = rows if isinstance(rows, list) else []
        return f"{len(rows)} open" + (f"; top: {_opportunity(rows[0])}" if rows else "")
    if topic == "venues":
        parts = []
        for name in sorted(data):
            v = data[name] if isinstance(data[name], dict) else {}
            state = "up" if v.get("connected") else "DOWN"
            rate, age = _num(v.get("rate"), ".0f"), _num(v.get("last_message_age_s"), ".1f")
            parts.append(f"{name} {state} {rate}/s age {age}s")
        return ", ".join(parts) or "no venues"
    if topic == "symbols":
        symbols = data.get("symbols")
        return f"{len(symbols)} symbols" if isinstance(symbols, list) else "?"
    if topic.startswith("quotes:"):
        venues = data.get("venues")
        venues = venues if isinstance(venues, dict) else {}
        parts = []
        for name in sorted(venues):
            q = venues[name] if isinstance(venues[name], dict) else {}
            mark = " STALE" if q.get("stale") else ""
            parts.append(f"{name} {_price(q.get('bid'))}/{_price(q.get('ask'))}{mark}")
        return ", ".join(parts) or "no quotes"
    if topic.startswith("spreads:"):
        best = data.get("best")
        pairs = data.get("pairs")
        count = len(pairs) if isinstance(pairs, list) else 0
        if not isinstance(best, dict):
            return f"no best pair ({count} pairs)"
        return (f"best buy {best.get('buy_venue')} sell {best.get('sell_venue')} "
                f"net {_bps(best.get('net_bps'))} ({count} pairs)")
    keys = ", ".join(sorted(str(k) for k in data)[:8])
    return f"{{{keys}}}"


def format_line(frame: FeedFrame) -> str:
    when = "--:--:--"
    if frame.ts > 0:
        when = datetime.fromtimestamp(frame.ts / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    text = summarize(frame)
    return f"{when} {frame.topic} {frame.kind} #{frame.seq}" + (f" {text}" if text else "")


def _json_line(frame: FeedFrame) -> str:
    try:
        return orjson.dumps(frame.as_dict(), option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # bytes or other non-JSON values inside data
        return orjson.dumps({**frame.as_dict(), "data": repr(frame.data)}).decode()


# -- command line ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topics", nargs="+", metavar="TOPIC",
                        help="opportunities, venues, symbols, quotes:BTC/USDT, spreads:BTC/USDT, ...")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"feed URL (default {DEFAULT_URL})")
    parser.add_argument("--count", type=int, default=None, metavar="N",
                        help="stop after N frames of the topics (session pings and errors not counted)")
    parser.add_argument("--seconds", type=float, default=None, metavar="S", help="stop after S seconds")
    parser.add_argument("--json", action="store_true", help="print JSON lines (the frames as sent)")
    parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                        help="give up connecting after S seconds (default 10)")


@dataclass(slots=True)
class TailResult:
    frames: int = 0
    stats: FeedStats = field(default_factory=FeedStats)
    ended: str = "interrupted"


async def tail(url: str, topics: Sequence[str], *, out: TextIO, err: TextIO, count: int | None = None,
               seconds: float | None = None, as_json: bool = False, connect_timeout_s: float = 10.0,
               result: TailResult | None = None) -> TailResult:
    """Print frames of ``topics`` until ``count`` data frames or ``seconds``; ``result`` is
    filled as frames come, so a caller that cancels this still has the counts.

    Raises :class:`FeedUnavailable` or :class:`FeedClosed` as :func:`open_feed` does.
    """
    result = TailResult() if result is None else result
    with trio.CancelScope() as timer:
        if seconds is not None:
            timer.deadline = trio.current_time() + seconds
        async with open_feed(url, topics, connect_timeout_s=connect_timeout_s) as feed:
            result.stats = feed.stats
            async for frame in feed:
                if frame.missed:
                    err.write(f"gap on {frame.topic}: {frame.missed} frame(s) missed before #{frame.seq}\n")
                    err.flush()
                out.write((_json_line(frame) if as_json else format_line(frame)) + "\n")
                out.flush()
                if frame.topic != SESSION_TOPIC:
                    result.frames += 1
                    if count is not None and result.frames >= count:
                        result.ended = f"{count} frames received"
                        break
    if timer.cancelled_caught:
        result.ended = "time is up"
    return result


async def _tail_main(args: argparse.Namespace, out: TextIO, err: TextIO) -> TailResult:
    """:func:`tail` until it ends or SIGINT/SIGTERM arrives (a normal end, too)."""
    result = TailResult()
    try:
        async with trio.open_nursery() as nursery:
            async def watch_signals() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        result.ended = f"{signal.Signals(signum).name} received"
                        nursery.cancel_scope.cancel()
                        return
            nursery.start_soon(watch_signals)
            await tail(args.url, args.topics, out=out, err=err, count=args.count, seconds=args.seconds,
                       as_json=args.json, connect_timeout_s=args.connect_timeout, result=result)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        leaf = _single_leaf(group)
        if isinstance(leaf, FeedClosed | FeedUnavailable):
            raise leaf from None
        raise
    return result


def run_tail(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """The ``spreadwatch tail`` command; returns the exit code."""
    try:
        check_url(args.url)
        for topic in args.topics:
            check_topic(topic)
        if args.count is not None and args.count < 1:
            raise ValueError(f"--count must be >= 1, got {args.count}")
        if args.seconds is not None and not args.seconds > 0:
            raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    except ValueError as exc:
        err.write(f"spreadwatch tail: {exc}\n")
        return 2
    try:
        result = trio.run(_tail_main, args, out, err)
    except FeedUnavailable as exc:
        err.write(f"spreadwatch tail: cannot reach the feed: {exc}\n")
        return 1
    except FeedClosed as exc:
        err.write(f"spreadwatch tail: {exc}\n")
        return 1
    stats = result.stats
    err.write(f"spreadwatch tail: {result.ended}: {result.frames} frames, {stats.gaps} gaps "
              f"({stats.missed} frames missed), {stats.errors} errors, {stats.bad_frames} bad frames\n")
    return 0
