"""MexcCodec and MEXC discovery, fed the frames MEXC documents.

Control frames and REST payloads live in tests/data/frames/mexc/ as MEXC documents them
(the two refusal frames as observed from the live service, since the documentation shows
none). MEXC documents its binary data frames only as the JSON view of the decoded
protobuf message (book_ticker.json, deals.json); the wire bytes (book_ticker.pb.hex,
deals.pb.hex) are those messages encoded by the small encoder below from the field
layout of the published .proto files, in field-number order as protobuf-java writes
them, and a test checks that the two agree. Every test asserts the exact records (every
field), the exact message text, or the exact error kind.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues import mexc
from actors.venues.base import FrameError, FrameKind, Parsed, RestRequest, symbol_map
from actors.venues.mexc import MexcCodec
from tests.codec_support import (
    RECV_TS,
    assert_every_truncation_raises,
    assert_parse_total,
    escape_brackets,
    frame_bytes,
    json_values,
)

BOOK_CHANNEL = "spot@public.aggre.bookTicker.v3.api.pb@100ms@BTCUSDT"
DEALS_CHANNEL = "spot@public.aggre.deals.v3.api.pb@100ms@BTCUSDT"

SYMBOLS = symbol_map(
    [
        SymbolInfo("mexc", "BTCUSDT", "BTC", "USDT"),
        SymbolInfo("mexc", "MXUSDT", "MX", "USDT"),
        # The name comes from the metadata, not from the native string.
        SymbolInfo("mexc", "BTCAUCTIONUSDT", "BTCAUCTION", "USDT"),
    ]
)

BOOK_QUOTE = Quote(
    venue="mexc",
    symbol="BTC/USDT",
    bid=93387.28,
    bid_size=3.73485,
    ask=93387.29,
    ask_size=7.669875,
    venue_ts=1736412092433,
    recv_ts=RECV_TS,
    seq=0,
)

DEAL_TRADE = Trade(
    venue="mexc",
    symbol="BTC/USDT",
    price=93220.0,
    size=0.04438243,
    side=Side.SELL,
    venue_ts=1736409765051,
    recv_ts=RECV_TS,
    trade_id="",
)


# --- a test-side protobuf encoder, from the published field layout ------------------------
#
# PushDataV3ApiWrapper: channel=1 (string), symbol=3 (string), symbolId=4 (string),
#   createTime=5 (int64), sendTime=6 (int64), body oneof: publicDeals=301,
#   publicBookTicker=305, publicAggreDeals=314, publicAggreBookTicker=315, ...
# PublicAggreBookTickerV3Api: bidPrice=1, bidQuantity=2, askPrice=3, askQuantity=4 (strings)
# PublicAggreDealsV3Api: deals=1 (repeated item), eventType=2 (string)
# PublicAggreDealsV3ApiItem: price=1, quantity=2 (strings), tradeType=3 (int32), time=4 (int64)

AGGRE_BOOK = 315
AGGRE_DEALS = 314


def varint(value: int) -> bytes:
    """Base-128 varint; negative values as 64-bit two's complement, as protobuf writes them."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def len_field(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return key(number, 2) + varint(len(data)) + data


