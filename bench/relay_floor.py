#!/usr/bin/env python3
"""The relay's transport floor: goals 2 and 3's hops with none of the gateways' work, to tell how much of the
single-message relay's cost and tail is this machine's transport alone.

    driver -POST-> front -Kafka (acks=all)-> back -> driver's long-poll pull

Two processes of raw aiohttp and aiokafka stand where the JS and SH gateways stand: `front` answers each POST
with 202 once the broker acknowledged its record (as JS's 202); `back` queues what it consumes and hands it to a
long-polling GET (as SH's pull inbox, without leases or acks). Producers and consumers are configured as the
gateways' (bench/counter_floor.py's: acks=all, idempotent, linger 2 ms, zstd). No JWT, schema, sealing,
signing, state, audit trail or receipts. The driver posts the bench's own single-message bodies through
bench/lean_http.py, as bench/relay.py's does:

- open loop: each offered rate for the given seconds, latency from each request's scheduled time to its pull
  (goal 3's measure);
- closed loop: `--concurrency` clients posting back to back (goal 2's measure), msg/s from the first post to
  the last pull.

Each prints the CPU per message of front, back, the broker and the driver, and how busy the machine was.

    python bench/relay_floor.py [--rates 1000,3000] [--seconds 10] [--messages 20000] [--concurrency 64]
    python bench/relay_floor.py front|back --bootstrap B --topic T --ready FILE   (its own processes)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # its own gateway, and its neighbours by name (imported or run)

from broker_warmup import describe, warm_broker  # noqa: E402 (beside this file)
from counter import broker  # noqa: E402 (its broker for a run: local, or KAFKA_BOOTSTRAP_SERVERS)
from counter_floor import PARTITIONS, _announce, _consumer, _port, _producer, _stop  # noqa: E402
from lean_http import LeanPool  # noqa: E402
from relay import RECEIVER, CpuWindow, message_variants, percentile  # noqa: E402

from gateway.schemas.registry import SchemaRegistry  # noqa: E402

SELF = Path(__file__).resolve()
PULL_MAX = 1000
PULL_WAIT_S = 1.0
STALL_S = 10.0  # no pull for this long after the posts: the rest is reported lost


# --- the two processes ---------------------------------------------------------------------------------------

async def _serve(app: web.Application, ready: Path) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    await asyncio.to_thread(_announce, ready, runner.addresses[0][1])
    await asyncio.Event().wait()


async def front(bootstrap: str, topic: str, ready: Path) -> None:
    producer = _producer(bootstrap)
    await producer.start()

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        msg_id = uuid.uuid4().hex
        await (await producer.send(topic, body, key=msg_id.encode()))  # acknowledged, as the gateway's 202 is
        return web.json_response({"id": msg_id, "status": "accepted"}, status=202)

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/v1/messages", post)
    await _serve(app, ready)


async def back(bootstrap: str, topic: str, ready: Path) -> None:
    consumer = await _consumer(bootstrap, topic)
    queued: collections.deque[dict[str, str]] = collections.deque()
    arrived = asyncio.Event()

    async def consume() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                queued.extend({"id": (r.key or b"").decode(), "body": (r.value or b"").decode()} for r in records)
            if queued:
                arrived.set()

    async def pull(request: web.Request) -> web.Response:
        limit, wait = int(request.query.get("max", "100")), float(request.query.get("wait", "0"))
        if not queued and wait > 0:
            arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), wait)
        out = [queued.popleft() for _ in range(min(limit, len(queued)))]
        return web.Response(body=orjson.dumps({"messages": out}), content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/inbox", pull)
    consuming = asyncio.create_task(consume())
    try:
        await _serve(app, ready)
    finally:
        consuming.cancel()


@dataclass
class Floor:
    front: int  # ports
    back: int
    pids: dict[str, int]  # "front" / "back" -> pid


@contextlib.asynccontextmanager
async def floor(work: Path, bootstrap: str) -> AsyncIterator[Floor]:
    """The two processes on a new topic with the gateways' inbox partitions."""
    topic = f"bench.relay-floor.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    ready = {role: work / f"relay-floor-{role}.port" for role in ("front", "back")}
    procs = _start(bootstrap, topic, ready)
    try:
        deadline = time.monotonic() + 60
        while (ports := [_port(p) for p in ready.values()]) and None in ports:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
                raise RuntimeError("the floor's processes did not start")
            await asyncio.sleep(0.1)
        yield Floor(int(ports[0] or 0), int(ports[1] or 0), {role: p.pid for role, p in procs.items()})
    finally:
        await asyncio.to_thread(_stop, procs)


