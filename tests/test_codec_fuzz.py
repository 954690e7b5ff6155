"""Hostile input for every venue codec and discovery parser, generated (issue 7).

Four classes of input, each for all eight venues, each fed to the WebSocket codec
(``parse``, as bytes and as text) and to the module's REST parsers (instruments,
volumes, and KuCoin's token bootstrap):

* random bytes and text;
* every stored frame of ``tests/data/frames/<venue>/`` cut short, or with a slice cut out;
* oversized values anywhere in a stored frame: huge strings, arrays, objects and
  nesting, numbers out of float range (``1e400``, 10^400), ``NaN``/``Infinity``
  literals, ``1e308``, zero, negative and underflowing (``1e-400``) numbers;
* wrong types: any node of a stored frame, leaf or container, replaced by a JSON
  value of another type.

The property is the same for all: the parser returns or raises FrameError, nothing
else; and whatever it returns is sound (:func:`assert_records_sound`: finite positive
prices, finite non-negative sizes). So a frame carrying a price of 0, -1, ``1e-400``
or ``1e400`` is a FrameError, never a record that would reach the shard and the
recorder. HTX frames go on the wire gzip-compressed and MEXC market data as protobuf:
the stored documented views are mutated, then encoded the way the venue sends them.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.records import Quote, SymbolInfo
from actors.venues import binance, bitget, bybit, gate, htx, kucoin, mexc, okx
from actors.venues.base import Bootstrap, FrameError, FrameKind, Parsed, VenueCodec
from tests import (
    test_codec_binance,
    test_codec_bitget,
    test_codec_bybit,
    test_codec_gate,
    test_codec_htx,
    test_codec_kucoin,
    test_codec_mexc,
    test_codec_okx,
)
from tests.codec_support import (
    FRAMES_ROOT,
    RECV_TS,
    JsonPath,
    assert_parse_total,
    assert_records_sound,
    json_paths,
    json_values,
    node_at,
    replaced,
)
from tests.test_codec_mexc import key, len_field, varint

# --- the venues: codec, discovery module, wire encoding ---------------------------------

#: Alias table handed to every parse_instruments call (as discovery would).
ALIASES = MappingProxyType({"XBT": "BTC"})


@dataclass(frozen=True)
class Document:
    """A stored frame: its file name, its parsed JSON (None when not JSON) and its wire bytes.

    ``protobuf`` marks MEXC's documented views of protobuf frames: mutated copies go
    on the wire through :func:`mexc_protobuf` rather than as JSON.
    """

    name: str
    tree: object
    wire: bytes
    protobuf: bool = False


@dataclass(frozen=True)
class Venue:
    name: str
    symbols: Mapping[str, SymbolInfo]
    codec_factory: Callable[[Mapping[str, SymbolInfo]], VenueCodec]
    module: ModuleType
    #: documented JSON text -> the bytes the venue sends (gzip for HTX)
    compress: Callable[[bytes], bytes]
    documents: tuple[Document, ...]

    def codec(self) -> VenueCodec:
        return self.codec_factory(self.symbols)

    def ws_bytes(self, document: Document, tree: object) -> bytes:
        """What the venue would send for ``tree``, a (mutated) copy of ``document``'s."""
        if document.protobuf:
            return mexc_protobuf(tree)
        return self.compress(orjson.dumps(tree))


def _plain(raw: bytes) -> bytes:
    return raw


def _documents(venue: str, compress: Callable[[bytes], bytes]) -> tuple[Document, ...]:
    documents: list[Document] = []
    for path in sorted((FRAMES_ROOT / venue).iterdir()):
        raw = path.read_bytes().rstrip()
        if path.name.endswith(".pb.hex"):
            documents.append(Document(path.name, None, bytes.fromhex(raw.decode())))
        elif path.name.endswith(".gz.b64"):
            documents.append(Document(path.name, None, base64.b64decode(raw)))
        elif path.suffix == ".json":
            tree = orjson.loads(raw)
            view = venue == "mexc" and isinstance(tree, dict) and (
                "publicbookticker" in tree or "publicdeals" in tree)
            wire = mexc_protobuf(tree) if view else compress(raw)
            documents.append(Document(path.name, tree, wire, protobuf=view))
        else:
            documents.append(Document(path.name, None, raw))
    return tuple(documents)


