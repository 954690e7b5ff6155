"""Hostile configurations, generated (issue 7): the shipped ``config.toml`` with one key
mutated anywhere is either accepted or refused with a :class:`ConfigError` naming that
key; a file that is not TOML is refused by the CLI in one line naming the file (and the
line, when the TOML parser knows it), with exit code 2.

Mutations: a value of another TOML type, a number out of its bounds (zero, negative,
huge, 10^400, infinite, NaN), a numeric string where a number goes, an unknown key in
any table, a key or section removed.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from actors.budget import check_budget
from actors.config import Config, ConfigError, parse_config
from app.cli import main
from tests.codec_support import JsonPath, json_paths, node_at, replaced

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = tomllib.loads((ROOT / "config.toml").read_text(encoding="utf-8"))


_BARE = re.compile(r"[A-Za-z0-9_-]+")


def dotted(path: JsonPath) -> str:
    """``("venues", "okx", "ws_url")`` -> ``venues.okx.ws_url``: list items as ``[i]``, keys
    that TOML cannot write bare quoted."""
    text = ""
    for step in path:
        if isinstance(step, int):
            text += f"[{step}]"
            continue
        name = step if _BARE.fullmatch(step) else json.dumps(step)
        text += f".{name}" if text else name
    return text


def names_the_key(message: str, path: JsonPath) -> bool:
    """The message's leading key is ``path``, a table holding it, or a key inside it; or
    a cross-field message mentions ``path`` itself."""
    key = dotted(path)
    reported = message.split(": ", 1)[0]
    return (reported == key
            or key.startswith((f"{reported}.", f"{reported}["))
            or reported.startswith((f"{key}.", f"{key}["))
            or key in message)


def assert_within_bounds(config: Config) -> None:
    """Every bounded number of an accepted config is within its declared bounds."""
    sections = [config, *(getattr(config, name) for name in
                          ("server", "channels", "connector", "discovery", "spreads",
                           "windows", "recorder", "feed")), *config.venues.values()]
    for section in sections:
        for spec in dataclasses.fields(section):
            value = getattr(section, spec.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            assert not math.isnan(value), spec.name
            lo, hi = spec.metadata.get("lo"), spec.metadata.get("hi")
            assert lo is None or value >= lo, (spec.name, value)
            assert hi is None or value <= hi, (spec.name, value)


def assert_refused_naming_the_key_or_accepted(raw: dict[str, object], path: JsonPath) -> None:
    try:
        config = parse_config(raw)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message
        assert names_the_key(message, path), (message, dotted(path))
        return
    assert isinstance(config, Config)
    assert_within_bounds(config)
    try:
        check_budget(config)
    except ConfigError as exc:
        assert str(exc).startswith("memory_ceiling_mb: "), exc


# --- mutations ---------------------------------------------------------------------------------

_TEXTS = st.sampled_from(["", "1", "-1", "0", "1e3", "inf", "nan", "true", "BTC/USDT", "127.0.0.1",
                          "wss://x", "x" * 300]) | st.text(max_size=10)
_NUMBERS = st.sampled_from([0, -1, 1, 2, 15, 16, 65535, 65536, 2**31, 2**63 - 1, 2**63, 2**64, 10**30,
                            10**400, -(10**400), 0.0, -0.0, -1.5, 1e-9, 1e308, math.inf, -math.inf,
                            math.nan])
_SCALARS = st.one_of(
    st.none(), st.booleans(), _NUMBERS, st.integers(), st.floats(), _TEXTS,
    st.dates(), st.datetimes(), st.times(),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _numbers_near(value: object) -> st.SearchStrategy[object]:
    """Out-of-bound candidates for a number: its sign flipped, scaled up and down, a string."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _NUMBERS
    return st.sampled_from([-value, value * 1000, value * 10**9, value / 1000, str(value)]) | _NUMBERS


#: every node of the shipped config but the document itself
PATHS = [path for path in json_paths(SHIPPED) if path]
TABLES = [path for path in json_paths(SHIPPED) if isinstance(node_at(SHIPPED, path), dict)]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, object], JsonPath]:
    """The shipped config with one node changed, and that node's path."""
    how = draw(st.sampled_from(["value", "number", "unknown key", "remove"]), label="how")
    if how == "unknown key":
        table = draw(st.sampled_from(TABLES), label="table")
        known = node_at(SHIPPED, table)
        assert isinstance(known, dict)
        name = draw(st.text(min_size=1, max_size=12).filter(lambda key: key not in known), label="key")
        path: JsonPath = (*table, name)
        value = draw(_VALUES, label="value")
        return replaced(SHIPPED, table, {**known, name: value}), path  # type: ignore[return-value]
    path = draw(st.sampled_from(PATHS), label="path")
    if how == "remove":
        parent, last = node_at(SHIPPED, path[:-1]), path[-1]
        rest: object
        if isinstance(parent, dict):
            rest = {key: value for key, value in parent.items() if key != last}
        else:
            assert isinstance(parent, list) and isinstance(last, int)
            rest = parent[:last] + parent[last + 1 :]
        return replaced(SHIPPED, path[:-1], rest), path  # type: ignore[return-value]
    original = node_at(SHIPPED, path)
    value = draw(_VALUES if how == "value" else _numbers_near(original), label="value")
    return replaced(SHIPPED, path, value), path  # type: ignore[return-value]


