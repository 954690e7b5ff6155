"""HtxCodec and HTX discovery, fed the frames HTX documents.

Frames live in tests/data/frames/htx/ as the venue documents them *after* gunzip
(``*.json``); on the wire every server frame is that text gzip-compressed, so the tests
compress it with :func:`wire` (gzip, mtime 0). ``bbo.json.gz.b64`` holds the wire bytes
of ``bbo.json`` as base64 text. Every test asserts the exact records (every field), the
exact message text, or the exact error kind.
"""

from __future__ import annotations

import base64
import gzip
import zlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.records import Quote, Side, SymbolInfo, Trade
from actors.venues import htx
from actors.venues.base import FrameError, FrameKind, Parsed, RestRequest, symbol_map
from actors.venues.htx import HtxCodec
from tests.codec_support import (
    JSON_NOT_AN_OBJECT,
    RECV_TS,
    assert_every_truncation_raises,
    assert_parse_total,
    edited,
    frame_bytes,
    json_objects,
    json_values,
)

SYMBOLS = symbol_map(
    [
        SymbolInfo("htx", "btcusdt", "BTC", "USDT"),
        SymbolInfo("htx", "ethbtc", "ETH", "BTC"),
        # The name comes from the metadata, not from the native string.
        SymbolInfo("htx", "btc3lusdt", "BTC3L", "USDT"),
    ]
)

BBO_QUOTE = Quote(
    venue="htx",
    symbol="BTC/USDT",
    bid=52665.01,
    bid_size=0.178567,
    ask=52665.02,
    ask_size=1.502181,
    venue_ts=1630994555539,
    recv_ts=RECV_TS,
    seq=137005210233,
)

TRADE = Trade(
    venue="htx",
    symbol="BTC/USDT",
    price=52648.62,
    size=0.006754,
    side=Side.BUY,
    venue_ts=1630994963173,
    recv_ts=RECV_TS,
    trade_id="102523573486",
)


def frame(name: str) -> bytes:
    """The documented (decompressed) text of a frame or REST payload."""
    return frame_bytes("htx", name)


def wire(text: bytes | str) -> bytes:
    """What HTX sends for ``text``: one gzip member (mtime 0, so the bytes are stable)."""
    return gzip.compress(text.encode() if isinstance(text, str) else text, mtime=0)


def bbo_with(**tick_changes: object) -> bytes:
    """The bbo frame, on the wire, with ``tick`` fields replaced (a value of ... deletes)."""
    return wire(edited(frame("bbo.json"), ("tick",), **tick_changes))


def trade_with(**changes: object) -> bytes:
    """The trade.detail frame, on the wire, with fields of its one trade replaced (... deletes)."""
    return wire(edited(frame("trade_detail.json"), ("tick", "data", 0), **changes))


@pytest.fixture
def codec() -> HtxCodec:
    return HtxCodec(SYMBOLS)


# --- data frames ------------------------------------------------------------------------


def test_bbo_is_one_quote(codec: HtxCodec) -> None:
    assert codec.parse(wire(frame("bbo.json")), RECV_TS) == Parsed(
        FrameKind.DATA, records=(BBO_QUOTE,)
    )


def test_stored_wire_bytes_parse_to_the_same_quote(codec: HtxCodec) -> None:
    raw = base64.b64decode(frame("bbo.json.gz.b64").decode())
    assert raw[:2] == b"\x1f\x8b"
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.DATA, records=(BBO_QUOTE,))


def test_bbo_compressed_at_any_level_parses(codec: HtxCodec) -> None:
    for level in (0, 1, 9):
        raw = gzip.compress(frame("bbo.json"), compresslevel=level, mtime=1630994555)
        assert codec.parse(raw, RECV_TS).records == (BBO_QUOTE,)


