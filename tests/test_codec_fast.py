"""The codecs' typed fast paths agree with their strict paths on every frame.

Each JSON codec decodes its hot frames (best bid/ask, trades) straight into msgspec Structs and
hands anything else to ``parse_strict``, the reference path (actors/venues/fields.py
says what keeps the two in step). Here every documented best-bid/ask and trade frame is mutated
at any node (odd decimals, wrong types, deleted and added keys, other symbols) and
both paths must give the same result: the same Parsed, or a FrameError with the same
message. Floats are compared exactly, so msgspec's decimal reading is checked against
Python's ``float`` on the same text.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.records import Quote
from actors.venues.base import FrameError, Parsed
from tests.codec_support import RECV_TS, json_paths, node_at, replaced
from tests.test_codec_fuzz import VENUES, Document, Venue

#: venues whose codec has a fast path (MEXC's frames are protobuf; its reader is its own)
FAST = ("binance", "bybit", "okx", "gate", "kucoin", "bitget", "htx")

ODD_DECIMALS = ["nan", "NaN", "inf", "-inf", "Infinity", "1.", ".5", "+1", "007.5", "1_000", " 1", "1 ",
                "\u0661", "0", "-0", "0.0", "-0.0", "-1", "1e400", "1e-400", "1E5", "2e308", "0x10", "",
                "1e", "--1", "1.2.3", "\u00bd"]


#: integers orjson reads as floats and msgspec as ints (fields.py: LaxInt, Millis);
#: past ~1e308 orjson refuses the frame, the one divergence fields.py documents
BEYOND_64_BITS = [orjson.Fragment(b"18446744073709551616"), orjson.Fragment(b"-9223372036854775809"),
                  orjson.Fragment(b"1" + b"0" * 30)]


def hot_documents(venue: Venue) -> list[Document]:
    """The venue's documented frames that its strict path turns into quotes or trades."""
    hot = []
    for document in venue.documents:
        if document.tree is None or document.protobuf:
            continue
        try:
            parsed = venue.codec().parse_strict(venue.ws_bytes(document, document.tree), RECV_TS)  # type: ignore[attr-defined]
        except FrameError:
            continue
        if parsed.records:
            hot.append(document)
    return hot


def outcome(parse: Any, raw: str | bytes) -> Parsed | str:
    try:
        parsed: Parsed = parse(raw, RECV_TS)
        return parsed
    except FrameError as exc:
        return f"FrameError: {exc}"


def values(symbols: list[str]) -> st.SearchStrategy[object]:
    decimals = (st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str)
                | st.decimals(allow_nan=False, allow_infinity=False).map(str)
                | st.floats(allow_nan=False, allow_infinity=False).map(repr)
                | st.floats(min_value=1e-9, max_value=1e7).map(lambda f: f"{f:.8f}"))
    return st.one_of(
        decimals, decimals.map(float), st.sampled_from(ODD_DECIMALS), st.sampled_from(symbols),
        st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
        st.floats(), st.text(max_size=6), st.just([]), st.just({}), st.lists(decimals, max_size=3),
        st.sampled_from(BEYOND_64_BITS),
    )


def mutate(draw: st.DrawFn, tree: object, symbols: list[str]) -> object:
    for _ in range(draw(st.integers(1, 3))):
        paths = json_paths(tree)
        path = draw(st.sampled_from(paths))
        node = node_at(tree, path)
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete" and path:
            parent = node_at(tree, path[:-1])
            if isinstance(parent, dict):
                tree = replaced(tree, path[:-1], {k: v for k, v in parent.items() if k != path[-1]})
                continue
            if isinstance(parent, list):
                tree = replaced(tree, path[:-1], [v for i, v in enumerate(parent) if i != path[-1]])
                continue
        if action == "add" and isinstance(node, dict):
            key = draw(st.sampled_from(["e", "E", "id", "code", "msg", "error", "event", "op", "seq", "x"]))
            tree = replaced(tree, path, {**node, key: draw(values(symbols))})
            continue
        tree = replaced(tree, path, draw(values(symbols)))
    return tree


@st.composite
def frames(draw: st.DrawFn, venue: Venue) -> tuple[bytes, bool]:
    document = draw(st.sampled_from(hot_documents(venue)))
    symbols = [*venue.symbols, "NOPEUSDT", "btcusdt"]
    tree = mutate(draw, document.tree, symbols)
    return venue.ws_bytes(document, tree), venue.ws_bytes(document, tree) == orjson.dumps(tree)


@pytest.mark.parametrize("name", FAST)
def test_every_documented_data_frame_takes_the_fast_path(name: str) -> None:
    venue = VENUES[name]
    documents = hot_documents(venue)
    assert any(isinstance(r, Quote) for d in documents for r in venue.codec().parse_strict(  # type: ignore[attr-defined]
        venue.ws_bytes(d, d.tree), RECV_TS).records), f"no documented best bid/ask frame for {name}"
    for document in documents:
        raw = venue.ws_bytes(document, document.tree)
        codec = venue.codec()
        expected = codec.parse_strict(raw, RECV_TS)  # type: ignore[attr-defined]

        def refuse(*_: object, what: str = document.name) -> Parsed:
            raise AssertionError(f"{name} {what}: the fast path declined a documented frame")
        codec.parse_strict = refuse  # type: ignore[attr-defined]
        assert codec.parse(raw, RECV_TS) == expected


@pytest.mark.parametrize("name", FAST)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_path_gives_what_the_strict_path_gives(name: str, data: st.DataObject) -> None:
    venue = VENUES[name]
    raw, plain = data.draw(frames(venue))
    codec = venue.codec()
    strict = codec.parse_strict  # type: ignore[attr-defined]
    assert outcome(codec.parse, raw) == outcome(strict, raw)
    if plain:  # the same JSON as a text frame
        text = raw.decode()
        assert outcome(codec.parse, text) == outcome(strict, text)
