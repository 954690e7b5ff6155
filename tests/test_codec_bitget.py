"""BitgetCodec and Bitget discovery, fed the frames Bitget documents.

Frames live in tests/data/frames/bitget/. Where they come from:

* ``books5_documented.json``, ``trade_snapshot.json``, ``subscribe_request.json``,
  ``subscribe_response.json``: the spot channel pages of the v2 documentation, verbatim.
* ``books1_snapshot.json``: the documented depth push trimmed to one level a side, on
  the ``books1`` channel, with the ``checksum`` field the v2 push parameters list.
* ``subscribe_error.json``: the documented error event (``event``, ``arg``, ``code``,
  ``msg``) with the text Bitget answers for an unknown instrument.
* ``symbols.json``, ``tickers.json``: the documented REST responses, plus same-shaped
  entries for ETHBTC and two instruments that do not trade (``offline``, ``gray``).

Every test asserts the exact records (every field), the exact message text, or the
exact error kind.
"""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues import bitget
from actors.venues.base import FrameError, FrameKind, Parsed, RestRequest, symbol_map
from actors.venues.bitget import BitgetCodec
from tests.codec_support import (
    JSON_NOT_AN_OBJECT,
    RECV_TS,
    arbitrary_frames,
    assert_parse_total,
    edited,
    frame_bytes,
    json_values,
)

SYMBOLS = symbol_map(
    [
        SymbolInfo("bitget", "BTCUSDT", "BTC", "USDT"),
        SymbolInfo("bitget", "ETHBTC", "ETH", "BTC"),
        # The name comes from the metadata, not from the native string.
        SymbolInfo("bitget", "BTCAUCTIONUSDT", "BTCAUCTION", "USDT"),
    ]
)

BOOK_QUOTE = Quote(
    venue="bitget",
    symbol="BTC/USDT",
    bid=26274.8,
    bid_size=0.0009,
    ask=26274.9,
    ask_size=0.0009,
    venue_ts=1695710946294,
    recv_ts=RECV_TS,
    seq=123,
)

SNAPSHOT_TRADE = Trade(
    venue="bitget",
    symbol="BTC/USDT",
    price=26293.4,
    size=0.0013,
    side=Side.BUY,
    venue_ts=1695709835822,
    recv_ts=RECV_TS,
    trade_id="1000000000",
)


def frame(name: str) -> bytes:
    return frame_bytes("bitget", name)


def book_with(**data_changes: object) -> bytes:
    """The books1 snapshot with ``data[0]`` fields replaced (a value of ... deletes the field)."""
    return edited(frame("books1_snapshot.json"), ("data", 0), **data_changes)


def trade_with(**changes: object) -> bytes:
    """The trade frame with fields of its one trade replaced (... deletes)."""
    return edited(frame("trade_snapshot.json"), ("data", 0), **changes)


def with_top(name: str, **changes: object) -> bytes:
    """A frame with top-level fields replaced (... deletes)."""
    return edited(frame(name), (), **changes)


def with_arg(name: str, **changes: object) -> bytes:
    """A frame with ``arg`` fields replaced (... deletes)."""
    return edited(frame(name), ("arg",), **changes)


@pytest.fixture
def codec() -> BitgetCodec:
    return BitgetCodec(SYMBOLS)


# --- data frames ------------------------------------------------------------------------


@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "str"])
def test_books1_snapshot_is_one_quote(codec: BitgetCodec, as_text: bool) -> None:
    raw = frame("books1_snapshot.json")
    parsed = codec.parse(raw.decode() if as_text else raw, RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, records=(BOOK_QUOTE,))


def test_books1_without_checksum_is_a_quote_too(codec: BitgetCodec) -> None:
    assert codec.parse(book_with(checksum=...), RECV_TS) == Parsed(
        FrameKind.DATA, records=(BOOK_QUOTE,)
    )


def test_books1_keeps_a_large_seq_exactly(codec: BitgetCodec) -> None:
    (quote,) = codec.parse(book_with(seq=1304314508780744705), RECV_TS).records
    assert isinstance(quote, Quote)
    assert quote.seq == 1304314508780744705