def test_bbo_values_may_be_strings_as_in_older_docs(codec: HtxCodec) -> None:
    raw = bbo_with(ask="52665.02", askSize="1.502181", bid="52665.01", bidSize="0.178567")
    (quote,) = codec.parse(raw, RECV_TS).records
    assert quote == BBO_QUOTE
    assert isinstance(quote, Quote)
    assert type(quote.bid) is float


def test_bbo_integer_values_become_floats(codec: HtxCodec) -> None:
    (quote,) = codec.parse(bbo_with(ask=52666, askSize=2, bid="52665", bidSize=1e-3), RECV_TS).records
    assert quote == Quote("htx", "BTC/USDT", 52665.0, 0.001, 52666.0, 2.0, 1630994555539, RECV_TS,
                          137005210233)
    assert isinstance(quote, Quote)
    assert type(quote.ask) is float
    assert type(quote.ask_size) is float


def test_symbol_name_comes_from_the_symbol_map(codec: HtxCodec) -> None:
    document = orjson.loads(frame("bbo.json"))
    document["ch"] = "market.btc3lusdt.bbo"
    document["tick"]["symbol"] = "btc3lusdt"
    (quote,) = codec.parse(wire(orjson.dumps(document)), RECV_TS).records
    assert isinstance(quote, Quote)
    assert quote.symbol == "BTC3L/USDT"


def test_trade_detail_is_one_trade(codec: HtxCodec) -> None:
    assert codec.parse(wire(frame("trade_detail.json")), RECV_TS) == Parsed(
        FrameKind.DATA, records=(TRADE,)
    )


def test_trade_list_keeps_order_and_sides(codec: HtxCodec) -> None:
    document = orjson.loads(frame("trade_detail.json"))
    second = dict(document["tick"]["data"][0], direction="sell", tradeId=102523573487,
                  price="52648.61", amount=0.5, ts=1630994963174)
    document["tick"]["data"].append(second)
    trades = codec.parse(wire(orjson.dumps(document)), RECV_TS).records
    assert trades == (
        TRADE,
        Trade("htx", "BTC/USDT", 52648.61, 0.5, Side.SELL, 1630994963174, RECV_TS,
              "102523573487"),
    )


def test_empty_trade_list_is_data_without_records(codec: HtxCodec) -> None:
    raw = wire(b'{"ch":"market.btcusdt.trade.detail","ts":1,"tick":{"id":1,"ts":1,"data":[]}}')
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.DATA)


def test_unmapped_symbol_in_bbo_is_reported_by_native_name(codec: HtxCodec) -> None:
    document = orjson.loads(frame("bbo.json"))
    document["ch"] = "market.solusdt.bbo"
    document["tick"]["symbol"] = "solusdt"
    assert codec.parse(wire(orjson.dumps(document)), RECV_TS) == Parsed(
        FrameKind.UNKNOWN_SYMBOL, detail="solusdt"
    )


def test_unmapped_symbol_in_trades_is_reported_by_native_name(codec: HtxCodec) -> None:
    raw = frame("trade_detail.json").replace(b"market.btcusdt.", b"market.solusdt.")
    assert codec.parse(wire(raw), RECV_TS) == Parsed(FrameKind.UNKNOWN_SYMBOL, detail="solusdt")


def test_symbols_are_case_sensitive_like_the_venue(codec: HtxCodec) -> None:
    raw = frame("bbo.json").replace(b"btcusdt", b"BTCUSDT")
    assert codec.parse(wire(raw), RECV_TS) == Parsed(FrameKind.UNKNOWN_SYMBOL, detail="BTCUSDT")


# --- control frames ---------------------------------------------------------------------


def test_server_ping_is_answered_with_the_same_number(codec: HtxCodec) -> None:
    assert codec.parse(wire(frame("ping.json")), RECV_TS) == Parsed(
        FrameKind.PING, reply='{"pong":1492420473027}', detail="1492420473027"
    )


