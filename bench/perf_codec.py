"""Issue 8, figure 1: decode + normalize of venue frames, ours against cryptofeed's handlers.

    python -m bench.perf_codec [--seconds 30] [--frames 4000] [--rounds 5] [--out DIR]

**Corpus.** One seeded simulated market (``app.sim.market``, 300 symbols on the eight
venues) is stepped 50 ms at a time; every book change and every batch of new trades is
encoded by the venue's simulator (``app/sim/<venue>.py``, written from the venues'
documentation independently of our codecs; ``tests/test_perf_codec.py`` checks their
fields against the documented frames of ``tests/data/frames/``) until each venue has
``--frames`` best-bid/ask frames; the trade frames of the same steps come along (at least
one a venue). Symbols, prices, sizes and sequence numbers vary.

**Our side.** The venue codec's public interface, ``codec.parse(frame, recv_ts)``, built by
``actors.venues.registry`` from the symbol map our discovery parses out of the
simulator's REST instruments reply. Records produced are counted.

**Anchor.** cryptofeed 2.4.1's ``message_handler`` of the venue's feed class, called
directly with each frame and a counting no-op async callback for the channel (plain
``async def``, so cryptofeed awaits it directly, without its ``Callback`` wrapper). Its
symbol table is seeded with ``Symbols.set`` from the same instruments, which is what its
REST fetch would store (KuCoin's token request is answered by the simulator's own
``bullet-public`` reply); no network is used. Where cryptofeed reads another channel than
ours for the same data (it has no best-bid/ask channel on OKX, Gate, KuCoin, HTX; Bitget
is its v1 API), its frames are built from the same market events in the format its
handler reads, so both sides see the same events, one frame each; the table says so.
MEXC is not in cryptofeed 2.4.1.

**Loop shape.** Per measurement, one coroutine iterates the corpus (``passes`` times) on
one asyncio event loop: cryptofeed's side ``await``\\s its handler per frame (which never
suspends, so no scheduler work is added), ours calls ``parse`` per frame in the same kind
of coroutine. CPU time (``time.process_time``) brackets the loop inside the coroutine.
Each (venue, channel, side) is measured in ``--rounds`` rounds, sides alternating which
goes first; the table reports the median rate. Every pass checks the record count: a side
that silently drops frames fails the run.

**Micro figures** (issue 8's list, re-measured): decoding the Binance bookTicker frame with
stdlib ``json``, ``orjson`` and ``msgspec`` into a typed Struct; encoding one small record
with ``msgpack`` and ``msgspec``; a trio memory channel carrying one item per await vs
100-item batches; pyarrow lists -> Parquet (zstd) rows/s.

Writes ``<out>/perf-codec.json`` (``bench/results/`` by default).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import io
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import msgspec
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import trio
from cryptofeed.defines import L2_BOOK, TICKER, TRADES
from cryptofeed.exchanges import OKX, Binance, Bitget, Bybit, Gateio, Huobi, KuCoin
from cryptofeed.symbols import Symbols

from actors.records import SymbolInfo
from actors.venues.base import VenueCodec, symbol_map
from actors.venues.registry import VENUES
from app.sim.htx import gzip_member
from app.sim.market import Market, SimTrade, SymbolSpec, TopOfBook
from app.sim.server import _WIRES
from app.sim.wire import SimEndpoints, dumps, fixed

NAME = "perf-codec"
RESULTS = Path(__file__).resolve().parent / "results"
GOAL_RATIO = 3.0
SEED = 8
SYMBOLS = 300
STEP_S = 0.05
#: the receive stamps handed to each side (ours: ns integer; cryptofeed: float seconds)
RECV_TS_NS = 1_717_200_000_123_456_789
RECV_TS_S = RECV_TS_NS / 1e9

Frame = str | bytes


# -- cryptofeed's frames where its channel differs from ours --------------------------------------


def _binance_combined(raw: str, stream: str) -> str:
    """Binance's combined-stream wrapper, which cryptofeed requires (its feed uses ``/stream``)."""
    return f'{{"stream":"{stream}","data":{raw}}}'


