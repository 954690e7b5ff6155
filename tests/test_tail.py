"""The reference client (app/tail.py): sequence checks, frame parsing and printing, close
codes and connection failures against loopback servers, and `spreadwatch tail` as a
user runs it against a real demo."""

from __future__ import annotations

import functools
import io
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio_websocket

from app.tail import (
    FeedClosed,
    FeedFrame,
    FeedUnavailable,
    SeqTracker,
    check_topic,
    format_line,
    open_feed,
    parse_frame,
    tail,
)
from tests.processes import free_port, start_cli, wait_for_health

ROOT = Path(__file__).resolve().parent.parent


def frame(topic: str, kind: str, seq: int, data: Any = None, ts: int = 1_732_460_000_250) -> bytes:
    packed: bytes = msgpack.packb({"topic": topic, "kind": kind, "ts": ts, "seq": seq, "data": data})
    return packed


# -- pure parts ---------------------------------------------------------------------------


def test_seq_tracker_counts_jumps_but_not_snapshots_restarts_or_other_topics() -> None:
    seq = SeqTracker()
    assert seq.check("quotes:BTC/USDT", 40) == 0  # first frame: any number
    assert seq.check("quotes:BTC/USDT", 40) == 0  # a snapshot carries the current number
    assert seq.check("quotes:BTC/USDT", 41) == 0
    assert seq.check("venues", 7) == 0  # per topic
    assert seq.check("quotes:BTC/USDT", 45) == 3  # 42, 43, 44 lost
    assert seq.check("quotes:BTC/USDT", 2) == 0  # the server restarted the topic's counter
    assert seq.check("quotes:BTC/USDT", 3) == 0
    seq.forget("quotes:BTC/USDT")
    assert seq.check("quotes:BTC/USDT", 90) == 0


@pytest.mark.parametrize("raw", [
    "text frame",
    b"\xc1",  # never used in msgpack
    msgpack.packb([1, 2]),
    msgpack.packb({"topic": "venues", "kind": "gossip", "ts": 1, "seq": 1}),
    msgpack.packb({"topic": 5, "kind": "delta", "ts": 1, "seq": 1}),
    msgpack.packb({"topic": "venues", "kind": "delta", "ts": "now", "seq": 1}),
    msgpack.packb({"topic": "venues", "kind": "delta", "ts": 1, "seq": True}),
    msgpack.packb({"topic": "venues", "kind": "delta", "ts": 1}),
])
def test_parse_frame_rejects_what_is_not_a_protocol_frame(raw: bytes | str) -> None:
    assert parse_frame(raw) is None


def test_parse_frame_keeps_every_field() -> None:
    parsed = parse_frame(frame("spreads:BTC/USDT", "delta", 12, {"best": None, "pairs": []}))
    assert parsed == FeedFrame("spreads:BTC/USDT", "delta", 1_732_460_000_250, 12, {"best": None, "pairs": []})


@pytest.mark.parametrize("topic", ["opportunities", "venues", "symbols", "quotes:BTC/USDT", "spreads:1INCH/USDT"])
def test_check_topic_accepts_the_protocol_topics(topic: str) -> None:
    assert check_topic(topic) == topic


@pytest.mark.parametrize("topic", ["", "quotes:btc/usdt", "quotes:BTC", "trades:BTC/USDT", "venues ",
                                   "quotes:" + "A" * 31 + "/USDT", "quotes:../../etc"])
def test_check_topic_refuses_the_rest_with_a_clear_message(topic: str) -> None:
    with pytest.raises(ValueError, match="invalid topic"):
        check_topic(topic)