def test_ping_reply_echoes_any_integer() -> None:
    codec = HtxCodec(SYMBOLS)
    parsed = codec.parse(wire(b'{"ping":18212558000}'), RECV_TS)
    assert parsed.reply == '{"pong":18212558000}'
    assert orjson.loads(parsed.reply) == {"pong": 18212558000}


def test_pong_is_a_pong(codec: HtxCodec) -> None:
    assert codec.parse(wire(frame("pong.json")), RECV_TS) == Parsed(
        FrameKind.PONG, detail="18212553000"
    )


def test_subscribe_response_is_an_ack_with_the_id(codec: HtxCodec) -> None:
    assert codec.parse(wire(frame("sub_response.json")), RECV_TS) == Parsed(
        FrameKind.ACK, detail="id1"
    )


def test_unsubscribe_response_is_an_ack(codec: HtxCodec) -> None:
    assert codec.parse(wire(frame("unsub_response.json")), RECV_TS) == Parsed(
        FrameKind.ACK, detail="id4"
    )


def test_ack_without_id(codec: HtxCodec) -> None:
    raw = wire(b'{"status":"ok","subbed":"market.btcusdt.bbo","ts":1489474081631}')
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.ACK, detail="")


def test_ack_with_a_numeric_id(codec: HtxCodec) -> None:
    raw = wire(b'{"id":7,"status":"ok","subbed":"market.btcusdt.bbo","ts":1489474081631}')
    assert codec.parse(raw, RECV_TS) == Parsed(FrameKind.ACK, detail="7")


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (frame("sub_error.json"), "'bad-request': 'invalid topic' (id 'id1')"),
        (frame("ping_error.json"), "'bad-request': 'invalid ping'"),
        (
            b'{"id":"3","status":"error","err-code":"bad-request",'
            b'"err-msg":"symbol trade not open now","ts":1}',
            "'bad-request': 'symbol trade not open now' (id '3')",
        ),
        (
            b'{"id":"4","status":"error","err-code":"bad-request",'
            b'"err-msg":"429 too many request","ts":1}',
            "'bad-request': '429 too many request' (id '4')",
        ),
    ],
    ids=["invalid_topic", "invalid_ping", "trade_not_open", "too_many_requests"],
)
def test_error_frames_say_what_failed(codec: HtxCodec, raw: bytes, detail: str) -> None:
    assert codec.parse(wire(raw), RECV_TS) == Parsed(FrameKind.ERROR, detail=detail)


def test_error_detail_is_bounded(codec: HtxCodec) -> None:
    raw = orjson.dumps({"status": "error", "err-code": "x", "err-msg": "m" * 10_000})
    parsed = codec.parse(wire(raw), RECV_TS)
    assert parsed.kind is FrameKind.ERROR
    assert len(parsed.detail) == 200


def test_pull_response_is_info(codec: HtxCodec) -> None:
    raw = b'{"id":"id10","status":"ok","rep":"market.btcusdt.trade.detail","data":[]}'
    assert codec.parse(wire(raw), RECV_TS) == Parsed(
        FrameKind.INFO, detail="rep market.btcusdt.trade.detail"
    )


def test_no_notice_is_documented_so_unknown_shapes_are_errors(codec: HtxCodec) -> None:
    """HTX documents no maintenance or disconnect notice on this feed: nothing is a NOTICE."""
    for raw in (b'{"action":"close"}', b'{"op":"close","ts":1}', b'{"event":"notice"}'):
        with pytest.raises(FrameError, match="unrecognised frame"):
            codec.parse(wire(raw), RECV_TS)


# --- the gzip layer ---------------------------------------------------------------------


