"""The console's figures: from the scrapes of the four gateways' /metrics and /readyz to the one snapshot every
page draws (region cards, the region-pair matrix, dead letters by reason, throughput history).

A region pair's figures come from both ends, as each gateway counts what it saw: `sent` from the origin's
`yrdx_messages_total{direction="out",peer=<to>,outcome="accepted"}`, `delivered` and `rejected` from the
destination's `{direction="in",peer=<from>}`, and the p99 from the destination's `yrdx_end_to_end_seconds{peer=
<from>}`. Receipts (family `yrdx`) are gateway traffic, not platform messages, so the pair figures leave them out.
Rates are per second over the last `window_s` of scrapes (counter resets counted as Prometheus does); totals are
the counters as last scraped, so they can be compared with a gateway's /metrics as they are.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.console.promtext import Sample, Samples, bucket_increase, histogram_quantile, rate

MESSAGES = "yrdx_messages_total"
DEAD_LETTERS = "yrdx_dead_letters_total"
END_TO_END = "yrdx_end_to_end_seconds"
LAG = "yrdx_consumer_lag_messages"
EXPIRY = "yrdx_certificate_expiry_seconds"
RECEIPT_FAMILY = "yrdx"
HISTORY_POINTS = 90  # throughput points kept for the sparklines (3 minutes at the default 2 s)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: Mapping[str, bool]
    failing: Sequence[str]


@dataclass(frozen=True, slots=True)
class Scrape:
    """One look at one gateway: its metrics (None when they could not be had, `error` says why) and readiness."""

    region: str
    at: float  # wall-clock time the metrics were answered (or the attempt ended)
    samples: Samples | None
    error: str | None = None
    readiness: Readiness | None = None
    readiness_error: str | None = None
    asked_at: float | None = None  # when the request left: the figures are at least as new as this


def _business(s: Sample) -> bool:
    return s.labels.get("family") != RECEIPT_FAMILY


def _sum(samples: Samples, name: str, keep: Callable[[Sample], bool] = _business, **match: str) -> float:
    return math.fsum(s.value for s in samples.select(name, **match) if keep(s))


def _any(s: Sample) -> bool:
    return True


@dataclass
class History:
    """The recent successful scrapes of each region (enough for `window_s`), and the latest attempt of each."""

    window_s: float = 10.0
    latest: dict[str, Scrape] = field(default_factory=dict)
    _good: dict[str, deque[Scrape]] = field(default_factory=dict)
    _throughput: deque[tuple[float, dict[str, dict[str, float | None]]]] = field(
        default_factory=lambda: deque(maxlen=HISTORY_POINTS))

    def add(self, scrape: Scrape) -> None:
        self.latest[scrape.region] = scrape
        if scrape.samples is None:
            return
        good = self._good.setdefault(scrape.region, deque())
        if good and scrape.at < good[-1].at:  # a clock that went back: start the region's window again
            good.clear()
        good.append(scrape)
        while len(good) > 2 and good[1].at <= scrape.at - self.window_s:
            good.popleft()  # keep exactly one scrape at or before the window's start

    def window(self, region: str) -> list[Scrape]:
        """The successful scrapes of the last `window_s` (the newest last), with the one just before the window
        so that a rate exists from the second scrape on."""
        return list(self._good.get(region, ()))

    def record_throughput(self, at: float, rates: dict[str, dict[str, float | None]]) -> None:
        self._throughput.append((at, rates))

    def throughput(self) -> list[tuple[float, dict[str, dict[str, float | None]]]]:
        return list(self._throughput)


def _figure(points: Sequence[tuple[float, float]]) -> dict[str, float | None]:
    """{total: the latest reading, rate: per second over the points}; both None without any reading."""
    if not points:
        return {"total": None, "rate": None}
    return {"total": points[-1][1], "rate": rate(points)}


def counter(window: Sequence[Scrape], name: str, keep: Callable[[Sample], bool] = _business,
            **match: str) -> dict[str, float | None]:
    return _figure([(s.at, _sum(s.samples, name, keep, **match)) for s in window if s.samples is not None])


def _ratio(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else part / whole


def _quantiles(window: Sequence[Scrape], q: float, **match: str) -> tuple[float | None, float | None]:
    """(over the window, since the gateway started) q-quantile of the end-to-end histogram's matching series."""
    scrapes = [s.samples for s in window if s.samples is not None]
    if not scrapes:
        return None, None

    def buckets(samples: Samples) -> list[tuple[float, float]]:
        return samples.buckets(END_TO_END, _business, **match)

    newest = buckets(scrapes[-1])
    lifetime = histogram_quantile(q, newest)
    recent = histogram_quantile(q, bucket_increase(buckets(scrapes[0]), newest)) if len(scrapes) > 1 else None
    return recent, lifetime


def _gauge(samples: Samples | None, name: str, **match: str) -> float | None:
    return None if samples is None else samples.value(name, **match)


