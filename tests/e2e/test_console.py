"""`yrdx console` in a real browser: Debian's chromium, headless, driven over the Chrome DevTools Protocol (aiohttp's
websocket client, no Selenium or Playwright), against the session's four gateway processes on the real broker.

While traffic runs: the overview loads after signing in with the operator token, and its figures are the
gateways' own /metrics (each counter on the page lies between two scrapes of /metrics made just before the
console's scrape and just after the page showed it; once the traffic stops, every figure equals /metrics). The
journey page of a delivered message shows every record of `yrdx audit trace --json` (regions, stages, seqs). A
dead letter replayed from the DLQ view is delivered exactly once. Any JavaScript error or console error on any page
fails the test. Screenshots are saved under the test's tmp dir (their paths printed).

A missing chromium fails the test (install it with `bash scripts/chromium.sh install`, as `make test` does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.console.promtext import histogram_quantile
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.regions import REGIONS
from tests._util import ROOT, yrdx
from tests.conftest import Exchange4

REGISTRY = SchemaRegistry.load()
TYPE = "license.verify.request"  # travels in clear, every region takes it from every other
INTERVAL_S = 1.0


def chromium_binary() -> str:
    found = os.environ.get("YRDX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no chromium on PATH: the console's browser test needs Debian's chromium "
                    "(bash scripts/chromium.sh install; make test does it)")
    return found


# --- the Chrome DevTools Protocol, over aiohttp's websocket client ------------------------------------------


class PageError(AssertionError):
    """A script the test ran on the page threw."""


class CdpError(RuntimeError):
    """The browser refused a command (e.g. the page navigated while it ran)."""


class Browser:
    """One headless chromium with one page; every JavaScript exception and console/log error is collected."""

    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        self.binary = binary
        self.profile = profile
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.profile.mkdir(parents=True, exist_ok=True)
        active = self.profile / "DevToolsActivePort"
        active.unlink(missing_ok=True)  # a profile used before holds the port of a browser long gone
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603
                [self.binary, "--headless=new", "--no-sandbox", "--remote-debugging-port=0",
                 f"--user-data-dir={self.profile}", "--no-first-run", "--no-default-browser-check",
                 "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars",
                 "--window-size=1440,1000", "--lang=en-US", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            assert time.monotonic() < deadline, f"chromium did not open its debugging port: {self.log.read_text()}"
            await asyncio.sleep(0.1)
        port = int(active.read_text().splitlines()[0])
        self.session = aiohttp.ClientSession()
        deadline = time.monotonic() + 30
        while True:
            pages = []
            with contextlib.suppress(aiohttp.ClientConnectionError):  # the port opens a moment after the file
                async with self.session.get(f"http://127.0.0.1:{port}/json/list") as r:
                    pages = [t for t in await r.json() if t.get("type") == "page"]
            if pages:
                break
            assert time.monotonic() < deadline, "chromium opened no page"
            await asyncio.sleep(0.1)
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable")

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            doc = json.loads(msg.data)
            if "id" in doc:
                fut = self._waiting.pop(doc["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(doc)
                continue
            self._event(doc.get("method", ""), doc.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            text = (d.get("exception") or {}).get("description") or d.get("text")
            self.errors.append(f"exception: {text} at {d.get('url', '?')}:{d.get('lineNumber')}")
        elif method == "Log.entryAdded":
            e = params.get("entry", {})
            if e.get("level") == "error":
                self.errors.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.errors.append(f"console.{params.get('type')}: {args}")

    async def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        assert self.ws is not None
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = fut
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        doc = await asyncio.wait_for(fut, timeout)
        if "error" in doc:
            raise CdpError(f"{method}: {doc['error']}")
        result: dict[str, Any] = doc.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True})
        if "exceptionDetails" in result:
            raise PageError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(PageError, CdpError):  # the page may be between two documents
                value = await self.evaluate(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                state = await self.evaluate("location.href + ' ' + JSON.stringify(document.body ? "
                                            "document.body.dataset : {})")
                raise AssertionError(f"timed out waiting for {what or expression} (page: {state}; "
                                     f"errors: {self.errors})")
            await asyncio.sleep(0.2)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", 30,
                            f"{url} to load")

    async def screenshot(self, path: Path) -> Path:
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = await self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000), "scale": 1}})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# --- the console and the gateways' own figures --------------------------------------------------------------


@contextlib.asynccontextmanager
async def console_process(exchange: Exchange4, log_dir: Path) -> AsyncIterator[str]:
    """`yrdx console` over the session's exchange (its gateways listen on ports of their own: --gateway)."""
    ready = log_dir / "console.port"
    log = log_dir / "console.log"
    urls = [f"--gateway={r}={g.url}" for r, g in exchange.gateways.items()]
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "gateway.cli", "console", "--dir", str(exchange.exchange.dir), "--port", "0",
             "--ready-file", str(ready), "--interval", str(INTERVAL_S), *urls],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text().strip()):
            assert proc.poll() is None, f"yrdx console exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"yrdx console did not start: {log.read_text()[-3000:]}"
            await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{int(ready.read_text())}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        text = log.read_text()
        token = (exchange.exchange.dir / "secrets" / "metrics.token").read_text().strip()
        assert token not in text, "the console logged the operator token"
        assert proc.returncode == 0, f"yrdx console ended with {proc.returncode}: {text[-3000:]}"