def test_text_frames_are_refused(codec: HtxCodec) -> None:
    with pytest.raises(FrameError, match="text frame"):
        codec.parse(frame("bbo.json").decode(), RECV_TS)
    with pytest.raises(FrameError, match="text frame"):
        codec.parse("", RECV_TS)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{}",
        frame("ping.json"),
        zlib.compress(frame("ping.json")),
        b"\x1f\x8b",
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage",
        bytes(range(256)),
    ],
    ids=["empty", "plain_json_object", "plain_json_ping", "zlib_not_gzip", "magic_only",
         "bad_deflate", "noise"],
)
def test_bytes_that_are_not_gzip_are_refused(codec: HtxCodec, raw: bytes) -> None:
    with pytest.raises(FrameError):
        codec.parse(raw, RECV_TS)


def test_every_truncation_of_a_wire_frame_raises_frame_error(codec: HtxCodec) -> None:
    raw = wire(frame("bbo.json"))
    assert_every_truncation_raises(lambda data: codec.parse(data, RECV_TS), raw)


def test_every_truncation_of_the_json_inside_raises_frame_error(codec: HtxCodec) -> None:
    text = frame("bbo.json").strip()
    assert_every_truncation_raises(lambda data: codec.parse(wire(data), RECV_TS), text)


def test_corrupt_checksum_is_refused(codec: HtxCodec) -> None:
    raw = bytearray(wire(frame("ping.json")))
    raw[-5] ^= 0xFF  # last byte of the CRC-32
    with pytest.raises(FrameError, match="gzip"):
        codec.parse(bytes(raw), RECV_TS)


def test_bytes_after_the_gzip_member_are_refused(codec: HtxCodec) -> None:
    with pytest.raises(FrameError, match="after the gzip member"):
        codec.parse(wire(frame("ping.json")) + b"\x00", RECV_TS)
    with pytest.raises(FrameError, match="after the gzip member"):
        codec.parse(wire(frame("ping.json")) + wire(frame("pong.json")), RECV_TS)


def test_decompression_is_capped(codec: HtxCodec) -> None:
    at_cap = b'{"ping":1}'.ljust(htx.MAX_FRAME_BYTES, b" ")
    assert codec.parse(wire(at_cap), RECV_TS).kind is FrameKind.PING
    with pytest.raises(FrameError, match="more than 1048576 bytes"):
        codec.parse(wire(at_cap + b" "), RECV_TS)


def test_a_decompression_bomb_is_refused(codec: HtxCodec) -> None:
    bomb = gzip.compress(b" " * (64 * htx.MAX_FRAME_BYTES), compresslevel=9, mtime=0)
    assert len(bomb) < 100_000
    with pytest.raises(FrameError, match="more than"):
        codec.parse(bomb, RECV_TS)


@pytest.mark.parametrize(
    "encoded",
    [
        '{"ping": 1, "x": "\u00e9"}'.encode("utf-16"),
        '{"ping": 1, "x": "\u00e9"}'.encode("latin-1"),
        b"\xef\xbb\xbf" + frame("ping.json"),
        b'{"ping": 1, "x": "\xed\xa0\x80"}',
    ],
    ids=["utf16", "latin1", "utf8_bom", "surrogate"],
)
def test_json_in_a_wrong_encoding_is_refused(codec: HtxCodec, encoded: bytes) -> None:
    with pytest.raises(FrameError, match="invalid JSON"):
        codec.parse(wire(encoded), RECV_TS)


# --- malformed content ------------------------------------------------------------------