def test_prices_and_sizes_may_be_json_numbers(codec: BitgetCodec) -> None:
    raw = book_with(bids=[[26274.8, 9e-4]], asks=[["26274.9", 0.0009]], ts=1695710946294)
    (quote,) = codec.parse(raw, RECV_TS).records
    assert quote == BOOK_QUOTE
    assert isinstance(quote, Quote)
    assert type(quote.bid) is float
    assert type(quote.ask_size) is float


def test_integer_prices_become_floats(codec: BitgetCodec) -> None:
    (quote,) = codec.parse(book_with(bids=[[26274, 1]], asks=[[26275, "2"]]), RECV_TS).records
    assert quote == Quote("bitget", "BTC/USDT", 26274.0, 1.0, 26275.0, 2.0, 1695710946294,
                          RECV_TS, 123)
    assert isinstance(quote, Quote)
    assert type(quote.bid) is float


@pytest.mark.parametrize("side", ["bids", "asks"])
def test_one_sided_book_is_data_without_a_quote(codec: BitgetCodec, side: str) -> None:
    assert codec.parse(book_with(**{side: []}), RECV_TS) == Parsed(
        FrameKind.DATA, detail="one-sided book"
    )


def test_book_with_empty_data_is_data_without_records(codec: BitgetCodec) -> None:
    raw = with_top("books1_snapshot.json", data=[])
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.DATA)


def test_symbol_name_comes_from_the_symbol_map(codec: BitgetCodec) -> None:
    (quote,) = codec.parse(with_arg("books1_snapshot.json", instId="BTCAUCTIONUSDT"),
                           RECV_TS).records
    assert isinstance(quote, Quote)
    assert quote.symbol == "BTCAUCTION/USDT"


def test_documented_trade_push_is_one_trade(codec: BitgetCodec) -> None:
    parsed = codec.parse(frame("trade_snapshot.json"), RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, records=(SNAPSHOT_TRADE,))


def test_trade_update_keeps_order_and_sides(codec: BitgetCodec) -> None:
    document = orjson.loads(frame("trade_snapshot.json"))
    document["action"] = "update"
    document["data"].append(
        {"ts": "1695709835823", "price": "26293.0", "size": "0.5", "side": "sell",
         "tradeId": "1000000001"}
    )
    parsed = codec.parse(orjson.dumps(document), RECV_TS)
    assert parsed == Parsed(
        FrameKind.DATA,
        records=(
            SNAPSHOT_TRADE,
            Trade("bitget", "BTC/USDT", 26293.0, 0.5, Side.SELL, 1695709835823, RECV_TS,
                  "1000000001"),
        ),
    )


def test_trade_numbers_are_accepted(codec: BitgetCodec) -> None:
    (trade,) = codec.parse(trade_with(price=26293.4, size=0.0013, ts=1695709835822),
                           RECV_TS).records
    assert trade == SNAPSHOT_TRADE


def test_empty_trade_list_is_data_without_records(codec: BitgetCodec) -> None:
    assert codec.parse(with_top("trade_snapshot.json", data=[]), RECV_TS) == Parsed(FrameKind.DATA)


@pytest.mark.parametrize("name", ["books1_snapshot.json", "trade_snapshot.json"])
def test_unmapped_symbol_is_reported_by_native_name(codec: BitgetCodec, name: str) -> None:
    assert codec.parse(with_arg(name, instId="SOLUSDT"), RECV_TS) == Parsed(
        FrameKind.UNKNOWN_SYMBOL, detail="SOLUSDT"
    )


def test_symbol_map_is_copied_at_construction() -> None:
    symbols = dict(SYMBOLS)
    codec = BitgetCodec(symbols)
    symbols.clear()
    assert codec.parse(frame("books1_snapshot.json"), RECV_TS).records == (BOOK_QUOTE,)


# --- control frames ---------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["pong", b"pong", frame("pong.txt")], ids=["str", "bytes", "file"])
def test_text_pong_answers_our_ping(codec: BitgetCodec, raw: str | bytes) -> None:
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.PONG)


@pytest.mark.parametrize("raw", ["ping", b"ping"], ids=["str", "bytes"])
def test_text_ping_from_the_server_is_answered_with_pong(codec: BitgetCodec,
                                                         raw: str | bytes) -> None:
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.PING, reply="pong")