def int_field(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def fixed64_field(number: int, value: int) -> bytes:
    return key(number, 1) + value.to_bytes(8, "little")


def fixed32_field(number: int, value: int) -> bytes:
    return key(number, 5) + value.to_bytes(4, "little")


def string_fields(*pairs: tuple[int, str]) -> bytes:
    """Proto3 strings: an empty one is left out."""
    return b"".join(len_field(number, text) for number, text in pairs if text)


def book_body(bid: str = "", bid_qty: str = "", ask: str = "", ask_qty: str = "") -> bytes:
    return string_fields((1, bid), (2, bid_qty), (3, ask), (4, ask_qty))


def deal_item(price: str = "", quantity: str = "", trade_type: int = 0, time: int = 0) -> bytes:
    out = string_fields((1, price), (2, quantity))
    if trade_type:
        out += int_field(3, trade_type)
    if time:
        out += int_field(4, time)
    return out


def deals_body(*items: bytes, event_type: str = "") -> bytes:
    return b"".join(len_field(1, item) for item in items) + string_fields((2, event_type))


def wrapper(body_number: int, body: bytes, *, channel: str = "", symbol: str = "",
            symbol_id: str = "", create_time: int = 0, send_time: int = 0) -> bytes:
    out = string_fields((1, channel), (3, symbol), (4, symbol_id))
    if create_time:
        out += int_field(5, create_time)
    if send_time:
        out += int_field(6, send_time)
    return out + len_field(body_number, body)


def documented_wire(view: dict[str, Any]) -> bytes:
    """The wire bytes of a message MEXC documents as its decoded JSON view."""
    if "publicbookticker" in view:
        ticker = view["publicbookticker"]
        body = book_body(ticker["bidprice"], ticker["bidquantity"], ticker["askprice"],
                         ticker["askquantity"])
        number = AGGRE_BOOK
    else:
        deals = view["publicdeals"]
        items = [deal_item(d["price"], d["quantity"], d["tradetype"], d["time"])
                 for d in deals["dealsList"]]
        body = deals_body(*items, event_type=deals["eventtype"])
        number = AGGRE_DEALS
    return wrapper(number, body, channel=view["channel"], symbol=view["symbol"],
                   send_time=view["sendtime"])


def book_frame(bid: str = "93387.28", bid_qty: str = "3.73485", ask: str = "93387.29",
               ask_qty: str = "7.669875", *, symbol: str = "BTCUSDT",
               send_time: int = 1736412092433, create_time: int = 0,
               number: int = AGGRE_BOOK) -> bytes:
    return wrapper(number, book_body(bid, bid_qty, ask, ask_qty), channel=BOOK_CHANNEL,
                   symbol=symbol, send_time=send_time, create_time=create_time)


def deals_frame(*items: bytes, symbol: str = "BTCUSDT", number: int = AGGRE_DEALS) -> bytes:
    return wrapper(number, deals_body(*items, event_type="spot@public.aggre.deals.v3.api.pb@100ms"),
                   channel=DEALS_CHANNEL, symbol=symbol, send_time=1736409765052)


def frame(name: str) -> bytes:
    return frame_bytes("mexc", name)


def wire(name: str) -> bytes:
    return bytes.fromhex(frame(name).decode())


@pytest.fixture
def codec() -> MexcCodec:
    return MexcCodec(SYMBOLS)


# --- data frames ------------------------------------------------------------------------


def test_stored_wire_bytes_are_the_documented_messages() -> None:
    assert wire("book_ticker.pb.hex") == documented_wire(orjson.loads(frame("book_ticker.json")))
    assert wire("deals.pb.hex") == documented_wire(orjson.loads(frame("deals.json")))


def test_documented_book_ticker_is_one_quote(codec: MexcCodec) -> None:
    assert codec.parse(wire("book_ticker.pb.hex"), RECV_TS) == Parsed(
        FrameKind.DATA, records=(BOOK_QUOTE,)
    )


def test_documented_deals_frame_is_one_trade(codec: MexcCodec) -> None:
    assert codec.parse(wire("deals.pb.hex"), RECV_TS) == Parsed(
        FrameKind.DATA, records=(DEAL_TRADE,)
    )


def test_non_aggregated_twins_have_the_same_layout(codec: MexcCodec) -> None:
    assert codec.parse(book_frame(number=305), RECV_TS) == Parsed(
        FrameKind.DATA, records=(BOOK_QUOTE,)
    )
    item = deal_item("93220.00", "0.04438243", 2, 1736409765051)
    assert codec.parse(deals_frame(item, number=301), RECV_TS) == Parsed(
        FrameKind.DATA, records=(DEAL_TRADE,)
    )


def test_field_order_and_unknown_fields_do_not_matter(codec: MexcCodec) -> None:
    body = (
        int_field(9, 7)
        + len_field(4, "7.669875")
        + fixed64_field(5, 123)
        + len_field(3, "93387.29")
        + len_field(2, "3.73485")
        + fixed32_field(6, 9)
        + len_field(1, "93387.28")
    )
    raw = (
        len_field(AGGRE_BOOK, body)
        + int_field(6, 1736412092433)
        + fixed32_field(77, 1)
        + len_field(4, "2fb942154ef44a4ab2ef98c8afb6a4a7")
        + len_field(3, "BTCUSDT")
        + fixed64_field(2, 0xFFFF_FFFF_FFFF_FFFF)
        + len_field(1, BOOK_CHANNEL)
        + int_field(1000, 5)
        + len_field(536_870_911, b"\xff\x00")
    )
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.DATA, records=(BOOK_QUOTE,))


def test_the_last_value_of_a_repeated_singular_field_wins(codec: MexcCodec) -> None:
    raw = len_field(3, "MXUSDT") + book_frame() + int_field(6, 1736412092999)
    (quote,) = codec.parse(raw, RECV_TS).records
    assert quote == Quote("mexc", "BTC/USDT", 93387.28, 3.73485, 93387.29, 7.669875,
                          1736412092999, RECV_TS, 0)


def test_venue_time_falls_back_to_create_time_then_zero(codec: MexcCodec) -> None:
    both = codec.parse(book_frame(create_time=1736412092400), RECV_TS).records
    assert [q.venue_ts for q in both if isinstance(q, Quote)] == [1736412092433]
    created = codec.parse(book_frame(send_time=0, create_time=1736412092400), RECV_TS).records
    assert [q.venue_ts for q in created if isinstance(q, Quote)] == [1736412092400]
    neither = codec.parse(book_frame(send_time=0), RECV_TS).records
    assert neither == (
        Quote("mexc", "BTC/USDT", 93387.28, 3.73485, 93387.29, 7.669875, 0, RECV_TS, 0),
    )


@pytest.mark.parametrize(
    ("price", "expected"),
    [("93387", 93387.0), ("93387.", 93387.0), (".5", 0.5), ("1e-3", 0.001), ("+2.50", 2.5),
     ("0.000001", 1e-6)],
)
def test_decimal_strings(codec: MexcCodec, price: str, expected: float) -> None:
    (quote,) = codec.parse(book_frame(bid=price), RECV_TS).records
    assert isinstance(quote, Quote)
    assert quote.bid == expected
    assert type(quote.bid) is float