# --- MEXC: a documented view, encoded as protobuf whatever its value types --------------

#: Field numbers of PushDataV3ApiWrapper and its book ticker and deals bodies, by the
#: (lower-case) names of MEXC's documented JSON views; they never clash within a message.
MEXC_FIELDS = MappingProxyType({
    "channel": 1, "symbol": 3, "symbolid": 4, "createtime": 5, "sendtime": 6,
    "publicbookticker": 315, "publicdeals": 314,
    "bidprice": 1, "bidquantity": 2, "askprice": 3, "askquantity": 4,
    "dealsList": 1, "eventtype": 2,
    "price": 1, "quantity": 2, "tradetype": 3, "time": 4,
})


class ProtobufBody(bytes):
    """An already encoded message, written as a length-delimited field."""


def mexc_protobuf(view: object) -> bytes:
    """``view`` as MEXC's protobuf: names as :data:`MEXC_FIELDS`, values by their type.

    A string is a length-delimited field (UTF-8, lone surrogates kept as invalid
    bytes), an int a varint (one beyond 64 bits an overlong 11-byte varint), a float a
    64-bit field, an object a nested message, an array repeated fields, null nothing.
    Unknown names are numbered by position. A view that is not an object becomes the
    body of field 1.
    """
    if isinstance(view, dict):
        return _message(view)
    return _field(1, view)


def _message(view: dict[str, object]) -> bytes:
    return b"".join(_field(MEXC_FIELDS.get(name, index + 1), value)
                    for index, (name, value) in enumerate(view.items()))


