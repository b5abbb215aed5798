"""Failures of the parts around the gateway: a receiving gateway killed mid-stream, a webhook endpoint that
is down for a while, a broker that stops. Nothing accepted is lost; nothing reaches a platform twice except
a webhook delivery that was in flight at the kill, which carries the same message id."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import pytest

from gateway.schemas.registry import SchemaRegistry
from tests.conftest import Broker, Exchange4

REGISTRY = SchemaRegistry.load()
pytestmark = pytest.mark.disruptive

STREAM = 2000
BATCH = 100


def statement(i: int) -> dict[str, Any]:
    payload = copy.deepcopy(REGISTRY.examples("medical.clearing.statement")[0])
    payload["clr_appy_evt_id"] = f"EVT{i:08d}"
    return payload


async def stream(ex: Exchange4, sender: str, recipient: str, kill_after: int, kill: Any) -> list[str]:
    """Send STREAM messages in batches (ten conversations); call `kill` once `kill_after` were accepted."""
    conversations = [str(uuid.uuid4()) for _ in range(10)]
    accepted: list[str] = []
    killed = False
    for start in range(0, STREAM, BATCH):
        batch = [{"type": "medical.clearing.statement", "to": recipient, "payload": statement(i),
                  "correlation_id": conversations[i % 10]} for i in range(start, start + BATCH)]
        status, doc = await ex.clients[sender].post("/v1/messages/batch", {"messages": batch})
        assert status == 207 and doc["accepted"] == BATCH, doc
        accepted += [r["id"] for r in doc["results"]]
        if not killed and len(accepted) >= kill_after:
            await asyncio.sleep(0.3)  # let the receiver be in the middle of its work
            kill()
            killed = True
    return accepted


async def test_killed_inbox_gateway_loses_nothing_and_queues_nothing_twice(exchange: Exchange4) -> None:
    receiver = exchange.gateways["AH"]
    accepted = await stream(exchange, "SH", "AH", STREAM // 2, receiver.kill)
    receiver.start()
    got: list[str] = []
    deadline = time.monotonic() + 120
    wanted = set(accepted)
    while not wanted <= set(got) and time.monotonic() < deadline:
        got += [m["id"] for m in await exchange.clients["AH"].pull(max_n=1000, wait=1.0)]
    assert wanted <= set(got), f"{len(wanted - set(got))} accepted messages never reached the inbox"
    twice = [i for i, n in Counter(got).items() if n > 1]
    assert twice == [], f"{len(twice)} messages were queued twice"


async def test_killed_webhook_gateway_loses_nothing_and_repeats_only_in_flight(exchange: Exchange4) -> None:
    receiver = exchange.gateways["ZJ"]
    before = len(exchange.sink.received["ZJ"])
    accepted = await stream(exchange, "JS", "ZJ", STREAM // 2, receiver.kill)
    receiver.start()
    deadline = time.monotonic() + 120
    wanted = set(accepted)
    while not wanted <= set(exchange.sink.ids("ZJ")) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    deliveries = exchange.sink.received["ZJ"][before:]
    ids = [d["id"] for d in deliveries]
    assert wanted <= set(ids), f"{len(wanted - set(ids))} accepted messages were never delivered"
    twice = [i for i, n in Counter(ids).items() if n > 1]
    # At most the deliveries in flight at the kill (the platform's webhook concurrency) come again, byte-equal.
    assert len(twice) <= 32, f"{len(twice)} messages were delivered twice"
    for i in twice:
        bodies = {d["body"] for d in deliveries if d["id"] == i}
        assert len(bodies) == 1
    # Order within a conversation survives the crash: first deliveries keep the send order.
    first_seen = list(dict.fromkeys(ids))
    position = {i: n for n, i in enumerate(first_seen)}
    for conv in range(10):
        conv_ids = [a for k, a in enumerate(accepted) if k % 10 == conv]
        assert [position[i] for i in conv_ids] == sorted(position[i] for i in conv_ids)


async def test_webhook_down_for_a_while_then_back_delivers_everything(exchange: Exchange4) -> None:
    exchange.sink.failing = True
    ids = []
    for i in range(30):
        status, doc = await exchange.clients["ZJ"].send("medical.clearing.statement", "SH", statement(i))
        assert status == 202
        ids.append(doc["id"])
    await asyncio.sleep(3.0)
    assert not set(ids) & set(exchange.sink.ids("SH"))  # nothing got through while it was down
    exchange.sink.failing = False
    for i in ids:
        await exchange.sink.wait_for("SH", i, timeout=60)
        assert (await exchange.clients["ZJ"].wait_status(i, "delivered"))["status"] == "delivered"


async def test_stopped_broker_gives_503_then_sending_works_again(exchange: Exchange4, kafka: Broker) -> None:
    assert kafka.local is not None, "this test stops the broker it started"
    kafka.local.stop()
    try:
        status, doc = await exchange.clients["JS"].send("medical.clearing.statement", "AH", statement(1))
        assert status == 503 and doc["code"] == "broker_unavailable", doc
        batch = [{"type": "medical.clearing.statement", "to": "AH", "payload": statement(i)} for i in range(3)]
        status, doc = await exchange.clients["JS"].post("/v1/messages/batch", {"messages": batch})
        assert status == 503 and doc["code"] == "broker_unavailable", doc
        assert all(r["code"] == "broker_unavailable" and r["id"] for r in doc["results"])  # ids to ask about later
        later = doc["results"][0]["id"]
        # SIGTERM while the broker is down: the drain is bounded (30 s in all) and says what was not flushed.
        stopped = exchange.gateways["ZJ"]
        started = time.monotonic()
        await asyncio.to_thread(stopped.stop)
        took = time.monotonic() - started
        assert stopped.proc is not None and stopped.proc.returncode == 0 and took < 35, took
    finally:
        kafka.local.start()
    exchange.gateways["ZJ"].start()
    deadline = time.monotonic() + 90
    status, doc = 0, {}
    while True:
        try:
            status, doc = await exchange.clients["JS"].send("medical.clearing.statement", "SH", statement(2))
        except aiohttp.ClientConnectionError as e:  # a kept-alive connection closed while the broker was down
            status, doc = 0, {"error": repr(e)}
        if status == 202 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    assert status == 202, doc
    await exchange.sink.wait_for("SH", doc["id"], timeout=60)
    assert (await exchange.clients["JS"].status_of(later))["status"] in ("publish_failed", "delivered")


async def test_sigterm_drains_the_batch_in_hand_so_nothing_comes_twice(exchange: Exchange4) -> None:
    """A graceful stop finishes and commits the batch in hand: after the restart, no webhook delivery repeats."""
    receiver = exchange.gateways["ZJ"]
    before = len(exchange.sink.received["ZJ"])
    stopping: list[asyncio.Task[None]] = []
    # SIGTERM and wait in a thread: the webhook sink lives on this event loop and must keep answering while
    # the gateway drains (a blocking wait here would stall the very deliveries the drain is finishing).
    accepted = await stream(exchange, "AH", "ZJ", STREAM // 2,
                            lambda: stopping.append(asyncio.create_task(asyncio.to_thread(receiver.stop))))
    await stopping[0]
    assert receiver.proc is not None and receiver.proc.returncode == 0, "no clean exit on SIGTERM"
    receiver.start()
    deadline = time.monotonic() + 120
    while not set(accepted) <= set(exchange.sink.ids("ZJ")) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    ids = [d["id"] for d in exchange.sink.received["ZJ"][before:]]
    assert set(accepted) <= set(ids), f"{len(set(accepted) - set(ids))} accepted messages were never delivered"
    twice = [i for i, n in Counter(ids).items() if n > 1]
    assert twice == [], f"{len(twice)} messages were delivered twice after a graceful stop"
