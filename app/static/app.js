/*
 * spreadwatch browser UI. Vanilla ES2020, no build step, CSP-friendly: no eval, no inline
 * handlers, no HTML built from strings (all text goes through textContent).
 *
 * Talks to the server over the /feed WebSocket (binary msgpack frames, see
 * docs/feed-protocol.md), GET /api/window (the last hour) and GET /api/history (recorded data).
 * Globals from /vendor: MessagePack (@msgpack/msgpack UMD), uPlot (uplot IIFE).
 *
 * The first part of this file (config, parsing, state containers, the Feed client) does not
 * touch the DOM, so Node can load it for tests: outside a browser the file only sets
 * globalThis.SpreadwatchCore and stops.
 */
(function (root) {
  'use strict';

  // ---------------------------------------------------------------- configuration

  const CFG = Object.freeze({
    feedPath: '/feed?batch=1', // several frames per message: see docs/feed-protocol.md
    windowApi: '/api/window',
    historyApi: '/api/history',
    historyMaxPoints: 5000, // the server's cap on max_points
    historySeconds: 3600, // the chart keeps at most this much history
    backoffBaseMs: 500, // reconnect delay: base * 2^attempt, capped, jittered
    backoffCapMs: 30000,
    stableAfterMs: 10000, // a connection that stayed up this long resets the backoff
    policyRetryMs: 30000, // minimum delay after close 1008
    busyRetryMs: 5000, // minimum delay after close 1013
    silenceMs: 45000, // nothing received for this long: the connection is dead
    clientPingMs: 20000, // our own ping, for the round-trip time display
    sendRate: 8, // client messages per second (the server allows 20)
    sendBurst: 8,
    maxMessageBytes: 4096,
    busyResubscribeMs: 2000, // re-send a subscribe the server answered with "busy"
    fadeMs: 4000, // closed opportunities fade out over this long
    tickMs: 250, // refresh of ticking values (durations, ages, clock)
    venueStaleS: 10, // a connected venue silent for this long is shown as stale
    pairsShown: 12,
  });

  // ---------------------------------------------------------------- small helpers

  const isNum = (x) => typeof x === 'number' && Number.isFinite(x);
  const num = (x) => (isNum(x) ? x : null);
  const isObj = (x) => x !== null && typeof x === 'object' && !Array.isArray(x) && !ArrayBuffer.isView(x);
  const str = (x) => (typeof x === 'string' ? x : '');

  const nfCache = new Map();
  function nf(decimals) {
    let f = nfCache.get(decimals);
    if (!f) {
      f = new Intl.NumberFormat('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
      nfCache.set(decimals, f);
    }
    return f;
  }

  function priceDecimals(abs) {
    if (abs >= 10000) return 2;
    if (abs >= 100) return 3;
    if (abs >= 1) return 4;
    if (abs >= 0.01) return 6;
    return 8;
  }

  function fmtPrice(p) {
    return isNum(p) ? nf(priceDecimals(Math.abs(p))).format(p) : '—';
  }

  function fmtSize(s) {
    if (!isNum(s)) return '—';
    const a = Math.abs(s);
    if (a >= 1e9) return `${(s / 1e9).toFixed(2)}B`;
    if (a >= 1e6) return `${(s / 1e6).toFixed(2)}M`;
    if (a >= 1e4) return `${(s / 1e3).toFixed(1)}k`;
    if (a >= 100) return s.toFixed(1);
    if (a >= 1) return s.toFixed(3);
    if (a === 0) return '0';
    return s.toPrecision(3);
  }

  function fmtBps(b, signed = true) {
    if (!isNum(b)) return '—';
    let t = b.toFixed(2);
    if (t === '-0.00') t = '0.00';
    return signed && b > 0 && t !== '0.00' ? `+${t}` : t;
  }

  function fmtDuration(ms) {
    if (!isNum(ms) || ms < 0) return '—';
    if (ms < 1000) return `${Math.round(ms)}ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(1)}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
    const h = Math.floor(m / 60);
    return `${h}h${String(m % 60).padStart(2, '0')}m`;
  }

  function fmtRate(r) {
    if (!isNum(r)) return '—';
    if (r >= 100) return String(Math.round(r));
    if (r >= 10) return r.toFixed(1);
    return r.toFixed(2);
  }

  function fmtTimeUTC(ms) {
    return isNum(ms) ? new Date(ms).toISOString().slice(11, 19) : '--:--:--';
  }

  const SYMBOL_RE = /^[A-Z0-9]{1,30}\/[A-Z0-9]{1,30}$/; // the server's topic grammar

  /** "btc/usdt " -> "BTC/USDT"; null when it is not a BASE/QUOTE symbol. */
  function normalizeSymbol(s) {
    if (typeof s !== 'string') return null;
    const u = s.trim().toUpperCase();
    return SYMBOL_RE.test(u) ? u : null;
  }

  /** "quotes:BTC/USDT" -> "BTC/USDT"; null for topics without a symbol. */
  function topicSymbol(topic) {
    const i = typeof topic === 'string' ? topic.indexOf(':') : -1;
    return i > 0 ? topic.slice(i + 1) : null;
  }

  // ---------------------------------------------------------------- frames

  const KINDS = new Set(['snapshot', 'delta', 'events', 'error', 'ping', 'pong']);

  /** Validate one decoded server message; null when it is not a protocol frame. */
  function parseFrame(m) {
    if (!isObj(m) || typeof m.topic !== 'string' || !KINDS.has(m.kind)) return null;
    return {
      topic: m.topic,
      kind: m.kind,
      ts: isNum(m.ts) ? m.ts : 0,
      seq: isNum(m.seq) ? m.seq : 0,
      data: m.data,
    };
  }

  /** Per-topic sequence check. Gaps are only counted: the server follows one with a snapshot. */
  class SeqTracker {
    constructor() {
      this.last = new Map();
      this.gaps = 0;
      this.missed = 0;
    }

    reset() {
      this.last.clear();
    }

    forget(topic) {
      this.last.delete(topic);
    }

    /** Returns how many frames were skipped before this one (0 if none). */
    check(topic, seq) {
      if (!(seq > 0)) return 0; // 0: nothing broadcast on the topic yet
      const prev = this.last.get(topic);
      this.last.set(topic, seq);
      if (prev === undefined || seq <= prev) return 0; // first frame, or the server restarted the counter
      const missed = seq - prev - 1;
      if (missed > 0) {
        this.gaps += 1;
        this.missed += missed;
      }
      return missed;
    }
  }

  // ---------------------------------------------------------------- topic payloads

  function normRow(r) {
    if (!isObj(r)) return null;
    const symbol = str(r.symbol);
    const buy = str(r.buy_venue);
    const sell = str(r.sell_venue);
    if (!symbol || !buy || !sell) return null;
    return {
      key: `${symbol}|${buy}|${sell}`,
      symbol,
      buy_venue: buy,
      sell_venue: sell,
      gross_bps: num(r.gross_bps),
      net_bps: num(r.net_bps),
      peak_net_bps: num(r.peak_net_bps),
      buy_price: num(r.buy_price),
      buy_size: num(r.buy_size),
      sell_price: num(r.sell_price),
      sell_size: num(r.sell_size),
      opened_at: num(r.opened_at) || 0,
      closed_at: num(r.closed_at) || 0,
      duration_ms: num(r.duration_ms) || 0,
    };
  }

  const ROW_FIELDS = ['gross_bps', 'net_bps', 'peak_net_bps', 'buy_price', 'buy_size', 'sell_price', 'sell_size'];

  function rowChanged(a, b) {
    for (const f of ROW_FIELDS) if (a[f] !== b[f]) return true;
    return false;
  }

  /**
   * The opportunities list: open windows from snapshots, plus closed ones (from "close"
   * events) kept for fadeMs so the UI can fade them out.
   * Entry: {row, closed, closedLocal (local ms), flash: null|'new'|'up'|'down'|'chg', shown}.
   */
  class OppBook {
    constructor(fadeMs) {
      this.fadeMs = fadeMs;
      this.rows = new Map();
    }

    clear() {
      this.rows.clear();
    }

    snapshot(data) {
      if (!isObj(data) || !Array.isArray(data.open)) return false;
      const seen = new Set();
      for (const raw of data.open) {
        const r = normRow(raw);
        if (!r) continue;
        seen.add(r.key);
        const e = this.rows.get(r.key);
        // A snapshot row for a window we already saw close is stale; a new window reopens it.
        if (e && e.closed && e.row.opened_at === r.opened_at) continue;
        this._open(r);
      }
      for (const [k, e] of this.rows) if (!e.closed && !seen.has(k)) this.rows.delete(k);
      return true;
    }

    /** Returns "open", "close" or null (ignored). */
    event(data, nowLocal) {
      if (!isObj(data)) return null;
      const r = normRow(data);
      if (!r) return null;
      if (data.state === 'open') {
        this._open(r);
        return 'open';
      }
      if (data.state === 'close') {
        const e = this.rows.get(r.key);
        if (e) {
          e.row = r;
          e.closed = true;
          e.closedLocal = nowLocal;
          e.flash = null;
        } else {
          this.rows.set(r.key, { row: r, closed: true, closedLocal: nowLocal, flash: null, shown: undefined });
        }
        return 'close';
      }
      return null;
    }

    _open(r) {
      const e = this.rows.get(r.key);
      if (!e) {
        this.rows.set(r.key, { row: r, closed: false, closedLocal: 0, flash: 'new', shown: undefined });
        return;
      }
      const p = e.row;
      if (e.closed) {
        e.closed = false;
        e.flash = 'new';
      } else if (rowChanged(p, r)) {
        const a = p.net_bps;
        const b = r.net_bps;
        e.flash = a !== null && b !== null && b > a ? 'up' : a !== null && b !== null && b < a ? 'down' : 'chg';
      }
      e.row = r;
    }

    /** Drop closed windows whose fade is over. */
    expire(nowLocal) {
      for (const [k, e] of this.rows) if (e.closed && nowLocal - e.closedLocal >= this.fadeMs) this.rows.delete(k);
    }

    openCount() {
      let n = 0;
      for (const e of this.rows.values()) if (!e.closed) n += 1;
      return n;
    }
  }

  /** Duration of a window: live for open ones (from server time), final for closed ones. */
  function liveDuration(e, serverNowMs) {
    const r = e.row;
    if (e.closed) return r.closed_at > 0 && r.opened_at > 0 ? r.closed_at - r.opened_at : r.duration_ms;
    if (r.opened_at > 0 && isNum(serverNowMs)) return Math.max(r.duration_ms, serverNowMs - r.opened_at);
    return r.duration_ms;
  }

  function sortValue(e, key, now) {
    return key === 'duration' ? liveDuration(e, now) : e.row[key];
  }

  /** Sort by key and direction (1 asc, -1 desc); missing values last; ties by row key. */
  function compareEntries(a, b, key, dir, now) {
    const va = sortValue(a, key, now);
    const vb = sortValue(b, key, now);
    const na = va === null || va === undefined || va === '';
    const nb = vb === null || vb === undefined || vb === '';
    if (na !== nb) return na ? 1 : -1;
    if (!na) {
      const c = typeof va === 'string' ? va.localeCompare(vb) : va - vb;
      if (c) return c * dir;
    }
    return a.row.key < b.row.key ? -1 : a.row.key > b.row.key ? 1 : 0;
  }

  function normQuotes(d) {
    if (!isObj(d) || !isObj(d.venues)) return null;
    const venues = Object.create(null);
    for (const v of Object.keys(d.venues)) {
      const q = d.venues[v];
      if (!isObj(q)) continue;
      venues[v] = {
        bid: num(q.bid),
        bid_size: num(q.bid_size),
        ask: num(q.ask),
        ask_size: num(q.ask_size),
        recv_ms: num(q.recv_ms),
        spread_bps: num(q.spread_bps),
        stale: q.stale === true,
      };
    }
    return { symbol: str(d.symbol), venues };
  }

  function normPair(p) {
    if (!isObj(p) || !str(p.buy_venue) || !str(p.sell_venue)) return null;
    return { buy_venue: p.buy_venue, sell_venue: p.sell_venue, gross_bps: num(p.gross_bps), net_bps: num(p.net_bps) };
  }

  function normSpreads(d) {
    if (!isObj(d)) return null;
    const pairs = Array.isArray(d.pairs) ? d.pairs.map(normPair).filter(Boolean) : [];
    return { symbol: str(d.symbol), best: normPair(d.best), pairs };
  }

  function normVenues(d) {
    if (!isObj(d)) return null;
    const out = Object.create(null);
    for (const v of Object.keys(d)) {
      const s = d[v];
      if (!isObj(s)) continue;
      out[v] = {
        connected: s.connected === true,
        connections: num(s.connections) || 0,
        messages: num(s.messages) || 0,
        rate: num(s.rate),
        last_message_age_s: num(s.last_message_age_s),
        reconnects: num(s.reconnects) || 0,
        stale_symbols: num(s.stale_symbols) || 0,
      };
    }
    return out;
  }

  function normSymbols(d) {
    if (!isObj(d) || !Array.isArray(d.symbols)) return null;
    return d.symbols.filter((s) => typeof s === 'string').sort();
  }

  /** The opportunities filter: a minimum net spread (null: any) and a venue on either side (null: any). */
  function passesFilters(row, net, minNet, venue) {
    if (minNet !== null && (net === null || net < minNet)) return false;
    return !venue || row.buy_venue === venue || row.sell_venue === venue;
  }

  /**
   * A GET /api/history body (t in ms, buckets of bucket_ms) in the shape of GET /api/window
   * (t in s, resolution_s), so SeriesStore.loadHistory takes both. Throws on a bad shape.
   */
  function historyToWindow(body) {
    if (!isObj(body) || !Array.isArray(body.t)) throw new Error('malformed /api/history response');
    const bucketMs = isNum(body.bucket_ms) && body.bucket_ms > 0 ? body.bucket_ms : 1000;
    return {
      symbol: str(body.symbol),
      resolution_s: bucketMs / 1000,
      t: body.t.map((ms) => (isNum(ms) ? ms / 1000 : null)),
      venues: isObj(body.venues) ? body.venues : {},
      best_net_bps: Array.isArray(body.best_net_bps) ? body.best_net_bps : [],
    };
  }

  // ---------------------------------------------------------------- chart data

  /**
   * Columnar chart data for one symbol: t (unix s), bid/ask per venue, best net bps.
   * One point per resolution step (1 s): live updates inside the same second overwrite it.
   * layoutVersion changes whenever the series set changes (the chart must be rebuilt).
   */
  class SeriesStore {
    constructor(historySeconds) {
      this.historySeconds = historySeconds;
      this.layoutVersion = 0;
      this.reset(null);
    }

    reset(symbol) {
      this.symbol = symbol;
      this.res = 1;
      this.t = [];
      this.venues = [];
      this.bid = new Map();
      this.ask = new Map();
      this.net = [];
      this.breakNext = false;
      this.layoutVersion += 1;
    }

    /** Load a GET /api/window body; returns the number of points. Throws on a bad shape. */
    loadHistory(body) {
      if (!isObj(body) || !Array.isArray(body.t)) throw new Error('malformed /api/window response');
      const res = isNum(body.resolution_s) && body.resolution_s > 0 ? body.resolution_s : 1;
      const venuesIn = isObj(body.venues) ? body.venues : {};
      const idx = [];
      for (let i = 0; i < body.t.length; i += 1) if (isNum(body.t[i])) idx.push(i);
      idx.sort((a, b) => body.t[a] - body.t[b]);
      const pick = (arr) => idx.map((i) => (Array.isArray(arr) ? num(arr[i]) : null));
      const bid = new Map();
      const ask = new Map();
      const names = Object.keys(venuesIn).sort();
      for (const v of names) {
        const q = isObj(venuesIn[v]) ? venuesIn[v] : {};
        bid.set(v, pick(q.bid));
        ask.set(v, pick(q.ask));
      }
      this.res = res;
      this.t = idx.map((i) => body.t[i]);
      this.venues = names;
      this.bid = bid;
      this.ask = ask;
      this.net = pick(body.best_net_bps);
      this.layoutVersion += 1;
      if (!body.keepAll) this._trim();
      return this.t.length;
    }

    _addVenue(v) {
      if (this.bid.has(v)) return false;
      this.venues.push(v);
      this.venues.sort();
      this.bid.set(v, new Array(this.t.length).fill(null));
      this.ask.set(v, new Array(this.t.length).fill(null));
      this.layoutVersion += 1;
      return true;
    }

    _push(t) {
      this.t.push(t);
      for (const v of this.venues) {
        this.bid.get(v).push(null);
        this.ask.get(v).push(null);
      }
      this.net.push(null);
    }

    _trim() {
      const n = this.t.length;
      if (!n) return;
      const cutoff = this.t[n - 1] - this.historySeconds;
      let k = 0;
      while (k < n && this.t[k] < cutoff) k += 1;
      if (!k) return;
      this.t.splice(0, k);
      for (const v of this.venues) {
        this.bid.get(v).splice(0, k);
        this.ask.get(v).splice(0, k);
      }
      this.net.splice(0, k);
    }

    /**
     * Record the current state (latest quotes and spreads of the symbol) at server time tsMs.
     * Stale quotes are recorded as gaps. Returns true when the series set changed.
     */
    update(tsMs, quotes, spreads) {
      if (!isNum(tsMs) || tsMs <= 0) return false;
      let layout = false;
      if (quotes) for (const v of Object.keys(quotes.venues)) if (this._addVenue(v)) layout = true;
      const t = Math.floor(tsMs / 1000 / this.res) * this.res;
      const n = this.t.length;
      const last = n ? this.t[n - 1] : null;
      let i;
      if (last !== null && t <= last) {
        i = n - 1;
      } else {
        // After an outage, a null point keeps the line from bridging the hole.
        if (this.breakNext && last !== null && t - last > this.res) this._push(last + this.res);
        this._push(t);
        i = this.t.length - 1;
      }
      this.breakNext = false;
      if (quotes) {
        for (const v of this.venues) {
          const q = quotes.venues[v];
          const fresh = q !== undefined && !q.stale;
          this.bid.get(v)[i] = fresh ? q.bid : null;
          this.ask.get(v)[i] = fresh ? q.ask : null;
        }
      }
      if (spreads) this.net[i] = spreads.best ? spreads.best.net_bps : null;
      this._trim();
      return layout;
    }

    /** uPlot data: [t, v1 bid, v1 ask, v2 bid, v2 ask, ..., net]. */
    toData() {
      const out = [this.t];
      for (const v of this.venues) out.push(this.bid.get(v), this.ask.get(v));
      out.push(this.net);
      return out;
    }
  }

  // ---------------------------------------------------------------- feed client

  /** Reconnect delay: exponential, capped, "equal jitter" (uniform in [step/2, step]). */
  function reconnectDelay(attempt, closeCode, random = Math.random) {
    const step = Math.min(CFG.backoffCapMs, CFG.backoffBaseMs * 2 ** Math.min(attempt, 20));
    let d = step / 2 + (random() * step) / 2;
    if (closeCode === 1008) d = Math.max(d, CFG.policyRetryMs * (1 + random() * 0.25));
    else if (closeCode === 1013) d = Math.max(d, CFG.busyRetryMs * (1 + random()));
    return Math.round(d);
  }

  const CLOSE_TEXT = {
    1000: 'closed by the server',
    1001: 'server going away',
    1006: 'connection lost',
    1008: 'refused by server policy (origin not allowed, or abuse)',
    1009: 'a message was too big',
    1011: 'server error',
    1013: 'server full, try again later',
    4000: 'no data from the server (client timeout)',
    4001: 'fell too far behind the live feed',
    4002: 'heartbeat timeout',
  };

  function describeClose(code) {
    return CLOSE_TEXT[code] || (code ? `closed (code ${code})` : 'could not connect');
  }

  /**
   * The /feed WebSocket session: subscriptions that survive reconnects, heartbeat answers,
   * sequence-gap counting, a client-side rate limit, capped exponential backoff with jitter.
   *
   * decode(bytes) returns every MessagePack value of one message, in order: the session
   * is opened with ?batch=1, so a message may hold several frames back to back.
   * handlers: frame(f), error(topic, code, message), gap(topic, missed), open(),
   *           closed({code, reason}, delayMs), status().
   * state: 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'stopped'.
   */
  class Feed {
    constructor(opts) {
      this.url = opts.url;
      this.WS = opts.WebSocket;
      this.encode = opts.encode;
      this.decode = opts.decode;
      this.handlers = opts.handlers || {};
      this.now = opts.now || (() => Date.now());
      this.random = opts.random || Math.random;
      const timers = opts.timers || root;
      this.timers = timers;
      this.topics = new Set();
      this.awaiting = new Set(); // subscribed, no frame received yet (a "busy" may have refused it)
      this.seq = new SeqTracker();
      this.ws = null;
      this.isOpen = false;
      this.state = 'idle';
      this.attempt = 0;
      this.openedAt = 0;
      this.lastRecv = 0;
      this.lastPingAt = 0;
      this.pingSentAt = 0;
      this.rttMs = null;
      this.reconnectTimer = null;
      this.reconnectAt = 0;
      this.lastClose = null;
      this.queue = [];
      this.tokens = CFG.sendBurst;
      this.lastRefill = this.now();
      this.drainTimer = null;
      this.watchdog = null;
      this.stats = { frames: 0, bad: 0, sent: 0 };
    }

    start() {
      if (this.state !== 'idle' && this.state !== 'stopped') return;
      this.state = 'idle';
      this.watchdog = this.timers.setInterval(() => this._tick(), 1000);
      this._connect();
    }

    stop() {
      this.state = 'stopped';
      if (this.watchdog !== null) this.timers.clearInterval(this.watchdog);
      if (this.reconnectTimer !== null) this.timers.clearTimeout(this.reconnectTimer);
      this.watchdog = null;
      this.reconnectTimer = null;
      this._teardown(1000, 'client stopped');
      this._emit('status');
    }

    subscribe(topic) {
      if (this.topics.has(topic)) return;
      this.topics.add(topic);
      this.seq.forget(topic);
      if (this.isOpen) {
        this.awaiting.add(topic);
        this._enqueue({ op: 'subscribe', topic });
      }
    }

    unsubscribe(topic) {
      if (!this.topics.delete(topic)) return;
      this.seq.forget(topic);
      this.awaiting.delete(topic);
      if (this.isOpen) this._enqueue({ op: 'unsubscribe', topic });
    }

    /** Drop a topic the server refused (no unsubscribe is sent, none is resent on reconnect). */
    forget(topic) {
      this.topics.delete(topic);
      this.awaiting.delete(topic);
      this.seq.forget(topic);
    }

    /** Skip the remaining backoff (e.g. the browser came back online). */
    reconnectNow() {
      if (this.state !== 'reconnecting') return;
      this.timers.clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      this._connect();
    }

    _emit(name, ...args) {
      const fn = this.handlers[name];
      if (typeof fn !== 'function') return;
      try {
        fn(...args);
      } catch (err) {
        // A UI bug must not break the connection handling.
        if (root.console) root.console.error(`feed handler "${name}" failed`, err);
      }
    }

    _connect() {
      this.reconnectTimer = null;
      this.state = 'connecting';
      this._emit('status');
      let ws;
      try {
        ws = new this.WS(this.url);
      } catch (err) {
        this._scheduleReconnect(0, String((err && err.message) || err));
        return;
      }
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      ws.onopen = () => this._onOpen(ws);
      ws.onmessage = (ev) => this._onMessage(ws, ev);
      ws.onclose = (ev) => this._onClose(ws, ev.code, ev.reason);
      ws.onerror = () => {}; // a close event always follows
    }

    _onOpen(ws) {
      if (ws !== this.ws) return;
      this.isOpen = true;
      this.state = 'connected';
      this.openedAt = this.now();
      this.lastRecv = this.openedAt;
      this.lastPingAt = this.openedAt;
      this.pingSentAt = 0;
      this.seq.reset();
      this.queue.length = 0;
      this.awaiting = new Set(this.topics);
      for (const topic of this.topics) this._enqueue({ op: 'subscribe', topic });
      this._emit('open');
      this._emit('status');
    }

    _onMessage(ws, ev) {
      if (ws !== this.ws) return;
      this.lastRecv = this.now();
      if (!(ev.data instanceof ArrayBuffer) && !ArrayBuffer.isView(ev.data)) {
        this.stats.bad += 1; // text frames are not part of the protocol
        return;
      }
      let values;
      try {
        values = this.decode(ev.data instanceof ArrayBuffer ? new Uint8Array(ev.data) : ev.data);
      } catch (err) {
        values = [];
      }
      if (!values.length) {
        this.stats.bad += 1;
        return;
      }
      for (const value of values) {
        const f = parseFrame(value);
        if (!f) {
          this.stats.bad += 1;
          continue;
        }
        this._onFrame(f);
        if (ws !== this.ws) return; // a handler closed or replaced the connection
      }
    }

    _onFrame(f) {
      this.stats.frames += 1;

      const tracked = f.topic === '_' || this.topics.has(f.topic);
      if (!tracked && f.kind !== 'error') return; // in flight after an unsubscribe
      if (tracked) {
        const missed = this.seq.check(f.topic, f.seq);
        if (missed > 0) this._emit('gap', f.topic, missed);
        this.awaiting.delete(f.topic);
      }

      if (f.kind === 'error') {
        const d = isObj(f.data) ? f.data : {};
        const code = str(d.code) || 'unknown';
        const message = str(d.message);
        // Errors come on "_"; a server may name the topic concerned in data.topic.
        const topic = f.topic !== '_' ? f.topic : str(d.topic) || '_';
        if (topic !== '_' && this.topics.has(topic) && (code === 'bad_topic' || code === 'too_many_topics')) {
          this.forget(topic);
        } else if (code === 'busy') {
          // The refused request is unknown unless named: re-send every subscribe still
          // unanswered (re-subscribing an active topic is a no-op on the server).
          const retry = topic !== '_' && this.topics.has(topic) ? [topic] : Array.from(this.awaiting);
          this.timers.setTimeout(() => {
            for (const t of retry) if (this.isOpen && this.topics.has(t)) this._enqueue({ op: 'subscribe', topic: t });
          }, CFG.busyResubscribeMs);
        }
        if (code === 'rate_limited') this.tokens = Math.min(this.tokens, -CFG.sendBurst); // back off ~1 s
        this._emit('error', topic, code, message);
        return;
      }

      if (f.topic === '_') {
        if (f.kind === 'ping') {
          const ts = isObj(f.data) && isNum(f.data.ts) ? f.data.ts : f.ts;
          this._sendNow({ op: 'pong', ts });
        } else if (f.kind === 'pong' && this.pingSentAt) {
          this.rttMs = this.now() - this.pingSentAt;
          this.pingSentAt = 0;
          this._emit('status');
        }
      }
      this._emit('frame', f);
    }

    _onClose(ws, code, reason) {
      if (ws !== this.ws) return;
      this._teardown();
      this._scheduleReconnect(code, reason || '');
    }

    _teardown(code, reason) {
      const ws = this.ws;
      this.ws = null;
      this.isOpen = false;
      this.queue.length = 0;
      this.pingSentAt = 0;
      if (this.drainTimer !== null) this.timers.clearTimeout(this.drainTimer);
      this.drainTimer = null;
      if (!ws) return;
      ws.onopen = null;
      ws.onmessage = null;
      ws.onclose = null;
      ws.onerror = null;
      if (code !== undefined) {
        try {
          ws.close(code, reason);
        } catch (err) {
          /* already closing */
        }
      }
    }

    _scheduleReconnect(code, reason) {
      if (this.state === 'stopped') return;
      const now = this.now();
      if (this.openedAt && now - this.openedAt >= CFG.stableAfterMs) this.attempt = 0;
      this.openedAt = 0;
      const delay = reconnectDelay(this.attempt, code, this.random);
      this.attempt += 1;
      this.lastClose = { code, reason, at: now };
      this.reconnectAt = now + delay;
      this.state = 'reconnecting';
      this.reconnectTimer = this.timers.setTimeout(() => this._connect(), delay);
      this._emit('closed', { code, reason }, delay);
      this._emit('status');
    }

    _tick() {
      if (!this.isOpen) return;
      const now = this.now();
      if (now - this.lastRecv > CFG.silenceMs) {
        // The server pings every 15 s; this long without anything means a dead connection.
        this._teardown(4000, 'no data');
        this._scheduleReconnect(4000, 'no data from the server');
        return;
      }
      if (this.pingSentAt && now - this.pingSentAt > CFG.silenceMs) this.pingSentAt = 0;
      if (!this.pingSentAt && now - this.lastPingAt >= CFG.clientPingMs) {
        this.lastPingAt = now;
        if (this._sendNow({ op: 'ping', ts: Math.round(now) })) this.pingSentAt = now;
      }
    }

    _enqueue(msg) {
      // A subscribe and an unsubscribe of one topic both still queued cancel out.
      if (msg.op === 'subscribe' || msg.op === 'unsubscribe') {
        const opposite = msg.op === 'subscribe' ? 'unsubscribe' : 'subscribe';
        const i = this.queue.findIndex((m) => m.op === opposite && m.topic === msg.topic);
        if (i >= 0) {
          this.queue.splice(i, 1);
          return;
        }
        if (this.queue.some((m) => m.op === msg.op && m.topic === msg.topic)) return;
      }
      this.queue.push(msg);
      this._drain();
    }

    _refill() {
      const now = this.now();
      this.tokens = Math.min(CFG.sendBurst, this.tokens + ((now - this.lastRefill) * CFG.sendRate) / 1000);
      this.lastRefill = now;
    }

    _drain() {
      this._refill();
      while (this.queue.length && this.tokens >= 1 && this.isOpen) this._sendNow(this.queue.shift());
      if (this.queue.length && this.isOpen && this.drainTimer === null) {
        const wait = Math.max(50, Math.ceil(((1 - this.tokens) * 1000) / CFG.sendRate));
        this.drainTimer = this.timers.setTimeout(() => {
          this.drainTimer = null;
          this._drain();
        }, wait);
      }
    }

    /** Send now, bypassing the queue (pongs must never wait). Counts against the rate. */
    _sendNow(msg) {
      if (!this.isOpen || !this.ws) return false;
      let bytes;
      try {
        bytes = this.encode(msg);
      } catch (err) {
        return false;
      }
      if (bytes.byteLength > CFG.maxMessageBytes) {
        if (root.console) root.console.error('feed: message too big, not sent', msg);
        return false;
      }
      try {
        this.ws.send(bytes);
      } catch (err) {
        return false;
      }
      this._refill();
      this.tokens -= 1;
      this.stats.sent += 1;
      return true;
    }
  }

  const Core = {
    CFG,
    parseFrame,
    SeqTracker,
    OppBook,
    normRow,
    normQuotes,
    normSpreads,
    normVenues,
    normSymbols,
    SeriesStore,
    Feed,
    reconnectDelay,
    describeClose,
    liveDuration,
    compareEntries,
    passesFilters,
    historyToWindow,
    normalizeSymbol,
    topicSymbol,
    fmtPrice,
    fmtSize,
    fmtBps,
    fmtDuration,
    fmtRate,
    fmtTimeUTC,
  };

  if (typeof document === 'undefined') {
    root.SpreadwatchCore = Core;
    return;
  }

  // ================================================================ browser UI

  const $ = (id) => document.getElementById(id);

  function hashValue() {
    try {
      return decodeURIComponent(root.location.hash.slice(1));
    } catch (err) {
      return ''; // malformed %-escape
    }
  }

  function h(tag, cls, text) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  // ---------------------------------------------------------------- venue colors

  const KNOWN_COLORS = new Map([
    ['binance', '#f0b90b'],
    ['bybit', '#ff7a45'],
    ['okx', '#4e9af1'],
    ['coinbase', '#3ddc97'],
    ['kraken', '#b18cff'],
    ['kucoin', '#2ec4b6'],
    ['gate', '#ff5c8a'],
    ['gateio', '#ff5c8a'],
    ['bitget', '#7fd1ff'],
    ['mexc', '#c3e88d'],
    ['htx', '#d4a373'],
    ['huobi', '#d4a373'],
    ['bitfinex', '#9be15d'],
    ['bitstamp', '#ff9e9e'],
    ['cryptocom', '#8fa8ff'],
  ]);
  const PALETTE = ['#4e9af1', '#f0b90b', '#3ddc97', '#ff7a45', '#b18cff', '#2ec4b6', '#ff5c8a', '#7fd1ff',
    '#c3e88d', '#d4a373', '#9be15d', '#ff9e9e'];
  const venueColors = new Map();

  /** Stable color per venue for this page: known venues have fixed colors, others the next free one. */
  function venueColor(v) {
    let c = venueColors.get(v);
    if (c) return c;
    c = KNOWN_COLORS.get(v);
    if (!c) {
      const used = new Set(venueColors.values());
      c = PALETTE.find((p) => !used.has(p)) || PALETTE[venueColors.size % PALETTE.length];
    }
    venueColors.set(v, c);
    return c;
  }

  function withAlpha(hex, a) {
    const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
    if (!m) return hex;
    return `rgba(${parseInt(m[1], 16)},${parseInt(m[2], 16)},${parseInt(m[3], 16)},${a})`;
  }

  function venueCell(td, venue) {
    td.classList.add('vtd');
    td.style.setProperty('--venue-color', venueColor(venue));
    td.textContent = venue;
    return td;
  }

  // ---------------------------------------------------------------- state

  const prefs = (() => {
    try {
      const p = JSON.parse(root.localStorage.getItem('spreadwatch.ui') || '{}');
      return isObj(p) ? p : {};
    } catch (err) {
      return {};
    }
  })();

  function savePrefs() {
    try {
      root.localStorage.setItem('spreadwatch.ui', JSON.stringify({
        sort: ui.sort,
        minNet: ui.minNet,
        venue: ui.venueFilter,
        symbol: ui.selected,
      }));
    } catch (err) {
      /* private mode, quota: preferences are optional */
    }
  }

  const SORT_KEYS = new Set(['symbol', 'buy_venue', 'sell_venue', 'gross_bps', 'net_bps', 'peak_net_bps',
    'buy_price', 'buy_size', 'sell_price', 'sell_size', 'duration']);
  const TEXT_KEYS = new Set(['symbol', 'buy_venue', 'sell_venue']);

  const ui = {
    venues: null,
    venuesLocal: 0,
    symbols: [],
    book: new OppBook(CFG.fadeMs),
    sort: isObj(prefs.sort) && SORT_KEYS.has(prefs.sort.key) && (prefs.sort.dir === 1 || prefs.sort.dir === -1)
      ? { key: prefs.sort.key, dir: prefs.sort.dir }
      : { key: 'net_bps', dir: -1 },
    minNet: isNum(prefs.minNet) ? prefs.minNet : null,
    venueFilter: typeof prefs.venue === 'string' && prefs.venue ? prefs.venue : null,
    venueOptions: '',
    range: { mode: 'live' }, // or {mode: 'history', fromMs, toMs}
    selected: null,
    quotes: null,
    vanished: new Map(), // venue -> its last quote of the selected symbol, kept (stale) after it left the feed
    spreads: null,
    historyCtl: null,
    clockOffset: null,
    hadConnection: false,
    pickedDefault: false,
  };
  const series = new SeriesStore(CFG.historySeconds);
  let feed = null;

  function noteServerTs(ts) {
    if (!isNum(ts) || ts <= 0) return;
    const off = ts - Date.now();
    ui.clockOffset = ui.clockOffset === null ? off : ui.clockOffset + 0.1 * (off - ui.clockOffset);
  }

  const serverNow = () => Date.now() + (ui.clockOffset || 0);

  // ---------------------------------------------------------------- render scheduling

  const dirty = new Set();
  let rafPending = false;

  function invalidate(...parts) {
    for (const p of parts) dirty.add(p);
    if (!rafPending) {
      rafPending = true;
      root.requestAnimationFrame(render);
    }
  }

  const RENDERERS = {
    status: () => renderStatus(),
    clock: () => setText($('server-time'), ui.clockOffset === null ? '--:--:--' : fmtTimeUTC(serverNow())),
    venues: () => renderVenues(),
    opps: () => renderOpps(),
    quotes: () => renderQuotes(),
    chart: () => chart.draw(),
    hint: () => renderHint(),
  };

  function render() {
    rafPending = false;
    const parts = Array.from(dirty);
    dirty.clear();
    for (const p of parts) {
      try {
        RENDERERS[p]();
      } catch (err) {
        console.error(`render ${p} failed`, err);
      }
    }
  }

  // ---------------------------------------------------------------- messages

  const messages = new Map();
  let messageSeq = 0;

  /** Show a message. level: info | warn | error (errors stay until dismissed or replaced). */
  function notify(level, text, opt = {}) {
    const key = opt.key || `m${(messageSeq += 1)}`;
    const ttl = opt.ttl !== undefined ? opt.ttl : level === 'error' ? 0 : level === 'warn' ? 12000 : 5000;
    clearMessage(key);
    const el = h('div', `msg msg-${level}`);
    el.append(h('span', 'msg-text', text));
    const close = h('button', '', '×');
    close.type = 'button';
    close.title = 'Dismiss';
    close.setAttribute('aria-label', 'Dismiss');
    close.addEventListener('click', () => clearMessage(key));
    el.append(close);
    $('messages').append(el);
    messages.set(key, { el, timer: ttl > 0 ? setTimeout(() => clearMessage(key), ttl) : null });
    while (messages.size > 6) clearMessage(messages.keys().next().value);
  }

  function clearMessage(key) {
    const m = messages.get(key);
    if (!m) return;
    if (m.timer !== null) clearTimeout(m.timer);
    m.el.remove();
    messages.delete(key);
  }

  // ---------------------------------------------------------------- header

  function renderStatus() {
    const conn = $('conn');
    let state;
    let text;
    const st = feed ? feed.state : 'failed';
    if (st === 'connected') {
      state = 'connected';
      text = 'live';
    } else if (st === 'reconnecting') {
      const secs = Math.max(0, Math.ceil((feed.reconnectAt - Date.now()) / 1000));
      state = feed.lastClose && feed.lastClose.code === 1008 ? 'failed' : 'reconnecting';
      text = `reconnecting in ${secs}s`;
    } else if (st === 'connecting' || st === 'idle') {
      state = ui.hadConnection ? 'reconnecting' : 'connecting';
      text = ui.hadConnection ? 'reconnecting…' : 'connecting…';
    } else {
      state = 'failed';
      text = 'offline';
    }
    conn.dataset.state = state;
    setText($('conn-text'), text);
    const lc = feed && feed.lastClose;
    conn.title = lc ? `Last disconnect: ${describeClose(lc.code)}${lc.reason ? ` (${lc.reason})` : ''}` : 'Live feed connection';
    document.body.classList.toggle('offline', st !== 'connected');
    const parts = [];
    if (feed && feed.rttMs !== null) parts.push(`rtt ${Math.round(feed.rttMs)} ms`);
    if (feed) parts.push(feed.seq.gaps ? `gaps ${feed.seq.gaps} (${feed.seq.missed} frames)` : 'gaps 0');
    setText($('feed-stats'), parts.join(' · '));
  }

  // ---------------------------------------------------------------- venue strip

  const venueCards = new Map();

  function makeVenueCard(name) {
    const el = h('div', 'venue');
    el.style.setProperty('--venue-color', venueColor(name));
    const stat = (label, unit) => {
      const s = h('span', 'vstat');
      const b = h('b');
      if (label) s.append(`${label} `);
      s.append(b);
      if (unit) s.append(` ${unit}`);
      return [s, b];
    };
    const [rateS, rate] = stat('', 'msg/s');
    const [ageS, age] = stat('age', '');
    const [rcS, rc] = stat('rc', '');
    const badge = h('span', 'badge');
    el.append(h('span', 'dot'), h('span', 'swatch'), h('span', 'vname', name), rateS, ageS, rcS, badge);
    return { el, rate, age, rc, badge };
  }

  function renderVenues() {
    const wrap = $('venues');
    const v = ui.venues;
    if (!v) return;
    const names = Object.keys(v).sort();
    renderVenueOptions(names);
    if (!venueCards.size) wrap.replaceChildren();
    if (!names.length) {
      wrap.replaceChildren(h('span', 'muted', 'no venues reported'));
      venueCards.clear();
      return;
    }
    const elapsed = Math.max(0, (Date.now() - ui.venuesLocal) / 1000);
    const keep = new Set(names);
    for (const [n, c] of venueCards) {
      if (!keep.has(n)) {
        c.el.remove();
        venueCards.delete(n);
      }
    }
    for (const [i, n] of names.entries()) {
      let c = venueCards.get(n);
      if (!c) {
        c = makeVenueCard(n);
        venueCards.set(n, c);
      }
      if (wrap.children[i] !== c.el) wrap.insertBefore(c.el, wrap.children[i] || null);
      const s = v[n];
      const age = s.last_message_age_s === null ? null : s.last_message_age_s + elapsed;
      let state;
      let badge = '';
      if (!s.connected) {
        state = 'down';
        badge = 'DOWN';
      } else if (age === null) {
        state = 'stale';
        badge = 'NO DATA';
      } else if (age > CFG.venueStaleS) {
        state = 'stale';
        badge = 'STALE';
      } else if (s.stale_symbols > 0) {
        state = 'warn';
        badge = `${s.stale_symbols} stale`;
      } else {
        state = 'ok';
      }
      c.el.dataset.state = state;
      setText(c.rate, fmtRate(s.rate));
      setText(c.age, age === null ? '—' : fmtDuration(age * 1000));
      setText(c.rc, String(s.reconnects));
      setText(c.badge, badge);
      c.badge.hidden = !badge;
      c.el.title = `${n}: ${s.connected ? 'connected' : 'DISCONNECTED'} · ${s.connections} connection(s) · `
        + `${s.messages.toLocaleString('en-US')} messages · ${s.reconnects} reconnects · `
        + `${s.stale_symbols} stale symbols`;
    }
  }

  // ---------------------------------------------------------------- opportunities table

  const OPP_COLS = [
    { cls: 'l sym', text: (r) => r.symbol },
    { cls: 'l', venue: 'buy_venue' },
    { cls: 'l', venue: 'sell_venue' },
    { cls: '', bps: 'gross_bps' },
    { cls: 'net', bps: 'net_bps' },
    { cls: '', bps: 'peak_net_bps' },
    { cls: '', text: (r) => fmtPrice(r.buy_price) },
    { cls: '', text: (r) => fmtSize(r.buy_size) },
    { cls: '', text: (r) => fmtPrice(r.sell_price) },
    { cls: '', text: (r) => fmtSize(r.sell_size) },
    { cls: 'dur', duration: true },
  ];
  const oppRows = new Map(); // key -> {tr, cells}

  function passesFilter(row, net) {
    return passesFilters(row, net, ui.minNet, ui.venueFilter);
  }

  /** Keep the venue filter's options in step with the venues the server reports. */
  function renderVenueOptions(names) {
    const all = ui.venueFilter && !names.includes(ui.venueFilter) ? [...names, ui.venueFilter].sort() : names;
    const key = all.join(',');
    if (key === ui.venueOptions) return;
    ui.venueOptions = key;
    const select = $('venue-filter');
    const options = [h('option', '', 'all')];
    options[0].value = '';
    for (const n of all) {
      const o = h('option', '', n);
      o.value = n;
      options.push(o);
    }
    select.replaceChildren(...options);
    select.value = ui.venueFilter || '';
  }

  function makeOppRow(e) {
    const tr = h('tr');
    tr.dataset.symbol = e.row.symbol;
    const cells = OPP_COLS.map((col) => {
      const td = h('td', col.cls);
      if (col.venue) venueCell(td, e.row[col.venue]);
      tr.append(td);
      return td;
    });
    return { tr, cells };
  }

  function updateOppRow(r, e, now) {
    const row = e.row;
    OPP_COLS.forEach((col, i) => {
      const td = r.cells[i];
      if (col.venue) return;
      if (col.bps) {
        const v = row[col.bps];
        setText(td, fmtBps(v));
        td.classList.toggle('pos', v !== null && v > 0);
        td.classList.toggle('neg', v !== null && v < 0);
      } else if (col.duration) {
        setText(td, fmtDuration(liveDuration(e, now)));
        td.title = e.closed ? 'closed' : '';
      } else {
        setText(td, col.text(row));
      }
    });
    r.tr.classList.toggle('closed', e.closed);
    r.tr.classList.toggle('sel', row.symbol === ui.selected);
    if (e.closed) {
      const k = Math.min(1, Math.max(0, (Date.now() - e.closedLocal) / CFG.fadeMs));
      r.tr.style.opacity = (0.85 - 0.77 * k).toFixed(3);
    } else if (r.tr.style.opacity) {
      r.tr.style.opacity = '';
    }
  }

  const FLASH = { new: 'rgba(88,166,255,0.45)', up: 'rgba(63,185,80,0.40)', down: 'rgba(248,81,73,0.40)', chg: 'rgba(88,166,255,0.28)' };

  function flashRow(tr, kind) {
    if (typeof tr.animate !== 'function') return;
    tr.animate([{ backgroundColor: FLASH[kind] || FLASH.chg }, { backgroundColor: 'rgba(0,0,0,0)' }],
      { duration: kind === 'new' ? 1200 : 800, easing: 'ease-out' });
  }

  function renderOpps() {
    ui.book.expire(Date.now());
    const now = serverNow();
    const tbody = $('opp-body');
    const entries = [];
    let open = 0;
    for (const e of ui.book.rows.values()) {
      if (!e.closed) {
        open += 1;
        e.shown = passesFilter(e.row, e.row.net_bps);
      }
      const visible = e.closed ? (e.shown !== undefined ? e.shown : passesFilter(e.row, e.row.peak_net_bps)) : e.shown;
      if (visible) entries.push(e);
    }
    entries.sort((a, b) => compareEntries(a, b, ui.sort.key, ui.sort.dir, now));

    const keep = new Set(entries.map((e) => e.row.key));
    for (const [k, r] of oppRows) {
      if (!keep.has(k)) {
        r.tr.remove();
        oppRows.delete(k);
      }
    }
    let prev = null;
    for (const e of entries) {
      let r = oppRows.get(e.row.key);
      if (!r) {
        r = makeOppRow(e);
        oppRows.set(e.row.key, r);
      }
      updateOppRow(r, e, now);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (r.tr !== want) tbody.insertBefore(r.tr, want);
      prev = r.tr;
      if (e.flash) flashRow(r.tr, e.flash);
    }
    for (const e of ui.book.rows.values()) e.flash = null;

    const shownOpen = entries.filter((e) => !e.closed).length;
    const filtered = ui.minNet !== null || ui.venueFilter !== null;
    setText($('opp-count'), !filtered || shownOpen === open ? `${open} open` : `${open} open · ${shownOpen} shown`);
    const empty = $('opp-empty');
    empty.hidden = entries.length > 0;
    if (!entries.length) {
      const rules = [];
      if (ui.minNet !== null) rules.push(`at or above ${ui.minNet} bps net`);
      if (ui.venueFilter !== null) rules.push(`on ${ui.venueFilter}`);
      setText(empty, open && rules.length ? `No open opportunity ${rules.join(' ')}.` : 'No open opportunities.');
    }
  }

  function renderSortHeader() {
    for (const th of document.querySelectorAll('#opp-table thead th[data-key]')) {
      const on = th.dataset.key === ui.sort.key;
      th.classList.toggle('sorted', on);
      th.classList.toggle('asc', on && ui.sort.dir === 1);
      th.classList.toggle('desc', on && ui.sort.dir === -1);
      th.setAttribute('aria-sort', on ? (ui.sort.dir === 1 ? 'ascending' : 'descending') : 'none');
    }
  }

  function setSort(key) {
    if (!SORT_KEYS.has(key)) return;
    if (ui.sort.key === key) ui.sort = { key, dir: -ui.sort.dir };
    else ui.sort = { key, dir: TEXT_KEYS.has(key) ? 1 : -1 };
    savePrefs();
    renderSortHeader();
    invalidate('opps');
  }

  // ---------------------------------------------------------------- quotes, pairs, best

  function renderQuotes() {
    setText($('quotes-symbol'), ui.selected || '');
    const q = ui.quotes;
    const rows = [];
    if (q) {
      const venues = Object.assign(Object.create(null), Object.fromEntries(ui.vanished), q.venues);
      const names = Object.keys(venues).sort();
      let bestBid = null;
      let bestAsk = null;
      for (const n of names) {
        const x = venues[n];
        if (x.stale) continue;
        if (x.bid !== null && (bestBid === null || x.bid > bestBid)) bestBid = x.bid;
        if (x.ask !== null && (bestAsk === null || x.ask < bestAsk)) bestAsk = x.ask;
      }
      const now = serverNow();
      for (const n of names) {
        const x = venues[n];
        const tr = h('tr', x.stale ? 'stale' : '');
        const down = ui.venues && ui.venues[n] && !ui.venues[n].connected;
        if (x.stale) tr.title = down ? `${n} is disconnected: last quote shown` : `${n}: quote too old`;
        const bid = h('td', !x.stale && x.bid !== null && x.bid === bestBid ? 'best-px' : '', fmtPrice(x.bid));
        const ask = h('td', !x.stale && x.ask !== null && x.ask === bestAsk ? 'best-px' : '', fmtPrice(x.ask));
        const state = h('td', 'l');
        state.append(x.stale ? h('span', 'tag tag-stale', 'STALE') : h('span', 'tag tag-ok', 'live'));
        tr.append(
          venueCell(h('td', 'l'), n),
          h('td', '', fmtSize(x.bid_size)),
          bid,
          ask,
          h('td', '', fmtSize(x.ask_size)),
          h('td', '', fmtBps(x.spread_bps, false)),
          h('td', 'dim', x.recv_ms === null ? '—' : fmtDuration(Math.max(0, now - x.recv_ms))),
          state,
        );
        rows.push(tr);
      }
    }
    $('quotes-body').replaceChildren(...rows);
    const qe = $('quotes-empty');
    qe.hidden = rows.length > 0;
    setText(qe, !ui.selected ? 'Pick a symbol.' : q ? 'No venue quotes this symbol yet.' : 'Waiting for quotes…');

    const s = ui.spreads;
    const pairs = s ? s.pairs.slice().sort((a, b) => (b.net_bps ?? -Infinity) - (a.net_bps ?? -Infinity)) : [];
    const prow = pairs.slice(0, CFG.pairsShown).map((p) => {
      const tr = h('tr');
      const g = h('td', p.gross_bps > 0 ? 'pos' : p.gross_bps < 0 ? 'neg' : '', fmtBps(p.gross_bps));
      const n = h('td', p.net_bps > 0 ? 'pos' : p.net_bps < 0 ? 'neg' : '', fmtBps(p.net_bps));
      tr.append(venueCell(h('td', 'l'), p.buy_venue), venueCell(h('td', 'l'), p.sell_venue), g, n);
      return tr;
    });
    $('pairs-body').replaceChildren(...prow);
    const pe = $('pairs-empty');
    pe.hidden = prow.length > 0;
    setText(pe, s ? 'Needs fresh quotes on two venues.' : 'No pairs.');

    const best = $('best');
    const b = s && s.best;
    if (b && b.net_bps !== null) {
      setText(best, `best ${fmtBps(b.net_bps)} bps net · buy ${b.buy_venue} → sell ${b.sell_venue}`);
      best.className = `best ${b.net_bps > 0 ? 'pos' : 'neg'}`;
    } else {
      setText(best, s ? 'no cross-venue spread' : '');
      best.className = 'best muted';
    }
  }

  // ---------------------------------------------------------------- chart

  function chartMsg(text, isError = false) {
    const el = $('chart-msg');
    el.hidden = !text;
    el.classList.toggle('error', !!text && isError);
    if (text) setText(el, text);
    chart.msgIsError = !!text && isError;
  }

  const chart = {
    plot: null,
    layout: -1,
    follow: true,
    msgIsError: false,
    wrap: null,
    el: null,
    legend: null,

    init() {
      this.wrap = $('chart-wrap');
      this.el = $('chart');
      this.legend = $('chart-legend');
      if (typeof root.ResizeObserver === 'function') {
        new root.ResizeObserver(() => this.resize()).observe(this.wrap);
      } else {
        root.addEventListener('resize', () => this.resize());
      }
      this.wrap.addEventListener('dblclick', () => {
        this.follow = true;
        invalidate('chart', 'hint');
      });
      if (!root.uPlot) chartMsg('Chart library not loaded.', true);
    },

    size() {
      return { width: Math.max(120, this.wrap.clientWidth), height: Math.max(120, this.wrap.clientHeight) };
    },

    resize() {
      if (this.plot) this.plot.setSize(this.size());
    },

    destroy() {
      if (this.plot) this.plot.destroy();
      this.plot = null;
      this.layout = -1;
      this.legend.replaceChildren();
    },

    build() {
      this.destroy();
      if (!root.uPlot || !series.symbol) return;
      this.follow = true;
      this.plot = new root.uPlot(plotOptions(this.size()), series.toData(), this.el);
      this.layout = series.layoutVersion;
    },

    draw() {
      if (!root.uPlot) return;
      if (!series.symbol) {
        this.destroy();
        return;
      }
      if (!this.plot || this.layout !== series.layoutVersion) this.build();
      else this.plot.setData(series.toData(), this.follow);
      renderHint();
    },
  };

  function plotOptions(size) {
    const U = root.uPlot;
    const stepped = U.paths && U.paths.stepped ? U.paths.stepped({ align: 1 }) : undefined;
    const priceValue = (u, v) => (v === null || v === undefined ? '—' : fmtPrice(v));
    const axisFont = '11px system-ui, sans-serif';
    const grid = { stroke: 'rgba(255,255,255,0.06)', width: 1 };
    const ticks = { stroke: 'rgba(255,255,255,0.10)', width: 1, size: 4 };
    const seriesOpts = [{ label: 'UTC', value: (u, v) => (v === null || v === undefined ? '—' : fmtTimeUTC(v * 1000)) }];
    for (const v of series.venues) {
      const c = venueColor(v);
      seriesOpts.push({ label: `${v} bid`, scale: 'px', stroke: c, width: 1.25, paths: stepped, value: priceValue });
      seriesOpts.push({
        label: `${v} ask`, scale: 'px', stroke: withAlpha(c, 0.7), width: 1, dash: [5, 3], paths: stepped, value: priceValue,
      });
    }
    seriesOpts.push({
      label: 'best net bps', scale: 'bps', stroke: '#e6edf3', width: 1.5, paths: stepped,
      value: (u, v) => (v === null || v === undefined ? '—' : fmtBps(v)),
    });
    return {
      width: size.width,
      height: size.height,
      tzDate: (ts) => U.tzDate(new Date(ts * 1e3), 'Etc/UTC'),
      scales: { x: { time: true }, px: { auto: true }, bps: { auto: true } },
      series: seriesOpts,
      axes: [
        { stroke: '#8b949e', font: axisFont, grid, ticks },
        { scale: 'px', stroke: '#8b949e', font: axisFont, grid, ticks, size: 76 },
        {
          scale: 'bps', side: 1, stroke: '#c9d1d9', font: axisFont, grid: { show: false }, ticks, size: 52,
          values: (u, splits) => splits.map((x) => (isNum(x) ? x.toFixed(1) : '')),
        },
      ],
      legend: { live: true, mount: (u, el) => chart.legend.append(el) },
      cursor: { drag: { x: true, y: false, setScale: true }, focus: { prox: 24 } },
      focus: { alpha: 0.35 },
      hooks: {
        setScale: [
          (u, key) => {
            if (key !== 'x') return;
            const t = series.t;
            const { min, max } = u.scales.x;
            chart.follow = !t.length || min === null || max === null
              || (min <= t[0] + series.res && max >= t[t.length - 1] - series.res);
            invalidate('hint');
          },
        ],
      },
    };
  }

  function renderHint() {
    const el = $('chart-hint');
    if (!chart.plot) {
      setText(el, '');
      return;
    }
    if (ui.range.mode === 'history') {
      setText(el, `recorded ${rangeText(ui.range)}${chart.follow ? ' · drag to zoom' : ' · zoomed · double-click to reset'}`);
      return;
    }
    setText(el, chart.follow ? 'drag to zoom' : 'zoomed · double-click to follow live');
  }

  // ---------------------------------------------------------------- symbol selection

  async function errorDetail(res) {
    try {
      const text = await res.text();
      try {
        const j = JSON.parse(text);
        if (isObj(j)) return str(j.error) || str(j.message) || str(j.detail) || text.slice(0, 200);
      } catch (err) {
        /* not JSON */
      }
      return text.slice(0, 200);
    } catch (err) {
      return '';
    }
  }

  /** From user input (or the URL): validate, then select. */
  function trySelect(value, fromUser) {
    const sym = normalizeSymbol(value);
    if (!sym) {
      if (fromUser) notify('warn', `"${String(value).slice(0, 40)}" is not a symbol (expected BASE/QUOTE, e.g. BTC/USDT).`, { key: 'symbol' });
      return;
    }
    if (fromUser && ui.symbols.length && !ui.symbols.includes(sym)) {
      notify('warn', `Unknown symbol ${sym}: no venue quotes it.`, { key: 'symbol' });
      return;
    }
    selectSymbol(sym);
  }

  async function selectSymbol(sym, force = false) {
    if (sym === ui.selected && !chart.msgIsError && !force) return; // re-picking a failed symbol retries it
    const prev = ui.selected;
    if (prev && prev !== sym && feed) {
      feed.unsubscribe(`quotes:${prev}`);
      feed.unsubscribe(`spreads:${prev}`);
    }
    ui.selected = sym;
    ui.pickedDefault = true;
    ui.quotes = null;
    ui.vanished.clear();
    ui.spreads = null;
    clearMessage('symbol');
    $('symbol-input').value = sym;
    if (hashValue() !== sym) {
      try {
        root.history.replaceState(null, '', `#${sym}`);
      } catch (err) {
        /* sandboxed: the URL just does not follow the selection */
      }
    }
    savePrefs();
    series.reset(sym);
    chart.destroy();
    chartMsg(`Loading ${sym} history…`);
    invalidate('chart', 'quotes', 'opps', 'hint');
    if (ui.range.mode === 'history') {
      // the chart shows recorded data; the quotes and pairs tables stay live
      if (feed) {
        feed.subscribe(`quotes:${sym}`);
        feed.subscribe(`spreads:${sym}`);
      }
      loadHistoryRange(sym);
      return;
    }

    if (ui.historyCtl) ui.historyCtl.abort();
    const ctl = typeof root.AbortController === 'function' ? new root.AbortController() : null;
    ui.historyCtl = ctl;
    let subscribe = true;
    try {
      const res = await root.fetch(`${CFG.windowApi}?symbol=${encodeURIComponent(sym)}`, {
        signal: ctl ? ctl.signal : undefined,
        headers: { Accept: 'application/json' },
        cache: 'no-store',
      });
      if (ui.selected !== sym) return;
      if (res.status === 404 || res.status === 400) {
        const detail = await errorDetail(res);
        subscribe = false;
        chartMsg(`Unknown symbol ${sym}`, true);
        notify('error', `Unknown symbol ${sym}${detail ? `: ${detail}` : ''}`, { key: 'symbol' });
      } else if (!res.ok) {
        const detail = await errorDetail(res);
        throw new Error(`HTTP ${res.status}${detail ? ` ${detail}` : ''}`);
      } else {
        const body = await res.json();
        if (ui.selected !== sym) return;
        const n = series.loadHistory(body);
        chartMsg(n ? null : `No history for ${sym} yet; waiting for live data…`);
      }
    } catch (err) {
      if (err && err.name === 'AbortError') return;
      if (ui.selected !== sym) return;
      notify('warn', `History for ${sym} unavailable (${(err && err.message) || err}); showing live data only.`, { key: 'symbol' });
      chartMsg(`Waiting for live ${sym} data…`);
    } finally {
      if (ui.historyCtl === ctl) ui.historyCtl = null;
    }
    if (ui.selected !== sym) return;
    invalidate('chart', 'hint');
    if (subscribe && feed) {
      feed.subscribe(`quotes:${sym}`);
      feed.subscribe(`spreads:${sym}`);
    }
  }

  function fmtStampUTC(ms) {
    return new Date(ms).toISOString().slice(0, 19).replace('T', ' ');
  }

  function rangeText(r) {
    return `${fmtStampUTC(r.fromMs)} – ${fmtStampUTC(r.toMs)} UTC`;
  }

  /** The chart in history mode: GET /api/history for the selected range (recorded Parquet data). */
  async function loadHistoryRange(sym) {
    const range = ui.range;
    series.reset(sym);
    chart.destroy();
    chartMsg(`Loading recorded ${sym}, ${rangeText(range)}…`);
    invalidate('chart', 'hint');
    if (ui.historyCtl) ui.historyCtl.abort();
    const ctl = typeof root.AbortController === 'function' ? new root.AbortController() : null;
    ui.historyCtl = ctl;
    const maxPoints = Math.max(100, Math.min(CFG.historyMaxPoints, Math.round(chart.size().width)));
    const query = new URLSearchParams({
      symbol: sym,
      from: String(Math.floor(range.fromMs)),
      to: String(Math.ceil(range.toMs)),
      max_points: String(maxPoints),
    });
    const current = () => ui.selected === sym && ui.range === range;
    try {
      const res = await root.fetch(`${CFG.historyApi}?${query}`, {
        signal: ctl ? ctl.signal : undefined,
        headers: { Accept: 'application/json' },
        cache: 'no-store',
      });
      if (!current()) return;
      if (res.status === 404) {
        chartMsg(`No recorded data for ${sym}, ${rangeText(range)}.`);
        return;
      }
      if (!res.ok) {
        const detail = await errorDetail(res);
        chartMsg(`History unavailable: HTTP ${res.status}${detail ? `: ${detail}` : ''}`, true);
        return;
      }
      const body = await res.json();
      if (!current()) return;
      const n = series.loadHistory({ ...historyToWindow(body), keepAll: true });
      chartMsg(n ? null : `No recorded data for ${sym}, ${rangeText(range)}.`);
    } catch (err) {
      if (err && err.name === 'AbortError') return;
      if (current()) chartMsg(`History unavailable (${(err && err.message) || err}).`, true);
    } finally {
      if (ui.historyCtl === ctl) ui.historyCtl = null;
      if (current()) invalidate('chart', 'hint');
    }
  }

  /** The chart's range selector: live (last hour, then every update) or a recorded range. */
  function setRange(value) {
    const form = $('range-form');
    form.hidden = value !== 'custom';
    if (value === 'custom') {
      if (!$('range-from').value || !$('range-to').value) {
        const now = serverNow();
        $('range-from').value = new Date(now - 3600e3).toISOString().slice(0, 19);
        $('range-to').value = new Date(now).toISOString().slice(0, 19);
      }
      return; // loaded on submit
    }
    if (value === 'live') {
      ui.range = { mode: 'live' };
    } else {
      const hours = Number(value);
      const now = serverNow();
      ui.range = { mode: 'history', fromMs: now - hours * 3600e3, toMs: now };
    }
    applyRange();
  }

  function applyRange() {
    document.body.classList.toggle('history', ui.range.mode === 'history');
    invalidate('hint');
    if (ui.selected) selectSymbol(ui.selected, true);
  }

  function submitCustomRange() {
    const fromMs = Date.parse(`${$('range-from').value}Z`);
    const toMs = Date.parse(`${$('range-to').value}Z`);
    if (!isNum(fromMs) || !isNum(toMs) || toMs <= fromMs) {
      notify('warn', 'History range: "to" must be a time after "from" (both UTC).', { key: 'range' });
      return;
    }
    if (toMs - fromMs > 24 * 3600e3) {
      notify('warn', 'History range: at most 24 hours at a time.', { key: 'range' });
      return;
    }
    clearMessage('range');
    ui.range = { mode: 'history', fromMs, toMs };
    applyRange();
  }

  /** With nothing selected yet, pick BTC/USDT, else the top opportunity, else the first symbol. */
  function maybePickDefault() {
    if (ui.selected || ui.pickedDefault) return;
    let sym = null;
    if (ui.symbols.includes('BTC/USDT')) sym = 'BTC/USDT';
    if (!sym) {
      let top = null;
      for (const e of ui.book.rows.values()) {
        if (!e.closed && (top === null || (e.row.net_bps ?? -Infinity) > (top.net_bps ?? -Infinity))) top = e.row;
      }
      if (top) sym = top.symbol;
    }
    if (!sym && ui.symbols.length) sym = ui.symbols[0];
    if (sym) selectSymbol(sym);
  }

  function renderSymbolList() {
    const frag = document.createDocumentFragment();
    for (const s of ui.symbols) {
      const o = document.createElement('option');
      o.value = s;
      frag.append(o);
    }
    $('symbol-list').replaceChildren(frag);
  }

  // ---------------------------------------------------------------- feed handlers

  function onFrame(f) {
    noteServerTs(f.ts);
    const topic = f.topic;
    if (topic === '_') return;
    if (topic === 'opportunities') {
      // snapshot (on subscribe / resync) and delta both carry the whole top-N list.
      if (f.kind === 'events') {
        // one frame per tick: every open and close since the previous tick, in order
        const rows = isObj(f.data) && Array.isArray(f.data.events) ? f.data.events : [];
        const now = Date.now();
        for (const row of rows) ui.book.event(row, now);
      } else ui.book.snapshot(f.data);
      invalidate('opps');
      maybePickDefault();
      return;
    }
    if (topic === 'venues') {
      const v = normVenues(f.data);
      if (!v) return;
      for (const n of Object.keys(v).sort()) venueColor(n);
      ui.venues = v;
      ui.venuesLocal = Date.now();
      invalidate('venues');
      return;
    }
    if (topic === 'symbols') {
      const list = normSymbols(f.data);
      if (!list) return;
      if (list.join('\n') !== ui.symbols.join('\n')) {
        ui.symbols = list;
        renderSymbolList();
      }
      maybePickDefault();
      return;
    }
    const sym = topicSymbol(topic);
    if (!sym || sym !== ui.selected) return;
    if (topic.startsWith('quotes:')) {
      const q = normQuotes(f.data);
      if (!q) return;
      // A venue whose connection is lost may leave the payload at once: keep its last
      // quote on screen, marked stale, rather than let it silently disappear.
      const prev = ui.quotes;
      if (prev) for (const v of Object.keys(prev.venues)) if (!(v in q.venues)) ui.vanished.set(v, { ...prev.venues[v], stale: true });
      for (const v of Object.keys(q.venues)) ui.vanished.delete(v);
      ui.quotes = q;
    } else if (topic.startsWith('spreads:')) {
      const s = normSpreads(f.data);
      if (!s) return;
      ui.spreads = s;
    } else {
      return;
    }
    if (ui.range.mode !== 'live') {
      invalidate('quotes'); // the chart shows a recorded range: live points are not appended
      return;
    }
    series.update(f.ts > 0 ? f.ts : serverNow(), ui.quotes, ui.spreads);
    if (!chart.msgIsError && series.t.length) chartMsg(null);
    invalidate('quotes', 'chart');
  }

  const ERROR_TEXT = {
    bad_message: 'the server could not read a message from this page',
    unknown_op: 'the server does not know an operation this page sent',
    bad_topic: 'invalid topic',
    too_many_topics: 'too many subscriptions',
    rate_limited: 'rate limit hit; slowing down',
    busy: 'server busy; retrying',
  };

  function onServerError(topic, code, message) {
    const sym = topicSymbol(topic);
    if (sym && sym === ui.selected && code === 'bad_topic') {
      chartMsg(`Unknown symbol ${sym}`, true);
      notify('error', `Unknown symbol ${sym}${message ? `: ${message}` : ''}`, { key: 'symbol' });
      return;
    }
    const what = ERROR_TEXT[code] || code;
    const where = topic && topic !== '_' ? ` (${topic})` : '';
    const level = code === 'busy' || code === 'rate_limited' ? 'warn' : 'error';
    notify(level, `Server: ${what}${where}${message ? `: ${message}` : ''}`, { key: `srv-${code}-${topic}` });
  }

  function onClosed(info, delay) {
    const secs = Math.round(delay / 1000);
    if (info.code === 1008) {
      notify('error', `The server refused the live feed: ${describeClose(1008)}. Retrying in ${secs}s.`, { key: 'conn' });
    } else if (!ui.hadConnection) {
      notify('warn', `Cannot reach the live feed (${describeClose(info.code)}). Retrying in ${secs}s.`, { key: 'conn', ttl: 0 });
    } else {
      notify('warn', `Live feed disconnected: ${describeClose(info.code)}. Reconnecting in ${secs}s; data on screen is not live.`, { key: 'conn', ttl: 0 });
    }
    invalidate('status');
  }

  function onOpen() {
    clearMessage('conn');
    if (ui.hadConnection) {
      series.breakNext = series.t.length > 0;
      notify('info', 'Live feed reconnected.', { key: 'conn', ttl: 3000 });
    }
    ui.hadConnection = true;
    invalidate('status');
  }

  // ---------------------------------------------------------------- wiring

  function initControls() {
    const thead = document.querySelector('#opp-table thead');
    thead.addEventListener('click', (ev) => {
      const th = ev.target.closest('th[data-key]');
      if (th) setSort(th.dataset.key);
    });
    thead.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter' && ev.key !== ' ') return;
      const th = ev.target.closest('th[data-key]');
      if (!th) return;
      ev.preventDefault();
      setSort(th.dataset.key);
    });
    renderSortHeader();

    $('opp-body').addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr');
      if (tr && tr.dataset.symbol) selectSymbol(tr.dataset.symbol);
    });

    const minNet = $('min-net');
    if (ui.minNet !== null) minNet.value = String(ui.minNet);
    minNet.addEventListener('input', () => {
      const v = minNet.value.trim() === '' ? null : Number(minNet.value);
      ui.minNet = isNum(v) ? v : null;
      minNet.classList.toggle('invalid', minNet.value.trim() !== '' && ui.minNet === null);
      for (const e of ui.book.rows.values()) if (e.closed) e.shown = undefined;
      savePrefs();
      invalidate('opps');
    });

    const venueFilter = $('venue-filter');
    venueFilter.addEventListener('change', () => {
      ui.venueFilter = venueFilter.value || null;
      for (const e of ui.book.rows.values()) if (e.closed) e.shown = undefined;
      savePrefs();
      invalidate('opps');
    });

    $('range').addEventListener('change', (ev) => setRange(ev.target.value));
    $('range-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      submitCustomRange();
    });

    const form = $('symbol-form');
    const input = $('symbol-input');
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      trySelect(input.value, true);
    });
    input.addEventListener('input', (ev) => {
      // Picking from the datalist fires "input" without a typing inputType.
      if (ev.inputType && ev.inputType !== 'insertReplacementText') return;
      const sym = normalizeSymbol(input.value);
      if (sym && ui.symbols.includes(sym)) trySelect(sym, true);
    });

    root.addEventListener('hashchange', () => {
      const sym = hashValue();
      if (sym) trySelect(sym, false);
    });
    root.addEventListener('online', () => feed && feed.reconnectNow());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && feed) {
        feed.reconnectNow();
        invalidate('opps', 'venues', 'quotes', 'chart', 'status', 'clock');
      }
    });
  }

  function main() {
    const haveMsgpack = !!(root.MessagePack && typeof root.MessagePack.encode === 'function'
      && typeof root.MessagePack.Decoder === 'function');
    if (!haveMsgpack) {
      notify('error', 'Could not load /vendor/msgpack.min.js (was "npm ci" run on the server?). The live feed cannot work without it.');
    }
    if (!root.uPlot) {
      notify('error', 'Could not load /vendor/uPlot.iife.min.js (was "npm ci" run on the server?). The chart is disabled.');
    }
    initControls();
    chart.init();

    if (haveMsgpack) {
      const decoder = new root.MessagePack.Decoder();
      const scheme = root.location.protocol === 'https:' ? 'wss:' : 'ws:';
      feed = new Feed({
        url: `${scheme}//${root.location.host}${CFG.feedPath}`,
        WebSocket: root.WebSocket,
        encode: (m) => root.MessagePack.encode(m),
        decode: (bytes) => Array.from(decoder.decodeMulti(bytes)),
        handlers: {
          frame: onFrame,
          error: onServerError,
          gap: (topic, missed) => {
            console.info(`feed: ${missed} frame(s) missed on ${topic}; a snapshot follows`);
            invalidate('status');
          },
          open: onOpen,
          closed: onClosed,
          status: () => invalidate('status'),
        },
      });
      ['venues', 'symbols', 'opportunities'].forEach((t) => feed.subscribe(t));
    }

    const fromHash = normalizeSymbol(hashValue());
    const initial = fromHash || normalizeSymbol(prefs.symbol);
    if (initial) selectSymbol(initial);
    if (feed) feed.start();

    setInterval(() => {
      ui.book.expire(Date.now());
      invalidate('clock', 'status', 'venues', 'opps', 'quotes');
    }, CFG.tickMs);
    invalidate('status', 'clock', 'opps', 'quotes');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', main);
  else main();
})(typeof window !== 'undefined' ? window : globalThis);