def test_deals_keep_order_sides_and_times(codec: MexcCodec) -> None:
    raw = deals_frame(
        deal_item("93220.00", "0.04438243", 2, 1736409765051),
        deal_item("93220.01", "1.5", 1, 1736409765052),
        deal_item("93219.99", "0.001", 2, 1736409765053),
    )
    assert codec.parse(raw, RECV_TS) == Parsed(
        FrameKind.DATA,
        records=(
            DEAL_TRADE,
            Trade("mexc", "BTC/USDT", 93220.01, 1.5, Side.BUY, 1736409765052, RECV_TS, ""),
            Trade("mexc", "BTC/USDT", 93219.99, 0.001, Side.SELL, 1736409765053, RECV_TS, ""),
        ),
    )


def test_deal_without_time_has_venue_ts_zero(codec: MexcCodec) -> None:
    (trade,) = codec.parse(deals_frame(deal_item("1.5", "2", 1)), RECV_TS).records
    assert trade == Trade("mexc", "BTC/USDT", 1.5, 2.0, Side.BUY, 0, RECV_TS, "")


def test_empty_deals_body_is_data_without_records(codec: MexcCodec) -> None:
    assert codec.parse(deals_frame(), RECV_TS) == Parsed(FrameKind.DATA)
    assert codec.parse(wrapper(AGGRE_DEALS, b"", symbol="BTCUSDT"), RECV_TS) == Parsed(
        FrameKind.DATA
    )


@pytest.mark.parametrize(
    "sides",
    [
        {"bid": "", "bid_qty": ""},
        {"ask": "", "ask_qty": ""},
        {"bid": "", "bid_qty": "", "ask": "", "ask_qty": ""},
    ],
    ids=["no_bid", "no_ask", "empty"],
)
def test_one_sided_book_is_data_without_a_quote(codec: MexcCodec, sides: dict[str, str]) -> None:
    assert codec.parse(book_frame(**sides), RECV_TS) == Parsed(
        FrameKind.DATA, detail="one-sided book"
    )


def test_symbol_name_comes_from_the_symbol_map(codec: MexcCodec) -> None:
    (quote,) = codec.parse(book_frame(symbol="BTCAUCTIONUSDT"), RECV_TS).records
    assert quote == Quote("mexc", "BTCAUCTION/USDT", 93387.28, 3.73485, 93387.29, 7.669875,
                          1736412092433, RECV_TS, 0)


def test_unmapped_symbol_in_book_is_reported_by_native_name(codec: MexcCodec) -> None:
    assert codec.parse(book_frame(symbol="SOLUSDT"), RECV_TS) == Parsed(
        FrameKind.UNKNOWN_SYMBOL, detail="SOLUSDT"
    )


def test_unmapped_symbol_in_deals_is_reported_by_native_name(codec: MexcCodec) -> None:
    raw = deals_frame(deal_item("1", "1", 1, 1), symbol="SOLUSDT")
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.UNKNOWN_SYMBOL, detail="SOLUSDT")


def test_symbol_lookup_is_exact(codec: MexcCodec) -> None:
    assert codec.parse(book_frame(symbol="btcusdt"), RECV_TS) == Parsed(
        FrameKind.UNKNOWN_SYMBOL, detail="btcusdt"
    )


# --- control frames ---------------------------------------------------------------------


@pytest.mark.parametrize("as_text", [True, False], ids=["str", "bytes"])
def test_documented_subscribe_response_is_an_ack(codec: MexcCodec, as_text: bool) -> None:
    raw = frame("subscribe_response.json")
    assert codec.parse(raw.decode() if as_text else raw, RECV_TS) == Parsed(
        FrameKind.ACK, detail="spot@public.aggre.deals.v3.api.pb@100ms@BTCUSDT"
    )


def test_book_ticker_ack(codec: MexcCodec) -> None:
    raw = '{"id":0,"code":0,"msg":"spot@public.aggre.bookTicker.v3.api.pb@100ms@BTCUSDT"}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.ACK, detail=BOOK_CHANNEL)


def test_ack_of_several_channels_with_a_null_id(codec: MexcCodec) -> None:
    msg = f"{BOOK_CHANNEL},{DEALS_CHANNEL}"
    raw = orjson.dumps({"id": None, "code": 0, "msg": msg})
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.ACK, detail=msg)


def test_documented_unsubscribe_response_is_an_ack(codec: MexcCodec) -> None:
    assert codec.parse(frame("unsubscribe_response.json").decode(), RECV_TS) == Parsed(
        FrameKind.ACK, detail="spot@public.increase.depth.v3.api.pb@BTCUSDT"
    )


def test_success_only_wording_is_an_ack(codec: MexcCodec) -> None:
    msg = f"Subscribed successful! [{BOOK_CHANNEL}]"
    assert codec.parse(orjson.dumps({"id": 0, "code": 0, "msg": msg}), RECV_TS) == Parsed(
        FrameKind.ACK, detail=msg
    )


def test_documented_pong(codec: MexcCodec) -> None:
    assert codec.parse(frame("pong.json").decode(), RECV_TS) == Parsed(FrameKind.PONG)


