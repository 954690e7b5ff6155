"""KucoinCodec, KuCoin discovery and the bullet-public bootstrap, fed the frames KuCoin documents.

Frames live in tests/data/frames/kucoin/ as the venue documents them (the current
docs' examples with their ``//`` comments removed; ``match_v1_docs.json`` is the older
docs' example). KuCoin documents no error frame's text: the two error frames are the
ones KuCoin sent in kucoin-api-docs #426 and cryptofeed #1100. ``rest_error.json`` is the
documented REST envelope with the documented 429000 code. Every test asserts the exact
records (every field), the exact message text, or the exact error kind.
"""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues import kucoin
from actors.venues.base import Bootstrap, FrameError, FrameKind, Parsed, RestRequest, symbol_map
from actors.venues.kucoin import KucoinCodec
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
        SymbolInfo("kucoin", "BTC-USDT", "BTC", "USDT"),
        SymbolInfo("kucoin", "ETH-BTC", "ETH", "BTC"),
        # The name comes from the metadata, not from the native string.
        SymbolInfo("kucoin", "BCHSV-USDT", "BSV", "USDT"),
    ]
)

LEVEL1_QUOTE = Quote(
    venue="kucoin",
    symbol="BTC/USDT",
    bid=68145.7,
    bid_size=1.29267802,
    ask=68145.8,
    ask_size=0.51987471,
    venue_ts=1729816058766,
    recv_ts=RECV_TS,
    seq=0,
)

MATCH_TRADE = Trade(
    venue="kucoin",
    symbol="BTC/USDT",
    price=67523.0,
    size=0.003,
    side=Side.BUY,
    venue_ts=1729843222921,
    recv_ts=RECV_TS,
    trade_id="11067996711960577",
)

DOCUMENTED_TOKEN = (
    "2neAiuYvAU61ZDXANAGAsiL4-iAExhsBXZxftpOeh_55i3Ysy2q2LEsEWU64mdzUOPusi34M_wGoSf7iNyEWJ2gZ"
    "JLp3fgqGGvpzdfennGL3R06_0gIS-diYB9J6i9GjsxUuhPw3Blq6rhZlGykT3Vp1phUafnulOOpts-MEmEF-3bpf"
    "etLOAjzQ04YZ_8fRJBvJHl5Vs9Y=.28mIdGU0xg5pJ6TpPYIhjg=="
)


def frame(name: str) -> bytes:
    return frame_bytes("kucoin", name)


def data_with(name: str, **changes: object) -> bytes:
    """The stored frame with ``data`` fields replaced (a value of ... deletes the field)."""
    return edited(frame(name), ("data",), **changes)


def top_with(name: str, **changes: object) -> bytes:
    """The stored frame with top-level fields replaced (a value of ... deletes the field)."""
    return edited(frame(name), (), **changes)


def named(field: str) -> str:
    """A regex matching ``field`` quoted in an error message."""
    return re.escape(f"'{field}'")


@pytest.fixture
def codec() -> KucoinCodec:
    return KucoinCodec(SYMBOLS)


# --- data frames ------------------------------------------------------------------------


@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "str"])
def test_level1_is_one_quote(codec: KucoinCodec, as_text: bool) -> None:
    raw = frame("level1.json")
    parsed = codec.parse(raw.decode() if as_text else raw, RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, records=(LEVEL1_QUOTE,))


def test_level1_prices_and_sizes_may_be_json_numbers(codec: KucoinCodec) -> None:
    raw = data_with("level1.json", asks=[68145.8, "0.51987471"], bids=["68145.7", 1.29267802])
    (quote,) = codec.parse(raw, RECV_TS).records
    assert quote == LEVEL1_QUOTE
    assert isinstance(quote, Quote)
    assert type(quote.bid) is float


def test_level1_integer_prices_become_floats(codec: KucoinCodec) -> None:
    (quote,) = codec.parse(data_with("level1.json", asks=[68146, "1"]), RECV_TS).records
    assert isinstance(quote, Quote)
    assert (quote.ask, quote.ask_size) == (68146.0, 1.0)
    assert type(quote.ask) is float


@pytest.mark.parametrize("empty", ["asks", "bids"])
def test_level1_with_an_empty_side_is_data_without_a_quote(codec: KucoinCodec, empty: str) -> None:
    assert codec.parse(data_with("level1.json", **{empty: []}), RECV_TS) == Parsed(
        FrameKind.DATA, detail="one-sided book"
    )


