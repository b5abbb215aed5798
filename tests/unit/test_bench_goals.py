"""bench/goals.py prints the relay's transport floor (bench/relay_floor.py) beside goals 2 and 3."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def goals() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))  # goals.py imports its neighbours by name
    try:
        yield importlib.import_module("bench.goals")
    finally:
        sys.path.remove(str(BENCH))


FLOOR = {"windows": [
    {"offered": 1000, "msg_per_s": 984.0, "machine_busy": 0.6, "latency_ms": {"p50": 4.4, "p99": 9.4, "p99.9": 20.8}},
    {"offered": None, "msg_per_s": 10049.0, "machine_busy": 0.84,
     "latency_ms": {"p50": 6.6, "p99": 13.4, "p99.9": 15.6}},
]}


def test_the_closed_loop_stands_beside_goal_2(goals: ModuleType) -> None:
    assert goals.floor_line(FLOOR, None) == "     transport floor, same broker and clients: 10,049 msg/s"


def test_each_rate_stands_beside_goal_3(goals: ModuleType) -> None:
    assert goals.floor_line(FLOOR, 1000) == ("     transport floor at 1,000/s: p50 4.4 p99 9.4 ms, machine 60% busy")


def test_a_floor_that_did_not_run_says_so(goals: ModuleType) -> None:
    assert goals.floor_line(None, 1000) == "     transport floor: not measured"
    assert goals.floor_line(FLOOR, 3000) == "     transport floor: not measured"


def test_each_script_is_pointed_at_the_shared_broker_with_its_pid(goals: ModuleType) -> None:
    class Shared:
        bootstrap_servers = "127.0.0.1:19092"

        def pid(self) -> int:
            return 4242

    args, env = goals.on_broker(["--seconds", "10"], Shared())
    assert args == ["--seconds", "10", "--kafka-pid", "4242"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092"
    args, env = goals.on_broker(["--seconds", "10"], None)  # a cluster named by the caller: left as it is
    assert args == ["--seconds", "10"]
    assert env.get("KAFKA_BOOTSTRAP_SERVERS") == os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