def test_refused_subscription_is_an_error(codec: MexcCodec) -> None:
    assert codec.parse(frame("subscribe_refused.json").decode(), RECV_TS) == Parsed(
        FrameKind.ERROR,
        detail="Not Subscribed successfully! [spot@public.miniTicker.v3.api@BTCUSDT@UTC+0].  "
        "Reason\uff1a Blocked! ",
    )


def test_partly_refused_subscription_is_an_error(codec: MexcCodec) -> None:
    parsed = codec.parse(frame("subscribe_partly_refused.json").decode(), RECV_TS)
    assert parsed.kind is FrameKind.ERROR
    assert parsed.detail.startswith("Subscribed successful! [")
    assert "Not Subscribed successfully! [spot@public.aggre.bookTicker.v3.api.pb@100ms@NOPEUSDT]" \
        in parsed.detail
    assert parsed.records == ()
    assert parsed.reply is None


def test_non_zero_code_is_an_error(codec: MexcCodec) -> None:
    raw = '{"id":0,"code":30001,"msg":"invalid params"}'
    assert codec.parse(raw, RECV_TS) == Parsed(
        FrameKind.ERROR, detail="code 30001: 'invalid params'"
    )


def test_no_documented_frame_is_a_ping_notice_or_info(codec: MexcCodec) -> None:
    """MEXC documents no server ping at application level, no notice and no welcome."""
    texts = [frame(name).decode() for name in ("subscribe_response.json",
             "unsubscribe_response.json", "pong.json", "subscribe_refused.json",
             "subscribe_partly_refused.json")]
    frames: list[str | bytes] = [*texts, wire("book_ticker.pb.hex"), wire("deals.pb.hex")]
    kinds = {codec.parse(raw, RECV_TS).kind for raw in frames}
    assert kinds == {FrameKind.ACK, FrameKind.PONG, FrameKind.ERROR, FrameKind.DATA}


# --- malformed frames -------------------------------------------------------------------

MALFORMED_TEXT: dict[str, str | bytes] = {
    "empty_text": "",
    "not_json": "PONG",
    "lone_surrogate": '{"id":0,"code":0,"msg":"\ud800"}',
    "array": "[]",
    "null": "null",
    "number": "42",
    "empty_object": "{}",
    "unknown_shape": '{"c":"spot@public.bookTicker.v3.api@BTCUSDT","d":{}}',
    "code_missing": '{"id":0,"msg":"PONG"}',
    "msg_missing": '{"id":0,"code":0}',
    "code_string": '{"id":0,"code":"0","msg":"PONG"}',
    "code_bool": '{"id":0,"code":false,"msg":"PONG"}',
    "code_float": '{"id":0,"code":0.0,"msg":"PONG"}',
    "msg_number": '{"id":0,"code":0,"msg":7}',
    "msg_null": '{"id":0,"code":0,"msg":null}',
    "msg_empty": '{"id":0,"code":0,"msg":""}',
    "msg_unrecognised": '{"id":0,"code":0,"msg":"hello"}',
    "msg_lower_pong": '{"id":0,"code":0,"msg":"pong"}',
    "channels_and_junk": '{"id":0,"code":0,"msg":"spot@public.x@BTCUSDT,junk"}',
    "trailing_garbage": '{"id":0,"code":0,"msg":"PONG"}]',
    "truncated": '{"id":0,"code":0,"msg":"PO',
    "json_bytes_invalid_utf8": b'{"id":0,"code":0,"msg":"\xff"}',
    "json_bytes_truncated": b'{"id":0,',
}


@pytest.mark.parametrize("raw", MALFORMED_TEXT.values(), ids=MALFORMED_TEXT.keys())
def test_malformed_text_frames_raise_frame_error(codec: MexcCodec, raw: str | bytes) -> None:
    with pytest.raises(FrameError):
        codec.parse(raw, RECV_TS)


def test_every_truncation_of_a_text_frame_raises_frame_error(codec: MexcCodec) -> None:
    raw = frame("subscribe_response.json").decode().strip()
    assert_every_truncation_raises(lambda data: codec.parse(data, RECV_TS), raw)


_BOOK = book_frame()

