"""The envelope (README "Wire format"): built and serialized once by the sending gateway.

The signature covers the exact bytes produced here; those bytes travel unchanged as the Kafka record value,
the webhook body and the audit export, so nobody re-serializes before verifying.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson


class EnvelopeError(ValueError):
    """The bytes are not a well-formed envelope."""


_REQUIRED = ("id", "type", "schema_version", "from", "to", "correlation_id", "created_at")
# Bounds of the use context (README "Wire format"): codes and ids, never names.
MAX_OPERATOR_FIELD = 64
MAX_USE_CAUSE = 64
_CODE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._:-]*")


@dataclass(frozen=True, slots=True)
class Operator:
    """Who asks, on the sending side: the person's or system's id, role and department codes (never a name)."""

    id: str
    role: str
    department: str | None = None

    def doc(self) -> dict[str, str]:
        return {"id": self.id, "role": self.role, **({"department": self.department} if self.department else {})}


def is_code(value: object, limit: int) -> bool:
    """An id or code of the use context: 1 to `limit` ASCII letters, digits and . _ : - (a header-safe token)."""
    return isinstance(value, str) and len(value) <= limit and _CODE.fullmatch(value) is not None


def operator_or_error(value: object) -> Operator | str:
    """The `operator` object read from a request or an envelope, or what is wrong with it."""
    if not isinstance(value, dict) or not {"id", "role"} <= set(value) or set(value) - {"id", "role", "department"}:
        return "operator must be an object {id, role, department?}"
    if not all(is_code(f, MAX_OPERATOR_FIELD) for f in value.values()):
        return (f"operator id, role and department are codes of 1 to {MAX_OPERATOR_FIELD} characters "
                "(letters, digits, . _ : -)")
    return Operator(value["id"], value["role"], value.get("department"))


@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    type: str
    schema_version: int
    sender: str
    recipient: str
    correlation_id: str
    created_at: str
    expires_at: str | None
    payload: Any  # None while sealed: the receiving gateway opens `sealed` after verifying the signature
    sealed: str | None = None
    # The use context (issue 12): who asks and the purpose code. Absent in envelopes of types that read no
    # personal data, and in every envelope written before they existed.
    operator: Operator | None = None
    use_cause: str | None = None


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7): 48 bits of Unix milliseconds, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


_second_cache: tuple[int, str] = (-1, "")


def utc_timestamp(dt: datetime | None = None) -> str:
    """RFC 3339 in UTC with milliseconds and a `Z`, as the envelope spells times."""
    global _second_cache
    if dt is not None:
        dt = dt.astimezone(UTC)
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    ns = time.time_ns()
    second, ms = divmod(ns // 1_000_000, 1000)
    if _second_cache[0] != second:  # strftime once per second: it showed up at 5 % of a gateway's CPU
        _second_cache = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{_second_cache[1]}{ms:03d}Z"


def parse_timestamp(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError("timestamp without a time zone")
    return dt


def timestamp_or_none(value: object) -> datetime | None:
    """An RFC 3339 time with a zone, or None for anything else (for records read back, which may be damaged)."""
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def build(
    *,
    msg_type: str,
    schema_version: int,
    sender: str,
    recipient: str,
    payload: Any,
    correlation_id: str | None = None,
    expires_at: str | None = None,
    msg_id: str | None = None,
    sealed: str | None = None,
    operator: Operator | None = None,
    use_cause: str | None = None,
) -> tuple[str, bytes]:
    """Return the new message id and the envelope bytes that will be signed and sent. With `sealed` (a JWE of
    the payload) the envelope carries that instead of `payload`."""
    msg_id = msg_id or uuid7()
    doc: dict[str, Any] = {
        "id": msg_id,
        "type": msg_type,
        "schema_version": schema_version,
        "from": sender,
        "to": recipient,
        "correlation_id": correlation_id or msg_id,
        "created_at": utc_timestamp(),
    }
    if expires_at is not None:
        doc["expires_at"] = expires_at
    if operator is not None:
        doc["operator"] = operator.doc()
    if use_cause is not None:
        doc["use_cause"] = use_cause
    if sealed is not None:
        doc["sealed"] = sealed
    else:
        doc["payload"] = payload
    return msg_id, orjson.dumps(doc)


def parse(raw: bytes) -> Envelope:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise EnvelopeError(f"not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise EnvelopeError("not a JSON object")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise EnvelopeError(f"missing {', '.join(missing)}")
    sealed = doc.get("sealed")
    if ("payload" in doc) == (sealed is not None):
        raise EnvelopeError("exactly one of payload and sealed is required")
    if sealed is not None and not isinstance(sealed, str):
        raise EnvelopeError("sealed is not a string")
    version = doc["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise EnvelopeError("schema_version is not an integer")
    strings = ("id", "type", "from", "to", "correlation_id", "created_at")
    if not all(isinstance(doc[k], str) for k in strings):
        raise EnvelopeError("a header field is not a string")
    expires = doc.get("expires_at")
    if expires is not None and not isinstance(expires, str):
        raise EnvelopeError("expires_at is not a string")
    operator: Operator | None = None
    if "operator" in doc:
        read = operator_or_error(doc["operator"])
        if isinstance(read, str):
            raise EnvelopeError(read)
        operator = read
    use_cause = doc.get("use_cause")
    if use_cause is not None and not is_code(use_cause, MAX_USE_CAUSE):
        raise EnvelopeError(f"use_cause is not a purpose code of 1 to {MAX_USE_CAUSE} characters")
    return Envelope(
        id=doc["id"],
        type=doc["type"],
        schema_version=version,
        sender=doc["from"],
        recipient=doc["to"],
        correlation_id=doc["correlation_id"],
        created_at=doc["created_at"],
        expires_at=expires,
        payload=doc.get("payload"),
        sealed=sealed,
        operator=operator,
        use_cause=use_cause,
    )


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