def _field(number: int, value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, ProtobufBody):
        return len_field(number, bytes(value))
    if isinstance(value, bool):
        return key(number, 0) + varint(int(value))
    if isinstance(value, int):
        if -(2**63) <= value < 2**64:
            return key(number, 0) + varint(value)
        return key(number, 0) + b"\xff" * 10 + b"\x01"
    if isinstance(value, float):
        return key(number, 1) + struct.pack("<d", value)
    if isinstance(value, str):
        return len_field(number, value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        return len_field(number, _message(value))
    assert isinstance(value, list)
    return b"".join(len_field(number, b"".join(_field(1, inner) for inner in item))
                    if isinstance(item, list) else _field(number, item) for item in value)


VENUES = MappingProxyType({
    venue.name: venue
    for venue in (
        Venue("binance", test_codec_binance.SYMBOLS, binance.BinanceCodec, binance, _plain,
              _documents("binance", _plain)),
        Venue("bybit", test_codec_bybit.SYMBOLS, bybit.BybitCodec, bybit, _plain,
              _documents("bybit", _plain)),
        Venue("okx", test_codec_okx.SYMBOLS, okx.OkxCodec, okx, _plain, _documents("okx", _plain)),
        Venue("mexc", test_codec_mexc.SYMBOLS, mexc.MexcCodec, mexc, _plain,
              _documents("mexc", _plain)),
        Venue("gate", test_codec_gate.SYMBOLS, gate.GateCodec, gate, _plain,
              _documents("gate", _plain)),
        Venue("kucoin", test_codec_kucoin.SYMBOLS, kucoin.KucoinCodec, kucoin, _plain,
              _documents("kucoin", _plain)),
        Venue("bitget", test_codec_bitget.SYMBOLS, bitget.BitgetCodec, bitget, _plain,
              _documents("bitget", _plain)),
        Venue("htx", test_codec_htx.SYMBOLS, htx.HtxCodec, htx, test_codec_htx.wire,
              _documents("htx", test_codec_htx.wire)),
    )
})

venues = pytest.mark.parametrize("venue", list(VENUES))


# --- the property ------------------------------------------------------------------------


def assert_ws_total(venue: Venue, raw: bytes) -> Parsed | None:
    """``raw`` (as bytes, then as text) parses to sound records or raises FrameError."""
    codec = venue.codec()
    parsed = assert_parse_total(codec, raw)
    if parsed is not None:
        assert_records_sound(parsed, venue.name)
        assert parsed.reply is None or parsed.kind is FrameKind.PING
    as_text = assert_parse_total(codec, raw, as_text=True, errors="surrogateescape")
    if as_text is not None:
        assert_records_sound(as_text, venue.name)
    return parsed


def assert_rest_total(venue: Venue, raw: bytes) -> None:
    """Every REST parser of the venue returns a sound value for ``raw`` or raises FrameError."""
    module = venue.module
    try:
        infos = module.parse_instruments(raw, ALIASES)
    except FrameError:
        pass
    else:
        assert all(isinstance(info, SymbolInfo) and info.native and info.base and info.quote
                   for info in infos)
    try:
        volumes = module.parse_volumes(raw)
    except FrameError:
        pass
    else:
        assert all(isinstance(volume, float) and math.isfinite(volume) for volume in volumes.values())
    if venue.name == "kucoin":
        try:
            bootstrap = kucoin.parse_bootstrap(raw, "c1")
        except FrameError:
            pass
        else:
            assert isinstance(bootstrap, Bootstrap)
            for seconds in (bootstrap.ping_interval_s, bootstrap.ping_timeout_s):
                assert seconds is not None and math.isfinite(seconds) and seconds > 0


def assert_total(venue: Venue, document: Document, tree: object) -> Parsed | None:
    """``tree`` on the wire as ``document`` goes, and (unless protobuf) to the REST parsers."""
    if not document.protobuf:
        assert_rest_total(venue, orjson.dumps(tree))
    return assert_ws_total(venue, venue.ws_bytes(document, tree))


def json_documents(venue: Venue) -> list[Document]:
    return [document for document in venue.documents if document.tree is not None]


def documents_to_mutate(venue: Venue) -> st.SearchStrategy[Document]:
    """Any JSON document of ``venue``, half the time one that carries market data."""
    documents = json_documents(venue)
    data = [document for document in documents if _record_fields(venue, document)[0]]
    return st.sampled_from(data) | st.sampled_from(documents)


def _outcome(venue: Venue, raw: bytes) -> Parsed | str:
    try:
        return venue.codec().parse(raw, RECV_TS)
    except FrameError:
        return "FrameError"


@venues
def test_fuzzed_documents_start_from_quotes_and_trades(venue: str) -> None:
    """Unmutated, the documents the properties mutate yield quotes and trades, and read
    the same re-encoded as stored: mutations start from real data."""
    target = VENUES[venue]
    kinds: set[str] = set()
    for document in target.documents:
        parsed = assert_ws_total(target, document.wire)
        if parsed is not None:
            kinds.update(type(record).__name__ for record in parsed.records)
        if document.tree is not None:
            assert _outcome(target, target.ws_bytes(document, document.tree)) == _outcome(
                target, document.wire)
    assert kinds == {"Quote", "Trade"}


def test_mexc_views_encoded_parse_like_the_stored_wire_frames() -> None:
    target = VENUES["mexc"]
    stored = {document.name: document for document in target.documents}
    for view, wire in (("book_ticker.json", "book_ticker.pb.hex"), ("deals.json", "deals.pb.hex")):
        encoded = _outcome(target, stored[view].wire)
        assert isinstance(encoded, Parsed) and encoded.records
        assert encoded == _outcome(target, stored[wire].wire)


# --- 1. random bytes and text -------------------------------------------------------------

_TEXT = st.text(st.characters(codec=None), max_size=300)
_RANDOM = st.one_of(
    st.binary(max_size=300),
    _TEXT.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.binary(max_size=300).map(lambda data: b"{" + data),
    st.binary(max_size=300).map(test_codec_htx.wire),
)


@venues
@settings(max_examples=150, deadline=None, database=None)
@given(raw=_RANDOM)
def test_random_bytes_give_sound_records_or_frame_error(venue: str, raw: bytes) -> None:
    assert_ws_total(VENUES[venue], raw)
    assert_rest_total(VENUES[venue], raw)


# --- 2. stored frames cut short -----------------------------------------------------------


@venues
@settings(max_examples=150, deadline=None, database=None)
@given(data=st.data())
def test_truncated_stored_frames_raise_frame_error(venue: str, data: st.DataObject) -> None:
    """A proper prefix of a stored frame is never a frame (protobuf excepted: a prefix may
    end on a field boundary); a frame with a slice cut out may be, and is then sound."""
    target = VENUES[venue]
    document = data.draw(st.sampled_from(target.documents), label="document")
    wires = [document.wire]
    if document.tree is not None and not document.protobuf:
        wires.append(orjson.dumps(document.tree))  # what the REST parsers see
    raw = data.draw(st.sampled_from(wires), label="wire")
    end = data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="end")
    prefix = raw[:end]
    if document.protobuf or document.name.endswith(".pb.hex") or document.tree is None:
        assert_ws_total(target, prefix)
    else:
        with pytest.raises(FrameError):
            target.codec().parse(prefix, RECV_TS)
        if raw is not document.wire or venue != "htx":
            with pytest.raises(FrameError):
                target.codec().parse(prefix.decode("utf-8", "surrogateescape"), RECV_TS)
    assert_rest_total(target, prefix)
    start = data.draw(st.integers(min_value=0, max_value=len(raw)), label="cut from")
    stop = data.draw(st.integers(min_value=start, max_value=len(raw)), label="cut to")
    assert_ws_total(target, raw[:start] + raw[stop:])
    assert_rest_total(target, raw[:start] + raw[stop:])


