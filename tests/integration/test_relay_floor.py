"""bench/relay_floor.py, the relay benchmark's transport floor, on the real broker: every message a 202 accepted
is pulled once with its own body, and the driver's windows count what they measured."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import orjson

from bench.lean_http import LeanPool
from bench.relay_floor import FloorDriver, floor, report, single_bodies
from tests.conftest import Broker


async def test_every_accepted_message_is_pulled_once_with_its_body(kafka: Broker, tmp_path: Path) -> None:
    bodies = [orjson.dumps({"n": i, "pad": "x" * (i % 50)}) for i in range(200)]
    async with floor(tmp_path, kafka.bootstrap_servers) as fl, aiohttp.ClientSession() as session:
        assert set(fl.pids) == {"front", "back"}
        pool = LeanPool("127.0.0.1", fl.front, 32, timeout=60.0)
        try:
            answers = await asyncio.gather(*(pool.post("/v1/messages", b, {"Content-Type": "application/json"})
                                             for b in bodies))
        finally:
            await pool.close()
        assert [status for status, _ in answers] == [202] * len(bodies)
        sent = {orjson.loads(raw)["id"]: body for (_, raw), body in zip(answers, bodies, strict=True)}
        pulled: list[dict[str, str]] = []
        for _ in range(50):
            async with session.get(f"http://127.0.0.1:{fl.back}/v1/inbox?max=64&wait=1") as resp:
                assert resp.status == 200
                pulled += orjson.loads(await resp.read())["messages"]
            if len(pulled) >= len(sent):
                break
        async with session.get(f"http://127.0.0.1:{fl.back}/v1/inbox?max=64&wait=0.5") as resp:
            pulled += orjson.loads(await resp.read())["messages"]  # a second copy would show up here
    assert sorted(m["id"] for m in pulled) == sorted(sent)
    assert all(m["body"].encode() == sent[m["id"]] for m in pulled)


async def test_the_driver_measures_open_and_closed_loops(kafka: Broker, tmp_path: Path) -> None:
    bodies = single_bodies(8)
    assert all(orjson.loads(b)["to"] == "SH" for b in bodies)
    async with floor(tmp_path, kafka.bootstrap_servers) as fl, aiohttp.ClientSession() as session:
        pool = LeanPool("127.0.0.1", fl.front, limit=0)
        driver = FloorDriver(fl, session, pool)
        pulling = asyncio.create_task(driver.pulling())
        pids: dict[str, int | None] = {**fl.pids, "driver": os.getpid()}
        try:
            opened = await driver.open_loop(bodies, 100, 1.0, pids)
            closed = await driver.closed_loop(bodies, 300, 8, pids)
        finally:
            pulling.cancel()
            await pool.close()
    for w, count in ((opened, 100), (closed, 300)):
        assert (w.sent, len(w.posted), len(w.latencies), dict(w.errors)) == (count, count, count, {})
        assert all(0 < x < 30 for x in w.latencies) and w.rate > 0
        assert all(v is not None and v > 0 for v in w.cpu_us.values())
    lines = report([opened, closed])
    assert "100/s offered" in lines[1] and "closed loop, 8 clients" in lines[2]
