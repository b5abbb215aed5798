"""`make bench`: the relay benchmark's runs behind issue 13's five goals, each goal's figures and a PASS or
short-of line, in one run on this machine.

Each run is bench/relay.py in its own process (its own exchange, Kafka namespace and gateways, on one broker
started and warmed here for all of them) writing its figures as JSON; this script only sequences the runs and
compares. The thresholds are goals for a 2-core machine, so a goal short of its threshold is printed, never a
failure: the exit status is 1 only when a run lost, duplicated or invented a message (relay.py's delivery check).

  1. batches of 200 with the full audit trail and sealing: msg/s end to end, the ratio to the same run's raw
     aiokafka baseline, and the national suite (SM2SM3) against the default suite, batch and single;
  2. one message per request, 64 clients: msg/s;
  3. open loop (single requests on a fixed schedule): p99 POST->delivered at 1,000 and 3,000 msg/s;
  4. CPU per message of both gateways against a floor measured in the same run (its parts printed);
  5. overload: 2x the capacity measured in goal 2 offered for 60 s, then a quarter of it: 429 `overloaded`
     with Retry-After for what is refused, everything accepted delivered, peak RSS of each gateway under
     RSS_BOUND_MIB, and p99 back under a second once the load drops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from broker_warmup import describe, warm_broker  # bench/broker_warmup.py, beside this file

from gateway.dev.local_kafka import LocalKafka, env_bootstrap_servers, free_port

HERE = Path(__file__).resolve().parent

BATCH_MSG_PER_S = 6000
BATCH_RATIO = 0.25
SM_SHARE = 0.9
SINGLE_MSG_PER_S = 2500
OPEN_LOOP_P99_MS = {1000: 50.0, 3000: 200.0}
FLOOR_FACTOR = 2.0
RSS_BOUND_MIB = 512.0  # per gateway; the admission limits (64 MiB of bodies in flight) keep it far below
RECOVERED_P99_MS = 1000.0
OVERLOAD_CONNECTIONS = 8000
AUDIT_RECORDS_PER_MESSAGE = 7  # accepted, published; received, verified, delivered, receipt_sent; receipt_received


def on_broker(args: Sequence[str], broker: LocalKafka | None) -> tuple[list[str], dict[str, str]]:
    """A bench script's arguments and environment for the shared broker (its address, and its pid for its CPU);
    as they are when there is none (KAFKA_BOOTSTRAP_SERVERS already names a cluster)."""
    env = dict(os.environ)
    if broker is None:
        return list(args), env
    env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
    return [*args, "--kafka-pid", str(broker.pid())], env


def relay(name: str, args: Sequence[str], work: Path, broker: LocalKafka | None) -> tuple[dict[str, Any], bool]:
    """One bench/relay.py run, on the shared warm broker when there is one; its report goes to our output as it
    comes."""
    out = work / f"{name}.json"
    args, env = on_broker(args, broker)
    print(f"\n######## {name}: bench/relay.py {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, str(HERE / "relay.py"), *args, "--json", str(out)], check=False, env=env)
    if not out.exists():
        raise SystemExit(f"{name}: bench/relay.py wrote no figures (exit {done.returncode})")
    return json.loads(out.read_text()), done.returncode == 0


def transport_floor(rates: Sequence[int], seconds: float, messages: int, work: Path,
                    broker: LocalKafka | None) -> dict[str, Any] | None:
    """bench/relay_floor.py on the same broker: goals 2 and 3's hops in raw aiohttp and aiokafka, none of the
    gateways' work, to tell the machine's share of their figures from the gateways'. None if it failed."""
    out = work / "floor.json"
    args, env = on_broker(["--rates", ",".join(map(str, rates)), "--seconds", f"{seconds:g}", "--messages",
                           str(messages), "--concurrency", "64", "--json", str(out)], broker)
    print(f"\n######## transport floor: bench/relay_floor.py {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, str(HERE / "relay_floor.py"), *args], check=False, env=env)
    return json.loads(out.read_text()) if out.exists() else None


def floor_line(floor: dict[str, Any] | None, offered: int | None) -> str:
    """The transport floor's figure for goal 2 (offered None: its closed loop) or goal 3 (that rate)."""
    window = next((w for w in (floor or {}).get("windows", []) if w["offered"] == offered), None)
    if window is None:
        return "     transport floor: not measured"
    if offered is None:
        return f"     transport floor, same broker and clients: {window['msg_per_s']:,.0f} msg/s"
    lat = window["latency_ms"]
    return (f"     transport floor at {offered:,}/s: p50 {lat['p50']:,.1f} p99 {lat['p99']:,.1f} ms, machine "
            f"{window['machine_busy']:.0%} busy")


@contextlib.contextmanager
def shared_broker(work: Path) -> Iterator[LocalKafka | None]:
    """One local broker for every run, its JIT warmed once (bench/README.md "Broker warm-up"): each run then only
    relays until the compiler is quiet for its own shape, instead of warming a fresh JVM for ~70 s. None when
    KAFKA_BOOTSTRAP_SERVERS names a cluster: the runs use it as they are."""
    if env_bootstrap_servers() is not None:
        yield None
        return
    broker = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    try:
        print(f"shared local Kafka {broker.version} at {broker.bootstrap_servers}, pid {broker.pid()}", flush=True)
        print(describe(asyncio.run(warm_broker(broker.bootstrap_servers, broker.pid()))), flush=True)
        yield broker
    finally:
        broker.stop()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "short of"


def floor_us(f: dict[str, Any]) -> dict[str, float]:
    """What one message must cost both gateways at least, from this run's own measurements."""
    us = f["primitives"]["us"]
    batch = f["primitives"]["batch"]
    sealed = f["sealed_share"]
    return {
        "client produce+consume (baseline)": f["baseline"]["cpu_us_per_msg"]["driver"],
        "parse x2 (ingress body, egress envelope)": 2 * us["orjson_parse"],
        "validate x2": 2 * us["schema_validate"],
        "envelope build": us["envelope_build"],
        f"seal + open x {sealed:.2f} sealed": sealed * (us["seal"] + us["open"]),
        f"batch sign + verify share (/{batch})": us[f"batch_sign/{batch}"] + us[f"batch_verify/{batch}"],
        **audit_floor(f, us, batch),
    }


def audit_floor(f: dict[str, Any], us: dict[str, float], batch: int) -> dict[str, float]:
    """The trail's part: a message's entries in batch records (format 3), or its own records (formats 1, 2)."""
    if f.get("audit_batch_records", True):
        return {f"audit: {AUDIT_RECORDS_PER_MESSAGE} entries in batch records (/{batch}) + 2 envelope hashes":
                AUDIT_RECORDS_PER_MESSAGE * us[f"audit_entry/{batch}"] + 2 * us["sha256"]}
    return {f"audit: {AUDIT_RECORDS_PER_MESSAGE} records + 2 envelope hashes":
            AUDIT_RECORDS_PER_MESSAGE * us["audit_record"] + 2 * us["sha256"]}


def open_loop_step(f: dict[str, Any], rate: int) -> dict[str, Any] | None:
    return next((s for s in f["open_loop"] if s["offered_msg_per_s"] == rate), None)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20_000, help="messages of each batch run (20000)")
    p.add_argument("--single-messages", type=int, default=10_000, help="messages of each single run (10000)")
    p.add_argument("--open-loop-seconds", type=float, default=10.0, help="seconds per open-loop rate (10)")
    p.add_argument("--overload-seconds", type=float, default=60.0, help="seconds at 2x capacity (60)")
    p.add_argument("--recovery-seconds", type=float, default=10.0, help="seconds at a quarter capacity after (10)")
    p.add_argument("--json", type=Path, help="also write every run's figures and the verdicts to this file")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="yrdx-goals-") as tmp, shared_broker(Path(tmp)) as broker:
        work = Path(tmp)
        runs: dict[str, dict[str, Any]] = {}
        ok = True

        def run(name: str, *args: str) -> dict[str, Any]:
            nonlocal ok
            figures, fine = relay(name, args, work, broker)
            runs[name] = figures
            ok = ok and fine
            return figures

        batch = run("batch", "--messages", str(a.messages))
        batch_sm = run("batch-sm2sm3", "--messages", str(a.messages), "--alg", "SM2SM3")
        single = run("single", "--single", "--concurrency", "64", "--messages", str(a.single_messages))
        single_sm = run("single-sm2sm3", "--single", "--concurrency", "64", "--messages", str(a.single_messages),
                        "--alg", "SM2SM3")
        rates = sorted(OPEN_LOOP_P99_MS)
        open_loop = run("open-loop", "--open-loop", ",".join(map(str, rates)), "--seconds", f"{a.open_loop_seconds:g}")
        floor_run = transport_floor(rates, a.open_loop_seconds, a.single_messages, work, broker)
        capacity = max(100, int(single["end_to_end"]["msg_per_s"]))
        over, calm = 2 * capacity, max(50, capacity // 4)
        # More connections than the gateway admits messages in flight (limits.max_in_flight_messages, 5,000), so
        # the gateway, not the client's pool, decides what waits; unbounded would run the driver out of file
        # descriptors (ulimit -n) before the gateway refuses anything.
        overload = run("overload", "--open-loop", f"{over},{calm}", "--connections", str(OVERLOAD_CONNECTIONS),
                       "--seconds", f"{a.overload_seconds:g},{a.recovery_seconds:g}")

    print("\n======== issue 13 goals (this machine, this run; figures from the runs above)")
    verdicts: dict[str, bool] = {}

    e = batch["end_to_end"]
    batch_ratio = batch["ratios"]["e2e_over_baseline_msg_per_s"] or 0.0
    single_ratio = single["ratios"]["e2e_over_baseline_msg_per_s"] or 0.0
    sm_batch = batch_sm["end_to_end"]["msg_per_s"] / e["msg_per_s"]
    sm_single = single_sm["end_to_end"]["msg_per_s"] / single["end_to_end"]["msg_per_s"]
    verdicts["1"] = (e["msg_per_s"] >= BATCH_MSG_PER_S and batch_ratio >= BATCH_RATIO
                     and sm_batch >= SM_SHARE and sm_single >= SM_SHARE)
    print(f"1. batches of {batch['config']['batch']}, audit on, sealing by default: {e['msg_per_s']:,.0f} msg/s "
          f"(goal {BATCH_MSG_PER_S:,}), ratio to the raw baseline {batch_ratio:.3f} (goal {BATCH_RATIO}); "
          f"SM2SM3 / ES256: batch {sm_batch:.2f}, single {sm_single:.2f} (goal {SM_SHARE})  "
          f"-> {verdict(verdicts['1'])}")

    s = single["end_to_end"]
    verdicts["2"] = s["msg_per_s"] >= SINGLE_MSG_PER_S
    print(f"2. one message per request, 64 clients: {s['msg_per_s']:,.0f} msg/s (goal {SINGLE_MSG_PER_S:,}), "
          f"ratio to its baseline {single_ratio:.3f}  -> {verdict(verdicts['2'])}")
    print(floor_line(floor_run, None))

    parts = []
    good = True
    for rate in rates:
        step = open_loop_step(open_loop, rate)
        if step is None:
            good = False
            continue
        d = step["post_to_delivered_ms"]
        good = good and d["p99"] <= OPEN_LOOP_P99_MS[rate] and step["missing"] == 0
        parts.append(f"{rate:,}/s: p50 {d['p50']:,.1f} p99 {d['p99']:,.1f} p99.9 {d['p99.9']:,.1f} ms "
                     f"(goal p99 <= {OPEN_LOOP_P99_MS[rate]:g})")
    verdicts["3"] = good
    print(f"3. open loop, POST -> delivered: {'; '.join(parts)}  -> {verdict(good)}")
    for rate in rates:
        print(floor_line(floor_run, rate))

    floor = floor_us(batch)
    total_floor = sum(floor.values())
    cpu = batch["end_to_end"]["cpu_us_per_msg"]
    both = (cpu.get("js_gateway") or 0.0) + (cpu.get("sh_gateway") or 0.0)
    verdicts["4"] = both <= FLOOR_FACTOR * total_floor
    print(f"4. CPU per message, both gateways (batch run): {both:,.0f} us = {both / total_floor:.1f}x the floor of "
          f"{total_floor:,.0f} us (goal <= {FLOOR_FACTOR:g}x)  -> {verdict(verdicts['4'])}")
    for name, value in floor.items():
        print(f"     {value:8,.1f} us  {name}")

    hot, cool = open_loop_step(overload, over), open_loop_step(overload, calm)
    rss = overload.get("peak_rss_mib", {})
    if hot is None or cool is None:
        verdicts["5"] = False
        print("5. overload: a step is missing from the run  -> short of")
    else:
        refused = hot["overloaded_429"]
        verdicts["5"] = (refused > 0 and hot["overloaded_without_retry_after"] == 0 and hot["missing"] == 0
                         and cool["missing"] == 0 and overload["delivery_check"]["lost"] == 0
                         and all(v is not None and v <= RSS_BOUND_MIB for v in rss.values())
                         and cool["overloaded_429"] == 0
                         and cool["post_to_delivered_ms"]["p99"] <= RECOVERED_P99_MS)
        print(f"5. overload: {over:,}/s offered (2x {capacity:,}) for {a.overload_seconds:g} s: "
              f"{hot['accepted']:,} accepted, {refused:,} refused 429 overloaded "
              f"({hot['overloaded_without_retry_after']} without Retry-After), {hot['missing']} accepted not "
              f"delivered; peak RSS " + ", ".join(f"{k} {v:,.0f} MiB" for k, v in rss.items() if v is not None)
              + f" (bound {RSS_BOUND_MIB:g}); then {calm:,}/s: p99 {cool['post_to_delivered_ms']['p99']:,.1f} ms, "
              f"{cool['overloaded_429']} refused (recovered: p99 <= {RECOVERED_P99_MS:g} ms, none refused)  "
              f"-> {verdict(verdicts['5'])}")
    print(f"\ndelivery checks: {'all OK' if ok else 'FAILED (see the runs above)'}")
    if a.json:
        a.json.write_text(json.dumps({"runs": runs, "transport_floor": floor_run, "verdicts": verdicts},
                                     indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