MALFORMED_WIRE: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "no body"),
    "field_number_zero": (b"\x00\x01", "field number 0"),
    "truncated_tag": (b"\x80", "truncated varint"),
    "truncated_varint_value": (b"\x30\xff\xff", "truncated varint"),
    "overlong_varint": (b"\x30" + b"\xff" * 10 + b"\x01", "longer than 64 bits"),
    "tenth_byte_too_big": (b"\x30" + b"\xff" * 9 + b"\x02", "longer than 64 bits"),
    "tag_beyond_32_bits": (varint(1 << 35) + b"\x00", "invalid field number"),
    "start_group": (b"\x0b", "wire type 3"),
    "end_group": (b"\x0c", "wire type 4"),
    "wire_type_6": (b"\x0e", "wire type 6"),
    "wire_type_7": (b"\x0f", "wire type 7"),
    "length_past_end": (b"\x0a\x05abc", "needs 5 bytes, 3 left"),
    "huge_length": (b"\x0a" + varint((1 << 63) - 1), "needs"),
    "truncated_fixed64": (b"\x09\x01\x02\x03", "needs 8 bytes"),
    "truncated_fixed32": (b"\x0d\x01", "needs 4 bytes"),
    "no_body": (len_field(1, BOOK_CHANNEL) + len_field(3, "BTCUSDT"), "no body"),
    "two_bodies": (_BOOK + len_field(AGGRE_DEALS, b""), "more than one body"),
    "body_twice": (_BOOK + len_field(AGGRE_BOOK, book_body("1", "1", "2", "2")),
                   "more than one body"),
    "unexpected_body": (wrapper(303, b"", symbol="BTCUSDT"), "publicLimitDepths"),
    "private_body": (wrapper(307, b"", symbol="BTCUSDT"), "privateAccount"),
    "body_as_varint": (len_field(3, "BTCUSDT") + int_field(AGGRE_BOOK, 1), "publicAggreBookTicker"),
    "body_truncated": (len_field(3, "BTCUSDT") + key(AGGRE_BOOK, 2) + b"\x04\x0a\x09ab",
                       "publicAggreBookTicker"),
    "body_garbage": (wrapper(AGGRE_BOOK, b"\x0a\xff", symbol="BTCUSDT"), "publicAggreBookTicker"),
    "symbol_missing": (wrapper(AGGRE_BOOK, book_body("1", "1", "2", "2")), "'symbol'"),
    "symbol_as_varint": (int_field(3, 5) + len_field(AGGRE_BOOK, book_body("1", "1", "2", "2")),
                         "'symbol'"),
    "symbol_not_utf8": (len_field(3, b"BTC\xff\xfe") + len_field(AGGRE_BOOK, book_body("1", "1", "2", "2")),
                        "'symbol': not UTF-8"),
    "send_time_as_string": (_BOOK + len_field(6, "1736412092433"), "'sendTime'"),
    "send_time_negative": (book_frame(send_time=-1), "'sendTime'"),
    "create_time_negative": (book_frame(send_time=0, create_time=-5), "'createTime'"),
    "json_start_in_garbage": (b"{\x00\x01", "invalid JSON"),
}


@pytest.mark.parametrize(("raw", "named"), MALFORMED_WIRE.values(), ids=MALFORMED_WIRE.keys())
def test_malformed_wire_frames_raise_frame_error(codec: MexcCodec, raw: bytes, named: str) -> None:
    with pytest.raises(FrameError) as caught:
        codec.parse(raw, RECV_TS)
    assert named in str(caught.value)


@pytest.mark.parametrize("name", ["book_ticker.pb.hex", "deals.pb.hex"])
def test_every_truncation_of_a_wire_frame_raises_frame_error(codec: MexcCodec, name: str) -> None:
    raw = wire(name)
    assert_every_truncation_raises(lambda data: codec.parse(data, RECV_TS), raw)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"bid": ""}, "missing field 'bidPrice'"),
        ({"bid_qty": ""}, "missing field 'bidQuantity'"),
        ({"ask": ""}, "missing field 'askPrice'"),
        ({"ask_qty": ""}, "missing field 'askQuantity'"),
        ({"bid": "NaN"}, "'bidPrice'"),
        ({"bid": "nan"}, "'bidPrice'"),
        ({"ask": "inf"}, "'askPrice'"),
        ({"ask": "Infinity"}, "'askPrice'"),
        ({"ask": "1e999"}, "'askPrice'"),
        ({"bid_qty": "1_000"}, "'bidQuantity'"),
        ({"bid_qty": " 1"}, "'bidQuantity'"),
        ({"ask_qty": "1,5"}, "'askQuantity'"),
        ({"ask_qty": "\u0661\u0662"}, "'askQuantity'"),
        ({"bid": "0x10"}, "'bidPrice'"),
        ({"bid": "true"}, "'bidPrice'"),
    ],
)
def test_book_bad_value_is_named(codec: MexcCodec, fields: dict[str, str], named: str) -> None:
    with pytest.raises(FrameError, match=named):
        codec.parse(book_frame(**fields), RECV_TS)


def test_book_string_not_utf8_is_named(codec: MexcCodec) -> None:
    body = len_field(1, b"9\xff") + book_body("", "1", "2", "2")
    with pytest.raises(FrameError, match="'bidPrice': not UTF-8"):
        codec.parse(wrapper(AGGRE_BOOK, body, symbol="BTCUSDT"), RECV_TS)


def test_book_string_as_varint_is_named(codec: MexcCodec) -> None:
    body = int_field(3, 93387) + book_body("1", "1", "", "2")
    with pytest.raises(FrameError, match="'askPrice': wire type 0"):
        codec.parse(wrapper(AGGRE_BOOK, body, symbol="BTCUSDT"), RECV_TS)


@pytest.mark.parametrize(
    ("item", "named"),
    [
        (deal_item("", "1", 1, 1), "missing field 'deals[0].price'"),
        (deal_item("1", "", 1, 1), "missing field 'deals[0].quantity'"),
        (deal_item("1", "1", 0, 1), "'deals[0].tradeType': 0"),
        (deal_item("1", "1", 3, 1), "'deals[0].tradeType': 3"),
        (deal_item("1", "1", -1, 1), "'deals[0].tradeType': -1"),
        (deal_item("1", "1", 1 << 40, 1), "'deals[0].tradeType'"),
        (deal_item("1", "1", 1, -1), "'deals[0].time': negative"),
        (deal_item("NaN", "1", 1, 1), "'deals[0].price'"),
        (deal_item("1", "-inf", 1, 1), "'deals[0].quantity'"),
        (len_field(1, "1") + len_field(2, "1") + len_field(3, "1"), "'deals[0].tradeType'"),
        (len_field(1, "1") + len_field(2, "1") + int_field(3, 1) + fixed64_field(4, 1),
         "'deals[0].time'"),
        (b"\x0a\x09", "deals[0]: field 1 needs 9 bytes"),
    ],
)
def test_deal_bad_value_is_named(codec: MexcCodec, item: bytes, named: str) -> None:
    with pytest.raises(FrameError, match=escape_brackets(named)):
        codec.parse(deals_frame(item), RECV_TS)