MALFORMED = {
    "not_json": b"pong",
    **JSON_NOT_AN_OBJECT,
    "string": b'"ping"',
    "empty_object": b"{}",
    "unknown_shape": b'{"foo":1}',
    "trailing_garbage": frame("ping.json").strip() + b"}",
    "two_documents": frame("ping.json") + frame("ping.json"),
    "ping_string": b'{"ping":"1492420473027"}',
    "ping_float": b'{"ping":1492420473027.0}',
    "ping_bool": b'{"ping":true}',
    "ping_null": b'{"ping":null}',
    "ping_too_big": b'{"ping":123456789012345678901234567890}',
    "pong_string": b'{"pong":"1"}',
    "status_not_string": b'{"status":1,"subbed":"market.btcusdt.bbo"}',
    "status_unknown": b'{"status":"maybe","subbed":"market.btcusdt.bbo"}',
    "status_ok_alone": b'{"id":"1","status":"ok","ts":1}',
    "ch_not_string": b'{"ch":1,"tick":{}}',
    "ch_unknown": b'{"ch":"market.btcusdt.depth.step0","ts":1,"tick":{}}',
    "ch_kline": b'{"ch":"market.btcusdt.kline.1min","ts":1,"tick":{}}',
    "ch_no_symbol_bbo": b'{"ch":"market..bbo","ts":1,"tick":{"symbol":""}}',
    "ch_no_symbol_bbo_overlap": b'{"ch":"market.bbo","ts":1,"tick":{"symbol":""}}',
    "ch_no_symbol_trade": b'{"ch":"market.trade.detail","ts":1,"tick":{"data":[]}}',
    "ch_wrong_prefix": b'{"ch":"index.btcusdt.bbo","ts":1,"tick":{}}',
    "bbo_tick_missing": b'{"ch":"market.btcusdt.bbo","ts":1}',
    "bbo_tick_list": b'{"ch":"market.btcusdt.bbo","ts":1,"tick":[]}',
    "trade_tick_missing": b'{"ch":"market.btcusdt.trade.detail","ts":1}',
    "trade_data_object": b'{"ch":"market.btcusdt.trade.detail","ts":1,"tick":{"data":{}}}',
    "trade_item_number": b'{"ch":"market.btcusdt.trade.detail","ts":1,"tick":{"data":[1]}}',
    "deeply_nested": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_content_raises_frame_error(codec: HtxCodec, raw: bytes) -> None:
    with pytest.raises(FrameError):
        codec.parse(wire(raw), RECV_TS)


@pytest.mark.parametrize("field", ["symbol", "bid", "bidSize", "ask", "askSize", "quoteTime",
                                   "seqId"])
def test_bbo_missing_field_is_named(codec: HtxCodec, field: str) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(bbo_with(**{field: ...}), RECV_TS)


def test_bbo_symbol_must_match_the_channel(codec: HtxCodec) -> None:
    with pytest.raises(FrameError, match="'symbol': 'ethbtc' does not match channel symbol 'btcusdt'"):
        codec.parse(bbo_with(symbol="ethbtc"), RECV_TS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bid", None),
        ("bid", True),
        ("bid", "NaN"),
        ("bid", "nan"),
        ("bid", "Infinity"),
        ("bid", "inf"),
        ("bid", "1e999"),
        ("bid", 1e999),
        ("bid", ""),
        ("bid", " 52665.01"),
        ("bid", "52,665.01"),
        ("bid", "52_665.01"),
        ("bid", "\u0665\u0662"),
        ("bid", "0x10"),
        ("bid", [52665.01]),
        ("bidSize", {"v": 1}),
        ("ask", "52665.02 "),
        ("askSize", False),
        ("quoteTime", "1630994555539"),
        ("quoteTime", 1630994555539.5),
        ("quoteTime", True),
        ("seqId", "137005210233"),
        ("seqId", None),
        ("symbol", 1),
        ("symbol", ["btcusdt"]),
    ],
)
def test_bbo_wrong_value_is_named(codec: HtxCodec, field: str, value: object) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(bbo_with(**{field: value}), RECV_TS)


@pytest.mark.parametrize("field", ["direction", "price", "amount", "ts", "tradeId"])
def test_trade_missing_field_is_named(codec: HtxCodec, field: str) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(trade_with(**{field: ...}), RECV_TS)


