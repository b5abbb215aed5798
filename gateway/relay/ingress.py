"""Ingress: a local platform's message -> validate -> authorize -> envelope -> sign -> publish -> 202.

`prepare` is the CPU part (pure per message); `publish` sends a group of prepared messages and their audit
records, and returns only when the broker has acknowledged all of them, so a 202 means "on Kafka".
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import orjson

from gateway.audit.trail import AuditTrail
from gateway.config import GatewayConfig, Platform
from gateway.crypto.jws import Signer
from gateway.crypto.seal import Sealer
from gateway.kafka.port import BrokerUnavailable, OutRecord, Publisher
from gateway.metrics import Metrics
from gateway.relay.coalesce import Coalescer
from gateway.schemas.registry import SchemaRegistry
from gateway.state import IdempotentRequest, NewSent, StateStore
from gateway.wire import envelope, headers
from gateway.wire.problems import Problem
from gateway.wire.regions import Topics, is_region
from gateway.wire.text import header_safe

_FIELDS = {"type", "to", "payload", "correlation_id", "schema_version", "expires_at"}
MAX_CORRELATION_ID = 128
MAX_IDEMPOTENCY_KEY = 200
def _nesting_problem() -> Problem:
    return Problem("invalid_request", "the message nests deeper than JSON can be serialized here (254 levels)")


@dataclass(frozen=True, slots=True)
class Unsigned:
    """A checked message in its envelope, waiting for the signature (signed per request, not per message)."""

    platform: str  # the platform that sent it
    id: str
    type: str
    to: str
    correlation_id: str
    envelope: bytes
    sha256: str

    def signed(self, signature: str) -> Prepared:
        return Prepared(self.platform, self.id, self.type, self.to, self.correlation_id, self.envelope, signature,
                        self.sha256)


@dataclass(frozen=True, slots=True)
class Prepared:
    platform: str
    id: str
    type: str
    to: str
    correlation_id: str
    envelope: bytes
    signature: str
    sha256: str

    def record(self, topics: Topics) -> OutRecord:
        return OutRecord(
            topics.inbox(self.to), self.envelope, self.correlation_id.encode(),
            [(headers.SIGNATURE, self.signature.encode())],
        )


class Ingress:
    def __init__(
        self,
        cfg: GatewayConfig,
        registry: SchemaRegistry,
        signer: Signer,
        publisher: Publisher,
        state: StateStore,
        audit: AuditTrail,
        metrics: Metrics,
        sealers: Mapping[str, Sealer] | None = None,
    ) -> None:
        self._region = cfg.region
        self._topics = cfg.topics
        self._seal = cfg.seal
        self._sealers = sealers or {}
        self._max_message_bytes = cfg.limits.max_body_bytes
        self._registry = registry
        self._signer = signer
        # Single-message requests in flight at once are signed together and published together.
        self._signing: Coalescer[Unsigned, Prepared] = Coalescer(self._sign_group)
        self._publishing: Coalescer[Prepared, Problem | None] = Coalescer(self._publish_group)
        self._publisher = publisher
        self._state = state
        self._audit = audit
        self._metrics = metrics

    # --- per message: parse, validate, authorize, build; then per request: sign ---------------------------

    def prepare(self, platform: Platform, item: object, msg_id: str | None = None) -> Unsigned | Problem:
        if not isinstance(item, dict):
            return Problem("invalid_request", "a message is a JSON object {type, to, payload, ...}")
        unknown = set(item) - _FIELDS
        if unknown:
            return Problem("invalid_request", f"unknown field(s): {', '.join(sorted(unknown))}")
        msg_type, to, payload = item.get("type"), item.get("to"), item.get("payload")
        if not isinstance(msg_type, str) or not isinstance(to, str) or "payload" not in item:
            return Problem("invalid_request", "type (string), to (region code) and payload are required")
        version = item.get("schema_version")
        if version is None:
            version = self._registry.latest_version(msg_type)
        elif isinstance(version, bool) or not isinstance(version, int):  # never echoed: it may nest 1,000 deep
            return Problem("invalid_request", "schema_version must be an integer")
        if version is None or not self._registry.has(msg_type, version):
            return Problem("unknown_type", f"no schema for {msg_type!r} version {version}")
        if not is_region(to) or to == self._region:
            return Problem("unknown_region", f"{to!r} is not another region of the exchange")
        if msg_type not in platform.may_send:
            return Problem("not_permitted", f"platform {platform.id} may not send {msg_type}")
        correlation_id = item.get("correlation_id")
        if correlation_id is not None and not header_safe(correlation_id, MAX_CORRELATION_ID):
            return Problem("invalid_request", f"correlation_id must be a string of 1 to {MAX_CORRELATION_ID} "
                           "characters without control characters")
        expires_at = item.get("expires_at")
        if expires_at is not None:
            try:
                if not isinstance(expires_at, str):
                    raise ValueError("not a string")
                envelope.parse_timestamp(expires_at)
            except ValueError:
                return Problem("invalid_request", "expires_at must be an RFC 3339 date-time with a time zone")
        errors = self._registry.validate(msg_type, version, payload)
        if errors:
            return Problem(
                "schema_violation", f"{len(errors)} error(s) in the payload",
                [{"pointer": e.pointer, "message": e.message} for e in errors],
            )
        try:
            # Validated in clear, then sealed for the destination gateway: the signature covers the sealed form.
            sealed = self._sealers[to].seal(orjson.dumps(payload)) if msg_type in self._seal else None
            msg_id, raw = envelope.build(
                msg_type=msg_type, schema_version=version, sender=self._region, recipient=to, payload=payload,
                correlation_id=correlation_id, expires_at=expires_at, msg_id=msg_id, sealed=sealed,
            )
        except orjson.JSONEncodeError:  # orjson parses 1,024 levels but serializes 254
            return _nesting_problem()
        if len(raw) > self._max_message_bytes:
            return Problem("too_large", f"envelope of {len(raw)} bytes exceeds {self._max_message_bytes}")
        return Unsigned(
            platform=platform.id, id=msg_id, type=msg_type, to=to, correlation_id=correlation_id or msg_id,
            envelope=raw, sha256=envelope.sha256_hex(raw),
        )

    def sign(self, items: Sequence[Unsigned]) -> list[Prepared]:
        """One signature for the whole group: a batch signature (a hash tree's root, signed, and a proof per
        message) when it holds several messages. Signing dominated the sender's CPU per message before."""
        signatures = self._signer.sign_batch([u.envelope for u in items])
        if items:
            self._metrics.signed_together.observe(len(items))
        return [u.signed(sig) for u, sig in zip(items, signatures, strict=True)]

    async def _sign_group(self, items: list[Unsigned]) -> list[Prepared]:
        return self.sign(items)

    async def _publish_group(self, items: list[Prepared]) -> list[Problem | None]:
        problem = await self.publish(items)
        return [problem] * len(items)

    # --- per group: publish with audit, then record ------------------------------------------------------

    async def publish(self, items: Sequence[Prepared]) -> Problem | None:
        """Publish signed messages (of one request, or of the single-message requests in flight) with their
        audit records; None once the broker has acknowledged all of them and their audit records."""
        if not items:
            return None
        started = time.perf_counter()
        sent = [NewSent(p.id, p.platform, p.type, p.to, p.correlation_id, p.sha256) for p in items]
        # Recorded before publishing: the receipt of a fast peer may arrive before the broker's ack does.
        self._state.record_sent(sent, "accepted")
        for p in items:
            self._audit.append("accepted", p.id, p.sha256, p.correlation_id, platform=p.platform, type=p.type, to=p.to)
        try:
            await self._publisher.publish([p.record(self._topics) for p in items])
        except BrokerUnavailable as e:
            for p in items:
                self._audit.append("publish_failed", p.id, p.sha256, p.correlation_id, error="broker_unavailable")
            self._metrics.refused.labels("broker_unavailable").inc(len(items))
            self._state.record_sent(sent, "publish_failed")
            return Problem("broker_unavailable", f"the broker did not acknowledge: {e}; retry with the same "
                           "Idempotency-Key to resend the same message id")
        for p in items:
            self._audit.append("published", p.id, p.sha256, p.correlation_id, topic=self._topics.inbox(p.to))
        self._state.record_sent(sent, "published")
        try:  # nothing is acknowledged before its audit records are on Kafka
            await self._audit.durable()
        except BrokerUnavailable as e:
            # The messages did reach the broker; their audit records stay queued in order for the periodic
            # flush. A retry with the same Idempotency-Key answers 202 with the same id and sends nothing again.
            self._metrics.refused.labels("broker_unavailable").inc(len(items))
            return Problem("broker_unavailable", f"the message reached the broker but its audit record did not ({e}); "
                           "retry with the same Idempotency-Key: the same message id is answered, nothing is resent")
        elapsed = time.perf_counter() - started
        for p in items:
            self._metrics.accepted.labels(p.to, p.type).inc()
            self._metrics.ingress_seconds.observe(elapsed)
        return None

    async def submit(self, platform: Platform, item: object, idempotency_key: str | None) -> Prepared | Problem:
        """One message with an optional Idempotency-Key: a retry resends the same id and bytes."""
        if idempotency_key is None:
            prepared = await self._prepare_one(platform, item)
        else:
            try:
                request_sha = hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()
            except orjson.JSONEncodeError:
                self._metrics.refused.labels("invalid_request").inc()
                return _nesting_problem()
            known = self._remembered(platform, idempotency_key, request_sha)
            if known is None:
                fresh = await self._prepare_one(platform, item)
                # A request with the same key may have been remembered while this one waited for its signature.
                known = self._remembered(platform, idempotency_key, request_sha)
                if known is None:
                    if isinstance(fresh, Prepared):
                        self._state.remember_idempotent(platform.id, idempotency_key, IdempotentRequest(
                            request_sha, fresh.id, fresh.envelope, fresh.signature,
                        ))
                    known = (fresh, False)
            prepared, answered = known
            if answered:
                return prepared
        if isinstance(prepared, Problem):
            self._metrics.refused.labels(prepared.code).inc()
            return prepared
        problem = await self._publishing.submit(prepared)
        return problem or prepared

    def _remembered(self, platform: Platform, key: str, request_sha: str) -> tuple[Prepared | Problem, bool] | None:
        """For an Idempotency-Key seen before: what the retry gets, and whether that is the whole answer (the
        message is on Kafka already, or the key belongs to another request). None for a new key."""
        known = self._state.idempotent(platform.id, key)
        if known is None:
            return None
        if known.request_sha256 != request_sha:
            return Problem("idempotency_conflict", "this Idempotency-Key was used for another request"), True
        env = envelope.parse(known.envelope)
        prepared = Prepared(platform.id, env.id, env.type, env.recipient, env.correlation_id, known.envelope,
                            known.signature, envelope.sha256_hex(known.envelope))
        earlier = self._state.sent(env.id)
        return prepared, earlier is not None and earlier.status not in ("accepted", "publish_failed")

    async def _prepare_one(self, platform: Platform, item: object) -> Prepared | Problem:
        """One message, signed together with those of the other requests in flight (gateway/coalesce.py)."""
        checked = self.prepare(platform, item)
        return checked if isinstance(checked, Problem) else await self._signing.submit(checked)

    async def submit_batch(self, platform: Platform, items: Sequence[object]) -> list[Prepared | Problem]:
        """Each message is checked on its own; the valid ones are signed and published together."""
        checked = [self.prepare(platform, item) for item in items]
        signed = iter(self.sign([c for c in checked if isinstance(c, Unsigned)]))
        results: list[Prepared | Problem] = [c if isinstance(c, Problem) else next(signed) for c in checked]
        ok = [r for r in results if isinstance(r, Prepared)]
        for r in results:
            if isinstance(r, Problem):
                self._metrics.refused.labels(r.code).inc()
        problem = await self.publish(ok)
        if problem is not None:  # each refused item keeps its id: GET /v1/messages/{id} tells what became of it
            return [replace(problem, message_id=r.id) if isinstance(r, Prepared) else r for r in results]
        return results
