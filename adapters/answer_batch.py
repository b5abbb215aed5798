"""A platform's answers to its gateway, posted together: what queued while the previous batch was in flight
leaves in one ``POST /v1/messages/batch`` (one JWT, one HTTP request and one ingress call for many answers).

Nothing lingers: an answer alone leaves at once, and batches form only under load, which is where the
per-request cost (a JWT minted here and checked by the gateway, an HTTP exchange each way) was the insured
platform's and its gateway's largest share of a round trip. Each answer still gets its own result (id or
refusal), as from ``PlatformClient.send``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.simulated import Attempt, PlatformClient
from gateway.relay.coalesce import Coalescer

__all__ = ["AnswerBatcher"]

MAX_BATCH = 100  # answers per request (the gateway's limits.batch_max is larger)
IN_FLIGHT = 2  # batch requests at once: one fills while the other is in flight


class AnswerBatcher:
    """The gateway's own group commit (gateway/relay/coalesce.py), on the platform's side of the HTTP API."""

    def __init__(self, client: PlatformClient, *, max_batch: int = MAX_BATCH, in_flight: int = IN_FLIGHT) -> None:
        self._client = client
        self._batches: Coalescer[tuple[dict[str, Any], str], Attempt] = Coalescer(
            self._post, max_group=max_batch, max_running=in_flight)

    async def send(self, msg_type: str, to: str, payload: object, *, story: str,
                   correlation_id: str | None = None) -> Attempt:
        """As PlatformClient.send (without a use context): this answer's attempt, once its batch was answered; a
        request that failed whole fails each of its answers with its error."""
        message: dict[str, Any] = {"type": msg_type, "to": to, "payload": payload}
        if correlation_id is not None:
            message["correlation_id"] = correlation_id
        return await self._batches.submit((message, story))

    async def _post(self, answers: Sequence[tuple[dict[str, Any], str]]) -> list[Attempt]:
        return await self._client.send_batch([m for m, _ in answers], story=answers[0][1])
