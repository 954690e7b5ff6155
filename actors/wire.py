"""Record batches between spreadwatch processes (NATS): msgpack, typed on the way in.

One message carries records of one venue (the venue is also the last token of its
subject, ``<prefix>.quotes.<venue>`` or ``<prefix>.records.<venue>``):

    {"v": 1, "venue": "binance", "src": "<process id>", "seq": 17, "sent": <ns>,
     "q": [[symbol, bid, bid_size, ask, ask_size, venue_ts, recv_ts, seq], ...],
     "t": [[symbol, price, size, side, venue_ts, recv_ts, trade_id], ...],
     "down": <ns>}                                   # optional: the venue's connection was lost

Rows are msgpack arrays (no key per field): a quote row packs to ~60 bytes. ``seq``
counts the sender's batches per subject family, so a receiver can count gaps; ``sent``
is the sender's wall clock, so a receiver can measure the hop.

Decoding is strict, whoever published: msgspec checks every type and bound in one pass
(a price must be positive and finite, a timestamp a non-negative int64, a symbol a short
string) and raises :class:`WireError` on anything else. Callers count those and go on.
A NATS subject is open to any client that can connect, so this is an edge like a
venue's socket: bad input is counted, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import msgspec

from actors.records import Opportunity, OpportunityState, Quote, Side, Trade

VERSION = 1

#: largest price or size accepted (the codecs' own bound is the same order)
_MAX_VALUE = 1e15
_Price = Annotated[float, msgspec.Meta(gt=0, lt=_MAX_VALUE)]
_Size = Annotated[float, msgspec.Meta(ge=0, lt=_MAX_VALUE)]
_Ns = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_Text = Annotated[str, msgspec.Meta(max_length=64)]
_Venue = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
#: a spread in basis points: finite, and far beyond anything a real market shows
_Bps = Annotated[float, msgspec.Meta(gt=-1e9, lt=1e9)]


class WireError(ValueError):
    """A batch that is not a valid spreadwatch record batch."""


class _QuoteRow(msgspec.Struct, array_like=True, frozen=True, gc=False):
    symbol: _Text
    bid: _Price
    bid_size: _Size
    ask: _Price
    ask_size: _Size
    venue_ts: _Ns
    recv_ts: _Ns
    seq: _Ns


class _TradeRow(msgspec.Struct, array_like=True, frozen=True, gc=False):
    symbol: _Text
    price: _Price
    size: _Size
    side: Annotated[int, msgspec.Meta(ge=0, le=2)]
    venue_ts: _Ns
    recv_ts: _Ns
    trade_id: _Text


class _Batch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    v: int
    venue: _Venue
    src: _Text
    seq: _Ns
    sent: _Ns
    q: list[_QuoteRow] = []
    t: list[_TradeRow] = []
    down: _Ns | None = None


class Batch(msgspec.Struct, frozen=True):
    """A decoded batch: records rebuilt with their venue."""

    venue: str
    src: str
    seq: int
    sent_ns: int
    quotes: list[Quote]
    trades: list[Trade]
    down_ns: int | None = None

    def __len__(self) -> int:
        return len(self.quotes) + len(self.trades)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Batch)


def encode_batch(venue: str, src: str, seq: int, sent_ns: int, records: Iterable[Quote | Trade],
                 *, down_ns: int | None = None) -> bytes:
    """Pack ``records`` (all of ``venue``) into one message."""
    quotes: list[tuple[object, ...]] = []
    trades: list[tuple[object, ...]] = []
    for r in records:
        if type(r) is Quote:
            quotes.append((r.symbol, r.bid, r.bid_size, r.ask, r.ask_size, r.venue_ts, r.recv_ts,
                           r.seq))
        else:
            assert type(r) is Trade
            trades.append((r.symbol, r.price, r.size, int(r.side), r.venue_ts, r.recv_ts,
                           r.trade_id))
    doc: dict[str, object] = {"v": VERSION, "venue": venue, "src": src, "seq": seq, "sent": sent_ns}
    if quotes:
        doc["q"] = quotes
    if trades:
        doc["t"] = trades
    if down_ns is not None:
        doc["down"] = down_ns
    return _encoder.encode(doc)


def decode_batch(payload: bytes, *, venue: str | None = None) -> Batch:
    """Unpack and validate one message; ``venue`` (from the subject) must match the body's.

    Raises :class:`WireError` naming what is wrong.
    """
    try:
        raw = _decoder.decode(payload)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise WireError(f"bad batch: {exc}") from None
    if raw.v != VERSION:
        raise WireError(f"bad batch: version {raw.v}, expected {VERSION}")
    if venue is not None and raw.venue != venue:
        raise WireError(f"bad batch: venue {raw.venue!r} on the subject of {venue!r}")
    name = raw.venue
    quotes = [Quote(name, r.symbol, r.bid, r.bid_size, r.ask, r.ask_size, r.venue_ts, r.recv_ts,
                    r.seq) for r in raw.q]
    trades = [Trade(name, r.symbol, r.price, r.size, Side(r.side), r.venue_ts, r.recv_ts,
                    r.trade_id) for r in raw.t]
    return Batch(name, raw.src, raw.seq, raw.sent, quotes, trades, raw.down)


# -- opportunities (``<prefix>.opportunities``, from ``spreadwatch serve``) -------------------

class _OpportunityRow(msgspec.Struct, array_like=True, frozen=True, gc=False):
    symbol: _Text
    buy_venue: _Venue
    sell_venue: _Venue
    state: OpportunityState
    gross_bps: _Bps
    net_bps: _Bps
    peak_net_bps: _Bps
    mean_net_bps: _Bps
    buy_price: _Price
    buy_size: _Size
    sell_price: _Price
    sell_size: _Size
    opened_at: _Ns
    closed_at: _Ns


class _OpportunityBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    v: int
    src: _Text
    sent: _Ns
    o: list[_OpportunityRow]


_opportunity_decoder = msgspec.msgpack.Decoder(_OpportunityBatch)


def encode_opportunities(src: str, sent_ns: int, events: Iterable[Opportunity]) -> bytes:
    """Pack opportunity events (open and close, as the shards emit them for a recorder)."""
    rows = [(o.symbol, o.buy_venue, o.sell_venue, o.state.value, o.gross_bps, o.net_bps,
             o.peak_net_bps, o.mean_net_bps, o.buy_price, o.buy_size, o.sell_price, o.sell_size,
             o.opened_at, o.closed_at) for o in events]
    return _encoder.encode({"v": VERSION, "src": src, "sent": sent_ns, "o": rows})


def decode_opportunities(payload: bytes) -> list[Opportunity]:
    """Unpack and validate one opportunities message; raises :class:`WireError`."""
    try:
        raw = _opportunity_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise WireError(f"bad opportunities batch: {exc}") from None
    if raw.v != VERSION:
        raise WireError(f"bad opportunities batch: version {raw.v}, expected {VERSION}")
    return [Opportunity(r.symbol, r.buy_venue, r.sell_venue, r.state, r.gross_bps, r.net_bps,
                        r.peak_net_bps, r.mean_net_bps, r.buy_price, r.buy_size, r.sell_price,
                        r.sell_size, r.opened_at, r.closed_at) for r in raw.o]


def opportunity_id(o: Opportunity) -> str:
    """What one opportunity event is, whoever computed it: two serve processes fed the
    same quotes emit the same event, and the stream keeps one (``Nats-Msg-Id``)."""
    return (f"opp|{o.symbol}|{o.buy_venue}|{o.sell_venue}|{o.state.value}|{o.opened_at}|"
            f"{o.closed_at}")