# --- 3. oversized values ------------------------------------------------------------------


def _nested(depth: int) -> tuple[bytes, object]:
    body = b""
    for _ in range(depth):
        body = len_field(1, body)
    return b"[" * depth + b"]" * depth, ProtobufBody(body)


#: label -> (JSON text, the value MEXC's protobuf encoding gets instead)
OVERSIZED: Mapping[str, tuple[bytes, object]] = MappingProxyType({
    "1e400": (b"1e400", math.inf),
    "-1e400": (b"-1e400", -math.inf),
    "NaN": (b"NaN", math.nan),
    "Infinity": (b"Infinity", math.inf),
    "-Infinity": (b"-Infinity", -math.inf),
    "10^400": (b"1" + b"0" * 400, 10**400),
    "-10^400": (b"-1" + b"0" * 400, -(10**400)),
    "2^64": (b"18446744073709551616", 2**64),
    "-2^63-1": (b"-9223372036854775809", -(2**63) - 1),
    "1e308": (b"1e308", 1e308),
    "-1e308": (b"-1e308", -1e308),
    "1e-400": (b"1e-400", 0.0),
    "0": (b"0", 0),
    "-0.0": (b"-0.0", -0.0),
    "-1": (b"-1", -1),
    "-0.5": (b"-0.5", -0.5),
    '"1e308"': (b'"1e308"', "1e308"),
    '"1e400"': (b'"1e400"', "1e400"),
    '"1e-400"': (b'"1e-400"', "1e-400"),
    '"0"': (b'"0"', "0"),
    '"0.000"': (b'"0.000"', "0.000"),
    '"-1"': (b'"-1"', "-1"),
    '"-0.5"': (b'"-0.5"', "-0.5"),
    '"NaN"': (b'"NaN"', "NaN"),
    '"Infinity"': (b'"Infinity"', "Infinity"),
    '"10^400"': (b'"1' + b"0" * 400 + b'"', "1" + "0" * 400),
    "5000 digits": (b'"' + b"9" * 5000 + b'"', "9" * 5000),
    "100 KB string": (b'"' + b"x" * 100_000 + b'"', "x" * 100_000),
    "20000 numbers": (b"[" + b",".join([b"1"] * 20_000) + b"]", [1] * 20_000),
    "5000 levels": (b"[" + b",".join([b'["1.5","2"]'] * 5000) + b"]", [["1.5", "2"]] * 5000),
    "10000 keys": (b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(10_000)) + b"}",
                   {f"k{i}": i for i in range(10_000)}),
    "nested 500": _nested(500),
    "nested 5000": _nested(5000),
})


