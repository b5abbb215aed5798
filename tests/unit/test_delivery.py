"""Webhook delivery over real loopback HTTP: 5xx and timeouts are retried with backoff until a 2xx; a 4xx other
than 408/425/429 is a refusal, never retried; retries exhausted is a failure with the last reason."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest_asyncio
from aiohttp import web

from gateway.config import Delivery
from gateway.metrics import Metrics
from gateway.relay.delivery import WebhookDeliverer


@dataclass
class Platform:
    answers: list[int]
    seen: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append(dict(request.headers))
        return web.Response(status=self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[[list[int]], object]]:
    runners: list[web.AppRunner] = []

    async def start(answers: list[int]) -> tuple[Platform, str]:
        platform = Platform(answers)
        app = web.Application()
        app.router.add_post("/hook", platform.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return platform, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield start  # type: ignore[misc]
    for r in runners:
        await r.cleanup()


def target(url: str, attempts: int = 4) -> Delivery:
    return Delivery(mode="webhook", url=url, timeout_s=2.0, max_attempts=attempts, backoff_initial_s=0.01,
                    backoff_max_s=0.02)


async def test_a_platform_that_is_down_for_a_while_gets_the_message_once_it_answers_2xx(serve: object) -> None:
    platform, url = await serve([503, 502, 204])  # type: ignore[operator]
    metrics = Metrics("SH")
    async with aiohttp.ClientSession() as session:
        result = await WebhookDeliverer(session, metrics).deliver(target(url), b"{}", {"Yrdx-Message-Id": "m1"})
    assert result.delivered and result.attempts == 3
    assert [h["Yrdx-Message-Id"] for h in platform.seen] == ["m1"] * 3
    assert metrics.webhook_retries._value.get() == 2


async def test_a_refusal_is_not_retried(serve: object) -> None:
    platform, url = await serve([422])  # type: ignore[operator]
    async with aiohttp.ClientSession() as session:
        result = await WebhookDeliverer(session, Metrics("SH")).deliver(target(url), b"{}", {})
    assert not result.delivered and result.attempts == 1 and "422" in result.detail
    assert len(platform.seen) == 1


async def test_too_many_requests_is_retried_and_exhausted_retries_fail_with_the_last_status(serve: object) -> None:
    platform, url = await serve([429])  # type: ignore[operator]
    async with aiohttp.ClientSession() as session:
        result = await WebhookDeliverer(session, Metrics("SH")).deliver(target(url, attempts=3), b"{}", {})
    assert not result.delivered and result.attempts == 3 and "retries exhausted: HTTP 429" in result.detail
    assert len(platform.seen) == 3
