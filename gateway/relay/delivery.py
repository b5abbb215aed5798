"""Delivery to the local platform: webhook push with retries and backoff.

(The pull inbox is a table of the state store, filled by the egress pipeline in one transaction with the
dedupe marks, so a message lands there exactly once.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import aiohttp

from gateway.config import Delivery
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

# A 4xx other than these means the platform refuses the message: retrying would not help.
_RETRYABLE_4XX = {408, 425, 429}


@dataclass(frozen=True, slots=True)
class WebhookResult:
    delivered: bool
    attempts: int
    detail: str


class WebhookDeliverer:
    def __init__(self, session: aiohttp.ClientSession, metrics: Metrics) -> None:
        self._session = session
        self._metrics = metrics

    async def deliver(self, target: Delivery, body: bytes, headers: dict[str, str]) -> WebhookResult:
        assert target.url is not None
        delay = target.backoff_initial_s
        detail = ""
        timeout = aiohttp.ClientTimeout(total=target.timeout_s)
        for attempt in range(1, target.max_attempts + 1):
            started = time.perf_counter()
            try:
                async with self._session.post(target.url, data=body, headers=headers, timeout=timeout) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        self._metrics.stage("deliver").observe(time.perf_counter() - started)
                        return WebhookResult(True, attempt, f"HTTP {resp.status}")
                    detail = f"HTTP {resp.status}"
                    if 400 <= resp.status < 500 and resp.status not in _RETRYABLE_4XX:
                        return WebhookResult(False, attempt, f"platform refused: {detail}")
            except (aiohttp.ClientError, TimeoutError) as e:
                detail = f"{type(e).__name__}: {e}"
            if attempt == target.max_attempts:
                break
            self._metrics.webhook_retries.inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, target.backoff_max_s)
        return WebhookResult(False, target.max_attempts, f"retries exhausted: {detail}")
