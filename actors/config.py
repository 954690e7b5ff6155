"""Configuration: one typed, validated tree loaded from ``config.toml``.

Every bound in the system (channel sizes, outboxes, window capacities, recorder caps)
lives here, so the memory budget can be computed from it. Loading is strict: an
unknown key, a wrong type or an impossible bound is refused with a :class:`ConfigError`
naming the key (``feed.max_sessions: must be >= 1, got 0``). Nothing here is mutable
after loading.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,32}")


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the offending key."""


def _bound(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"lo": lo, "hi": hi}


def _f(default: Any, lo: float | None = None, hi: float | None = None, doc: str = "") -> Any:
    return field(default=default, metadata={**_bound(lo, hi), "doc": doc})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = _f("127.0.0.1", doc="address the web server binds; loopback unless set")
    port: int = _f(8000, 0, 65535)
    allowed_origins: tuple[str, ...] = _f((), doc="WebSocket Origins allowed besides same origin")
    shutdown_timeout_s: float = _f(4.0, 0.1, 60)
    loop_monitor_interval_s: float = _f(0.1, 0.001, 60, doc="event-loop lag sampling period")
    malloc_trim_interval_s: float = _f(30.0, 0, 3600, doc="give glibc's free heap back to the OS this "
                                       "often; 0 turns it off")


@dataclass(frozen=True, slots=True)
class ChannelsConfig:
    shard_input_keys: int = _f(20_000, 1, 10_000_000, doc="pending (venue, symbol) keys per shard")
    recorder_input: int = _f(200_000, 1, 100_000_000, doc="records waiting for the recorder")
    hub_state_keys: int = _f(20_000, 1, 10_000_000, doc="pending topic states from shards")
    hub_events: int = _f(10_000, 1, 10_000_000, doc="opportunity events waiting for the hub")
    hub_control: int = _f(1_000, 1, 1_000_000, doc="session subscribe/unsubscribe requests")
    shard_queries: int = _f(64, 1, 100_000, doc="window queries waiting per shard")
    socket_queue: int = _f(256, 1, 100_000, doc="frames the WebSocket client may queue per connection")


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    backoff_initial_s: float = _f(0.5, 0.01, 60)
    backoff_max_s: float = _f(30.0, 0.1, 3600)
    connect_timeout_s: float = _f(10.0, 0.1, 300)
    batch_max_records: int = _f(512, 1, 100_000, doc="records a connector hands over at once")
    batch_max_delay_s: float = _f(0.05, 0.001, 5, doc="longest a record waits in a batch")


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    refresh_interval_s: float = _f(3600.0, 10, 7 * 86400)
    min_venues: int = _f(2, 1, 8, doc="a symbol is watched when this many venues list it")
    max_symbols: int = _f(200, 1, 20_000, doc="symbols watched at most, by volume")
    symbols: tuple[str, ...] = _f((), doc="explicit BASE/QUOTE list; empty = by volume")
    quote_assets: tuple[str, ...] = _f(("USDT",), doc="quote assets considered")
    aliases: Mapping[str, str] = field(
        default_factory=lambda: types.MappingProxyType({"XBT": "BTC"}),
        metadata={"lo": None, "hi": None, "doc": "asset renames applied to base and quote"})
    request_timeout_s: float = _f(15.0, 0.1, 300)


@dataclass(frozen=True, slots=True)
class SpreadsConfig:
    threshold_bps: float = _f(0.0, -10_000, 10_000, doc="net spread that opens an opportunity")
    min_duration_s: float = _f(0.0, 0, 3600, doc="how long above threshold before it opens")
    top_n: int = _f(50, 1, 10_000)
    tick_s: float = _f(0.25, 0.01, 60, doc="how often shards publish state and sweep staleness")


@dataclass(frozen=True, slots=True)
class WindowsConfig:
    resolution_s: int = _f(1, 1, 3600)
    length_s: int = _f(3600, 1, 7 * 86400)
    max_series: int = _f(4_000, 1, 10_000_000, doc="(symbol, venue) series kept in all shards")
    ttl_s: float = _f(3600.0, 1, 7 * 86400, doc="a series not updated this long is evicted")
    shards: int = _f(4, 1, 256)