@venues
@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data())
def test_oversized_values_give_sound_records_or_frame_error(venue: str, data: st.DataObject) -> None:
    target = VENUES[venue]
    document = data.draw(documents_to_mutate(target), label="document")
    path = data.draw(st.sampled_from(json_paths(document.tree)), label="path")
    label = data.draw(st.sampled_from(sorted(OVERSIZED)), label="value")
    text, protobuf_value = OVERSIZED[label]
    value = protobuf_value if document.protobuf else orjson.Fragment(text)
    assert_total(target, document, replaced(document.tree, path, value))


@venues
@settings(max_examples=25, deadline=None, database=None)
@given(data=st.data())
def test_arrays_repeated_thousands_of_times_give_sound_records(venue: str, data: st.DataObject) -> None:
    """An array of a stored frame (levels, trades, symbols) with its items repeated."""
    target = VENUES[venue]
    documents = [document for document in json_documents(target)
                 if any(isinstance(node_at(document.tree, path), list) and node_at(document.tree, path)
                        for path in json_paths(document.tree))]
    document = data.draw(st.sampled_from(documents), label="document")
    paths = [path for path in json_paths(document.tree)
             if isinstance(node := node_at(document.tree, path), list) and node]
    path = data.draw(st.sampled_from(paths), label="path")
    times = data.draw(st.integers(min_value=2, max_value=2000), label="times")
    items = node_at(document.tree, path)
    assert isinstance(items, list)
    assert_total(target, document, replaced(document.tree, path, items * times))


# --- 4. wrong types -------------------------------------------------------------------------

_KINDS = ("null", "bool", "int", "float", "str", "list", "dict")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "str", list: "list", dict: "dict"}[type(value)]


_NUMERIC_TEXTS = ["", "0", "-1", "1", "1e-400", "1e400", "NaN", "Infinity", "-0", "1.5", " 1", "1_000",
                  "0x10", "\u0661"]


def _values_of_kind(kind: str, keys: list[str], texts: list[str]) -> st.SearchStrategy[object]:
    nested = json_values(keys, texts, max_list=3, max_dict=3, max_leaves=6)
    strategies: dict[str, st.SearchStrategy[object]] = {
        "null": st.none(),
        "bool": st.booleans(),
        "int": st.sampled_from([0, -1, 1, 2**63, 2**64 - 1, -(2**63)])
        | st.integers(min_value=-(2**63), max_value=2**64 - 1),
        "float": st.sampled_from([0.0, -0.0, -1.5, 1e308, 5e-324])
        | st.floats(allow_nan=False, allow_infinity=False),
        "str": st.sampled_from(texts + _NUMERIC_TEXTS) | st.text(max_size=8),
        "list": st.lists(nested, max_size=3),
        "dict": st.dictionaries(st.sampled_from(keys) | st.text(max_size=3), nested, max_size=3),
    }
    return strategies[kind]


def _keys_and_texts(tree: object) -> tuple[list[str], list[str]]:
    keys: set[str] = {"x"}
    texts: set[str] = {"x"}
    for path in json_paths(tree):
        if path and isinstance(path[-1], str):
            keys.add(path[-1])
        node = node_at(tree, path)
        if isinstance(node, str) and len(node) < 80:
            texts.add(node)
    return sorted(keys), sorted(texts)


def _kinds_of_values(tree: object) -> Mapping[str, st.SearchStrategy[object]]:
    """A strategy per JSON type, its strings and keys often ``tree``'s own."""
    keys, texts = _keys_and_texts(tree)
    return MappingProxyType({kind: _values_of_kind(kind, keys, texts) for kind in _KINDS})


