"""bench/relay.py's figures about its own conditions: it warns when a broker or gateway left over from another run
shares the machine with its window, says how many messages travelled together, and how much a cold process
pays for the same work."""

from __future__ import annotations

import importlib.util
import io
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


def _scrape(signatures: tuple[float, float], deliveries: float, delivered: float,
            seconds: float = 0.0) -> dict[str, float]:
    """A gateway's /metrics as bench/relay.py reads them: `name{labels}` -> value; `seconds` spent in each of
    the timed steps it counts."""
    return {
        "yrdx_signature_batch_messages_sum": signatures[0], "yrdx_signature_batch_messages_count": signatures[1],
        'yrdx_stage_seconds_count{stage="deliver"}': deliveries,
        'yrdx_stage_seconds_sum{stage="deliver"}': seconds / 10,
        'yrdx_stage_seconds_count{stage="publish"}': signatures[1],
        'yrdx_stage_seconds_sum{stage="publish"}': seconds / 2,
        "yrdx_ingress_request_seconds_count": signatures[0], "yrdx_ingress_request_seconds_sum": seconds,
        'yrdx_messages_total{direction="in",family="medical",outcome="delivered",peer="JS"}': delivered * 0.75,
        'yrdx_messages_total{direction="in",family="identity",outcome="delivered",peer="JS"}': delivered * 0.25,
        'yrdx_messages_total{direction="in",family="medical",outcome="rejected",peer="JS"}': 1_000.0,
        'yrdx_messages_total{direction="out",family="medical",outcome="accepted",peer="SH"}': 5_000.0,
    }


def test_group_sizes_are_the_windows_means(relay: ModuleType) -> None:
    before = {"JS": _scrape((1_000, 100), 0, 0, seconds=10), "SH": _scrape((0, 0), 50, 400, seconds=1)}
    after = {"JS": _scrape((7_000, 400), 0, 0, seconds=70), "SH": _scrape((0, 0), 250, 6_400, seconds=3)}
    groups = relay.group_sizes(before, after)
    assert groups["js_messages_per_signature"] == 20.0  # 6,000 messages under 300 signatures in the window
    assert groups["sh_messages_per_delivery"] == 30.0  # 6,000 delivered (not rejected, not sent) in 200
    assert groups["js_ingress_ms"] == pytest.approx(10.0)  # 60 s over 6,000 requests
    assert groups["js_publish_ms"] == pytest.approx(100.0)  # 30 s over 300 group publishes
    assert groups["sh_deliver_ms"] == pytest.approx(1.0)  # 0.2 s over 200 deliveries
    assert set(relay.group_sizes(after, after).values()) == {None}


def test_the_idle_penalty_compares_the_same_work_cold_and_warm(relay: ModuleType,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    penalty = relay.idle_penalty(rounds=20, gap_s=0.001)
    assert 0.2 < penalty < 50  # a ratio of two medians of the same work, whatever this machine makes of it
    relay.print_machine({"nproc": 2, "usable_cpus": 2, "python": "3.11", "loadavg_start": "0.0",
                         "loadavg_end": "0.1", "idle_penalty": 2.3})
    assert "takes 2.3x as long right after a 10 ms sleep" in capsys.readouterr().out


def test_profiles_leave_threads_waiting_for_work_out_of_the_shares(relay: ModuleType, tmp_path: Path) -> None:
    import hotspots  # bench/hotspots.py, on the path while the relay fixture is

    loop = "run (asyncio/runners.py:190);BaseEventLoop._run_once (asyncio/base_events.py:1922)"
    (tmp_path / "js.pyspy.txt").write_text("\n".join([
        f"{loop};EpollSelector.select (selectors.py:468) 500",  # the loop waiting in epoll
        "Thread.run (threading.py:975);_worker (concurrent/futures/thread.py:81) 300",  # an idle pool worker
        f"{loop};Handle._run (asyncio/events.py:80);es256_verify (gateway/crypto/jws.py:413) 150",
        f"{loop};Handle._run (asyncio/events.py:80);SqliteBackend._tx (gateway/state/sqlite.py:193) 50",
    ]) + "\n")
    out = io.StringIO()
    hotspots.summarize_collapsed(tmp_path / "js.pyspy.txt", out=out)
    text = out.getvalue()
    assert "200 samples of work" in text and "800 of threads waiting for work" in text
    assert " 75.0 %  es256_verify (gateway/crypto/jws.py)" in text  # 150 of the 200, not of the 1,000
    assert "select (selectors.py)" not in text and "_worker" not in text


def test_an_open_loop_is_profiled_per_rate_with_py_spy_only(relay: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):  # cProfile covers the whole process life, not one rate
        relay.parse_args(["--open-loop", "500", "--profile", str(tmp_path), "--profiler", "cprofile"])
    args = relay.parse_args(["--open-loop", "500,1000", "--linger-ms", "0"])
    assert args.single and args.profile is None and args.linger_ms == 0
