"""BinanceCodec and Binance discovery, fed the frames Binance documents.

Frames live in tests/data/frames/binance/ as the venue documents them; every test asserts
the exact records (every field), the exact message text, or the exact error kind.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues import binance
from actors.venues.base import FrameError, FrameKind, Parsed, RestRequest, symbol_map
from actors.venues.binance import BinanceCodec
from tests.codec_support import (
    JSON_NOT_AN_OBJECT,
    RECV_TS,
    arbitrary_frames,
    assert_every_truncation_raises,
    assert_parse_total,
    edited,
    frame_bytes,
    json_values,
)

SYMBOLS = symbol_map(
    [
        SymbolInfo("binance", "BNBUSDT", "BNB", "USDT"),
        SymbolInfo("binance", "BNBBTC", "BNB", "BTC"),
        # The name comes from the metadata, not from the native string.
        SymbolInfo("binance", "XBTUSDT", "BTC", "USDT"),
    ]
)

BOOK_TICKER_QUOTE = Quote(
    venue="binance",
    symbol="BNB/USDT",
    bid=25.3519,
    bid_size=31.21,
    ask=25.3652,
    ask_size=40.66,
    venue_ts=0,
    recv_ts=RECV_TS,
    seq=400900217,
)


def frame(name: str) -> bytes:
    return frame_bytes("binance", name)


def with_top(name: str, **changes: object) -> bytes:
    """The stored frame with top-level fields replaced (a value of ... deletes the field)."""
    return edited(frame(name), (), **changes)


@pytest.fixture
def codec() -> BinanceCodec:
    return BinanceCodec(SYMBOLS)


# --- data frames ------------------------------------------------------------------------


@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "str"])
def test_book_ticker_is_one_quote(codec: BinanceCodec, as_text: bool) -> None:
    raw = frame("book_ticker.json")
    parsed = codec.parse(raw.decode() if as_text else raw, RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, records=(BOOK_TICKER_QUOTE,))


def test_combined_stream_wrapper_is_unwrapped(codec: BinanceCodec) -> None:
    parsed = codec.parse(frame("book_ticker_combined.json"), RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, records=(BOOK_TICKER_QUOTE,))


def test_prices_and_sizes_may_be_json_numbers(codec: BinanceCodec) -> None:
    raw = b'{"u":7,"s":"BNBUSDT","b":25.3519,"B":31,"a":"25.3652","A":4.066e1}'
    (quote,) = codec.parse(raw, RECV_TS).records
    assert quote == Quote("binance", "BNB/USDT", 25.3519, 31.0, 25.3652, 40.66, 0, RECV_TS, 7)
    assert all(type(value) is float for value in (quote.bid, quote.bid_size, quote.ask_size))


def test_symbol_name_comes_from_the_symbol_map(codec: BinanceCodec) -> None:
    raw = b'{"u":1,"s":"XBTUSDT","b":"1","B":"2","a":"3","A":"4"}'
    (quote,) = codec.parse(raw, RECV_TS).records
    assert isinstance(quote, Quote)
    assert quote.symbol == "BTC/USDT"


def test_trade_where_buyer_is_maker_is_a_taker_sell(codec: BinanceCodec) -> None:
    parsed = codec.parse(frame("trade.json"), RECV_TS)
    expected = Trade(
        venue="binance",
        symbol="BNB/BTC",
        price=0.001,
        size=100.0,
        side=Side.SELL,
        venue_ts=1672515782136,
        recv_ts=RECV_TS,
        trade_id="12345",
    )
    assert parsed == Parsed(FrameKind.DATA, records=(expected,))


def test_trade_where_buyer_is_taker_is_a_taker_buy(codec: BinanceCodec) -> None:
    (trade,) = codec.parse(with_top("trade.json", m=False), RECV_TS).records
    assert isinstance(trade, Trade)
    assert trade.side is Side.BUY


def test_trade_in_combined_wrapper(codec: BinanceCodec) -> None:
    payload = orjson.loads(frame("trade.json"))
    raw = orjson.dumps({"stream": "bnbbtc@trade", "data": payload})
    (trade,) = codec.parse(raw, RECV_TS).records
    assert isinstance(trade, Trade)
    assert (trade.symbol, trade.trade_id) == ("BNB/BTC", "12345")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"u":400900217,"s":"ETHUSDT","b":"1","B":"1","a":"2","A":"1"}',
        b'{"stream":"ethusdt@bookTicker","data":{"u":1,"s":"ETHUSDT","b":"1","B":"1","a":"2","A":"1"}}',
        b'{"e":"trade","E":1,"s":"ETHUSDT","t":1,"p":"1","q":"1","T":1,"m":true,"M":true}',
    ],
    ids=["book_ticker", "combined", "trade"],
)
def test_unmapped_symbol_is_reported_by_native_name(codec: BinanceCodec, raw: bytes) -> None:
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.UNKNOWN_SYMBOL, detail="ETHUSDT")


# --- control frames ---------------------------------------------------------------------


def test_subscribe_response_is_an_ack(codec: BinanceCodec) -> None:
    assert codec.parse(frame("subscribe_response.json"), RECV_TS) == Parsed(
        FrameKind.ACK, detail="1"
    )


def test_flat_error_message(codec: BinanceCodec) -> None:
    assert codec.parse(frame("error_flat.json"), RECV_TS) == Parsed(
        FrameKind.ERROR, detail="code 2: 'Invalid request: too many parameters'"
    )


def test_nested_error_message_keeps_the_request_id(codec: BinanceCodec) -> None:
    assert codec.parse(frame("error_nested.json"), RECV_TS) == Parsed(
        FrameKind.ERROR, detail="code 2: 'Invalid request: invalid stream' (id 1)"
    )


@pytest.mark.parametrize(
    "raw",
    [
        frame("server_shutdown.json"),
        b'{"e":"serverShutdown","E":1770123456789}',
        b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}',
    ],
    ids=["connection_event", "raw", "combined"],
)
def test_server_shutdown_is_a_notice(codec: BinanceCodec, raw: bytes) -> None:
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.NOTICE, detail="serverShutdown")


# --- malformed frames -------------------------------------------------------------------

MALFORMED = {
    "empty": b"",
    "not_json": b"hello",
    "invalid_utf8": b"\xff\xfe{}",
    **JSON_NOT_AN_OBJECT,
    "string": b'"u"',
    "empty_object": b"{}",
    "unknown_shape": b'{"foo":1}',
    "unknown_event": b'{"e":"aggTrade","s":"BNBUSDT"}',
    "unknown_connection_event": b'{"event":{"e":"somethingElse"}}',
    "combined_data_not_object": b'{"stream":"bnbusdt@bookTicker","data":[1]}',
    "error_not_object": b'{"error":"boom","id":1}',
    "trailing_garbage": frame("book_ticker.json").strip() + b"}",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_raise_frame_error(codec: BinanceCodec, raw: bytes) -> None:
    with pytest.raises(FrameError):
        codec.parse(raw, RECV_TS)


def test_every_truncation_of_a_frame_raises_frame_error(codec: BinanceCodec) -> None:
    raw = frame("book_ticker.json").strip()
    assert_every_truncation_raises(lambda data: codec.parse(data, RECV_TS), raw, as_text=True)


@pytest.mark.parametrize("field", ["u", "s", "b", "B", "a", "A"])
def test_book_ticker_missing_field_is_named(codec: BinanceCodec, field: str) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(with_top("book_ticker.json", **{field: ...}), RECV_TS)


@pytest.mark.parametrize("field", ["s", "p", "q", "T", "t", "m"])
def test_trade_missing_field_is_named(codec: BinanceCodec, field: str) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(with_top("trade.json", **{field: ...}), RECV_TS)


WRONG_TYPES = [
    ("b", None),
    ("b", True),
    ("b", ["25.3519"]),
    ("b", {"price": "25.3519"}),
    ("A", False),
    ("u", "400900217"),
    ("u", True),
    ("u", 4.009e8),
    ("s", 5),
    ("s", None),
]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES)
def test_book_ticker_wrong_type_is_named(codec: BinanceCodec, field: str, value: object) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(with_top("book_ticker.json", **{field: value}), RECV_TS)


@pytest.mark.parametrize(
    ("field", "value"),
    [("m", "true"), ("m", 1), ("t", "12345"), ("T", 1.5), ("p", None), ("q", [])],
)
def test_trade_wrong_type_is_named(codec: BinanceCodec, field: str, value: object) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(with_top("trade.json", **{field: value}), RECV_TS)


@pytest.mark.parametrize(
    "text",
    ["NaN", "nan", "inf", "-Infinity", "1e999", "abc", "", " 1", "1_000", "0x10", "1,5", "\u0661"],
)
def test_non_numeric_or_non_finite_decimal_strings_are_rejected(
    codec: BinanceCodec, text: str
) -> None:
    with pytest.raises(FrameError, match="'b'"):
        codec.parse(with_top("book_ticker.json", b=text), RECV_TS)


def test_out_of_range_number_is_rejected(codec: BinanceCodec) -> None:
    with pytest.raises(FrameError):
        codec.parse(b'{"u":1,"s":"BNBUSDT","b":1e999,"B":"1","a":"2","A":"1"}', RECV_TS)


def test_zero_size_is_kept(codec: BinanceCodec) -> None:
    (quote,) = codec.parse(with_top("book_ticker.json", B="0"), RECV_TS).records
    assert isinstance(quote, Quote)
    assert quote.bid_size == 0.0


@pytest.mark.parametrize(("changes", "what"), [({"b": "-1"}, "bid"), ({"a": "0"}, "ask"),
                                               ({"A": "-0.5"}, "ask size")])
def test_non_positive_price_or_negative_size_is_refused(
    codec: BinanceCodec, changes: dict[str, str], what: str
) -> None:
    """No market quotes such a price: the recorder would write it (tests/test_codec_fuzz.py)."""
    with pytest.raises(FrameError, match=f"^{what} "):
        codec.parse(with_top("book_ticker.json", **changes), RECV_TS)


_JSON_KEYS = ["u", "s", "b", "B", "a", "A", "e", "E", "t", "p", "q", "T", "m", "stream", "data",
              "result", "id", "error", "code", "msg", "event"]
_JSON_VALUES = json_values(
    _JSON_KEYS, ["BNBUSDT", "BNBBTC", "trade", "serverShutdown", "1.5", "NaN", ""]
)
_FRAMES = arbitrary_frames(_JSON_KEYS, _JSON_VALUES)


@settings(max_examples=500, database=None)
@given(raw=_FRAMES, as_text=st.booleans())
def test_parse_returns_parsed_or_raises_frame_error(raw: str | bytes, as_text: bool) -> None:
    assert_parse_total(BinanceCodec(SYMBOLS), raw, as_text=as_text)


# --- outgoing messages ------------------------------------------------------------------


def test_connection_settings(codec: BinanceCodec) -> None:
    assert codec.name == "binance"
    assert codec.max_streams_per_connection == 1024
    assert codec.max_messages_per_second < 5
    assert codec.ping_interval is None
    assert codec.ping_message(1_700_000_000_000) is None
    assert codec.ws_path(["BTCUSDT"]) == "/ws"


def test_subscribe_text_is_exact_and_ids_count_up(codec: BinanceCodec) -> None:
    assert codec.subscribe_messages(["BTCUSDT", "ETHUSDT"], trades=False) == [
        '{"method":"SUBSCRIBE","params":["btcusdt@bookTicker","ethusdt@bookTicker"],"id":1}'
    ]
    assert codec.subscribe_messages(["BNBUSDT"], trades=True) == [
        '{"method":"SUBSCRIBE","params":["bnbusdt@bookTicker","bnbusdt@trade"],"id":2}'
    ]


def test_subscribe_has_the_documented_request_shape(codec: BinanceCodec) -> None:
    documented = orjson.loads(frame("subscribe_request.json"))
    (message,) = codec.subscribe_messages(["BTCUSDT"], trades=False)
    ours = orjson.loads(message)
    assert ours.keys() == documented.keys()
    assert ours["method"] == documented["method"]
    assert ours["params"] == ["btcusdt@bookTicker"]
    assert isinstance(ours["id"], int)


@pytest.mark.parametrize(
    ("count", "trades", "sizes"),
    [
        (0, False, []),
        (1, False, [1]),
        (100, False, [100]),
        (101, False, [100, 1]),
        (250, False, [100, 100, 50]),
        (250, True, [100, 100, 100, 100, 100]),
        (512, True, [100] * 10 + [24]),
        (1024, False, [100] * 10 + [24]),
    ],
)
def test_subscribe_is_chunked(
    codec: BinanceCodec, count: int, trades: bool, sizes: list[int]
) -> None:
    natives = [f"SYM{index}USDT" for index in range(count)]
    messages = [orjson.loads(text) for text in codec.subscribe_messages(natives, trades=trades)]
    assert [len(message["params"]) for message in messages] == sizes
    assert [message["id"] for message in messages] == list(range(1, len(sizes) + 1))
    streams = [stream for message in messages for stream in message["params"]]
    expected = [
        stream
        for native in natives
        for stream in (
            [f"{native.lower()}@bookTicker", f"{native.lower()}@trade"]
            if trades
            else [f"{native.lower()}@bookTicker"]
        )
    ]
    assert streams == expected


def test_subscribe_beyond_the_connection_limit_is_refused(codec: BinanceCodec) -> None:
    with pytest.raises(ValueError, match="1026 streams"):
        codec.subscribe_messages([f"S{index}" for index in range(513)], trades=True)


# --- discovery --------------------------------------------------------------------------


def test_discovery_requests() -> None:
    assert binance.discovery_requests() == (
        RestRequest("/api/v3/exchangeInfo", {"permissions": "SPOT", "showPermissionSets": "false"}),
        RestRequest("/api/v3/ticker/24hr", {"type": "MINI"}),
    )


def test_parse_instruments_keeps_trading_symbols() -> None:
    assert binance.parse_instruments(frame("exchange_info.json"), {}) == [
        SymbolInfo("binance", "ETHBTC", "ETH", "BTC"),
        SymbolInfo("binance", "BTCUSDT", "BTC", "USDT"),
        SymbolInfo("binance", "BNBUSDT", "BNB", "USDT"),
    ]


def test_parse_instruments_applies_aliases_and_upper_case() -> None:
    body = orjson.dumps(
        {
            "symbols": [
                {"symbol": "XBTUSDT", "status": "TRADING", "baseAsset": "xbt",
                 "quoteAsset": "USDT"},
                {"symbol": "ETHXBT", "status": "TRADING", "baseAsset": "ETH",
                 "quoteAsset": "XBT"},
            ]
        }
    )
    assert binance.parse_instruments(body, {"XBT": "btc"}) == [
        SymbolInfo("binance", "XBTUSDT", "BTC", "USDT"),
        SymbolInfo("binance", "ETHXBT", "ETH", "BTC"),
    ]


def test_parse_volumes_reads_quote_volume() -> None:
    assert binance.parse_volumes(frame("ticker_24hr_mini.json")) == {
        "ETHBTC": 1143.86531291,
        "BTCUSDT": 2638104726.450206,
        "LUNAUSDT": 0.0,
        "BNBUSDT": 38576981.2304,
    }


@pytest.mark.parametrize(
    "body",
    [
        b'{"code":-1003,"msg":"Too many requests."}',
        b"<html>502 Bad Gateway</html>",
        b"[]",
        b'{"symbols":{}}',
        b'{"symbols":[1]}',
        b'{"symbols":[{"symbol":"BTCUSDT","status":"TRADING","quoteAsset":"USDT"}]}',
        b'{"symbols":[{"symbol":"BTCUSDT","status":"TRADING","baseAsset":"","quoteAsset":"USDT"}]}',
        b'{"symbols":[{"symbol":"BTCUSDT","baseAsset":"BTC","quoteAsset":"USDT"}]}',
        frame("exchange_info.json")[:-20],
    ],
)
def test_parse_instruments_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        binance.parse_instruments(body, {})


@pytest.mark.parametrize(
    "body",
    [
        b'{"code":-1003,"msg":"Too many requests."}',
        b"not json",
        b'{"symbol":"BTCUSDT"}',
        b'[{"symbol":"BTCUSDT"}]',
        b'[{"symbol":"BTCUSDT","quoteVolume":"NaN"}]',
        b'[{"symbol":7,"quoteVolume":"1"}]',
        b"[1]",
    ],
)
def test_parse_volumes_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        binance.parse_volumes(body)
