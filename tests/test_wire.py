"""Record batches between processes (actors/wire.py): exact round trips, strict decoding."""

from __future__ import annotations

import dataclasses
import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.records import Opportunity, OpportunityState, Quote, Side, Trade
from actors.wire import (
    Batch,
    WireError,
    decode_batch,
    decode_opportunities,
    encode_batch,
    encode_opportunities,
    opportunity_id,
)

_price = st.floats(min_value=1e-12, max_value=1e14, allow_nan=False, allow_infinity=False)
_size = st.floats(min_value=0, max_value=1e14, allow_nan=False, allow_infinity=False)
_ns = st.integers(min_value=0, max_value=2**63 - 1)
_symbol = st.text(min_size=1, max_size=20)


@st.composite
def _quote(draw: st.DrawFn) -> Quote:
    return Quote("binance", draw(_symbol), draw(_price), draw(_size), draw(_price), draw(_size),
                 draw(_ns), draw(_ns), draw(_ns))


@st.composite
def _trade(draw: st.DrawFn) -> Trade:
    return Trade("binance", draw(_symbol), draw(_price), draw(_size), draw(st.sampled_from(Side)),
                 draw(_ns), draw(_ns), draw(st.text(max_size=40)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_quote(), _trade()), max_size=30), _ns, st.one_of(st.none(), _ns))
def test_a_batch_comes_back_exactly_as_it_was_sent(records: list[Quote | Trade], sent: int,
                                                   down: int | None) -> None:
    payload = encode_batch("binance", "ingest-a-1", 42, sent, records, down_ns=down)
    batch = decode_batch(payload, venue="binance")
    assert batch == Batch("binance", "ingest-a-1", 42, sent,
                          [r for r in records if isinstance(r, Quote)],
                          [r for r in records if isinstance(r, Trade)], down)
    assert len(batch) == len(records)


def test_a_quote_row_is_small() -> None:
    quote = Quote("binance", "BTC/USDT", 97000.12, 1.5, 97000.13, 0.25, 1764000000000,
                  1764000000000123456, 77)
    size = len(encode_batch("binance", "src", 1, 1, [quote] * 1000)) / 1000
    assert size < 80  # rows are arrays, no field names per row (as maps: ~170 bytes)


def _doc(**changes: object) -> bytes:
    doc: dict[str, object] = {"v": 1, "venue": "okx", "src": "s", "seq": 1, "sent": 5,
                              "q": [["BTC/USDT", 1.0, 1.0, 1.1, 1.0, 5, 6, 0]]}
    doc.update(changes)
    return msgpack.packb({k: v for k, v in doc.items() if v is not None})


@pytest.mark.parametrize(("payload", "message"), [
    (b"", "truncated"),
    (b"\xc1", "invalid"),
    (msgpack.packb([1, 2, 3]), "Expected `object`"),
    (_doc(v=2), "version 2"),
    (_doc(venue=None), "missing required field `venue`"),
    (_doc(extra=1), "unknown field `extra`"),
    (_doc(q=[["BTC/USDT", math.nan, 1.0, 1.1, 1.0, 5, 6, 0]]), "q[0][1]"),
    (_doc(q=[["BTC/USDT", math.inf, 1.0, 1.1, 1.0, 5, 6, 0]]), "q[0][1]"),
    (_doc(q=[["BTC/USDT", -1.0, 1.0, 1.1, 1.0, 5, 6, 0]]), "q[0][1]"),
    (_doc(q=[["BTC/USDT", 1.0, -1.0, 1.1, 1.0, 5, 6, 0]]), "q[0][2]"),
    (_doc(q=[["BTC/USDT", 1.0, 1.0, 1.1, 1.0, -5, 6, 0]]), "q[0][5]"),
    (_doc(q=[["BTC/USDT", 1.0, 1.0, 1.1, 1.0, 5, 6]]), "q[0]"),
    (_doc(q=[["X" * 65, 1.0, 1.0, 1.1, 1.0, 5, 6, 0]]), "q[0][0]"),
    (_doc(seq=2**64 - 1), "seq"),
    (_doc(t=[["BTC/USDT", 1.0, 1.0, 3, 5, 6, "id"]]), "t[0][3]"),
    (_doc(venue="binance"), "venue 'binance' on the subject of 'okx'"),
])
def test_bad_batches_are_refused_with_a_reason(payload: bytes, message: str) -> None:
    with pytest.raises(WireError) as info:
        decode_batch(payload, venue="okx")
    assert message in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_wire_error(payload: bytes) -> None:
    try:
        decode_batch(payload)
    except WireError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_valid_batch_with_one_byte_changed_decodes_or_raises_wire_error(data: st.DataObject) -> None:
    payload = bytearray(encode_batch("gate", "src", 3, 9, [
        Quote("gate", "ETH/USDT", 3000.5, 2.0, 3000.6, 1.0, 1, 2, 3),
        Trade("gate", "ETH/USDT", 3000.5, 0.1, Side.SELL, 1, 2, "t-1")]))
    index = data.draw(st.integers(0, len(payload) - 1))
    payload[index] = data.draw(st.integers(0, 255))
    try:
        batch = decode_batch(bytes(payload))
    except WireError:
        return
    for quote in batch.quotes:  # whatever decoded obeys the bounds
        assert 0 < quote.bid < 1e15 and 0 < quote.ask < 1e15 and quote.recv_ts >= 0


