"""A freshly started Kafka JVM is not the broker a gateway meets in service: for its first minute or so its JIT
compiler threads compile the hot paths, and on this 2-core machine they took half of the broker's CPU in a
benchmark window (C2 compiler 202 of 443 ticks in an 8 s window started 15 s after the broker; still 165 of 315
after a 20 s warm-up; below 1 % of a core only after ~70 s of load). A benchmark that measures those minutes
charges the relay with the JVM's start-up and starves the gateways of CPU.

`warm_broker` drives the broker with raw aiokafka traffic shaped like the gateways' (small idempotent acks=all
produce requests with headers and zstd, a read_committed group consumer committing after every fetch) until its
compiler threads have been quiet for a few seconds, and says how long that took. `jit_cpu_seconds` lets a
benchmark print what the compiler still took inside its measured window, so a run that was not warm shows it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

CLK_TCK = os.sysconf("SC_CLK_TCK")
PARTITIONS = 4
PRODUCERS = 4
IN_FLIGHT = 8  # sends awaited at once per producer: many small produce requests, as single-message ingress makes
VALUE = b"x" * 700  # about a mean envelope
JIT_QUIET_SHARE = 0.02  # of a core: below it the broker's compiler is done with the paths being driven


def jit_cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of the JVM's compiler threads ("C1/C2 CompilerThre..." in /proc/<pid>/task/*/comm)."""
    if pid is None:
        return None
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            if "CompilerThre" not in (task / "comm").read_text():
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


@dataclass(frozen=True, slots=True)
class Warmed:
    seconds: float
    records: int
    compiler_s: float  # the compiler threads' CPU seconds during the warm-up
    quiet_share: float  # their share of a core over the last `quiet_s` seconds
    settled: bool  # False: `max_s` passed before they were quiet

    def as_dict(self) -> dict[str, float | int | bool]:
        return {"seconds": self.seconds, "records": self.records, "compiler_s": self.compiler_s,
                "quiet_share": self.quiet_share, "settled": self.settled}


async def warm_broker(bootstrap: str, pid: int | None, *, min_s: float = 10.0, max_s: float = 120.0,
                      quiet_s: float = 3.0, quiet_share: float = 0.02) -> Warmed:
    """Load the broker until its compiler threads used less than `quiet_share` of a core over the last `quiet_s`
    seconds (at least `min_s`, at most `max_s`). Without a local broker's pid there is nothing to watch: a short
    fixed warm-up of `min_s`."""
    topic = f"bench.warmup.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs={"compression.type": "producer"})])
    finally:
        await admin.close()
    producers = [AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0,
                                  compression_type="zstd") for _ in range(PRODUCERS)]
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"{topic}.group",
                                enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=20,
                                isolation_level="read_committed")
    for p in producers:
        await p.start()
    await consumer.start()
    stop = asyncio.Event()
    sent = 0

    async def produce(producer: AIOKafkaProducer, lane: int) -> None:
        nonlocal sent
        n = 0
        while not stop.is_set():
            futures = [await producer.send(topic, VALUE, key=f"{lane}-{n + i}".encode(),
                                           headers=[("yrdx-signature", b"s" * 96), ("yrdx-type", b"warmup")])
                       for i in range(IN_FLIGHT)]
            await asyncio.gather(*futures)
            n += IN_FLIGHT
            sent += IN_FLIGHT

    async def consume() -> None:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=200, max_records=500)
            if fetched:
                await consumer.commit({TopicPartition(tp.topic, tp.partition): msgs[-1].offset + 1
                                       for tp, msgs in fetched.items()})

    tasks = [asyncio.create_task(produce(p, i)) for i, p in enumerate(producers)]
    tasks.append(asyncio.create_task(consume()))
    started = time.monotonic()
    first = jit_cpu_seconds(pid)
    samples: list[tuple[float, float]] = []  # (monotonic, compiler CPU seconds)
    share, settled = float("nan"), False
    try:
        while True:
            await asyncio.sleep(0.5)
            now, jit = time.monotonic(), jit_cpu_seconds(pid)
            if any(t.done() for t in tasks):  # a failed task: its error, not a silent half warm-up
                for t in tasks:
                    if t.done():
                        t.result()
            if jit is None:
                settled = now - started >= min_s
                if settled:
                    break
                continue
            samples.append((now, jit))
            older = [s for s in samples if s[0] <= now - quiet_s]
            if older:
                then, before = older[-1]
                share = (jit - before) / (now - then)
                if now - started >= min_s and share < quiet_share:
                    settled = True
                    break
            if now - started >= max_s:
                break
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await consumer.stop()
        for p in producers:
            await p.stop()
    last = jit_cpu_seconds(pid)
    compiled = (last - first) if last is not None and first is not None else float("nan")
    return Warmed(time.monotonic() - started, sent, compiled, share, settled)


def describe(w: Warmed) -> str:
    state = "quiet" if w.settled else "still compiling"
    return (f"broker warm-up: {w.records:,} small produce requests' records in {w.seconds:.1f} s until its JIT "
            f"compiler threads were {state} ({w.quiet_share * 100:.1f} % of a core over the last seconds; "
            f"{w.compiler_s:.1f} CPU s compiling)")


@dataclass(frozen=True, slots=True)
class Settled:
    rounds: int
    seconds: float
    share: float  # the compiler's share of a core in the last round


async def until_jit_quiet(pid: int | None, max_s: float, one_round: Callable[[], Awaitable[object]]) -> Settled:
    """Run `one_round` (the benchmark's own traffic: the raw warm-up does not take the gateways' exact paths) until
    a round in which the broker's JIT compiler took less than JIT_QUIET_SHARE of a core, at most `max_s`."""
    began, rounds, share = time.monotonic(), 0, float("nan")
    while pid is not None and time.monotonic() - began < max_s:
        before, t = jit_cpu_seconds(pid), time.monotonic()
        await one_round()
        after, rounds = jit_cpu_seconds(pid), rounds + 1
        if before is None or after is None:
            break
        share = (after - before) / max(1e-9, time.monotonic() - t)
        if share < JIT_QUIET_SHARE:
            break
    return Settled(rounds, time.monotonic() - began, share)