def test_symbol_name_comes_from_the_symbol_map(codec: KucoinCodec) -> None:
    raw = top_with("level1.json", topic="/spotMarket/level1:BCHSV-USDT")
    (quote,) = codec.parse(raw, RECV_TS).records
    assert isinstance(quote, Quote)
    assert quote.symbol == "BSV/USDT"


def test_match_is_one_trade(codec: KucoinCodec) -> None:
    assert codec.parse(frame("match.json"), RECV_TS) == Parsed(
        FrameKind.DATA, records=(MATCH_TRADE,)
    )


def test_older_docs_match_with_long_decimals(codec: KucoinCodec) -> None:
    expected = Trade(
        venue="kucoin",
        symbol="BTC/USDT",
        price=0.082,
        size=0.01022222,
        side=Side.BUY,
        venue_ts=1545913818099,
        recv_ts=RECV_TS,
        trade_id="5c24c5da03aa673885cd67aa",
    )
    assert codec.parse(frame("match_v1_docs.json"), RECV_TS) == Parsed(
        FrameKind.DATA, records=(expected,)
    )


def test_match_sell_side_is_a_taker_sell(codec: KucoinCodec) -> None:
    (trade,) = codec.parse(data_with("match.json", side="sell"), RECV_TS).records
    assert isinstance(trade, Trade)
    assert trade.side is Side.SELL


def test_match_numbers_and_integer_time(codec: KucoinCodec) -> None:
    raw = data_with("match.json", price=67523, size=0.003, time=1729843222921999999)
    (trade,) = codec.parse(raw, RECV_TS).records
    assert trade == Trade(
        "kucoin", "BTC/USDT", 67523.0, 0.003, Side.BUY, 1729843222921, RECV_TS, "11067996711960577"
    )


def test_match_time_is_truncated_to_milliseconds(codec: KucoinCodec) -> None:
    (trade,) = codec.parse(data_with("match.json", time="1999999"), RECV_TS).records
    assert isinstance(trade, Trade)
    assert trade.venue_ts == 1


def test_match_does_not_need_fields_it_does_not_use(codec: KucoinCodec) -> None:
    raw = data_with("match.json", sequence=..., makerOrderId=..., takerOrderId=..., type=...)
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.DATA, records=(MATCH_TRADE,))


def test_unmapped_symbol_in_level1_is_reported_by_native_name(codec: KucoinCodec) -> None:
    raw = top_with("level1.json", topic="/spotMarket/level1:SOL-USDT")
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.UNKNOWN_SYMBOL, detail="SOL-USDT")


def test_unmapped_symbol_in_level1_needs_no_valid_data(codec: KucoinCodec) -> None:
    raw = b'{"type":"message","topic":"/spotMarket/level1:SOL-USDT","data":null}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.UNKNOWN_SYMBOL, detail="SOL-USDT")


def test_unmapped_symbol_in_match_is_reported_by_native_name(codec: KucoinCodec) -> None:
    document = orjson.loads(frame("match.json"))
    document["topic"] = "/market/match:SOL-USDT"
    document["data"]["symbol"] = "SOL-USDT"
    assert codec.parse(orjson.dumps(document), RECV_TS) == Parsed(
        FrameKind.UNKNOWN_SYMBOL, detail="SOL-USDT"
    )


# --- control frames ---------------------------------------------------------------------


def test_welcome_is_info(codec: KucoinCodec) -> None:
    assert codec.parse(frame("welcome.json"), RECV_TS) == Parsed(
        FrameKind.INFO, detail="welcome hQvf8jkno"
    )


def test_ack_carries_the_request_id(codec: KucoinCodec) -> None:
    assert codec.parse(frame("subscribe_ack.json"), RECV_TS) == Parsed(
        FrameKind.ACK, detail="1545910660739"
    )


def test_ack_with_a_numeric_id(codec: KucoinCodec) -> None:
    assert codec.parse(b'{"id":7,"type":"ack"}', RECV_TS) == Parsed(FrameKind.ACK, detail="7")


def test_ack_without_id(codec: KucoinCodec) -> None:
    assert codec.parse(b'{"type":"ack"}', RECV_TS) == Parsed(FrameKind.ACK, detail="")


def test_pong_carries_the_ping_id(codec: KucoinCodec) -> None:
    assert codec.parse(frame("pong.json"), RECV_TS) == Parsed(FrameKind.PONG, detail="1545910590801")