@dataclass(frozen=True, slots=True)
class RecorderConfig:
    enabled: bool = _f(True)
    data_dir: str = _f("data")
    flush_interval_s: float = _f(1.0, 0.01, 3600)
    max_buffered_rows: int = _f(500_000, 1, 100_000_000)


@dataclass(frozen=True, slots=True)
class FeedConfig:
    tick_s: float = _f(0.25, 0.01, 60)
    max_sessions: int = _f(1_000, 1, 1_000_000)
    max_topics_per_session: int = _f(50, 1, 10_000)
    max_message_bytes: int = _f(4096, 64, 1_048_576)
    max_messages_per_s: float = _f(20.0, 0.1, 10_000)
    abuse_limit: int = _f(20, 1, 1_000_000, doc="bad client messages before the session is closed")
    outbox_frames: int = _f(64, 1, 100_000)
    outbox_bytes: int = _f(1_048_576, 4_096, 1 << 30,
                           doc="bytes queued per session before it overflows and resyncs")
    max_window_topics_per_session: int = _f(20, 0, 10_000, doc="window:<SYMBOL> topics per session")
    heartbeat_interval_s: float = _f(15.0, 0.1, 3600)
    heartbeat_timeout_s: float = _f(30.0, 0.1, 3600)
    send_timeout_s: float = _f(5.0, 0.01, 600)
    lag_limit_s: float = _f(10.0, 0.1, 3600, doc="an outbox that keeps overflowing this long closes it")


@dataclass(frozen=True, slots=True)
class NatsConfig:
    """The scale-out roles' message system (``spreadwatch ingest|serve|record``).

    ``demo`` and ``run`` never read it: one process needs no NATS.
    """

    servers: tuple[str, ...] = _f(("nats://127.0.0.1:4222",), doc="nats:// URLs, tried in turn")
    subject_prefix: str = _f("sw", doc="first token of every subject spreadwatch uses")
    publish_interval_s: float = _f(0.05, 0.001, 10, doc="ingest: quotes conflate this long per batch")
    max_outbound_bytes: int = _f(8 << 20, 65_536, 1 << 30,
                                 doc="bytes a process buffers for NATS (also while it is down)")
    max_pending_msgs: int = _f(10_000, 1, 10_000_000, doc="serve: messages a subscription may queue")
    max_pending_bytes: int = _f(64 << 20, 65_536, 1 << 32, doc="serve: bytes a subscription may queue")
    stream: str = _f("SW_RECORDS", doc="JetStream stream the recorder consumes")
    stream_max_bytes: int = _f(10 << 30, 1 << 20, 1 << 50, doc="stream retention: bytes")
    stream_max_age_s: float = _f(86_400.0, 60, 365 * 86400, doc="stream retention: age")
    max_unacked_batches: int = _f(2_000, 1, 1_000_000,
                                  doc="ingest: record batches awaiting the stream's ack")
    ack_timeout_s: float = _f(2.0, 0.1, 60, doc="ingest: a batch not acked by then is sent again")
    consumer: str = _f("recorder", doc="durable consumer name of `spreadwatch record`")
    fetch_batch: int = _f(256, 1, 10_000, doc="record: messages asked for per pull")
    ack_wait_s: float = _f(30.0, 1, 3600, doc="record: unacked messages are redelivered after this")
    peer_interval_s: float = _f(1.0, 0.05, 60, doc="each process announces itself this often")
    peer_timeout_s: float = _f(5.0, 0.2, 600, doc="a peer silent this long is shown as down")
    connect_timeout_s: float = _f(2.0, 0.1, 60)
    backoff_initial_s: float = _f(0.1, 0.01, 60)
    backoff_max_s: float = _f(5.0, 0.1, 600)


@dataclass(frozen=True, slots=True)
class VenueConfig:
    enabled: bool = _f(True)
    rest_url: str = _f("")
    ws_url: str = _f("")
    taker_fee_bps: float = _f(10.0, 0, 1_000)
    stale_after_s: float = _f(10.0, 0.1, 3600, doc="a quote older than this is stale")
    silence_reconnect_s: float = _f(30.0, 0.5, 3600, doc="no data this long: reconnect")
    rotate_after_s: float = _f(0.0, 0, 30 * 86400,
                               doc="rotate connections this often; 0 = before the venue's documented cut")
    min_quote_volume: float = _f(0.0, 0, None)
    max_quote_volume: float = _f(math.inf, 0, None)
    subscribe_trades: bool = _f(True)


