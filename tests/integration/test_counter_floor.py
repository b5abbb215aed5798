"""bench/counter_floor.py, the counter benchmark's floor, on the real broker: each HTTP answer is the platform's
answer to that very request (the front matches the replies by key), with many requests in flight at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from bench.counter_floor import floor
from bench.lean_http import LeanPool
from tests.conftest import Broker


async def test_each_round_trip_gets_the_answer_to_its_own_request(kafka: Broker, tmp_path: Path) -> None:
    async with floor(tmp_path, kafka.bootstrap_servers) as fl:  # the platform echoes each body
        assert set(fl.pids) == {"front", "back"}
        pool = LeanPool("127.0.0.1", fl.port, 32, timeout=60.0)
        try:
            bodies = [orjson.dumps({"n": i, "pad": "x" * (i % 50)}) for i in range(200)]
            answers = await asyncio.gather(*(pool.post("/rt", b, {"Content-Type": "application/json"})
                                             for b in bodies))
        finally:
            await pool.close()
    assert [status for status, _ in answers] == [200] * len(bodies)
    assert [body for _, body in answers] == bodies