def test_our_ping_is_answered_by_a_pong_with_its_id(codec: KucoinCodec) -> None:
    ping = codec.ping_message(1_700_000_000_000)
    assert ping == '{"id":"1","type":"ping"}'
    pong = orjson.dumps(dict(orjson.loads(ping), type="pong"))
    assert codec.parse(pong, RECV_TS) == Parsed(FrameKind.PONG, detail="1")


def test_a_ping_from_the_server_gets_the_exact_pong(codec: KucoinCodec) -> None:
    assert codec.parse(frame("ping_request.json"), RECV_TS) == Parsed(
        FrameKind.PING, reply='{"id":"1545910590801","type":"pong"}', detail="1545910590801"
    )


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        ("subscribe_error_not_found.json", "code 404: 'topic /futuresTrade/orders is not found' (id '')"),
        ("subscribe_error_invalid.json", "code 400: 'topic /market/match: BTC-USDT is invalid' (id '1')"),
    ],
)
def test_error_frames_are_errors(codec: KucoinCodec, name: str, detail: str) -> None:
    assert codec.parse(frame(name), RECV_TS) == Parsed(FrameKind.ERROR, detail=detail)


def test_error_without_code_or_data_is_still_an_error(codec: KucoinCodec) -> None:
    assert codec.parse(b'{"id":"x","type":"error"}', RECV_TS) == Parsed(
        FrameKind.ERROR, detail="code '': '' (id 'x')"
    )


def test_notice_rotates_the_connection(codec: KucoinCodec) -> None:
    raw = b'{"type":"notice","subject":"server.shutdown","data":{}}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.NOTICE, detail="notice: 'server.shutdown'")


def test_notice_without_subject(codec: KucoinCodec) -> None:
    assert codec.parse(b'{"type":"notice","data":"maintenance"}', RECV_TS) == Parsed(
        FrameKind.NOTICE, detail="notice: 'maintenance'"
    )


def test_command_is_info(codec: KucoinCodec) -> None:
    assert codec.parse(b'{"type":"command","subject":"x"}', RECV_TS) == Parsed(
        FrameKind.INFO, detail="command: 'x'"
    )


def test_long_error_detail_is_bounded(codec: KucoinCodec) -> None:
    raw = orjson.dumps({"type": "error", "code": 1, "data": "x" * 10_000})
    parsed = codec.parse(raw, RECV_TS)
    assert parsed.kind is FrameKind.ERROR
    assert len(parsed.detail) == 300


# --- malformed frames -------------------------------------------------------------------

