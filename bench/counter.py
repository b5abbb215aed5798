#!/usr/bin/env python3
"""Counter benchmark: NHSA request-reply round trips through two gateways at fixed offered rates (open loop).

A Shanghai HIS posts NHSA transactions to its gateway's facade; each one travels SH -> Kafka -> AH, the Anhui
insured platform answers from its ledger, and the result travels back to the waiting call. Requests leave on
schedule (request i at t0 + i/R) whether or not earlier ones finished, and latency runs from the scheduled
time to the HIS's answer, so a stalled system cannot hide its queue (coordinated omission avoided).

A broker it starts is warmed first (bench/broker_warmup.py: raw traffic until the JVM's JIT compiler is quiet,
then round trips until a round in which the compiler took < 2 % of a core), so that the rates measure the relay,
not the JVM's start-up.

Prints per offered rate: sent, answered per infcode, p50/p99/p99.9 latency, the driver's schedule lag, the CPU
per round trip of each process (the two gateways, the driver: HIS and insured platform, the Kafka JVM when the
benchmark started it, and the share of a core its JIT compiler still took) and how busy the whole machine was;
then the lowest offered rate whose p99 passes 1 s, and the goal (p99 <= 100 ms at 500 req/s) as PASS or short.
The HIS posts through bench/lean_http.py (`--his-client lean`, the default: the driver shares the cores it
measures) or through aiohttp's client (`--his-client aiohttp`, as the tests and the demo do).

    .venv/bin/python bench/counter.py [--rates 100,500,1000] [--seconds 10] [--infno 1101] [--warmup 10]
                                      [--broker-warmup 120] [--profile DIR] [--no-batch-answers]
                                      [--his-client lean|aiohttp] [--auth access|assertion]

Needs request-reply in the gateway (issue 11 part 1) and the `nhsa` facade entry point installed
(`pip install -e .` after the merge). It is a benchmark, not a test: exit 1 only when no answer came at all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout: its own adapters and gateway

import counter_floor  # noqa: E402 (beside this file)
from broker_warmup import describe, until_jit_quiet, warm_broker  # noqa: E402 (beside this)
from hotspots import summarize_folder  # noqa: E402
from lean_http import LeanPool  # noqa: E402
from relay import CpuWindow, PySpy  # noqa: E402 (bench/relay.py, beside this file)

from adapters.counter_exchange import PATIENT, counter_exchange  # noqa: E402
from adapters.his import HisClient  # noqa: E402
from adapters.simulated import cst_now  # noqa: E402
from gateway.dev.local_kafka import LocalKafka, env_bootstrap_servers, free_port  # noqa: E402

PY_SPY = str(Path(sys.executable).parent / "py-spy")
GOAL_RATE, GOAL_P99_S = 500, 0.100
KNEE_S = 1.0
JIT_ROUND_S = 5.0  # seconds per round trip warm-up round
ID_NUMBER = "34010420000229124X"
HIS_CLIENTS = {"lean": "lean (bench/lean_http.py)", "aiohttp": "aiohttp ClientSession"}
# How the HIS authenticates: one access token reused (POST /v1/token, as an OAuth client does), or a fresh
# single-use ES256 assertion per call (each one an ES256 verification and a jti write at the SH gateway).
AUTH_MODES = {"access": "one access token, reused", "assertion": "a single-use assertion per call"}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Run:
    rate: int
    sent: int = 0
    latencies: list[float] = field(default_factory=list)  # scheduled time -> answer, of every answer
    outcomes: Counter[str] = field(default_factory=Counter)  # infcode (or HTTP status / error class)
    lag: list[float] = field(default_factory=list)  # how late the driver sent each request
    cpu_ms: dict[str, float | None] = field(default_factory=dict)  # process -> CPU ms per round trip
    jit_share: float | None = None  # of a core, what the broker's JIT compiler took during the run
    machine_busy: float = 0.0  # share of the machine's CPU time in use during the run (every process)

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


def transaction(his: HisClient, infno: str, mdtrt_id: str, n: int) -> dict[str, Any]:
    """One request of the chosen transaction (1101 reads, 2206 prices, 2207 settles money)."""
    if infno == "1101":
        return his.envelope("1101", {"data": {"mdtrt_cert_type": "02", "mdtrt_cert_no": ID_NUMBER}})
    medfee = Decimal(20 + n % 500) + Decimal(n % 100) / 100
    data = {"mdtrt_id": mdtrt_id, "psn_no": PATIENT.psn_no, "insutype": "310", "med_type": "11",
            "mdtrt_cert_type": "02", "mdtrt_cert_no": ID_NUMBER, "medfee_sumamt": str(medfee),
            "psn_setlway": "01", "acct_used_flag": "0", "fulamt_ownpay_amt": "0.00", "overlmt_selfpay": "0.00",
            "preselfpay_amt": "0.00", "inscp_scp_amt": str(medfee), "chrg_bchno": f"CB{n:013d}"}
    if infno == "2207":
        data["invono"] = f"INV{n:013d}"
    return his.envelope(infno, {"data": data})


async def open_loop(send: Callable[[int], Awaitable[str]], rate: int, seconds: float,
                    pids: dict[str, int | None] | None = None) -> Run:
    """Request i sent at t0 + i/rate by `send(i)` (which returns how it was answered), whether or not the earlier
    ones were answered; latency from each request's scheduled time."""
    run = Run(rate)
    total = int(rate * seconds)
    cpu = CpuWindow(pids or {})
    cpu.start()
    began = time.monotonic()
    t0 = time.monotonic() + 0.2

    async def one(i: int) -> None:
        scheduled = t0 + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
        run.lag.append(time.monotonic() - scheduled)
        run.sent += 1
        try:
            outcome = await send(i)
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as e:  # ConnectionError: the lean client's
            run.outcomes[type(e).__name__] += 1
            return
        run.latencies.append(time.monotonic() - scheduled)
        run.outcomes[outcome] += 1

    await asyncio.gather(*(one(i) for i in range(total)))
    cpu.stop()
    if cpu.kafka_jit is not None:
        run.jit_share = cpu.kafka_jit / max(1e-9, time.monotonic() - began)
    run.cpu_ms = {k: None if v is None else v * 1000 / max(1, run.sent) for k, v in cpu.used.items()}
    run.machine_busy = cpu.machine_busy / cpu.machine_total if cpu.machine_total else 0.0
    return run