DEFAULT_VENUES: Mapping[str, VenueConfig] = types.MappingProxyType({
    "binance": VenueConfig(
        rest_url="https://api.binance.com", ws_url="wss://stream.binance.com:9443",
        taker_fee_bps=10.0,
    ),
    "bybit": VenueConfig(
        rest_url="https://api.bybit.com", ws_url="wss://stream.bybit.com/v5/public/spot",
        taker_fee_bps=10.0,
    ),
    "okx": VenueConfig(
        rest_url="https://www.okx.com", ws_url="wss://ws.okx.com:8443/ws/v5/public",
        # bbo-tbt re-sends an unchanged book only every 60 s: quiet is not dead before that
        taker_fee_bps=10.0, silence_reconnect_s=90.0,
    ),
    "mexc": VenueConfig(
        rest_url="https://api.mexc.com", ws_url="wss://wbs-api.mexc.com/ws",
        # pushes only on change; MEXC itself closes after 60 s without data
        taker_fee_bps=5.0, silence_reconnect_s=75.0,
    ),
    "gate": VenueConfig(
        rest_url="https://api.gateio.ws", ws_url="wss://api.gateio.ws/ws/v4/",
        taker_fee_bps=20.0,
    ),
    "kucoin": VenueConfig(
        # the WebSocket endpoint and token come from POST /api/v1/bullet-public
        rest_url="https://api.kucoin.com", ws_url="wss://ws-api-spot.kucoin.com",
        taker_fee_bps=10.0,
    ),
    "bitget": VenueConfig(
        rest_url="https://api.bitget.com", ws_url="wss://ws.bitget.com/v2/ws/public",
        taker_fee_bps=10.0,
    ),
    "htx": VenueConfig(
        rest_url="https://api.huobi.pro", ws_url="wss://api.huobi.pro/ws",
        taker_fee_bps=20.0,
    ),
})


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    channels: ChannelsConfig = field(default_factory=ChannelsConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    spreads: SpreadsConfig = field(default_factory=SpreadsConfig)
    windows: WindowsConfig = field(default_factory=WindowsConfig)
    recorder: RecorderConfig = field(default_factory=RecorderConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    nats: NatsConfig = field(default_factory=NatsConfig)
    venues: Mapping[str, VenueConfig] = field(default_factory=lambda: DEFAULT_VENUES)
    memory_ceiling_mb: float = _f(4096.0, 16, 1_000_000, doc="refuse configs whose budget exceeds this")

    def enabled_venues(self) -> dict[str, VenueConfig]:
        return {name: v for name, v in self.venues.items() if v.enabled}


_SECTIONS: Mapping[str, type] = types.MappingProxyType({
    "server": ServerConfig, "channels": ChannelsConfig, "connector": ConnectorConfig,
    "discovery": DiscoveryConfig, "spreads": SpreadsConfig, "windows": WindowsConfig,
    "recorder": RecorderConfig, "feed": FeedConfig, "nats": NatsConfig,
})


def _key(name: str) -> str:
    """A key from the file as TOML writes it: bare when it can be, else quoted (one line)."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(path: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range: TOML integers are unbounded
            bits = int(value).bit_length()
            raise ConfigError(f"{path}: out of range, got an integer of {bits} bits") from None
        if math.isnan(number):
            raise ConfigError(f"{path}: expected a number, got nan")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list of strings, got {value!r}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(f"{path}[{i}]: expected a string, got {item!r}")
        return tuple(value)
    if origin is Mapping or tp is Mapping:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table of strings, got {value!r}")
        for k, v in value.items():
            if not isinstance(v, str):
                raise ConfigError(f"{path}.{_key(k)}: expected a string, got {v!r}")
        return types.MappingProxyType({k.upper(): v.upper() for k, v in value.items()})
    raise ConfigError(f"{path}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(path: str, cls: type, raw: Any, base: Any = None) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{path}.{_key(key)}: unknown key (known: {known})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        key = f"{path}.{name}"
        value = _convert(key, raw[name], hints[name])
        lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
        if lo is not None and value < lo:
            raise ConfigError(f"{key}: must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise ConfigError(f"{key}: must be <= {hi}, got {value}")
        values[name] = value
    start = base if base is not None else cls()
    return dataclasses.replace(start, **values)


def parse_config(raw: Mapping[str, Any]) -> Config:
    """Build a validated :class:`Config` from a parsed TOML document."""
    top = {f.name for f in dataclasses.fields(Config)}
    for key in raw:
        if key not in top:
            raise ConfigError(f"{_key(key)}: unknown section (known: {', '.join(sorted(top))})")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        if name in raw:
            sections[name] = _build(name, cls, raw[name])
    if "memory_ceiling_mb" in raw:
        ceiling = _convert("memory_ceiling_mb", raw["memory_ceiling_mb"], float)
        spec = next(f for f in dataclasses.fields(Config) if f.name == "memory_ceiling_mb")
        lo, hi = spec.metadata["lo"], spec.metadata["hi"]
        if ceiling < lo:
            raise ConfigError(f"memory_ceiling_mb: must be >= {lo}, got {ceiling}")
        if ceiling > hi:
            raise ConfigError(f"memory_ceiling_mb: must be <= {hi}, got {ceiling}")
        sections["memory_ceiling_mb"] = ceiling
    venues = dict(DEFAULT_VENUES)
    raw_venues = raw.get("venues", {})
    if not isinstance(raw_venues, dict):
        raise ConfigError(f"venues: expected a table, got {raw_venues!r}")
    from actors.venues.registry import VENUES  # late: the registry imports the codecs

    for name, vraw in raw_venues.items():
        if name not in VENUES:
            raise ConfigError(f"venues.{_key(name)}: unknown venue (known: {', '.join(sorted(VENUES))})")
        venues[name] = _build(f"venues.{name}", VenueConfig, vraw, venues.get(name))
    for name, v in venues.items():
        if v.enabled and not (v.rest_url and v.ws_url):
            raise ConfigError(f"venues.{name}: rest_url and ws_url are required")
    sections["venues"] = types.MappingProxyType(venues)
    config = Config(**sections)
    _check_cross_field(config)
    return config


def validated(config: Config) -> Config:
    """``config`` after the checks across fields (for configs changed after loading)."""
    _check_cross_field(config)
    return config


def _check_cross_field(config: Config) -> None:
    if config.connector.backoff_max_s < config.connector.backoff_initial_s:
        raise ConfigError("connector.backoff_max_s: must be >= connector.backoff_initial_s")
    if config.feed.heartbeat_timeout_s <= config.feed.heartbeat_interval_s:
        raise ConfigError("feed.heartbeat_timeout_s: must be > feed.heartbeat_interval_s")
    if config.feed.outbox_frames <= config.feed.max_topics_per_session + 1:
        raise ConfigError("feed.outbox_frames: must be > feed.max_topics_per_session + 1, "
                          "or a lagging session could never be resynced")
    if config.windows.length_s < config.windows.resolution_s:
        raise ConfigError("windows.length_s: must be >= windows.resolution_s")
    if config.nats.peer_timeout_s <= config.nats.peer_interval_s:
        raise ConfigError("nats.peer_timeout_s: must be > nats.peer_interval_s")
    if config.nats.backoff_max_s < config.nats.backoff_initial_s:
        raise ConfigError("nats.backoff_max_s: must be >= nats.backoff_initial_s")
    for url in config.nats.servers:
        if not url.startswith("nats://") or len(url) > 256:
            raise ConfigError(f"nats.servers: expected nats://host:port URLs, got {url!r}")
    if not _SUBJECT_TOKEN.fullmatch(config.nats.subject_prefix):
        raise ConfigError("nats.subject_prefix: must be one NATS subject token (letters, digits, - and _)")
    for key in ("stream", "consumer"):
        if not _SUBJECT_TOKEN.fullmatch(getattr(config.nats, key)):
            raise ConfigError(f"nats.{key}: must be letters, digits, - and _")
    if not config.enabled_venues():
        raise ConfigError("venues: at least one venue must be enabled")


def load_config(path: Path | None) -> Config:
    """Load and validate ``path`` (the defaults when None)."""
    if path is None:
        return parse_config({})
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text (line {line})") from exc
    try:
        raw = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer literal too long for int()
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(raw)
