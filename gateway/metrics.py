"""Prometheus metrics of one gateway (names follow yrdx_<noun>_<unit>; labels stay low-cardinality)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, region: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.region = region
        self.accepted = Counter(
            "yrdx_messages_accepted_total", "Messages accepted from local platforms and published",
            ["to", "type"], registry=r,
        )
        self.refused = Counter(
            "yrdx_requests_refused_total", "Ingress requests refused, by problem code", ["code"], registry=r,
        )
        self.received = Counter("yrdx_messages_received_total", "Records consumed from the inbox", registry=r)
        self.delivered = Counter(
            "yrdx_messages_delivered_total", "Messages delivered to local platforms", ["from", "mode"], registry=r,
        )
        self.rejected = Counter(
            "yrdx_messages_rejected_total", "Messages dead-lettered, by reason", ["reason"], registry=r,
        )
        self.receipts = Counter(
            "yrdx_receipts_received_total", "Signed receipts received for messages this gateway sent",
            ["outcome"], registry=r,
        )
        self.signed_together = Histogram(
            "yrdx_signature_batch_messages",
            "Messages covered by one ingress signature (1: a plain JWS; more: a batch request, or the single "
            "requests in flight signed together)",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500), registry=r,
        )
        self.ingress_seconds = Histogram(
            "yrdx_ingress_request_seconds", "Time from request to 202 (publish acknowledged)",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.delivery_seconds = Histogram(
            "yrdx_delivery_seconds", "Time to deliver one message to the local platform",
            ["mode"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.transit_seconds = Histogram(
            "yrdx_transit_seconds", "From envelope created_at at the origin to local delivery",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.webhook_retries = Counter(
            "yrdx_webhook_retries_total", "Webhook delivery attempts that failed and were retried", registry=r,
        )
        self.egress_restarts = Counter(
            "yrdx_egress_restarts_total", "Times the egress loop failed and restarted from the last commit",
            registry=r,
        )
        self.inbox_depth = Gauge("yrdx_inbox_messages", "Messages waiting in the pull inbox", registry=r)
        self.broker_up = Gauge("yrdx_broker_up", "1 when the broker answered the last probe", registry=r)
