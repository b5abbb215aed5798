"""The facade's HTTP route: one NHSA transaction in, its answer out, synchronously through request-reply.

``POST /v1/facades/nhsa/transactions`` (mounted by the gateway under its facade prefix): the HIS posts its
usual envelope with its platform JWT and gets ``OutCommon`` back, HTTP 200, whatever the business outcome
(``infcode`` says it); only a caller that is not a platform of this facade gets a problem+json (401/403).
The HIS ``msgid`` is the Idempotency-Key, so a 2207 retried with the same msgid settles once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson
from aiohttp import web

from adapters.nhsa.envelope import answer, operator_of, parse_request, refmsgid
from adapters.nhsa.infcodes import (
    INTERNAL,
    MALFORMED,
    OK,
    REPLY_TIMEOUT,
    NhsaError,
    infcode_of_problem,
)
from adapters.nhsa.transactions import output_of, schemas_of, to_message, transaction
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.problems import Problem

__all__ = ["FacadeContext", "NhsaFacade", "facade", "reply_payload"]

log = logging.getLogger(__name__)

MAX_BODY: Final = 262_144
TIMED_OUT: Final = frozenset({"timed_out", "compensated"})


class ReplyOutcomeLike(Protocol):
    """What ``gateway.relay.requests.ReplyOutcome`` carries (issue 11 part 1)."""

    message_id: str
    status: str
    reply: dict[str, Any] | None
    elapsed_ms: float
    compensation: Any  # (type, message_id) of the reversal the gateway sent, or None


class RequestReplyPort(Protocol):
    async def call(
        self, platform_id: str, message: dict[str, Any], *, deadline_ms: int | None = None,
        idempotency_key: str | None = None,
    ) -> ReplyOutcomeLike: ...


class FacadeContext(Protocol):
    """What the gateway hands a facade factory (entry point group ``yrdx.facades``)."""

    @property
    def request_reply(self) -> RequestReplyPort: ...
    @property
    def registry(self) -> SchemaRegistry: ...
    @property
    def region(self) -> str: ...
    def authenticate_platform(self, request: web.Request) -> str: ...
    def platform(self, id: str) -> Any: ...


def reply_payload(reply: Mapping[str, Any]) -> dict[str, Any]:
    """The payload of a result as a pull inbox hands it out: opened beside the envelope when it travelled
    sealed, else inside the signed envelope."""
    payload = reply.get("payload")
    if payload is None:
        payload = reply["envelope"]["payload"]
    return dict(payload)


class NhsaFacade:
    """The counter's transactions through the gateway's request-reply, one HIS envelope at a time."""

    def __init__(
        self, ctx: FacadeContext, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ctx = ctx
        self._clock = clock
        self._schemas = schemas_of(ctx.registry)  # once: the registry copies a schema each time it is asked

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/transactions", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        # The gateway's check: a platform JWT, and a platform whose config names this facade (else its
        # problem+json: 401 unauthenticated, 403 forbidden / not_permitted).
        platform_id = self._ctx.authenticate_platform(request)
        if request.content_length is not None and request.content_length > MAX_BODY:
            doc = answer(MALFORMED, err_msg=f"body over {MAX_BODY} bytes", at=self._clock())
        else:
            doc = await self.transact(platform_id, await request.read())
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def transact(self, platform_id: str, body: bytes) -> dict[str, Any]:
        """One HIS transaction: its answer, success or not (never raises for the HIS's input)."""
        started = time.monotonic()
        try:
            req = parse_request(body)
            tx = transaction(req.infno)
            message = to_message(tx, req, self._ctx.registry, self._schemas)
            # Who at the counter asked, and for which service item: codes in the signed envelope and the audit
            # (the operator's id and role; the transaction's 事项编码 as the purpose), never the clerk's name.
            message |= {"operator": operator_of(req), "use_cause": tx.service_item_code}
            outcome = await self._ctx.request_reply.call(
                platform_id, message, deadline_ms=tx.deadline_ms(message["payload"]), idempotency_key=req.msgid,
            )
            ref = refmsgid(message["payload"].get("insuplc_admdvs") or "", outcome.message_id, self._clock())
            if outcome.status in TIMED_OUT or outcome.reply is None:
                raise NhsaError(REPLY_TIMEOUT, _timeout_msg(outcome))
            output = output_of(tx, reply_payload(outcome.reply))
            return answer(OK, output=output, refmsg=ref, at=self._clock())
        except NhsaError as e:
            return answer(e.infcode, err_msg=e.err_msg, at=self._clock())
        except Exception as e:
            # A refusal of request-reply is its ProblemError (found by its `problem`, wherever the gateway
            # defines the class); anything else never takes the counter down, and its class is enough to look up.
            problem = getattr(e, "problem", None)
            if isinstance(problem, Problem):
                return answer(infcode_of_problem(problem.code), err_msg=_problem_msg(problem), at=self._clock())
            log.exception("nhsa transaction failed")
            return answer(INTERNAL, err_msg=type(e).__name__, at=self._clock())
        finally:
            log.debug("nhsa transaction answered in %.1f ms", (time.monotonic() - started) * 1000)


def _timeout_msg(outcome: ReplyOutcomeLike) -> str:
    compensation = outcome.compensation
    if compensation is not None:  # a (type, message_id) pair or an object with those attributes
        sent = compensation[1] if isinstance(compensation, tuple) else getattr(compensation, "message_id", "")
        return f"参保地应答超时, 已自动冲正 (request {outcome.message_id}, reversal {sent})"
    return f"参保地应答超时 (request {outcome.message_id}; 请用原报文ID重试或查询)"


def _problem_msg(problem: Problem) -> str:
    pointers = ", ".join(f"{e.get('pointer', '/')}: {e.get('message', '')}" for e in problem.errors[:5])
    text = f"{problem.code}: {problem.detail}"
    if problem.code == "reply_timeout":
        text = f"参保地应答超时 ({problem.detail})"
    return f"{text} ({pointers})" if pointers else text


def facade(ctx: FacadeContext) -> list[web.RouteDef]:
    """Entry point ``yrdx.facades: nhsa``: the facade's routes, relative to ``/v1/facades/nhsa``."""
    return NhsaFacade(ctx).routes()
