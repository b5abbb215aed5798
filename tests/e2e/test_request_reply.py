"""Request-reply between two real gateway processes over the real broker (README "Request-reply"): Shanghai's
platform asks Jiangsu's, whose platform answers from its pull inbox with a small answering loop; a stalled
answerer gives 504 reply_timeout, one reversal for a settlement, and a late result that is recorded and not
delivered; an Idempotency-Key retry sends one request; `yrdx send --wait` prints the reply.

Runs in a side exchange of its own namespace (SH and JS, both pull inbox), so its requests and results never mix
with the session's exchange."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from gateway.schemas.registry import SchemaRegistry
from tests._util import PlatformClient, SideExchange, pull_until, side_exchange, use_context, yrdx
from tests.conftest import Broker

REGISTRY = SchemaRegistry.load()
LICENSE = "license.verify.request"
SETTLEMENT = "medical.settlement.request"
RESULT_OF = {LICENSE: "license.verify.result", SETTLEMENT: "medical.settlement.result"}


def example(msg_type: str) -> dict[str, Any]:
    return copy.deepcopy(REGISTRY.examples(msg_type)[0])


@dataclass
class Answerer:
    """Jiangsu's platform: pulls its inbox and answers each request with its result under the request's
    correlation id, or, while stalled, holds the requests it pulls until released."""

    client: PlatformClient
    stalled: bool = False
    received: list[dict[str, Any]] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)  # correlation id -> the result's message id

    async def run(self) -> None:
        while True:
            answering = []
            for m in await self.client.pull(wait=0.5):
                self.received.append(m)
                if m["type"] in RESULT_OF:
                    if self.stalled:
                        self.held.append(m)
                    else:
                        answering.append(self.answer(m))
            await asyncio.gather(*answering)  # a pulled batch is answered at once, as a platform would

    async def answer(self, m: dict[str, Any]) -> str:
        correlation_id = m["envelope"]["correlation_id"]
        status, doc = await self.client.send(RESULT_OF[m["type"]], "SH", example(RESULT_OF[m["type"]]),
                                             correlation_id=correlation_id)
        assert status == 202, doc
        self.answers[correlation_id] = doc["id"]
        return str(doc["id"])

    def of_type(self, msg_type: str, correlation_id: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.received if m["type"] == msg_type
                and (correlation_id is None or m["envelope"]["correlation_id"] == correlation_id)]


@dataclass
class Pair:
    side: SideExchange
    sh: PlatformClient
    js: Answerer


@pytest_asyncio.fixture(scope="module")
async def pair(kafka: Broker, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    async with side_exchange(kafka.bootstrap_servers, tmp_path_factory.mktemp("request-reply"),
                             f"rr-{uuid.uuid4().hex[:8]}", ["SH", "JS"]) as side:
        js = Answerer(side.clients["JS"])
        loop = asyncio.create_task(js.run())
        try:
            yield Pair(side, side.clients["SH"], js)
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop


async def eventually(check: Any, timeout: float = 60.0) -> Any:
    """What `check()` (plain or async) returns once it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def request(pair: Pair, msg_type: str, deadline_ms: int, key: str | None = None,
                  **extra: Any) -> tuple[int, dict[str, Any]]:
    body = {"type": msg_type, "to": "JS", "payload": example(msg_type), "deadline_ms": deadline_ms, **extra}
    return await pair.sh.post("/v1/requests", body, {"Idempotency-Key": key} if key else None)


async def test_a_reply_within_the_deadline_comes_back_in_the_http_answer(pair: Pair) -> None:
    pair.js.stalled = False
    status, doc = await request(pair, LICENSE, 10_000)
    assert status == 200, doc
    assert doc["status"] == "replied" and doc["elapsed_ms"] < 10_000
    reply = doc["reply"]
    correlation_id = reply["envelope"]["correlation_id"]
    (asked,) = pair.js.of_type(LICENSE, correlation_id)
    assert asked["id"] == doc["message_id"]  # the request as Jiangsu's platform pulled it
    await eventually(lambda: correlation_id in pair.js.answers)  # the reply may beat the answerer's own 202
    assert reply["id"] == pair.js.answers[correlation_id] and reply["from"] == "JS"
    assert reply["type"] == "license.verify.result" and reply["signature"]
    status, got = await pair.sh.get(f"/v1/requests/{doc['message_id']}")
    assert status == 200 and got["status"] == "replied" and got["reply"]["id"] == reply["id"]
    # It answered the call: Shanghai's platform never finds it in its pull inbox as a fresh message.
    assert reply["id"] not in {m["id"] for m in await pair.sh.pull(wait=1.0)}