MALFORMED = {
    "empty": b"",
    "not_json": b"pong",
    "invalid_utf8": b"\xff\xfe{}",
    "latin1_text": '{"id":"1","type":"ack","x":"caf\u00e9"}'.encode("latin-1"),
    "utf16": '{"id":"1","type":"ack"}'.encode("utf-16"),
    **JSON_NOT_AN_OBJECT,
    "empty_object": b"{}",
    "type_missing": b'{"id":"1"}',
    "type_not_string": b'{"type":1}',
    "unknown_type": b'{"id":"1","type":"openTunnel"}',
    "id_not_string": b'{"id":null,"type":"ack"}',
    "id_bool": b'{"id":true,"type":"pong"}',
    "topic_missing": b'{"type":"message","data":{}}',
    "topic_not_string": b'{"type":"message","topic":["/spotMarket/level1:BTC-USDT"]}',
    "unknown_topic": b'{"type":"message","topic":"/market/ticker:BTC-USDT","data":{}}',
    "level1_no_symbol": b'{"type":"message","topic":"/spotMarket/level1:","data":{}}',
    "level1_two_symbols": b'{"type":"message","topic":"/spotMarket/level1:BTC-USDT,ETH-BTC","data":{}}',
    "level1_data_missing": b'{"type":"message","topic":"/spotMarket/level1:BTC-USDT"}',
    "level1_data_not_object": b'{"type":"message","topic":"/spotMarket/level1:BTC-USDT","data":[]}',
    "match_data_not_object": b'{"type":"message","topic":"/market/match:BTC-USDT","data":"x"}',
    "trailing_garbage": frame("subscribe_ack.json").strip() + b"}",
    "two_frames": frame("pong.json").strip() + frame("pong.json").strip(),
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_raise_frame_error(codec: KucoinCodec, raw: bytes) -> None:
    with pytest.raises(FrameError):
        codec.parse(raw, RECV_TS)


def test_lone_surrogate_text_raises_frame_error(codec: KucoinCodec) -> None:
    with pytest.raises(FrameError):
        codec.parse('{"id":"\ud800","type":"ack"}', RECV_TS)


@pytest.mark.parametrize("name", ["level1.json", "match.json", "bullet_public.json"])
def test_every_truncation_of_a_frame_raises_frame_error(codec: KucoinCodec, name: str) -> None:
    raw = frame(name).strip()
    assert_every_truncation_raises(lambda data: codec.parse(data, RECV_TS), raw, as_text=True)


@pytest.mark.parametrize("field", ["asks", "bids", "timestamp"])
def test_level1_missing_field_is_named(codec: KucoinCodec, field: str) -> None:
    with pytest.raises(FrameError, match=named(field)):
        codec.parse(data_with("level1.json", **{field: ...}), RECV_TS)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"asks": "68145.8"}, "asks"),
        ({"asks": {"price": "68145.8"}}, "asks"),
        ({"asks": ["68145.8"]}, "asks"),
        ({"asks": ["68145.8", "1", "2"]}, "asks"),
        ({"asks": [["68145.8", "1"]]}, "asks"),
        ({"asks": [["68145.8", "1"], ["68146", "2"]]}, "asks[0]"),
        ({"asks": [None, "1"]}, "asks[0]"),
        ({"asks": ["NaN", "1"]}, "asks[0]"),
        ({"asks": ["nan", "1"]}, "asks[0]"),
        ({"asks": ["Infinity", "1"]}, "asks[0]"),
        ({"asks": ["1e999", "1"]}, "asks[0]"),
        ({"asks": ["68145.8", "-inf"]}, "asks[1]"),
        ({"bids": [True, "1"]}, "bids[0]"),
        ({"bids": ["68_145.7", "1"]}, "bids[0]"),
        ({"bids": ["68,145.7", "1"]}, "bids[0]"),
        ({"bids": [" 68145.7", "1"]}, "bids[0]"),
        ({"bids": ["\u0666\u0668", "1"]}, "bids[0]"),
        ({"bids": ["", "1"]}, "bids[0]"),
        ({"bids": ["68145.7", "0x10"]}, "bids[1]"),
        ({"timestamp": "1729816058766"}, "timestamp"),
        ({"timestamp": 1729816058766.0}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"timestamp": None}, "timestamp"),
    ],
)
def test_level1_wrong_value_is_named(
    codec: KucoinCodec, changes: dict[str, object], field: str
) -> None:
    with pytest.raises(FrameError, match=named(field)):
        codec.parse(data_with("level1.json", **changes), RECV_TS)


@pytest.mark.parametrize("field", ["symbol", "side", "price", "size", "time", "tradeId"])
def test_match_missing_field_is_named(codec: KucoinCodec, field: str) -> None:
    with pytest.raises(FrameError, match=named(field)):
        codec.parse(data_with("match.json", **{field: ...}), RECV_TS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("symbol", "ETH-BTC"),
        ("symbol", None),
        ("side", "Buy"),
        ("side", "bid"),
        ("side", ""),
        ("side", 1),
        ("price", "NaN"),
        ("price", "inf"),
        ("price", ""),
        ("price", None),
        ("price", False),
        ("price", ["67523"]),
        ("size", "0.003 "),
        ("size", "1_000"),
        ("time", "1729843222921000000.5"),
        ("time", "-1729843222921000000"),
        ("time", "1.7e18"),
        ("time", ""),
        ("time", "\u0661\u0667"),
        ("time", -1),
        ("time", 1.7e18),
        ("time", True),
        ("tradeId", 11067996711960577),
        ("tradeId", ""),
    ],
)
def test_match_wrong_value_is_named(codec: KucoinCodec, field: str, value: object) -> None:
    with pytest.raises(FrameError, match=named(field)):
        codec.parse(data_with("match.json", **{field: value}), RECV_TS)


_JSON_KEYS = ["id", "type", "topic", "subject", "data", "asks", "bids", "timestamp", "symbol", "side",
              "price", "size", "time", "tradeId", "sequence", "code", "msg", "token",
              "instanceServers", "endpoint", "protocol", "pingInterval", "pingTimeout"]
