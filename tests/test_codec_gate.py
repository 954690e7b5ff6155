"""GateCodec and Gate discovery, fed the frames Gate documents.

Frames live in tests/data/frames/gate/ with the text of Gate's Spot WebSocket v4 and
APIv4 pages: book ticker, trade, client request, server response, pong, the SBE refusal,
the system notifications (service upgrade, both the current envelope and the bare
object the docs showed before 2026-07, and an SBE schema note) and the APIv4 error
body; ``subscribe_error_duplicate.json`` and ``subscribe_response_obu.json`` come from
Gate's spot.obu announcement. The REST samples are the documented first entries plus
entries of the same shape (an ``untradable`` and a ``buyable`` pair; a plain ticker).
Every test asserts the exact records (every field), the exact message text, or the
exact error kind.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues import gate
from actors.venues.base import FrameError, FrameKind, Parsed, RestRequest, symbol_map
from actors.venues.gate import GateCodec
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

NOW_MS = 1_606_292_218_999

SYMBOLS = symbol_map(
    [
        SymbolInfo("gate", "BTC_USDT", "BTC", "USDT"),
        SymbolInfo("gate", "GT_USDT", "GT", "USDT"),
        # The name comes from the metadata, not from the native string.
        SymbolInfo("gate", "BTC3L_USDT", "BTC3L", "USDT"),
    ]
)

BOOK_QUOTE = Quote(
    venue="gate",
    symbol="BTC/USDT",
    bid=19177.79,
    bid_size=0.0003341504,
    ask=19179.38,
    ask_size=0.09,
    venue_ts=1606293275123,
    recv_ts=RECV_TS,
    seq=48733182,
)

TRADE = Trade(
    venue="gate",
    symbol="GT/USDT",
    price=0.4705,
    size=16.47,
    side=Side.SELL,
    venue_ts=1606292218213,
    recv_ts=RECV_TS,
    trade_id="309143071",
)


def frame(name: str) -> bytes:
    return frame_bytes("gate", name)


def book_with(**result_changes: object) -> bytes:
    """The book ticker frame with ``result`` fields replaced (a value of ... deletes it)."""
    return edited(frame("book_ticker.json"), ("result",), **result_changes)


def trade_with(**result_changes: object) -> bytes:
    """The trade frame with ``result`` fields replaced (... deletes)."""
    return edited(frame("trades.json"), ("result",), **result_changes)


@pytest.fixture
def codec() -> GateCodec:
    return GateCodec(SYMBOLS)


# --- data frames ------------------------------------------------------------------------


@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "str"])
def test_book_ticker_is_one_quote(codec: GateCodec, as_text: bool) -> None:
    raw = frame("book_ticker.json")
    parsed = codec.parse(raw.decode() if as_text else raw, RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, records=(BOOK_QUOTE,))


def test_book_ticker_without_time_ms_as_older_docs_show_it(codec: GateCodec) -> None:
    raw = (
        b'{"time":1606293275,"channel":"spot.book_ticker","event":"update","result":'
        b'{"t":1606293275123,"u":48733182,"s":"BTC_USDT","b":"19177.79","B":"0.0003341504",'
        b'"a":"19179.38","A":"0.09"}}'
    )
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.DATA, records=(BOOK_QUOTE,))


def test_prices_and_sizes_may_be_json_numbers(codec: GateCodec) -> None:
    (quote,) = codec.parse(book_with(b=19177.79, B=3.341504e-4, a="19179.38", A=0.09), RECV_TS).records
    assert quote == BOOK_QUOTE
    assert isinstance(quote, Quote)
    assert type(quote.bid) is float


def test_integer_prices_become_floats(codec: GateCodec) -> None:
    (quote,) = codec.parse(book_with(b=19177, a="19180"), RECV_TS).records
    assert isinstance(quote, Quote)
    assert (quote.bid, quote.ask) == (19177.0, 19180.0)
    assert type(quote.bid) is float


def test_symbol_name_comes_from_the_symbol_map(codec: GateCodec) -> None:
    (quote,) = codec.parse(book_with(s="BTC3L_USDT"), RECV_TS).records
    assert isinstance(quote, Quote)
    assert quote.symbol == "BTC3L/USDT"


@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "str"])
def test_trade_is_one_trade_with_the_taker_side(codec: GateCodec, as_text: bool) -> None:
    raw = frame("trades.json")
    parsed = codec.parse(raw.decode() if as_text else raw, RECV_TS)
    assert parsed == Parsed(FrameKind.DATA, records=(TRADE,))


def test_buy_taker(codec: GateCodec) -> None:
    (trade,) = codec.parse(trade_with(side="buy"), RECV_TS).records
    assert trade == Trade("gate", "GT/USDT", 0.4705, 16.47, Side.BUY, 1606292218213, RECV_TS,
                          "309143071")


@pytest.mark.parametrize(
    ("create_time_ms", "venue_ts"),
    [
        ("1606292218213.4578", 1606292218213),
        ("1606292218213.9999999", 1606292218213),
        ("1606292218213", 1606292218213),
        (1606292218213, 1606292218213),
        (1606292218213.9, 1606292218213),
    ],
)
def test_trade_time_is_truncated_to_whole_milliseconds(
    codec: GateCodec, create_time_ms: object, venue_ts: int
) -> None:
    (trade,) = codec.parse(trade_with(create_time_ms=create_time_ms), RECV_TS).records
    assert isinstance(trade, Trade)
    assert trade.venue_ts == venue_ts


def test_trade_as_older_docs_show_it(codec: GateCodec) -> None:
    raw = (
        b'{"time":1606292218,"channel":"spot.trades","event":"update","result":{"id":309143071,'
        b'"create_time":1606292218,"create_time_ms":"1606292218213.4578","side":"sell",'
        b'"currency_pair":"GT_USDT","amount":"16.4700000000","price":"0.4705000000"}}'
    )
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.DATA, records=(TRADE,))


def test_unmapped_symbol_in_book_is_reported_by_native_name(codec: GateCodec) -> None:
    assert codec.parse(book_with(s="SOL_USDT"), RECV_TS) == Parsed(
        FrameKind.UNKNOWN_SYMBOL, detail="SOL_USDT"
    )


def test_unmapped_symbol_in_trades_is_reported_by_native_name(codec: GateCodec) -> None:
    assert codec.parse(trade_with(currency_pair="SOL_USDT"), RECV_TS) == Parsed(
        FrameKind.UNKNOWN_SYMBOL, detail="SOL_USDT"
    )


def test_symbol_lookup_is_exact(codec: GateCodec) -> None:
    assert codec.parse(book_with(s="btc_usdt"), RECV_TS).kind is FrameKind.UNKNOWN_SYMBOL
    assert codec.parse(book_with(s="BTCUSDT"), RECV_TS).kind is FrameKind.UNKNOWN_SYMBOL


# --- control frames ---------------------------------------------------------------------


def test_documented_server_response_is_an_ack(codec: GateCodec) -> None:
    assert codec.parse(frame("subscribe_response.json"), RECV_TS) == Parsed(
        FrameKind.ACK, detail="subscribe spot.orders"
    )


def test_ack_with_extra_fields_and_no_error_key(codec: GateCodec) -> None:
    assert codec.parse(frame("subscribe_response_obu.json"), RECV_TS) == Parsed(
        FrameKind.ACK, detail="subscribe spot.obu"
    )


def test_ack_echoes_our_request_id(codec: GateCodec) -> None:
    raw = (b'{"time":1606292218,"time_ms":1606292218231,"id":7,"channel":"spot.book_ticker",'
           b'"event":"subscribe","result":{"status":"success"}}')
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.ACK, detail="subscribe spot.book_ticker (id 7)")


def test_unsubscribe_reply_is_an_ack(codec: GateCodec) -> None:
    raw = (b'{"time":1606292218,"time_ms":1606292218231,"id":8,"channel":"spot.trades",'
           b'"event":"unsubscribe","error":null,"result":{"status":"success"}}')
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.ACK, detail="unsubscribe spot.trades (id 8)")


def test_ack_needs_only_a_null_error(codec: GateCodec) -> None:
    # Gate: "you only need to check if error field is null. Parsing result is not necessary."
    raw = b'{"time":1,"channel":"spot.book_ticker","event":"subscribe","error":null,"result":null}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.ACK, detail="subscribe spot.book_ticker")


def test_reply_with_a_failed_status_is_an_error(codec: GateCodec) -> None:
    raw = b'{"time":1,"id":3,"channel":"spot.book_ticker","event":"subscribe","result":{"status":"fail"}}'
    assert codec.parse(raw, RECV_TS) == Parsed(
        FrameKind.ERROR, detail="subscribe spot.book_ticker failed: status 'fail' (id 3)"
    )


@pytest.mark.parametrize(
    ("name", "detail"),
    [
        (
            "subscribe_error_sbe.json",
            "subscribe spot.system failed: code 2: 'channel spot.system does not support SBE'",
        ),
        ("subscribe_error_duplicate.json", "request failed: code 2: 'Alert sub ob.BTC_USDT.50'"),
    ],
)
def test_documented_refusals_are_errors(codec: GateCodec, name: str, detail: str) -> None:
    assert codec.parse(frame(name), RECV_TS) == Parsed(FrameKind.ERROR, detail=detail)


def test_refused_subscription_names_channel_code_and_our_id(codec: GateCodec) -> None:
    raw = (b'{"time":1606292218,"time_ms":1606292218231,"id":4,"channel":"spot.book_ticker",'
           b'"event":"subscribe","error":{"code":2,"message":"Invalid argument provided"},'
           b'"result":null}')
    assert codec.parse(raw, RECV_TS) == Parsed(
        FrameKind.ERROR,
        detail="subscribe spot.book_ticker failed: code 2: 'Invalid argument provided' (id 4)",
    )


def test_documented_pong(codec: GateCodec) -> None:
    assert codec.parse(frame("pong.json"), RECV_TS) == Parsed(FrameKind.PONG)


def test_pong_with_time_ms_and_without_event(codec: GateCodec) -> None:
    raw = b'{"time":1606292218,"time_ms":1606292218231,"channel":"spot.pong","result":null}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.PONG)


UPGRADE = "upgrade: The connection will soon be closed for a service upgrade. Please reconnect."


@pytest.mark.parametrize("name", ["upgrade_notice.json", "upgrade_notice_bare.json"])
def test_service_upgrade_is_a_notice(codec: GateCodec, name: str) -> None:
    assert codec.parse(frame(name), RECV_TS) == Parsed(FrameKind.NOTICE, detail=UPGRADE)


def test_upgrade_notice_without_msg(codec: GateCodec) -> None:
    raw = b'{"time":1,"channel":"spot.system","event":"update","result":{"type":"upgrade","data":{}}}'
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.NOTICE, detail="upgrade: ")


def test_other_system_notifications_are_info(codec: GateCodec) -> None:
    assert codec.parse(frame("system_sbe_schema_invalid.json"), RECV_TS) == Parsed(
        FrameKind.INFO,
        detail="invalid_sbe_schema_id: Your sbe_schema_id '011' does not exist, it has been "
        "adjusted to the default sbe_schema_id '1'.",
    )


def test_control_frames_never_carry_records_or_replies(codec: GateCodec) -> None:
    names = ["subscribe_response.json", "subscribe_error_sbe.json", "pong.json",
             "upgrade_notice.json", "system_sbe_schema_invalid.json"]
    for name in names:
        parsed = codec.parse(frame(name), RECV_TS)
        assert (parsed.records, parsed.reply) == ((), None)


# --- malformed frames -------------------------------------------------------------------

# An SBE frame: the 8-byte little-endian header (blockLength, templateId 1 = bbo,
# schemaId 1, version 0) and a few body bytes; it belongs to the /sbe endpoint only.
SBE_BBO = bytes.fromhex("2800" "0100" "0100" "0000") + bytes(range(16))

MALFORMED = {
    "empty": b"",
    "not_json": b"pong",
    "invalid_utf8": b"\xff\xfe{}",
    "utf16": '{"channel":"spot.pong"}'.encode("utf-16"),
    "lone_surrogate_text": '{"channel":"\ud800"}',
    "sbe_binary": SBE_BBO,
    **JSON_NOT_AN_OBJECT,
    "string": b'"spot.pong"',
    "empty_object": b"{}",
    "unknown_shape": b'{"foo":1}',
    "channel_not_string": b'{"channel":1,"event":"update","result":{}}',
    "event_not_string": b'{"channel":"spot.book_ticker","event":1,"result":{}}',
    "unknown_channel_update": b'{"channel":"spot.tickers","event":"update","result":{}}',
    "unknown_event": b'{"channel":"spot.book_ticker","event":"all","result":{}}',
    "update_without_event": b'{"channel":"spot.book_ticker","result":{}}',
    "server_app_ping": b'{"time":1,"channel":"spot.ping"}',
    "book_result_missing": b'{"channel":"spot.book_ticker","event":"update"}',
    "book_result_null": b'{"channel":"spot.book_ticker","event":"update","result":null}',
    "book_result_list": b'{"channel":"spot.book_ticker","event":"update","result":[]}',
    "trade_result_list": b'{"channel":"spot.trades","event":"update","result":[{}]}',
    "error_not_object": b'{"channel":"spot.trades","event":"subscribe","error":"bad"}',
    "error_code_missing": b'{"channel":"spot.trades","event":"subscribe","error":{"message":"x"}}',
    "error_code_string": b'{"channel":"spot.trades","event":"subscribe","error":{"code":"2","message":"x"}}',
    "error_message_missing": b'{"channel":"spot.trades","event":"subscribe","error":{"code":2}}',
    "ack_id_string": b'{"id":"7","channel":"spot.trades","event":"subscribe","result":{"status":"success"}}',
    "ack_id_bool": b'{"id":true,"channel":"spot.trades","event":"subscribe"}',
    "system_result_missing": b'{"channel":"spot.system","event":"update"}',
    "system_type_missing": b'{"channel":"spot.system","event":"update","result":{"msg":"x"}}',
    "system_type_not_string": b'{"channel":"spot.system","event":"update","result":{"type":1}}',
    "system_msg_not_string": b'{"channel":"spot.system","event":"update","result":{"type":"upgrade","msg":1}}',
    "bare_type_not_string": b'{"type":["upgrade"]}',
    "trailing_garbage": frame("book_ticker.json").strip() + b"]",
    "two_objects": frame("pong.json").strip() + frame("pong.json").strip(),
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_raise_frame_error(codec: GateCodec, raw: str | bytes) -> None:
    with pytest.raises(FrameError):
        codec.parse(raw, RECV_TS)


@pytest.mark.parametrize("name", ["book_ticker.json", "trades.json", "upgrade_notice.json"])
def test_every_truncation_of_a_frame_raises_frame_error(codec: GateCodec, name: str) -> None:
    raw = frame(name).strip()
    assert_every_truncation_raises(lambda data: codec.parse(data, RECV_TS), raw, as_text=True)


@pytest.mark.parametrize("field", ["s", "b", "B", "a", "A", "t", "u"])
def test_book_missing_field_is_named(codec: GateCodec, field: str) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(book_with(**{field: ...}), RECV_TS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("b", None),
        ("b", True),
        ("b", ["19177.79"]),
        ("b", ""),
        ("b", "NaN"),
        ("B", "nan"),
        ("a", "Infinity"),
        ("a", "-inf"),
        ("A", "1_000"),
        ("A", " 0.09"),
        ("a", "19,179.38"),
        ("a", "\u0661\u0669\u0661\u0667\u0669"),  # Arabic-Indic digits
        ("b", "1e999"),
        ("b", "9" * 400),
        ("t", "1606293275123"),
        ("t", 1606293275123.0),
        ("t", None),
        ("u", False),
        ("u", 2**63),
        ("s", ["BTC_USDT"]),
        ("s", None),
    ],
)
def test_book_wrong_value_is_named(codec: GateCodec, field: str, value: object) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(book_with(**{field: value}), RECV_TS)


@pytest.mark.parametrize("literal", [b"18446744073709551615", b"18446744073709551616", b"-9223372036854775809"])
def test_update_id_beyond_int64_is_named(codec: GateCodec, literal: bytes) -> None:
    # orjson yields ints up to 2**64 - 1 and floats beyond; records are stored as int64.
    raw = frame("book_ticker.json").replace(b"48733182", literal)
    with pytest.raises(FrameError, match="'u'"):
        codec.parse(raw, RECV_TS)


@pytest.mark.parametrize("field", ["currency_pair", "side", "price", "amount", "create_time_ms", "id"])
def test_trade_missing_field_is_named(codec: GateCodec, field: str) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(trade_with(**{field: ...}), RECV_TS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("side", "Buy"),
        ("side", "SELL"),
        ("side", "bid"),
        ("side", ""),
        ("side", 1),
        ("price", "nan"),
        ("price", ""),
        ("amount", None),
        ("amount", "16.47e"),
        ("create_time_ms", ""),
        ("create_time_ms", "1606292218213."),
        ("create_time_ms", "-1606292218213"),
        ("create_time_ms", "1.6e12"),
        ("create_time_ms", "\uff11\uff16\uff10\uff16"),  # full-width digits
        ("create_time_ms", "9" * 19),
        ("create_time_ms", None),
        ("create_time_ms", True),
        ("create_time_ms", -1),
        ("create_time_ms", 1e300),
        ("id", "309143071"),
        ("id", 3.5),
        ("currency_pair", 5),
    ],
)
def test_trade_wrong_value_is_named(codec: GateCodec, field: str, value: object) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(trade_with(**{field: value}), RECV_TS)


_JSON_KEYS = ["time", "time_ms", "id", "channel", "event", "error", "result", "code", "message",
              "status", "type", "msg", "t", "u", "s", "b", "B", "a", "A", "currency_pair", "side",
              "amount", "price", "create_time_ms", "payload"]
_JSON_VALUES = json_values(
    _JSON_KEYS,
    ["spot.book_ticker", "spot.trades", "spot.pong", "spot.system", "spot.ping", "update",
     "subscribe", "unsubscribe", "upgrade", "success", "BTC_USDT", "GT_USDT", "buy", "sell",
     "19177.79", "1606292218213.4578", "NaN", ""],
    max_dict=8,
    max_leaves=16,
)
_FRAMES = arbitrary_frames(_JSON_KEYS, _JSON_VALUES)


@settings(max_examples=500, database=None)
@given(raw=_FRAMES, as_text=st.booleans())
def test_parse_returns_parsed_or_raises_frame_error(raw: str | bytes, as_text: bool) -> None:
    assert_parse_total(GateCodec(SYMBOLS), raw, as_text=as_text, errors="surrogateescape")


# --- outgoing messages ------------------------------------------------------------------


def test_connection_settings(codec: GateCodec) -> None:
    assert codec.name == gate.VENUE == "gate"
    assert codec.max_streams_per_connection == 100
    assert codec.max_messages_per_second == 4.0
    assert codec.ping_interval == 20.0
    assert codec.max_connection_age_s is None
    assert (gate.CONNECT_INTERVAL_S, gate.MAX_CONNECTIONS) == (1.0, 50)


def test_ws_path_restores_the_documented_trailing_slash(codec: GateCodec) -> None:
    # The connector appends ws_path to the configured URL with its trailing slash stripped.
    assert "wss://api.gateio.ws/ws/v4/".rstrip("/") + codec.ws_path(["BTC_USDT"]) == (
        "wss://api.gateio.ws/ws/v4/"
    )


def test_subscribe_and_ping_text_is_exact_and_ids_count_up(codec: GateCodec) -> None:
    assert codec.subscribe_messages(["BTC_USDT", "GT_USDT"], trades=False, now_ms=NOW_MS) == [
        '{"time":1606292218,"id":1,"channel":"spot.book_ticker","event":"subscribe",'
        '"payload":["BTC_USDT","GT_USDT"]}'
    ]
    assert codec.ping_message(NOW_MS) == '{"time":1606292218,"channel":"spot.ping"}'
    assert codec.subscribe_messages(["BTC_USDT"], trades=True, now_ms=NOW_MS + 1) == [
        '{"time":1606292219,"id":2,"channel":"spot.book_ticker","event":"subscribe","payload":["BTC_USDT"]}',
        '{"time":1606292219,"id":3,"channel":"spot.trades","event":"subscribe","payload":["BTC_USDT"]}',
    ]
    assert codec.unsubscribe_messages(["GT_USDT"], trades=True, now_ms=NOW_MS) == [
        '{"time":1606292218,"id":4,"channel":"spot.book_ticker","event":"unsubscribe","payload":["GT_USDT"]}',
        '{"time":1606292218,"id":5,"channel":"spot.trades","event":"unsubscribe","payload":["GT_USDT"]}',
    ]


def test_ping_answer_is_a_pong_and_needs_no_reply(codec: GateCodec) -> None:
    ping = orjson.loads(codec.ping_message(NOW_MS) or "")
    assert ping == {"time": 1606292218, "channel": "spot.ping"}
    parsed = codec.parse(frame("pong.json"), RECV_TS)
    assert parsed.kind is FrameKind.PONG
    assert parsed.reply is None


def test_subscribe_has_the_documented_request_shape(codec: GateCodec) -> None:
    documented = orjson.loads(frame("subscribe_request.json"))
    (message,) = codec.subscribe_messages(["BTC_USDT", "GT_USDT"], trades=False, now_ms=NOW_MS)
    ours = orjson.loads(message)
    assert list(ours) == [key for key in documented if key != "auth"]
    assert ours["event"] == documented["event"]
    assert ours["payload"] == documented["payload"]
    assert all(type(ours[key]) is type(documented[key]) for key in ours)


@pytest.mark.parametrize(
    ("count", "trades", "sizes"),
    [
        (0, False, []),
        (0, True, []),
        (1, True, [1, 1]),
        (20, False, [20]),
        (21, False, [20, 1]),
        (45, False, [20, 20, 5]),
        (50, True, [20, 20, 10, 20, 20, 10]),
        (100, False, [20] * 5),
    ],
)
def test_subscribe_never_sends_more_than_twenty_pairs(
    codec: GateCodec, count: int, trades: bool, sizes: list[int]
) -> None:
    natives = [f"SYM{index}_USDT" for index in range(count)]
    messages = [orjson.loads(text) for text in codec.subscribe_messages(natives, trades=trades, now_ms=NOW_MS)]
    assert [len(message["payload"]) for message in messages] == sizes
    assert [message["id"] for message in messages] == list(range(1, len(sizes) + 1))


@settings(database=None)
@given(count=st.integers(min_value=0, max_value=100), trades=st.booleans())
def test_subscribe_chunks_cover_every_stream_once(count: int, trades: bool) -> None:
    if trades:
        count //= 2
    codec = GateCodec(SYMBOLS)
    natives = [f"S{index}_USDT" for index in range(count)]
    messages = [orjson.loads(text) for text in codec.subscribe_messages(natives, trades=trades, now_ms=NOW_MS)]
    assert all(1 <= len(message["payload"]) <= gate.PAIRS_PER_SUBSCRIBE for message in messages)
    assert all(message["time"] == NOW_MS // 1000 for message in messages)
    streams = [(message["channel"], pair) for message in messages for pair in message["payload"]]
    expected = [("spot.book_ticker", native) for native in natives]
    if trades:
        expected += [("spot.trades", native) for native in natives]
    assert streams == expected


def test_subscribe_up_to_the_connection_cap(codec: GateCodec) -> None:
    assert len(codec.subscribe_messages([f"S{i}" for i in range(50)], trades=True, now_ms=NOW_MS)) == 6
    assert len(codec.subscribe_messages([f"S{i}" for i in range(100)], trades=False, now_ms=NOW_MS)) == 5


@pytest.mark.parametrize(("count", "trades", "streams"), [(51, True, 102), (101, False, 101)])
def test_subscribe_beyond_the_connection_cap_is_refused(
    codec: GateCodec, count: int, trades: bool, streams: int
) -> None:
    natives = [f"S{index}" for index in range(count)]
    with pytest.raises(ValueError, match=f"{streams} streams"):
        codec.subscribe_messages(natives, trades=trades, now_ms=NOW_MS)
    with pytest.raises(ValueError, match=f"{streams} streams"):
        codec.unsubscribe_messages(natives, trades=trades, now_ms=NOW_MS)
    # A refused request consumes no ids.
    assert orjson.loads(codec.subscribe_messages(["S"], trades=False, now_ms=NOW_MS)[0])["id"] == 1


def test_ids_are_per_instance() -> None:
    first, second = GateCodec(SYMBOLS), GateCodec(SYMBOLS)
    assert first.subscribe_messages(["BTC_USDT"], trades=False, now_ms=NOW_MS) == (
        second.subscribe_messages(["BTC_USDT"], trades=False, now_ms=NOW_MS)
    )


# --- discovery --------------------------------------------------------------------------


def test_discovery_requests() -> None:
    assert gate.discovery_requests() == (
        RestRequest("/api/v4/spot/currency_pairs"),
        RestRequest("/api/v4/spot/tickers"),
    )


def test_parse_instruments_keeps_tradable_pairs_only() -> None:
    # OLD_USDT is untradable, NEW_USDT only buyable: neither is watched.
    assert gate.parse_instruments(frame("currency_pairs.json"), {}) == [
        SymbolInfo("gate", "ETH_USDT", "ETH", "USDT"),
        SymbolInfo("gate", "BTC_USDT", "BTC", "USDT"),
    ]


@pytest.mark.parametrize("status", ["untradable", "buyable", "sellable", "Tradable", ""])
def test_parse_instruments_skips_every_other_status(status: str) -> None:
    body = orjson.dumps([{"id": "A_B", "base": "A", "quote": "B", "trade_status": status}])
    assert gate.parse_instruments(body, {}) == []


def test_parse_instruments_applies_aliases_and_upper_case() -> None:
    body = orjson.dumps(
        [
            {"id": "XBT_USDT", "base": "xbt", "quote": "USDT", "trade_status": "tradable"},
            {"id": "ETH_XBT", "base": "ETH", "quote": "XBT", "trade_status": "tradable"},
        ]
    )
    assert gate.parse_instruments(body, {"XBT": "btc"}) == [
        SymbolInfo("gate", "XBT_USDT", "BTC", "USDT"),
        SymbolInfo("gate", "ETH_XBT", "ETH", "BTC"),
    ]


def test_parse_instruments_of_an_empty_list() -> None:
    assert gate.parse_instruments(b"[]", {}) == []


def test_parse_volumes_reads_quote_volume() -> None:
    assert gate.parse_volumes(frame("tickers.json")) == {
        "BTC3L_USDT": 1602221.6646837553,
        "BTC_USDT": 145082083.2535,
    }


def test_rest_error_names_label_and_message() -> None:
    with pytest.raises(FrameError, match="currency_pairs failed: INVALID_PARAM_VALUE: 'Invalid"):
        gate.parse_instruments(frame("rest_error.json"), {})
    with pytest.raises(FrameError, match="tickers failed: INVALID_PARAM_VALUE"):
        gate.parse_volumes(frame("rest_error.json"))


@pytest.mark.parametrize(
    "body",
    [
        b"<html>403 Forbidden</html>",
        b"",
        b"{}",
        b'{"data":[]}',
        b"null",
        b"[1]",
        b"[[]]",
        b'[{"id":"BTC_USDT","base":"BTC","trade_status":"tradable"}]',
        b'[{"id":"BTC_USDT","quote":"USDT","trade_status":"tradable"}]',
        b'[{"base":"BTC","quote":"USDT","trade_status":"tradable"}]',
        b'[{"id":"","base":"BTC","quote":"USDT","trade_status":"tradable"}]',
        b'[{"id":"BTC_USDT","base":"","quote":"USDT","trade_status":"tradable"}]',
        b'[{"id":"BTC_USDT","base":"BTC","quote":null,"trade_status":"tradable"}]',
        b'[{"id":"BTC_USDT","base":"BTC","quote":"USDT"}]',
        b'[{"id":"BTC_USDT","base":"BTC","quote":"USDT","trade_status":true}]',
        b'[{"id":5,"base":"BTC","quote":"USDT","trade_status":"tradable"}]',
        frame("currency_pairs.json")[:-30],
    ],
)
def test_parse_instruments_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        gate.parse_instruments(body, {})


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b'{"label":"TOO_MANY_REQUESTS"}',
        b"[null]",
        b'[{"currency_pair":"BTC_USDT"}]',
        b'[{"currency_pair":"BTC_USDT","quote_volume":"inf"}]',
        b'[{"currency_pair":"BTC_USDT","quote_volume":""}]',
        b'[{"currency_pair":"BTC_USDT","quote_volume":null}]',
        b'[{"currency_pair":"BTC_USDT","quote_volume":true}]',
        b'[{"currency_pair":null,"quote_volume":"1"}]',
        b'[{"currency_pair":"","quote_volume":"1"}]',
        frame("tickers.json")[:-10],
    ],
)
def test_parse_volumes_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        gate.parse_volumes(body)


def test_parse_volumes_accepts_numbers() -> None:
    assert gate.parse_volumes(b'[{"currency_pair":"BTC_USDT","quote_volume":12}]') == {"BTC_USDT": 12.0}