def _okx_ticker(spec: SymbolSpec, book: TopOfBook, now_ms: int) -> str:
    pd, sd = spec.price_decimals, spec.size_decimals
    inst = f"{spec.base}-{spec.quote}"
    mid = fixed((book.bid + book.ask) / 2.0, pd)
    return dumps({"arg": {"channel": "tickers", "instId": inst}, "data": [{
        "instType": "SPOT", "instId": inst, "last": mid, "lastSz": fixed(book.bid_size, sd),
        "askPx": fixed(book.ask, pd), "askSz": fixed(book.ask_size, sd),
        "bidPx": fixed(book.bid, pd), "bidSz": fixed(book.bid_size, sd),
        "open24h": fixed(spec.price, pd), "high24h": fixed(spec.price * 1.02, pd),
        "low24h": fixed(spec.price * 0.98, pd), "sodUtc0": fixed(spec.price, pd),
        "sodUtc8": fixed(spec.price, pd), "volCcy24h": "1000000", "vol24h": "1000",
        "ts": str(now_ms)}]})


def _gate_ticker(spec: SymbolSpec, book: TopOfBook, now_ms: int) -> str:
    pd = spec.price_decimals
    return dumps({"time": now_ms // 1000, "time_ms": now_ms, "channel": "spot.tickers", "event": "update",
                  "result": {"currency_pair": f"{spec.base}_{spec.quote}",
                             "last": fixed((book.bid + book.ask) / 2.0, pd),
                             "lowest_ask": fixed(book.ask, pd), "highest_bid": fixed(book.bid, pd),
                             "change_percentage": "-0.7634", "base_volume": "1138.9062880772",
                             "quote_volume": "63844439.342660318028",
                             "high_24h": fixed(spec.price * 1.02, pd),
                             "low_24h": fixed(spec.price * 0.98, pd)}})


def _kucoin_ticker(spec: SymbolSpec, book: TopOfBook, now_ms: int) -> str:
    pd, sd = spec.price_decimals, spec.size_decimals
    native = f"{spec.base}-{spec.quote}"
    return dumps({"type": "message", "topic": f"/market/ticker:{native}", "subject": "trade.ticker",
                  "data": {"sequence": str(book.seq), "price": fixed((book.bid + book.ask) / 2.0, pd),
                           "size": fixed(book.bid_size, sd), "bestAsk": fixed(book.ask, pd),
                           "bestAskSize": fixed(book.ask_size, sd), "bestBid": fixed(book.bid, pd),
                           "bestBidSize": fixed(book.bid_size, sd), "time": now_ms}})


def _bitget_v1_ticker(spec: SymbolSpec, book: TopOfBook, now_ms: int) -> str:
    pd = spec.price_decimals
    native = f"{spec.base}{spec.quote}"
    return dumps({"action": "snapshot", "arg": {"instType": "sp", "channel": "ticker", "instId": native},
                  "data": [{"instId": native, "last": fixed((book.bid + book.ask) / 2.0, pd),
                            "open24h": fixed(spec.price, pd), "high24h": fixed(spec.price * 1.02, pd),
                            "low24h": fixed(spec.price * 0.98, pd), "bestBid": fixed(book.bid, pd),
                            "bestAsk": fixed(book.ask, pd), "baseVolume": "1927.0855",
                            "quoteVolume": "89120317.8812", "ts": now_ms, "labeId": 0}]})


