"""The browser UI in a real headless Chromium (Debian's ``chromium``, driven by Playwright
with the system executable), against the real ``spreadwatch demo``: the table fills with
live rows and can be sorted and filtered, the chart draws (live, and from recorded
history), a venue going down is marked, and the page recovers by itself after the
server restarts on the same port.

``make setup`` installs Chromium (apt) and Playwright (the test extras); nothing here
downloads a browser.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from tests.processes import free_port

expect.set_options(timeout=20_000)

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VENUES = ("binance", "bybit", "gate", "mexc", "okx")
WAIT_MS = 20_000
#: what Chromium itself logs as errors when the server is down or answers 404: expected in
#: the restart test, and the HTTP statuses are checked separately from responses
EXPECTED_BROWSER_NOISE = ("Failed to load resource", "WebSocket connection to ")
DURATION = re.compile(r"^(\d+ms|\d+\.\ds|\d+m\d\ds|\d+h\d\dm)$")  # app.js fmtDuration



class Demo:
    """``spreadwatch demo`` as a child process on a fixed port, with the simulator's control port."""

    def __init__(self, data_dir: Path, config: Path) -> None:
        self.config = config
        self.port = free_port()
        self.control_port = free_port()
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.control_port = free_port()  # a fresh simulator: its old port may linger
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "demo", "--port", str(self.port), "--data-dir", str(self.data_dir),
             "--venues", ",".join(VENUES), "--symbols", "20", "--sim-control-port", str(self.control_port),
             "--config", str(self.config), "--log-level", "WARNING"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the demo exited while starting"
            try:
                if httpx.get(self.url + "health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("the demo did not become healthy within 30 s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def control(self, command: str) -> str:
        """One command to the simulated venues (app/sim/remote.py); returns the answer line."""
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=5) as sock:
            sock.sendall(command.encode() + b"\n")
            answer = sock.makefile().readline().strip()
        assert answer.startswith("ok "), answer
        return answer


def _busy_market_config(directory: Path) -> Path:
    """config.toml with a lower opportunity threshold, so that the table is never empty
    for long with five simulated venues (the default 0 bps net leaves it empty at times)."""
    text, n = re.subn(r"(?m)^threshold_bps = \S+", "threshold_bps = -15.0", (ROOT / "config.toml").read_text())
    assert n == 1, "config.toml has no [spreads] threshold_bps line"
    path = directory / "config.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    directory = tmp_path_factory.mktemp("ui")
    running = Demo(directory / "data", _busy_market_config(directory))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        pytest.fail(f"{CHROMIUM} is missing: run `make setup` (it installs Debian's chromium)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 900})
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext, demo: Demo) -> Iterator[Page]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith(EXPECTED_BROWSER_NOISE) else None)
    page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    page.goto(demo.url + "#BTC/USDT")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    yield page
    page.close()
    assert not errors, errors


def _wait_for_pixels(page: Page, color: str, at_least: int) -> None:
    deadline = time.monotonic() + 10
    while _series_pixels(page, color) < at_least and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert _series_pixels(page, color) >= at_least


def _series_pixels(page: Page, color: str) -> int:
    """Pixels of the chart's canvas drawn in ``color`` (#rrggbb): a series was drawn."""
    count: int = page.evaluate("""(hex) => {
        const canvas = document.querySelector('#chart canvas');
        if (!canvas) return 0;
        const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
        const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < px.length; i += 4) {
            if (px[i + 3] > 200 && want.every((c, k) => Math.abs(px[i + k] - c) < 16)) n += 1;
        }
        return n;
    }""", color)
    return count


_NET_SORTED = """(dir) => {
    const v = [...document.querySelectorAll('#opp-body tr:not(.closed) td.net')]
        .map((td) => parseFloat(td.textContent)).filter((x) => !Number.isNaN(x));
    return v.length > 0 && v.every((x, i) => i === 0 || (x - v[i - 1]) * dir >= 0);
}"""


