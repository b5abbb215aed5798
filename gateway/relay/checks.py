"""The egress checks, in order: read the record -> parse the envelope -> verify the signature -> open a sealed
payload -> validate -> authorize -> purpose -> expiry. Each returns the message or the `Rejection` that refuses it, and
none has side effects, so the pipeline decides what a refusal costs (dead letter, receipt, audit) in one place.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

import orjson

from gateway.config import GatewayConfig
from gateway.crypto.jws import JwsError, Verifier
from gateway.crypto.seal import Opener, SealError
from gateway.crypto.trust import TrustError, TrustStore
from gateway.kafka.port import InRecord
from gateway.metrics import Metrics
from gateway.relay.purposes import UsePolicy
from gateway.schemas.registry import SchemaRegistry
from gateway.wire import envelope, headers
from gateway.wire.envelope import Envelope
from gateway.wire.problems import Rejection
from gateway.wire.text import header_safe

RECEIPT_TYPE = "yrdx.receipt"
# The largest inbox record egress reads (the broker's default message.max.bytes is about 1 MB): anything larger
# was not written by a gateway, whose envelopes stay below limits.max_body_bytes.
MAX_RECORD_BYTES = 1024 * 1024
# Envelope fields that become webhook headers and audit fields: bounded and free of control characters.
_HEADER_FIELDS = {"id": 64, "type": 128, "from": 8, "to": 8, "correlation_id": 128}


@dataclass(frozen=True, slots=True)
class Verified:
    record: InRecord
    env: Envelope
    signature: str
    signer_thumbprint: str
    sha256: str
    use: Mapping[str, str] = field(default_factory=dict)  # the use context for the audit (relay/purposes.py)

    @property
    def source(self) -> str:
        return self.record.source


@dataclass(frozen=True, slots=True)
class Refused:
    record: InRecord
    rejection: Rejection
    sha256: str
    verified: Verified | None = None  # set when the sender is authenticated, so it can get a receipt
    claimed: Envelope | None = None  # the envelope as read but not verified: for traces and logs only

    @property
    def envelope(self) -> Envelope | None:
        return self.verified.env if self.verified is not None else self.claimed


def read_record(record: InRecord) -> Rejection | None:
    if record.flaw is not None:
        return Rejection("invalid_record", record.flaw)
    size = len(record.value) + sum(len(k) + len(v) for k, v in record.headers.items())
    if size > MAX_RECORD_BYTES:
        return Rejection("invalid_record", f"record of {size} bytes exceeds {MAX_RECORD_BYTES}")
    return None


def parse_envelope(raw: bytes) -> Envelope | Rejection:
    try:
        env = envelope.parse(raw)
    except envelope.EnvelopeError as e:
        return Rejection("invalid_envelope", str(e))
    fields = {"id": env.id, "type": env.type, "from": env.sender, "to": env.recipient,
              "correlation_id": env.correlation_id}
    for name, value in fields.items():
        if not header_safe(value, _HEADER_FIELDS[name]):
            return Rejection("invalid_envelope",
                             f"{name} must have 1 to {_HEADER_FIELDS[name]} characters and no control characters")
    return env


class Checks:
    """Built once per gateway from its config, trust store, schemas and key; `check` runs per record."""

    def __init__(self, cfg: GatewayConfig, registry: SchemaRegistry, trust: TrustStore,
                 opener: Opener | None = None, metrics: Metrics | None = None) -> None:
        self._cfg = cfg
        self._region = cfg.region
        self._registry = registry
        self._uses = UsePolicy(registry, cfg.purposes)
        self._trust = trust
        self._opener = opener
        self._signatures = Verifier()  # one public-key check per batch signature, not per message
        stages = metrics or Metrics(cfg.region)  # a private registry when nobody scrapes it (unit tests)
        self._verify_s, self._open_s, self._validate_s = (stages.stage(s) for s in ("verify", "open", "validate"))

    def check(self, record: InRecord, now: datetime) -> Verified | Refused:
        sha = envelope.sha256_hex(record.value)  # once per record: audit, receipts and dedupe all use it
        unreadable = read_record(record)
        if unreadable is not None:
            return Refused(record, unreadable, sha)
        env = parse_envelope(record.value)
        if isinstance(env, Rejection):
            return Refused(record, env, sha)
        verified = self.verify(record, env, now, sha)
        if isinstance(verified, Rejection):
            return Refused(record, verified, sha, claimed=env)
        refusal = (self.validate(verified) or self.authorize(verified) or self.check_purpose(verified)
                   or self.check_expiry(verified, now))
        if refusal:
            return Refused(record, refusal, sha, verified, env)
        env = verified.env
        use = self._uses.audit_detail(env.type, env.operator, env.use_cause, env.payload)
        if not use:
            return verified
        v = verified  # built directly: dataclasses.replace walks the fields on every call
        return Verified(v.record, v.env, v.signature, v.signer_thumbprint, v.sha256, use)

    def verify(self, record: InRecord, env: Envelope, now: datetime, sha256: str) -> Verified | Rejection:
        raw_sig = record.headers.get(headers.SIGNATURE)
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
        started = time.perf_counter()
        valid = self._signatures.verify(jws, record.value, signer.public_key)
        self._verify_s.observe(time.perf_counter() - started)
        if not valid:
            return Rejection("bad_signature", "signature does not match the record bytes")
        if env.sender != signer.region:
            return Rejection("untrusted_signer", f"certificate of {signer.region} signed a message from {env.sender}")
        if env.recipient != self._region:
            return Rejection("wrong_destination", f"addressed to {env.recipient}, this is {self._region}")
        if env.sealed is not None:  # verified first, opened second
            started = time.perf_counter()
            opened = self.open_sealed(env.sealed)
            self._open_s.observe(time.perf_counter() - started)
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
        started = time.perf_counter()
        errors = self._registry.validate(env.type, env.schema_version, env.payload)
        self._validate_s.observe(time.perf_counter() - started)
        if errors:
            return Rejection("schema_violation", "; ".join(f"{e.pointer or '/'}: {e.message}" for e in errors[:5]))
        return None

    def authorize(self, v: Verified) -> Rejection | None:
        if v.env.type == RECEIPT_TYPE:
            return None  # any peer acknowledges what we sent it; the origin matches each item to what it sent
        if v.env.type not in self._cfg.accept.get(v.env.sender, frozenset()):
            return Rejection("not_permitted", f"{v.env.sender} may not send {v.env.type} to {self._region}")
        if self._cfg.recipient_of(v.env.type) is None:
            return Rejection("no_recipient", f"no local platform receives {v.env.type}")
        return None

    def check_purpose(self, v: Verified) -> Rejection | None:
        """What this region allows its data to be used for, by type: its own registry, not the sender's."""
        refusal = self._uses.refusal(v.env.type, v.env.operator, v.env.use_cause)
        return Rejection(*refusal) if refusal is not None else None

    @staticmethod
    def check_expiry(v: Verified, now: datetime) -> Rejection | None:
        if v.env.expires_at is None:
            return None
        try:
            expired = envelope.parse_timestamp(v.env.expires_at) <= now
        except ValueError:
            return Rejection("invalid_envelope", "expires_at is not an RFC 3339 date-time")
        return Rejection("expired", f"expired at {v.env.expires_at}") if expired else None