def _start(bootstrap: str, topic: str, ready: dict[str, Path]) -> dict[str, subprocess.Popen[bytes]]:
    return {role: subprocess.Popen([sys.executable, str(SELF), role, "--bootstrap", bootstrap, "--topic", topic,
                                    "--ready", str(path)]) for role, path in ready.items()}


# --- the driver ------------------------------------------------------------------------------------------------

@dataclass
class Window:
    label: str
    offered: int | None = None  # msg/s of an open loop; None: the closed loop
    sent: int = 0
    posted: dict[str, float] = field(default_factory=dict)  # id (202) -> scheduled (open) or sent (closed) time
    latencies: list[float] = field(default_factory=list)  # posted's time -> pulled
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: float = 0.0  # first post -> last pull
    cpu_us: dict[str, float | None] = field(default_factory=dict)  # process -> CPU µs per message
    machine_busy: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


class FloorDriver:
    def __init__(self, fl: Floor, session: aiohttp.ClientSession, pool: LeanPool) -> None:
        self.fl, self.session, self.pool = fl, session, pool
        self.pulled: dict[str, float] = {}  # id -> when the driver's pull got it
        self._arrived = asyncio.Event()

    async def pulling(self) -> None:
        url = f"http://127.0.0.1:{self.fl.back}/v1/inbox?max={PULL_MAX}&wait={PULL_WAIT_S:g}"
        while True:
            async with self.session.get(url) as resp:
                messages = orjson.loads(await resp.read())["messages"]
            now = time.monotonic()
            for m in messages:
                self.pulled.setdefault(m["id"], now)
            if messages:
                self._arrived.set()

    async def post(self, body: bytes, since: float, w: Window) -> None:
        """POST `body`; its latency runs from `since` to its pull."""
        try:
            status, raw = await self.pool.post("/v1/messages", body, {"Content-Type": "application/json"})
        except (ConnectionError, TimeoutError) as e:
            w.errors[type(e).__name__] += 1
            return
        if status != 202:
            w.errors[f"HTTP {status}"] += 1
            return
        w.posted[orjson.loads(raw)["id"]] = since

    async def open_loop(self, bodies: Sequence[bytes], rate: int, seconds: float,
                        pids: dict[str, int | None]) -> Window:
        """Request i started at t0 + i/rate by a scheduler loop, as its own task (bench/relay.py's schedule)."""
        w = Window(f"{rate}/s offered", rate)

        async def schedule() -> None:
            tasks: set[asyncio.Task[None]] = set()
            t0 = time.monotonic() + 0.05
            for i in range(int(rate * seconds)):
                at = t0 + i / rate
                if (delay := at - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                w.sent += 1
                task = asyncio.create_task(self.post(bodies[i % len(bodies)], at, w))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)

        await self._measured(w, pids, schedule())
        return w

    async def closed_loop(self, bodies: Sequence[bytes], messages: int, concurrency: int,
                          pids: dict[str, int | None]) -> Window:
        """`concurrency` clients posting back to back, as goal 2's (each waits for its 202, not its pull)."""
        w = Window(f"closed loop, {concurrency} clients")
        numbers = iter(range(messages))

        async def client() -> None:
            for i in numbers:  # shared: each message is taken once
                w.sent += 1
                await self.post(bodies[i % len(bodies)], time.monotonic(), w)

        await self._measured(w, pids, asyncio.gather(*(client() for _ in range(concurrency))))
        return w

    async def _measured(self, w: Window, pids: dict[str, int | None], posting: Awaitable[object]) -> None:
        """Run `posting`, then wait until every accepted message was pulled (or none came for STALL_S)."""
        cpu = CpuWindow(pids)
        cpu.start()
        started = time.monotonic()
        await posting
        last_progress, seen = time.monotonic(), -1
        while (missing := [i for i in w.posted if i not in self.pulled]):
            if len(missing) != seen:
                last_progress, seen = time.monotonic(), len(missing)
            elif time.monotonic() - last_progress > STALL_S:
                w.errors["never pulled"] += len(missing)
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), 0.5)
        done = [self.pulled[i] for i in w.posted if i in self.pulled]
        w.seconds = max(done, default=started) - started
        w.latencies = [self.pulled[i] - since for i, since in w.posted.items() if i in self.pulled]
        cpu.stop()
        w.cpu_us = {k: None if v is None else v * 1e6 / max(1, len(w.latencies)) for k, v in cpu.used.items()}
        w.machine_busy = cpu.machine_busy / cpu.machine_total if cpu.machine_total else 0.0