async def offer(his: HisClient, infno: str, mdtrt_id: str, rate: int, seconds: float,
                pids: dict[str, int | None] | None = None) -> Run:
    his.premint(int(rate * seconds))  # the HIS's tokens, minted before the window opens (the driver shares the machine)

    async def send(i: int) -> str:
        answer = await his.post(transaction(his, infno, mdtrt_id, rate * 100_000 + i))
        return f"infcode {answer.infcode}" if answer.status == 200 else f"HTTP {answer.status}"

    return await open_loop(send, rate, seconds, pids)


async def offer_floor(pool: LeanPool, body: bytes, rate: int, seconds: float,
                      pids: dict[str, int | None]) -> Run:
    """The floor (bench/counter_floor.py) at `rate`, the HIS's request body each time."""
    headers = {"Content-Type": "application/json"}

    async def send(i: int) -> str:
        status, _ = await pool.post("/rt", body, headers)
        return f"HTTP {status}"

    return await open_loop(send, rate, seconds, pids)


def _table(runs: Sequence[Run]) -> list[str]:
    lines = [f"{'offered/s':>9} {'sent':>6} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'lag p99 ms':>10}  answers"]
    for r in runs:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(r.outcomes.items()))
        lines.append(f"{r.rate:>9} {r.sent:>6} {r.p(50) * 1000:>8.1f} {r.p(99) * 1000:>8.1f} "
                     f"{r.p(99.9) * 1000:>9.1f} {percentile(r.lag, 99) * 1000:>10.1f}  {answers}")
    lines.append("CPU ms per round trip (machine busy during the run):")
    for r in runs:
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r.cpu_ms.items() if v is not None)
        jit = "" if r.jit_share is None else f", its JIT {r.jit_share:.1%} of a core"
        lines.append(f"{r.rate:>9}/s  {cpu} ({r.machine_busy:.0%} busy{jit})")
    return lines


def _cpu_total(r: Run) -> float:
    return sum(v for v in r.cpu_ms.values() if v is not None)