Metrics = dict[str, list[tuple[str, dict[str, str], float]]]  # region -> (sample name, labels, value)


async def scrape(exchange: Exchange4, session: aiohttp.ClientSession) -> dict[str, Metrics]:
    token = (exchange.exchange.dir / "secrets" / "metrics.token").read_text().strip()

    async def one(region: str) -> tuple[str, Metrics]:
        async with session.get(exchange.gateways[region].url + "/metrics",
                               headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
            text = await r.text()
        samples: Metrics = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.setdefault(s.name, []).append((s.name, dict(s.labels), float(s.value)))
        return region, samples

    return dict(await asyncio.gather(*(one(r) for r in REGIONS)))


def total(samples: Metrics, name: str, business: bool = True, **match: str) -> float:
    return math.fsum(v for _, labels, v in samples.get(name, [])
                     if all(labels.get(k) == want for k, want in match.items())
                     and not (business and labels.get("family") == "yrdx"))


def counters(m: dict[str, Metrics]) -> dict[str, float]:
    """The page's counter figures (their data-k keys) computed straight from /metrics."""
    out: dict[str, float] = {}
    for r in REGIONS:
        s = m[r]
        out[f"region.{r}.out.accepted.total"] = total(s, "yrdx_messages_total", direction="out", outcome="accepted")
        out[f"region.{r}.in.delivered.total"] = total(s, "yrdx_messages_total", direction="in", outcome="delivered")
        out[f"region.{r}.in.rejected.total"] = total(s, "yrdx_messages_total", direction="in", outcome="rejected")
        out[f"region.{r}.dlq.total"] = total(s, "yrdx_dead_letters_total", business=False)
        for peer in REGIONS:
            if peer == r:
                continue
            out[f"pair.{r}.{peer}.sent.total"] = total(s, "yrdx_messages_total", direction="out", peer=peer,
                                                       outcome="accepted")
            out[f"pair.{peer}.{r}.delivered.total"] = total(s, "yrdx_messages_total", direction="in", peer=peer,
                                                            outcome="delivered")
            out[f"pair.{peer}.{r}.rejected.total"] = total(s, "yrdx_messages_total", direction="in", peer=peer,
                                                           outcome="rejected")
    reasons: dict[str, float] = {}
    for r in REGIONS:
        for _, labels, v in m[r].get("yrdx_dead_letters_total", []):
            reasons[labels["reason"]] = reasons.get(labels["reason"], 0.0) + v
    out.update({f"reason.{reason}.total": v for reason, v in reasons.items()})
    return out


def gauges(m: dict[str, Metrics]) -> dict[str, float | None]:
    """The page's gauge figures and lifetime p99s from /metrics."""
    out: dict[str, float | None] = {}
    for r in REGIONS:
        s = m[r]
        out[f"region.{r}.broker_up"] = total(s, "yrdx_broker_up", business=False)
        out[f"region.{r}.lag"] = total(s, "yrdx_consumer_lag_messages", business=False)
        out[f"region.{r}.inbox"] = total(s, "yrdx_inbox_messages", business=False)
        for peer in REGIONS:
            if peer == r:
                continue
            buckets: dict[float, float] = {}
            for _, labels, v in s.get("yrdx_end_to_end_seconds_bucket", []):
                if labels.get("peer") == peer and labels.get("family") != "yrdx":
                    buckets[float(labels["le"])] = buckets.get(float(labels["le"]), 0.0) + v
            out[f"pair.{peer}.{r}.p99_total"] = histogram_quantile(0.99, sorted(buckets.items()))
    return out


FIGURES_JS = ("JSON.stringify(Object.fromEntries([...document.querySelectorAll('[data-k]')]"
              ".map(e => [e.dataset.k, e.dataset.value === '' ? null : Number(e.dataset.value)])))")


async def page_figures(browser: Browser) -> dict[str, float | None]:
    figures: dict[str, float | None] = json.loads(await browser.evaluate(FIGURES_JS))
    return figures


async def figures_newer_than(browser: Browser, t: float) -> dict[str, float | None]:
    """The page's figures once every region's were asked for after `t`."""
    keys = " && ".join(f"Number(document.querySelector('[data-k=\"region.{r}.asked_at\"]')?.dataset.value) > {t}"
                       for r in REGIONS)
    await browser.wait_for(keys, 5 * INTERVAL_S + 10, "a snapshot scraped after the gateways' /metrics")
    return await page_figures(browser)


async def traffic(exchange: Exchange4, stop: asyncio.Event, sent: list[tuple[str, str, str]]) -> None:
    """Messages round the twelve region pairs, ~8 a second, until `stop`."""
    pairs = itertools.cycle([(a, b) for a in REGIONS for b in REGIONS if a != b])
    payload = REGISTRY.examples(TYPE)[0]
    while not stop.is_set():
        origin, destination = next(pairs)
        status, doc = await exchange.clients[origin].send(TYPE, destination, copy.deepcopy(payload))
        assert status == 202, doc
        sent.append((origin, destination, doc["id"]))
        await asyncio.sleep(0.12)


def trace(exchange: Exchange4, message_id: str) -> dict[str, Any]:
    done = yrdx("audit", "trace", message_id, "--config", str(exchange.exchange.config_path("SH")), "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = orjson.loads(done.stdout)
    return doc


async def test_the_console_in_a_real_browser(exchange: Exchange4, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    binary = chromium_binary()
    token = (exchange.exchange.dir / "secrets" / "metrics.token").read_text().strip()
    shots: list[Path] = []
    browser = Browser(binary, tmp_path / "chromium-profile", tmp_path / "chromium.log")
    started = time.monotonic()
    async with console_process(exchange, tmp_path) as url, aiohttp.ClientSession() as http:
        try:
            await browser.start()
            await drive(browser, exchange, url, http, token, tmp_path, shots)
        finally:
            await browser.stop()
    with capsys.disabled():
        for shot in shots:
            print(f"\nconsole screenshot: {shot}")
        print(f"console browser test: {time.monotonic() - started:.1f} s")
    assert browser.errors == [], browser.errors
    for shot in shots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


async def drive(browser: Browser, exchange: Exchange4, url: str, http: aiohttp.ClientSession, token: str,
                tmp_path: Path, shots: list[Path]) -> None:
    stop = asyncio.Event()
    sent: list[tuple[str, str, str]] = []
    sender = asyncio.create_task(traffic(exchange, stop, sent))
    try:
        # Sign in: every page sends a visitor without a session to /login first.
        await browser.goto(url + "/")
        await browser.wait_for("location.pathname === '/login' && !!document.getElementById('token')", 15,
                               "the sign-in page")
        await browser.evaluate("document.getElementById('token').value = 'not the token'; "
                               "document.querySelector('form').requestSubmit(); true")
        await browser.wait_for("document.querySelector('.error')?.textContent.includes('not the operator')",
                               15, "the refusal of a wrong token")
        browser.errors = [e for e in browser.errors if "401" not in e]  # the refused sign-in's own status
        await browser.evaluate(f"document.getElementById('token').value = {json.dumps(token)}; "
                               "document.querySelector('form').requestSubmit(); true")
        await browser.wait_for("location.pathname === '/' && document.body.dataset.state === 'live'", 30,
                               "the overview, live")
        cookie = await browser.evaluate("document.cookie")
        assert "yrdx_console_session" not in cookie  # HttpOnly: scripts never see the session

        # While traffic runs: each counter on the page lies between /metrics just before and just after.
        await asyncio.sleep(3 * INTERVAL_S)
        for _ in range(2):
            t0 = time.time()
            before = await scrape(exchange, http)
            asked = time.time()
            shown = await figures_newer_than(browser, asked)
            after = await scrape(exchange, http)
            low, high = counters(before), counters(after)
            for key in high:
                value = shown.get(key)
                if value is None:  # not exposed when the console scraped: so not before either
                    assert low.get(key, 0.0) == 0.0, (key, low.get(key))
                    continue
                assert low.get(key, 0.0) <= value <= high[key], (key, low.get(key), value, high[key])
            for r in REGIONS:
                assert shown[f"region.{r}.up"] == 1 and shown[f"region.{r}.broker_up"] == 1, r
                assert shown[f"region.{r}.ready"] == 1, r
            assert shown["exchange.ready"] == 4
            assert t0 < asked
        assert any((shown.get(f"pair.{a}.{b}.delivered.rate") or 0) > 0 for a in REGIONS for b in REGIONS
                   if a != b), "no live rate on the page while traffic runs"
        assert (shown.get("exchange.out.rate") or 0) > 0
        shots.append(await browser.screenshot(tmp_path / "console-overview.png"))
    finally:
        stop.set()
        await sender
    assert len(sent) > 20

    # Quiet: once /metrics stops moving, the page shows exactly what it says (counters, lag, p99).
    await exchange.sink.wait_for("SH", next(m for o, d, m in reversed(sent) if d == "SH"))
    await asyncio.sleep(2.0)
    deadline = time.monotonic() + 60

    def same(a: dict[str, Metrics], b: dict[str, Metrics]) -> bool:
        return counters(a) == counters(b) and gauges(a) == gauges(b)

    while True:  # quiet: /metrics the same before and after the page's snapshot was scraped
        first = await scrape(exchange, http)
        await asyncio.sleep(1.5)
        second = await scrape(exchange, http)
        if same(first, second):
            shown = await figures_newer_than(browser, time.time())
            if same(second, await scrape(exchange, http)):
                break
        assert time.monotonic() < deadline, "the gateways' figures never settled"
    for key, value in {**counters(second), **gauges(second)}.items():
        if value in (None, 0.0) and shown.get(key) is None:
            continue
        assert shown.get(key) is not None, key
        assert shown[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (key, shown[key], value)
    for r in REGIONS:  # seconds until each certificate expires, counted down between two scrapes
        for _, labels, v in second[r]["yrdx_certificate_expiry_seconds"]:
            key = f"cert.{r}.{labels['role']}.{labels['name']}"
            if key in shown:
                assert abs((shown[key] or 0) - v) < 60, (key, shown[key], v)

    # A delivered message's journey: every record of `yrdx audit trace --json`, in its region's lane.
    origin, destination, delivered = next((o, d, m) for o, d, m in reversed(sent) if d == "SH" and o == "AH")
    await exchange.clients[origin].wait_status(delivered, "delivered")
    deadline = time.monotonic() + 30
    while True:
        doc = await asyncio.to_thread(trace, exchange, delivered)
        if {(r["region"], r["stage"]) for r in doc["records"]} >= {(origin, "receipt_received"),
                                                                    (destination, "delivered")}:
            break
        assert time.monotonic() < deadline, doc
        await asyncio.sleep(0.5)
    await browser.goto(f"{url}/messages/{delivered}")
    wanted = sorted((r["region"], r["stage"], str(r["seq"])) for r in doc["records"])
    rows_js = ("JSON.stringify([...document.querySelectorAll('#timeline .rec')]"
               ".map(e => [e.dataset.region, e.dataset.stage, e.dataset.seq]))")
    await browser.wait_for(f"document.body.dataset.state === 'loaded' && "
                           f"Number(document.body.dataset.records) >= {len(wanted)}", 30, "the whole journey")
    shown_rows = sorted(tuple(x) for x in json.loads(await browser.evaluate(rows_js)))
    assert set(wanted) <= set(shown_rows), (wanted, shown_rows)
    again = sorted((r["region"], r["stage"], str(r["seq"])) for r in (await asyncio.to_thread(
        trace, exchange, delivered))["records"])
    assert shown_rows == again or set(shown_rows) <= set(again), (shown_rows, again)
    stages = {(region, stage) for region, stage, _ in shown_rows}
    for hop in [(origin, "accepted"), (origin, "published"), (destination, "received"),
                (destination, "verified"), (destination, "delivered"), (destination, "receipt_sent"),
                (origin, "receipt_received")]:
        assert hop in stages, (hop, stages)
    route = await browser.evaluate(f"document.querySelector('.hop[data-message-id=\"{delivered}\"] .route')"
                                   ".textContent")
    assert route.startswith(f"{origin}→{destination}") and "delivered" in route, route
    shots.append(await browser.screenshot(tmp_path / "console-journey.png"))

    # A dead letter (the ZJ platform refuses a delivery), replayed from the DLQ view: delivered exactly once.
    exchange.sink.refusing = True
    try:
        status, doc = await exchange.clients["JS"].send(TYPE, "ZJ", copy.deepcopy(REGISTRY.examples(TYPE)[0]))
        assert status == 202
        dead = doc["id"]
        rejected = await exchange.clients["JS"].wait_status(dead, "rejected")
        assert rejected["receipt"]["reason"] == "delivery_failed", rejected
    finally:
        exchange.sink.refusing = False
    row = f"#letters tr[data-message-id=\"{dead}\"]"
    deadline = time.monotonic() + 30
    while True:
        await browser.goto(f"{url}/dlq?region=ZJ&reason=delivery_failed")
        await browser.wait_for("document.body.dataset.state === 'loaded'", 30, "the DLQ view")
        if await browser.evaluate(f"!!document.querySelector('{row}')"):
            break
        assert time.monotonic() < deadline, "the dead letter never showed in the DLQ view"
        await asyncio.sleep(1.0)
    assert await browser.evaluate(f"document.querySelector('{row} .tag').textContent") == "dead"
    assert exchange.sink.ids("ZJ").count(dead) == 0
    await browser.evaluate(f"document.querySelector('{row} button[data-replay]').click(); true")
    assert await browser.evaluate(f"document.querySelector('{row} button[data-replay]').textContent") == \
        "Confirm replay"
    await browser.evaluate(f"document.querySelector('{row} button[data-replay]').click(); true")
    await browser.wait_for("document.body.dataset.replayed === '1'", 30, "the replay's answer")
    assert "Replayed 1 dead letter" in await browser.evaluate("document.getElementById('status').textContent")
    await exchange.sink.wait_for("ZJ", dead)
    assert (await exchange.clients["JS"].wait_status(dead, "delivered"))["status"] == "delivered"
    await browser.wait_for(f"document.querySelector('{row} .tag')?.textContent === 'replayed 1× · delivered'",
                           30, "the letter's status from the audit trail")
    await asyncio.sleep(3.0)
    assert exchange.sink.ids("ZJ").count(dead) == 1
    shots.append(await browser.screenshot(tmp_path / "console-dlq.png"))

    # Signing out ends the session: the next page is the sign-in again.
    await browser.goto(url + "/")
    await browser.wait_for("document.body.dataset.state === 'live'", 30, "the overview again")
    await browser.evaluate("document.getElementById('sign-out').click(); true")
    await browser.wait_for("location.pathname === '/login'", 15, "the sign-in page after signing out")
    await browser.goto(url + "/dlq")
    await browser.wait_for("location.pathname === '/login'", 15, "the sign-in page for a signed-out visitor")