def test_format_line_gives_one_readable_line_per_topic() -> None:
    opp = {"symbol": "BTC/USDT", "buy_venue": "bybit", "sell_venue": "binance", "net_bps": 3.5,
           "buy_price": 97000.5, "sell_price": 97060.0}
    lines = [format_line(parse_frame(f)) for f in (  # type: ignore[arg-type]
        frame("opportunities", "snapshot", 3, {"open": [opp]}),
        frame("opportunities", "events", 4, {"events": [{**opp, "state": "close"}, {**opp, "state": "open"}]}),
        frame("quotes:BTC/USDT", "delta", 9, {"symbol": "BTC/USDT", "venues": {
            "binance": {"bid": 97000.0, "ask": 97000.5, "stale": False},
            "okx": {"bid": 96990.0, "ask": 96991.0, "stale": True}}}),
        frame("spreads:BTC/USDT", "delta", 10, {"best": {"buy_venue": "okx", "sell_venue": "binance",
                                                          "net_bps": -8.125}, "pairs": [{}, {}]}),
        frame("venues", "delta", 11, {"binance": {"connected": True, "rate": 412.5, "last_message_age_s": 0.1},
                                      "okx": {"connected": False, "rate": 0.0, "last_message_age_s": None}}),
        frame("_", "error", 1, {"code": "bad_topic", "message": "invalid topic 'x'"}),
    )]
    assert lines == [
        "14:53:20.250 opportunities snapshot #3 1 open; top: BTC/USDT buy bybit @ 97000.5 sell binance @ 97060 "
        "net +3.50 bps",
        "14:53:20.250 opportunities events #4 close BTC/USDT buy bybit @ 97000.5 sell binance @ 97060 net +3.50 bps; "
        "open BTC/USDT buy bybit @ 97000.5 sell binance @ 97060 net +3.50 bps",
        "14:53:20.250 quotes:BTC/USDT delta #9 binance 97000/97000.5, okx 96990/96991 STALE",
        "14:53:20.250 spreads:BTC/USDT delta #10 best buy okx sell binance net -8.12 bps (2 pairs)",
        "14:53:20.250 venues delta #11 binance up 412/s age 0.1s, okx DOWN 0/s age -s",
        "14:53:20.250 _ error #1 bad_topic: invalid topic 'x'",
    ]
    assert all("\n" not in line for line in lines)


# -- against loopback servers ----------------------------------------------------------------

Script = Callable[[trio_websocket.WebSocketConnection, list[Any]], Awaitable[None]]


async def _serve_script(nursery: trio.Nursery, script: Script, heard: list[Any]) -> str:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await script(ws, heard)
        except trio_websocket.ConnectionClosed:
            pass

    server = await nursery.start(functools.partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0,
                                                   ssl_context=None))
    return f"ws://127.0.0.1:{server.port}/feed"


async def test_client_answers_pings_reports_gaps_skips_junk_and_raises_the_close_code() -> None:
    async def script(ws: trio_websocket.WebSocketConnection, heard: list[Any]) -> None:
        heard.append(msgpack.unpackb(await ws.get_message()))  # the subscribe
        await ws.send_message(frame("quotes:BTC/USDT", "snapshot", 5, {"venues": {}}))
        await ws.send_message(frame("quotes:BTC/USDT", "delta", 6, {"venues": {}}))
        await ws.send_message("not binary")
        await ws.send_message(b"\xc1")
        await ws.send_message(frame("_", "ping", 1, {"ts": 1234}))
        heard.append(msgpack.unpackb(await ws.get_message()))  # the pong
        await ws.send_message(frame("quotes:BTC/USDT", "delta", 9, {"venues": {}}))
        await ws.aclose(4001, "client too far behind; reconnect")

    heard: list[Any] = []
    seen: list[FeedFrame] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await _serve_script(nursery, script, heard)
            with pytest.raises(FeedClosed) as closed:
                async with open_feed(url, ["quotes:BTC/USDT"]) as feed:
                    async for f in feed:
                        seen.append(f)
            nursery.cancel_scope.cancel()
    assert closed.value.code == 4001
    assert "4001 (lagging: this client read too slowly): client too far behind" in str(closed.value)
    assert heard == [{"op": "subscribe", "topic": "quotes:BTC/USDT"}, {"op": "pong", "ts": 1234}]
    assert [(f.topic, f.kind, f.seq, f.missed) for f in seen] == [
        ("quotes:BTC/USDT", "snapshot", 5, 0), ("quotes:BTC/USDT", "delta", 6, 0), ("_", "ping", 1, 0),
        ("quotes:BTC/USDT", "delta", 9, 2)]
    assert (feed.stats.frames, feed.stats.bad_frames, feed.stats.gaps, feed.stats.missed) == (4, 2, 1, 2)
    assert feed.stats.pings_answered == 1


async def test_unreachable_and_refused_feeds_raise_feed_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with trio.fail_after(10):
        with pytest.raises(FeedUnavailable, match="cannot connect"):
            async with open_feed(f"ws://127.0.0.1:{port}/feed", ["venues"]):
                pass

        async def refuse(request: trio_websocket.WebSocketRequest) -> None:
            await request.reject(403, body=b"origin not allowed")

        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(trio_websocket.serve_websocket, refuse,
                                                           "127.0.0.1", 0, ssl_context=None))
            with pytest.raises(FeedUnavailable, match="refused the WebSocket handshake with HTTP 403"):
                async with open_feed(f"ws://127.0.0.1:{server.port}/feed"):
                    pass
            nursery.cancel_scope.cancel()


