"""The compensating message of a timed-out request (x-reply.compensation: e.g. a medical.reversal for a
settlement), sent by the gateway itself to the request's destination, on behalf of the platform that asked.

Exactly once: only the call that moved the request from pending to timed_out (one conditional UPDATE, in any
replica) sends it, through ingress with an Idempotency-Key derived from the request's id, so a retry (the
sweeper's, after a broker outage or a crash) resends the same message id and bytes, which the destination's
dedupe keeps from counting twice. Its correlation id is the request's: one conversation at the destination.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import orjson

from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from gateway.relay.ingress import Ingress
from gateway.state import RequestRecord, StateStore
from gateway.wire.problems import Problem

log = logging.getLogger(__name__)


def compensation_key(request_id: str) -> str:
    """The Idempotency-Key of a request's compensation: one per request, whoever sends it."""
    return f"yrdx-compensation:{request_id}"


class Compensator:
    def __init__(self, cfg: GatewayConfig, ingress: Ingress, state: StateStore, metrics: Metrics) -> None:
        self._cfg = cfg
        self._ingress = ingress
        self._state = state
        self._metrics = metrics

    async def send(self, request: RequestRecord) -> str | None:
        """Send the request's compensation; its message id once the broker took it, None when it could not be
        sent now (the sweeper tries again: same key, same message)."""
        platform = self._cfg.platform(request.platform)
        if (platform is None or request.compensation_type is None or request.compensation_payload is None
                or request.message_id is None):
            log.error("compensation cannot be sent", extra={"request_id": request.message_id,
                                                            "type": request.type, "platform": request.platform})
            return None
        item = {"type": request.compensation_type, "to": request.to_region,
                "payload": orjson.loads(request.compensation_payload), "correlation_id": request.correlation_id}
        # The request type's schema authorizes its compensation, whatever the platform's may_send lists.
        acting = replace(platform, may_send=platform.may_send | {request.compensation_type})
        result = await self._ingress.submit(acting, item, compensation_key(request.message_id))
        if isinstance(result, Problem):
            log.warning("compensation not sent; retried later", extra={
                "request_id": request.message_id, "type": request.compensation_type, "code": result.code})
            return None
        if self._state.record_compensation(request.correlation_id, result.id):
            self._metrics.compensations.labels(request.type).inc()
            log.info("compensation sent", extra={"request_id": request.message_id, "message_id": result.id,
                                                 "type": request.compensation_type, "to": request.to_region})
        return result.id