def _htx_ticker(spec: SymbolSpec, book: TopOfBook, now_ms: int) -> bytes:
    pd, sd = spec.price_decimals, spec.size_decimals
    native = f"{spec.base}{spec.quote}".lower()
    mid = f"{(book.bid + book.ask) / 2.0:.{pd}f}"
    return gzip_member(
        f'{{"ch":"market.{native}.ticker","ts":{now_ms},"tick":{{"open":{spec.price:.{pd}f},'
        f'"high":{spec.price * 1.02:.{pd}f},"low":{spec.price * 0.98:.{pd}f},"close":{mid},'
        f'"amount":13259.24137056181,"vol":687640987.4125315,"count":448737,'
        f'"bid":{book.bid:.{pd}f},"bidSize":{book.bid_size:.{sd}f},"ask":{book.ask:.{pd}f},'
        f'"askSize":{book.ask_size:.{sd}f},"lastPrice":{mid},"lastSize":{book.bid_size:.{sd}f}}}}}'
    )


def _binance_agg_trade(spec: SymbolSpec, t: SimTrade) -> str:
    raw = dumps({"e": "aggTrade", "E": t.ts_ms, "s": spec.native, "a": t.trade_id,
                 "p": fixed(t.price, 8), "q": fixed(t.size, 8), "f": t.trade_id, "l": t.trade_id,
                 "T": t.ts_ms, "m": not t.taker_buy, "M": True})
    return _binance_combined(raw, f"{spec.native.lower()}@aggTrade")


def _bitget_v1_trades(spec: SymbolSpec, batch: Sequence[SimTrade]) -> str:
    native = f"{spec.base}{spec.quote}"
    return dumps({"action": "update", "arg": {"instType": "sp", "channel": "trade", "instId": native},
                  "data": [[str(t.ts_ms), fixed(t.price, spec.price_decimals),
                            fixed(t.size, spec.size_decimals), "buy" if t.taker_buy else "sell"]
                           for t in batch]})


BookBuilder = Callable[[SymbolSpec, TopOfBook, int], Frame]

#: venue -> (cryptofeed class, its book channel, ours, how its book frames are built
#: (None: the very bytes we get), whether its trade frames are ours)
ANCHORS: dict[str, tuple[Any, str, str, BookBuilder | None, bool]] = {
    "binance": (Binance, "bookTicker (combined stream)", "bookTicker (combined stream)", None, False),
    "bybit": (Bybit, "orderbook.1 via its L2_BOOK handler", "orderbook.1", None, True),
    "okx": (OKX, "tickers", "bbo-tbt", _okx_ticker, True),
    "gate": (Gateio, "spot.tickers", "spot.book_ticker", _gate_ticker, True),
    "kucoin": (KuCoin, "/market/ticker", "/spotMarket/level1", _kucoin_ticker, True),
    "bitget": (Bitget, "v1 ticker (instType sp)", "v2 books1", _bitget_v1_ticker, False),
    "htx": (Huobi, "market.<sym>.ticker (gzip)", "market.<sym>.bbo (gzip)", _htx_ticker, True),
}
OUR_BOOK_CHANNEL = {"mexc": "aggre.bookTicker (protobuf)"}
OUR_TRADE_CHANNEL = {"binance": "trade (combined stream)", "bybit": "publicTrade", "okx": "trades",
                     "mexc": "aggre.deals (protobuf)", "gate": "spot.trades", "kucoin": "/market/match",
                     "bitget": "v2 trade", "htx": "trade.detail (gzip)"}
CF_TRADE_CHANNEL = {"binance": "aggTrade (combined stream)", "bitget": "v1 trade (instType sp)"}


@dataclass
class Case:
    """One (venue, channel): the frames each side gets and the records each must produce."""

    venue: str
    channel: str  # "book" or "trades"
    ours_channel: str
    ours_frames: list[Frame] = field(default_factory=list)
    records: int = 0
    cf_channel: str | None = None
    cf_frames: list[Frame] | None = None

    @property
    def identical(self) -> bool:
        return self.cf_frames is not None and self.cf_frames == self.ours_frames


@dataclass
class Sides:
    """What runs a case: our codec per venue, cryptofeed's feed per venue."""

    codecs: dict[str, VenueCodec]
    feeds: dict[str, Any]
    counter: list[int]


# -- building the corpus, the codecs and cryptofeed's feeds ---------------------------------------


