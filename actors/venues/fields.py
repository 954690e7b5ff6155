"""Strict readers of JSON fields, shared by the venue codecs.

Each raises :class:`~actors.venues.base.FrameError` naming the field when a value is
missing or of the wrong type; numbers are read exactly from plain ASCII decimals or
JSON numbers, never from ``"nan"``, ``"1_000"`` or non-ASCII digits. Every codec
passes what it parsed through :func:`sound`, which refuses a record with a price that
is not positive or a negative size.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import msgspec
import orjson

from actors.records import Quote
from actors.venues.base import FrameError, Parsed

#: what a bug in a parsing step can raise on hostile input; turned into FrameError
PARSE_FAILURES: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
)

# float() also takes "1_000", " 1", "nan", "infinity" and non-ASCII digits; venues send none.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


# --- typed fast paths ---------------------------------------------------------------------
#
# Each codec decodes its hot data frame (best bid/ask) straight into a msgspec Struct that
# admits only what the strict path above would accept with the same result, and falls
# back to the strict path for everything else (acks, errors, trades, anything odd): the
# fast path may decline a frame, never judge it. What makes the two agree:
# - ``forbid_unknown_fields``: a frame with any other key (an "e", "error", "code" ...)
#   is not the hot shape, so the strict path classifies it. A nested object whose other
#   keys the strict path ignores (a trade entry's "count", "makerOrderId" ...) is
#   declared with only what the strict path reads, without the option: msgspec skips
#   the rest without building it (RecursionError on deep nesting declines, as for Any);
# - ``Literal`` channels, events and actions, and fixed-length tuples where the strict
#   path would give one record (``tuple[Level]``: exactly one level a side), leave the
#   codec nothing to compare: any other value or length is declined;
# - lax decoding (``strict=False``) reads a float from a decimal string or a JSON
#   number, as :func:`to_float` does; its string grammar is narrower than ``_DECIMAL``
#   ("1.", ".5", "+1" and leading zeros are declined), and "nan"/"inf" fall outside the
#   bounds below;
# - the bounds are :func:`sound`'s: prices > 0, sizes >= 0, both finite;
# - lax decoding would also turn "7" or 7.0 into an int, so integer fields are declared
#   :data:`LaxInt` (or :data:`Millis`, where the strict reader takes digit strings too)
#   and the codec takes the frame only when the value ``is`` an int;
# - duplicate keys: the last one wins in both orjson and msgspec;
# - orjson reads an integer literal as an int only within [-2**63, 2**64 - 1] (a float
#   beyond, an error past ~1e308); msgspec reads any. :data:`LaxInt` and :data:`Millis`
#   are bounded within that range (int64). One divergence remains, on purpose: an integer
#   literal past ~1e308 digits' worth in a field *neither* path reads makes orjson
#   refuse the whole frame, while the fast path ignores the field.
# ``tests/test_codec_fast.py`` checks the agreement on generated frames.
#
# Each codec picks its trade or book decoder by a substring of the trade channel's name
# (its ``_TRADE_MARK``) instead of letting one decoder decline the frame first: a
# declined decode costs a Python exception, ~1 us. A wrong guess only costs that: the
# other decoder, or the strict path, still decides. Most codecs look first for one
# letter (``_TRADE_LETTER``) that every trade push holds in a required key and no book
# push holds: one memchr, ~20 ns, spares a book push the substring search, ~100 ns.
#
# Costs that shaped the fast paths (CPython 3.11, ``python -m bench.perf_codec``):
# reading an enum member through its class (``FrameKind.DATA``) is ~0.1 us, so the
# codecs keep it in a module constant; checking a digit string in Python (type, isascii,
# isdigit, int) was ~0.4 us where :data:`Millis` has msgspec parse it; the symbol lookup
# is one dict get of the venue's raw instrument (or topic) string to our symbol.

Price = Annotated[float, msgspec.Meta(gt=0.0, le=sys.float_info.max)]
Size = Annotated[float, msgspec.Meta(ge=0.0, le=sys.float_info.max)]
# (msgspec takes int64 bounds only: an int in (2**63, 2**64) is declined, which is safe)
LaxInt = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)] | float | str
_T = TypeVar("_T")
#: A millisecond timestamp (or sequence number) a strict reader takes both as a JSON
#: integer and as a string of ASCII digits: lax decoding reads either into the int, and
#: reads nothing else into one (no sign, leading zero, space or non-ASCII digit in a
#: string; "-0" and 0 fall below the bound). ``float`` is in the union so that a JSON
#: float or a string such as "1e3" or "7.0" stays a float instead of being truncated:
#: the codec takes the frame only when the value ``is`` an int. Never add ``None`` (or
#: ``bool``) to this union: lax decoding reads the string "null" as None ("true" as True).
Millis = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | float


class Level(msgspec.Struct, array_like=True, gc=False):
    """One ``[price, size, ...]`` level of a book side, as the strict readers take it:
    at least two items, the rest ignored (msgspec skips them without building them)."""

    price: Price
    size: Size


#: what a fast decoder raises on a frame that is not its shape (ValidationError included)
#: (UnicodeError: a str frame with a lone surrogate; RecursionError: deep nesting in a
#: field declared Any, which msgspec decodes in full)
FAST_DECLINED = (msgspec.DecodeError, UnicodeError, RecursionError)


def decode_first(shapes: list[Callable[[str | bytes], _T]], frame: str | bytes) -> _T | None:
    """``frame`` decoded by the first of ``shapes`` that takes it, or None.

    The one that took it moves to the front: a connection sends one of the shapes (a
    raw or an enveloped stream), so from then on it is tried first.
    """
    for decode in shapes:
        try:
            decoded = decode(frame)
        except FAST_DECLINED:
            continue
        if decode is not shapes[0]:
            shapes.remove(decode)
            shapes.insert(0, decode)
        return decoded
    return None


def fast_decoder(shape: type[_T]) -> msgspec.json.Decoder[_T]:
    """A lax JSON decoder for one hot frame shape (a ``forbid_unknown_fields`` Struct)."""
    return msgspec.json.Decoder(shape, strict=False)


def field(obj: Mapping[str, Any], key: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise FrameError(f"missing field {key!r}") from None


def json_object(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FrameError(f"{name}: expected a JSON object, got {type(value).__name__}")
    return value


def to_float(value: object, name: str) -> float:
    """A finite float from a decimal string or a JSON number; FrameError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FrameError(f"field {name!r}: expected a decimal, got {type(value).__name__}")
    if isinstance(value, str) and _DECIMAL.fullmatch(value) is None:
        raise FrameError(f"field {name!r}: {value[:40]!r} is not a decimal number")
    try:
        number = float(value)
    except OverflowError:
        raise FrameError(f"field {name!r}: out of range") from None
    if not math.isfinite(number):
        raise FrameError(f"field {name!r}: {number} is not finite")
    return number