def test_subscribe_response_is_an_ack_naming_the_stream(codec: BitgetCodec) -> None:
    assert codec.parse(frame("subscribe_response.json"), RECV_TS) == Parsed(
        FrameKind.ACK, detail="subscribe trade:BTCUSDT"
    )


def test_unsubscribe_response_is_an_ack(codec: BitgetCodec) -> None:
    raw = b'{"event":"unsubscribe","arg":{"instType":"SPOT","channel":"books1","instId":"ETHBTC"}}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.ACK, detail="unsubscribe books1:ETHBTC")


def test_ack_for_an_unmapped_symbol_is_still_an_ack(codec: BitgetCodec) -> None:
    raw = b'{"event":"subscribe","arg":{"instType":"SPOT","channel":"books1","instId":"SOLUSDT"}}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.ACK, detail="subscribe books1:SOLUSDT")


def test_rejected_subscription_is_an_error(codec: BitgetCodec) -> None:
    assert codec.parse(frame("subscribe_error.json"), RECV_TS) == Parsed(
        FrameKind.ERROR,
        detail="code 30001: \"instType:SPOT,channel:books1,instId:NOPEUSDT doesn't exist\" "
        "(books1:NOPEUSDT)",
    )


def test_error_without_arg_and_with_a_string_code(codec: BitgetCodec) -> None:
    raw = b'{"event":"error","code":"30006","msg":"request too many"}'
    assert codec.parse(raw, RECV_TS) == Parsed(
        FrameKind.ERROR, detail="code '30006': 'request too many'"
    )


# --- malformed frames -------------------------------------------------------------------

