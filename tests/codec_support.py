"""Helpers shared by the venue codec tests (tests/test_codec_<venue>.py).

Only what every venue does the same way lives here: reading a documented frame,
editing one object inside it, the truncation loop, the "any input gives Parsed or
FrameError" property, what every record a codec emits must satisfy, the paths of a
JSON tree (for mutating any node of a frame) and the hypothesis strategies that feed
them. Whatever a venue
does differently (its frames, symbol maps, expected records) stays in its own file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest
from hypothesis import strategies as st

from actors.records import Quote, Trade
from actors.venues.base import FrameError, Parsed, VenueCodec

#: Where the documented frames live, one folder a venue.
FRAMES_ROOT = Path(__file__).parent / "data" / "frames"

#: The receive time every codec test stamps on its frames.
RECV_TS = 1_700_000_000_123_456_789

#: Well-formed JSON that is not an object (ids: ``array``, ``null``, ``number``).
JSON_NOT_AN_OBJECT: dict[str, bytes] = {
    "array": b"[]",
    "null": b"null",
    "number": b"42",
}


def frame_bytes(venue: str, name: str) -> bytes:
    """The stored bytes of tests/data/frames/<venue>/<name>."""
    return (FRAMES_ROOT / venue / name).read_bytes()


def edited(raw: bytes, path: Sequence[str | int], **changes: object) -> bytes:
    """``raw`` (a JSON document) with fields of the object at ``path`` replaced.

    ``path`` is the chain of keys and indexes from the top of the document to the
    object to edit (``()`` for the top level, ``("data", 0)`` for the first entry of
    ``data``). A value of ``...`` deletes the field. The result is re-serialised with
    orjson.
    """
    document = orjson.loads(raw)
    target = document
    for step in path:
        target = target[step]
    for key, value in changes.items():
        if value is ...:
            del target[key]
        else:
            target[key] = value
    return orjson.dumps(document)


def escape_brackets(pattern: str) -> str:
    """``pattern`` with ``[`` and ``]`` escaped, to match an indexed field name like ``'b[0][1]'``."""
    return pattern.replace("[", r"\[").replace("]", r"\]")


def assert_every_truncation_raises(
    parse: Callable[[str | bytes], object], raw: str | bytes, *, as_text: bool = False
) -> None:
    """Every proper prefix of ``raw`` makes ``parse`` raise FrameError.

    With ``as_text`` (``raw`` being bytes) each prefix is also tried decoded as UTF-8 text.
    """
    for end in range(len(raw)):
        prefix = raw[:end]
        with pytest.raises(FrameError):
            parse(prefix)
        if as_text and isinstance(prefix, bytes):
            with pytest.raises(FrameError):
                parse(prefix.decode())


def assert_parse_total(
    codec: VenueCodec, raw: str | bytes, *, as_text: bool = False, errors: str = "replace"
) -> Parsed | None:
    """``codec.parse`` either raises FrameError (giving None) or returns a Parsed of records.

    With ``as_text``, bytes are first decoded as UTF-8 with the ``errors`` handler.
    The Parsed is returned so a venue can assert more about it.
    """
    if as_text and isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors)
    try:
        parsed = codec.parse(raw, RECV_TS)
    except FrameError:
        return None
    assert isinstance(parsed, Parsed)
    assert all(isinstance(record, Quote | Trade) for record in parsed.records)
    return parsed


def json_values(
    keys: Sequence[str],
    texts: Sequence[str],
    *,
    max_list: int = 3,
    max_dict: int = 6,
    max_leaves: int = 12,
) -> st.SearchStrategy[object]:
    """Any JSON value, its strings often one of the venue's ``texts`` and its keys one of ``keys``."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.sampled_from(texts)
        | st.text(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=max_list)
        | st.dictionaries(st.sampled_from(keys) | st.text(max_size=3), children, max_size=max_dict),
        max_leaves=max_leaves,
    )


def json_objects(keys: Sequence[str], values: st.SearchStrategy[object]) -> st.SearchStrategy[bytes]:
    """Serialised JSON objects of up to eight of the venue's ``keys`` with arbitrary ``values``."""
    return st.dictionaries(st.sampled_from(keys), values, max_size=8).map(orjson.dumps)


def arbitrary_frames(
    keys: Sequence[str],
    values: st.SearchStrategy[object],
    *extra: st.SearchStrategy[str | bytes],
    bare_texts: Sequence[str | bytes] = (),
) -> st.SearchStrategy[str | bytes]:
    """Random bytes and text, then ``bare_texts`` if any, JSON objects and values, then ``extra``."""
    bare: list[st.SearchStrategy[str | bytes]] = [st.sampled_from(bare_texts)] if bare_texts else []
    return st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200),
        *bare,
        json_objects(keys, values),
        values.map(orjson.dumps),
        *extra,
    )


def assert_records_sound(parsed: Parsed, venue: str) -> None:
    """Every record of ``parsed`` is usable as is: the codec's venue, the test's receive
    time, a symbol, finite positive prices and finite non-negative sizes.

    A crossed book (bid above ask) is allowed: OKX documents one during call auctions,
    and the shard judges it.
    """
    prices: tuple[float, ...]
    sizes: tuple[float, ...]
    for record in parsed.records:
        assert (record.venue, record.recv_ts) == (venue, RECV_TS), record
        assert record.symbol, record
        if isinstance(record, Quote):
            prices, sizes = (record.bid, record.ask), (record.bid_size, record.ask_size)
        else:
            prices, sizes = (record.price,), (record.size,)
        assert all(math.isfinite(price) and price > 0 for price in prices), record
        assert all(math.isfinite(size) and size >= 0 for size in sizes), record


#: Where a node sits in a parsed JSON document: the keys and indexes from the top.
JsonPath = tuple[str | int, ...]


def json_paths(document: object) -> list[JsonPath]:
    """The path of every node of a parsed JSON document, the document itself (``()``) first."""
    paths: list[JsonPath] = []
    pending: list[tuple[JsonPath, object]] = [((), document)]
    while pending:
        path, node = pending.pop()
        paths.append(path)
        if isinstance(node, dict):
            pending.extend(((*path, key), value) for key, value in node.items())
        elif isinstance(node, list):
            pending.extend(((*path, index), value) for index, value in enumerate(node))
    return paths


def node_at(document: object, path: JsonPath) -> object:
    """The node of ``document`` at ``path``."""
    for step in path:
        document = document[step]  # type: ignore[index]
    return document


def replaced(document: object, path: JsonPath, value: object) -> object:
    """A copy of ``document`` with the node at ``path`` replaced by ``value``.

    Only the containers along ``path`` are copied; ``document`` is left as it was.
    """
    if not path:
        return value
    step, rest = path[0], path[1:]
    if isinstance(document, dict):
        return {**document, step: replaced(document[step], rest, value)}
    assert isinstance(document, list) and isinstance(step, int)
    return [*document[:step], replaced(document[step], rest, value), *document[step + 1 :]]