def report(runs: Sequence[Run], infno: str, his_client: str, floors: Sequence[Run] = ()) -> str:
    lines = [f"NHSA {infno} round trips, HIS -> SH facade -> Kafka -> AH insured platform -> back (open loop; "
             f"latency from each request's scheduled time; the HIS's HTTP client: {his_client})", *_table(runs)]
    if floors:
        lines += ["the floor, same run (bench/counter_floor.py: the same hops in raw aiohttp and aiokafka, no gateway "
                  "work; the same client and rates):", *_table(floors),
                  "the gateways over the floor (p99; CPU per round trip of all the processes):"]
        lines += [f"{r.rate:>9}/s  p99 {r.p(99) / f.p(99):.1f}x, CPU {_cpu_total(r) / _cpu_total(f):.1f}x"
                  for r, f in zip(runs, floors, strict=True) if f.latencies and _cpu_total(f) > 0]
    knee = next((r.rate for r in runs if r.p(99) > KNEE_S), None)
    lines.append(f"p99 passes {KNEE_S:.0f} s at: " + (f"{knee}/s offered" if knee is not None else
                                                       f"not within the rates run (up to {runs[-1].rate}/s)"))
    goal = next((r for r in runs if r.rate == GOAL_RATE), None)
    if goal is None:
        lines.append(f"goal (p99 <= {GOAL_P99_S * 1000:.0f} ms at {GOAL_RATE}/s): not measured (add {GOAL_RATE})")
    else:
        verdict = "PASS" if goal.p(99) <= GOAL_P99_S and goal.outcomes.get("infcode 0") == goal.sent else "short of"
        lines.append(f"goal (p99 <= {GOAL_P99_S * 1000:.0f} ms at {GOAL_RATE}/s, every answer infcode 0): "
                     f"{verdict} (p99 {goal.p(99) * 1000:.1f} ms)")
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def broker(work: Path, kafka_pid: int | None = None) -> AsyncIterator[tuple[str, int | None]]:
    """The bootstrap servers, and the broker's pid: KAFKA_BOOTSTRAP_SERVERS's with `kafka_pid` (None: its CPU is
    not measured), else a local broker this benchmark starts."""
    external = env_bootstrap_servers()
    if external:
        yield external, kafka_pid
        return
    local = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port())
    await asyncio.to_thread(local.start)
    try:
        yield local.bootstrap_servers, local.pid()
    finally:
        await asyncio.to_thread(local.stop)


async def settle_jit(his: HisClient, infno: str, mdtrt_id: str, rate: int, kafka_pid: int | None,
                     max_s: float) -> None:
    """Round trips at `rate` in rounds of JIT_ROUND_S until the broker's JIT is quiet
    (broker_warmup.until_jit_quiet): the raw warm-up does not compile the gateways' exact paths."""
    done = await until_jit_quiet(kafka_pid, max_s, lambda: offer(his, infno, mdtrt_id, rate, JIT_ROUND_S))
    if done.rounds:
        print(f"{done.rounds} round trip warm-up rounds at {rate}/s in {done.seconds:.1f} s until the "
              f"broker's JIT compiler took {done.share * 100:.1f} % of a core")


async def main(rates: Sequence[int], seconds: float, infno: str, warmup: float, broker_warmup: float,
               profile: Path | None, batch_answers: bool, his_client: str, with_floor: bool,
               auth: str = "access") -> int:
    with tempfile.TemporaryDirectory(prefix="yrdx-bench-counter-") as tmp:
        work = Path(tmp)
        async with broker(work) as (bootstrap, kafka_pid):
            if kafka_pid is not None and broker_warmup > 0:
                print(describe(await warm_broker(bootstrap, kafka_pid, max_s=broker_warmup)))
            # LeanPool(host, port, limit) with the aiohttp session's timeout (adapters/counter_exchange.py)
            lean = functools.partial(LeanPool, timeout=120.0) if his_client == "lean" else None
            async with counter_exchange(work / "exchange", bootstrap, cwd=ROOT, connections=512,
                                        batch_answers=batch_answers, his_poster=lean,
                                        access_tokens=auth == "access") as ex:
                his = ex.his
                pids: dict[str, int | None] = {f"{r} gateway": pid for r, pid in ex.pids.items()}
                pids |= {"driver": os.getpid(), "kafka_jvm": kafka_pid}
                mdtrt_id = await _visit(his)
                await offer(his, infno, mdtrt_id, 50, warmup)  # connections, caches, the gateways' first calls
                if broker_warmup > 0:
                    await settle_jit(his, infno, mdtrt_id, min(rates), kafka_pid, broker_warmup)
                runs = []
                for rate in rates:
                    profiled = {**{region.lower(): pid for region, pid in ex.pids.items()}, "driver": os.getpid()}
                    spies = [PySpy(PY_SPY, pid, profile / f"{name}.{rate}.pyspy.txt")
                             for name, pid in profiled.items()] if profile is not None else []
                    try:
                        runs.append(await offer(his, infno, mdtrt_id, rate, seconds, pids))
                    finally:
                        for spy in spies:
                            spy.stop()
                request = orjson.dumps(transaction(his, infno, mdtrt_id, 0))
                answer = orjson.dumps((await his.post(transaction(his, infno, mdtrt_id, 1))).doc)
            floors = await measure_floor(work, bootstrap, kafka_pid, rates, seconds, request, answer) if with_floor \
                else []
    print(report(runs, infno, f"{HIS_CLIENTS[his_client]}; its token: {AUTH_MODES[auth]}", floors))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at the end (1/5/15 min, {os.cpu_count()} CPUs): {load}")
    if profile is not None:
        summarize_folder(profile)
    return 0 if any(r.latencies for r in runs) else 1


