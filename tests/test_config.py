"""Configuration is strict: every mistake is refused at start with the key named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from actors.budget import check_budget, compute_budget
from actors.config import ConfigError, load_config, parse_config
from actors.venues.registry import VENUES

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_loads_and_fits_its_budget() -> None:
    config = load_config(ROOT / "config.toml")
    assert set(config.enabled_venues()) == set(VENUES)  # every venue we speak, on by default
    assert check_budget(config).total <= config.memory_ceiling_mb * 2**20


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"feed": {"max_sesions": 5}}, r"feed\.max_sesions: unknown key"),
        ({"feeds": {}}, r"feeds: unknown section"),
        ({"feed": {"max_sessions": "many"}}, r"feed\.max_sessions: expected an integer"),
        ({"feed": {"max_sessions": 0}}, r"feed\.max_sessions: must be >= 1, got 0"),
        ({"feed": {"tick_s": True}}, r"feed\.tick_s: expected a number"),
        ({"channels": {"recorder_input": 1.5}}, r"channels\.recorder_input: expected an integer"),
        ({"server": {"port": 70000}}, r"server\.port: must be <= 65535"),
        ({"server": {"allowed_origins": "x"}}, r"server\.allowed_origins: expected a list"),
        ({"venues": {"ftx": {}}}, r"venues\.ftx: unknown venue"),
        ({"venues": {"binance": {"taker_fee_bps": -1}}}, r"venues\.binance\.taker_fee_bps: must be >= 0"),
        ({"venues": {"binance": {"rest_url": ""}}}, r"venues\.binance: rest_url and ws_url"),
        ({"venues": {name: {"enabled": False} for name in VENUES}}, r"venues: at least one venue"),
        ({"nats": {"servers": ["http://127.0.0.1:4222"]}}, r"nats\.servers: expected nats://"),
        ({"nats": {"servers": "nats://127.0.0.1:4222"}}, r"nats\.servers: expected a list"),
        ({"nats": {"subject_prefix": "sw.x"}}, r"nats\.subject_prefix: must be one NATS subject token"),
        ({"nats": {"stream": "a b"}}, r"nats\.stream: must be letters"),
        ({"nats": {"peer_interval_s": 5, "peer_timeout_s": 5}}, r"nats\.peer_timeout_s: must be >"),
        ({"nats": {"max_outbound_bytes": 10}}, r"nats\.max_outbound_bytes: must be >= 65536"),
        ({"feed": {"heartbeat_interval_s": 30, "heartbeat_timeout_s": 10}},
         r"feed\.heartbeat_timeout_s: must be > feed\.heartbeat_interval_s"),
        ({"connector": {"backoff_initial_s": 10, "backoff_max_s": 1}}, r"connector\.backoff_max_s"),
        ({"discovery": {"aliases": {"XBT": 1}}}, r"discovery\.aliases\.XBT: expected a string"),
    ],
)
def test_bad_config_is_refused_naming_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_overrides_merge_with_defaults_per_venue() -> None:
    config = parse_config({"venues": {"bybit": {"taker_fee_bps": 7.5}}})
    assert config.venues["bybit"].taker_fee_bps == 7.5
    assert config.venues["bybit"].ws_url == "wss://stream.bybit.com/v5/public/spot"
    assert config.venues["binance"].taker_fee_bps == 10.0


def test_budget_over_ceiling_is_refused_with_the_largest_parts() -> None:
    config = parse_config({"windows": {"max_series": 1_000_000}, "memory_ceiling_mb": 1024})
    with pytest.raises(ConfigError, match=r"memory_ceiling_mb: .* over the ceiling .*windows_quotes"):
        check_budget(config)


def test_budget_grows_with_every_bound() -> None:
    base = compute_budget(parse_config({})).total
    for raw in ({"windows": {"max_series": 8000}}, {"feed": {"outbox_bytes": 2_097_152}}, {"feed": {"max_sessions": 2_000}},
                {"windows": {"length_s": 7_200}},
                {"recorder": {"max_buffered_rows": 1_000_000}}, {"channels": {"recorder_input": 400_000}}):
        assert compute_budget(parse_config(raw)).total > base, raw


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[feed\nmax_sessions = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_cli_refuses_bad_config_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[feed]\nmax_sessions = -3\n")
    result = subprocess.run([sys.executable, "-m", "app.cli", "run", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert "feed.max_sessions: must be >= 1, got -3" in result.stderr
