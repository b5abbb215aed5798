"""bench/relay.py warns when a broker or gateway left over from another run shares the machine with its window."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def relay() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))  # relay.py imports its neighbours (lean_http, hotspots) by name
    try:
        spec = importlib.util.spec_from_file_location("bench_relay", BENCH / "relay.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_relay", None)
        sys.path.remove(str(BENCH))


@pytest.fixture
def leftover() -> Iterator[int]:
    """A process whose command line reads like a gateway's, as a killed run's orphan would."""
    proc = subprocess.Popen(["bash", "-c", 'exec -a "python -m gateway.cli serve --config x" sleep 30'])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_leftover_gateway_is_named_and_the_report_warns(relay: ModuleType, leftover: int,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(100):  # until bash has exec'd into the renamed sleep
        found = relay.strays(set())
        if f"yrdx gateway pid {leftover}" in found:
            break
        time.sleep(0.02)
    assert f"yrdx gateway pid {leftover}" in found
    assert f"yrdx gateway pid {leftover}" not in relay.strays({leftover})  # a broker passed with --kafka-pid
    relay.print_machine({"nproc": 2, "usable_cpus": 2, "python": "3.11", "loadavg_start": "0.0",
                         "loadavg_end": "0.1", "strays": found})
    out = capsys.readouterr().out  # other tests' gateways may be named too: the suite runs them alongside
    assert "WARNING: already running when this run started" in out and f"yrdx gateway pid {leftover}" in out


def test_a_quiet_machine_gets_no_warning(relay: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    relay.print_machine({"nproc": 2, "usable_cpus": 2, "python": "3.11", "loadavg_start": "0.0",
                         "loadavg_end": "0.1", "strays": []})
    assert "WARNING" not in capsys.readouterr().out
