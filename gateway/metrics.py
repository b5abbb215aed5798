"""Prometheus metrics of one gateway: names follow yrdx_<noun>_<unit>[_total], labels stay low-cardinality
(region codes, type families, outcome and reason codes, stage names; never a message id)."""

from __future__ import annotations

import platform
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector

from gateway.wire.regions import is_region

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STAGE_BUCKETS = (0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
STAGES = ("validate", "seal", "sign", "publish", "verify", "open", "deliver")


def family(msg_type: str) -> str:
    """The type family label: identity, license, medical, or yrdx (receipts); bounded whatever the input."""
    head = msg_type.split(".", 1)[0]
    return head if head in ("identity", "license", "medical", "yrdx") else "other"


def peer(region: str | None) -> str:
    """A peer region label: a region code, or "unknown" (an unauthenticated record may claim anything)."""
    return region if region is not None and is_region(region) else "unknown"


class Metrics:
    def __init__(self, region: str, version: str = "", suite: str = "") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.region = region
        ProcessCollector(registry=r)  # a registry of our own: the default collectors registered again here
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge("yrdx_build_info", "Always 1: the version, Python and signing suite of this gateway",
                                ["version", "python", "suite", "region"], registry=r)
        self.build_info.labels(version, platform.python_version(), suite, region).set(1)
        self.messages = Counter(
            "yrdx_messages_total",
            "Messages by direction (out: sent by a local platform; in: received from a peer), peer region, type "
            "family and outcome (out: accepted, publish_failed; in: delivered, rejected)",
            ["direction", "peer", "family", "outcome"], registry=r,
        )
        self.dead_letters = Counter(
            "yrdx_dead_letters_total", "Records dead-lettered by this gateway, by reason and claimed peer",
            ["reason", "peer"], registry=r,
        )
        self.refused = Counter(
            "yrdx_requests_refused_total", "Ingress requests refused, by problem code", ["code"], registry=r,
        )
        self.receipts = Counter(
            "yrdx_receipts_received_total", "Signed receipt items received for messages this gateway sent",
            ["outcome"], registry=r,
        )
        self.signed_together = Histogram(
            "yrdx_signature_batch_messages",
            "Messages covered by one ingress signature (1: a plain JWS; more: a batch request, or the single "
            "requests in flight signed together)",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500), registry=r,
        )
        self.ingress_seconds = Histogram(
            "yrdx_ingress_request_seconds",
            "Time from request to 202 (publish and audit acknowledged): from the request's authentication to its "
            "answer, once per message accepted (each accepted item of a batch observes the batch request's time)",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "yrdx_end_to_end_seconds", "From the envelope's created_at at the origin to delivery here",
            ["peer", "family"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.stage_seconds = Histogram(
            "yrdx_stage_seconds", "Time spent in one step of the data path (per message, or per group where the "
            "step works on a group: sign, publish (the messages with their audit segment), and deliver to the pull "
            "inbox)", ["stage"],
            buckets=_STAGE_BUCKETS, registry=r,
        )
        self.webhook_retries = Counter(
            "yrdx_webhook_retries_total", "Webhook delivery attempts that failed and were retried", registry=r,
        )
        self.egress_restarts = Counter(
            "yrdx_egress_restarts_total", "Times the egress loop failed and restarted from the last commit",
            registry=r,
        )
        self.revoked = Gauge(
            "yrdx_revoked_certificates", "Certificates this gateway treats as revoked (trust.revoked and the "
            "revocations applied from yrdx.trust)", registry=r,
        )
        self.in_flight = Gauge("yrdx_in_flight_requests", "HTTP requests being handled", registry=r)
        self.inbox_depth = Gauge("yrdx_inbox_messages", "Messages waiting in the pull inbox", registry=r)
        self.ingress_queue_wait = Gauge(
            "yrdx_ingress_queue_wait_seconds", "How long the oldest single-message request queued to be signed and "
            "published has waited (admission refuses beyond limits.max_queue_wait_ms)", registry=r,
        )
        self.consumer_lag = Gauge(
            "yrdx_consumer_lag_messages", "Inbox records not yet committed (log end offset minus committed), by "
            "partition", ["partition"], registry=r,
        )
        self.certificate_expiry = Gauge(
            "yrdx_certificate_expiry_seconds", "Seconds until a certificate expires (negative: expired): this "
            "gateway's own, each trusted gateway certificate (by region) and each trust root (by name)",
            ["role", "name"], registry=r,
        )
        self.broker_up = Gauge("yrdx_broker_up", "1 when the broker answered the last probe", registry=r)
        self.request_reply_seconds = Histogram(
            "yrdx_request_reply_seconds", "POST /v1/requests (and facades): from the call to its outcome, by "
            "request type and outcome (replied, timed_out, compensated)", ["type", "outcome"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.reply_timeouts = Counter(
            "yrdx_reply_timeouts_total", "Requests whose deadline passed without a reply, by request type",
            ["type"], registry=r,
        )
        self.compensations = Counter(
            "yrdx_compensations_total", "Compensating messages the gateway sent for timed-out requests, by "
            "request type", ["type"], registry=r,
        )
        self.late_results = Counter(
            "yrdx_late_results_total", "Results that came after their request's deadline, by request type",
            ["type"], registry=r,
        )
        self.state_swept = Counter(
            "yrdx_state_swept_total", "State rows deleted by the retention sweep, by table", ["table"], registry=r,
        )
        self.state_sweep_failures = Counter(
            "yrdx_state_sweep_failures_total", "Retention sweeps of the state that failed (tried again at the next "
            "round)", registry=r,
        )
        # Pre-bound children: observing a stage costs no label lookup on the hot path.
        self._stages: dict[str, Any] = {s: self.stage_seconds.labels(s) for s in STAGES}

    def stage(self, name: str) -> Any:
        return self._stages[name]
