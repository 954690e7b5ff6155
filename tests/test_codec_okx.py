"""OkxCodec and OKX discovery, fed the frames OKX documents.

Frames live in tests/data/frames/okx/ as the OKX v5 documentation shows them (the
documented bbo-tbt example is a swap, BCH-USDT-SWAP: the codec names instruments only
from the symbol map, so the test map carries it). Every test asserts the exact records
(every field), the exact message text, or the exact error kind.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues import okx
from actors.venues.base import FrameError, FrameKind, Parsed, RestRequest, symbol_map
from actors.venues.okx import OkxCodec
from tests.codec_support import (
    JSON_NOT_AN_OBJECT,
    RECV_TS,
    arbitrary_frames,
    assert_every_truncation_raises,
    assert_parse_total,
    edited,
    escape_brackets,
    frame_bytes,
    json_values,
)

SYMBOLS = symbol_map(
    [
        SymbolInfo("okx", "BTC-USDT", "BTC", "USDT"),
        SymbolInfo("okx", "ETH-BTC", "ETH", "BTC"),
        # The documented bbo-tbt example's instrument; the name comes from the map.
        SymbolInfo("okx", "BCH-USDT-SWAP", "BCH", "USDT"),
    ]
)

DOCUMENTED_QUOTE = Quote(
    venue="okx",
    symbol="BCH/USDT",
    bid=111.05,
    bid_size=57745.0,
    ask=111.06,
    ask_size=55154.0,
    venue_ts=1670324386802,
    recv_ts=RECV_TS,
    seq=363996337,
)

DOCUMENTED_TRADE = Trade(
    venue="okx",
    symbol="BTC/USDT",
    price=42219.9,
    size=0.12060306,
    side=Side.BUY,
    venue_ts=1630048897897,
    recv_ts=RECV_TS,
    trade_id="130639474",
)


def frame(name: str) -> bytes:
    return frame_bytes("okx", name)


def book_with(**data_changes: object) -> bytes:
    """The bbo-tbt frame with fields of its one entry replaced (a value of ... deletes)."""
    return edited(frame("bbo_tbt.json"), ("data", 0), **data_changes)


def trade_with(**changes: object) -> bytes:
    """The trades frame with fields of its one trade replaced (... deletes)."""
    return edited(frame("trades.json"), ("data", 0), **changes)


def for_instrument(raw: bytes, native: str) -> bytes:
    """A data frame moved to another instrument (arg and, for trades, every entry)."""
    document = orjson.loads(raw)
    document["arg"]["instId"] = native
    for entry in document["data"]:
        if "instId" in entry:
            entry["instId"] = native
    return orjson.dumps(document)


@pytest.fixture
def codec() -> OkxCodec:
    return OkxCodec(SYMBOLS)


# --- data frames ------------------------------------------------------------------------


@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "str"])
def test_bbo_tbt_is_one_quote(codec: OkxCodec, as_text: bool) -> None:
    raw = frame("bbo_tbt.json")
    parsed = codec.parse(raw.decode() if as_text else raw, RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, records=(DOCUMENTED_QUOTE,))


def test_bbo_tbt_for_a_spot_instrument(codec: OkxCodec) -> None:
    (quote,) = codec.parse(for_instrument(frame("bbo_tbt.json"), "BTC-USDT"), RECV_TS).records
    assert isinstance(quote, Quote)
    assert quote.symbol == "BTC/USDT"
    assert quote.seq == 363996337


def test_prices_and_sizes_may_be_json_numbers(codec: OkxCodec) -> None:
    raw = book_with(bids=[[111.05, 57745, "0", "2"]], asks=[["111.06", 5.5154e4, 0, 2]])
    (quote,) = codec.parse(raw, RECV_TS).records
    assert quote == DOCUMENTED_QUOTE
    assert isinstance(quote, Quote)
    assert type(quote.bid_size) is float


def test_levels_with_only_price_and_size_are_accepted(codec: OkxCodec) -> None:
    raw = book_with(bids=[["111.05", "57745"]], asks=[["111.06", "55154"]])
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.DATA, records=(DOCUMENTED_QUOTE,))


def test_timestamp_may_be_a_json_integer(codec: OkxCodec) -> None:
    (quote,) = codec.parse(book_with(ts=1670324386802), RECV_TS).records
    assert quote == DOCUMENTED_QUOTE


def test_book_without_seq_id_has_seq_zero(codec: OkxCodec) -> None:
    (quote,) = codec.parse(book_with(seqId=...), RECV_TS).records
    assert isinstance(quote, Quote)
    assert quote.seq == 0
    assert quote.venue_ts == 1670324386802


def test_deeper_levels_are_ignored(codec: OkxCodec) -> None:
    raw = book_with(bids=[["111.05", "57745", "0", "2"], ["111.04", "1", "0", "1"]],
                    asks=[["111.06", "55154", "0", "2"], ["111.07", "9", "0", "1"]])
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.DATA, records=(DOCUMENTED_QUOTE,))


def test_crossed_book_in_a_call_auction_is_passed_on(codec: OkxCodec) -> None:
    raw = book_with(bids=[["111.10", "1", "0", "1"]], asks=[["111.00", "2", "0", "1"]])
    (quote,) = codec.parse(raw, RECV_TS).records
    assert isinstance(quote, Quote)
    assert (quote.bid, quote.ask) == (111.10, 111.00)


@pytest.mark.parametrize("side", ["bids", "asks"])
def test_one_sided_book_is_data_without_a_quote(codec: OkxCodec, side: str) -> None:
    parsed = codec.parse(book_with(**{side: []}), RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, detail="one-sided book")


def test_several_entries_give_several_quotes_and_skip_one_sided(codec: OkxCodec) -> None:
    document = orjson.loads(frame("bbo_tbt.json"))
    first = document["data"][0]
    document["data"] = [
        first,
        dict(first, bids=[], seqId=363996338),
        dict(first, bids=[["111.04", "3", "0", "1"]], ts="1670324386812", seqId=363996339),
    ]
    parsed = codec.parse(orjson.dumps(document), RECV_TS)
    second = Quote("okx", "BCH/USDT", 111.04, 3.0, 111.06, 55154.0, 1670324386812, RECV_TS,
                   363996339)
    assert parsed == Parsed(FrameKind.DATA, records=(DOCUMENTED_QUOTE, second),
                            detail="one-sided book")


def test_empty_book_data_is_data_without_records(codec: OkxCodec) -> None:
    raw = b'{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[]}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.DATA)


@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "str"])
def test_trades_message_is_one_trade(codec: OkxCodec, as_text: bool) -> None:
    raw = frame("trades.json")
    parsed = codec.parse(raw.decode() if as_text else raw, RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, records=(DOCUMENTED_TRADE,))


def test_trade_list_keeps_order_and_taker_sides(codec: OkxCodec) -> None:
    document = orjson.loads(frame("trades.json"))
    second = dict(document["data"][0], side="sell", tradeId="130639475", px=42219.8,
                  sz="0.5", ts=1630048897898)
    document["data"].append(second)
    trades = codec.parse(orjson.dumps(document), RECV_TS).records
    assert trades == (
        DOCUMENTED_TRADE,
        Trade("okx", "BTC/USDT", 42219.8, 0.5, Side.SELL, 1630048897898, RECV_TS, "130639475"),
    )


def test_trade_without_the_optional_fields(codec: OkxCodec) -> None:
    raw = trade_with(count=..., source=..., seqId=...)
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.DATA, records=(DOCUMENTED_TRADE,))


def test_empty_trade_list_is_data_without_records(codec: OkxCodec) -> None:
    raw = b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[]}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.DATA)


@pytest.mark.parametrize("name", ["bbo_tbt.json", "trades.json"])
def test_unmapped_instrument_is_reported_by_native_name(codec: OkxCodec, name: str) -> None:
    raw = for_instrument(frame(name), "SOL-USDT")
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.UNKNOWN_SYMBOL, detail="SOL-USDT")


def test_documented_swap_frame_is_unknown_to_a_spot_map() -> None:
    spot_only = OkxCodec({native: info for native, info in SYMBOLS.items()
                          if native != "BCH-USDT-SWAP"})
    assert spot_only.parse(frame("bbo_tbt.json"), RECV_TS) == Parsed(
        FrameKind.UNKNOWN_SYMBOL, detail="BCH-USDT-SWAP"
    )


def test_symbol_name_comes_from_the_symbol_map_not_the_inst_id() -> None:
    codec = OkxCodec(symbol_map([SymbolInfo("okx", "BTC-USDT", "XBT", "USD")]))
    (trade,) = codec.parse(frame("trades.json"), RECV_TS).records
    assert isinstance(trade, Trade)
    assert trade.symbol == "XBT/USD"


# --- control frames ---------------------------------------------------------------------


@pytest.mark.parametrize("pong", ["pong", b"pong"], ids=["str", "bytes"])
def test_pong_text(codec: OkxCodec, pong: str | bytes) -> None:
    assert codec.parse(pong, RECV_TS) == Parsed(FrameKind.PONG)


def test_documented_pong_file(codec: OkxCodec) -> None:
    assert codec.parse(frame("pong.txt"), RECV_TS) == Parsed(FrameKind.PONG)


@pytest.mark.parametrize("text", ["ping", "PONG", "pong\n", " pong", b"pong ", b"ping"])
def test_other_bare_text_is_malformed(codec: OkxCodec, text: str | bytes) -> None:
    with pytest.raises(FrameError, match="invalid JSON"):
        codec.parse(text, RECV_TS)


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("subscribe_response.json", "subscribe books BTC-USDT (id '1512')"),
        ("subscribe_response_no_id.json", "subscribe tickers BTC-USDT"),
        ("unsubscribe_response.json", "unsubscribe tickers BTC-USDT"),
    ],
)
def test_subscription_responses_are_acks(codec: OkxCodec, name: str, detail: str) -> None:
    assert codec.parse(frame(name), RECV_TS) == Parsed(FrameKind.ACK, detail=detail)


def test_ack_for_our_own_request(codec: OkxCodec) -> None:
    raw = b'{"id":"7","event":"subscribe","arg":{"channel":"bbo-tbt","instId":"ETH-BTC"},"connId":"x"}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.ACK, detail="subscribe bbo-tbt ETH-BTC (id '7')")


def test_ack_without_arg(codec: OkxCodec) -> None:
    raw = b'{"event":"unsubscribe","connId":"x"}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.ACK, detail="unsubscribe")


def test_rejected_subscription_is_an_error(codec: OkxCodec) -> None:
    detail = (
        "code '60012': 'Invalid request: {\"op\": \"subscribe\", \"argss\":[{ \"channel\" : "
        "\"books\", \"instId\" : \"BTC-USD-191227\"}]}' (id '1512')"
    )
    assert codec.parse(frame("error_response.json"), RECV_TS) == Parsed(FrameKind.ERROR, detail=detail)


def test_error_without_id_or_code(codec: OkxCodec) -> None:
    assert codec.parse(b'{"event":"error","msg":"Wrong URL"}', RECV_TS) == Parsed(
        FrameKind.ERROR, detail="code '': 'Wrong URL'"
    )


def test_error_code_may_be_a_number(codec: OkxCodec) -> None:
    raw = b'{"event":"error","code":60018,"msg":"Wrong URL or channel doesn\'t exist"}'
    assert codec.parse(raw, RECV_TS) == Parsed(
        FrameKind.ERROR, detail="code '60018': \"Wrong URL or channel doesn't exist\""
    )


def test_upgrade_notice_asks_for_a_fresh_connection(codec: OkxCodec) -> None:
    detail = ("code '64008': 'The connection will soon be closed for a service upgrade. "
              "Please reconnect.'")
    assert codec.parse(frame("notice.json"), RECV_TS) == Parsed(FrameKind.NOTICE, detail=detail)


def test_connection_count_is_info(codec: OkxCodec) -> None:
    assert codec.parse(frame("channel_conn_count.json"), RECV_TS) == Parsed(
        FrameKind.INFO, detail="orders: 2 connections"
    )


def test_connection_count_error_is_an_error(codec: OkxCodec) -> None:
    assert codec.parse(frame("channel_conn_count_error.json"), RECV_TS) == Parsed(
        FrameKind.ERROR, detail="orders: connection count 20 over the limit, subscription terminated"
    )


def test_login_response_is_info(codec: OkxCodec) -> None:
    assert codec.parse(frame("login_response.json"), RECV_TS) == Parsed(
        FrameKind.INFO, detail="login: code '0': ''"
    )


# --- malformed frames -------------------------------------------------------------------

MALFORMED = {
    "empty": b"",
    "empty_text": "",
    "not_json": b"hello",
    "invalid_utf8": b"\xff\xfe{}",
    "utf16": '{"event":"notice"}'.encode("utf-16"),
    "latin1_in_json": b'{"event":"error","msg":"\xe9"}',
    **JSON_NOT_AN_OBJECT,
    "string": b'"pong"',
    "empty_object": b"{}",
    "unknown_shape": b'{"foo":1}',
    "event_not_string": b'{"event":1}',
    "event_null": b'{"event":null}',
    "unknown_event": b'{"event":"snapshot"}',
    "ack_arg_not_object": b'{"event":"subscribe","arg":"bbo-tbt"}',
    "ack_channel_missing": b'{"event":"subscribe","arg":{"instId":"BTC-USDT"}}',
    "ack_inst_id_not_text": b'{"event":"subscribe","arg":{"channel":"bbo-tbt","instId":[1]}}',
    "error_code_bool": b'{"event":"error","code":true,"msg":""}',
    "error_msg_object": b'{"event":"error","code":"1","msg":{}}',
    "error_id_float": b'{"event":"error","code":"1","msg":"","id":1.5}',
    "notice_code_list": b'{"event":"notice","code":["64008"]}',
    "conn_count_channel_missing": b'{"event":"channel-conn-count","connCount":"2"}',
    "arg_not_object": b'{"arg":[],"data":[]}',
    "arg_channel_missing": b'{"arg":{"instId":"BTC-USDT"},"data":[]}',
    "arg_channel_not_string": b'{"arg":{"channel":7,"instId":"BTC-USDT"},"data":[]}',
    "unknown_channel": b'{"arg":{"channel":"books5","instId":"BTC-USDT"},"data":[]}',
    "tickers_channel": b'{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[]}',
    "inst_id_missing": b'{"arg":{"channel":"bbo-tbt"},"data":[]}',
    "inst_id_empty": b'{"arg":{"channel":"bbo-tbt","instId":""},"data":[]}',
    "inst_id_number": b'{"arg":{"channel":"trades","instId":1},"data":[]}',
    "book_data_missing": b'{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"}}',
    "book_data_object": b'{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":{}}',
    "book_entry_not_object": b'{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":[[]]}',
    "trade_data_object": b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":{}}',
    "trade_entry_not_object": b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[1]}',
    "trailing_garbage": frame("subscribe_response.json").strip() + b"]",
    "two_objects": b'{"event":"notice"}{"event":"notice"}',
    "deeply_nested": b"[" * 2000 + b"]" * 2000,
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_raise_frame_error(codec: OkxCodec, raw: str | bytes) -> None:
    with pytest.raises(FrameError):
        codec.parse(raw, RECV_TS)


@pytest.mark.parametrize("name", ["bbo_tbt.json", "trades.json", "error_response.json",
                                  "notice.json"])
def test_every_truncation_of_a_frame_raises_frame_error(codec: OkxCodec, name: str) -> None:
    raw = frame(name).strip()
    assert_every_truncation_raises(lambda data: codec.parse(data, RECV_TS), raw, as_text=True)


@pytest.mark.parametrize("field", ["asks", "bids", "ts"])
def test_book_missing_field_is_named(codec: OkxCodec, field: str) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(book_with(**{field: ...}), RECV_TS)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"bids": "111.05"}, "'bids'"),
        ({"bids": None}, "'bids'"),
        ({"bids": [["111.05"]]}, "'bids[0]'"),
        ({"bids": ["111.05", "57745"]}, "'bids[0]'"),
        ({"bids": [{"px": "111.05"}]}, "'bids[0]'"),
        ({"bids": [[None, "57745", "0", "2"]]}, "'bids[0][0]'"),
        ({"bids": [[True, "57745", "0", "2"]]}, "'bids[0][0]'"),
        ({"bids": [["111.05", "57_745", "0", "2"]]}, "'bids[0][1]'"),
        ({"asks": [["111.06", "NaN", "0", "2"]]}, "'asks[0][1]'"),
        ({"asks": [["nan", "1", "0", "2"]]}, "'asks[0][0]'"),
        ({"asks": [["Infinity", "1", "0", "2"]]}, "'asks[0][0]'"),
        ({"asks": [["1e999", "1", "0", "2"]]}, "'asks[0][0]'"),
        ({"asks": [["111,06", "1", "0", "2"]]}, "'asks[0][0]'"),
        ({"asks": [[" 111.06", "1", "0", "2"]]}, "'asks[0][0]'"),
        ({"asks": [["", "1", "0", "2"]]}, "'asks[0][0]'"),
        ({"asks": [["\u0661\u0661\u0661", "1", "0", "2"]]}, "'asks[0][0]'"),
        ({"asks": [["111.06", ["1"], "0", "2"]]}, "'asks[0][1]'"),
        ({"ts": "1670324386802.5"}, "'ts'"),
        ({"ts": "-1670324386802"}, "'ts'"),
        ({"ts": ""}, "'ts'"),
        ({"ts": 1670324386802.0}, "'ts'"),
        ({"ts": -1}, "'ts'"),
        ({"ts": True}, "'ts'"),
        ({"ts": "\u0661\u0666\u0667\u0660"}, "'ts'"),
        ({"ts": "9" * 20}, "'ts'"),
        ({"seqId": "363996337"}, "'seqId'"),
        ({"seqId": 3.5}, "'seqId'"),
        ({"seqId": None}, "'seqId'"),
        ({"seqId": False}, "'seqId'"),
    ],
)
def test_book_wrong_value_is_named(
    codec: OkxCodec, changes: dict[str, object], named: str
) -> None:
    with pytest.raises(FrameError, match=escape_brackets(named)):
        codec.parse(book_with(**changes), RECV_TS)


@pytest.mark.parametrize("field", ["instId", "tradeId", "px", "sz", "side", "ts"])
def test_trade_missing_field_is_named(codec: OkxCodec, field: str) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(trade_with(**{field: ...}), RECV_TS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("side", "Buy"),
        ("side", "bid"),
        ("side", 1),
        ("side", None),
        ("px", "nan"),
        ("px", ""),
        ("px", "4.2e"),
        ("px", False),
        ("sz", None),
        ("sz", "inf"),
        ("ts", "1630048897897ms"),
        ("ts", None),
        ("tradeId", 130639474),
        ("tradeId", ""),
        ("instId", "ETH-BTC"),
        ("instId", None),
    ],
)
def test_trade_wrong_value_is_named(codec: OkxCodec, field: str, value: object) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(trade_with(**{field: value}), RECV_TS)


def test_frame_error_is_the_only_error_for_hostile_nesting(codec: OkxCodec) -> None:
    deep = b'{"arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"data":' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(FrameError):
        codec.parse(deep, RECV_TS)


_JSON_KEYS = ["arg", "data", "channel", "instId", "asks", "bids", "ts", "seqId", "tradeId", "px",
              "sz", "side", "count", "source", "event", "code", "msg", "id", "connId", "connCount"]
_JSON_VALUES = json_values(
    _JSON_KEYS,
    ["bbo-tbt", "trades", "BTC-USDT", "SOL-USDT", "buy", "sell", "subscribe",
     "unsubscribe", "error", "notice", "login", "channel-conn-count",
     "channel-conn-count-error", "ping", "pong", "111.05", "1670324386802", "NaN", ""],
    max_list=4,
    max_leaves=16,
)
_FRAMES = arbitrary_frames(_JSON_KEYS, _JSON_VALUES, bare_texts=[b"pong", "pong", b"ping", "ping"])


@settings(max_examples=500, database=None)
@given(raw=_FRAMES, as_text=st.booleans())
def test_parse_returns_parsed_or_raises_frame_error(raw: str | bytes, as_text: bool) -> None:
    parsed = assert_parse_total(OkxCodec(SYMBOLS), raw, as_text=as_text)
    if parsed is not None:
        assert isinstance(parsed.kind, FrameKind)


@settings(max_examples=200, database=None)
@given(index=st.integers(min_value=0), byte=st.integers(min_value=0, max_value=255))
def test_a_corrupted_byte_gives_parsed_or_frame_error(index: int, byte: int) -> None:
    raw = bytearray(frame("bbo_tbt.json"))
    raw[index % len(raw)] = byte
    try:
        parsed = OkxCodec(SYMBOLS).parse(bytes(raw), RECV_TS)
    except FrameError:
        return
    assert isinstance(parsed, Parsed)


# --- outgoing messages ------------------------------------------------------------------


def test_connection_settings(codec: OkxCodec) -> None:
    assert codec.name == "okx" == okx.VENUE
    assert codec.max_streams_per_connection == 300
    assert codec.max_messages_per_second == 2.0
    assert codec.ping_interval == 20.0
    assert codec.max_connection_age_s is None
    assert codec.ws_path(["BTC-USDT"]) == ""
    assert okx.CONNECT_INTERVAL_S == 0.5
    assert 1 / okx.CONNECT_INTERVAL_S < 3  # OKX: 3 connection requests a second per IP
    assert okx.MAX_CONNECTIONS == 20


def test_ping_is_the_bare_text_and_takes_no_id(codec: OkxCodec) -> None:
    assert codec.ping_message(1_700_000_000_000) == "ping"
    assert codec.subscribe_messages(["BTC-USDT"], trades=False) == [
        '{"id":"1","op":"subscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"}]}'
    ]


def test_subscribe_and_unsubscribe_text_is_exact_and_ids_count_up(codec: OkxCodec) -> None:
    assert codec.subscribe_messages(["BTC-USDT", "ETH-BTC"], trades=False) == [
        '{"id":"1","op":"subscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"},'
        '{"channel":"bbo-tbt","instId":"ETH-BTC"}]}'
    ]
    assert codec.subscribe_messages(["BTC-USDT"], trades=True) == [
        '{"id":"2","op":"subscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"},'
        '{"channel":"trades","instId":"BTC-USDT"}]}'
    ]
    assert codec.unsubscribe_messages(["BTC-USDT"], trades=True, now_ms=5) == [
        '{"id":"3","op":"unsubscribe","args":[{"channel":"bbo-tbt","instId":"BTC-USDT"},'
        '{"channel":"trades","instId":"BTC-USDT"}]}'
    ]


def test_two_codecs_count_ids_independently() -> None:
    first, second = OkxCodec(SYMBOLS), OkxCodec(SYMBOLS)
    assert first.subscribe_messages(["BTC-USDT"], trades=False) == second.subscribe_messages(
        ["BTC-USDT"], trades=False
    )


def test_subscribe_has_the_documented_request_shape(codec: OkxCodec) -> None:
    documented = orjson.loads(frame("subscribe_request.json"))
    (message,) = codec.subscribe_messages(["BTC-USDT"], trades=False)
    ours = orjson.loads(message)
    assert ours.keys() == documented.keys()
    assert ours["op"] == documented["op"]
    assert [arg.keys() for arg in ours["args"]] == [arg.keys() for arg in documented["args"]]
    assert ours["id"].isalnum() and len(ours["id"]) <= 32


@pytest.mark.parametrize(
    ("count", "trades", "sizes"),
    [
        (0, False, []),
        (1, True, [2]),
        (20, False, [20]),
        (21, False, [20, 1]),
        (45, False, [20, 20, 5]),
        (10, True, [20]),
        (11, True, [20, 2]),
        (150, True, [20] * 15),
        (300, False, [20] * 15),
    ],
)
def test_subscribe_never_sends_more_than_twenty_args(
    codec: OkxCodec, count: int, trades: bool, sizes: list[int]
) -> None:
    natives = [f"SYM{index}-USDT" for index in range(count)]
    messages = [orjson.loads(text) for text in codec.subscribe_messages(natives, trades=trades)]
    assert [len(message["args"]) for message in messages] == sizes
    assert [message["id"] for message in messages] == [str(n) for n in range(1, len(sizes) + 1)]
    assert all(message["op"] == "subscribe" for message in messages)


def test_unsubscribe_is_chunked_like_subscribe(codec: OkxCodec) -> None:
    natives = [f"SYM{index}-USDT" for index in range(25)]
    messages = [orjson.loads(text) for text in codec.unsubscribe_messages(natives, trades=True)]
    assert [len(message["args"]) for message in messages] == [20, 20, 10]
    assert {message["op"] for message in messages} == {"unsubscribe"}


@settings(database=None)
@given(count=st.integers(min_value=0, max_value=150), trades=st.booleans())
def test_subscribe_chunks_cover_every_stream_once(count: int, trades: bool) -> None:
    codec = OkxCodec(SYMBOLS)
    natives = [f"S{index}-USDT" for index in range(count)]
    messages = [orjson.loads(text) for text in codec.subscribe_messages(natives, trades=trades)]
    assert all(1 <= len(message["args"]) <= okx.ARGS_PER_REQUEST for message in messages)
    streams = [(arg["channel"], arg["instId"]) for message in messages for arg in message["args"]]
    expected = [("bbo-tbt", native) for native in natives]
    if trades:
        expected += [("trades", native) for native in natives]
    assert sorted(streams) == sorted(expected)
    assert len(streams) == len(expected)


def test_a_full_connection_stays_inside_the_hourly_request_budget(codec: OkxCodec) -> None:
    natives = [f"S{index}-USDT" for index in range(150)]
    subscribes = codec.subscribe_messages(natives, trades=True)
    unsubscribes = codec.unsubscribe_messages(natives, trades=True)
    assert len(subscribes) + len(unsubscribes) <= 480 // 10
    args_bytes = sum(len(orjson.dumps(arg)) for text in subscribes for arg in orjson.loads(text)["args"])
    assert args_bytes * 4 < okx.ARGS_BYTES_PER_CONNECTION


def test_subscribe_beyond_the_connection_cap_is_refused(codec: OkxCodec) -> None:
    with pytest.raises(ValueError, match="302 streams"):
        codec.subscribe_messages([f"S{index}-USDT" for index in range(151)], trades=True)
    with pytest.raises(ValueError, match="301 streams"):
        codec.unsubscribe_messages([f"S{index}-USDT" for index in range(301)], trades=False)
    (message,) = codec.subscribe_messages(["BTC-USDT"], trades=False)
    assert orjson.loads(message)["id"] == "1"  # a refused request takes no id


def test_subscribe_beyond_the_documented_64_kb_of_args_is_refused(codec: OkxCodec) -> None:
    natives = [f"{index:03d}-" + "X" * 300 for index in range(200)]
    with pytest.raises(ValueError, match="bytes of args exceed OKX's 65536"):
        codec.subscribe_messages(natives, trades=False)


# --- discovery --------------------------------------------------------------------------


def test_discovery_requests() -> None:
    assert okx.discovery_requests() == (
        RestRequest("/api/v5/public/instruments", {"instType": "SPOT"}),
        RestRequest("/api/v5/market/tickers", {"instType": "SPOT"}),
    )


def test_parse_instruments_keeps_live_spot_instruments() -> None:
    # LUNA-USDT is suspended; NEW-USDT is announced (preopen) with empty fields.
    assert okx.parse_instruments(frame("instruments_spot.json"), {}) == [
        SymbolInfo("okx", "BTC-USDT", "BTC", "USDT"),
        SymbolInfo("okx", "ETH-BTC", "ETH", "BTC"),
    ]


def test_parse_instruments_skips_other_instrument_types() -> None:
    body = orjson.dumps({"code": "0", "msg": "", "data": [
        {"instId": "BTC-USDT-SWAP", "instType": "SWAP", "state": "live", "baseCcy": "",
         "quoteCcy": ""},
        {"instId": "BTC-USDT", "instType": "SPOT", "state": "live", "baseCcy": "BTC",
         "quoteCcy": "USDT"},
    ]})
    assert okx.parse_instruments(body, {}) == [SymbolInfo("okx", "BTC-USDT", "BTC", "USDT")]


def test_parse_instruments_applies_aliases_and_upper_case() -> None:
    body = orjson.dumps({"code": "0", "msg": "", "data": [
        {"instId": "XBT-USDT", "instType": "SPOT", "state": "live", "baseCcy": "xbt",
         "quoteCcy": "USDT"},
        {"instId": "ETH-XBT", "instType": "SPOT", "state": "live", "baseCcy": "ETH",
         "quoteCcy": "XBT"},
    ]})
    assert okx.parse_instruments(body, {"XBT": "btc"}) == [
        SymbolInfo("okx", "XBT-USDT", "BTC", "USDT"),
        SymbolInfo("okx", "ETH-XBT", "ETH", "BTC"),
    ]


def test_parse_volumes_reads_the_quote_currency_volume() -> None:
    assert okx.parse_volumes(frame("tickers_spot.json")) == {
        "BTC-USDT": 381243532.98281405,
        "ETH-BTC": 412.0613,
    }


def test_parse_volumes_accepts_numbers() -> None:
    body = b'{"code":0,"msg":"","data":[{"instId":"BTC-USDT","volCcy24h":12.5}]}'
    assert okx.parse_volumes(body) == {"BTC-USDT": 12.5}


def test_rest_error_names_the_code() -> None:
    with pytest.raises(FrameError, match="instruments failed: code 51000: 'Parameter instType error'"):
        okx.parse_instruments(frame("rest_error.json"), {})
    with pytest.raises(FrameError, match="tickers failed: code 51000"):
        okx.parse_volumes(frame("rest_error.json"))


@pytest.mark.parametrize(
    "body",
    [
        b"<html>403 Forbidden</html>",
        b"",
        b"[]",
        b'{"data":[]}',
        b'{"code":null,"data":[]}',
        b'{"code":false,"data":[]}',
        b'{"code":"0"}',
        b'{"code":"0","data":{}}',
        b'{"code":"0","data":[1]}',
        b'{"code":"0","data":[{"instId":"BTC-USDT","instType":"SPOT","state":"live","baseCcy":"BTC"}]}',
        b'{"code":"0","data":[{"instId":"BTC-USDT","instType":"SPOT","state":"live","baseCcy":"","quoteCcy":"USDT"}]}',
        b'{"code":"0","data":[{"instId":"","instType":"SPOT","state":"live","baseCcy":"BTC","quoteCcy":"USDT"}]}',
        b'{"code":"0","data":[{"instId":"BTC-USDT","instType":"SPOT","baseCcy":"BTC","quoteCcy":"USDT"}]}',
        b'{"code":"0","data":[{"instId":"BTC-USDT","state":"live","baseCcy":"BTC","quoteCcy":"USDT"}]}',
        b'{"code":"0","data":[{"instId":"BTC-USDT","instType":"SPOT","state":1,"baseCcy":"BTC","quoteCcy":"USDT"}]}',
        frame("instruments_spot.json")[:-30],
    ],
)
def test_parse_instruments_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        okx.parse_instruments(body, {})


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"code":"0","data":[{"instId":"BTC-USDT"}]}',
        b'{"code":"0","data":[{"instId":"BTC-USDT","volCcy24h":"inf"}]}',
        b'{"code":"0","data":[{"instId":"BTC-USDT","volCcy24h":"NaN"}]}',
        b'{"code":"0","data":[{"instId":"BTC-USDT","volCcy24h":""}]}',
        b'{"code":"0","data":[{"instId":"BTC-USDT","volCcy24h":null}]}',
        b'{"code":"0","data":[{"instId":null,"volCcy24h":"1"}]}',
        b'{"code":"50011","msg":"Too Many Requests","data":[]}',
        frame("tickers_spot.json")[:-10],
    ],
)
def test_parse_volumes_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        okx.parse_volumes(body)


@settings(max_examples=200, database=None)
@given(body=st.binary(max_size=200) | _JSON_VALUES.map(orjson.dumps)
       | st.dictionaries(st.sampled_from(["code", "msg", "data"]), _JSON_VALUES).map(orjson.dumps))
def test_discovery_returns_or_raises_frame_error(body: bytes) -> None:
    for parse in (lambda raw: okx.parse_instruments(raw, {}), okx.parse_volumes):
        try:
            parse(body)
        except FrameError:
            pass