MALFORMED = {
    "empty": b"",
    "empty_text": "",
    "pong_with_newline": b"pong\n",
    "pong_upper_case": "PONG",
    "pong_quoted": b'"pong"',
    "not_json": b"hello",
    "invalid_utf8": b"\xff\xfe{}",
    "utf16": '{"event":"subscribe"}'.encode("utf-16"),
    "truncated": frame("books1_snapshot.json")[:-40],
    **JSON_NOT_AN_OBJECT,
    "empty_object": b"{}",
    "unknown_shape": b'{"foo":1}',
    "unknown_event": b'{"event":"login","code":0,"msg":""}',
    "event_not_string": b'{"event":1}',
    "ack_without_arg": b'{"event":"subscribe"}',
    "ack_arg_not_object": b'{"event":"subscribe","arg":[]}',
    "ack_arg_without_instId": b'{"event":"subscribe","arg":{"channel":"books1"}}',
    "error_without_code": b'{"event":"error","msg":"x"}',
    "error_code_bool": b'{"event":"error","code":true,"msg":"x"}',
    "error_code_null": b'{"event":"error","code":null,"msg":"x"}',
    "error_without_msg": b'{"event":"error","code":30001}',
    "error_msg_not_string": b'{"event":"error","code":30001,"msg":1}',
    "error_arg_not_object": b'{"event":"error","code":30001,"msg":"x","arg":"books1"}',
    "action_not_string": with_top("books1_snapshot.json", action=None),
    "unknown_action": with_top("trade_snapshot.json", action="delta"),
    "books1_update": with_top("books1_snapshot.json", action="update"),
    "arg_missing": with_top("books1_snapshot.json", arg=...),
    "arg_not_object": with_top("books1_snapshot.json", arg="books1"),
    "inst_type_missing": with_arg("books1_snapshot.json", instType=...),
    "inst_type_futures": with_arg("books1_snapshot.json", instType="USDT-FUTURES"),
    "inst_type_lower_case": with_arg("books1_snapshot.json", instType="spot"),
    "channel_missing": with_arg("books1_snapshot.json", channel=...),
    "channel_not_string": with_arg("books1_snapshot.json", channel=1),
    "deeper_book": frame("books5_documented.json"),
    "full_book": with_arg("books1_snapshot.json", channel="books"),
    "ticker_channel": with_arg("trade_snapshot.json", channel="ticker"),
    "inst_id_missing": with_arg("books1_snapshot.json", instId=...),
    "inst_id_empty": with_arg("books1_snapshot.json", instId=""),
    "inst_id_not_string": with_arg("books1_snapshot.json", instId=123),
    "data_missing": with_top("books1_snapshot.json", data=...),
    "data_object": with_top("books1_snapshot.json", data={}),
    "data_entry_not_object": with_top("books1_snapshot.json", data=[[]]),
    "trade_entry_not_object": with_top("trade_snapshot.json", data=["x"]),
    "bids_not_list": book_with(bids={}),
    "level_too_short": book_with(bids=[["26274.8"]]),
    "level_not_list": book_with(asks=["26274.9"]),
    "level_object": book_with(asks=[{"price": "26274.9", "size": "1"}]),
    "price_nan": book_with(bids=[["NaN", "1"]]),
    "price_inf": book_with(bids=[["inf", "1"]]),
    "price_huge": book_with(bids=[["1e999", "1"]]),
    "price_underscore": book_with(asks=[["1_000", "1"]]),
    "price_spaces": book_with(asks=[[" 26274.9", "1"]]),
    "price_non_ascii_digits": book_with(asks=[["\u0661\u0662", "1"]]),
    "price_empty": book_with(asks=[["", "1"]]),
    "price_bool": book_with(asks=[[True, "1"]]),
    "size_null": book_with(asks=[["26274.9", None]]),
    "size_hex": book_with(asks=[["26274.9", "0x10"]]),
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_raise_frame_error(codec: BitgetCodec, raw: str | bytes) -> None:
    with pytest.raises(FrameError):
        codec.parse(raw, RECV_TS)


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_raise_frame_error_as_text(codec: BitgetCodec, raw: str | bytes) -> None:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    with pytest.raises(FrameError):
        codec.parse(text, RECV_TS)


def test_lone_surrogate_text_is_a_frame_error(codec: BitgetCodec) -> None:
    with pytest.raises(FrameError):
        codec.parse('{"event":"\ud800"}', RECV_TS)


@pytest.mark.parametrize("field", ["bids", "asks", "ts"])
def test_book_missing_field_is_named(codec: BitgetCodec, field: str) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(book_with(**{field: ...}), RECV_TS)


@pytest.mark.parametrize(("value", "seq"), [(..., 0), (None, 0), ("123", 123)])
def test_book_seq_may_be_absent_or_a_digit_string(codec: BitgetCodec, value: object, seq: int) -> None:
    """White-label Bitget feeds omit ``seq`` or send it as a string; the quote still counts."""
    parsed = codec.parse(book_with(seq=value), RECV_TS)
    assert parsed.kind is FrameKind.DATA
    assert parsed.records[0].seq == seq



@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", "12a"),
        ("seq", 1.5),
        ("seq", True),
        ("ts", "1695710946294.5"),
        ("ts", "-1695710946294"),
        ("ts", " 1695710946294"),
        ("ts", "1e12"),
        ("ts", ""),
        ("ts", -1),
        ("ts", 1.5),
        ("ts", False),
        ("ts", "1" * 21),
    ],
)
def test_book_wrong_value_is_named(codec: BitgetCodec, field: str, value: object) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(book_with(**{field: value}), RECV_TS)


@pytest.mark.parametrize(("side", "name"), [("bids", "bids[0][0]"), ("asks", "asks[0][1]")])
def test_bad_level_names_its_position(codec: BitgetCodec, side: str, name: str) -> None:
    level = ["nan", "1"] if side == "bids" else ["26274.9", "1e999"]
    reason = "not a decimal number" if side == "bids" else "inf is not finite"
    with pytest.raises(FrameError, match=rf"'{re.escape(name)}': .*{reason}"):
        codec.parse(book_with(**{side: [level]}), RECV_TS)


@pytest.mark.parametrize("field", ["ts", "price", "size", "side", "tradeId"])
def test_trade_missing_field_is_named(codec: BitgetCodec, field: str) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(trade_with(**{field: ...}), RECV_TS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("side", "Buy"),
        ("side", "bid"),
        ("side", ""),
        ("side", 1),
        ("price", "nan"),
        ("price", "Infinity"),
        ("price", ""),
        ("price", None),
        ("price", [1]),
        ("size", "1,5"),
        ("size", False),
        ("ts", "yesterday"),
        ("ts", None),
        ("tradeId", 1000000000),
        ("tradeId", ""),
    ],
)
def test_trade_wrong_value_is_named(codec: BitgetCodec, field: str, value: object) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(trade_with(**{field: value}), RECV_TS)