def test_deal_that_is_not_a_message_is_named(codec: MexcCodec) -> None:
    raw = wrapper(AGGRE_DEALS, int_field(1, 5), symbol="BTCUSDT")
    with pytest.raises(FrameError, match=r"'deals\[0\]': expected a message"):
        codec.parse(raw, RECV_TS)


def test_bad_second_deal_names_its_index(codec: MexcCodec) -> None:
    raw = deals_frame(deal_item("1", "1", 1, 1), deal_item("1", "1", 9, 1))
    with pytest.raises(FrameError, match=r"'deals\[1\]\.tradeType': 9"):
        codec.parse(raw, RECV_TS)


# --- property tests ---------------------------------------------------------------------

_FIELD_NUMBERS = st.sampled_from([1, 2, 3, 4, 5, 6, 301, 303, 305, 314, 315, 1000])
_TEXTS = st.sampled_from(["BTCUSDT", "SOLUSDT", "93387.28", "NaN", "", "1e-3", BOOK_CHANNEL])


@st.composite
def _protobuf(draw: st.DrawFn, depth: int = 2) -> bytes:
    out = b""
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        number = draw(_FIELD_NUMBERS)
        choice = draw(st.integers(min_value=0, max_value=5 if depth else 4))
        if choice == 0:
            out += int_field(number, draw(st.integers(min_value=-(2**63), max_value=2**64 - 1)))
        elif choice == 1:
            out += len_field(number, draw(_TEXTS))
        elif choice == 2:
            out += len_field(number, draw(st.binary(max_size=12)))
        elif choice == 3:
            out += fixed64_field(number, draw(st.integers(min_value=0, max_value=2**64 - 1)))
        elif choice == 4:
            out += fixed32_field(number, draw(st.integers(min_value=0, max_value=2**32 - 1)))
        else:
            out += len_field(number, draw(_protobuf(depth - 1)))
    return out


_CONTROL_TEXTS = ["PONG", BOOK_CHANNEL, f"{BOOK_CHANNEL},{DEALS_CHANNEL}",
                  "Not Subscribed successfully! [x]", f"Subscribed successful! [{BOOK_CHANNEL}]", ""]
_CONTROL_MESSAGES = st.sampled_from(_CONTROL_TEXTS)
_JSON_VALUES = json_values(["id", "code", "msg", "method"], _CONTROL_TEXTS, max_dict=4, max_leaves=10)
_FRAMES = (
    st.binary(max_size=200)
    | st.text(max_size=200)
    | _protobuf()
    | st.tuples(_protobuf(), st.sampled_from(["BTCUSDT", "SOLUSDT", ""]))
    .map(lambda pair: pair[0] + book_frame(symbol=pair[1]))
    | st.builds(
        lambda code, msg: orjson.dumps({"id": 0, "code": code, "msg": msg}).decode(),
        st.sampled_from([0, 0, 0, 30001]) | st.integers(min_value=-(2**63), max_value=2**63),
        _CONTROL_MESSAGES | st.text(max_size=12),
    )
    | st.dictionaries(st.sampled_from(["id", "code", "msg"]), _JSON_VALUES, max_size=3)
    .map(orjson.dumps)
    | _JSON_VALUES.map(lambda value: orjson.dumps(value).decode())
)


@settings(max_examples=600, database=None)
@given(raw=_FRAMES)
def test_parse_returns_parsed_or_raises_frame_error(raw: str | bytes) -> None:
    parsed = assert_parse_total(MexcCodec(SYMBOLS), raw)
    if parsed is None:
        return
    assert parsed.kind in FrameKind
    for record in parsed.records:
        assert isinstance(record, Quote | Trade)
        assert record.recv_ts == RECV_TS
        prices = (record.bid, record.ask) if isinstance(record, Quote) else (record.price,)
        assert all(math.isfinite(price) for price in prices)


# --- outgoing messages ------------------------------------------------------------------


def test_connection_settings(codec: MexcCodec) -> None:
    assert codec.name == "mexc" == mexc.VENUE
    assert codec.max_streams_per_connection == 20
    assert 0 < codec.max_messages_per_second <= 100
    assert codec.ping_interval is not None and codec.ping_interval < 60
    assert codec.max_connection_age_s == 24 * 3600.0
    assert codec.ws_path(["BTCUSDT"]) == ""
    assert mexc.CONNECT_INTERVAL_S >= 1.0
    assert 1 <= mexc.MAX_CONNECTIONS <= 50