# -- opportunities --------------------------------------------------------------------------

_bps = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def _opportunity(draw: st.DrawFn) -> Opportunity:
    state = draw(st.sampled_from([OpportunityState.OPEN, OpportunityState.CLOSE]))
    return Opportunity(draw(_symbol), "binance", "okx", state, draw(_bps), draw(_bps), draw(_bps),
                       draw(_bps), draw(_price), draw(_size), draw(_price), draw(_size), draw(_ns),
                       draw(_ns) if state is OpportunityState.CLOSE else 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(_opportunity(), max_size=10), _ns)
def test_opportunity_events_come_back_exactly(events: list[Opportunity], sent: int) -> None:
    assert decode_opportunities(encode_opportunities("serve-a-1", sent, events)) == events


def _event(**changes: object) -> Opportunity:
    base = Opportunity("BTC/USDT", "binance", "okx", OpportunityState.CLOSE, 12.0, 8.0, 9.5, 7.25,
                       100.0, 1.5, 100.12, 2.0, 1_000, 5_000)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("field,value", [
    ("net_bps", math.nan), ("gross_bps", math.inf), ("buy_price", 0.0), ("sell_size", -1.0),
    ("opened_at", -1), ("symbol", "x" * 65), ("buy_venue", ""),
])
def test_a_bad_opportunity_field_is_a_wire_error(field: str, value: object) -> None:
    payload = encode_opportunities("serve-a-1", 1, [_event(**{field: value})])
    with pytest.raises(WireError, match="opportunities"):
        decode_opportunities(payload)


@pytest.mark.parametrize("payload", [
    b"", b"\xc1", msgpack.packb({"v": 1, "src": "s", "sent": 1, "o": [["BTC/USDT"]]}),
    msgpack.packb({"v": 2, "src": "s", "sent": 1, "o": []}),
    msgpack.packb({"v": 1, "src": "s", "sent": 1, "o": [], "extra": 1}),
    msgpack.packb({"v": 1, "src": "s", "sent": 1, "o": [[
        "BTC/USDT", "binance", "okx", "sideways", 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0, 0]]}),
])
def test_a_malformed_opportunities_message_is_a_wire_error(payload: bytes) -> None:
    with pytest.raises(WireError):
        decode_opportunities(payload)


def test_an_opportunity_event_has_the_same_id_whoever_computed_it() -> None:
    """Two serve processes emit the same event; the stream's dedup keys on this id."""
    assert opportunity_id(_event()) == opportunity_id(_event(net_bps=8.0, buy_size=1.5))
    assert opportunity_id(_event()) != opportunity_id(_event(state=OpportunityState.OPEN, closed_at=0))
    assert opportunity_id(_event()) != opportunity_id(_event(opened_at=1_001))
    assert opportunity_id(_event()) != opportunity_id(_event(sell_venue="gate"))