def test_the_shipped_config_is_accepted() -> None:
    config = parse_config(SHIPPED)
    assert_within_bounds(config)
    check_budget(config)


@settings(max_examples=600, deadline=None, database=None)
@given(case=mutated())
@example(case=(replaced(SHIPPED, ("memory_ceiling_mb",), math.inf), ("memory_ceiling_mb",)))
@example(case=(replaced(SHIPPED, ("memory_ceiling_mb",), 10**400), ("memory_ceiling_mb",)))
@example(case=(replaced(SHIPPED, ("feed", "tick_s"), 10**400), ("feed", "tick_s")))
@example(case=({**SHIPPED, "a\nb": 1}, ("a\nb",)))
@example(case=(replaced(SHIPPED, ("venues", "okx", "taker_fee_bps"), -(10**400)),
               ("venues", "okx", "taker_fee_bps")))
def test_one_mutated_key_is_accepted_or_refused_by_name(case: tuple[dict[str, object], JsonPath]) -> None:
    raw, path = case
    assert_refused_naming_the_key_or_accepted(raw, path)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        # out of float range: these raised OverflowError
        (("memory_ceiling_mb",), 10**400, "memory_ceiling_mb: out of range"),
        (("spreads", "threshold_bps"), -(10**400), "spreads.threshold_bps: out of range"),
        # the declared upper bound was not applied; inf then crashed the budget check
        (("memory_ceiling_mb",), math.inf, "memory_ceiling_mb: must be <= 1000000"),
        (("memory_ceiling_mb",), 2_000_000, "memory_ceiling_mb: must be <= 1000000"),
    ],
    ids=["ceiling_10^400", "threshold_-10^400", "ceiling_inf", "ceiling_2e6"],
)
def test_regressions(path: JsonPath, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        parse_config(replaced(SHIPPED, path, value))  # type: ignore[arg-type]


def test_a_key_that_toml_must_quote_is_quoted_in_the_message() -> None:
    """A quoted TOML key may hold a newline: it made a two-line message."""
    venues = node_at(SHIPPED, ("venues",))
    assert isinstance(venues, dict)
    with pytest.raises(ConfigError, match=r'^venues\."a\\nb": unknown venue \(known: '):
        parse_config({**SHIPPED, "venues": {**venues, "a\nb": {}}})
    with pytest.raises(ConfigError, match=r'^feed\."x y": unknown key'):
        parse_config({**SHIPPED, "feed": {"x y": 1}})


# --- malformed files through the CLI ---------------------------------------------------------------


SHIPPED_TEXT = (ROOT / "config.toml").read_bytes()


@pytest.mark.parametrize(
    ("content", "explains"),
    [
        (b"[feed\nmax_sessions = 1\n", "(at line 1, column 6)"),
        (b"[feed]\nmax_sessions = 1\nmax_sessions = 2\n", "(at line 3"),
        (b"[feed]\nmax_sessions = \n", "(at line 2"),
        (b"[feed]\nmax_sessions = 1 2\n", "(at line 2"),
        (b'[server]\nhost = "127.0.0.1\n', "(at line 2"),
        (b"[feed]\n[feed]\n", "(at line 2"),
        (b"memory_ceiling_mb = 4096\nmemory_ceiling_mb = 4096\n", "(at line 2"),
        (SHIPPED_TEXT.replace(b"[windows]", b"[windows"), "(at line"),
        (SHIPPED_TEXT + b"\n\xff\xfe\n", "not UTF-8 text (line"),
        (b"\xef\xbb\xbf[feed]\n", "(at line 1"),  # a byte-order mark is not TOML
        (b"[feed]\nmax_sessions = " + b"9" * 5000 + b"\n", "integer string conversion"),
    ],
    ids=["unclosed_table", "duplicate_key", "missing_value", "two_values", "unclosed_string",
         "duplicate_table", "duplicate_top_key", "shipped_with_unclosed_table", "not_utf8", "bom",
         "5000_digit_integer"],
)
def test_malformed_toml_is_one_line_naming_the_file_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, explains: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    assert main(["run", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"spreadwatch: bad configuration: {path}: not valid TOML: ")
    assert explains in captured.err


def test_a_config_that_is_not_utf8_exits_2_without_a_traceback(tmp_path: Path) -> None:
    """The process itself: this was a UnicodeDecodeError traceback and exit code 1."""
    path = tmp_path / "latin1.toml"
    path.write_bytes('[server]\nhost = "caf\u00e9"\n'.encode("latin-1"))
    result = subprocess.run([sys.executable, "-m", "app.cli", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr == f"spreadwatch: bad configuration: {path}: not valid TOML: not UTF-8 text (line 2)\n"


def test_toml_datetimes_are_refused_by_name() -> None:
    raw = replaced(SHIPPED, ("feed", "tick_s"), datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    with pytest.raises(ConfigError, match=r"^feed\.tick_s: expected a number"):
        parse_config(raw)  # type: ignore[arg-type]