def test_the_table_fills_with_live_rows_sorts_and_filters(page: Page) -> None:
    rows = page.locator("#opp-body tr")
    expect(rows.first).to_be_visible()
    expect(page.locator("#venues .venue")).to_have_count(len(VENUES))
    expect(page.locator("#venues .venue[data-state='ok']")).to_have_count(len(VENUES))
    # live: the table's content changes while we watch
    before = page.locator("#opp-body").inner_text()
    page.wait_for_function("(b) => document.querySelector('#opp-body').innerText !== b", arg=before)
    # sorted by net descending by default; one click on "Net" sorts ascending. The rows are
    # re-rendered on animation frames while data flows, so the order is checked inside the
    # page, on one DOM state (the check fails by timeout if the order is wrong for good).
    page.wait_for_function(_NET_SORTED, arg=-1)
    page.click("#opp-table th[data-key='net_bps']")
    expect(page.locator("#opp-table th[data-key='net_bps']")).to_have_attribute("aria-sort", "ascending")
    page.wait_for_function(_NET_SORTED, arg=1)
    page.click("#opp-table th[data-key='net_bps']")
    page.wait_for_function(_NET_SORTED, arg=-1)
    # the venue filter keeps rows that buy or sell on that venue
    expect(page.locator("#venue-filter option")).to_have_count(len(VENUES) + 1)
    shown = page.locator("#opp-body tr:not(.closed) td.vtd").first.inner_text()
    page.select_option("#venue-filter", shown)
    page.wait_for_function("""(venue) => [...document.querySelectorAll('#opp-body tr:not(.closed)')]
        .every((tr) => [...tr.querySelectorAll('td.vtd')].some((td) => td.textContent === venue))""", arg=shown)
    legs = page.evaluate("""() => [...document.querySelectorAll('#opp-body tr:not(.closed)')]
        .map((tr) => [...tr.querySelectorAll('td.vtd')].map((td) => td.textContent))""")  # one DOM state
    assert all(shown in pair for pair in legs), legs
    page.select_option("#venue-filter", "")
    # the minimum net spread filter: nothing is that good
    page.fill("#min-net", "100000")
    expect(page.locator("#opp-body tr:not(.closed)")).to_have_count(0)
    expect(page.locator("#opp-empty")).to_contain_text("No open opportunity at or above 100000 bps net")
    page.fill("#min-net", "")
    expect(rows.first).to_be_visible()
    # open windows tick: a duration cell shows a time
    expect(page.locator("#opp-body tr td.dur").first).to_have_text(DURATION)


def test_the_chart_draws_live_and_from_recorded_history(page: Page) -> None:
    expect(page.locator("#symbol-input")).to_have_value("BTC/USDT")
    expect(page.locator("#quotes-body tr")).to_have_count(len(VENUES))
    expect(page.locator("#chart canvas")).to_have_count(1)
    page.wait_for_function("() => document.getElementById('chart-msg').hidden")
    binance = "#f0b90b"  # the binance bid series color (app.js KNOWN_COLORS)
    page.wait_for_function("() => { const c = document.querySelector('#chart canvas'); return c && c.width > 0; }")
    _wait_for_pixels(page, binance, 20)
    # a preset range of recorded history (GET /api/history over the demo's Parquet files)
    with page.expect_response(lambda r: "/api/history?" in r.url) as answer:
        page.select_option("#range", "1")
    assert answer.value.status == 200
    expect(page.locator("#chart-hint")).to_contain_text("recorded")
    # a custom range: the last two minutes, so the buckets are narrow and the lines long
    page.select_option("#range", "custom")
    expect(page.locator("#range-form")).to_be_visible()
    since, until = page.evaluate("() => [Date.now() - 120e3, Date.now() + 1e3].map((t) => "
                                 "new Date(t).toISOString().slice(0, 19))")
    page.fill("#range-from", since)
    page.fill("#range-to", until)
    with page.expect_response(lambda r: "/api/history?" in r.url) as answer:
        page.click("#range-form button[type=submit]")
    assert answer.value.status == 200
    assert len(answer.value.json()["t"]) >= 5
    page.wait_for_function("() => document.getElementById('chart-msg').hidden")
    expect(page.locator("#chart-hint")).to_contain_text(f"recorded {since.replace('T', ' ')}")
    _wait_for_pixels(page, binance, 20)
    page.select_option("#range", "live")
    expect(page.locator("#chart-hint")).not_to_contain_text("recorded")


def test_a_venue_going_down_is_marked_stale_and_comes_back(page: Page, demo: Demo) -> None:
    okx = page.locator("#venues .venue", has_text="okx")
    expect(okx).to_have_attribute("data-state", "ok")
    demo.control("down okx")
    try:
        expect(okx).to_have_attribute("data-state", "down")
        expect(okx.locator(".badge")).to_have_text("DOWN")
        stale = page.locator("#quotes-body tr.stale", has_text="okx")
        expect(stale).to_have_count(1)
        expect(stale.locator(".tag-stale")).to_have_text("STALE")
    finally:
        demo.control("up okx")
    expect(okx).to_have_attribute("data-state", "ok")
    expect(page.locator("#quotes-body tr.stale")).to_have_count(0)


def test_the_page_recovers_after_the_server_restarts(page: Page, demo: Demo) -> None:
    expect(page.locator("#opp-body tr").first).to_be_visible()
    demo.stop()
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    expect(page.locator("body")).to_have_class("offline")
    expect(page.locator("#messages")).to_contain_text("Live feed disconnected")
    demo.start()  # same port, a new process: new sessions, topic counters from zero
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=40_000)
    expect(page.locator("body")).not_to_have_class("offline")
    # resynchronized from fresh snapshots: live quotes, venues and the table again
    expect(page.locator("#venues .venue[data-state='ok']")).to_have_count(len(VENUES))
    expect(page.locator("#quotes-body tr:not(.stale)")).to_have_count(len(VENUES))
    expect(page.locator("#opp-body tr").first).to_be_visible()
    before = page.locator("#quotes-body").inner_text()
    page.wait_for_function("(b) => document.querySelector('#quotes-body').innerText !== b", arg=before)
