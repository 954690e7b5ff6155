"""What the simulated venues share: the sans-IO contract between wire and server.

A venue's wire module (``binance.py``, ``bybit.py``) is pure: it answers REST requests
from a market snapshot, interprets one client WebSocket message against the
connection's subscriptions, and encodes books and trades as the venue documents them.
It never touches a socket or a clock; ``server.py`` owns those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from app.sim.market import Market, MarketSnapshot, SimTrade, TopOfBook


@dataclass(frozen=True, slots=True)
class RestReply:
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """How the server should act on one client message.

    ``frames`` go back to the client in order. ``subscribed`` and ``unsubscribed`` are
    the topics the message added or removed; ``duplicates`` the ones it asked for that
    were already subscribed; ``rejected`` the ones refused. ``app_ping`` marks an
    application-level ping (a heartbeat for venues that expect one).
    """

    frames: tuple[str, ...] = ()
    subscribed: tuple[str, ...] = ()
    unsubscribed: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()
    app_ping: bool = False


@dataclass(slots=True)
class ConnectionView:
    """What a wire module may know of one connection: its id and its topics."""

    conn_id: str
    topics: set[str] = field(default_factory=set)


class VenueWire(Protocol):
    """One simulated venue's wire format."""

    name: str
    #: the one WebSocket path the venue serves
    ws_path: str
    #: how ``ws_url`` continues after ``ws://host:port`` (the connector appends its own path)
    ws_url_suffix: str

    def rest(self, path: str, query: Mapping[str, str], market: Market) -> RestReply: ...

    def on_message(
        self, conn: ConnectionView, text: str | bytes, snapshot: MarketSnapshot
    ) -> Reply: ...

    def book_topic(self, symbol: str) -> str: ...

    def trade_topic(self, symbol: str) -> str: ...

    def encode_book(self, book: TopOfBook, snapshot: MarketSnapshot) -> str: ...

    def encode_trades(self, trades: Sequence[SimTrade]) -> list[str]: ...


def dumps(value: object) -> str:
    """Compact JSON text, as the venues send it."""
    return orjson.dumps(value).decode()


def json_reply(value: object, status: int = 200) -> RestReply:
    return RestReply(status, orjson.dumps(value))


def fixed(value: float, decimals: int) -> str:
    """A decimal string with exactly ``decimals`` places."""
    return f"{value:.{decimals}f}"