def test_feeding_a_frame_one_byte_short_at_a_time_never_escapes(codec: BitgetCodec) -> None:
    raw = frame("books1_snapshot.json")
    for end in range(len(raw)):
        try:
            codec.parse(raw[:end], RECV_TS)
        except FrameError:
            continue


_JSON_KEYS = ["action", "arg", "data", "ts", "instType", "channel", "instId", "asks", "bids", "seq",
              "checksum", "price", "size", "side", "tradeId", "event", "code", "msg", "op"]
_JSON_VALUES = json_values(
    _JSON_KEYS,
    ["snapshot", "update", "SPOT", "books1", "trade", "BTCUSDT", "buy", "sell", "subscribe",
     "error", "ping", "pong", "26274.8", "1695710946294", "NaN", ""],
)
# Frames close to the documented ones: a valid push with one field swapped for junk.
_NEAR_MISSES = st.builds(
    lambda name, key, value: with_top(name, **{key: value}),
    st.sampled_from(["books1_snapshot.json", "trade_snapshot.json", "subscribe_response.json",
                     "subscribe_error.json"]),
    st.sampled_from(_JSON_KEYS),
    _JSON_VALUES,
)
_FRAMES = arbitrary_frames(_JSON_KEYS, _JSON_VALUES, _NEAR_MISSES)


@settings(max_examples=500, database=None)
@given(raw=_FRAMES, as_text=st.booleans())
def test_parse_returns_parsed_or_raises_frame_error(raw: str | bytes, as_text: bool) -> None:
    assert_parse_total(BitgetCodec(SYMBOLS), raw, as_text=as_text)


# --- outgoing messages ------------------------------------------------------------------


def test_connection_settings(codec: BitgetCodec) -> None:
    assert codec.name == "bitget"
    assert codec.max_streams_per_connection == 48
    assert codec.max_messages_per_second == 5.0
    assert codec.ping_interval == 25.0
    assert codec.max_connection_age_s == 24 * 3600.0
    assert codec.ws_path(["BTCUSDT"]) == ""
    assert bitget.CONNECT_INTERVAL_S == 1.5
    assert bitget.MAX_CONNECTIONS == 80


def test_connection_settings_respect_the_documented_limits() -> None:
    assert BitgetCodec.max_streams_per_connection < 50  # recommended: fewer than 50
    assert BitgetCodec.max_messages_per_second < 10  # 10 messages a second, pings included
    assert BitgetCodec.ping_interval is not None and BitgetCodec.ping_interval < 30
    assert 300 / (5 * 60) * bitget.CONNECT_INTERVAL_S > 1  # 300 connects per 5 min per IP
    assert bitget.MAX_CONNECTIONS < 100  # 100 connections per IP


def test_ping_is_the_bare_text_ping(codec: BitgetCodec) -> None:
    assert codec.ping_message(1_700_000_000_000) == "ping"
    assert codec.ping_message(0) == "ping"


def test_subscribe_text_is_exact(codec: BitgetCodec) -> None:
    assert codec.subscribe_messages(["BTCUSDT", "ETHBTC"], trades=False) == [
        '{"op":"subscribe","args":['
        '{"instType":"SPOT","channel":"books1","instId":"BTCUSDT"},'
        '{"instType":"SPOT","channel":"books1","instId":"ETHBTC"}]}'
    ]
    assert codec.subscribe_messages(["BTCUSDT"], trades=True) == [
        '{"op":"subscribe","args":['
        '{"instType":"SPOT","channel":"books1","instId":"BTCUSDT"},'
        '{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"}]}'
    ]


def test_unsubscribe_text_is_exact(codec: BitgetCodec) -> None:
    assert codec.unsubscribe_messages(["BTCUSDT"], trades=True) == [
        '{"op":"unsubscribe","args":['
        '{"instType":"SPOT","channel":"books1","instId":"BTCUSDT"},'
        '{"instType":"SPOT","channel":"trade","instId":"BTCUSDT"}]}'
    ]