def test_ping_is_the_documented_text(codec: MexcCodec) -> None:
    ping = codec.ping_message(1_700_000_000_000)
    assert ping == '{"method":"PING"}'
    assert orjson.loads(ping) == orjson.loads(frame("ping_request.json"))
    assert codec.ping_message(1_700_000_000_001) == ping


def test_subscribe_text_is_exact_and_ids_count_up(codec: MexcCodec) -> None:
    assert codec.subscribe_messages(["BTCUSDT"], trades=False) == [
        '{"method":"SUBSCRIPTION","params":["spot@public.aggre.bookTicker.v3.api.pb@100ms@BTCUSDT"],"id":1}'
    ]
    assert codec.subscribe_messages(["BTCUSDT", "MXUSDT"], trades=True) == [
        '{"method":"SUBSCRIPTION","params":["spot@public.aggre.bookTicker.v3.api.pb@100ms@BTCUSDT",'
        '"spot@public.aggre.deals.v3.api.pb@100ms@BTCUSDT",'
        '"spot@public.aggre.bookTicker.v3.api.pb@100ms@MXUSDT",'
        '"spot@public.aggre.deals.v3.api.pb@100ms@MXUSDT"],"id":2}'
    ]
    assert codec.unsubscribe_messages(["MXUSDT"], trades=False, now_ms=5) == [
        '{"method":"UNSUBSCRIPTION","params":["spot@public.aggre.bookTicker.v3.api.pb@100ms@MXUSDT"],"id":3}'
    ]


@pytest.mark.parametrize(
    ("name", "trades"),
    [("subscribe_request.json", False), ("subscribe_deals_request.json", True)],
)
def test_subscribe_has_the_documented_shape(codec: MexcCodec, name: str, trades: bool) -> None:
    documented = orjson.loads(frame(name))
    (message,) = codec.subscribe_messages(["BTCUSDT"], trades=trades)
    ours = orjson.loads(message)
    assert ours.keys() == documented.keys() | {"id"}
    assert ours["method"] == documented["method"]
    assert set(documented["params"]) <= set(ours["params"])


def test_unsubscribe_has_the_documented_shape(codec: MexcCodec) -> None:
    documented = orjson.loads(frame("unsubscribe_request.json"))
    (message,) = codec.unsubscribe_messages(["BTCUSDT"], trades=True)
    ours = orjson.loads(message)
    assert ours.keys() == documented.keys() | {"id"}
    assert ours["method"] == documented["method"]
    assert ours["params"] == [BOOK_CHANNEL, DEALS_CHANNEL]


@pytest.mark.parametrize(
    ("count", "trades", "sizes"),
    [
        (0, False, []),
        (1, True, [2]),
        (10, False, [10]),
        (11, False, [10, 1]),
        (7, True, [10, 4]),
        (10, True, [10, 10]),
        (20, False, [10, 10]),
    ],
)
@pytest.mark.parametrize("method", ["subscribe_messages", "unsubscribe_messages"])
def test_messages_carry_at_most_ten_channels(
    codec: MexcCodec, method: str, count: int, trades: bool, sizes: list[int]
) -> None:
    natives = [f"SYM{index}USDT" for index in range(count)]
    texts = getattr(codec, method)(natives, trades=trades)
    messages = [orjson.loads(text) for text in texts]
    assert [len(message["params"]) for message in messages] == sizes
    assert [message["id"] for message in messages] == list(range(1, len(sizes) + 1))


