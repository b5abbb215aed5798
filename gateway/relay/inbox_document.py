"""The document a platform gets for one received message, as `GET /v1/inbox` hands it out (and as a request's
reply comes back from `POST /v1/requests`): the signed envelope as sent, its signature, and for a sealed message
the payload opened on the way out (a sealed payload is never stored in clear)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.crypto.seal import Opener

_SEALED_KEY = b'"sealed"'


def inbox_document(msg_id: str, msg_type: str, from_region: str, envelope: bytes, signature: str,
                   opener: Opener | None, late_reply_to: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": msg_id, "type": msg_type, "from": from_region, "signature": signature,
                           "envelope": orjson.loads(envelope)}
    if late_reply_to is not None:  # a result after its request's deadline (README "Request-reply")
        doc["late_reply_to"] = late_reply_to
    sealed = doc["envelope"].get("sealed")
    if sealed is not None and opener is not None:
        doc["payload"] = orjson.loads(opener.open(sealed))
    return doc


def inbox_entry(msg_id: str, msg_type: str, from_region: str, envelope: bytes, signature: str,
                opener: Opener | None, late_reply_to: str | None = None) -> dict[str, Any]:
    """`inbox_document` for serializing at once (orjson.dumps): the stored envelope is embedded as the JSON it
    already is (egress parsed it before storing it), instead of parsed and serialized again per pull. Only an
    envelope that may be sealed is parsed, to open its payload."""
    if _SEALED_KEY not in envelope:  # an envelope without the key cannot be sealed; with it, parsing decides
        doc: dict[str, Any] = {"id": msg_id, "type": msg_type, "from": from_region, "signature": signature,
                               "envelope": orjson.Fragment(envelope)}
        if late_reply_to is not None:
            doc["late_reply_to"] = late_reply_to
        return doc
    return inbox_document(msg_id, msg_type, from_region, envelope, signature, opener, late_reply_to)
