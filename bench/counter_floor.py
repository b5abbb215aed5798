#!/usr/bin/env python3
"""The counter's floor: the hops of a counter round trip with none of the gateways' work, measured in the same
run as the gateways (bench/counter.py offers it the same rates on the same warm broker, with the same client).

    driver (HIS) -HTTP-> front -Kafka-> back -HTTP-> driver (platform echo) -> back -Kafka-> front -HTTP-> driver

Two processes of raw aiohttp and aiokafka stand where the SH and AH gateways stand: `front` answers each POST
once `back` has produced the platform's answer for it; `back` posts each record it consumes to the platform,
as AH's webhook does, and produces the answer. Producers and consumers are configured as the gateways' (acks=all,
idempotent, linger 2 ms, zstd; fetch_max_wait 200 ms). No JWT, schema, sealing, signing, state, audit trail or
receipts, and the platform answers in its HTTP response (the insured platform answers with a post of its own),
so the floor is what this machine charges for the round trip's transport alone, and the gateways' figures over
the floor's is what their own work costs.

    python bench/counter_floor.py front --bootstrap B --out T1 --in T2 --ready FILE
    python bench/counter_floor.py back --bootstrap B --in T1 --out T2 --platform URL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

PARTITIONS = 4  # as the gateways' inbox topics
SELF = Path(__file__).resolve()
REPLY_TIMEOUT_S = 30.0


def _producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2,
                            compression_type="zstd", max_batch_size=256 * 1024)


async def _consumer(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A consumer of every partition of `topic` from its start (the floor's topics are new)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=200)
    await consumer.start()
    return consumer


async def front(bootstrap: str, out_topic: str, in_topic: str, ready: Path) -> None:
    producer = _producer(bootstrap)
    await producer.start()
    consumer = await _consumer(bootstrap, in_topic)
    waiting: dict[bytes, asyncio.Future[bytes]] = {}

    async def replies() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for r in records:
                    future = waiting.get(r.key or b"")
                    if future is not None and not future.done():
                        future.set_result(r.value or b"")

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        key = uuid.uuid4().bytes
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiting[key] = future
        try:
            await (await producer.send(out_topic, body, key=key))  # acknowledged, as the gateway's 202 is
            answer = await asyncio.wait_for(future, REPLY_TIMEOUT_S)
        finally:
            waiting.pop(key, None)
        return web.Response(body=answer, content_type="application/json")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/rt", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    listening = asyncio.create_task(replies())
    await asyncio.to_thread(_announce, ready, port)
    await listening


async def back(bootstrap: str, in_topic: str, out_topic: str, platform: str) -> None:
    producer = _producer(bootstrap)
    await producer.start()
    consumer = await _consumer(bootstrap, in_topic)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as session:

        async def one(value: bytes, key: bytes) -> None:
            async with session.post(platform, data=value, headers={"Content-Type": "application/json"}) as r:
                answer = await r.read()
            await (await producer.send(out_topic, answer, key=key))

        while True:  # a batch at a time, its posts side by side, as AH's egress pushes conversations
            fetched = await consumer.getmany(timeout_ms=1000)
            await asyncio.gather(*(one(r.value or b"", r.key or b"") for records in fetched.values()
                                   for r in records))


@dataclass
class Floor:
    port: int
    pids: dict[str, int]  # "front" / "back" -> pid


@contextlib.asynccontextmanager
async def floor(work: Path, bootstrap: str, answer: bytes | None = None) -> AsyncIterator[Floor]:
    """The two processes on new topics, and the platform in this process: it answers `answer`, or (None) each
    request's own body."""
    suffix = uuid.uuid4().hex[:8]
    out_topic, in_topic = f"bench.floor.out.{suffix}", f"bench.floor.in.{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (out_topic, in_topic)])
    finally:
        await admin.close()

    async def platform(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=body if answer is None else answer, content_type="application/json")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/platform", platform)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    platform_url = f"http://127.0.0.1:{runner.addresses[0][1]}/platform"
    ready = work / "floor-front.port"
    procs = _start(bootstrap, out_topic, in_topic, ready, platform_url)
    try:
        deadline = time.monotonic() + 60
        while (port := _port(ready)) is None:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
                raise RuntimeError("the floor's processes did not start")
            await asyncio.sleep(0.1)
        yield Floor(port, {name: p.pid for name, p in procs.items()})
    finally:
        await asyncio.to_thread(_stop, procs)
        await runner.cleanup()


def _start(bootstrap: str, out_topic: str, in_topic: str, ready: Path,
           platform_url: str) -> dict[str, subprocess.Popen[bytes]]:
    me = [sys.executable, str(SELF)]
    return {
        "front": subprocess.Popen([*me, "front", "--bootstrap", bootstrap, "--out", out_topic, "--in", in_topic,
                                   "--ready", str(ready)]),
        "back": subprocess.Popen([*me, "back", "--bootstrap", bootstrap, "--in", out_topic, "--out", in_topic,
                                  "--platform", platform_url]),
    }


def _announce(ready: Path, port: int) -> None:
    """Write the port whole (renamed into place: the driver never reads half of it)."""
    part = ready.with_suffix(".part")
    part.write_text(str(port))
    part.replace(ready)


def _port(ready: Path) -> int | None:
    text = ready.read_text() if ready.exists() else ""
    return int(text) if text else None


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=("front", "back"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--in", dest="in_topic", required=True)
    parser.add_argument("--out", dest="out_topic", required=True)
    parser.add_argument("--ready", type=Path, help="front: write the bound port here")
    parser.add_argument("--platform", help="back: the platform's URL")
    args = parser.parse_args()
    if args.role == "front":
        asyncio.run(front(args.bootstrap, args.out_topic, args.in_topic, args.ready))
    else:
        asyncio.run(back(args.bootstrap, args.in_topic, args.out_topic, args.platform))


if __name__ == "__main__":
    main()