def decimal(obj: Mapping[str, Any], key: str) -> float:
    return to_float(field(obj, key), key)


def integer(obj: Mapping[str, Any], key: str) -> int:
    value = field(obj, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameError(f"field {key!r}: expected an integer, got {type(value).__name__}")
    return value


def array(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = field(obj, key)
    if not isinstance(value, list):
        raise FrameError(f"field {key!r}: expected an array, got {type(value).__name__}")
    return value


def load_object(frame: str | bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"invalid JSON: {exc}") from exc
    return json_object(value, "frame")


def name(obj: Mapping[str, Any], key: str) -> str:
    value = string(obj, key)
    if not value:
        raise FrameError(f"field {key!r}: empty")
    return value


def string(obj: Mapping[str, Any], key: str) -> str:
    value = field(obj, key)
    if not isinstance(value, str):
        raise FrameError(f"field {key!r}: expected a string, got {type(value).__name__}")
    return value


@contextmanager
def frame_errors(what: str) -> Iterator[None]:
    """Let FrameError through; turn any other parsing failure into one, prefixed ``what``."""
    try:
        yield
    except FrameError:
        raise
    except PARSE_FAILURES as exc:
        raise FrameError(f"{what}: {type(exc).__name__}: {exc}") from exc


def sound(parsed: Parsed) -> Parsed:
    """``parsed``, once every price in it is positive and every size non-negative.

    The readers above only promise finite numbers; this is where a codec refuses a
    record no market can produce (a price of 0, -1 or ``1e-400``, a negative size),
    raising FrameError. The recorder writes every record a codec emits, so the
    shard's own check would come too late for the history.
    """
    prices: tuple[tuple[str, float], ...]
    sizes: tuple[tuple[str, float], ...]
    for record in parsed.records:
        if isinstance(record, Quote):
            prices = (("bid", record.bid), ("ask", record.ask))
            sizes = (("bid size", record.bid_size), ("ask size", record.ask_size))
        else:
            prices, sizes = (("price", record.price),), (("size", record.size),)
        for what, price in prices:
            if not price > 0:
                raise FrameError(f"{what} {price!r} of {record.symbol} is not a positive price")
        for what, size in sizes:
            if not size >= 0:
                raise FrameError(f"{what} {size!r} of {record.symbol} is negative")
    return parsed


def asset(code: str, aliases: Mapping[str, str]) -> str:
    """An asset code in upper case, renamed by the alias table (``XBT`` -> ``BTC``)."""
    upper = code.upper()
    return aliases.get(upper, upper).upper()