def _wires(market: Market) -> dict[str, Any]:
    wires: dict[str, Any] = {}
    for venue, (module, cls) in _WIRES.items():
        wires[venue] = getattr(importlib.import_module(module), cls)(market)
    return wires


def _instruments(venue: str, wire: Any, market: Market) -> list[SymbolInfo]:
    discovery = VENUES[venue].discovery
    request = discovery.discovery_requests()[0]
    reply = wire.rest(request.method, request.path, dict(request.params), market,
                      SimEndpoints("http://127.0.0.1:1", "ws://127.0.0.1:1"))
    if reply.status != 200:
        raise RuntimeError(f"{venue}: simulated instruments request answered {reply.status}")
    return discovery.parse_instruments(reply.body, {})


def _cf_native(venue: str, info: SymbolInfo) -> str:
    if venue == "bybit":
        return f"{info.base}/{info.quote}"  # cryptofeed spells Bybit spot symbols so
    return info.native


def _cf_feed(venue: str, infos: Sequence[SymbolInfo], wire: Any, market: Market,
             count: Callable[[object, float], Coroutine[Any, Any, None]]) -> Any:
    cls = ANCHORS[venue][0]
    normalized = {f"{i.base}-{i.quote}": _cf_native(venue, i) for i in infos}
    Symbols.set(cls.id, normalized, {"instrument_type": dict.fromkeys(normalized, "spot")})
    if cls is KuCoin:  # its constructor asks for a token; the simulator's own reply stands in
        body = wire.rest("POST", "/api/v1/bullet-public", {}, market,
                         SimEndpoints("http://127.0.0.1:1", "ws://127.0.0.1:1")).body
        bullet = json.loads(body)
        cls = type("OfflineKuCoin", (KuCoin,), {"http_sync": SimpleNamespace(write=lambda *a, **k: bullet)})
    return cls(callbacks={TICKER: count, TRADES: count, L2_BOOK: count})


def build(frames_per_venue: int, seed: int = SEED) -> tuple[list[Case], Sides]:
    """The corpus of every case, and the sides that parse it."""
    venues = list(_WIRES)
    market = Market.synthetic(SYMBOLS, venues, seed)
    wires = _wires(market)
    counter = [0]

    async def count(obj: object, receipt_timestamp: float) -> None:
        counter[0] += 1

    codecs: dict[str, VenueCodec] = {}
    feeds: dict[str, Any] = {}
    books: dict[str, Case] = {}
    trades: dict[str, Case] = {}
    for venue in venues:
        infos = _instruments(venue, wires[venue], market)
        codecs[venue] = VENUES[venue].codec_factory(symbol_map(infos))
        anchor = ANCHORS.get(venue)
        books[venue] = Case(venue, "book", OUR_BOOK_CHANNEL.get(venue) or (anchor[2] if anchor else ""))
        trades[venue] = Case(venue, "trades", OUR_TRADE_CHANNEL[venue])
        if anchor is not None:
            feeds[venue] = _cf_feed(venue, infos, wires[venue], market, count)
            books[venue].cf_channel, books[venue].cf_frames = anchor[1], []
            trades[venue].cf_channel = CF_TRADE_CHANNEL.get(venue, OUR_TRADE_CHANNEL[venue])
            trades[venue].cf_frames = []
    seen_trade = -1
    while (any(len(c.ours_frames) < frames_per_venue for c in books.values())
           or not all(c.ours_frames for c in trades.values())):
        market.step(STEP_S)
        snap = market.snapshot
        for venue, symbol in sorted(snap.changed):  # a frozenset: sorted, so the corpus is the same every run
            case = books[venue]
            if len(case.ours_frames) >= frames_per_venue:
                continue
            book = snap.books[(venue, symbol)]
            frame: Frame = wires[venue].encode_book(book, snap)
            if venue == "binance":
                assert isinstance(frame, str)
                frame = _binance_combined(frame, f"{market.spec(symbol).native.lower()}@bookTicker")
            case.ours_frames.append(frame)
            case.records += 1
            if case.cf_frames is not None:
                builder = ANCHORS[venue][3]
                case.cf_frames.append(frame if builder is None
                                      else builder(market.spec(symbol), book, snap.now_ms))
        new = [t for t in snap.trades if t.seq > seen_trade]
        if new:
            seen_trade = new[-1].seq
        by_venue: dict[str, list[SimTrade]] = {}
        for t in new:
            by_venue.setdefault(t.venue, []).append(t)
        for venue, batch in by_venue.items():
            if len(books[venue].ours_frames) >= frames_per_venue and trades[venue].ours_frames:
                continue
            _add_trades(trades[venue], wires[venue], market, batch)
    cases = [c for v in venues for c in (books[v], trades[v])]
    return cases, Sides(codecs, feeds, counter)


