"""The console's one scrape loop: every `interval_s` it reads each gateway's /metrics (with the operator token)
and /readyz at once, turns them into one snapshot (gateway.console.figures) and hands it to every open page
through the Hub (server-sent events). Pages never scrape: a hundred open dashboards cost the gateways nothing
more than one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from gateway.console.exchange import ExchangeDir
from gateway.console.figures import History, Readiness, Scrape, snapshot
from gateway.console.promtext import MetricsFormatError, parse_metrics

log = logging.getLogger(__name__)

MAX_METRICS_BYTES = 8 * 1024 * 1024


class Hub:
    """The latest snapshot, and a queue per listening page. A page that cannot keep up misses snapshots (only
    the newest one waits for it), it never holds up the others."""

    def __init__(self) -> None:
        self.latest: bytes | None = None  # the JSON of the latest snapshot
        self._queues: set[asyncio.Queue[bytes | None]] = set()

    def __len__(self) -> int:
        return len(self._queues)

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        q: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        if self.latest is not None:
            q.put_nowait(self.latest)
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[bytes | None]) -> None:
        self._queues.discard(q)

    @staticmethod
    def _offer(q: asyncio.Queue[bytes | None], item: bytes | None) -> None:
        with contextlib.suppress(asyncio.QueueEmpty):
            if q.full():
                q.get_nowait()
        q.put_nowait(item)

    def publish(self, data: bytes) -> None:
        self.latest = data
        for q in self._queues:
            self._offer(q, data)

    def close(self) -> None:
        """Ends every stream (None: the server is stopping)."""
        for q in self._queues:
            self._offer(q, None)


def _readiness(doc: Any) -> Readiness:
    if not isinstance(doc, dict) or not isinstance(doc.get("ready"), bool):
        raise ValueError("not a /readyz document")
    checks = doc.get("checks")
    failing = doc.get("failing")
    checks = checks if isinstance(checks, dict) else {}
    failing = failing if isinstance(failing, list) else []
    return Readiness(doc["ready"], {str(k): bool(v) for k, v in checks.items()}, [str(f) for f in failing])


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, aiohttp.ClientConnectorError):
        return "connection refused" if isinstance(e.os_error, ConnectionRefusedError) else "cannot connect"
    return e.__class__.__name__


class Scraper:
    def __init__(self, exchange: ExchangeDir, hub: Hub, *, interval_s: float = 2.0, window_s: float = 10.0,
                 timeout_s: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self.exchange = exchange
        self.hub = hub
        self.interval_s = interval_s
        self.timeout_s = timeout_s if timeout_s is not None else max(0.5, min(5.0, interval_s * 0.9))
        self.history = History(window_s=window_s)
        self._clock = clock
        self.rounds = 0
        self.last: dict[str, Any] | None = None

    async def _metrics(self, session: aiohttp.ClientSession, region: str) -> tuple[str | None, str | None]:
        """(the /metrics text, None) or (None, why not)."""
        token = self.exchange.metrics_token(region)
        if token is None:
            return None, "no operator token"
        url = self.exchange.gateways[region].base_url + "/metrics"
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
            if r.status != 200:
                return None, f"/metrics answered HTTP {r.status}"
            body = await r.content.read(MAX_METRICS_BYTES + 1)
            if len(body) > MAX_METRICS_BYTES:
                return None, "/metrics is too large"
            return body.decode("utf-8", "replace"), None

    async def _readyz(self, session: aiohttp.ClientSession, region: str) -> Readiness:
        url = self.exchange.gateways[region].base_url + "/readyz"
        async with session.get(url) as r:  # 200 ready, 503 naming the failing checks: both carry the document
            return _readiness(orjson.loads(await r.content.read(65536)))

    async def scrape(self, session: aiohttp.ClientSession, region: str) -> Scrape:
        asked = self._clock()
        metrics, ready = await asyncio.gather(self._metrics(session, region), self._readyz(session, region),
                                              return_exceptions=True)
        at = self._clock()
        samples, error = None, None
        if isinstance(metrics, BaseException):
            error = _why(metrics)
        else:
            text, error = metrics
            if text is not None:
                try:
                    samples = parse_metrics(text)
                except MetricsFormatError:
                    error = "/metrics is not the Prometheus text format"
        readiness, readiness_error = None, None
        if isinstance(ready, BaseException):
            readiness_error = _why(ready) if not isinstance(ready, ValueError) else "not a /readyz document"
        else:
            readiness = ready
        return Scrape(region, at, samples, error, readiness, readiness_error, asked)

    async def round(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        """Scrape every gateway once, publish the snapshot to every page, and return it."""
        regions = self.exchange.regions
        scrapes = await asyncio.gather(*(self.scrape(session, r) for r in regions))
        for s in scrapes:
            before = self.history.latest.get(s.region)
            if s.error is not None and (before is None or before.error != s.error):
                log.warning("cannot scrape a gateway", extra={"region": s.region, "error": s.error})
            elif s.error is None and before is not None and before.error is not None:
                log.info("gateway scraped again", extra={"region": s.region})
            self.history.add(s)
        doc = snapshot(regions, self.history, self._clock(), self.interval_s)
        self.rounds += 1
        self.last = doc
        self.hub.publish(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS))
        return doc

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds every `interval_s` (from the start of one to the start of the next) until `stop` is set."""
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=32)) as session:
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                started = loop.time()
                try:
                    await self.round(session)
                except Exception:  # a bug in the figures must not end the loop: say it and go on
                    log.exception("scrape round failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.05, self.interval_s - (loop.time() - started)))


def sse_event(event: str, data: bytes) -> bytes:
    """One server-sent event; `data` is one line of JSON (orjson never writes a newline)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
