"""`x-reply` of a request type's schema: which result type answers it, how long a caller waits for it, and the
compensating message the gateway sends when no result came in time (README "Request-reply").

    "x-reply": {"type": "medical.settlement.result", "deadline_ms": 5000, "limit_ms": 30000,
                "compensation": {"type": "medical.reversal",
                                 "payload": {"omsgid": "$message_id", "psn_no": "$request.psn_no", "oinfno": "2207"}}}

A template value is `$request.<dotted path into the request payload>`, `$message_id`, `$correlation_id`, `$type`,
or any other JSON value, taken literally. A path the request does not have leaves the field out: the schema
registry checks at load that the template yields a valid compensation for every example of the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_LIMIT_MS = 600_000  # no caller is held longer than ten minutes
_REQUEST = "$request."
_NAMES = ("$message_id", "$correlation_id", "$type")


class XReplyError(ValueError):
    """An `x-reply` block that is not well formed; the message names the key."""


@dataclass(frozen=True, slots=True)
class Compensation:
    type: str
    payload: Mapping[str, Any]  # the template

    def render(self, request: object, *, message_id: str, correlation_id: str, msg_type: str) -> dict[str, Any]:
        """The compensating payload for one request."""
        names = {"$message_id": message_id, "$correlation_id": correlation_id, "$type": msg_type}
        out: dict[str, Any] = {}
        for name, value in self.payload.items():
            if isinstance(value, str) and value.startswith(_REQUEST):
                found = _lookup(request, value[len(_REQUEST):].split("."))
                if found is not _MISSING:
                    out[name] = found
            elif isinstance(value, str) and value in names:
                out[name] = names[value]
            else:
                out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class XReply:
    type: str  # the result type that answers the request
    deadline_ms: int  # how long a caller waits by default
    limit_ms: int  # the longest a caller may ask for
    compensation: Compensation | None


_MISSING = object()


def _lookup(doc: object, path: list[str]) -> object:
    for step in path:
        if not isinstance(doc, dict) or step not in doc:
            return _MISSING
        doc = doc[step]
    return doc


def _millis(block: Mapping[str, Any], name: str) -> int:
    v = block.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_LIMIT_MS:
        raise XReplyError(f"x-reply.{name} must be an integer of milliseconds from 1 to {MAX_LIMIT_MS}")
    return v


def parse(block: object) -> XReply:
    """An `x-reply` block read and checked for shape (the registry checks the types it names exist)."""
    if not isinstance(block, dict):
        raise XReplyError("x-reply must be an object")
    unknown = set(block) - {"type", "deadline_ms", "limit_ms", "compensation"}
    if unknown:
        raise XReplyError(f"x-reply: unknown key(s) {', '.join(sorted(unknown))}")
    reply_type = block.get("type")
    if not isinstance(reply_type, str) or not reply_type:
        raise XReplyError("x-reply.type must name the result type")
    deadline_ms, limit_ms = _millis(block, "deadline_ms"), _millis(block, "limit_ms")
    if deadline_ms > limit_ms:
        raise XReplyError("x-reply.deadline_ms must not exceed x-reply.limit_ms")
    comp = block.get("compensation")
    compensation = None
    if comp is not None:
        if not isinstance(comp, dict) or set(comp) != {"type", "payload"}:
            raise XReplyError("x-reply.compensation must be {type, payload}")
        if not isinstance(comp["type"], str) or not isinstance(comp["payload"], dict):
            raise XReplyError("x-reply.compensation: type is a message type, payload an object (the template)")
        for name, value in comp["payload"].items():
            if isinstance(value, str) and value.startswith("$") and not (
                    value in _NAMES or (value.startswith(_REQUEST) and len(value) > len(_REQUEST))):
                raise XReplyError(f"x-reply.compensation.payload.{name}: unknown reference {value!r} "
                                  f"(expected $request.<path>, {', '.join(_NAMES)})")
        compensation = Compensation(comp["type"], comp["payload"])
    return XReply(reply_type, deadline_ms, limit_ms, compensation)