def single_bodies(count: int = 64) -> list[bytes]:
    """The bench's single-message request bodies (bench/relay.py's variants)."""
    variants = message_variants(SchemaRegistry.load())
    return [orjson.dumps({"type": t, "to": RECEIVER, "payload": p, **ctx})
            for t, p, ctx in (variants[i % len(variants)] for i in range(count))]


def report(windows: Sequence[Window]) -> list[str]:
    lines = [f"{'window':>26} {'delivered':>9} {'msg/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8}  "
             "CPU µs/msg front / back / kafka / driver, machine busy"]
    for w in windows:
        cpu = " / ".join("-" if w.cpu_us.get(k) is None else f"{w.cpu_us[k]:,.0f}"
                         for k in ("front", "back", "kafka_jvm", "driver"))
        errors = "" if not w.errors else "  errors: " + ", ".join(f"{k} {v}" for k, v in sorted(w.errors.items()))
        lines.append(f"{w.label:>26} {len(w.latencies):>9,} {w.rate:>7,.0f} {percentile(w.latencies, 50) * 1e3:>7.1f} "
                     f"{percentile(w.latencies, 99) * 1e3:>7.1f} {percentile(w.latencies, 99.9) * 1e3:>8.1f}  "
                     f"{cpu}, {w.machine_busy:.0%}{errors}")
    return lines


def figures(w: Window) -> dict[str, object]:
    """One window for --json (bench/goals.py prints them beside goals 2 and 3)."""
    return {"label": w.label, "offered": w.offered, "sent": w.sent, "delivered": len(w.latencies),
            "msg_per_s": w.rate, "errors": dict(w.errors), "machine_busy": w.machine_busy,
            "cpu_us_per_msg": w.cpu_us,
            "latency_ms": {f"p{q:g}": percentile(w.latencies, q) * 1e3 for q in (50, 99, 99.9)}}


async def measure(args: argparse.Namespace) -> int:
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    bodies = single_bodies()
    with tempfile.TemporaryDirectory(prefix="yrdx-relay-floor-") as tmp:
        work = Path(tmp)
        async with broker(work, args.kafka_pid) as (bootstrap, kafka_pid):
            if kafka_pid is not None and args.kafka_pid is None and args.broker_warmup > 0:
                print(describe(await warm_broker(bootstrap, kafka_pid, max_s=args.broker_warmup)))
            async with floor(work, bootstrap) as fl, aiohttp.ClientSession() as session:
                pool = LeanPool("127.0.0.1", fl.front, limit=0)
                driver = FloorDriver(fl, session, pool)
                pulling = asyncio.create_task(driver.pulling())
                pids: dict[str, int | None] = {**fl.pids, "driver": os.getpid(), "kafka_jvm": kafka_pid}
                try:
                    await driver.open_loop(bodies, 200, 5.0, {})  # warm the two processes and the client
                    windows = [await driver.open_loop(bodies, rate, args.seconds, pids) for rate in rates]
                    windows.append(await driver.closed_loop(bodies, args.messages, args.concurrency, pids))
                finally:
                    pulling.cancel()
                    await pool.close()
    print("the relay's transport floor (bench/relay_floor.py: POST -> Kafka acks=all -> pull, raw aiohttp and "
          "aiokafka, none of the gateways' work):")
    print("\n".join(report(windows)))
    if args.json:
        args.json.write_text(orjson.dumps({"windows": [figures(w) for w in windows]},
                                          option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if all(not w.errors and len(w.latencies) == w.sent for w in windows) else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", choices=("front", "back"), help="run one of the floor's processes")
    parser.add_argument("--bootstrap")
    parser.add_argument("--topic")
    parser.add_argument("--ready", type=Path)
    parser.add_argument("--rates", default="1000,3000", help="open-loop offered rates, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="per offered rate")
    parser.add_argument("--messages", type=int, default=20_000, help="closed loop")
    parser.add_argument("--concurrency", type=int, default=64, help="closed loop's clients")
    parser.add_argument("--broker-warmup", type=float, default=60.0,
                        help="seconds at most to warm a broker this run starts (0: none)")
    parser.add_argument("--kafka-pid", type=int, help="the pid of KAFKA_BOOTSTRAP_SERVERS's broker, for its CPU")
    parser.add_argument("--json", type=Path, help="also write the windows' figures to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "front":
        asyncio.run(front(args.bootstrap, args.topic, args.ready))
        return 0
    if args.role == "back":
        asyncio.run(back(args.bootstrap, args.topic, args.ready))
        return 0
    return asyncio.run(measure(args))


if __name__ == "__main__":
    sys.exit(main())
