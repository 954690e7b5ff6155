"""The contract every venue codec fulfils.

A codec is sans-IO: it builds the text of subscribe and ping messages, turns one
received frame into a :class:`Parsed` result, and turns the venue's REST discovery
payloads into :class:`~actors.records.SymbolInfo` lists. It never touches a socket or a
clock. The connector (``actors/connector.py``) owns the socket and calls these.

Error handling: a frame the codec cannot understand raises :class:`FrameError` with a
message saying what was wrong; the connector counts it, logs it and carries on.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from actors.records import Quote, SymbolInfo, Trade


class FrameError(ValueError):
    """A frame (or REST payload) that does not parse as the venue documents it."""


class FrameKind(enum.Enum):
    DATA = "data"          # market data; ``records`` holds what it carried
    ACK = "ack"            # a subscribe/unsubscribe confirmation
    PING = "ping"          # an application-level ping from the venue; send ``reply``
    PONG = "pong"          # the venue's answer to our application-level ping
    ERROR = "error"        # the venue reports an error (e.g. a rejected subscription)
    NOTICE = "notice"      # the venue announced a disconnect/maintenance: rotate the connection now
    INFO = "info"          # informational frame that needs no action (e.g. a welcome message)
    UNKNOWN_SYMBOL = "unknown_symbol"  # well-formed data for a symbol we did not map


class Parsed(msgspec.Struct, frozen=True, gc=False):
    """What one frame carried. A msgspec Struct, built once per frame: ~0.1 us where a
    frozen dataclass took ~1 us."""

    kind: FrameKind
    records: tuple[Quote | Trade, ...] = ()
    reply: str | bytes | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One GET the discovery needs: ``path`` relative to the venue's REST base URL."""

    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    method: str = "GET"


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """What a token bootstrap over REST tells the connector (KuCoin's ``bullet-public``).

    ``ws_url`` is the complete URL to connect to (endpoint, token, connect id);
    ``ping_interval_s`` overrides the codec's ``ping_interval`` for that connection.
    """

    ws_url: str
    ping_interval_s: float | None = None
    ping_timeout_s: float | None = None


class VenueCodec(Protocol):
    """What the connector and discovery need from a venue module.

    A module ``actors/venues/<venue>.py`` exposes a class implementing this, built
    with the symbol map of the current discovery (native symbol -> SymbolInfo).
    """

    name: str
    #: streams (symbol x channel) one connection may carry
    max_streams_per_connection: int
    #: subscribe messages the venue accepts per second on one connection
    max_messages_per_second: float
    #: seconds between our application-level pings; None when the venue pings us
    ping_interval: float | None
    #: the venue's documented forced cut of a connection (e.g. 24 h); the connector
    #: rotates to a fresh connection before it. None when none is documented
    max_connection_age_s: float | None
    #: the venue wants subscriptions only after its welcome frame (an INFO frame)
    waits_for_welcome: bool

    def ws_path(self, natives: Sequence[str]) -> str:
        """Path (and query) to append to the venue's WebSocket base URL."""
        ...

    def subscribe_messages(self, natives: Sequence[str], *, trades: bool,
                           now_ms: int = 0) -> list[str | bytes]:
        """Subscribe messages for best bid/ask (and trades if asked).

        Split per the venue's limits.
        """
        ...

    def unsubscribe_messages(self, natives: Sequence[str], *, trades: bool,
                             now_ms: int = 0) -> list[str | bytes]:
        """Unsubscribe messages, split like the subscribe messages."""
        ...

    def ping_message(self, now_ms: int) -> str | bytes | None:
        """Application-level ping text, or None when the venue uses protocol pings only."""
        ...

    def parse(self, frame: str | bytes, recv_ts: int) -> Parsed:
        """Classify one received frame. Raises FrameError when malformed."""
        ...


class VenueDiscovery(Protocol):
    """Pure helpers for REST discovery of one venue."""

    def discovery_requests(self) -> tuple[RestRequest, RestRequest]:
        """(instruments request, 24 h tickers request)."""
        ...

    def parse_instruments(self, body: bytes, aliases: Mapping[str, str]) -> list[SymbolInfo]:
        """Trading spot instruments from the venue's metadata (quote_volume_24h = 0).

        ``aliases`` maps an upper-case asset code to ours (e.g. ``{"XBT": "BTC"}``); it is
        applied to base and quote, which come out upper case.
        """
        ...

    def parse_volumes(self, body: bytes) -> dict[str, float]:
        """24 h quote volume per native symbol."""
        ...


class VenueBootstrap(Protocol):
    """Pure helpers of a venue that hands out WebSocket endpoints over REST (KuCoin)."""

    def bootstrap_request(self) -> RestRequest:
        """The request that returns an endpoint and token (relative to the REST base URL)."""
        ...

    def parse_bootstrap(self, body: bytes, connect_id: str) -> Bootstrap:
        """The URL to connect to (token and ``connect_id`` included). Raises FrameError."""
        ...


def symbol_map(infos: Sequence[SymbolInfo]) -> dict[str, SymbolInfo]:
    return {info.native: info for info in infos}
