"""The document a platform gets for one received message, as `GET /v1/inbox` hands it out (and as a request's
reply comes back from `POST /v1/requests`): the signed envelope as sent, its signature, and for a sealed message
the payload opened on the way out (a sealed payload is never stored in clear)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.crypto.seal import Opener

_SEALED_KEY = b'"sealed"'


def inbox_document(msg_id: str, msg_type: str, from_region: str, envelope: bytes, signature: str,
                   opener: Opener | None, late_reply_to: str | None = None, *, embed: bool = False,
                   opened: Any = None) -> dict[str, Any]:
    """`embed`, for a document serialized at once (orjson.dumps: the pull): the stored envelope goes in as the JSON
    it already is (egress parsed it before storing it), instead of parsed and serialized again. Only an envelope
    that may be sealed is parsed then, to open its payload. `opened`: the sealed payload as egress already opened
    it (a reply handed to its waiting call), so it is not opened a second time; None: opened here."""
    env: Any = (orjson.Fragment(envelope) if embed and _SEALED_KEY not in envelope  # without the key: not sealed
                else orjson.loads(envelope))
    doc: dict[str, Any] = {"id": msg_id, "type": msg_type, "from": from_region, "signature": signature,
                           "envelope": env}
    if late_reply_to is not None:  # a result after its request's deadline (README "Request-reply")
        doc["late_reply_to"] = late_reply_to
    sealed = env.get("sealed") if isinstance(env, dict) else None
    if sealed is not None and opened is not None:
        doc["payload"] = opened
    elif sealed is not None and opener is not None:
        doc["payload"] = orjson.loads(opener.open(sealed))
    return doc