_JSON_VALUES = json_values(
    _JSON_KEYS,
    ["message", "ack", "pong", "ping", "welcome", "error", "notice", "command",
     "/spotMarket/level1:BTC-USDT", "/market/match:BTC-USDT", "/spotMarket/level1:",
     "BTC-USDT", "buy", "sell", "68145.7", "1729843222921000000", "NaN", "", "200000",
     "websocket", "wss://ws-api-spot.kucoin.com/"],
)
_FRAMES = arbitrary_frames(_JSON_KEYS, _JSON_VALUES)


@settings(max_examples=500, database=None)
@given(raw=_FRAMES, as_text=st.booleans())
def test_parse_returns_parsed_or_raises_frame_error(raw: str | bytes, as_text: bool) -> None:
    assert_parse_total(KucoinCodec(SYMBOLS), raw, as_text=as_text)


@settings(max_examples=300, database=None)
@given(raw=_FRAMES.map(lambda value: value if isinstance(value, bytes) else value.encode()))
def test_rest_parsers_return_or_raise_frame_error(raw: bytes) -> None:
    for parse in (lambda: kucoin.parse_instruments(raw, {}), lambda: kucoin.parse_volumes(raw),
                  lambda: kucoin.parse_bootstrap(raw, "c1")):
        try:
            parse()
        except FrameError:
            pass


# --- outgoing messages ------------------------------------------------------------------


def test_connection_settings(codec: KucoinCodec) -> None:
    assert codec.name == "kucoin"
    assert codec.max_streams_per_connection == 200
    assert 0 < codec.max_messages_per_second < 10  # KuCoin: 100 per 10 s
    assert codec.ping_interval == 18.0
    assert codec.max_connection_age_s == 24 * 3600.0
    assert codec.ws_path(["BTC-USDT"]) == ""
    assert kucoin.CONNECT_INTERVAL_S >= 2.0  # KuCoin: 30 connections a minute
    assert 0 < kucoin.MAX_CONNECTIONS < 50


def test_subscribe_and_ping_text_is_exact_and_ids_count_up(codec: KucoinCodec) -> None:
    assert codec.subscribe_messages(["BTC-USDT", "ETH-BTC"], trades=False) == [
        '{"id":"1","type":"subscribe","topic":"/spotMarket/level1:BTC-USDT,ETH-BTC",'
        '"privateChannel":false,"response":true}'
    ]
    assert codec.ping_message(1_700_000_000_000) == '{"id":"2","type":"ping"}'
    assert codec.subscribe_messages(["BTC-USDT"], trades=True) == [
        '{"id":"3","type":"subscribe","topic":"/spotMarket/level1:BTC-USDT",'
        '"privateChannel":false,"response":true}',
        '{"id":"4","type":"subscribe","topic":"/market/match:BTC-USDT",'
        '"privateChannel":false,"response":true}',
    ]


def test_unsubscribe_text_is_exact(codec: KucoinCodec) -> None:
    assert codec.unsubscribe_messages(["BTC-USDT", "ETH-BTC"], trades=True) == [
        '{"id":"1","type":"unsubscribe","topic":"/spotMarket/level1:BTC-USDT,ETH-BTC",'
        '"privateChannel":false,"response":true}',
        '{"id":"2","type":"unsubscribe","topic":"/market/match:BTC-USDT,ETH-BTC",'
        '"privateChannel":false,"response":true}',
    ]


@pytest.mark.parametrize(
    ("name", "method"),
    [("subscribe_request.json", "subscribe_messages"), ("unsubscribe_request.json", "unsubscribe_messages")],
)
def test_requests_have_the_documented_shape(codec: KucoinCodec, name: str, method: str) -> None:
    documented = orjson.loads(frame(name))
    (message,) = getattr(codec, method)(["BTC-USDT", "ETH-USDT"], trades=False)
    ours = orjson.loads(message)
    assert list(ours) == list(documented)
    assert ours["type"] == documented["type"]
    assert (ours["privateChannel"], ours["response"]) == (False, True)
    assert ours["topic"] == "/spotMarket/level1:BTC-USDT,ETH-USDT"


def test_ping_has_the_documented_shape(codec: KucoinCodec) -> None:
    documented = orjson.loads(frame("ping_request.json"))
    ping = codec.ping_message(0)
    assert ping is not None
    ours = orjson.loads(ping)
    assert list(ours) == list(documented)
    assert ours["type"] == "ping"


def _topic_sizes(messages: list[str | bytes]) -> list[tuple[str, int]]:
    sizes = []
    for text in messages:
        prefix, _, symbols = orjson.loads(text)["topic"].partition(":")
        sizes.append((prefix, len(symbols.split(","))))
    return sizes