def _add_trades(case: Case, wire: Any, market: Market, batch: list[SimTrade]) -> None:
    frames: list[Frame] = wire.encode_trades(batch)
    if case.venue == "binance":
        frames = [_binance_combined(str(f), f"{market.spec(t.symbol).native.lower()}@trade")
                  for f, t in zip(frames, batch, strict=True)]
    case.ours_frames.extend(frames)
    case.records += len(batch)
    if case.cf_frames is None:
        return
    if case.venue == "binance":
        case.cf_frames.extend(_binance_agg_trade(market.spec(t.symbol), t) for t in batch)
    elif case.venue == "bitget":  # one frame per symbol, as the v2 frames of the simulator
        groups: dict[str, list[SimTrade]] = {}
        for t in batch:
            groups.setdefault(t.symbol, []).append(t)
        case.cf_frames.extend(_bitget_v1_trades(market.spec(s), g[::-1]) for s, g in groups.items())
    else:
        case.cf_frames.extend(frames)


# -- measuring ------------------------------------------------------------------------------------


async def _ours(codec: VenueCodec, frames: Sequence[Frame], passes: int) -> tuple[float, int]:
    parse = codec.parse
    ts = RECV_TS_NS
    n = 0
    start = time.process_time()
    for _ in range(passes):
        for frame in frames:
            n += len(parse(frame, ts).records)
    return time.process_time() - start, n


async def _anchor(feed: Any, frames: Sequence[Frame], passes: int, counter: list[int]) -> tuple[float, int]:
    handler = feed.message_handler
    conn = _CONN
    ts = RECV_TS_S
    before = counter[0]
    start = time.process_time()
    for _ in range(passes):
        for frame in frames:
            await handler(frame, conn, ts)
    return time.process_time() - start, counter[0] - before


#: what cryptofeed's handlers read of a connection (Bybit tells spot from linear by the address)
_CONN = SimpleNamespace(address="wss://stream.bybit.com/v5/public/spot", uuid="perf-codec", subscription={})


def _side(loop: asyncio.AbstractEventLoop, case: Case, sides: Sides, side: str,
          passes: int) -> tuple[float, int]:
    """One measurement: (frames per CPU-second, records produced).

    Raises when the side did not produce every record its frames carry.
    """
    if side == "ours":
        cpu, n = loop.run_until_complete(_ours(sides.codecs[case.venue], case.ours_frames, passes))
        frames = len(case.ours_frames)
    else:
        assert case.cf_frames is not None
        cpu, n = loop.run_until_complete(_anchor(sides.feeds[case.venue], case.cf_frames, passes, sides.counter))
        frames = len(case.cf_frames)
    if n != case.records * passes:
        raise RuntimeError(f"{case.venue} {case.channel} ({side}): {n} records from {passes} passes, "
                           f"expected {case.records * passes}")
    return frames * passes / max(cpu, 1e-9), n