def test_trade_without_the_obsolete_id_still_parses(codec: HtxCodec) -> None:
    assert codec.parse(trade_with(id=...), RECV_TS).records == (TRADE,)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("direction", "Buy"),
        ("direction", "bid"),
        ("direction", ""),
        ("direction", 1),
        ("price", "nan"),
        ("price", None),
        ("amount", "-inf"),
        ("amount", True),
        ("ts", "1630994963173"),
        ("tradeId", "102523573486"),
        ("tradeId", 1.02523573486e11),
    ],
)
def test_trade_wrong_value_is_named(codec: HtxCodec, field: str, value: object) -> None:
    with pytest.raises(FrameError, match=f"'{field}'"):
        codec.parse(trade_with(**{field: value}), RECV_TS)


_JSON_KEYS = ["ch", "ts", "tick", "symbol", "bid", "bidSize", "ask", "askSize", "quoteTime", "seqId",
              "data", "id", "tradeId", "amount", "price", "direction", "ping", "pong", "status",
              "subbed", "unsubbed", "rep", "err-code", "err-msg"]
_JSON_VALUES = json_values(
    _JSON_KEYS,
    ["market.btcusdt.bbo", "market.btcusdt.trade.detail", "market.solusdt.bbo", "btcusdt",
     "solusdt", "buy", "sell", "ok", "error", "52665.01", "NaN", ""],
)
_DOCUMENTS = json_objects(_JSON_KEYS, _JSON_VALUES)
_FRAMES = (
    st.binary(max_size=200)
    | st.text(max_size=200)
    | st.binary(max_size=200).map(wire)
    | _DOCUMENTS.map(wire)
    | _JSON_VALUES.map(orjson.dumps).map(wire)
    | _DOCUMENTS.map(wire).flatmap(
        lambda raw: st.integers(min_value=0, max_value=len(raw)).map(lambda end: raw[:end])
    )
)


@settings(max_examples=500, database=None)
@given(raw=_FRAMES)
def test_parse_returns_parsed_or_raises_frame_error(raw: str | bytes) -> None:
    parsed = assert_parse_total(HtxCodec(SYMBOLS), raw)
    if parsed is not None:
        assert parsed.reply is None or parsed.kind is FrameKind.PING


# --- outgoing messages ------------------------------------------------------------------


def test_connection_settings(codec: HtxCodec) -> None:
    assert codec.name == "htx" == htx.VENUE
    assert codec.max_streams_per_connection == 100
    assert codec.max_messages_per_second == 5.0
    assert codec.ping_interval is None
    assert codec.max_connection_age_s is None
    assert codec.ws_path(["btcusdt"]) == ""
    assert codec.ping_message(1_700_000_000_000) is None
    assert htx.CONNECT_INTERVAL_S == 1.0
    assert htx.MAX_CONNECTIONS == 20


def test_subscribe_text_is_exact_and_ids_count_up(codec: HtxCodec) -> None:
    assert codec.subscribe_messages(["btcusdt", "ethbtc"], trades=False) == [
        '{"sub":"market.btcusdt.bbo","id":"1"}',
        '{"sub":"market.ethbtc.bbo","id":"2"}',
    ]
    assert codec.subscribe_messages(["btcusdt"], trades=True) == [
        '{"sub":"market.btcusdt.bbo","id":"3"}',
        '{"sub":"market.btcusdt.trade.detail","id":"4"}',
    ]
    assert codec.unsubscribe_messages(["btcusdt"], trades=True) == [
        '{"unsub":"market.btcusdt.bbo","id":"5"}',
        '{"unsub":"market.btcusdt.trade.detail","id":"6"}',
    ]


def test_subscribe_ignores_now_ms(codec: HtxCodec) -> None:
    assert codec.subscribe_messages(["btcusdt"], trades=False, now_ms=123) == [
        '{"sub":"market.btcusdt.bbo","id":"1"}'
    ]