async def test_a_stalled_answerer_gives_reply_timeout_one_reversal_and_a_late_result_not_delivered(
        pair: Pair) -> None:
    pair.js.stalled = True
    try:
        status, doc = await request(pair, SETTLEMENT, 1500)
    finally:
        pair.js.stalled = False
    assert status == 504 and doc["code"] == "reply_timeout", doc
    request_id = doc["message_id"]
    assert doc["status_url"] == f"/v1/requests/{request_id}"
    assert doc["compensation"]["type"] == "medical.reversal"
    reversal_id = doc["compensation"]["message_id"]
    (held,) = [m for m in pair.js.held if m["id"] == request_id]
    pair.js.held.remove(held)
    correlation_id = held["envelope"]["correlation_id"]

    # Exactly one reversal reaches Jiangsu's platform, citing the settlement it undoes.
    reversals = await eventually(lambda: pair.js.of_type("medical.reversal", correlation_id))
    await asyncio.sleep(3.0)  # a second one would have arrived by now (the sweeper runs every second)
    (reversal,) = pair.js.of_type("medical.reversal", correlation_id)
    assert reversals[0]["id"] == reversal["id"] == reversal_id
    assert reversal["payload"]["omsgid"] == request_id and reversal["payload"]["oinfno"] == "2207"
    assert reversal["payload"]["psn_no"] == example(SETTLEMENT)["psn_no"]
    status, got = await pair.sh.get(doc["status_url"])
    assert status == 200 and got["status"] == "compensated"
    assert got["compensation"] == {"type": "medical.reversal", "message_id": reversal_id}

    # The settlement result comes after all: recorded, and never delivered to Shanghai's platform.
    late_id = await pair.js.answer(held)

    async def late_recorded() -> dict[str, Any] | None:
        _, now = await pair.sh.get(doc["status_url"])
        return now if now["status"] == "late_result" else None

    recorded = await eventually(late_recorded)
    assert recorded["reply"]["id"] == late_id and recorded["compensation"]["message_id"] == reversal_id
    assert late_id not in {m["id"] for m in await pair.sh.pull(wait=2.0)}
    # Jiangsu's sender still learns that its result was taken (a signed receipt), not refused.
    assert (await pair.js.client.wait_status(late_id, "delivered"))["status"] == "delivered"


async def test_a_retry_with_one_idempotency_key_sends_one_request_and_gets_the_same_reply(pair: Pair) -> None:
    pair.js.stalled = False
    key = f"retry-{uuid.uuid4().hex[:8]}"
    first, second = await asyncio.gather(request(pair, LICENSE, 10_000, key), request(pair, LICENSE, 10_000, key))
    assert first[0] == second[0] == 200, (first, second)
    assert first[1]["message_id"] == second[1]["message_id"]
    assert first[1]["reply"]["id"] == second[1]["reply"]["id"]
    again = await request(pair, LICENSE, 10_000, key)
    assert again[0] == 200 and again[1]["reply"] == first[1]["reply"]
    correlation_id = first[1]["reply"]["envelope"]["correlation_id"]
    assert len(pair.js.of_type(LICENSE, correlation_id)) == 1  # one message, whatever the retries


async def test_yrdx_send_wait_prints_the_reply_and_fails_with_the_problem_on_timeout(pair: Pair,
                                                                                     tmp_path: Path) -> None:
    payload = tmp_path / "p.json"
    payload.write_text(json.dumps(example(LICENSE), ensure_ascii=False), encoding="utf-8")
    # The gateway listens on a port the OS chose: the command reads it from a copy of the config that names it.
    doc = yaml.safe_load(pair.side.exchange.config_path("SH").read_text())
    doc["listen"]["port"] = pair.sh.gateway.port
    config = pair.side.exchange.dir / "sh-cli.yaml"  # beside the original: its relative paths still hold
    config.write_text(yaml.safe_dump(doc, allow_unicode=True))
    context = use_context(LICENSE)
    args = ("send", "--config", str(config), "--as", "sh-platform", "--to", "JS", "--type", LICENSE, "--payload",
            str(payload), "--wait", "--operator", context["operator"]["id"], "--operator-role",
            context["operator"]["role"], "--use-cause", context["use_cause"])
    pair.js.stalled = False
    done = await asyncio.to_thread(yrdx, *args, "--deadline-ms", "10000")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["status"] == "replied" and answer["reply"]["type"] == "license.verify.result"
    pair.js.stalled = True
    try:
        done = await asyncio.to_thread(yrdx, *args, "--deadline-ms", "500")
    finally:
        pair.js.stalled = False
    assert done.returncode == 1
    problem = json.loads(done.stderr)
    assert problem["code"] == "reply_timeout"
    (held,) = [m for m in pair.js.held if m["id"] == problem["message_id"]]
    pair.js.held.remove(held)
    # Answered late: nothing was undone, so Shanghai's platform gets it as any message, marked late.
    late_id = await pair.js.answer(held)
    (late,) = [m for m in await pull_until(pair.sh, late_id) if m["id"] == late_id]
    assert late["late_reply_to"] == problem["message_id"]