@pytest.mark.parametrize(
    ("count", "trades", "sizes"),
    [
        (0, False, []),
        (0, True, []),
        (1, True, [("/spotMarket/level1", 1), ("/market/match", 1)]),
        (50, False, [("/spotMarket/level1", 50)]),
        (51, False, [("/spotMarket/level1", 50), ("/spotMarket/level1", 1)]),
        (200, False, [("/spotMarket/level1", 50)] * 4),
        (
            100,
            True,
            [("/spotMarket/level1", 50), ("/market/match", 50)] * 2,
        ),
        (
            75,
            True,
            [("/spotMarket/level1", 50), ("/market/match", 50),
             ("/spotMarket/level1", 25), ("/market/match", 25)],
        ),
    ],
)
def test_subscribe_splits_symbols_per_request(
    codec: KucoinCodec, count: int, trades: bool, sizes: list[tuple[str, int]]
) -> None:
    natives = [f"S{index}-USDT" for index in range(count)]
    messages = codec.subscribe_messages(natives, trades=trades)
    assert _topic_sizes(messages) == sizes
    assert [orjson.loads(text)["id"] for text in messages] == [
        str(n) for n in range(1, len(sizes) + 1)
    ]


def test_unsubscribe_splits_like_subscribe(codec: KucoinCodec) -> None:
    natives = [f"S{index}-USDT" for index in range(75)]
    subscribe = codec.subscribe_messages(natives, trades=True)
    unsubscribe = codec.unsubscribe_messages(natives, trades=True)
    assert _topic_sizes(unsubscribe) == _topic_sizes(subscribe)
    assert [orjson.loads(text)["topic"] for text in unsubscribe] == [
        orjson.loads(text)["topic"] for text in subscribe
    ]
    assert {orjson.loads(text)["type"] for text in unsubscribe} == {"unsubscribe"}


@settings(database=None)
@given(count=st.integers(min_value=0, max_value=200), trades=st.booleans())
def test_subscribe_chunks_cover_every_stream_once(count: int, trades: bool) -> None:
    if count * (2 if trades else 1) > 200:
        count //= 2
    codec = KucoinCodec(SYMBOLS)
    natives = [f"S{index}-USDT" for index in range(count)]
    messages = [orjson.loads(text) for text in codec.subscribe_messages(natives, trades=trades)]
    streams: list[str] = []
    for message in messages:
        prefix, _, symbols = message["topic"].partition(":")
        chunk = symbols.split(",")
        assert 1 <= len(chunk) <= kucoin.SYMBOLS_PER_SUBSCRIBE <= 100
        streams += [f"{prefix}:{symbol}" for symbol in chunk]
    expected = [f"/spotMarket/level1:{native}" for native in natives]
    if trades:
        expected += [f"/market/match:{native}" for native in natives]
    assert sorted(streams) == sorted(expected)
    assert len({message["id"] for message in messages}) == len(messages)


def test_subscribe_at_the_connection_cap_is_allowed(codec: KucoinCodec) -> None:
    assert len(codec.subscribe_messages([f"S{index}" for index in range(100)], trades=True)) == 4
    assert len(codec.subscribe_messages([f"S{index}" for index in range(200)], trades=False)) == 4


@pytest.mark.parametrize(("count", "trades", "streams"), [(101, True, 202), (201, False, 201)])
def test_subscribe_beyond_the_connection_cap_is_refused(
    codec: KucoinCodec, count: int, trades: bool, streams: int
) -> None:
    natives = [f"S{index}" for index in range(count)]
    with pytest.raises(ValueError, match=f"{streams} streams"):
        codec.subscribe_messages(natives, trades=trades)
    with pytest.raises(ValueError, match=f"{streams} streams"):
        codec.unsubscribe_messages(natives, trades=trades)
    # A refused request uses no id.
    assert codec.ping_message(0) == '{"id":"1","type":"ping"}'


@pytest.mark.parametrize("native", ["", "BTC-USDT,ETH-BTC"])
def test_symbols_that_would_corrupt_the_topic_are_refused(codec: KucoinCodec, native: str) -> None:
    with pytest.raises(ValueError, match="cannot go into a KuCoin topic"):
        codec.subscribe_messages(["BTC-USDT", native], trades=False)


# --- bootstrap --------------------------------------------------------------------------


def test_bootstrap_request() -> None:
    assert kucoin.bootstrap_request() == RestRequest("/api/v1/bullet-public", method="POST")