async def test_an_error_inside_the_block_comes_out_as_itself() -> None:
    async def idle(ws: trio_websocket.WebSocketConnection, heard: list[Any]) -> None:
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await _serve_script(nursery, idle, [])
            with pytest.raises(KeyError):
                async with open_feed(url):
                    raise KeyError("mine")
            nursery.cancel_scope.cancel()


async def test_tail_prints_json_lines_and_stops_after_count() -> None:
    async def script(ws: trio_websocket.WebSocketConnection, heard: list[Any]) -> None:
        await ws.get_message()
        for seq in (1, 2, 5):
            await ws.send_message(frame("venues", "delta", seq, {"okx": {"connected": True}}))
        await trio.sleep_forever()

    out, err = io.StringIO(), io.StringIO()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await _serve_script(nursery, script, [])
            result = await tail(url, ["venues"], out=out, err=err, count=3, as_json=True)
            nursery.cancel_scope.cancel()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["seq"] for line in lines] == [1, 2, 5]
    assert lines[0] == {"topic": "venues", "kind": "delta", "ts": 1_732_460_000_250, "seq": 1,
                        "data": {"okx": {"connected": True}}}
    assert err.getvalue() == "gap on venues: 2 frame(s) missed before #5\n"
    assert (result.frames, result.ended, result.stats.gaps) == (3, "3 frames received", 1)


# -- the command, against the real demo ------------------------------------------------------



def _tail(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", "tail", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_spreadwatch_tail_against_a_real_demo(tmp_path: Path) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/feed"
    # nothing listens yet: a clear message and exit code 1; a bad topic is a usage error (2)
    refused = _tail("venues", "--url", url, "--count", "1")
    assert refused.returncode == 1
    assert refused.stderr.startswith("spreadwatch tail: cannot reach the feed: ") and "cannot connect" in refused.stderr
    bad = _tail("quotes:btc/usdt", "--url", url)
    assert bad.returncode == 2 and "invalid topic 'quotes:btc/usdt'" in bad.stderr

    demo = start_cli("demo", "--port", str(port), "--data-dir", str(tmp_path / "data"),
                     "--venues", "binance,bybit", "--symbols", "6")
    follower: subprocess.Popen[str] | None = None
    try:
        if wait_for_health(port, lambda doc: True) is None:
            pytest.fail("the demo did not become healthy within 30 s")

        done = _tail("quotes:BTC/USDT", "venues", "--url", url, "--count", "6", "--json")
        assert done.returncode == 0, done.stderr
        frames = [json.loads(line) for line in done.stdout.splitlines()]
        data = [f for f in frames if f["topic"] != "_"]
        assert len(data) == 6
        assert {f["topic"] for f in data} == {"quotes:BTC/USDT", "venues"}
        assert all(set(f) == {"topic", "kind", "ts", "seq", "data"} for f in frames)
        first = {f["topic"]: f["kind"] for f in reversed(data)}
        assert first == {"quotes:BTC/USDT": "snapshot", "venues": "snapshot"}  # snapshot first, then deltas
        assert {"binance", "bybit"} <= set(next(f for f in data if f["topic"] == "venues")["data"])
        assert "spreadwatch tail: 6 frames received: 6 frames" in done.stderr

        human = _tail("opportunities", "--url", url, "--seconds", "1.5")
        assert human.returncode == 0, human.stderr
        assert human.stdout.splitlines()[0].split()[1:3] == ["opportunities", "snapshot"]
        assert "spreadwatch tail: time is up" in human.stderr

        # a follower without an end: the server going away ends it with 1 and the close code
        follower = subprocess.Popen([sys.executable, "-m", "app.cli", "tail", "venues", "--url", url],
                                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert follower.stdout is not None
        assert " venues snapshot " in follower.stdout.readline()
        demo.send_signal(signal.SIGTERM)
        demo.communicate(timeout=10)
        _, follower_err = follower.communicate(timeout=10)
        assert follower.returncode == 1
        assert "feed closed with 1001 (the server is shutting down): server shutting down" in follower_err
    finally:
        for proc in (demo, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