#: (venue, document name) -> the strategies of :func:`_kinds_of_values`, built once
VALUES = MappingProxyType({
    (venue.name, document.name): _kinds_of_values(document.tree)
    for venue in VENUES.values() for document in json_documents(venue)
})


@st.composite
def _wrong_typed(draw: st.DrawFn, venue: str, document: Document) -> object:
    """``document``'s tree with one to three nodes replaced by values of another JSON type."""
    tree = document.tree
    values = VALUES[venue, document.name]
    for _ in range(draw(st.integers(min_value=1, max_value=3), label="mutations")):
        path: JsonPath = draw(st.sampled_from(json_paths(tree)), label="path")
        kind = _kind(node_at(tree, path))
        other = draw(st.sampled_from([k for k in _KINDS if k != kind]), label="kind")
        tree = replaced(tree, path, draw(values[other], label="value"))
    return tree


@venues
@settings(max_examples=150, deadline=None, database=None)
@given(data=st.data())
def test_wrong_types_give_sound_records_or_frame_error(venue: str, data: st.DataObject) -> None:
    target = VENUES[venue]
    document = data.draw(documents_to_mutate(target), label="document")
    assert_total(target, document, data.draw(_wrong_typed(venue, document), label="tree"))


# --- regressions found by the properties above ------------------------------------------------
#
# Every codec passed a price of 0, -1 or 1e-400 (which reads as 0.0) and a negative
# size on as a record: the shard dropped such quotes, but the recorder wrote them and
# the history chart drew them. actors/venues/fields.py:sound now refuses them.


def _leaves_equal_to(tree: object, numbers: set[float]) -> list[JsonPath]:
    """Paths of the number and decimal-string leaves of ``tree`` whose value is in ``numbers``."""
    found: list[JsonPath] = []
    for path in json_paths(tree):
        leaf = node_at(tree, path)
        if isinstance(leaf, bool) or not isinstance(leaf, int | float | str):
            continue
        try:
            value = float(leaf)
        except ValueError:
            continue
        if value in numbers:
            found.append(path)
    return found


def _record_fields(venue: Venue, document: Document) -> tuple[set[float], set[float]]:
    """(prices, sizes) of the records ``document`` parses to."""
    parsed = _outcome(venue, document.wire)
    prices: set[float] = set()
    sizes: set[float] = set()
    if isinstance(parsed, Parsed):
        for record in parsed.records:
            if isinstance(record, Quote):
                prices |= {record.bid, record.ask}
                sizes |= {record.bid_size, record.ask_size}
            else:
                prices.add(record.price)
                sizes.add(record.size)
    return prices, sizes


def _as_typed(original: object, text: str) -> object:
    """``text`` as the same JSON type as ``original``: a string, or a number literal."""
    if isinstance(original, str):
        return text
    return orjson.Fragment(text.encode())


@venues
@pytest.mark.parametrize(
    ("field_kind", "bad"),
    [("price", "0"), ("price", "-1"), ("price", "1e-400"), ("price", "-0.0"), ("size", "-1"),
     ("size", "-0.5")],
)
def test_non_positive_prices_and_negative_sizes_are_refused(venue: str, field_kind: str, bad: str) -> None:
    target = VENUES[venue]
    refused = 0
    for document in json_documents(target):
        prices, sizes = _record_fields(target, document)
        for path in _leaves_equal_to(document.tree, prices if field_kind == "price" else sizes):
            if document.protobuf:
                tree = replaced(document.tree, path, bad)
            else:
                tree = replaced(document.tree, path, _as_typed(node_at(document.tree, path), bad))
            with pytest.raises(FrameError, match="positive price" if field_kind == "price" else "negative"):
                target.codec().parse(target.ws_bytes(document, tree), RECV_TS)
            refused += 1
    assert refused >= 2  # at least a quote and a trade field
