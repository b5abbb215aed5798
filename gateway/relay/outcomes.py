"""What one consumed batch leaves behind, built fresh per batch: dead letters, signed receipts per origin,
dedupe marks of rejections and the audit records, all flushed (acknowledged by the broker) before the batch's
offsets are committed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.trail import AuditTrail
from gateway.config import Platform
from gateway.crypto.jws import Signer
from gateway.kafka.port import BrokerUnavailable, InRecord, OutRecord, Publisher
from gateway.metrics import Metrics, family, peer
from gateway.relay.checks import RECEIPT_TYPE, Refused, Verified
from gateway.relay.dead_letters import dead_letter
from gateway.state import Decision, StateStore
from gateway.wire import envelope, headers
from gateway.wire.problems import Rejection
from gateway.wire.regions import Topics

log = logging.getLogger(__name__)

RECEIPT_ITEMS = 1000  # items per signed receipt (the schema allows 2,000)
# A batch that sends nothing (an origin's receipts, applied) waits at most this long for another flush (the
# ingress group commit's, at most one group later under traffic) to carry its audit records before it flushes
# them alone: only its own offset commit waits on them (AuditTrail.durable's `wait_s`), and the egress loop
# handles the next batch meanwhile (Egress.run).
CARRY_WAIT_S = 0.05


class Draining(Exception):
    """The gateway is stopping and the broker does not acknowledge: the batch stays uncommitted, to be read
    again after the restart (dedupe makes that safe)."""


@dataclass(frozen=True, slots=True)
class Effects:
    """The long-lived parts an outcome acts on: one set per gateway."""

    region: str
    topics: Topics
    signer: Signer
    publisher: Publisher
    state: StateStore
    audit: AuditTrail
    metrics: Metrics


@dataclass
class BatchOutcomes:
    fx: Effects
    received_at: str
    records: list[OutRecord] = field(default_factory=list)  # dead letters and receipts, in order
    decided: list[Decision] = field(default_factory=list)  # rejections, marked seen once their DLQ record is acked
    receipts: dict[str, list[tuple[Verified, dict[str, str]]]] = field(default_factory=lambda: defaultdict(list))
    # Delivered messages by (sender, family): the counter moves once per label set and batch, not per message.
    delivered_counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    _latency: dict[tuple[str, str], Any] = field(default_factory=dict)  # the histogram's child per label set

    def received(self, record: InRecord, checked: Verified | Refused) -> None:
        """The first audit record of every consumed record; the checks append nothing, so it precedes the rest."""
        env = checked.env if isinstance(checked, Verified) else checked.envelope
        claimed = env.id if env is not None else ""
        audit = self.fx.audit
        audit.append("received", claimed, checked.sha256, source=record.source)
        replay_of = record.headers.get(headers.REPLAY_OF)
        if replay_of is not None:  # an operator put a dead letter back (yrdx dlq replay)
            audit.append("replayed", claimed, checked.sha256, of=replay_of[:200].decode(errors="replace"))

    def delivered(self, platform: Platform, v: Verified, mode: str) -> None:
        env = v.env
        self.fx.audit.append("delivered", env.id, v.sha256, env.correlation_id, platform=platform.id, mode=mode)
        labels = (env.sender, family(env.type))
        self.delivered_counts[labels] += 1
        created = envelope.timestamp_or_none(env.created_at)
        end_to_end = max(time.time() - created.timestamp(), 0.0) if created is not None else None
        if end_to_end is not None:
            latency = self._latency.get(labels)
            if latency is None:
                latency = self._latency[labels] = self.fx.metrics.end_to_end_seconds.labels(*labels)
            latency.observe(end_to_end)
        if log.isEnabledFor(logging.INFO):  # the line's fields are built only when it is written
            log.info("message delivered", extra={
                "message_id": env.id, "type": env.type, "from": env.sender, "to": env.recipient,
                "correlation_id": env.correlation_id, "outcome": "delivered", "mode": mode,
                "duration_ms": None if end_to_end is None else round(end_to_end * 1000, 3),
            })
        self.receipt(v, "delivered")

    def receipt_applied(self, v: Verified) -> None:
        self.delivered_counts[(v.env.sender, "yrdx")] += 1

    def count_delivered(self) -> None:
        messages = self.fx.metrics.messages
        for (sender, fam), n in self.delivered_counts.items():
            messages.labels("in", sender, fam, "delivered").inc(n)
        self.delivered_counts.clear()

    def rejected(self, refused: Refused) -> None:
        r, rej, v = refused.record, refused.rejection, refused.verified
        fx = self.fx
        msg_id = v.env.id if v else ""  # only a verified id names the message in the audit trail
        self.records.append(dead_letter(fx.topics.dlq(fx.region), r, rej, fx.region, msg_id))
        corr = v.env.correlation_id if v else ""
        claimed = refused.envelope
        extra = {} if v else {"claimed_id": claimed.id if claimed else ""}  # unverified, but lets a trace find it
        fx.audit.append("rejected", msg_id, refused.sha256, corr, reason=rej.code, source=r.source, **extra)
        fx.audit.append("dead_lettered", msg_id, refused.sha256, corr, topic=fx.topics.dlq(fx.region),
                        reason=rej.code)
        sender = peer(claimed.sender if claimed else None)
        fx.metrics.dead_letters.labels(rej.code, sender).inc()
        fx.metrics.messages.labels("in", sender, family(claimed.type) if claimed else "other", "rejected").inc()
        log.info("message rejected", extra={
            "message_id": claimed.id if claimed else "", "type": claimed.type if claimed else "",
            "from": claimed.sender if claimed else "", "to": claimed.recipient if claimed else "",
            "correlation_id": claimed.correlation_id if claimed else "", "outcome": "rejected",
            "reason": rej.code, "verified": v is not None, "source": r.source,
            "dead_letter": fx.topics.dlq(fx.region),
        })
        if v is not None and rej.code != "duplicate":
            self.decided.append(Decision(v.env.id, rej.code, v.source))
            if v.env.type != RECEIPT_TYPE:
                self.receipt(v, "rejected", rej)

    def receipt(self, v: Verified, outcome: str, rejection: Rejection | None = None) -> None:
        """Queue one receipt item; `seal_receipts` signs all items for one origin as one envelope."""
        item: dict[str, str] = {
            "message_id": v.env.id, "envelope_sha256": v.sha256, "outcome": outcome, "received_at": self.received_at,
        }
        if rejection is not None:
            item["reason"] = rejection.code
            item["detail"] = rejection.detail[:500]
        self.receipts[v.env.sender].append((v, item))

    def seal_receipts(self) -> None:
        """One signed `yrdx.receipt` per origin region and batch: signing and verifying cost once per batch."""
        fx = self.fx
        decided_at = envelope.utc_timestamp()
        for origin, entries in self.receipts.items():
            for i in range(0, len(entries), RECEIPT_ITEMS):
                chunk = entries[i:i + RECEIPT_ITEMS]
                receipt_id, raw = envelope.build(
                    msg_type=RECEIPT_TYPE, schema_version=1, sender=fx.region, recipient=origin,
                    payload={"items": [{**item, "decided_at": decided_at} for _, item in chunk]},
                )
                sig = fx.signer.sign(raw)
                self.records.append(
                    OutRecord(fx.topics.inbox(origin), raw, receipt_id.encode(), [(headers.SIGNATURE, sig.encode())])
                )
                for v, item in chunk:
                    fx.audit.append("receipt_sent", v.env.id, v.sha256, v.env.correlation_id, receipt=receipt_id,
                                    outcome=item["outcome"])
        self.receipts.clear()

    def sends_nothing(self) -> bool:
        """No dead letter and no receipt: only its audit records stand between the batch and its commit."""
        return not self.records and not self.receipts

    async def carried(self, stopping: asyncio.Event) -> None:
        """A batch that sends nothing: its audit records wait up to CARRY_WAIT_S for another step's flush to
        carry them (Egress.run handles the next batch meanwhile), else leave alone."""
        await self.flush(stopping, CARRY_WAIT_S)

    async def flush(self, stopping: asyncio.Event, wait_s: float = 0.0) -> None:
        """Dead letters and receipts, then the audit records: all acknowledged before the offsets move. While
        the broker is down this retries, since nothing is committed meanwhile and so nothing can be lost; when
        the gateway is stopping it gives up instead (Draining) and the batch is read again after the restart.
        `wait_s`: how long a batch with nothing to send lets its audit records wait for a carrier."""
        self.seal_receipts()
        self.count_delivered()
        delay = 0.5
        while True:
            try:
                # Dead letters and receipts ride with the batch's audit segment: one produce round trip.
                await self.fx.audit.durable(riders=self.records, wait_s=0.0 if self.records else wait_s)
                self.records = []
                break
            except BrokerUnavailable as e:
                if stopping.is_set():
                    raise Draining(f"{len(self.records)} dead letters and receipts and the batch's audit records "
                                   "were not acknowledged") from e
                log.warning("broker unavailable while flushing egress results; retrying", extra={"error": str(e)})
                try:
                    await asyncio.wait_for(stopping.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 10.0)
        if self.decided:
            self.fx.state.mark_seen(self.decided)