def measure(cases: Sequence[Case], sides: Sides, seconds: float, rounds: int) -> list[dict[str, Any]]:
    loop = asyncio.new_event_loop()
    try:
        # one warm-up pass a side, which also checks every record is produced, then passes a
        # round sized to share ``seconds`` of CPU between every measurement
        jobs = [(c, s) for c in cases for s in ("ours", "cryptofeed") if s == "ours" or c.cf_frames is not None]
        slice_s = seconds / max(1, len(jobs) * rounds)
        passes: dict[tuple[int, str], int] = {}
        seen: dict[tuple[int, str], list[int]] = {}
        for c, s in jobs:
            rate, n = _side(loop, c, sides, s, 1)
            frames = len(c.ours_frames if s == "ours" else c.cf_frames or ())
            passes[(id(c), s)] = max(1, round(slice_s * rate / max(frames, 1)))
            seen[(id(c), s)] = [n, c.records]
        rates: dict[tuple[int, str], list[float]] = {k: [] for k in passes}
        for r in range(rounds):
            for c in cases:
                order = ("ours", "cryptofeed") if r % 2 == 0 else ("cryptofeed", "ours")
                for s in order:
                    if (key := (id(c), s)) in passes:
                        rate, n = _side(loop, c, sides, s, passes[key])
                        rates[key].append(rate)
                        seen[key][0] += n
                        seen[key][1] += c.records * passes[key]
    finally:
        loop.close()
    rows: list[dict[str, Any]] = []
    for c in cases:
        ours = statistics.median(rates[(id(c), "ours")])
        row: dict[str, Any] = {
            "venue": c.venue, "channel": c.channel, "records": c.records,
            "identical_bytes": c.identical,
            "ours": {"channel": c.ours_channel, "frames": len(c.ours_frames), "frames_per_s": round(ours),
                     "records_per_s": round(ours * c.records / len(c.ours_frames)),
                     "passes": passes[(id(c), "ours")], "rounds": [round(x) for x in rates[(id(c), "ours")]],
                     "records_seen": seen[(id(c), "ours")][0], "records_expected": seen[(id(c), "ours")][1]},
            "cryptofeed": None, "ratio": None,
        }
        if c.cf_frames is not None:
            cf = statistics.median(rates[(id(c), "cryptofeed")])
            row["cryptofeed"] = {"channel": c.cf_channel, "frames": len(c.cf_frames),
                                 "frames_per_s": round(cf),
                                 "records_per_s": round(cf * c.records / len(c.cf_frames)),
                                 "passes": passes[(id(c), "cryptofeed")],
                                 "rounds": [round(x) for x in rates[(id(c), "cryptofeed")]],
                                 "records_seen": seen[(id(c), "cryptofeed")][0],
                                 "records_expected": seen[(id(c), "cryptofeed")][1]}
            row["ratio"] = round((ours * c.records / len(c.ours_frames))
                                 / (cf * c.records / len(c.cf_frames)), 2)
        rows.append(row)
    return rows


# -- micro figures --------------------------------------------------------------------------------


class BookTicker(msgspec.Struct):
    u: int
    s: str
    b: str
    B: str
    a: str
    A: str


class SmallRecord(msgspec.Struct, array_like=True):
    venue: str
    symbol: str
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    venue_ts: int
    recv_ts: int
    seq: int


BOOK_TICKER = b'{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}'
RECORD = ("binance", "BTC/USDT", 67012.34, 1.25, 67012.35, 0.731, 1717200000050, RECV_TS_NS, 400900217)


def _rate(fn: Callable[[int], int], seconds: float, rounds: int) -> dict[str, Any]:
    """Items per CPU-second of ``fn(n)`` (which does ``n`` repetitions and returns items done)."""
    n = 1000
    while True:  # calibrate: a run of about seconds / rounds
        start = time.process_time()
        fn(n)
        cpu = time.process_time() - start
        if cpu >= seconds / rounds / 4 or n >= 10**8:
            break
        n *= 4
    n = max(1, int(n * (seconds / rounds) / max(cpu, 1e-9)))
    rates = []
    for _ in range(rounds):
        start = time.process_time()
        items = fn(n)
        rates.append(items / max(time.process_time() - start, 1e-9))
    return {"per_s": round(statistics.median(rates)), "rounds": [round(r) for r in rates]}


