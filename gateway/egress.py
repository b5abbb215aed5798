"""Egress: consume -> verify -> validate -> authorize -> dedupe -> deliver -> receipt -> commit.

Each check returns the verified message or a `Rejection`; `Egress.reject` turns a rejection into a
dead-letter record, an audit record, a metric and (when the sender is authenticated) a signed negative
receipt, in one place. Offsets are committed only after every record of the batch was delivered or
dead-lettered, and after the audit records and receipts are acknowledged by the broker.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import orjson

from gateway import envelope
from gateway.audit import AuditTrail
from gateway.config import GatewayConfig, Platform
from gateway.crypto.jws import JwsError, Signer, Verifier
from gateway.crypto.seal import Opener, SealError
from gateway.crypto.trust import TrustError, TrustStore
from gateway.delivery import WebhookDeliverer
from gateway.envelope import Envelope
from gateway.ingress import SIGNATURE_HEADER
from gateway.kafka.transport import BrokerUnavailable, InboxConsumer, InRecord, OutRecord, Publisher
from gateway.metrics import Metrics
from gateway.problems import Rejection
from gateway.schemas import SchemaRegistry
from gateway.state import StateStore

log = logging.getLogger(__name__)

RECEIPT_TYPE = "yrdx.receipt"
REPLAY_HEADER = "yrdx-replay-of"  # set by `yrdx dlq replay` (gateway/dlq.py)
RECEIPT_ITEMS = 1000  # items per signed receipt (the schema allows 2,000)


def opened_document(env: Envelope, raw: bytes, signature: str) -> bytes:
    """What a platform receives for a sealed message: the opened payload, and the exact signed bytes as evidence
    (base64) with their signature, so the platform can still verify the sender and prove what travelled."""
    return orjson.dumps({
        "id": env.id, "type": env.type, "schema_version": env.schema_version, "from": env.sender,
        "to": env.recipient, "correlation_id": env.correlation_id, "created_at": env.created_at,
        "expires_at": env.expires_at, "payload": env.payload,
        "envelope": base64.b64encode(raw).decode("ascii"), "signature": signature,
    })


def delivery_body(v: Verified) -> bytes:
    """The webhook body: the exact signed envelope bytes, or for a sealed message the opened document."""
    return v.record.value if v.env.sealed is None else opened_document(v.env, v.record.value, v.signature)


def _claimed_id(raw: bytes) -> str:
    try:
        return envelope.parse(raw).id[:64]
    except envelope.EnvelopeError:
        return ""


@dataclass(frozen=True, slots=True)
class Verified:
    record: InRecord
    env: Envelope
    signature: str
    signer_thumbprint: str
    sha256: str

    @property
    def source(self) -> str:
        return self.record.source


@dataclass(frozen=True, slots=True)
class Refused:
    record: InRecord
    rejection: Rejection
    verified: Verified | None = None  # set when the sender is authenticated, so it can get a receipt


class Egress:
    def __init__(
        self,
        cfg: GatewayConfig,
        registry: SchemaRegistry,
        trust: TrustStore,
        signer: Signer,
        publisher: Publisher,
        state: StateStore,
        audit: AuditTrail,
        metrics: Metrics,
        webhooks: WebhookDeliverer,
        opener: Opener | None = None,
    ) -> None:
        self._cfg = cfg
        self._opener = opener
        self._region = cfg.region
        self._topics = cfg.topics
        self._registry = registry
        self._trust = trust
        self._signatures = Verifier()  # one public-key check per batch signature, not per message
        self._signer = signer
        self._publisher = publisher
        self._state = state
        self._audit = audit
        self._metrics = metrics
        self._webhooks = webhooks
        self._outbox: list[OutRecord] = []
        self._decided: list[tuple[str, str, str]] = []  # rejections to mark seen once their DLQ record is acked
        self._receipts: dict[str, list[tuple[Verified, dict[str, str]]]] = defaultdict(list)
        self._received_at = envelope.utc_timestamp()

    async def run(self, consumer: InboxConsumer, stopping: asyncio.Event) -> None:
        """Until asked to stop: the batch in hand is finished and committed before returning (drain)."""
        while not stopping.is_set():
            batch = await consumer.poll()
            if batch:
                await self.handle(batch)
                await consumer.commit(batch)

    # --- the checks, in order: each returns the message or why it is refused -----------------------------

    def check(self, record: InRecord, now: datetime, sha256: str) -> Verified | Refused:
        verified = self.verify(record, now, sha256)
        if isinstance(verified, Rejection):
            return Refused(record, verified)
        refusal = self.validate(verified) or self.authorize(verified) or self.check_expiry(verified, now)
        return Refused(record, refusal, verified) if refusal else verified

    def verify(self, record: InRecord, now: datetime, sha256: str) -> Verified | Rejection:
        raw_sig = record.headers.get(SIGNATURE_HEADER)
        if raw_sig is None:
            return Rejection("bad_signature", "no signature header")
        try:
            jws = self._signatures.parse(raw_sig)
        except (JwsError, UnicodeDecodeError) as e:
            return Rejection("bad_signature", f"malformed signature: {e}")
        try:
            signer = self._trust.signer(jws.header, now)
        except TrustError as e:
            return Rejection(e.code, e.detail)
        if not self._signatures.verify(jws, record.value, signer.public_key):
            return Rejection("bad_signature", "signature does not match the record bytes")
        try:
            env = envelope.parse(record.value)
        except envelope.EnvelopeError as e:
            return Rejection("invalid_envelope", str(e))
        if env.sender != signer.region:
            return Rejection("untrusted_signer", f"certificate of {signer.region} signed a message from {env.sender}")
        if env.recipient != self._region:
            return Rejection("wrong_destination", f"addressed to {env.recipient}, this is {self._region}")
        if env.sealed is not None:  # verified first, opened second
            opened = self.open_sealed(env.sealed)
            if isinstance(opened, Rejection):
                return opened
            env = replace(env, payload=opened)
        return Verified(record, env, raw_sig.decode("ascii"), signer.thumbprint, sha256)

    def open_sealed(self, sealed: str) -> object:
        if self._opener is None:
            return Rejection("undecryptable", "this gateway has no identity.encryption_key")
        try:
            return orjson.loads(self._opener.open(sealed))
        except (SealError, orjson.JSONDecodeError) as e:
            return Rejection("undecryptable", str(e))

    def validate(self, v: Verified) -> Rejection | None:
        env = v.env
        if not self._registry.has(env.type, env.schema_version):
            return Rejection("unknown_type", f"no schema for {env.type} v{env.schema_version}")
        errors = self._registry.validate(env.type, env.schema_version, env.payload)
        if errors:
            return Rejection("schema_violation", "; ".join(f"{e.pointer or '/'}: {e.message}" for e in errors[:5]))
        return None

    def authorize(self, v: Verified) -> Rejection | None:
        if v.env.type == RECEIPT_TYPE:
            return None  # any peer acknowledges what we sent it
        if v.env.type not in self._cfg.accept.get(v.env.sender, frozenset()):
            return Rejection("not_permitted", f"{v.env.sender} may not send {v.env.type} to {self._region}")
        if self._cfg.recipient_of(v.env.type) is None:
            return Rejection("no_recipient", f"no local platform receives {v.env.type}")
        return None

    @staticmethod
    def check_expiry(v: Verified, now: datetime) -> Rejection | None:
        if v.env.expires_at is None:
            return None
        try:
            expired = envelope.parse_timestamp(v.env.expires_at) <= now
        except ValueError:
            return Rejection("invalid_envelope", "expires_at is not an RFC 3339 date-time")
        return Rejection("expired", f"expired at {v.env.expires_at}") if expired else None

    def dedupe(self, checked: list[Verified | Refused]) -> list[Verified | Refused]:
        """Second copies of a delivered id are refused; a re-read of the same record (after a crash before the
        offset commit) is dropped silently, since it was already delivered or dead-lettered."""
        ids = [c.env.id for c in checked if isinstance(c, Verified)]
        seen = self._state.seen(ids)
        in_batch: set[str] = set()
        out: list[Verified | Refused] = []
        for c in checked:
            if isinstance(c, Verified):
                prior = seen.get(c.env.id)
                if prior is not None and prior[1] == c.source:
                    if prior[0] == "delivered" and c.env.type != RECEIPT_TYPE:
                        self.send_receipt(c, "delivered")  # its receipt may not have left before the crash
                    continue
                # Only a delivered id makes a second copy a duplicate: a rejected one may come back (replay).
                if (prior is not None and prior[0] == "delivered") or c.env.id in in_batch:
                    out.append(Refused(c.record, Rejection("duplicate", f"message {c.env.id} already delivered"), c))
                    continue
                in_batch.add(c.env.id)
            out.append(c)
        return out

    # --- the batch -----------------------------------------------------------------------------------------

    async def handle(self, batch: Sequence[InRecord]) -> None:
        now = datetime.now(UTC)
        self._received_at = envelope.utc_timestamp(now)
        self._metrics.received.inc(len(batch))
        results = []
        for r in batch:
            sha = envelope.sha256_hex(r.value)  # once per record: audit, receipts and dedupe all use it
            c = self.check(r, now, sha)
            results.append(c)
            # The checks append nothing, so `received` still precedes every later record of the message.
            verified = c if isinstance(c, Verified) else c.verified
            claimed = verified.env.id if verified else _claimed_id(r.value)
            self._audit.append("received", claimed, sha, source=r.source)
            if REPLAY_HEADER in r.headers:  # an operator put a dead letter back (yrdx dlq replay)
                self._audit.append("replayed", claimed, sha, of=r.headers[REPLAY_HEADER].decode(errors="replace"))
        checked = self.dedupe(results)
        inbox: list[tuple[Platform, Verified]] = []
        webhooks: dict[str, list[tuple[Platform, Verified]]] = defaultdict(list)
        for c in checked:
            if isinstance(c, Refused):
                self.reject(c)
                continue
            self._audit.append("verified", c.env.id, c.sha256, c.env.correlation_id, signer=c.signer_thumbprint,
                               type=c.env.type, sender=c.env.sender)
            if c.env.type == RECEIPT_TYPE:
                self.apply_receipt(c)
                continue
            platform = self._cfg.recipient_of(c.env.type)
            assert platform is not None  # authorize() refused the others
            if platform.delivery.mode == "inbox":
                inbox.append((platform, c))
            else:  # conversation order is kept: one conversation's messages go one after another
                webhooks[c.env.correlation_id].append((platform, c))
        if inbox:
            self._state.deliver_to_inbox([
                (p.id, v.env.id, v.env.type, v.env.sender, v.record.value, v.signature, v.source) for p, v in inbox
            ])
            for p, v in inbox:
                self.delivered(p, v, "inbox")
        if webhooks:
            # Conversations are pushed in parallel up to the platform's concurrency: after a crash, only the
            # messages in flight at that moment can reach the platform a second time.
            limits: dict[str, asyncio.Semaphore] = {}
            for items in webhooks.values():
                platform = items[0][0]
                limits.setdefault(platform.id, asyncio.Semaphore(platform.delivery.concurrency))
            await asyncio.gather(*(
                self.push_conversation(items, limits[items[0][0].id]) for items in webhooks.values()
            ))
        await self.flush()

    async def push_conversation(self, items: list[tuple[Platform, Verified]], limit: asyncio.Semaphore) -> None:
        for platform, v in items:
            headers = {
                "Content-Type": "application/json",
                "Yrdx-Sealed": "true" if v.env.sealed is not None else "false",
                "Yrdx-Signature": v.signature,
                "Yrdx-Message-Id": v.env.id,
                "Yrdx-Type": v.env.type,
                "Yrdx-From": v.env.sender,
                "Yrdx-Correlation-Id": v.env.correlation_id,
            }
            async with limit:
                result = await self._webhooks.deliver(platform.delivery, delivery_body(v), headers)
            if result.delivered:
                # Marked right after the platform's 2xx: after a crash only this one message can come again.
                self._state.mark_seen([(v.env.id, "delivered", v.source)])
                self.delivered(platform, v, "webhook")
            else:
                self.reject(Refused(v.record, Rejection("delivery_failed", result.detail), v))

    def delivered(self, platform: Platform, v: Verified, mode: str) -> None:
        self._audit.append("delivered", v.env.id, v.sha256, v.env.correlation_id, platform=platform.id, mode=mode)
        self._metrics.delivered.labels(v.env.sender, mode).inc()
        try:
            transit = time.time() - envelope.parse_timestamp(v.env.created_at).timestamp()
            self._metrics.transit_seconds.observe(max(transit, 0.0))
        except ValueError:
            pass
        self.send_receipt(v, "delivered")

    def reject(self, refused: Refused) -> None:
        r, rej, v = refused.record, refused.rejection, refused.verified
        msg_id = v.env.id if v else ""
        headers = [
            ("yrdx-reason", rej.code.encode()),
            ("yrdx-detail", rej.detail[:500].encode()),
            ("yrdx-source", r.source.encode()),
            ("yrdx-region", self._region.encode()),
        ]
        if SIGNATURE_HEADER in r.headers:
            headers.append((SIGNATURE_HEADER, r.headers[SIGNATURE_HEADER]))
        self._outbox.append(OutRecord(self._topics.dlq(self._region), r.value, msg_id.encode() or r.key, headers))
        sha = envelope.sha256_hex(r.value)
        extra = {} if v else {"claimed_id": _claimed_id(r.value)}  # unverified, but lets a trace find it
        corr = v.env.correlation_id if v else ""
        self._audit.append("rejected", msg_id, sha, corr, reason=rej.code, source=r.source,
                           **extra)
        self._audit.append("dead_lettered", msg_id, sha, corr, topic=self._topics.dlq(self._region), reason=rej.code)
        self._metrics.rejected.labels(rej.code).inc()
        log.info("message rejected", extra={"reason": rej.code, "message_id": msg_id, "source": r.topic})
        if v is not None and rej.code != "duplicate":
            self._decided.append((v.env.id, rej.code, v.source))
            if v.env.type != RECEIPT_TYPE:
                self.send_receipt(v, "rejected", rej)

    def send_receipt(self, v: Verified, outcome: str, rejection: Rejection | None = None) -> None:
        """Queue one receipt item; `seal_receipts` signs all items for one origin as one envelope."""
        item: dict[str, str] = {
            "message_id": v.env.id, "envelope_sha256": v.sha256, "outcome": outcome,
            "received_at": self._received_at,
        }
        if rejection is not None:
            item["reason"] = rejection.code
            item["detail"] = rejection.detail[:500]
        self._receipts[v.env.sender].append((v, item))

    def seal_receipts(self) -> None:
        """One signed `yrdx.receipt` per origin region and batch: signing and verifying cost once per batch."""
        decided_at = envelope.utc_timestamp()
        for origin, entries in self._receipts.items():
            for i in range(0, len(entries), RECEIPT_ITEMS):
                chunk = entries[i:i + RECEIPT_ITEMS]
                receipt_id, raw = envelope.build(
                    msg_type=RECEIPT_TYPE, schema_version=1, sender=self._region, recipient=origin,
                    payload={"items": [{**item, "decided_at": decided_at} for _, item in chunk]},
                )
                sig = self._signer.sign(raw)
                self._outbox.append(
                    OutRecord(self._topics.inbox(origin), raw, receipt_id.encode(), [(SIGNATURE_HEADER, sig.encode())])
                )
                for v, item in chunk:
                    self._audit.append("receipt_sent", v.env.id, v.sha256, v.env.correlation_id, receipt=receipt_id,
                                       outcome=item["outcome"])
        self._receipts.clear()

    def apply_receipt(self, v: Verified) -> None:
        """A peer's signed receipt for messages this gateway sent: their status at the origin becomes final."""
        base = {"receipt_id": v.env.id, "by": v.env.sender, "signer": v.signer_thumbprint, "signature": v.signature}
        items = v.env.payload["items"]
        applied = self._state.apply_receipts(
            v.env.sender,
            [(i["message_id"], i["envelope_sha256"], i["outcome"],
              {**base, "outcome": i["outcome"], "envelope_sha256": i["envelope_sha256"], "at": i["decided_at"],
               **({"reason": i["reason"]} if "reason" in i else {})})
             for i in items],
            (v.env.id, v.source),
        )
        for i, (outcome, correlation_id) in zip(items, applied, strict=True):
            if outcome == "unmatched":
                log.warning("receipt for a message this gateway did not send", extra={"message_id": i["message_id"]})
            # The message's own conversation, not the receipt's: one receipt covers many conversations.
            self._audit.append("receipt_received", i["message_id"], i["envelope_sha256"], correlation_id,
                               receipt=v.env.id, outcome=outcome)
            self._metrics.receipts.labels(outcome).inc()

    async def flush(self) -> None:
        """Dead letters and receipts, then the audit records: all acknowledged before the offsets move."""
        self.seal_receipts()
        delay = 0.5
        while True:
            try:
                if self._outbox:
                    await self._publisher.publish(self._outbox)
                    self._outbox = []
                await self._audit.durable()
                break
            except BrokerUnavailable as e:  # nothing is committed meanwhile, so nothing can be lost
                log.warning("broker unavailable while flushing egress results; retrying", extra={"error": str(e)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        if self._decided:
            self._state.mark_seen(self._decided)
            self._decided = []