@pytest.mark.parametrize(
    ("method", "documented"),
    [("subscribe_messages", "sub_request.json"), ("unsubscribe_messages", "unsub_request.json")],
)
def test_requests_have_the_documented_shape(codec: HtxCodec, method: str, documented: str) -> None:
    expected = orjson.loads(frame(documented))
    messages = getattr(codec, method)(["btcusdt"], trades=True)
    ours = orjson.loads(messages[1])
    assert ours.keys() == expected.keys()
    topic_key = next(key for key in expected if key != "id")
    assert ours[topic_key] == "market.btcusdt.trade.detail"
    assert isinstance(ours["id"], str)


def test_an_ack_carries_the_id_we_sent(codec: HtxCodec) -> None:
    (message,) = codec.subscribe_messages(["btcusdt"], trades=False)
    request = orjson.loads(message)
    ack = {"id": request["id"], "status": "ok", "subbed": request["sub"], "ts": 1489474081631}
    assert codec.parse(wire(orjson.dumps(ack)), RECV_TS) == Parsed(FrameKind.ACK, detail="1")


@pytest.mark.parametrize(
    ("count", "trades", "messages"),
    [(0, False, 0), (1, False, 1), (1, True, 2), (50, True, 100), (100, False, 100)],
)
def test_one_topic_per_message(codec: HtxCodec, count: int, trades: bool, messages: int) -> None:
    natives = [f"sym{index}usdt" for index in range(count)]
    sent = codec.subscribe_messages(natives, trades=trades)
    assert len(sent) == messages
    assert [orjson.loads(text)["id"] for text in sent] == [str(n) for n in range(1, messages + 1)]


@settings(database=None)
@given(count=st.integers(min_value=0, max_value=50), trades=st.booleans())
def test_subscribe_covers_every_topic_once(count: int, trades: bool) -> None:
    codec = HtxCodec(SYMBOLS)
    natives = [f"s{index}usdt" for index in range(count)]
    messages = [orjson.loads(text) for text in codec.subscribe_messages(natives, trades=trades)]
    assert all(message.keys() == {"sub", "id"} for message in messages)
    topics = [message["sub"] for message in messages]
    expected = [f"market.{native}.bbo" for native in natives]
    if trades:
        expected += [f"market.{native}.trade.detail" for native in natives]
    assert sorted(topics) == sorted(expected)
    assert len(topics) == len(expected)


def test_subscribe_beyond_the_connection_cap_is_refused(codec: HtxCodec) -> None:
    with pytest.raises(ValueError, match="102 topics"):
        codec.subscribe_messages([f"s{index}usdt" for index in range(51)], trades=True)
    with pytest.raises(ValueError, match="101 topics"):
        codec.unsubscribe_messages([f"s{index}usdt" for index in range(101)], trades=False)
    # A refused request uses no id.
    assert codec.subscribe_messages(["btcusdt"], trades=False) == [
        '{"sub":"market.btcusdt.bbo","id":"1"}'
    ]


# --- discovery --------------------------------------------------------------------------


def test_discovery_requests() -> None:
    assert htx.discovery_requests() == (
        RestRequest("/v2/settings/common/symbols"),
        RestRequest("/market/tickers"),
    )


def test_parse_instruments_keeps_online_symbols() -> None:
    assert htx.parse_instruments(frame("settings_common_symbols.json"), {}) == [
        SymbolInfo("htx", "ethusdt", "ETH", "USDT"),
        SymbolInfo("htx", "btcusdt", "BTC", "USDT"),
    ]


def test_parse_instruments_skips_online_symbols_with_trading_disabled() -> None:
    body = orjson.dumps(
        {
            "status": "ok",
            "data": [
                {"sc": "btcusdt", "bc": "btc", "qc": "usdt", "state": "online", "te": False},
                {"sc": "ethusdt", "bc": "eth", "qc": "usdt", "state": "online"},
                {"sc": "trxusdt", "bc": "trx", "qc": "usdt", "state": "online", "te": None},
                {"sc": "xrpusdt", "bc": "xrp", "qc": "usdt", "state": "suspend", "te": True},
                {"sc": "dogeusdt", "bc": "doge", "qc": "usdt", "state": "pre-online"},
            ],
        }
    )
    assert htx.parse_instruments(body, {}) == [
        SymbolInfo("htx", "ethusdt", "ETH", "USDT"),
        SymbolInfo("htx", "trxusdt", "TRX", "USDT"),
    ]


