"""Fakes at the I/O seams (never monkeypatched globals): a venue WebSocket and a clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import trio
from trio_websocket import CloseReason, ConnectionClosed

from actors.ticks import hub_lag, next_tick

_CLOSE = object()


class FakeConnection:
    """One fake venue connection: the test pushes frames, the connector's sends are kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: list[str | bytes] = []
        self.sent_at: list[float] = []
        self.opened_at = trio.current_time()
        self._send, self._receive = trio.open_memory_channel[object](1000)
        self.closed = False

    def push(self, frame: str | bytes) -> None:
        self._send.send_nowait(frame)

    def drop(self) -> None:
        self._send.send_nowait(_CLOSE)

    async def get_message(self) -> str | bytes:
        item = await self._receive.receive()
        if item is _CLOSE:
            raise ConnectionClosed(CloseReason(1006, "dropped by test"))
        assert isinstance(item, str | bytes)
        return item

    async def send_message(self, message: str | bytes) -> None:
        if self.closed:
            raise ConnectionClosed(CloseReason(1006, "closed"))
        await trio.lowlevel.checkpoint()
        self.sent.append(message)
        self.sent_at.append(trio.current_time())


class FakeVenue:
    """A connect factory (the connector's seam) that records every connection."""

    def __init__(self, greeting: str | None = None) -> None:
        self.connections: list[FakeConnection] = []
        self.refuse = False
        self.greeting = greeting  # a frame every new connection receives first (KuCoin's welcome)
        self.opened = trio.lowlevel.ParkingLot()

    def connect(self, url: str) -> AbstractAsyncContextManager[FakeConnection]:
        @asynccontextmanager
        async def open_() -> AsyncIterator[FakeConnection]:
            await trio.lowlevel.checkpoint()
            if self.refuse:
                raise OSError("connection refused")
            conn = FakeConnection(url)
            if self.greeting is not None:
                conn.push(self.greeting)
            self.connections.append(conn)
            self.opened.unpark_all()
            try:
                yield conn
            finally:
                conn.closed = True

        return open_()

    @property
    def live(self) -> FakeConnection:
        return self.connections[-1]


def virtual_clock_ns(epoch_ns: int = 1_700_000_000_000_000_000) -> int:
    """Wall-clock nanoseconds derived from trio's (virtual, in tests) clock."""
    return epoch_ns + int(trio.current_time() * 1e9)


FRAMES = Path(__file__).parent / "data" / "frames"
ROUTES = {
    ("binance.test", "/api/v3/exchangeInfo"): FRAMES / "binance" / "exchange_info.json",
    ("binance.test", "/api/v3/ticker/24hr"): FRAMES / "binance" / "ticker_24hr_mini.json",
    ("bybit.test", "/v5/market/instruments-info"): FRAMES / "bybit" / "instruments_info_spot.json",
    ("bybit.test", "/v5/market/tickers"): FRAMES / "bybit" / "tickers_spot.json",
}


class RestVenues:
    """An httpx transport (the discovery's I/O seam) serving the venues' documented payloads."""

    def __init__(self) -> None:
        self.requests = 0
        self.down: set[str] = set()
        self.bodies = {key: path.read_bytes() for key, path in ROUTES.items()}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if request.url.host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        body = self.bodies.get((request.url.host, request.url.path))
        if body is None:
            return httpx.Response(404)
        return httpx.Response(200, content=body)


def only(venues: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """A ``[venues]`` table enabling exactly ``venues`` (every other registered venue off)."""
    from actors.venues.registry import VENUES

    table: dict[str, dict[str, object]] = {name: {"enabled": False} for name in VENUES}
    table.update(venues)
    return table


def binance_frame(u: int, bid: float) -> str:
    """A Binance bookTicker payload for BTCUSDT (ask one above ``bid``)."""
    return json.dumps({"u": u, "s": "BTCUSDT", "b": f"{bid:.2f}", "B": "1", "a": f"{bid + 1:.2f}", "A": "1"})


def bybit_frame(u: int, bid: float) -> str:
    """A Bybit orderbook.1 snapshot for BTCUSDT (ask one above ``bid``)."""
    return json.dumps({"topic": "orderbook.1.BTCUSDT", "type": "snapshot", "ts": 1, "cts": 1,
                       "data": {"s": "BTCUSDT", "b": [[f"{bid:.2f}", "1"]], "a": [[f"{bid + 1:.2f}", "1"]],
                                "u": u, "seq": u}})


async def sleep_to_mid_tick(tick_s: float) -> None:
    """Sleep to half a tick past the hub's grid point (actors/ticks.py), so that a test
    publishing one state per tick has the hub take exactly one each tick."""
    await trio.sleep_until(next_tick(trio.current_time(), tick_s, hub_lag(tick_s) + tick_s / 2))