async def measure_floor(work: Path, bootstrap: str, kafka_pid: int | None, rates: Sequence[int], seconds: float,
                        request: bytes, answer: bytes) -> list[Run]:
    """The same rates through bench/counter_floor.py (the gateways stopped), after 5 s at 50/s to warm it."""
    async with counter_floor.floor(work, bootstrap, answer) as fl:
        pids: dict[str, int | None] = {**fl.pids, "driver": os.getpid(), "kafka_jvm": kafka_pid}
        pool = LeanPool("127.0.0.1", fl.port, 512, timeout=120.0)
        try:
            await offer_floor(pool, request, 50, 5.0, {})
            return [await offer_floor(pool, request, rate, seconds, pids) for rate in rates]
        finally:
            await pool.close()


async def _visit(his: HisClient) -> str:
    answer = await his.transact("2201", {"data": {
        "psn_no": PATIENT.psn_no, "insutype": "310", "med_type": "11", "begntime": f"{cst_now():%Y-%m-%d %H:%M:%S}",
        "mdtrt_cert_type": "02", "ipt_otp_no": "MZBENCH0000001", "dept_code": "NK01", "caty": "A03"}})
    if answer.infcode != 0:
        raise SystemExit(f"the counter does not answer (HTTP {answer.status}, {answer.doc}); is request-reply "
                         "(issue 11 part 1) merged and the nhsa facade entry point installed?")
    return str(answer.output["data"]["mdtrt_id"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,500,1000", help="offered requests/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each rate is offered")
    parser.add_argument("--infno", choices=("1101", "2206", "2207"), default="1101")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of 50 req/s before the rates")
    parser.add_argument("--broker-warmup", type=float, default=120.0, metavar="S",
                        help="a local broker is loaded with raw traffic, then round trips at the lowest rate, "
                             "until its JIT compiler is quiet, at most S seconds each (0: no broker warm-up)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy both gateways during each measured rate into DIR (<region>.<rate>.pyspy.txt), "
                             "then print bench/hotspots.py's summary")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the floor (bench/counter_floor.py: the same hops in raw aiohttp and aiokafka, "
                             "at the same rates, after the gateways)")
    parser.add_argument("--no-batch-answers", action="store_true",
                        help="the insured platform posts each answer on its own (adapters/answer_batch.py off)")
    parser.add_argument("--his-client", choices=tuple(HIS_CLIENTS), default="lean",
                        help="the HIS's HTTP client: bench/lean_http.py (less of the driver's CPU per request) "
                             "or aiohttp's, to compare the two")
    parser.add_argument("--auth", choices=tuple(AUTH_MODES), default="access",
                        help="the HIS's token: one access token reused (POST /v1/token) or an assertion per call")
    args = parser.parse_args()
    if args.profile is not None:
        if not Path(PY_SPY).exists():
            parser.error(f"--profile needs py-spy at {PY_SPY}")
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(main([int(r) for r in args.rates.split(",")], args.seconds, args.infno, args.warmup,
                              args.broker_warmup, args.profile, not args.no_batch_answers, args.his_client,
                              not args.no_floor, args.auth)))