def test_parse_instruments_applies_aliases_and_upper_case() -> None:
    body = orjson.dumps(
        {
            "status": "ok",
            "data": [
                {"sc": "xbtusdt", "bc": "xbt", "qc": "usdt", "state": "online", "te": True},
                {"sc": "ethxbt", "bc": "eth", "qc": "XBT", "state": "online", "te": True},
            ],
        }
    )
    assert htx.parse_instruments(body, {"XBT": "btc"}) == [
        SymbolInfo("htx", "xbtusdt", "BTC", "USDT"),
        SymbolInfo("htx", "ethxbt", "ETH", "BTC"),
    ]


def test_parse_volumes_reads_vol() -> None:
    assert htx.parse_volumes(frame("market_tickers.json")) == {
        "smtusdt": 170526.0643855023,
        "ltcht": 14506.9381937385,
    }


def test_parse_volumes_accepts_decimal_strings() -> None:
    body = b'{"status":"ok","data":[{"symbol":"btcusdt","vol":"598561868.5709001"}]}'
    assert htx.parse_volumes(body) == {"btcusdt": 598561868.5709001}


def test_rest_error_names_the_error_code() -> None:
    with pytest.raises(FrameError, match="status 'error': 'invalid-parameter': 'invalid symbol'"):
        htx.parse_instruments(frame("rest_error.json"), {})
    with pytest.raises(FrameError, match="'invalid-parameter'"):
        htx.parse_volumes(frame("rest_error.json"))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>403 Forbidden</html>",
        b"[]",
        b'{"data":[]}',
        b'{"status":"OK","data":[]}',
        b'{"status":true,"data":[]}',
        b'{"status":"ok"}',
        b'{"status":"ok","data":{}}',
        b'{"status":"ok","data":[1]}',
        b'{"status":"ok","data":[{"sc":"btcusdt","bc":"btc","state":"online"}]}',
        b'{"status":"ok","data":[{"sc":"","bc":"btc","qc":"usdt","state":"online"}]}',
        b'{"status":"ok","data":[{"sc":"btcusdt","bc":"","qc":"usdt","state":"online"}]}',
        b'{"status":"ok","data":[{"sc":"btcusdt","bc":"btc","qc":"usdt"}]}',
        b'{"status":"ok","data":[{"sc":"btcusdt","bc":"btc","qc":"usdt","state":null}]}',
        b'{"status":"ok","data":[{"sc":"btcusdt","bc":"btc","qc":"usdt","state":"online","te":"true"}]}',
        b'{"status":"ok","data":[{"sc":1,"bc":"btc","qc":"usdt","state":"online"}]}',
        frame("settings_common_symbols.json")[:-30],
        gzip.compress(frame("settings_common_symbols.json")),
    ],
)
def test_parse_instruments_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        htx.parse_instruments(body, {})


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"status":"ok","data":[{"symbol":"btcusdt"}]}',
        b'{"status":"ok","data":[{"vol":1.0}]}',
        b'{"status":"ok","data":[{"symbol":"btcusdt","vol":null}]}',
        b'{"status":"ok","data":[{"symbol":"btcusdt","vol":"inf"}]}',
        b'{"status":"ok","data":[{"symbol":"btcusdt","vol":""}]}',
        b'{"status":"ok","data":[{"symbol":"btcusdt","vol":true}]}',
        b'{"status":"ok","data":[{"symbol":null,"vol":1}]}',
        b'{"status":"ok","data":"btcusdt"}',
    ],
)
def test_parse_volumes_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(FrameError):
        htx.parse_volumes(body)
