"""Helpers of the NHSA facade's unit tests: a request-reply port that records each call and answers what the
test says, in the shape the gateway's RequestReply hands out (issue 11 part 1). Only for the translation's unit
tests; tests/e2e/test_nhsa_counter.py runs the facade against the real gateway."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.nhsa.envelope import CST
from adapters.nhsa.routes import NhsaFacade
from gateway.dev.exchange import SEALED_BY_DEFAULT
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.problems import Problem

try:  # where request-reply (issue 11 part 1) defines it; before that, the HTTP layer's
    from gateway.wire.problems import ProblemError  # type: ignore[attr-defined,unused-ignore]
except ImportError:
    from gateway.http.api import ProblemError  # type: ignore[no-redef,unused-ignore]

NOW = datetime(2024, 3, 15, 9, 45, 13, 250000, tzinfo=CST)
MESSAGE_ID = "0190a0b1-7c3e-7d2a-9b4f-3e5d6c7b8a90"


def inbox_doc(msg_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A result as the pull inbox hands it out: a sealed type's payload opened beside its envelope, another's
    inside the signed envelope."""
    envelope: dict[str, Any] = {"id": "0190a0b1-0000-7000-8000-000000000001", "type": msg_type, "from": "AH"}
    if msg_type in SEALED_BY_DEFAULT:
        return {"id": envelope["id"], "type": msg_type, "from": "AH", "envelope": {**envelope, "sealed": "..."},
                "payload": payload}
    return {"id": envelope["id"], "type": msg_type, "from": "AH", "envelope": {**envelope, "payload": payload}}


@dataclass
class Outcome:
    message_id: str
    status: str
    reply: dict[str, Any] | None
    elapsed_ms: float = 12.5
    compensation: tuple[str, str] | None = None


@dataclass
class RecordingReplies:
    """Answers every call with `outcome` (or raises `problem`) and records the call."""

    outcome: Outcome | None = None
    problem: ProblemError | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def call(self, platform_id: str, message: dict[str, Any], *, deadline_ms: int | None = None,
                   idempotency_key: str | None = None) -> Outcome:
        self.calls.append({"platform_id": platform_id, "message": message, "deadline_ms": deadline_ms,
                           "idempotency_key": idempotency_key})
        if self.problem is not None:
            raise self.problem
        assert self.outcome is not None
        return self.outcome


@dataclass
class Platform:
    id: str
    facade: str | None = "nhsa"


@dataclass
class Context:
    request_reply: RecordingReplies
    registry: SchemaRegistry
    region: str = "SH"
    platforms: dict[str, Platform] = field(default_factory=dict)

    def authenticate_platform(self, request: Any) -> str:
        """As the gateway's FacadeContext: the caller, refused unless its config names this facade."""
        platform = self.platforms.get(str(request.headers["X-Test-Platform"]))
        if platform is None or platform.facade != "nhsa":
            raise ProblemError(Problem("not_permitted", "platform is not configured for the nhsa facade"))
        return platform.id

    def platform(self, id: str) -> Platform:
        return self.platforms[id]


def facade(registry: SchemaRegistry, replies: RecordingReplies) -> NhsaFacade:
    return NhsaFacade(Context(replies, registry), clock=lambda: NOW)


def replied(msg_type: str, payload: dict[str, Any]) -> RecordingReplies:
    return RecordingReplies(Outcome(MESSAGE_ID, "replied", inbox_doc(msg_type, payload)))
