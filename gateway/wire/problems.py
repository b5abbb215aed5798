"""Every way a message can be refused, with a stable machine-readable code.

Ingress answers HTTP with RFC 9457 problem+json; egress turns the same `Rejection` into a dead-letter record,
an audit record and a metric in one place (gateway/relay/outcomes.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# HTTP status of each ingress problem code (README "Errors" documents them).
HTTP_STATUS: dict[str, int] = {
    "invalid_json": 400,
    "invalid_request": 400,
    "schema_violation": 400,
    "unknown_type": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_permitted": 403,
    "purpose_required": 400,
    "not_permitted_purpose": 403,
    "unknown_region": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "idempotency_conflict": 409,
    "too_large": 413,
    "overloaded": 429,
    "broker_unavailable": 503,
    "state_unavailable": 503,
    "identity_expired": 503,
    "identity_revoked": 503,
    "index_unavailable": 503,
    "reply_timeout": 504,
}

TITLES: dict[str, str] = {
    "invalid_json": "Body is not valid JSON",
    "invalid_request": "Request is malformed",
    "schema_violation": "Payload does not match its schema",
    "unknown_type": "Unknown message type or schema version",
    "unauthenticated": "Missing or invalid credentials",
    "forbidden": "Credentials lack the required scope",
    "not_permitted": "Platform may not send this message type",
    "purpose_required": "This message type reads personal data or licences: operator and use_cause are required",
    "not_permitted_purpose": "The use_cause is not a purpose allowed for this message type",
    "unknown_region": "Unknown destination region",
    "not_found": "No such resource",
    "method_not_allowed": "Method not allowed on this route",
    "request_timeout": "Request not received in time",
    "idempotency_conflict": "Idempotency-Key reused with a different request",
    "too_large": "Request body too large",
    "overloaded": "Too many messages in flight; retry after the Retry-After seconds",
    "broker_unavailable": "Message broker did not acknowledge",
    "state_unavailable": "The gateway's state database cannot be reached",
    "identity_expired": "This gateway's certificate is expired or not yet valid",
    "identity_revoked": "This gateway's certificate is revoked",
    "index_unavailable": "The audit index cannot be reached",
    "reply_timeout": "No reply arrived before the request's deadline",
}

# Egress rejection codes (dead-letter reason header). Documented in README "Dead letters".
EGRESS_CODES = frozenset({
    "bad_signature",        # signature missing, malformed or not valid over the record bytes
    "untrusted_signer",     # certificate unknown, not from our root, or of another region than `from`
    "certificate_expired",
    "certificate_not_yet_valid",
    "certificate_revoked",
    "invalid_envelope",     # signed bytes are not a well-formed envelope
    "undecryptable",        # a sealed payload that does not open with this gateway's key
    "wrong_destination",    # `to` is not this gateway's region
    "unknown_type",
    "schema_violation",
    "not_permitted",        # the sending region may not send this type to this region
    "purpose_required",     # a type that reads personal data or licences without operator or use_cause
    "not_permitted_purpose",  # use_cause not among the purposes this region allows for the type
    "expired",              # expires_at has passed
    "duplicate",            # this message id was already delivered
    "no_recipient",         # no local platform receives this type
    "delivery_failed",      # webhook retries exhausted
    "invalid_record",       # the Kafka record itself: no value, a header without value or twice, undecodable, huge
    "processing_error",     # an unexpected exception handling this one record (its class in yrdx-detail)
    # Files (claim checks): the message, and the file's manifest, are dead-lettered with the file's reason.
    "file_incomplete",      # a chunk is missing, or the file did not arrive in time (files.wait_s)
    "file_corrupt",         # a chunk does not open (tampered with, moved, of another file)
    "file_digest_mismatch",  # the bytes do not have the digest or size the manifest or the claim check names
})


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    detail: str
    errors: list[dict[str, str]] = field(default_factory=list)
    message_id: str | None = None  # set when a message was built but not acknowledged: its status can be asked
    extra: dict[str, Any] = field(default_factory=dict)  # further members of the body (reply_timeout: status_url)

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]

    def body(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": f"urn:yrdx:problem:{self.code}",
            "title": TITLES[self.code],
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if self.errors:
            doc["errors"] = self.errors
        if self.message_id:
            doc["id"] = self.message_id
        doc.update(self.extra)
        return doc


class ProblemError(Exception):
    """A refusal raised through the stack (by the HTTP helpers, the request-reply API, a facade); the HTTP layer
    answers it as its problem+json."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Rejection:
    code: str
    detail: str = ""

    def __post_init__(self) -> None:
        assert self.code in EGRESS_CODES, self.code