def test_parse_bootstrap_builds_the_connect_url() -> None:
    assert kucoin.parse_bootstrap(frame("bullet_public.json"), "sw-1a") == Bootstrap(
        ws_url=f"wss://ws-api-spot.kucoin.com/?token={DOCUMENTED_TOKEN}&connectId=sw-1a",
        ping_interval_s=18.0,
        ping_timeout_s=10.0,
    )


def _bullet(**server_changes: object) -> bytes:
    return edited(frame("bullet_public.json"), ("data", "instanceServers", 0), **server_changes)


def test_parse_bootstrap_takes_the_first_websocket_server() -> None:
    document = orjson.loads(frame("bullet_public.json"))
    servers = document["data"]["instanceServers"]
    other = dict(servers[0], protocol="tcp", endpoint="tcp://elsewhere")
    loopback = dict(servers[0], endpoint="ws://127.0.0.1:8765/", pingInterval=50000)
    document["data"]["instanceServers"] = [other, loopback, servers[0]]
    boot = kucoin.parse_bootstrap(orjson.dumps(document), "7")
    assert boot.ws_url == f"ws://127.0.0.1:8765/?token={DOCUMENTED_TOKEN}&connectId=7"
    assert boot.ping_interval_s == 50.0


def test_parse_bootstrap_error_names_the_code() -> None:
    with pytest.raises(FrameError, match="code '429000': 'Too Many Requests'"):
        kucoin.parse_bootstrap(frame("rest_error.json"), "c1")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"<html>502 Bad Gateway</html>", "invalid JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"code":200000,"data":{}}', "code 200000"),
        (b'{"code":"200000"}', named("data")),
        (b'{"code":"200000","data":[]}', "data"),
        (b'{"code":"200000","data":{"instanceServers":[]}}', named("token")),
        (b'{"code":"200000","data":{"token":"","instanceServers":[]}}', named("token")),
        (b'{"code":"200000","data":{"token":"a&b=c","instanceServers":[]}}', named("token")),
        (b'{"code":"200000","data":{"token":"a b","instanceServers":[]}}', named("token")),
        (b'{"code":"200000","data":{"token":"t"}}', named("instanceServers")),
        (b'{"code":"200000","data":{"token":"t","instanceServers":{}}}', named("instanceServers")),
        (b'{"code":"200000","data":{"token":"t","instanceServers":[]}}', "no websocket server"),
        (b'{"code":"200000","data":{"token":"t","instanceServers":[1]}}', "instanceServers"),
        (_bullet(protocol=...), named("protocol")),
        (_bullet(protocol="tcp"), "no websocket server"),
        (_bullet(endpoint=...), named("endpoint")),
        (_bullet(endpoint=None), named("endpoint")),
        (_bullet(endpoint="https://ws-api-spot.kucoin.com/"), named("endpoint")),
        (_bullet(endpoint="wss://ws-api-spot.kucoin.com/?x=1"), named("endpoint")),
        (_bullet(endpoint="wss://ws api"), named("endpoint")),
        (_bullet(endpoint="wss://"), named("endpoint")),
        (_bullet(pingInterval=...), named("pingInterval")),
        (_bullet(pingInterval="18000"), named("pingInterval")),
        (_bullet(pingInterval=18000.0), named("pingInterval")),
        (_bullet(pingInterval=0), named("pingInterval")),
        (_bullet(pingInterval=True), named("pingInterval")),
        (_bullet(pingTimeout=-1), named("pingTimeout")),
        (_bullet(pingTimeout=None), named("pingTimeout")),
    ],
)
def test_parse_bootstrap_rejects_malformed_payloads(body: bytes, field: str) -> None:
    with pytest.raises(FrameError, match=field):
        kucoin.parse_bootstrap(body, "c1")


@pytest.mark.parametrize("connect_id", ["", "a&b", "a b", "é", "x" * 129])
def test_parse_bootstrap_refuses_a_connect_id_that_is_not_url_safe(connect_id: str) -> None:
    with pytest.raises(ValueError, match="not URL-safe") as caught:
        kucoin.parse_bootstrap(frame("bullet_public.json"), connect_id)
    assert not isinstance(caught.value, FrameError)


def test_every_truncation_of_the_bootstrap_raises_frame_error() -> None:
    raw = frame("bullet_public.json").strip()
    assert_every_truncation_raises(lambda data: kucoin.parse_bootstrap(data, "c1"), raw)


