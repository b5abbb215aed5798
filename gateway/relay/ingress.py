"""Ingress: a local platform's message -> read -> authorize -> validate -> build the envelope -> sign ->
publish with its audit records (one produce call) -> 202.

`prepare` is the CPU part (pure per message); `sign` signs a group at once (relay/coalesce.py gathers the
single requests in flight); `publish` returns only when the broker has acknowledged the messages and their
audit records, so a 202 means "on Kafka". Idempotency-Key retries are answered by relay/idempotency.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import orjson

from gateway.audit.trail import AuditTrail
from gateway.config import GatewayConfig, Platform
from gateway.crypto.jws import Signer
from gateway.crypto.seal import Sealer
from gateway.kafka.port import BrokerUnavailable, Publisher
from gateway.metrics import Metrics, family
from gateway.relay.coalesce import Coalescer
from gateway.relay.idempotency import IdempotencyKeys, Recalled, request_hash
from gateway.relay.purposes import UsePolicy
from gateway.relay.signed import Signed, Unsigned
from gateway.schemas.registry import SchemaRegistry
from gateway.state import IdempotentRequest, NewSent, StateStore
from gateway.wire import envelope
from gateway.wire.problems import Problem
from gateway.wire.regions import is_region
from gateway.wire.text import header_safe

log = logging.getLogger(__name__)

_FIELDS = {"type", "to", "payload", "correlation_id", "schema_version", "expires_at", "operator", "use_cause"}
MAX_CORRELATION_ID = 128
MAX_IDEMPOTENCY_KEY = 200
def _nesting_problem() -> Problem:
    return Problem("invalid_request", "the message nests deeper than JSON can be serialized here (254 levels)")


@dataclass(frozen=True, slots=True)
class Fresh:
    """A message signed and not yet published; `key`: the claim of its Idempotency-Key (None without one), to be
    remembered before the message is published."""

    signed: Signed
    key: IdempotentRequest | None


@dataclass(frozen=True, slots=True)
class Draft:
    """A platform's message whose fields have the right shapes, before policy and schema."""

    type: str
    to: str
    version: int
    payload: object
    correlation_id: str | None
    expires_at: str | None
    operator: envelope.Operator | None = None
    use_cause: str | None = None


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
        self._uses = UsePolicy(registry, cfg.purposes)
        self._signer = signer
        # Single-message requests in flight at once are signed together and published together, one group in flight
        # at a time (a group commit: its publish waits for the audit trail's one flush in flight anyway); what
        # arrives meanwhile leaves in the next group. A request with an Idempotency-Key is signed first (its
        # answer is remembered before it is published), the others are signed as their group leaves.
        self._signing: Coalescer[Unsigned, Signed] = Coalescer(self._sign_group)
        self._publishing: Coalescer[Signed, Problem | None] = Coalescer(self._publish_group, max_running=1)
        self._sending: Coalescer[Unsigned, Signed | Problem] = Coalescer(self._send_group, max_running=1)
        # The publish of each signed message in flight here, by id: a retry that arrives meanwhile waits for it.
        self._in_flight: dict[str, asyncio.Future[Problem | None]] = {}
        self._publisher = publisher
        self._state = state
        self._keys = IdempotencyKeys(state)
        self._audit = audit
        self._metrics = metrics
        metrics.ingress_queue_wait.set_function(self.queue_wait)  # read at each scrape

    def queue_wait(self) -> float:
        """Seconds the longest-waiting single-message request has waited for its group to leave: under a load the
        gateway cannot keep up with this grows, and admission control refuses new requests beyond a bound. Only
        the group commits queue (one group in flight each); signing groups all start within a turn of the loop."""
        return max(self._sending.oldest_wait(), self._publishing.oldest_wait())

    # --- per message: parse, validate, authorize, build; then per request: sign ---------------------------

    def prepare(self, platform: Platform, item: object, msg_id: str | None = None) -> Unsigned | Problem:
        """read -> authorize -> validate -> build: the first problem refuses the message."""
        draft = self.read(item)
        if isinstance(draft, Problem):
            return draft
        return (self.authorize(platform, draft) or self.check_purpose(draft) or self.validate(draft)
                or self.build(platform, draft, msg_id))

    def read(self, item: object) -> Draft | Problem:
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
        correlation_id = item.get("correlation_id")
        if correlation_id is not None and not header_safe(correlation_id, MAX_CORRELATION_ID):
            return Problem("invalid_request", f"correlation_id must be a string of 1 to {MAX_CORRELATION_ID} "
                           "characters without control characters")
        expires_at = item.get("expires_at")
        if expires_at is not None and (not isinstance(expires_at, str)
                                       or envelope.timestamp_or_none(expires_at) is None):
            return Problem("invalid_request", "expires_at must be an RFC 3339 date-time with a time zone")
        operator: envelope.Operator | None = None
        if "operator" in item:
            read = envelope.operator_or_error(item["operator"])
            if isinstance(read, str):
                return Problem("invalid_request", read)
            operator = read
        use_cause = item.get("use_cause")
        if use_cause is not None and not envelope.is_code(use_cause, envelope.MAX_USE_CAUSE):
            return Problem("invalid_request", f"use_cause must be a purpose code of 1 to {envelope.MAX_USE_CAUSE} "
                           "characters (letters, digits, . _ : -)")
        return Draft(msg_type, to, version, payload, correlation_id, expires_at, operator, use_cause)

    @staticmethod
    def authorize(platform: Platform, draft: Draft) -> Problem | None:
        if draft.type not in platform.may_send:
            return Problem("not_permitted", f"platform {platform.id} may not send {draft.type}")
        return None

    def check_purpose(self, draft: Draft) -> Problem | None:
        """Refused here already when this region's own purposes registry says the destination must refuse it."""
        refusal = self._uses.refusal(draft.type, draft.operator, draft.use_cause)
        return Problem(*refusal) if refusal is not None else None

    def validate(self, draft: Draft) -> Problem | None:
        started = time.perf_counter()
        errors = self._registry.validate(draft.type, draft.version, draft.payload)
        self._metrics.stage("validate").observe(time.perf_counter() - started)
        if errors:
            return Problem(
                "schema_violation", f"{len(errors)} error(s) in the payload",
                [{"pointer": e.pointer, "message": e.message} for e in errors],
            )
        return None

    def build(self, platform: Platform, draft: Draft, msg_id: str | None) -> Unsigned | Problem:
        """The envelope; validated in clear, then sealed for the destination: the signature covers the sealed
        form."""
        try:
            sealed = None
            if draft.type in self._seal:
                started = time.perf_counter()
                sealed = self._sealers[draft.to].seal(orjson.dumps(draft.payload))
                self._metrics.stage("seal").observe(time.perf_counter() - started)
            msg_id, raw = envelope.build(
                msg_type=draft.type, schema_version=draft.version, sender=self._region, recipient=draft.to,
                payload=draft.payload, correlation_id=draft.correlation_id, expires_at=draft.expires_at,
                msg_id=msg_id, sealed=sealed, operator=draft.operator, use_cause=draft.use_cause,
            )
        except orjson.JSONEncodeError:  # orjson parses 1,024 levels but serializes 254
            return _nesting_problem()
        if len(raw) > self._max_message_bytes:
            return Problem("too_large", f"envelope of {len(raw)} bytes exceeds {self._max_message_bytes}")
        return Unsigned(
            platform=platform.id, id=msg_id, type=draft.type, to=draft.to,
            correlation_id=draft.correlation_id or msg_id, envelope=raw, sha256=envelope.sha256_hex(raw),
            use=self._uses.audit_detail(draft.type, draft.operator, draft.use_cause, draft.payload),
        )

    def sign(self, items: Sequence[Unsigned]) -> list[Signed]:
        """One signature for the whole group: a batch signature (a hash tree's root, signed, and a proof per
        message) when it holds several messages. Signing dominated the sender's CPU per message before."""
        started = time.perf_counter()
        signatures = self._signer.sign_batch([u.envelope for u in items])
        if items:
            self._metrics.stage("sign").observe(time.perf_counter() - started)
            self._metrics.signed_together.observe(len(items))
        return [u.signed(sig) for u, sig in zip(items, signatures, strict=True)]

    async def _sign_group(self, items: list[Unsigned]) -> list[Signed]:
        return self.sign(items)

    async def _publish_group(self, items: list[Signed]) -> list[Problem | None]:
        problem = await self.publish(items)
        return [problem] * len(items)

    async def _send_group(self, items: list[Unsigned]) -> list[Signed | Problem]:
        signed = self.sign(items)
        problem = await self.publish(signed)
        return [problem or s for s in signed]

    # --- per group: publish with audit, then record ------------------------------------------------------

    async def publish(self, items: Sequence[Signed]) -> Problem | None:
        """Publish signed messages (of one request, or of the single-message requests in flight) with their
        audit records; None once the broker has acknowledged all of them and their audit records."""
        if not items:
            return None
        started = time.perf_counter()
        sent = [NewSent(p.id, p.platform, p.type, p.to, p.correlation_id, p.sha256) for p in items]
        # Recorded before publishing: the receipt of a fast peer may arrive before the broker's ack does.
        self._state.record_sent(sent, "accepted")
        for p in items:
            self._audit.append("accepted", p.id, p.sha256, p.correlation_id, platform=p.platform, type=p.type, to=p.to,
                               **p.use)
        sending = time.perf_counter()
        try:  # the messages and their `accepted` records in one produce call: nothing is acknowledged before both
            await self._audit.durable(riders=[p.record(self._topics) for p in items])
        except BrokerUnavailable as e:
            for p in items:
                self._audit.append("publish_failed", p.id, p.sha256, p.correlation_id, error="broker_unavailable")
                self._metrics.messages.labels("out", p.to, family(p.type), "publish_failed").inc()
            self._state.record_sent(sent, "publish_failed")
            return Problem("broker_unavailable", f"the broker did not acknowledge: {e}; retry with the same "
                           "Idempotency-Key to resend the same message id")
        self._metrics.stage("publish").observe(time.perf_counter() - sending)
        # `published` rides with the next segment (the next group's, or the periodic flush): the message and its
        # `accepted` record are already on Kafka, which is what the 202 promises.
        for p in items:
            self._audit.append("published", p.id, p.sha256, p.correlation_id, topic=self._topics.inbox(p.to))
        self._state.record_sent(sent, "published")
        elapsed = time.perf_counter() - started
        # Counted per destination and family, not per message: a label lookup is a lock and a dict walk.
        for (to, kind), n in Counter((p.to, family(p.type)) for p in items).items():
            self._metrics.messages.labels("out", to, kind, "accepted").inc(n)
        if log.isEnabledFor(logging.INFO):  # the lines' fields are built only when they are written
            for p in items:
                log.info("message accepted", extra={
                    "message_id": p.id, "type": p.type, "from": self._region, "to": p.to,
                    "correlation_id": p.correlation_id, "outcome": "accepted", "duration_ms": round(elapsed * 1000, 3),
                })
        return None

    async def submit(self, platform: Platform, item: object, idempotency_key: str | None) -> Signed | Problem:
        """One message with an optional Idempotency-Key: a retry resends the same id and bytes."""
        if idempotency_key is None:
            checked = self.prepare(platform, item)
            return checked if isinstance(checked, Problem) else await self._sending.submit(checked)
        got = await self.sign_single(platform, item, idempotency_key)
        if isinstance(got, Fresh):  # with a key, a fresh message always carries its claim
            won = self._keys.remember(platform.id, idempotency_key, got.key) if got.key is not None else None
            got = won or Recalled(got.signed, final=False)
        if isinstance(got, Problem):
            return got
        if got.final:
            return got.answer
        result = got.answer
        if isinstance(result, Problem):
            return result
        return await self.publish_one(result) or result

    async def sign_single(self, platform: Platform, item: object, idempotency_key: str | None,
                          ) -> Fresh | Recalled | Problem:
        """One message checked and signed (together with those of the other requests in flight), not published:
        `Fresh`, with the claim of its Idempotency-Key to remember before it is published; or, for a key seen
        before, what its retry gets (`Recalled`). A request with the same key that is remembered while this one
        waits for its signature is found by the caller's claim, which is atomic (`IdempotencyKeys.remember`,
        `open_request`): its loser recalls the winner's message, so the key is read once here, not again."""
        if idempotency_key is None:
            fresh = await self._prepare_one(platform, item)
            return fresh if isinstance(fresh, Problem) else Fresh(fresh, None)
        request_sha = request_hash(item)
        if request_sha is None:
            return _nesting_problem()
        recalled = self._keys.recall(platform.id, idempotency_key, request_sha)
        if recalled is not None:
            return recalled
        signed = await self._prepare_one(platform, item)
        if isinstance(signed, Problem):
            return signed
        return Fresh(signed, self._keys.claim(request_sha, signed))

    async def publish_one(self, signed: Signed) -> Problem | None:
        """One signed message, published with those of the other single requests in flight. A retry with its
        Idempotency-Key while its first publish is in flight here gets that publish's outcome: a second copy on
        the topic would only reach the receiver as a `duplicate` dead letter. (A retry at another replica, or
        after a failed publish, does send the same bytes again: the receiver delivers them once.)"""
        running = self._in_flight.get(signed.id)
        if running is None:
            running = asyncio.ensure_future(self._publishing.submit(signed))
            self._in_flight[signed.id] = running
            running.add_done_callback(lambda _: self._in_flight.pop(signed.id, None))
        return await asyncio.shield(running)  # one caller going away does not cancel the others' publish

    async def _prepare_one(self, platform: Platform, item: object) -> Signed | Problem:
        """One message, signed together with those of the other requests in flight (relay/coalesce.py)."""
        checked = self.prepare(platform, item)
        return checked if isinstance(checked, Problem) else await self._signing.submit(checked)

    async def submit_batch(self, platform: Platform, items: Sequence[object]) -> list[Signed | Problem]:
        """Each message is checked on its own; the valid ones are signed and published together."""
        checked = [self.prepare(platform, item) for item in items]
        signed = iter(self.sign([c for c in checked if isinstance(c, Unsigned)]))
        results: list[Signed | Problem] = [c if isinstance(c, Problem) else next(signed) for c in checked]
        ok = [r for r in results if isinstance(r, Signed)]
        problem = await self.publish(ok)
        if problem is not None:  # each refused item keeps its id: GET /v1/messages/{id} tells what became of it
            return [replace(problem, message_id=r.id) if isinstance(r, Signed) else r for r in results]
        return results
