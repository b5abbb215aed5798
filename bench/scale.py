#!/usr/bin/env python3
"""Scale benchmark: one Shanghai replica against two, both on PostgreSQL state, on this machine's cores.

For each replica count the same run: JS relays N mixed messages (bench/relay.py's message mix and batch bodies)
to SH, whose replicas share SH's consumer group, its pull inbox and its state in one PostgreSQL database; the
driver posts batches to JS and pulls SH's inbox through every replica in turn. Printed per run: end-to-end msg/s,
CPU per message of the JS gateway, of each SH replica and of PostgreSQL, and the exactly-once check. Then a
micro-measure of what the PostgreSQL store costs per message on its own: the dedupe lookup and the one
transaction that marks a message seen and queues it (StateStore.seen + deliver_to_inbox), per message in batches
of 1 and of 200, and the pull (lease + ack).

On one machine the replicas share the same cores, so two replicas cannot be faster than one here: the figure
that matters is what a second replica costs (the rebalance, a second consumer, the shared database), and the
README's Benchmark section puts it beside what partitions, replicas and one PostgreSQL primary allow on paper.
It is a benchmark, not a test: it exits 1 only when a message was lost or delivered twice.

    .venv/bin/python bench/scale.py [--messages 10000] [--batch 200] [--concurrency 4] [--replicas 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broker_warmup import describe, warm_broker  # noqa: E402 (bench/broker_warmup.py, one folder)
from relay import (  # noqa: E402 (bench/relay.py's helpers, one folder)
    RECEIVER,
    SENDER,
    CpuWindow,
    GatewayProcess,
    build_batches,
    loadavg,
    message_variants,
    us_per_msg,
)

from gateway.dev.exchange import edit_config, init_exchange, platform_id  # noqa: E402
from gateway.dev.local_kafka import LocalKafka, env_bootstrap_servers, free_port  # noqa: E402
from gateway.http.auth import TokenMinter  # noqa: E402
from gateway.schemas.registry import SchemaRegistry  # noqa: E402
from gateway.state import InboxDelivery, StateStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = ROOT / "scripts" / "postgres.sh"


def postgres(*args: str) -> None:
    done = subprocess.run(["bash", str(POSTGRES), *args], capture_output=True, text=True, timeout=900,  # noqa: S603
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/postgres.sh {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def create_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


def postgres_pids(home: Path) -> list[int]:
    """The server's processes (postmaster and backends): its CPU is the state's cost."""
    pid_file = home / "data" / "postmaster.pid"
    if not pid_file.exists():
        return []
    main = int(pid_file.read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True, check=False)  # noqa: S607
    return [main, *(int(p) for p in children.stdout.split())]


async def relay_run(replicas: int, args: argparse.Namespace, bootstrap: str, broker_pid: int | None, admin_dsn: str,
                    pg_home: Path, work: Path) -> dict[str, Any]:
    """One run: JS -> SH with `replicas` SH replicas on a fresh database and namespace."""
    run = f"scale{replicas}-{uuid.uuid4().hex[:6]}"
    ex = init_exchange(work / run, base_port=0, bootstrap_servers=bootstrap, namespace=run)
    dsn = create_database(admin_dsn, run.replace("-", "_"))
    edit_config(ex.config_path(RECEIVER), delivery={"mode": "inbox"}, state={"dsn": dsn})
    base = yaml.safe_load(ex.config_path(RECEIVER).read_text())
    js = GatewayProcess(SENDER, ex.config_path(SENDER), work / run)
    sh = []
    for i in range(replicas):
        path = work / run / f"sh-{i}.yaml"
        path.write_text(yaml.safe_dump({**base, "instance_id": f"sh-{i}"}))
        sh.append(GatewayProcess(RECEIVER, path, work / run))
    everyone = [js, *sh]
    try:
        for g in everyone:
            g.launch()
        for g in everyone:
            g.wait_ready()
        await asyncio.sleep(3.0)  # the replicas' group settles (one rebalance per joining replica)
        variants = message_variants(SchemaRegistry.load())
        warmup = build_batches(variants, args.batch * 2, args.batch, run, 0)
        bodies = build_batches(variants, args.messages, args.batch, run, args.batch * 2)
        async with aiohttp.ClientSession() as session:
            driver = Driver(session, js, sh, ex)
            await driver.relay(warmup, args.concurrency, args.batch * 2)
            window = CpuWindow({"JS": js.pid, **{f"SH/sh-{i}": g.pid for i, g in enumerate(sh)},
                                "Kafka": broker_pid, **{f"pg-{p}": p for p in postgres_pids(pg_home)}})
            window.start()
            started = time.monotonic()
            await driver.relay(bodies, args.concurrency, args.messages)
            elapsed = time.monotonic() - started
            window.stop()
            await asyncio.sleep(2.0)
            await driver.pull_round()  # a late second copy would show here
        counts = Counter(driver.delivered)
        lost = len(set(driver.accepted) - set(counts))
        twice = sum(1 for n in counts.values() if n > 1)
        pg_cpu = sum(v or 0.0 for k, v in window.used.items() if k.startswith("pg-"))
        ours = sum(v or 0.0 for v in window.used.values())
        others = (window.machine_busy - ours) / window.machine_total if window.machine_total else None
        return {
            "replicas": replicas, "messages": args.messages, "seconds": elapsed,
            "rate": args.messages / elapsed, "lost": lost, "duplicated": twice,
            "cpu_us": {
                "JS": us_per_msg(window.used["JS"], args.messages),
                **{k: us_per_msg(v, args.messages) for k, v in window.used.items() if k.startswith("SH")},
                "Kafka": us_per_msg(window.used["Kafka"], args.messages),
                "PostgreSQL": us_per_msg(pg_cpu, args.messages),
            },
            # the share of the machine's CPU that other work (other users of these cores) took meanwhile
            "others": others,
        }
    finally:
        for g in everyone:
            g.stop()


class Driver:
    """Concurrent batch POSTs to JS; pulls of SH's inbox through each replica in turn (the inbox is shared)."""

    def __init__(self, session: aiohttp.ClientSession, js: GatewayProcess, sh: Sequence[GatewayProcess],
                 ex: Any) -> None:
        self.session, self.js, self.sh = session, js, list(sh)
        self.js_minter = TokenMinter(platform_id(SENDER), ex.pki.platform_key(SENDER), SENDER)
        self.sh_minter = TokenMinter(platform_id(RECEIVER), ex.pki.platform_key(RECEIVER), RECEIVER)
        self.accepted: list[str] = []
        self.delivered: list[str] = []
        self._turn = 0

    async def relay(self, bodies: Sequence[bytes], concurrency: int, count: int, stall_s: float = 60.0) -> None:
        """Send every body (`concurrency` in flight) while pulling, until `count` more are delivered."""
        target = len(self.delivered) + count
        queue = list(reversed(bodies))

        async def sender() -> None:
            while queue:
                body = queue.pop()
                headers = {"Content-Type": "application/json", **self.js_minter.header()}
                async with self.session.post(f"{self.js.url}/v1/messages/batch", data=body, headers=headers) as r:
                    doc = orjson.loads(await r.read())
                    self.accepted += [m["id"] for m in doc["results"] if m["status"] == 202]

        senders = [asyncio.create_task(sender()) for _ in range(concurrency)]
        last, last_at = len(self.delivered), time.monotonic()
        while len(self.delivered) < target:
            await self.pull_round()
            if len(self.delivered) > last:
                last, last_at = len(self.delivered), time.monotonic()
            elif time.monotonic() - last_at > stall_s:
                break  # counted as lost
        await asyncio.gather(*senders)

    async def pull_round(self) -> None:
        sh = self.sh[self._turn % len(self.sh)]
        self._turn += 1
        async with self.session.get(f"{sh.url}/v1/inbox?max=500&wait=1", headers=self.sh_minter.header()) as r:
            msgs = orjson.loads(await r.read())["messages"]
        if not msgs:
            return
        ids = [m["id"] for m in msgs]
        headers = {"Content-Type": "application/json", **self.sh_minter.header()}
        async with self.session.post(f"{sh.url}/v1/inbox/ack", data=orjson.dumps({"ids": ids}),
                                     headers=headers) as r:
            assert r.status == 200, await r.text()
        self.delivered += ids


