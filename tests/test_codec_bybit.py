"""BybitCodec and Bybit discovery, fed the frames Bybit documents.

Frames live in tests/data/frames/bybit/ as the venue documents them (level 1 books have
the documented orderbook shape with one level a side); every test asserts the exact
records (every field), the exact message text, or the exact error kind.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues import bybit
from actors.venues.base import FrameError, FrameKind, Parsed, RestRequest, symbol_map
from actors.venues.bybit import BybitCodec
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
        SymbolInfo("bybit", "BTCUSDT", "BTC", "USDT"),
        SymbolInfo("bybit", "ETHBTC", "ETH", "BTC"),
        # The name comes from the metadata, not from the native string.
        SymbolInfo("bybit", "BTCAUCTIONUSDT", "BTCAUCTION", "USDT"),
    ]
)

SNAPSHOT_QUOTE = Quote(
    venue="bybit",
    symbol="BTC/USDT",
    bid=16493.5,
    bid_size=0.006,
    ask=16611.0,
    ask_size=0.029,
    venue_ts=1672304484978,
    recv_ts=RECV_TS,
    seq=18521288,
)


def frame(name: str) -> bytes:
    return frame_bytes("bybit", name)


def book_with(**data_changes: object) -> bytes:
    """The level 1 snapshot with ``data`` fields replaced (a value of ... deletes the field)."""
    return edited(frame("orderbook_1_snapshot.json"), ("data",), **data_changes)


def trade_with(**changes: object) -> bytes:
    """The public trade frame with fields of its one trade replaced (... deletes)."""
    return edited(frame("public_trade.json"), ("data", 0), **changes)


@pytest.fixture
def codec() -> BybitCodec:
    return BybitCodec(SYMBOLS)


# --- data frames ------------------------------------------------------------------------


@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "str"])
def test_level1_snapshot_is_one_quote(codec: BybitCodec, as_text: bool) -> None:
    raw = frame("orderbook_1_snapshot.json")
    parsed = codec.parse(raw.decode() if as_text else raw, RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, records=(SNAPSHOT_QUOTE,))


def test_level1_delta_is_a_quote_too(codec: BybitCodec) -> None:
    document = orjson.loads(frame("orderbook_1_snapshot.json"))
    document["type"] = "delta"
    parsed = codec.parse(orjson.dumps(document), RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, records=(SNAPSHOT_QUOTE,))


def test_one_sided_book_is_data_without_a_quote(codec: BybitCodec) -> None:
    parsed = codec.parse(frame("orderbook_1_one_sided.json"), RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, detail="one-sided book")


def test_book_with_no_ask_is_one_sided_too(codec: BybitCodec) -> None:
    parsed = codec.parse(book_with(a=[]), RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, detail="one-sided book")


def test_prices_and_sizes_may_be_json_numbers(codec: BybitCodec) -> None:
    (quote,) = codec.parse(book_with(b=[[16493.5, 6e-3]], a=[[16611, "0.029"]]), RECV_TS).records
    assert quote == SNAPSHOT_QUOTE
    assert isinstance(quote, Quote)
    assert type(quote.ask) is float


def test_symbol_name_comes_from_the_symbol_map(codec: BybitCodec) -> None:
    document = orjson.loads(frame("orderbook_1_snapshot.json"))
    document["topic"] = "orderbook.1.BTCAUCTIONUSDT"
    document["data"]["s"] = "BTCAUCTIONUSDT"
    (quote,) = codec.parse(orjson.dumps(document), RECV_TS).records
    assert isinstance(quote, Quote)
    assert quote.symbol == "BTCAUCTION/USDT"


def test_public_trade_is_one_trade(codec: BybitCodec) -> None:
    parsed = codec.parse(frame("public_trade.json"), RECV_TS)
    expected = Trade(
        venue="bybit",
        symbol="BTC/USDT",
        price=16578.5,
        size=0.001,
        side=Side.BUY,
        venue_ts=1672304486865,
        recv_ts=RECV_TS,
        trade_id="20f43950-d8dd-5b31-9112-a178eb6023af",
    )
    assert parsed == Parsed(FrameKind.DATA, records=(expected,))


def test_public_trade_list_keeps_order_and_sides(codec: BybitCodec) -> None:
    document = orjson.loads(frame("public_trade.json"))
    second = dict(document["data"][0], S="Sell", i="2", p="16578.00", v="0.5", T=1672304486866)
    document["data"].append(second)
    trades = codec.parse(orjson.dumps(document), RECV_TS).records
    assert [(t.side, t.trade_id) for t in trades if isinstance(t, Trade)] == [
        (Side.BUY, "20f43950-d8dd-5b31-9112-a178eb6023af"),
        (Side.SELL, "2"),
    ]
    assert trades[1] == Trade(
        "bybit", "BTC/USDT", 16578.0, 0.5, Side.SELL, 1672304486866, RECV_TS, "2"
    )


def test_empty_trade_list_is_data_without_records(codec: BybitCodec) -> None:
    raw = b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[]}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.DATA)


def test_unmapped_symbol_in_book_is_reported_by_native_name(codec: BybitCodec) -> None:
    assert codec.parse(book_with(s="SOLUSDT"), RECV_TS) == Parsed(
        FrameKind.UNKNOWN_SYMBOL, detail="SOLUSDT"
    )


def test_unmapped_symbol_in_trades_is_reported_by_native_name(codec: BybitCodec) -> None:
    assert codec.parse(trade_with(s="SOLUSDT"), RECV_TS) == Parsed(
        FrameKind.UNKNOWN_SYMBOL, detail="SOLUSDT"
    )


# --- control frames ---------------------------------------------------------------------


def test_subscribe_response_is_an_ack_with_the_req_id(codec: BybitCodec) -> None:
    assert codec.parse(frame("subscribe_response.json"), RECV_TS) == Parsed(
        FrameKind.ACK, detail="10001"
    )


def test_unsubscribe_response_is_an_ack(codec: BybitCodec) -> None:
    raw = b'{"success":true,"ret_msg":"unsubscribe","req_id":"unsub","op":"unsubscribe"}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.ACK, detail="unsub")


def test_ack_without_req_id(codec: BybitCodec) -> None:
    raw = b'{"success":true,"ret_msg":"subscribe","conn_id":"x","op":"subscribe"}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.ACK, detail="")


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("subscribe_error_args.json", "subscribe failed: 'args size >10' (req_id 'many')"),
        (
            "subscribe_error_symbol.json",
            "subscribe failed: 'Invalid symbol :[orderbook.1.NOPEUSDT]' (req_id '3')",
        ),
    ],
)
def test_rejected_subscription_is_an_error(codec: BybitCodec, name: str, detail: str) -> None:
    assert codec.parse(frame(name), RECV_TS) == Parsed(FrameKind.ERROR, detail=detail)


def test_public_pong(codec: BybitCodec) -> None:
    assert codec.parse(frame("pong_public.json"), RECV_TS) == Parsed(FrameKind.PONG, detail="")


def test_private_style_pong(codec: BybitCodec) -> None:
    assert codec.parse(frame("pong_private.json"), RECV_TS) == Parsed(
        FrameKind.PONG, detail="test"
    )


def test_pong_echoing_our_req_id(codec: BybitCodec) -> None:
    raw = b'{"success":true,"ret_msg":"pong","conn_id":"c","req_id":"7","op":"ping"}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.PONG, detail="7")


# --- malformed frames -------------------------------------------------------------------

MALFORMED = {
    "empty": b"",
    "not_json": b"pong",
    "invalid_utf8": b"\xff\xfe{}",
    **JSON_NOT_AN_OBJECT,
    "empty_object": b"{}",
    "unknown_shape": b'{"foo":1}',
    "unknown_topic": b'{"topic":"tickers.BTCUSDT","type":"snapshot","ts":1,"data":{}}',
    "deeper_book": b'{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1,"data":{}}',
    "topic_not_string": b'{"topic":1}',
    "op_not_string": b'{"op":null,"success":true}',
    "unknown_op": b'{"success":true,"ret_msg":"","op":"auth"}',
    "success_missing": b'{"ret_msg":"subscribe","op":"subscribe"}',
    "success_not_bool": b'{"success":"true","op":"subscribe"}',
    "book_data_not_object": b'{"topic":"orderbook.1.BTCUSDT","ts":1,"data":[]}',
    "book_data_missing": b'{"topic":"orderbook.1.BTCUSDT","ts":1}',
    "trade_data_not_list": b'{"topic":"publicTrade.BTCUSDT","ts":1,"data":{}}',
    "trade_item_not_object": b'{"topic":"publicTrade.BTCUSDT","ts":1,"data":[1]}',
    "trailing_garbage": frame("subscribe_response.json").strip() + b"]",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_raise_frame_error(codec: BybitCodec, raw: bytes) -> None:
    with pytest.raises(FrameError):
        codec.parse(raw, RECV_TS)


def test_every_truncation_of_a_frame_raises_frame_error(codec: BybitCodec) -> None:
    raw = frame("orderbook_1_snapshot.json").strip()
    assert_every_truncation_raises(lambda data: codec.parse(data, RECV_TS), raw, as_text=True)


@pytest.mark.parametrize("field", ["s", "b", "a", "u"])
def test_book_missing_field_is_named(codec: BybitCodec, field: str) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(book_with(**{field: ...}), RECV_TS)


def test_book_missing_ts_is_named(codec: BybitCodec) -> None:
    document = orjson.loads(frame("orderbook_1_snapshot.json"))
    del document["ts"]
    with pytest.raises(FrameError, match="'ts'"):
        codec.parse(orjson.dumps(document), RECV_TS)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"b": "16493.50"}, "'b'"),
        ({"b": [["16493.50"]]}, "'b[0]'"),
        ({"b": ["16493.50", "0.006"]}, "'b[0]'"),
        ({"b": [[None, "0.006"]]}, "'b[0][0]'"),
        ({"b": [[True, "0.006"]]}, "'b[0][0]'"),
        ({"a": [["16611.00", "NaN"]]}, "'a[0][1]'"),
        ({"a": [["Infinity", "1"]]}, "'a[0][0]'"),
        ({"a": [["16,611.00", "1"]]}, "'a[0][0]'"),
        ({"u": "18521288"}, "'u'"),
        ({"u": False}, "'u'"),
        ({"s": ["BTCUSDT"]}, "'s'"),
    ],
)
def test_book_wrong_type_is_named(
    codec: BybitCodec, changes: dict[str, object], named: str
) -> None:
    with pytest.raises(FrameError, match=escape_brackets(named)):
        codec.parse(book_with(**changes), RECV_TS)


@pytest.mark.parametrize("field", ["s", "S", "p", "v", "T", "i"])
def test_trade_missing_field_is_named(codec: BybitCodec, field: str) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(trade_with(**{field: ...}), RECV_TS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("S", "buy"),
        ("S", "Bid"),
        ("S", 1),
        ("p", "nan"),
        ("p", ""),
        ("v", None),
        ("T", "1672304486865"),
        ("i", 123),
    ],
)
def test_trade_wrong_value_is_named(codec: BybitCodec, field: str, value: object) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(trade_with(**{field: value}), RECV_TS)


_JSON_KEYS = ["topic", "type", "ts", "data", "cts", "s", "b", "a", "u", "seq", "T", "S", "v", "p",
              "i", "op", "success", "ret_msg", "req_id", "conn_id", "args"]
_JSON_VALUES = json_values(
    _JSON_KEYS,
    ["orderbook.1.BTCUSDT", "publicTrade.BTCUSDT", "BTCUSDT", "Buy", "Sell", "subscribe",
     "ping", "pong", "16493.50", "NaN", ""],
)
_FRAMES = arbitrary_frames(_JSON_KEYS, _JSON_VALUES)


@settings(max_examples=500, database=None)
@given(raw=_FRAMES, as_text=st.booleans())
def test_parse_returns_parsed_or_raises_frame_error(raw: str | bytes, as_text: bool) -> None:
    assert_parse_total(BybitCodec(SYMBOLS), raw, as_text=as_text)


# --- outgoing messages ------------------------------------------------------------------


def test_connection_settings(codec: BybitCodec) -> None:
    assert codec.name == "bybit"
    assert codec.max_streams_per_connection == 200
    assert 0 < codec.max_messages_per_second <= 5
    assert codec.ping_interval == 20.0
    assert codec.ws_path(["BTCUSDT"]) == ""


def test_subscribe_and_ping_text_is_exact_and_req_ids_count_up(codec: BybitCodec) -> None:
    assert codec.subscribe_messages(["BTCUSDT", "ETHBTC"], trades=False) == [
        '{"req_id":"1","op":"subscribe","args":["orderbook.1.BTCUSDT","orderbook.1.ETHBTC"]}'
    ]
    assert codec.ping_message(1_700_000_000_000) == '{"req_id":"2","op":"ping"}'
    assert codec.subscribe_messages(["BTCUSDT"], trades=True) == [
        '{"req_id":"3","op":"subscribe","args":["orderbook.1.BTCUSDT","publicTrade.BTCUSDT"]}'
    ]


def test_subscribe_has_the_documented_request_shape(codec: BybitCodec) -> None:
    documented = orjson.loads(frame("subscribe_request.json"))
    (message,) = codec.subscribe_messages(["BTCUSDT", "ETHUSDT"], trades=False)
    ours = orjson.loads(message)
    assert ours.keys() == documented.keys()
    assert ours["op"] == documented["op"]
    assert set(ours["args"]) <= set(documented["args"])


@pytest.mark.parametrize(
    ("count", "trades", "sizes"),
    [
        (0, False, []),
        (1, True, [2]),
        (10, False, [10]),
        (11, False, [10, 1]),
        (23, False, [10, 10, 3]),
        (25, True, [10, 10, 10, 10, 10]),
        (100, True, [10] * 20),
    ],
)
def test_subscribe_never_sends_more_than_ten_args(
    codec: BybitCodec, count: int, trades: bool, sizes: list[int]
) -> None:
    natives = [f"SYM{index}USDT" for index in range(count)]
    messages = [orjson.loads(text) for text in codec.subscribe_messages(natives, trades=trades)]
    assert [len(message["args"]) for message in messages] == sizes
    assert [message["req_id"] for message in messages] == [str(n) for n in range(1, len(sizes) + 1)]


@settings(database=None)
@given(count=st.integers(min_value=0, max_value=100), trades=st.booleans())
def test_subscribe_chunks_cover_every_topic_once(count: int, trades: bool) -> None:
    codec = BybitCodec(SYMBOLS)
    natives = [f"S{index}USDT" for index in range(count)]
    messages = [orjson.loads(text) for text in codec.subscribe_messages(natives, trades=trades)]
    assert all(1 <= len(message["args"]) <= bybit.ARGS_PER_SUBSCRIBE for message in messages)
    topics = [topic for message in messages for topic in message["args"]]
    expected = [f"orderbook.1.{native}" for native in natives]
    if trades:
        expected += [f"publicTrade.{native}" for native in natives]
    assert sorted(topics) == sorted(expected)
    assert len(topics) == len(expected)


def test_subscribe_beyond_the_connection_cap_is_refused(codec: BybitCodec) -> None:
    with pytest.raises(ValueError, match="202 topics"):
        codec.subscribe_messages([f"S{index}" for index in range(101)], trades=True)


# --- discovery --------------------------------------------------------------------------


def test_discovery_requests() -> None:
    assert bybit.discovery_requests() == (
        RestRequest("/v5/market/instruments-info", {"category": "spot"}),
        RestRequest("/v5/market/tickers", {"category": "spot"}),
    )


def test_parse_instruments_keeps_trading_symbols() -> None:
    assert bybit.parse_instruments(frame("instruments_info_spot.json"), {}) == [
        SymbolInfo("bybit", "BTCUSDT", "BTC", "USDT"),
        SymbolInfo("bybit", "ETHBTC", "ETH", "BTC"),
    ]


def test_parse_instruments_applies_aliases_and_upper_case() -> None:
    body = orjson.dumps(
        {
            "retCode": 0,
            "retMsg": "OK",
            "result": {
                "category": "spot",
                "list": [
                    {"symbol": "XBTUSDT", "status": "Trading", "baseCoin": "xbt",
                     "quoteCoin": "USDT"},
                    {"symbol": "ETHXBT", "status": "Trading", "baseCoin": "ETH",
                     "quoteCoin": "XBT"},
                ],
            },
        }
    )
    assert bybit.parse_instruments(body, {"XBT": "btc"}) == [
        SymbolInfo("bybit", "XBTUSDT", "BTC", "USDT"),
        SymbolInfo("bybit", "ETHXBT", "ETH", "BTC"),
    ]


def test_parse_volumes_reads_turnover() -> None:
    assert bybit.parse_volumes(frame("tickers_spot.json")) == {
        "BTCUSDT": 243765620.65899866,
        "ETHBTC": 28.5106,
    }


def test_rest_error_names_the_ret_code() -> None:
    with pytest.raises(FrameError, match="retCode 10001: 'Illegal category'"):
        bybit.parse_instruments(frame("rest_error.json"), {})
    with pytest.raises(FrameError, match="retCode 10001"):
        bybit.parse_volumes(frame("rest_error.json"))


@pytest.mark.parametrize(
    "body",
    [
        b"<html>403 Forbidden</html>",
        b"[]",
        b'{"retCode":"0","result":{"list":[]}}',
        b'{"retCode":false,"result":{"list":[]}}',
        b'{"retCode":0}',
        b'{"retCode":0,"result":[]}',
        b'{"retCode":0,"result":{"list":{}}}',
        b'{"retCode":0,"result":{"list":[1]}}',
        b'{"retCode":0,"result":{"list":[{"symbol":"BTCUSDT","status":"Trading","baseCoin":"BTC"}]}}',
        b'{"retCode":0,"result":{"list":[{"symbol":"","status":"Trading","baseCoin":"BTC","quoteCoin":"USDT"}]}}',
        b'{"retCode":0,"result":{"list":[{"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT"}]}}',
        frame("instruments_info_spot.json")[:-30],
    ],
)
def test_parse_instruments_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        bybit.parse_instruments(body, {})


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"retCode":0,"result":{"list":[{"symbol":"BTCUSDT"}]}}',
        b'{"retCode":0,"result":{"list":[{"symbol":"BTCUSDT","turnover24h":"inf"}]}}',
        b'{"retCode":0,"result":{"list":[{"symbol":"BTCUSDT","turnover24h":""}]}}',
        b'{"retCode":0,"result":{"list":[{"symbol":null,"turnover24h":"1"}]}}',
    ],
)
def test_parse_volumes_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        bybit.parse_volumes(body)