@settings(database=None)
@given(count=st.integers(min_value=0, max_value=20), trades=st.booleans())
def test_chunks_cover_every_channel_once(count: int, trades: bool) -> None:
    codec = MexcCodec(SYMBOLS)
    natives = [f"S{index}USDT" for index in range(count // 2 if trades else count)]
    messages = [orjson.loads(text) for text in codec.subscribe_messages(natives, trades=trades)]
    assert all(1 <= len(message["params"]) <= mexc.STREAMS_PER_SUBSCRIBE for message in messages)
    channels = [channel for message in messages for channel in message["params"]]
    expected = [f"{mexc.BOOK_CHANNEL}{native}" for native in natives]
    if trades:
        expected += [f"{mexc.TRADE_CHANNEL}{native}" for native in natives]
    assert sorted(channels) == sorted(expected)
    assert len(channels) == len(expected)


@pytest.mark.parametrize(
    ("count", "trades", "channels"), [(11, True, 22), (21, False, 21), (16, True, 32)]
)
def test_beyond_the_connection_cap_is_refused(
    codec: MexcCodec, count: int, trades: bool, channels: int
) -> None:
    natives = [f"S{index}USDT" for index in range(count)]
    with pytest.raises(ValueError, match=f"{channels} channels"):
        codec.subscribe_messages(natives, trades=trades)
    with pytest.raises(ValueError, match=f"{channels} channels"):
        codec.unsubscribe_messages(natives, trades=trades)
    assert orjson.loads(codec.subscribe_messages(natives[:1], trades=False)[0])["id"] == 1


# --- discovery --------------------------------------------------------------------------


def test_discovery_requests() -> None:
    assert mexc.discovery_requests() == (
        RestRequest("/api/v3/exchangeInfo"),
        RestRequest("/api/v3/ticker/24hr"),
    )


def test_parse_instruments_keeps_online_symbols_that_allow_spot_trading() -> None:
    # ETHBTC is paused (status "2"); PALMAIUSDT is online but not open to API trading.
    assert mexc.parse_instruments(frame("exchange_info.json"), {}) == [
        SymbolInfo("mexc", "BTCUSDT", "BTC", "USDT"),
        SymbolInfo("mexc", "MXUSDT", "MX", "USDT"),
    ]


def test_documented_symbol_shape_with_the_older_enabled_status() -> None:
    documented = orjson.loads(frame("exchange_info_symbol_doc.json"))
    assert mexc.parse_instruments(orjson.dumps({"symbols": [documented]}), {}) == []
    allowed = dict(documented, isSpotTradingAllowed=True)
    assert mexc.parse_instruments(orjson.dumps({"symbols": [allowed]}), {}) == [
        SymbolInfo("mexc", "TOMO3LUSDT", "TOMO3L", "USDT")
    ]


def test_parse_instruments_applies_aliases_and_upper_case() -> None:
    body = orjson.dumps(
        {
            "symbols": [
                {"symbol": "XBTUSDT", "status": "1", "baseAsset": "xbt", "quoteAsset": "USDT",
                 "isSpotTradingAllowed": True},
                {"symbol": "ETHXBT", "status": "1", "baseAsset": "ETH", "quoteAsset": "XBT",
                 "isSpotTradingAllowed": True},
            ]
        }
    )
    assert mexc.parse_instruments(body, {"XBT": "btc"}) == [
        SymbolInfo("mexc", "XBTUSDT", "BTC", "USDT"),
        SymbolInfo("mexc", "ETHXBT", "ETH", "BTC"),
    ]


def test_rest_error_names_the_code() -> None:
    with pytest.raises(FrameError, match="exchangeInfo failed: code 10007: 'bad symbol'"):
        mexc.parse_instruments(frame("rest_error.json"), {})
    with pytest.raises(FrameError, match="ticker/24hr failed: code 10007: 'bad symbol'"):
        mexc.parse_volumes(frame("rest_error.json"))


@pytest.mark.parametrize(
    "body",
    [
        b"<html>403 Forbidden</html>",
        b"[]",
        b"{}",
        b'{"symbols":{}}',
        b'{"symbols":[1]}',
        b'{"symbols":[{"symbol":"BTCUSDT","baseAsset":"BTC","quoteAsset":"USDT","isSpotTradingAllowed":true}]}',
        b'{"symbols":[{"symbol":"BTCUSDT","status":1,"baseAsset":"BTC","quoteAsset":"USDT","isSpotTradingAllowed":true}]}',
        b'{"symbols":[{"symbol":"BTCUSDT","status":"1","baseAsset":"BTC","quoteAsset":"USDT"}]}',
        b'{"symbols":[{"symbol":"BTCUSDT","status":"1","baseAsset":"BTC","quoteAsset":"USDT","isSpotTradingAllowed":"true"}]}',
        b'{"symbols":[{"symbol":"BTCUSDT","status":"1","baseAsset":"BTC","isSpotTradingAllowed":true}]}',
        b'{"symbols":[{"symbol":"","status":"1","baseAsset":"BTC","quoteAsset":"USDT","isSpotTradingAllowed":true}]}',
        b'{"symbols":[{"symbol":"BTCUSDT","status":"1","baseAsset":null,"quoteAsset":"USDT","isSpotTradingAllowed":true}]}',
        frame("exchange_info.json")[:-30],
    ],
)
def test_parse_instruments_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        mexc.parse_instruments(body, {})


def test_documented_null_quote_volume_reads_as_zero() -> None:
    assert mexc.parse_volumes(frame("ticker_24hr.json")) == {"BTCUSDT": 0.0, "ETHUSDT": 0.0}


def test_parse_volumes_reads_quote_volume() -> None:
    assert mexc.parse_volumes(frame("ticker_24hr_volumes.json")) == {
        "BTCUSDT": 79966541.37,
        "MXUSDT": 3606853.7,
    }


def test_quote_volume_may_be_a_json_number() -> None:
    body = b'[{"symbol":"BTCUSDT","quoteVolume":79966541.37},{"symbol":"MXUSDT","quoteVolume":3}]'
    volumes = mexc.parse_volumes(body)
    assert volumes == {"BTCUSDT": 79966541.37, "MXUSDT": 3.0}
    assert type(volumes["MXUSDT"]) is float


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b'{"symbol":"BTCUSDT","quoteVolume":"1"}',
        b"[1]",
        b'[{"symbol":"BTCUSDT"}]',
        b'[{"symbol":"BTCUSDT","quoteVolume":"inf"}]',
        b'[{"symbol":"BTCUSDT","quoteVolume":"NaN"}]',
        b'[{"symbol":"BTCUSDT","quoteVolume":""}]',
        b'[{"symbol":"BTCUSDT","quoteVolume":true}]',
        b'[{"symbol":"BTCUSDT","quoteVolume":["1"]}]',
        b'[{"symbol":null,"quoteVolume":"1"}]',
        b'[{"symbol":"","quoteVolume":"1"}]',
        frame("ticker_24hr_volumes.json")[:-20],
    ],
)
def test_parse_volumes_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        mexc.parse_volumes(body)