# --- discovery --------------------------------------------------------------------------


def test_discovery_requests() -> None:
    assert kucoin.discovery_requests() == (
        RestRequest("/api/v2/symbols"),
        RestRequest("/api/v1/market/allTickers"),
    )


def test_parse_instruments_keeps_trading_symbols() -> None:
    # LUNA-USDT has enableTrading false.
    assert kucoin.parse_instruments(frame("symbols.json"), {}) == [
        SymbolInfo("kucoin", "BTC-USDT", "BTC", "USDT"),
        SymbolInfo("kucoin", "ETH-BTC", "ETH", "BTC"),
    ]


def test_parse_instruments_names_from_currencies_not_the_symbol_code() -> None:
    body = orjson.dumps(
        {
            "code": "200000",
            "data": [
                {"symbol": "BCHSV-USDT", "name": "BSV-USDT", "baseCurrency": "BSV",
                 "quoteCurrency": "USDT", "enableTrading": True},
                {"symbol": "XBT-usdt", "name": "XBT-USDT", "baseCurrency": "xbt",
                 "quoteCurrency": "usdt", "enableTrading": True},
                {"symbol": "ETH-XBT", "name": "ETH-XBT", "baseCurrency": "ETH",
                 "quoteCurrency": "XBT", "enableTrading": True},
            ],
        }
    )
    assert kucoin.parse_instruments(body, {"XBT": "btc"}) == [
        SymbolInfo("kucoin", "BCHSV-USDT", "BSV", "USDT"),
        SymbolInfo("kucoin", "XBT-usdt", "BTC", "USDT"),
        SymbolInfo("kucoin", "ETH-XBT", "ETH", "BTC"),
    ]


def test_parse_volumes_reads_vol_value() -> None:
    assert kucoin.parse_volumes(frame("all_tickers.json")) == {
        "BTC-USDT": 124068431.06726933,
        "ETH-BTC": 13.685913296,
    }


def test_rest_error_names_the_code() -> None:
    with pytest.raises(FrameError, match="symbols failed: code '429000': 'Too Many Requests'"):
        kucoin.parse_instruments(frame("rest_error.json"), {})
    with pytest.raises(FrameError, match="allTickers failed: code '429000'"):
        kucoin.parse_volumes(frame("rest_error.json"))


@pytest.mark.parametrize(
    "body",
    [
        b"<html>403 Forbidden</html>",
        b"[]",
        b'{"data":[]}',
        b'{"code":200000,"data":[]}',
        b'{"code":"200000"}',
        b'{"code":"200000","data":{}}',
        b'{"code":"200000","data":[1]}',
        b'{"code":"200000","data":[{"symbol":"BTC-USDT","baseCurrency":"BTC","quoteCurrency":"USDT"}]}',
        b'{"code":"200000","data":[{"symbol":"BTC-USDT","baseCurrency":"BTC","quoteCurrency":"USDT","enableTrading":"true"}]}',
        b'{"code":"200000","data":[{"symbol":"BTC-USDT","baseCurrency":"BTC","enableTrading":true}]}',
        b'{"code":"200000","data":[{"symbol":"","baseCurrency":"BTC","quoteCurrency":"USDT","enableTrading":true}]}',
        b'{"code":"200000","data":[{"symbol":"BTC-USDT","baseCurrency":null,"quoteCurrency":"USDT","enableTrading":true}]}',
        frame("symbols.json")[:-30],
    ],
)
def test_parse_instruments_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        kucoin.parse_instruments(body, {})


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"code":"200000","data":[]}',
        b'{"code":"200000","data":{}}',
        b'{"code":"200000","data":{"ticker":{}}}',
        b'{"code":"200000","data":{"ticker":[null]}}',
        b'{"code":"200000","data":{"ticker":[{"symbol":"BTC-USDT"}]}}',
        b'{"code":"200000","data":{"ticker":[{"symbol":"BTC-USDT","volValue":"inf"}]}}',
        b'{"code":"200000","data":{"ticker":[{"symbol":"BTC-USDT","volValue":""}]}}',
        b'{"code":"200000","data":{"ticker":[{"symbol":"BTC-USDT","volValue":null}]}}',
        b'{"code":"200000","data":{"ticker":[{"symbol":null,"volValue":"1"}]}}',
        frame("all_tickers.json")[:-30],
    ],
)
def test_parse_volumes_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        kucoin.parse_volumes(body)