def test_messages_are_deterministic(codec: BitgetCodec) -> None:
    natives = [f"S{index}USDT" for index in range(24)]
    first = codec.subscribe_messages(natives, trades=True)
    assert codec.subscribe_messages(natives, trades=True) == first
    assert BitgetCodec(SYMBOLS).subscribe_messages(natives, trades=True) == first


def test_subscribe_has_the_documented_request_shape(codec: BitgetCodec) -> None:
    documented = orjson.loads(frame("subscribe_request.json"))
    (message,) = codec.subscribe_messages(["BTCUSDT"], trades=True)
    ours = orjson.loads(message)
    assert ours.keys() == documented.keys()
    assert ours["op"] == documented["op"]
    assert documented["args"][0] in ours["args"]
    assert all(arg.keys() == documented["args"][0].keys() for arg in ours["args"])


@pytest.mark.parametrize(
    ("count", "trades", "sizes"),
    [
        (0, False, []),
        (0, True, []),
        (1, False, [1]),
        (1, True, [2]),
        (12, True, [24]),
        (13, True, [24, 2]),
        (24, False, [24]),
        (25, False, [24, 1]),
        (24, True, [24, 24]),
        (48, False, [24, 24]),
    ],
)
def test_subscribe_splits_at_24_args(codec: BitgetCodec, count: int, trades: bool,
                                     sizes: list[int]) -> None:
    natives = [f"SYM{index}USDT" for index in range(count)]
    messages = [orjson.loads(text) for text in codec.subscribe_messages(natives, trades=trades)]
    assert [len(message["args"]) for message in messages] == sizes
    assert all(message["op"] == "subscribe" for message in messages)


def test_long_symbols_split_by_size() -> None:
    codec = BitgetCodec({})
    natives = [f"{index:02d}" + "X" * 200 for index in range(24)]
    messages = codec.subscribe_messages(natives, trades=False)
    assert all(len(text.encode() if isinstance(text, str) else text) <= 4096 for text in messages)
    assert [len(orjson.loads(text)["args"]) for text in messages] == [16, 8]


def test_a_symbol_too_long_for_one_request_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds 4096 bytes"):
        BitgetCodec({}).subscribe_messages(["X" * 5000], trades=False)


@settings(database=None)
@given(count=st.integers(min_value=0, max_value=48), trades=st.booleans())
def test_subscribe_chunks_cover_every_stream_once(count: int, trades: bool) -> None:
    if trades:
        count //= 2
    codec = BitgetCodec(SYMBOLS)
    natives = [f"S{index}USDT" for index in range(count)]
    messages = [orjson.loads(text) for text in codec.subscribe_messages(natives, trades=trades)]
    assert all(1 <= len(message["args"]) <= bitget.ARGS_PER_SUBSCRIBE for message in messages)
    streams = [(arg["channel"], arg["instId"]) for message in messages for arg in message["args"]]
    expected = [("books1", native) for native in natives]
    if trades:
        expected += [("trade", native) for native in natives]
    assert sorted(streams) == sorted(expected)
    assert len(streams) == len(expected)
    assert all(arg["instType"] == "SPOT" for message in messages for arg in message["args"])


def test_subscribe_up_to_the_connection_cap_is_accepted(codec: BitgetCodec) -> None:
    assert len(codec.subscribe_messages([f"S{index}" for index in range(24)], trades=True)) == 2
    assert len(codec.subscribe_messages([f"S{index}" for index in range(48)], trades=False)) == 2


@pytest.mark.parametrize(("count", "trades", "streams"), [(25, True, 50), (49, False, 49)])
def test_subscribe_beyond_the_connection_cap_is_refused(codec: BitgetCodec, count: int,
                                                        trades: bool, streams: int) -> None:
    natives = [f"S{index}" for index in range(count)]
    with pytest.raises(ValueError, match=f"{streams} streams"):
        codec.subscribe_messages(natives, trades=trades)
    with pytest.raises(ValueError, match=f"{streams} streams"):
        codec.unsubscribe_messages(natives, trades=trades)


# --- discovery --------------------------------------------------------------------------