def store_costs(dsn: str, rounds: int) -> dict[str, float]:
    """µs per message of the PostgreSQL store's egress work (the dedupe lookup, then mark + queue in one
    transaction) in batches of 1 and 200, and of a pull (lease, then ack), on an otherwise idle database."""
    store = StateStore(dsn=dsn, timeout_s=10.0)
    envelope_bytes = b"x" * 1500
    out: dict[str, float] = {}
    try:
        for batch in (1, 200):
            n = max(rounds // batch, 5) * batch
            started = time.perf_counter()
            for start in range(0, n, batch):
                items = [InboxDelivery("sh-platform", str(uuid.uuid4()), "medical.filing.request", SENDER,
                                       envelope_bytes, "sig", f"inbox:0:{start + i}") for i in range(batch)]
                store.seen([i.id for i in items])
                store.deliver_to_inbox(items)
            out[f"dedupe+inbox, batch {batch}"] = (time.perf_counter() - started) * 1e6 / n
        started, pulled = time.perf_counter(), 0
        while leased := store.lease_inbox("sh-platform", 500):
            store.ack_inbox("sh-platform", [i.id for i in leased])
            pulled += len(leased)
        out["lease+ack, 500 per pull"] = (time.perf_counter() - started) * 1e6 / max(pulled, 1)
    finally:
        store.close()
    return out


def report(runs: Sequence[dict[str, Any]], costs: dict[str, float]) -> None:
    print("\n== one SH replica vs several, same machine (PostgreSQL state) ==")
    for r in runs:
        cpu = ", ".join(f"{k} {v:,.0f}" for k, v in r["cpu_us"].items() if v is not None)
        others = f"{r['others']:.0%}" if r["others"] is not None else "?"
        print(f"{r['replicas']} replica(s): {r['rate']:,.0f} msg/s end to end ({r['messages']:,} in "
              f"{r['seconds']:.1f} s); CPU µs/msg: {cpu}; other processes took {others} of the machine; "
              f"lost {r['lost']}, duplicated {r['duplicated']}")
    if len(runs) > 1:
        print(f"ratio {runs[-1]['replicas']} replicas / 1: {runs[-1]['rate'] / runs[0]['rate']:.2f}")
    print("\n== the PostgreSQL store alone, µs per message ==")
    for k, v in costs.items():
        print(f"{k}: {v:,.0f} µs/msg (~{1e6 / v:,.0f} msg/s on one connection)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=10000)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--replicas", default="1,2", help="replica counts to compare, e.g. 1,2")
    p.add_argument("--store-rounds", type=int, default=4000, help="messages of the store micro-measure")
    p.add_argument("--json", help="also write the figures as JSON")
    return p.parse_args(argv)


async def main_async(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    print(f"machine: load {loadavg()}")
    broker = None
    bootstrap = env_bootstrap_servers()
    if bootstrap is None:
        broker = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port())
        broker.start()
        bootstrap = broker.bootstrap_servers
        print(describe(await warm_broker(bootstrap, broker.pid())))  # bench/README.md "Broker warm-up"
    pg_home = Path(tempfile.mkdtemp(prefix="yrdx-pg-bench-"))  # under /tmp: the postgres user must get in
    port = free_port()
    try:
        postgres("start", str(pg_home), str(port))
        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        broker_pid = broker.pid() if broker is not None else None
        runs = [await relay_run(int(n), args, bootstrap, broker_pid, admin, pg_home, work)
                for n in args.replicas.split(",")]
        costs = store_costs(create_database(admin, "store_costs"), args.store_rounds)
    finally:
        postgres("stop", str(pg_home))
        shutil.rmtree(pg_home, ignore_errors=True)
        if broker is not None:
            broker.stop()
    report(runs, costs)
    return {"runs": runs, "store_us_per_message": costs}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="yrdx-scale-") as work:
        figures = asyncio.run(main_async(args, Path(work)))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 1 if any(r["lost"] or r["duplicated"] for r in figures["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
