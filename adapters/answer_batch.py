"""A platform's answers to its gateway, posted together: what queued while the previous batch was in flight
leaves in one ``POST /v1/messages/batch`` (one JWT, one HTTP request and one ingress call for many answers).

Nothing lingers: an answer alone leaves at once, and batches form only under load, which is where the
per-request cost (a JWT minted here and checked by the gateway, an HTTP exchange each way) was the insured
platform's and its gateway's largest share of a round trip. Each answer still gets its own result (id or
refusal), as from ``PlatformClient.send``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from adapters.simulated import Attempt, PlatformClient

__all__ = ["AnswerBatcher"]

MAX_BATCH = 100  # answers per request (the gateway's limits.batch_max is larger)
IN_FLIGHT = 2  # batch requests at once: one fills while the other is in flight


class AnswerBatcher:
    def __init__(self, client: PlatformClient, spawn: Callable[[Awaitable[None]], None], *,
                 max_batch: int = MAX_BATCH, in_flight: int = IN_FLIGHT) -> None:
        self._client = client
        self._spawn = spawn  # the owner's task set, so that stopping it stops the senders
        self._max_batch = max_batch
        self._in_flight = in_flight
        self._senders = 0
        self._queue: list[tuple[dict[str, Any], str, asyncio.Future[Attempt]]] = []

    async def send(self, msg_type: str, to: str, payload: object, *, story: str,
                   correlation_id: str | None = None) -> Attempt:
        """As PlatformClient.send (without a use context): this answer's attempt, once its batch was answered."""
        message: dict[str, Any] = {"type": msg_type, "to": to, "payload": payload}
        if correlation_id is not None:
            message["correlation_id"] = correlation_id
        done: asyncio.Future[Attempt] = asyncio.get_running_loop().create_future()
        self._queue.append((message, story, done))
        if self._senders < self._in_flight:
            self._senders += 1
            self._spawn(self._drain())
        return await done

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
                try:
                    attempts = await self._client.send_batch([m for m, _, _ in batch], story=batch[0][1])
                except BaseException as e:  # the whole request failed: every answer in it says so
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(e if isinstance(e, Exception) else asyncio.CancelledError())
                    if not isinstance(e, Exception):
                        raise
                    continue
                for (_, _, done), attempt in zip(batch, attempts, strict=True):
                    if not done.done():
                        done.set_result(attempt)
        finally:
            self._senders -= 1