def _loop(op: Callable[[], object]) -> Callable[[int], int]:
    def run(n: int) -> int:
        for _ in range(n):
            op()
        return n
    return run


def _trio_channel(batch: int) -> Callable[[int], int]:
    item: object = RECORD

    def run(n: int) -> int:
        messages = max(1, n // batch)

        async def main() -> int:
            send, receive = trio.open_memory_channel[object](1000)
            got = 0

            async def consumer() -> None:
                nonlocal got
                async with receive:
                    async for message in receive:
                        got += len(message) if batch > 1 else 1  # type: ignore[arg-type]

            async with trio.open_nursery() as nursery:
                nursery.start_soon(consumer)
                async with send:
                    payload: object = [item] * batch if batch > 1 else item
                    for _ in range(messages):
                        await send.send(payload)
            return got

        got = trio.run(main)
        if got != messages * batch:
            raise RuntimeError(f"trio channel: {got} items received of {messages * batch}")
        return got
    return run


def _parquet(rows: int) -> Callable[[int], int]:
    venues = ["binance", "bybit", "okx", "mexc", "gate", "kucoin", "bitget", "htx"]
    columns: dict[str, list[Any]] = {
        "venue": [venues[i % 8] for i in range(rows)],
        "symbol": [f"SYM{i % 300}/USDT" for i in range(rows)],
        "bid": [100.0 + (i % 1000) * 0.01 for i in range(rows)],
        "bid_size": [1.0 + (i % 97) * 0.1 for i in range(rows)],
        "ask": [100.01 + (i % 1000) * 0.01 for i in range(rows)],
        "ask_size": [2.0 + (i % 89) * 0.1 for i in range(rows)],
        "venue_ts": [1717200000000 + i for i in range(rows)],
        "recv_ts": [RECV_TS_NS + i * 1000 for i in range(rows)],
        "seq": list(range(rows)),
    }

    def run(n: int) -> int:
        done = 0
        for _ in range(max(1, n // rows)):
            table = pa.table(columns)
            pq.write_table(table, io.BytesIO(), compression="zstd")
            done += rows
        return done
    return run


def micro(seconds: float, rounds: int) -> dict[str, Any]:
    decoder = msgspec.json.Decoder(BookTicker)
    encoder = msgspec.msgpack.Encoder()
    packer = msgpack.Packer()
    record = SmallRecord(*RECORD)
    each = seconds / 9
    return {
        "decode_binance_book_ticker": {
            "frame_bytes": len(BOOK_TICKER),
            "json": _rate(_loop(lambda: json.loads(BOOK_TICKER)), each, rounds),
            "orjson": _rate(_loop(lambda: orjson.loads(BOOK_TICKER)), each, rounds),
            "msgspec_struct": _rate(_loop(lambda: decoder.decode(BOOK_TICKER)), each, rounds),
        },
        "encode_small_record": {
            "record": "9 fields: 2 str, 4 float, 3 int",
            "msgpack_tuple": _rate(_loop(lambda: packer.pack(RECORD)), each, rounds),
            "msgspec_tuple": _rate(_loop(lambda: encoder.encode(RECORD)), each, rounds),
            "msgspec_struct": _rate(_loop(lambda: encoder.encode(record)), each, rounds),
        },
        "trio_memory_channel_items": {
            "one_per_await": _rate(_trio_channel(1), each, rounds),
            "batches_of_100": _rate(_trio_channel(100), each, rounds),
        },
        "parquet_zstd_rows": {"rows_per_table": 100_000,
                              "pyarrow_lists": _rate(_parquet(100_000), each, rounds)},
    }


# -- entry points ---------------------------------------------------------------------------------


def run(out: Path = RESULTS, *, seconds: float = 30.0, frames: int = 4000, rounds: int = 5,
        micro_seconds: float | None = None, command: str | None = None) -> dict[str, Any]:
    """Measure, print the table and write ``out/perf-codec.json``; returns what it wrote.

    ``seconds`` is the CPU time shared by the codec measurements (micro figures take
    ``micro_seconds``, a quarter of it by default, on top).
    """
    from bench.harness import machine

    cases, sides = build(frames)
    rows = measure(cases, sides, seconds, rounds)
    books = [r for r in rows if r["channel"] == "book" and r["ratio"] is not None]
    worst = min(books, key=lambda r: r["ratio"]) if books else None
    result: dict[str, Any] = {
        "name": NAME,
        "title": "Codec: decode + normalize per venue, against cryptofeed 2.4.1's handlers",
        "command": command or f"bench.perf_codec.run(seconds={seconds}, frames={frames}, rounds={rounds})",
        "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "source": _source(),
        "method": {
            "timer": "time.process_time (CPU seconds of the process)",
            "rounds": rounds, "statistic": "median of rounds, sides alternating which goes first",
            "corpus": f"app.sim wire encoders, Market.synthetic({SYMBOLS}, 8 venues, seed={SEED}), "
                      f"{frames} book frames per venue plus the trade frames of the same steps",
            "ours": "codec.parse(frame, recv_ts) via actors.venues.registry, records counted",
            "cryptofeed": "feed.message_handler(frame, conn, ts) awaited in one coroutine on one asyncio "
                          "loop, counting no-op async callback; Symbols seeded offline",
            "ratio": "our records/s over cryptofeed's records/s (= frames/s ratio: one frame "
                     "each side per market event)",
        },
        "codec": rows,
        "criteria": [{
            "text": f"codec >= {GOAL_RATIO:g}x cryptofeed on every venue it supports (best bid/ask)",
            "measured": (f"lowest {worst['ratio']}x ({worst['venue']})" if worst else "no anchor"),
            "passed": bool(books) and all(r["ratio"] >= GOAL_RATIO for r in books),
        }],
        "micro": micro(seconds / 4 if micro_seconds is None else micro_seconds, rounds),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(result, indent=1))
    print(table(result))
    return result


def _source() -> dict[str, Any]:
    """The commit measured, and whether the codecs differed from it (a rewrite in progress)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "codecs_modified": bool(git("status", "--porcelain", "--", "actors/venues", "actors/records.py"))}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'venue':8} {'channel':7} {'frames':>6} {'ours/s':>10} {'cryptofeed/s':>12} {'ratio':>6}  "
             "channels (ours | cryptofeed)"]
    for r in result["codec"]:
        cf = r["cryptofeed"]
        same = "identical bytes" if r["identical_bytes"] else "own frames"
        lines.append(
            f"{r['venue']:8} {r['channel']:7} {r['ours']['frames']:>6} {r['ours']['frames_per_s']:>10,} "
            f"{(format(cf['frames_per_s'], ',') if cf else '-'):>12} "
            f"{(format(r['ratio'], '.2f') + 'x' if cf else '-'):>6}  "
            f"{r['ours']['channel']} | {cf['channel'] + ' (' + same + ')' if cf else 'not in cryptofeed 2.4.1'}")
    for c in result["criteria"]:
        lines.append(f"{'PASS' if c['passed'] else 'FAIL'}  {c['text']}: {c['measured']}")
    m = result["micro"]
    lines.append("micro (per CPU-second):")
    for group, figures in m.items():
        parts = [f"{k} {v['per_s']:,}" for k, v in figures.items() if isinstance(v, dict)]
        lines.append(f"  {group}: " + ", ".join(parts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf_codec", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="CPU seconds for the codec figures")
    parser.add_argument("--frames", type=int, default=4000, help="book frames per venue")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for perf-codec.json")
    args = parser.parse_args(argv)
    command = "python -m bench.perf_codec " + " ".join(sys.argv[1:] if argv is None else argv)
    result = run(args.out, seconds=args.seconds, frames=args.frames, rounds=args.rounds,
                 command=command.strip())
    return 0 if all(c["passed"] for c in result["criteria"]) else 1


if __name__ == "__main__":
    sys.exit(main())