def test_discovery_requests() -> None:
    assert bitget.discovery_requests() == (
        RestRequest("/api/v2/spot/public/symbols"),
        RestRequest("/api/v2/spot/market/tickers"),
    )


def test_parse_instruments_keeps_online_symbols_only() -> None:
    assert bitget.parse_instruments(frame("symbols.json"), {}) == [
        SymbolInfo("bitget", "BTCUSDT", "BTC", "USDT"),
        SymbolInfo("bitget", "ETHBTC", "ETH", "BTC"),
    ]


@pytest.mark.parametrize("status", ["offline", "gray", "halt", "Online", ""])
def test_parse_instruments_skips_other_statuses(status: str) -> None:
    body = orjson.dumps(
        {"code": "00000", "msg": "success", "requestTime": 1, "data": [
            {"symbol": "BTCUSDT", "baseCoin": "BTC", "quoteCoin": "USDT", "status": status},
        ]}
    )
    assert bitget.parse_instruments(body, {}) == []


def test_parse_instruments_applies_aliases_and_upper_case() -> None:
    body = orjson.dumps(
        {
            "code": "00000",
            "msg": "success",
            "requestTime": 1695808949356,
            "data": [
                {"symbol": "XBTUSDT", "baseCoin": "xbt", "quoteCoin": "USDT", "status": "online"},
                {"symbol": "ETHXBT", "baseCoin": "ETH", "quoteCoin": "XBT", "status": "online"},
            ],
        }
    )
    assert bitget.parse_instruments(body, {"XBT": "btc"}) == [
        SymbolInfo("bitget", "XBTUSDT", "BTC", "USDT"),
        SymbolInfo("bitget", "ETHXBT", "ETH", "BTC"),
    ]


def test_parse_volumes_reads_quote_volume() -> None:
    assert bitget.parse_volumes(frame("tickers.json")) == {
        "BTCUSDT": 0.0,
        "ETHBTC": 28.5106,
    }


def test_rest_error_names_the_code() -> None:
    with pytest.raises(FrameError, match="code '40034': 'Parameter does not exist'"):
        bitget.parse_instruments(frame("rest_error.json"), {})
    with pytest.raises(FrameError, match="code '40034'"):
        bitget.parse_volumes(frame("rest_error.json"))


@pytest.mark.parametrize(
    "body",
    [
        b"<html>403 Forbidden</html>",
        b"",
        b"[]",
        b'{"code":0,"data":[]}',
        b'{"code":"0","data":[]}',
        b'{"data":[]}',
        b'{"code":"00000"}',
        b'{"code":"00000","data":null}',
        b'{"code":"00000","data":{}}',
        b'{"code":"00000","data":[1]}',
        b'{"code":"00000","data":[{"symbol":"BTCUSDT","status":"online","baseCoin":"BTC"}]}',
        b'{"code":"00000","data":[{"symbol":"","status":"online","baseCoin":"BTC","quoteCoin":"USDT"}]}',
        b'{"code":"00000","data":[{"symbol":"BTCUSDT","status":"online","baseCoin":"","quoteCoin":"USDT"}]}',
        b'{"code":"00000","data":[{"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT"}]}',
        b'{"code":"00000","data":[{"symbol":"BTCUSDT","status":1,"baseCoin":"BTC","quoteCoin":"USDT"}]}',
        frame("symbols.json")[:-30],
    ],
)
def test_parse_instruments_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        bitget.parse_instruments(body, {})


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"code":"00000","data":[{"symbol":"BTCUSDT"}]}',
        b'{"code":"00000","data":[{"symbol":"BTCUSDT","quoteVolume":"inf"}]}',
        b'{"code":"00000","data":[{"symbol":"BTCUSDT","quoteVolume":"NaN"}]}',
        b'{"code":"00000","data":[{"symbol":"BTCUSDT","quoteVolume":""}]}',
        b'{"code":"00000","data":[{"symbol":"BTCUSDT","quoteVolume":null}]}',
        b'{"code":"00000","data":[{"symbol":null,"quoteVolume":"1"}]}',
        frame("tickers.json")[:-10],
    ],
)
def test_parse_volumes_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        bitget.parse_volumes(body)