def region_figures(region: str, history: History) -> dict[str, Any]:
    scrape = history.latest.get(region)
    window = history.window(region)
    good = window[-1] if window else None
    samples = good.samples if good is not None else None
    readiness = scrape.readiness if scrape is not None else None
    doc: dict[str, Any] = {
        "region": region,
        "up": scrape is not None and scrape.samples is not None,
        "error": None if scrape is None else scrape.error,
        "scraped_at": None if good is None else good.at,
        "asked_at": None if good is None else good.asked_at,
        "ready": None if readiness is None else readiness.ready,
        "checks": {} if readiness is None else dict(readiness.checks),
        "failing": [] if readiness is None else list(readiness.failing),
        "readiness_error": None if scrape is None else scrape.readiness_error,
        "broker_up": _gauge(samples, "yrdx_broker_up"),
        "inbox": _gauge(samples, "yrdx_inbox_messages"),
        "in_flight": _gauge(samples, "yrdx_in_flight_requests"),
        "revoked": _gauge(samples, "yrdx_revoked_certificates"),
    }
    if samples is None:
        doc.update({"lag": None, "certificates": [], "soonest_expiry": None, "dead_letters": None, "out": None,
                    "in": None, "refused": None, "restarts": None, "build": None})
        return doc
    lag = {s.labels.get("partition", "?"): s.value for s in samples.select(LAG)}
    certs = sorted(({"role": s.labels.get("role", ""), "name": s.labels.get("name", ""), "seconds": s.value}
                    for s in samples.select(EXPIRY)), key=lambda c: (c["seconds"], c["role"], c["name"]))
    reasons = sorted({s.labels.get("reason", "") for s in samples.select(DEAD_LETTERS)})
    build = next((dict(s.labels) for s in samples.select("yrdx_build_info")), None)
    doc.update({
        "lag": {"total": math.fsum(lag.values()), "partitions": dict(sorted(lag.items()))},
        "certificates": certs,
        "soonest_expiry": certs[0] if certs else None,
        "dead_letters": {**counter(window, DEAD_LETTERS, _any),
                         "by_reason": {r: counter(window, DEAD_LETTERS, _any, reason=r) for r in reasons}},
        "out": {"accepted": counter(window, MESSAGES, direction="out", outcome="accepted"),
                "publish_failed": counter(window, MESSAGES, direction="out", outcome="publish_failed")},
        "in": {"delivered": counter(window, MESSAGES, direction="in", outcome="delivered"),
               "rejected": counter(window, MESSAGES, direction="in", outcome="rejected")},
        "refused": counter(window, "yrdx_requests_refused_total", _any),
        "restarts": _gauge(samples, "yrdx_egress_restarts_total"),
        "build": build,
    })
    return doc


def pair_figures(origin: str, destination: str, history: History) -> dict[str, Any]:
    """One cell of the matrix: what `origin` sent to `destination` and what `destination` made of it."""
    src, dst = history.window(origin), history.window(destination)
    sent = counter(src, MESSAGES, direction="out", peer=destination, outcome="accepted")
    failed = counter(src, MESSAGES, direction="out", peer=destination, outcome="publish_failed")
    delivered = counter(dst, MESSAGES, direction="in", peer=origin, outcome="delivered")
    rejected = counter(dst, MESSAGES, direction="in", peer=origin, outcome="rejected")
    recent, lifetime = _quantiles(dst, 0.99, peer=origin)
    seen_rate = None if delivered["rate"] is None or rejected["rate"] is None else (
        delivered["rate"] + rejected["rate"])
    seen_total = None if delivered["total"] is None or rejected["total"] is None else (
        delivered["total"] + rejected["total"])
    return {
        "from": origin, "to": destination,
        "sent": sent, "publish_failed": failed, "delivered": delivered, "rejected": rejected,
        "error_ratio": _ratio(rejected["rate"], seen_rate),  # over the window; None when nothing arrived
        "error_ratio_total": _ratio(rejected["total"], seen_total),
        "p99_s": recent,  # over the window: None when nothing was delivered in it
        "p99_total_s": lifetime,
    }


def dead_letter_reasons(regions: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Dead letters by reason over every region: {reason: {total, rate, regions: {R: total}}}."""
    out: dict[str, dict[str, Any]] = {}
    for doc in regions:
        for reason, fig in ((doc.get("dead_letters") or {}).get("by_reason") or {}).items():
            entry = out.setdefault(reason, {"total": 0.0, "rate": 0.0, "regions": {}})
            entry["total"] += fig["total"] or 0.0
            entry["rate"] += fig["rate"] or 0.0
            entry["regions"][doc["region"]] = fig["total"]
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["total"], kv[0])))


def snapshot(regions: Sequence[str], history: History, now: float, interval_s: float) -> dict[str, Any]:
    """The document pushed to every page after each scrape round (and answered by GET /api/snapshot)."""
    docs = [region_figures(r, history) for r in regions]
    rates: dict[str, dict[str, float | None]] = {}
    for d in docs:
        out, into = d.get("out"), d.get("in")
        rates[d["region"]] = {
            "out": None if out is None else out["accepted"]["rate"],
            "in": None if into is None or into["delivered"]["rate"] is None else (
                into["delivered"]["rate"] + (into["rejected"]["rate"] or 0.0)),
        }
    history.record_throughput(now, rates)
    points = history.throughput()
    return {
        "at": now,
        "interval_s": interval_s,
        "window_s": history.window_s,
        "regions": {d["region"]: d for d in docs},
        "pairs": [pair_figures(a, b, history) for a in regions for b in regions if a != b],
        "dead_letter_reasons": dead_letter_reasons(docs),
        "throughput": {"at": [t for t, _ in points],
                       "regions": {r: {k: [p[1].get(r, {}).get(k) for p in points] for k in ("in", "out")}
                                   for r in regions}},
    }
