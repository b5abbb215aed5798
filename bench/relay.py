#!/usr/bin/env python3
"""End-to-end relay benchmark: N mixed messages JS -> SH through two gateway processes over a real Kafka.

Prints (and with ``--json`` writes) in one run:
  * end to end: msg/s, latency p50/p99 (batch POST started -> seen in SH's pull inbox), created_at -> pull;
  * CPU microseconds per message of the JS gateway, the SH gateway, the Kafka JVM and this driver, from
    utime+stime in /proc/<pid>/stat before and after the measured window, with the load context;
  * the cost of the primitives on a ~2 KB settlement envelope (orjson parse, schema validation, sign, verify,
    and per message of a batch signature);
  * a baseline on the same broker: raw aiokafka produce -> consume of the same envelope bytes;
  * the ratios between them.
It is a benchmark, not a test: the only failure is a lost, duplicated or unexpected message (exit 1).

    .venv/bin/python bench/relay.py [--messages 20000] [--batch 200] [--concurrency 4] [--warmup 1000]
                                    [--json FILE] [--profile DIR [--profiler py-spy|cprofile]]
    .venv/bin/python bench/relay.py --open-loop 500,1000,2000,3000 [--seconds 10]

``--open-loop`` offers single-message requests at fixed rates instead (each request sent on schedule, latency
from its scheduled time: coordinated omission avoided) and prints p50/p99/p99.9 POST->202 and POST->delivered.

See bench/README.md for what each figure means and how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from broker_warmup import describe, jit_cpu_seconds, until_jit_quiet, warm_broker  # beside this file
from lean_http import LeanPool  # beside this file

from gateway.audit.model import GENESIS, record_hash
from gateway.crypto.jws import Signer, Verifier, parse_detached, verify_detached
from gateway.crypto.keyfiles import load_certificate, load_encryption_key, load_encryption_pub, load_private_key
from gateway.crypto.keys import public_key_of
from gateway.crypto.seal import Opener, Sealer
from gateway.dev.exchange import BUSINESS_TYPES, SEALED_BY_DEFAULT, Exchange, edit_config, init_exchange, platform_id
from gateway.dev.local_kafka import LocalKafka, env_bootstrap_servers, free_port
from gateway.files.claims import names_a_file
from gateway.http.access_tokens import AccessTokenHolder
from gateway.http.auth import TokenMinter
from gateway.relay.purposes import UsePolicy
from gateway.schemas.registry import SchemaRegistry
from gateway.wire import envelope, headers

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
SENDER, RECEIVER = "JS", "SH"
# Who asks, for the types that read personal data or licences (README "Government services across regions").
BENCH_OPERATOR = {"id": "JS-BENCH-0001", "role": "system", "department": "JS-BENCH"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PULL_MAX = 500
PULL_WAIT_S = 1.0
SHARED_CONVERSATIONS = 64
SETTLEMENT_TARGET_BYTES = 2048
GATEWAY_FETCH_MAX_WAIT_MS = 20  # the gateways' default kafka.fetch_max_wait_ms, used by the baseline consumer


# ---------------------------------------------------------------------------------------------------------
# small measurement helpers


def audit_mode(f: dict[str, Any]) -> str:
    """How the run's gateways kept the audit trail."""
    if not f["audit"]:
        return "off"
    return "on (batch records)" if f.get("audit_batch_records", True) else "on (one record per message)"

def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process from /proc/<pid>/stat, in seconds (None if it is gone)."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user/nice
    return (total - idle) / CLK_TCK, total / CLK_TCK


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


STRAY_MARKERS = {"kafka.Kafka": "Kafka JVM", "gateway.cli serve": "yrdx gateway"}


def strays(own: set[int]) -> list[str]:
    """Kafka brokers and yrdx gateways already running on this machine, other than `own` (a broker passed with
    --kafka-pid): a leftover of a killed run takes CPU and memory from the window and skews every figure."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in own or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone, or not ours to read
        found += [f"{what} pid {entry.name}" for marker, what in STRAY_MARKERS.items() if marker in cmdline]
    return sorted(found)


def idle_penalty(rounds: int = 200, gap_s: float = 0.01) -> float:
    """How much longer the same small piece of Python work (~80 us) takes right after a 10 ms sleep than back to
    back, medians of `rounds` each: on this VM caches and clocks go cold while a process sleeps, so a process
    woken by a lone request pays more for the same code. That is why the CPU per message rises as an open
    loop's rate falls, beyond the batching that a lower rate loses."""
    doc = {"items": [{"id": f"m{i}", "n": i, "text": "x" * 20} for i in range(10)]}

    def work() -> float:
        started = time.perf_counter()
        for _ in range(10):
            orjson.loads(orjson.dumps(doc))
        return time.perf_counter() - started

    warm = statistics.median(work() for _ in range(rounds))
    cold: list[float] = []
    for _ in range(rounds):
        time.sleep(gap_s)
        cold.append(work())
    return statistics.median(cold) / warm


def print_machine(m: dict[str, Any]) -> None:
    print(f"machine: {m['nproc']} CPUs ({m['usable_cpus']} usable), Python {m['python']}, loadavg "
          f"{m['loadavg_start']} at start, {m['loadavg_end']} at end")
    if m.get("idle_penalty") is not None:
        print(f"  the same Python work takes {m['idle_penalty']:.1f}x as long right after a 10 ms sleep as back to "
              "back here (cold after idle: a lone request costs more)")
    if m.get("strays"):
        print(f"WARNING: already running when this run started, so every figure is suspect: {', '.join(m['strays'])}")


class CpuWindow:
    """CPU seconds used by named processes (and by the whole machine) between start() and stop()."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self._before: dict[str, float | None] = {}
        self._machine: tuple[float, float] = (0.0, 0.0)
        self.used: dict[str, float | None] = {}
        self.machine_busy = 0.0
        self.machine_total = 0.0
        self._jit_before: float | None = None
        self.kafka_jit: float | None = None  # of kafka_jvm's CPU, what its JIT compiler threads took

    def start(self) -> None:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._jit_before = jit_cpu_seconds(self.pids.get("kafka_jvm"))
        self._machine = machine_cpu()

    def stop(self) -> None:
        busy, total = machine_cpu()
        self.machine_busy, self.machine_total = busy - self._machine[0], total - self._machine[1]
        for name, pid in self.pids.items():
            before, after = self._before.get(name), cpu_seconds(pid)
            self.used[name] = None if before is None or after is None else after - before
        jit = jit_cpu_seconds(self.pids.get("kafka_jvm"))
        self.kafka_jit = None if jit is None or self._jit_before is None else jit - self._jit_before


def peak_rss_mib(pid: int | None) -> float | None:
    """The process's resident-set high-water mark (VmHWM) so far, in MiB."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def counter(metrics: dict[str, float], name: str) -> float:
    """The sum of a Prometheus counter over its labels."""
    return sum(v for k, v in metrics.items() if k.startswith(name + "{") or k == name)


def group_sizes(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """How many messages travelled together in the window, from the gateways' own histograms (after - before):
    per ingress signature at JS (the single requests' group commit) and per pull-inbox delivery at SH (one
    consumed batch). Small groups are why a single request costs several times a batch member. With them, the
    means of JS's request to 202, of its group publish and of SH's inbox delivery: where a 202 waits."""
    def mean(region: str, name: str, labels: str = "") -> float | None:
        total = after[region].get(f"{name}_sum{labels}", 0.0) - before[region].get(f"{name}_sum{labels}", 0.0)
        count = after[region].get(f"{name}_count{labels}", 0.0) - before[region].get(f"{name}_count{labels}", 0.0)
        return total / count if count else None

    def delivered(m: dict[str, float]) -> float:
        return sum(v for k, v in m.items() if k.startswith("yrdx_messages_total{")
                   and 'direction="in"' in k and 'outcome="delivered"' in k)

    deliveries = (after[RECEIVER].get('yrdx_stage_seconds_count{stage="deliver"}', 0.0)
                  - before[RECEIVER].get('yrdx_stage_seconds_count{stage="deliver"}', 0.0))
    delivered_n = delivered(after[RECEIVER]) - delivered(before[RECEIVER])

    def stage_ms(region: str, stage: str) -> float | None:
        got = mean(region, "yrdx_stage_seconds", f'{{stage="{stage}"}}')
        return None if got is None else got * 1000

    ingress = mean(SENDER, "yrdx_ingress_request_seconds")
    return {
        "js_messages_per_signature": mean(SENDER, "yrdx_signature_batch_messages"),
        "sh_messages_per_delivery": delivered_n / deliveries if deliveries else None,
        # a 202's wait: its group's publish (to the broker's ack of it and its audit segment) within the whole
        "js_ingress_ms": None if ingress is None else ingress * 1000,
        "js_publish_ms": stage_ms(SENDER, "publish"),
        "sh_deliver_ms": stage_ms(RECEIVER, "deliver"),
    }


def print_suite(f: dict[str, Any]) -> None:
    print(f"suite: {f['alg']}, kafka.compression: {f['compression']}, kafka.linger_ms: "
          f"{f.get('linger_ms', 'config default')}, audit trail {audit_mode(f)}")


def print_delivery_check(d: dict[str, Any]) -> None:
    """The exactly-once verdict of a run: what was accepted, delivered once, lost, duplicated or unexpected."""
    verdict = "OK" if not (d["lost"] or d["duplicated"] or d["unexpected"]) else "FAILED"
    print(f"-- delivery check: {verdict}: {d['accepted']:,} accepted (warmup included), "
          f"{d['delivered_once']:,} delivered exactly once, {d['lost']} lost, {d['duplicated']} duplicated, "
          f"{d['unexpected']} unexpected")
    for key in ("lost_sample", "duplicated_sample", "unexpected_sample"):
        if d[key]:
            print(f"   {key}: {', '.join(d[key])}")


def us_per_msg(seconds: float | None, count: int) -> float | None:
    return None if seconds is None or count == 0 else seconds * 1e6 / count


# ---------------------------------------------------------------------------------------------------------
# processes: the broker, the two gateways, an optional profiler


class GatewayProcess:
    """`yrdx serve` as a separate process (as operators run it), optionally under cProfile."""

    def __init__(self, region: str, config: Path, work: Path, cprofile_out: Path | None = None) -> None:
        self.region = region
        self.config = config
        self.log_path = work / f"{config.stem}.log"
        self.ready = work / f"{config.stem}.port"
        self.cprofile_out = cprofile_out
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def launch(self) -> None:
        self.ready.unlink(missing_ok=True)
        prefix = ["-m", "cProfile", "-o", str(self.cprofile_out)] if self.cprofile_out else []
        cmd = [sys.executable, *prefix, "-m", "gateway.cli", "serve", "--config", str(self.config),
               "--ready-file", str(self.ready), "--log-level", "WARNING"]
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_ready(self, timeout: float = 90.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self.ready.exists() or not self.ready.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                what = "exited" if self.proc.poll() is not None else "did not start"
                raise RuntimeError(f"gateway {self.region} {what}:\n{self.log_tail()}")
            time.sleep(0.05)
        self.port = int(self.ready.read_text())

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def log_summary(self, samples: int = 5) -> dict[str, Any]:
        """Counts of the gateway's JSON log lines by level, and the first distinct warning/error messages."""
        levels: dict[str, int] = {}
        messages: list[str] = []
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                doc = orjson.loads(line)
                level, msg = str(doc.get("level", "?")), str(doc.get("msg", ""))
                if doc.get("error"):
                    msg += f" ({doc['error']})"
            except (orjson.JSONDecodeError, AttributeError):
                level, msg = "text", line
            levels[level] = levels.get(level, 0) + 1
            if level not in ("debug", "info") and msg[:200] not in messages and len(messages) < samples:
                messages.append(msg[:200])
        return {"levels": levels, "samples": messages}

    def stop(self, timeout: float = 40.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # graceful: drains the batch in hand (and lets cProfile write its file)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class PySpy:
    """`py-spy record --format raw` attached to one process until stop() (SIGINT makes it write the file)."""

    def __init__(self, exe: str, pid: int, out: Path, rate: int = 200) -> None:
        self.out = out
        self.rate = rate
        self._log = out.with_suffix(".log").open("wb")
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--nonblocking",
             "-o", str(out)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


async def attach_spies(args: argparse.Namespace, gateways: Sequence[GatewayProcess], label: str = "") -> list[PySpy]:
    """py-spy on each gateway into `<region><label>.pyspy.txt` (none without --profile py-spy), attached before
    the window opens."""
    if args.py_spy is None:
        return []
    spies = [PySpy(args.py_spy, g.pid or 0, args.profile / f"{g.region.lower()}{label}.pyspy.txt") for g in gateways]
    await asyncio.sleep(1.0)
    return spies


# ---------------------------------------------------------------------------------------------------------
# the message mix


def settlement_2k(registry: SchemaRegistry) -> dict[str, Any]:
    """A valid `medical.settlement.result` payload padded with zero fund lines to a ~2 KB envelope."""
    payload: dict[str, Any] = registry.examples("medical.settlement.result")[0]
    filler = {"fund_pay_type": "999999", "fund_pay_type_name": "其他基金支付 (benchmark padding line)",
              "inscp_scp_amt": "0.00", "fund_payamt": "0.00", "setl_proc_info": ""}
    while len(envelope.build(msg_type="medical.settlement.result", schema_version=1, sender=SENDER,
                             recipient=RECEIVER, payload=payload)[1]) < SETTLEMENT_TARGET_BYTES:
        payload["setldetail"].append(dict(filler))
    errors = registry.validate("medical.settlement.result", 1, payload)
    if errors:
        raise RuntimeError(f"the padded settlement example is invalid: {errors}")
    return payload


def message_variants(registry: SchemaRegistry) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every business type JS may send SH with each of its schema examples, interleaved by type, plus the
    ~2 KB settlement of the primitives; with the use context (operator, use_cause) where the type needs one.
    Examples that name a claim-checked file are left out: the bench uploads no files (bench/files.py does)."""
    examples = {t: registry.examples(t) for t in BUSINESS_TYPES}
    uses = UsePolicy(registry)
    context = {t: {"operator": BENCH_OPERATOR, "use_cause": min(uses.allowed(t))} if uses.allowed(t) else {}
               for t in BUSINESS_TYPES}
    variants = [
        (t, examples[t][i], context[t]) for i in range(max(len(e) for e in examples.values()))
        for t in BUSINESS_TYPES if i < len(examples[t]) and not names_a_file(registry.schema(t), examples[t][i])
    ]
    variants.append(("medical.settlement.result", settlement_2k(registry), {}))
    return variants


def build_batches(variants: Sequence[tuple[str, dict[str, Any], dict[str, Any]]], count: int, batch: int, run: str,
                  start: int) -> list[bytes]:
    """`count` messages as serialized POST /v1/messages/batch bodies of at most `batch` items. A third take
    a fresh correlation id, a third one of a few shared conversations, a third none (the id is used)."""
    items: list[dict[str, Any]] = []
    for n in range(start, start + count):
        msg_type, payload, context = variants[n % len(variants)]
        item: dict[str, Any] = {"type": msg_type, "to": RECEIVER, "payload": payload, **context}
        if n % 3 == 1:
            item["correlation_id"] = str(uuid.uuid4())
        elif n % 3 == 2:
            item["correlation_id"] = f"bench-{run}-conversation-{n % SHARED_CONVERSATIONS}"
        items.append(item)
    if batch == 0:  # --single: one message per POST /v1/messages, as most platforms send
        return [orjson.dumps(item) for item in items]
    return [orjson.dumps({"messages": items[i:i + batch]}) for i in range(0, len(items), batch)]


# ---------------------------------------------------------------------------------------------------------
# the driver: concurrent batch POSTs to JS, concurrent pulls from SH


@dataclass
class Ledger:
    """Every id accepted by JS and every delivery seen in SH's inbox, across all phases."""

    accepted: set[str] = field(default_factory=set)
    pulled: dict[str, int] = field(default_factory=dict)  # id -> times seen in a pull response
    duplicates: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # pulled but never accepted by us
    envelopes: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)  # id -> (envelope, sig)


@dataclass
class Phase:
    name: str
    bodies: list[bytes]
    posted_at: dict[str, float] = field(default_factory=dict)  # id -> perf_counter when its POST started
    seen_at: dict[str, float] = field(default_factory=dict)  # id -> perf_counter when first pulled
    transit: list[float] = field(default_factory=list)  # wall clock: pull - envelope created_at
    request_latency: list[float] = field(default_factory=list)  # batch POST round trips
    rejected: dict[str, int] = field(default_factory=dict)  # problem code -> count (ingress refusals)
    request_errors: list[str] = field(default_factory=list)
    started: float = 0.0
    sent_done: float = 0.0
    delivered_done: float = 0.0

    @property
    def missing(self) -> set[str]:
        return set(self.posted_at) - set(self.seen_at)


@contextlib.asynccontextmanager
async def _closing(pool: LeanPool | None) -> AsyncIterator[None]:
    try:
        yield
    finally:
        if pool is not None:
            await pool.close()


class Driver:
    def __init__(self, session: aiohttp.ClientSession, js: GatewayProcess, sh: GatewayProcess, ex: Exchange,
                 concurrency: int, single: bool = False, lean: LeanPool | None = None, auth: str = "assertion",
                 ) -> None:
        """`lean`: JS's posts go through bench/lean_http.py instead of `session` (the driver's CPU per request
        is taken from the gateways on these two cores); the pulls from SH always use `session`. `auth`: JS's
        posts carry a fresh single-use assertion each (`assertion`) or one access token (`access`, traded at
        POST /v1/token before each window, as an OAuth client reuses its token)."""
        self.session = session
        self.lean = lean
        self.js, self.sh = js, sh
        self.concurrency = concurrency
        self.single = single
        self.js_minter = TokenMinter(platform_id(SENDER), ex.pki.platform_key(SENDER), SENDER)
        self.sh_minter = TokenMinter(platform_id(RECEIVER), ex.pki.platform_key(RECEIVER), RECEIVER)
        self.metrics_token = (ex.dir / "secrets" / "metrics.token").read_text().strip()
        # Tokens for JS minted before a window opens, as the bodies are serialized before it: the driver stands
        # for many platforms, and its signing would otherwise take CPU from the gateways on these two cores.
        self._js_tokens: list[str] = []
        self.auth = auth
        self._js_access = AccessTokenHolder(self.js_minter.header, self._trade)
        self._js_bearer: dict[str, str] | None = None  # the access token's header, for the window
        self.ledger = Ledger()
        self._phase: Phase | None = None
        self._acks: set[asyncio.Task[None]] = set()

    # --- sending --------------------------------------------------------------------------------------

    async def _trade(self, headers: dict[str, str]) -> tuple[int, bytes]:
        async with self.session.post(self.js.url + "/v1/token", headers=headers) as resp:
            return resp.status, await resp.read()

    async def premint(self, count: int) -> None:
        """JS's tokens for a window of `count` posts, before it opens: `count` single-use assertions (each lives
        300 s: right before the window), or the access token (traded again when it nears its expiry)."""
        if self.auth == "access":
            self._js_bearer = await self._js_access.header()
        else:
            self._js_tokens = [self.js_minter.mint() for _ in range(count)]

    def js_headers(self) -> dict[str, str]:
        if self._js_bearer is not None:
            return {"Content-Type": "application/json", **self._js_bearer}
        token = self._js_tokens.pop() if self._js_tokens else self.js_minter.mint()
        return {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    async def _sender(self, phase: Phase, batches: Iterator[bytes]) -> None:
        path = "/v1/messages" if self.single else "/v1/messages/batch"
        for body in batches:  # the iterator is shared by the workers: each batch is taken once
            headers = self.js_headers()
            started = time.perf_counter()
            try:
                if self.lean is not None:
                    status, raw = await self.lean.post(path, body, headers)
                else:
                    async with self.session.post(self.js.url + path, data=body, headers=headers) as resp:
                        raw = await resp.read()
                        status = resp.status
            except (aiohttp.ClientError, ConnectionError) as e:  # ConnectionError: the lean client's
                phase.request_errors.append(f"{type(e).__name__}: {e}")
                continue
            phase.request_latency.append(time.perf_counter() - started)
            if self.single and status == 202:
                msg_id = orjson.loads(raw)["id"]
                phase.posted_at[msg_id] = started
                self.ledger.accepted.add(msg_id)
                continue
            if status != 207:
                phase.request_errors.append(f"HTTP {status}: {raw[:300]!r}")
                continue
            for result in orjson.loads(raw)["results"]:
                if result.get("status") == 202:
                    phase.posted_at[result["id"]] = started
                    self.ledger.accepted.add(result["id"])
                else:
                    code = str(result.get("code", result.get("status")))
                    phase.rejected[code] = phase.rejected.get(code, 0) + 1

    # --- receiving ------------------------------------------------------------------------------------

    async def pull_once(self, wait: float = PULL_WAIT_S) -> int:
        # What a pull lost to a closed connection had leased comes back after its lease.
        status, raw = await self._to_sh("GET", f"/v1/inbox?max={PULL_MAX}&wait={wait:g}")
        if status != 200:
            raise RuntimeError(f"pull failed: HTTP {status}: {raw[:300]!r}")
        now, wall = time.perf_counter(), time.time()
        messages = orjson.loads(raw)["messages"]
        ledger, phase = self.ledger, self._phase
        for m in messages:
            msg_id = m["id"]
            times = ledger.pulled.get(msg_id, 0)
            ledger.pulled[msg_id] = times + 1
            if times:
                ledger.duplicates.append(msg_id)
                continue
            if msg_id not in ledger.accepted:  # its 207 not read yet, or not ours at all: checked at the end
                ledger.unexpected.append(msg_id)
            env = m["envelope"]
            ledger.envelopes[msg_id] = (env, m["signature"])
            if phase is not None:
                phase.seen_at[msg_id] = now
                with contextlib.suppress(KeyError, ValueError):
                    phase.transit.append(wall - envelope.parse_timestamp(env["created_at"]).timestamp())
        if messages:  # acknowledged in the background: the next pull does not wait for it
            task = asyncio.create_task(self._ack([m["id"] for m in messages]))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)
        return len(messages)

    async def _ack(self, ids: list[str]) -> None:
        # Acking twice is harmless; not acking at all would bring the messages back as duplicates.
        status, body = await self._to_sh("POST", "/v1/inbox/ack", orjson.dumps({"ids": ids}))
        if status != 200:
            raise RuntimeError(f"ack failed: HTTP {status}: {body[:300]!r}")

    async def _to_sh(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One request to SH's gateway with a fresh token, sent again on a fresh connection when the kept-alive
        one had just been closed by the server (up to RECONNECTS times)."""
        for attempt in range(RECONNECTS + 1):
            headers = {"Content-Type": "application/json", **self.sh_minter.header()}
            try:
                async with self.session.request(method, self.sh.url + path, data=body, headers=headers) as resp:
                    return resp.status, await resp.read()
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if attempt == RECONNECTS:
                    raise
        raise AssertionError("unreachable")

    async def _puller(self, phase: Phase, senders_done: asyncio.Event, stall_s: float) -> None:
        last_progress = time.monotonic()
        while True:
            if await self.pull_once():
                last_progress = time.monotonic()
            if senders_done.is_set():
                if not phase.missing:  # every id accepted in this phase has been pulled
                    return
                if time.monotonic() - last_progress > stall_s:
                    return  # the rest is lost: reported by the caller

    async def run_phase(self, phase: Phase, stall_s: float) -> None:
        self._phase = phase
        senders_done = asyncio.Event()
        puller = asyncio.create_task(self._puller(phase, senders_done, stall_s))
        batches = iter(phase.bodies)
        phase.started = time.perf_counter()
        await asyncio.gather(*(self._sender(phase, batches) for _ in range(self.concurrency)))
        phase.sent_done = time.perf_counter()
        senders_done.set()
        await puller
        phase.delivered_done = max(phase.seen_at.values(), default=phase.sent_done)
        await self.settle_acks()

    async def settle_acks(self) -> None:
        if self._acks:
            await asyncio.gather(*self._acks)

    async def drain(self, seconds: float) -> None:
        """Keep pulling for a while after the run: a late second copy would show up here."""
        self._phase = None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.pull_once(wait=min(1.0, max(0.1, deadline - time.monotonic())))
        await self.settle_acks()

    # --- the gateways' own counters ------------------------------------------------------------------

    async def metrics(self, gw: GatewayProcess) -> dict[str, float]:
        """`name{labels}` -> value from GET /metrics (the operators' bearer token)."""
        async with self.session.get(gw.url + "/metrics",
                                    headers={"Authorization": f"Bearer {self.metrics_token}"}) as resp:
            text = await resp.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    async def both_metrics(self) -> dict[str, dict[str, float]]:
        """Both gateways' counters, by region: read before and after a window for `group_sizes`."""
        return {self.js.region: await self.metrics(self.js), self.sh.region: await self.metrics(self.sh)}

    async def receipts_at_origin(self) -> int:
        m = await self.metrics(self.js)
        return int(counter(m, "yrdx_receipts_received_total"))

    async def wait_receipts(self, expected: int, stall_s: float) -> int:
        """Wait until JS has recorded `expected` receipts (or they stop coming); returns how many it has."""
        last, last_progress = -1, time.monotonic()
        while True:
            got = await self.receipts_at_origin()
            if got >= expected:
                return got
            if got != last:
                last, last_progress = got, time.monotonic()
            elif time.monotonic() - last_progress > stall_s:
                return got
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------
# the baseline: raw aiokafka produce -> consume of the same envelope bytes on the same broker


@dataclass
class BaselineResult:
    count: int
    seconds: float
    latencies: list[float]
    cpu: dict[str, float | None]
    topic: str


async def wait_for_leaders(producer: AIOKafkaProducer, topic: str, partitions: int) -> None:
    """Until every partition of a new topic has a leader (30 s at most), so that the consumer does not start
    on a half-made topic."""
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        await producer.client.force_metadata_update()
        cluster = producer.client.cluster
        leaders = [cluster.leader_for_partition(TopicPartition(topic, p)) for p in range(partitions)]
        if all(leader is not None and leader >= 0 for leader in leaders):
            return
        await asyncio.sleep(0.1)


async def baseline(bootstrap: str, records: Sequence[tuple[bytes, bytes, str]], warmup: int,
                   pids: dict[str, int | None]) -> BaselineResult:
    """Produce every record (value, key, signature) to a fresh 4-partition topic with one idempotent
    producer (acks=all, linger 5 ms, batched sends: no per-message wait) while one consumer reads them."""
    topic = f"bench.baseline.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                                max_batch_size=256 * 1024)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False, fetch_max_wait_ms=GATEWAY_FETCH_MAX_WAIT_MS, max_poll_records=PULL_MAX,
        isolation_level="read_committed",
    )
    await producer.start()
    await wait_for_leaders(producer, topic, 4)
    await consumer.start()
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []

    async def produce(batch: Sequence[tuple[bytes, bytes, str]]) -> None:
        futures = []
        for value, key, sig in batch:
            sent_at[value] = time.perf_counter()
            futures.append(await producer.send(topic, value, key=key, headers=[(headers.SIGNATURE, sig.encode())]))
        await asyncio.gather(*futures)

    async def consume(expected: int, record: bool) -> None:
        got = 0
        while got < expected:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=PULL_MAX)
            now = time.perf_counter()
            for msgs in fetched.values():
                got += len(msgs)
                if record:
                    latencies.extend(now - sent_at[m.value] for m in msgs)

    try:
        warm, measured = records[:warmup], records[warmup:]
        await asyncio.gather(produce(warm), consume(len(warm), record=False))
        window = CpuWindow(pids)
        window.start()
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(produce(measured), consume(len(measured), record=True)), 300)
        seconds = time.perf_counter() - started
        window.stop()
    finally:
        await consumer.stop()
        await producer.stop()
    return BaselineResult(len(measured), seconds, latencies, window.used, topic)


# ---------------------------------------------------------------------------------------------------------
# the primitives, timed in this process (best of 5)


def best_us(fn: Callable[[], object], repeat: int = 5) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()  # enough calls for >= 0.2 s
    return min(timer.repeat(repeat, number)) / number * 1e6


def primitives(registry: SchemaRegistry, ex: Exchange, batch: int) -> dict[str, Any]:
    payload = settlement_2k(registry)
    _, raw = envelope.build(msg_type="medical.settlement.result", schema_version=1, sender=SENDER,
                            recipient=RECEIVER, payload=payload)
    cert = load_certificate(ex.pki.gateway_cert(SENDER))
    signer = Signer(load_private_key(ex.pki.gateway_key(SENDER)), cert)
    public_key = public_key_of(cert)
    signature = signer.sign(raw)
    assert verify_detached(parse_detached(signature), raw, public_key)
    doc = orjson.loads(raw)
    assert not registry.validate("medical.settlement.result", 1, doc["payload"])

    def build() -> object:
        return envelope.build(msg_type="medical.settlement.result", schema_version=1, sender=SENDER,
                              recipient=RECEIVER, payload=payload)

    # What the gateways do per request of `batch` messages: one signature over a hash tree, one check of it
    # (remembered by the Verifier), a proof per message. Reported per message.
    contents = [raw[:-2] + str(i).encode() + raw[-2:] for i in range(batch)]
    batch_sigs = [parse_detached(s) for s in signer.sign_batch(contents)]

    def verify_batch() -> bool:
        verifier = Verifier()
        return all(verifier.verify(s, c, public_key) for s, c in zip(batch_sigs, contents, strict=True))

    assert verify_batch()
    clear = orjson.dumps(payload)  # sealing: to SH's encryption key, as JS does for the sealed types
    sealer = Sealer.for_key(load_encryption_pub(ex.pki.encryption_pub(RECEIVER)), kid=RECEIVER)
    opener = Opener.for_key(load_encryption_key(ex.pki.encryption_key(RECEIVER)))
    sealed = sealer.seal(clear)
    assert opener.open(sealed) == clear
    audit_body = {  # one audit record as the gateways chain it (each message gets AUDIT_RECORDS_PER_MESSAGE)
        "seq": 123456, "region": SENDER, "message_id": envelope.uuid7(), "correlation_id": envelope.uuid7(),
        "stage": "delivered", "at": envelope.utc_timestamp(), "envelope_sha256": envelope.sha256_hex(raw),
        "detail": {"platform": platform_id(RECEIVER)}, "prev_hash": GENESIS,
    }
    batch_body = {  # one batch record (trail format 3) of `batch` messages: what one message's entry costs
        **audit_body, "message_id": "", "correlation_id": "", "envelope_sha256": None, "detail": {},
        "entries": [[envelope.uuid7(), envelope.uuid7(), envelope.sha256_hex(c), {"platform": platform_id(RECEIVER)}]
                    for c in contents],
    }
    timings = {
        "orjson_parse": best_us(lambda: orjson.loads(raw)),
        "schema_validate": best_us(lambda: registry.validate("medical.settlement.result", 1, doc["payload"])),
        "sign": best_us(lambda: signer.sign(raw)),
        "verify": best_us(lambda: verify_detached(parse_detached(signature), raw, public_key)),
        f"batch_sign/{batch}": best_us(lambda: signer.sign_batch(contents)) / batch,
        f"batch_verify/{batch}": best_us(verify_batch) / batch,
        "envelope_build": best_us(build),
        "sha256": best_us(lambda: envelope.sha256_hex(raw)),
        "seal": best_us(lambda: sealer.seal(clear)),
        "open": best_us(lambda: opener.open(sealed)),
        "audit_record": best_us(lambda: record_hash(GENESIS, audit_body)),
        f"audit_entry/{batch}": best_us(lambda: record_hash(GENESIS, batch_body)) / batch,
    }
    return {"envelope_bytes": len(raw), "alg": signer.alg, "batch": batch, "us": timings}


# ---------------------------------------------------------------------------------------------------------
# open loop: single-message POSTs sent on a fixed schedule, whether or not earlier ones finished


RECONNECTS = 3  # the driver's pulls and acks retried on a connection the server had just closed
OPEN_LOOP_P99_LIMIT_S = 1.0  # the offered rate at which p99 POST -> delivered first passes this is printed
OPEN_LOOP_CONNECTIONS = 512  # the client's connection pool (--connections): waiting for one counts as latency


@dataclass
class OpenLoopStep:
    """One offered rate: the schedule's times and what each request got."""

    rate: int
    phase: Phase  # posted_at: id -> the request's *scheduled* send time; seen_at filled by the pulls
    answered_at: dict[str, float] = field(default_factory=dict)  # id -> when its 202 was read
    send_lag: list[float] = field(default_factory=list)  # actual send - scheduled (the client's own lag)
    post_202: list[float] = field(default_factory=list)  # scheduled -> 202 read
    statuses: dict[str, int] = field(default_factory=dict)  # "HTTP code" of every non-202 answer -> count
    no_retry_after: int = 0  # 429 answers without a Retry-After header
    t0: float = 0.0
    scheduled_end: float = 0.0
    last_send: float = 0.0
    last_answer: float = 0.0


async def _open_loop_post(driver: Driver, step: OpenLoopStep, body: bytes, scheduled: float) -> None:
    sent = time.perf_counter()
    step.send_lag.append(sent - scheduled)
    step.last_send = max(step.last_send, sent)
    headers = driver.js_headers()
    try:
        if driver.lean is not None:
            answer = await driver.lean.post_full("/v1/messages", body, headers)
            raw, status, retry_after = answer.body, answer.status, answer.headers.get("retry-after")
        else:
            async with driver.session.post(driver.js.url + "/v1/messages", data=body, headers=headers) as resp:
                raw, status, retry_after = await resp.read(), resp.status, resp.headers.get("Retry-After")
        if status == 429 and not retry_after:
            step.no_retry_after += 1
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
        step.phase.request_errors.append(f"{type(e).__name__}: {e}")
        return
    now = time.perf_counter()
    step.last_answer = max(step.last_answer, now)
    if status == 202:
        msg_id = orjson.loads(raw)["id"]
        step.phase.posted_at[msg_id] = scheduled
        step.answered_at[msg_id] = now
        step.post_202.append(now - scheduled)
        driver.ledger.accepted.add(msg_id)
        return
    code = ""
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
        code = str(orjson.loads(raw).get("code", ""))
    key = f"{status} {code}".strip()
    step.statuses[key] = step.statuses.get(key, 0) + 1


async def open_loop_step(driver: Driver, step: OpenLoopStep, stall_s: float) -> None:
    """Request i is started at t0 + i/rate by a scheduler loop, as its own task; the pulls run meanwhile."""
    driver._phase = step.phase
    senders_done = asyncio.Event()
    puller = asyncio.create_task(driver._puller(step.phase, senders_done, stall_s))
    tasks: set[asyncio.Task[None]] = set()
    step.t0 = step.phase.started = time.perf_counter() + 0.05
    for i, body in enumerate(step.phase.bodies):
        scheduled = step.t0 + i / step.rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_open_loop_post(driver, step, body, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    step.scheduled_end = step.t0 + len(step.phase.bodies) / step.rate
    if tasks:
        await asyncio.gather(*tasks)
    step.phase.sent_done = time.perf_counter()
    senders_done.set()
    await puller
    step.phase.delivered_done = max(step.phase.seen_at.values(), default=step.phase.sent_done)
    await driver.settle_acks()


def open_loop_figures(step: OpenLoopStep) -> dict[str, Any]:
    phase = step.phase
    delivered = [phase.seen_at[i] - t for i, t in phase.posted_at.items() if i in phase.seen_at]
    span = len(phase.bodies) / step.rate

    def ms(values: Sequence[float]) -> dict[str, float]:
        return {"p50": percentile(values, 50) * 1e3, "p99": percentile(values, 99) * 1e3,
                "p99.9": percentile(values, 99.9) * 1e3, "max": max(values, default=float("nan")) * 1e3}

    sent_span = step.last_send - step.t0
    return {
        "offered_msg_per_s": step.rate,
        "requests": len(phase.bodies),
        "scheduled_seconds": span,
        "sent_msg_per_s": len(step.send_lag) / sent_span if sent_span > 0 else float("nan"),
        "accepted": len(phase.posted_at),
        "accepted_msg_per_s": len(phase.posted_at) / (step.last_answer - step.t0)
        if step.last_answer > step.t0 else 0.0,
        "delivered": len(delivered),
        "delivered_msg_per_s": len(delivered) / (phase.delivered_done - step.t0)
        if delivered and phase.delivered_done > step.t0 else 0.0,
        "post_to_202_ms": ms(step.post_202),
        "post_to_delivered_ms": ms(delivered),
        "send_lag_ms": ms(step.send_lag),
        "non_202": dict(sorted(step.statuses.items())),
        "overloaded_429": sum(v for k, v in step.statuses.items() if k.startswith("429")),
        "overloaded_without_retry_after": step.no_retry_after,
        "request_errors": len(phase.request_errors),
        "request_error_samples": sorted(set(phase.request_errors))[:3],
        "missing": len(phase.missing),
        # the envelope reached SH's pull before the driver had read its 202: the answer is the slow part
        "pulled_before_202_percent": 100 * sum(
            1 for i, t in step.answered_at.items() if i in phase.seen_at and phase.seen_at[i] < t
        ) / max(1, len(step.answered_at)),
    }


async def run_open_loop(driver: Driver, args: argparse.Namespace, variants: Sequence[tuple[str, dict[str, Any]]],
                        run_id: str, start: int, pids: dict[str, int | None]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for i, rate in enumerate(args.open_loop):
        count = max(1, round(rate * seconds_of(args, i)))
        step = OpenLoopStep(rate, Phase(f"open-loop {rate}/s", build_batches(variants, count, 0, run_id, start)))
        start += count
        await driver.premint(count)
        before = await driver.both_metrics()
        spies = await attach_spies(args, (driver.js, driver.sh), f".{rate}")
        window = CpuWindow(pids)
        window.start()
        await open_loop_step(driver, step, args.stall_timeout)
        await driver.wait_receipts(len(driver.ledger.accepted), args.stall_timeout)  # the next rate starts clean
        window.stop()
        for spy in spies:
            spy.stop()
        fig = open_loop_figures(step)
        fig["groups"] = group_sizes(before, await driver.both_metrics())
        fig["cpu_us_per_msg"] = {k: us_per_msg(v, fig["delivered"]) for k, v in window.used.items()}
        fig["kafka_jit_us_per_msg"] = us_per_msg(window.kafka_jit, fig["delivered"])
        fig["machine_cpu_busy_percent"] = 100 * window.machine_busy / max(1e-9, window.machine_total)
        ours = sum(v for v in window.used.values() if v is not None)
        fig["other_processes_cpu_percent"] = 100 * max(0.0, window.machine_busy - ours) / max(
            1e-9, window.machine_total)
        steps.append(fig)
        d = fig["post_to_delivered_ms"]
        print(f"open loop {rate:,}/s: {fig['accepted']:,}/{count:,} accepted, {fig['delivered']:,} delivered, "
              f"p99 POST->delivered {d['p99']:,.1f} ms")
        await asyncio.sleep(1.0)  # a breath between rates
    return steps


def report_open_loop(f: dict[str, Any]) -> None:
    c, m, d = f["config"], f["machine"], f["delivery_check"]
    print()
    print(f"== yrdx relay benchmark, open loop: single-message POST /v1/messages {c['route']}, "
          f"{'/'.join(f'{x:g}' for x in c['seconds'])} s per offered rate, warmup {c['warmup']:,}, "
          f"client pool {c['connections'] or 'unbounded'} connections ({c.get('http_client', 'aiohttp')})")
    print_suite(f)
    print_machine(m)
    print("latency from each request's scheduled send time (client queueing included) to its 202 and to "
          "the moment it was seen in SH's pull inbox; ms")
    print()
    head = (f"  {'offered/s':>9} {'sent/s':>7} {'202/s':>7} {'deliv/s':>7} | {'202 p50':>8} {'p99':>8} "
            f"{'p99.9':>8} | {'deliv p50':>9} {'p99':>8} {'p99.9':>8} | {'lag p99':>7} | non-202")
    print(head)
    passed_at = None
    for s in f["open_loop"]:
        a, dl, lag = s["post_to_202_ms"], s["post_to_delivered_ms"], s["send_lag_ms"]
        other = ", ".join(f"{k}: {v}" for k, v in s["non_202"].items()) or "-"
        if s["request_errors"]:
            other += f"; request errors {s['request_errors']}"
        if s["missing"]:
            other += f"; {s['missing']} accepted, not delivered"
        print(f"  {s['offered_msg_per_s']:>9,} {fmt(s['sent_msg_per_s']):>7} {fmt(s['accepted_msg_per_s']):>7} "
              f"{fmt(s['delivered_msg_per_s']):>7} | {fmt(a['p50'], ',.1f'):>8} {fmt(a['p99'], ',.1f'):>8} "
              f"{fmt(a['p99.9'], ',.1f'):>8} | {fmt(dl['p50'], ',.1f'):>9} {fmt(dl['p99'], ',.1f'):>8} "
              f"{fmt(dl['p99.9'], ',.1f'):>8} | {fmt(lag['p99'], ',.1f'):>7} | {other}")
        if not dl["p99"] <= OPEN_LOOP_P99_LIMIT_S * 1e3:  # NaN (nothing delivered) too
            passed_at = min(s["offered_msg_per_s"], passed_at or s["offered_msg_per_s"])
    print()
    print("  CPU us/msg (delivered) per offered rate; machine busy and other processes (% of all cores);")
    print("  share of messages seen in SH's pull before the driver had read their 202:")
    for s in f["open_loop"]:
        cpu = "  ".join(f"{k} {fmt(v, ',.0f')}" for k, v in s["cpu_us_per_msg"].items())
        if s.get("kafka_jit_us_per_msg") is not None:
            cpu += f" (JIT {fmt(s['kafka_jit_us_per_msg'], ',.0f')})"
        print(f"    {s['offered_msg_per_s']:>6,}/s  {cpu}   machine busy {s['machine_cpu_busy_percent']:.0f} %, "
              f"other processes {s['other_processes_cpu_percent']:.0f} %;  pulled before 202 "
              f"{s['pulled_before_202_percent']:.0f} %")
    print("  messages together (means): per JS signature, per SH inbox delivery:")
    for s in f["open_loop"]:
        g = s.get("groups") or {}
        print(f"    {s['offered_msg_per_s']:>6,}/s  {fmt(g.get('js_messages_per_signature'), ',.1f')}, "
              f"{fmt(g.get('sh_messages_per_delivery'), ',.1f')}")
    print("  the gateways' own means, ms: JS request (authentication to 202), JS group publish (to the broker's "
          "ack), SH inbox delivery:")
    for s in f["open_loop"]:
        g = s.get("groups") or {}
        print(f"    {s['offered_msg_per_s']:>6,}/s  {fmt(g.get('js_ingress_ms'), ',.2f')}, "
              f"{fmt(g.get('js_publish_ms'), ',.2f')}, {fmt(g.get('sh_deliver_ms'), ',.2f')}")
    for s in f["open_loop"]:
        for sample in s["request_error_samples"]:
            print(f"  {s['offered_msg_per_s']:,}/s request error: {sample}")
    print()
    print(f"-- p99 POST->delivered passes {OPEN_LOOP_P99_LIMIT_S:g} s from: "
          f"{f'{passed_at:,} msg/s offered' if passed_at is not None else 'not reached'}")
    print("   (sent/s below offered, or a large lag p99, means the driver itself could not keep the schedule "
          "on these cores)")
    for region, logs in f["gateway_logs"].items():
        if any(level not in ("debug", "info") for level in logs["levels"]):
            print(f"  {region} gateway log: {logs['levels']}")
            for sample in logs["samples"]:
                print(f"    {sample}")
    print()
    print("peak RSS (VmHWM): " + ", ".join(f"{r} gateway {fmt(v, ',.0f')} MiB" for r, v in f["peak_rss_mib"].items()))
    print_delivery_check(d)


# ---------------------------------------------------------------------------------------------------------
# the run


def phase_figures(phase: Phase) -> dict[str, Any]:
    latencies = [phase.seen_at[i] - t for i, t in phase.posted_at.items() if i in phase.seen_at]
    delivered = len(latencies)
    seconds = phase.delivered_done - phase.started
    return {
        "accepted": len(phase.posted_at),
        "delivered": delivered,
        "rejected_at_ingress": dict(phase.rejected),
        "request_errors": len(phase.request_errors),
        "request_error_samples": sorted(set(phase.request_errors))[:5],
        "seconds": seconds,
        "msg_per_s": delivered / seconds if seconds > 0 else 0.0,
        "accept_msg_per_s": len(phase.posted_at) / (phase.sent_done - phase.started),
        "latency_ms": {"p50": percentile(latencies, 50) * 1e3, "p99": percentile(latencies, 99) * 1e3,
                       "max": max(latencies, default=float("nan")) * 1e3},
        "created_at_to_pull_ms": {"p50": percentile(phase.transit, 50) * 1e3,
                                  "p99": percentile(phase.transit, 99) * 1e3},
        "batch_request_ms": {"p50": percentile(phase.request_latency, 50) * 1e3,
                             "p99": percentile(phase.request_latency, 99) * 1e3},
    }


def delivery_check(ledger: Ledger) -> tuple[dict[str, Any], bool]:
    """Every accepted id pulled exactly once, nothing else pulled: (figures, ok)."""
    lost = sorted(ledger.accepted - set(ledger.pulled))
    unexpected = sorted(i for i in set(ledger.unexpected) if i not in ledger.accepted)
    figures = {
        "accepted": len(ledger.accepted),
        "delivered_once": sum(1 for c in ledger.pulled.values() if c == 1),
        "lost": len(lost), "duplicated": len(set(ledger.duplicates)), "unexpected": len(unexpected),
        "lost_sample": lost[:5], "duplicated_sample": sorted(set(ledger.duplicates))[:5],
        "unexpected_sample": unexpected[:5],
    }
    return figures, not lost and not ledger.duplicates and not unexpected


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None or value != value else format(value, spec)  # value != value: NaN


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


JIT_CHUNK = 3000  # messages per extra warm-up round


async def settle_jit(driver: Driver, variants: Sequence[tuple[str, dict[str, Any], dict[str, Any]]],
                     per_request: int, run_id: str, start: int, kafka_pid: int | None, max_s: float,
                     stall_s: float) -> tuple[int, dict[str, float]]:
    """Relay warm-up rounds of the measured shape until the broker's JIT is quiet (broker_warmup.until_jit_quiet);
    returns the next message index and what it took."""
    next_index = start

    async def one_round() -> None:
        nonlocal next_index
        phase = Phase("jit warm-up", build_batches(variants, JIT_CHUNK, per_request, run_id, next_index))
        next_index += JIT_CHUNK
        await driver.run_phase(phase, stall_s)
        await driver.wait_receipts(len(driver.ledger.accepted), stall_s)

    done = await until_jit_quiet(kafka_pid, max_s, one_round)
    print(f"relayed {done.rounds * JIT_CHUNK:,} more warm-up messages in {done.seconds:.1f} s until the broker's JIT "
          f"compiler took {done.share * 100:.1f} % of a core")
    return next_index, {"messages": done.rounds * JIT_CHUNK, "seconds": done.seconds, "compiler_share": done.share}


async def run(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], bool]:
    registry = SchemaRegistry.load()
    figures: dict[str, Any] = {
        "config": {"messages": args.messages, "batch": 1 if args.single else args.batch,
                   "open_loop": args.open_loop, "seconds": args.seconds, "connections": args.connections,
                   "single": args.single, "concurrency": args.concurrency,
                   "warmup": args.warmup, "route": f"{SENDER}->{RECEIVER}", "http_client": args.http_client,
                   "auth": args.auth},
        "machine": {"nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
                    "loadavg_start": loadavg(), "python": sys.version.split()[0],
                    "strays": strays({args.kafka_pid} if args.kafka_pid else set()), "idle_penalty": idle_penalty()},
    }
    broker: LocalKafka | None = None
    gateways: list[GatewayProcess] = []
    spies: list[PySpy] = []
    try:
        bootstrap = env_bootstrap_servers()
        if bootstrap is None:
            broker = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port())
            t = time.monotonic()
            broker.start()
            print(f"local Kafka {broker.version} at {broker.bootstrap_servers} "
                  f"(started in {time.monotonic() - t:.1f} s)")
            bootstrap = broker.bootstrap_servers
            if args.broker_warmup > 0:
                warmed = await warm_broker(bootstrap, broker.pid(), max_s=args.broker_warmup)
                print(describe(warmed))
                figures["broker_warmup"] = warmed.as_dict()
        else:
            said = f"its CPU measured (pid {args.kafka_pid})" if args.kafka_pid else "broker CPU is not measured"
            print(f"external Kafka at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS): {said}")
        kafka_pid = broker.pid() if broker is not None else args.kafka_pid
        figures["broker"] = {"bootstrap_servers": bootstrap, "local": broker is not None}
        # A broker shared between runs (bench/goals.py) gets a namespace per run: no run reads another's topics.
        namespace = "" if broker is not None else f"bench-{uuid.uuid4().hex[:8]}"
        ex = init_exchange(work / "exchange", base_port=0, bootstrap_servers=bootstrap, alg=args.alg,
                           namespace=namespace)
        edit_config(ex.config_path(RECEIVER), delivery={"mode": "inbox"})  # SH's platform pulls
        if args.no_audit:  # what the audit trail costs: the same run without it
            for region in (SENDER, RECEIVER):
                edit_config(ex.config_path(region), audit_enabled=False)
        figures["audit"] = not args.no_audit
        if args.audit_per_message:  # the trail as it was before batch records (formats 1 and 2), to compare
            for region in (SENDER, RECEIVER):
                edit_config(ex.config_path(region), audit_batch_records=False)
        figures["audit_batch_records"] = not args.audit_per_message
        # The producers' codec and linger (kafka.compression, kafka.linger_ms), e.g. to compare them.
        producer = {k: v for k, v in (("compression", args.compression), ("linger_ms", args.linger_ms))
                    if v is not None}
        if producer:
            for region in (SENDER, RECEIVER):
                doc = yaml.safe_load(ex.config_path(region).read_text())
                edit_config(ex.config_path(region), kafka={**doc["kafka"], **producer})
        figures["compression"] = args.compression or "config default"
        figures["linger_ms"] = args.linger_ms if args.linger_ms is not None else "config default"
        figures["alg"] = args.alg
        cprofile = args.profile is not None and args.profiler == "cprofile"
        for region in (SENDER, RECEIVER):
            out = args.profile / f"{region.lower()}.prof" if cprofile else None
            gateways.append(GatewayProcess(region, ex.config_path(region), work, out))
        for g in gateways:
            g.launch()
        for g in gateways:
            g.wait_ready()
        js, sh = gateways
        print(f"gateways: JS pid {js.pid} at {js.url}, SH pid {sh.pid} at {sh.url}")

        variants = message_variants(registry)
        figures["sealed_share"] = sum(1 for t, *_ in variants if t in SEALED_BY_DEFAULT) / len(variants)
        run_id = uuid.uuid4().hex[:8]
        per_request = 0 if args.single else args.batch
        warm = Phase("warmup", build_batches(variants, args.warmup, per_request, run_id, 0))
        pids = {"js_gateway": js.pid, "sh_gateway": sh.pid, "kafka_jvm": kafka_pid, "driver": os.getpid()}
        limit = args.connections if args.open_loop else args.concurrency + 8
        connector = aiohttp.TCPConnector(limit=limit)
        lean = LeanPool("127.0.0.1", js.port, limit, timeout=300.0) if args.http_client == "lean" else None
        async with aiohttp.ClientSession(connector=connector) as session, _closing(lean):
            driver = Driver(session, js, sh, ex, args.concurrency, args.single, lean, args.auth)
            if warm.bodies:
                await driver.run_phase(warm, args.stall_timeout)
                await driver.wait_receipts(len(driver.ledger.accepted), args.stall_timeout)
                print(f"warmup: {len(warm.seen_at)}/{len(warm.posted_at)} delivered "
                      f"in {warm.delivered_done - warm.started:.1f} s")
            # The gateways' own traffic still makes a warmed broker compile paths the raw warm-up did not take.
            start = args.warmup
            if kafka_pid is not None and args.broker_warmup > 0:
                start, settled = await settle_jit(driver, variants, per_request, run_id, start, kafka_pid,
                                                  args.broker_warmup, args.stall_timeout)
                figures.setdefault("broker_warmup", {})["relayed_until_quiet"] = settled
            measured = Phase("measured", [] if args.open_loop else
                             build_batches(variants, args.messages, per_request, run_id, start))
            if args.open_loop:  # the rates, the drain and the delivery check; no baseline, no primitives
                figures["open_loop"] = await run_open_loop(driver, args, variants, run_id, start, pids)
                figures["peak_rss_mib"] = {g.region: peak_rss_mib(g.pid) for g in gateways}
                await driver.drain(args.drain)
                figures["gateway_logs"] = {g.region: g.log_summary() for g in gateways}
                figures["delivery_check"], ok = delivery_check(driver.ledger)
                figures["machine"]["loadavg_end"] = loadavg()
                return figures, ok
            idle = CpuWindow(pids)  # what the processes burn with nothing to do (polls, probes, timers)
            idle.start()
            await asyncio.sleep(args.idle)
            idle.stop()
            spies = await attach_spies(args, gateways)
            await driver.premint(len(measured.bodies))
            before = await driver.both_metrics()
            window = CpuWindow(pids)
            window.start()
            await driver.run_phase(measured, args.stall_timeout)
            receipts = await driver.wait_receipts(len(driver.ledger.accepted), args.stall_timeout)
            receipts_done = time.perf_counter()
            window.stop()
            for s in spies:
                s.stop()
            await driver.drain(args.drain)
            figures["peak_rss_mib"] = {g.region: peak_rss_mib(g.pid) for g in gateways}
            after = await driver.both_metrics()
            js_metrics, sh_metrics = after[SENDER], after[RECEIVER]

        e2e = phase_figures(measured)
        n = e2e["delivered"]
        e2e["receipts_recorded_at_origin"] = receipts
        e2e["cpu_window_s"] = receipts_done - measured.started
        e2e["cpu_us_per_msg"] = {k: us_per_msg(v, n) for k, v in window.used.items()}
        e2e["kafka_jit_us_per_msg"] = us_per_msg(window.kafka_jit, n)
        e2e["cpu_percent"] = {
            k: None if v is None else 100 * v / e2e["cpu_window_s"] for k, v in window.used.items()
        }
        ours = sum(v for v in window.used.values() if v is not None)
        e2e["idle_cpu_percent"] = {
            k: None if v is None or not args.idle else 100 * v / args.idle for k, v in idle.used.items()
        }
        e2e["machine_cpu_busy_percent"] = 100 * window.machine_busy / e2e["cpu_window_s"]
        e2e["other_processes_cpu_s"] = max(0.0, window.machine_busy - ours)
        e2e["gateway_counters"] = {
            "sh_rejected": counter(sh_metrics, "yrdx_dead_letters_total"),
            "js_refused": counter(js_metrics, "yrdx_requests_refused_total"),
            "js_rejected": counter(js_metrics, "yrdx_dead_letters_total"),
        }
        e2e["groups"] = group_sizes(before, after)
        figures["end_to_end"] = e2e
        figures["gateway_logs"] = {g.region: g.log_summary() for g in gateways}
        sizes = [len(orjson.dumps(driver.ledger.envelopes[i][0])) for i in measured.seen_at]
        e2e["envelope_bytes_mean"] = sum(sizes) / len(sizes) if sizes else 0

        # exactly once, over warmup and measured phases
        ledger = driver.ledger
        figures["delivery_check"], ok = delivery_check(ledger)

        for g in gateways:  # before the baseline: the broker and the cores are the baseline's alone
            g.stop()

        # the baseline: the same envelope bytes (as the pulls returned them, in that order), same broker,
        # the warmup count and then the measured count (fewer only if fewer were delivered)
        records = [
            (orjson.dumps(env), str(env["correlation_id"]).encode(), sig)
            for env, sig in list(ledger.envelopes.values())[-(args.warmup + args.messages):]
        ]
        base_warmup = min(args.warmup, len(records) // 2)
        first = records[base_warmup] if len(records) > base_warmup else None
        same_bytes = first is not None and verify_detached(
            parse_detached(first[2]), first[0], public_key_of(load_certificate(ex.pki.gateway_cert(SENDER))))
        base = await baseline(bootstrap, records, base_warmup,
                              {"kafka_jvm": pids["kafka_jvm"], "driver": os.getpid()})
        figures["baseline"] = {
            "topic": base.topic, "count": base.count, "seconds": base.seconds,
            "msg_per_s": base.count / base.seconds if base.seconds else 0.0,
            "latency_ms": {"p50": percentile(base.latencies, 50) * 1e3,
                           "p99": percentile(base.latencies, 99) * 1e3,
                           "max": max(base.latencies, default=float("nan")) * 1e3},
            "cpu_us_per_msg": {k: us_per_msg(v, base.count) for k, v in base.cpu.items()},
            "bytes_identical_to_signed_envelopes": same_bytes,
        }

        prim = primitives(registry, ex, args.batch)
        figures["primitives"] = prim
        figures["machine"]["loadavg_end"] = loadavg()

        us = prim["us"]
        cpu = e2e["cpu_us_per_msg"]
        total_cpu = sum(v for v in cpu.values() if v is not None)
        # Single requests are signed in batches only as large as the requests in flight: count the plain cost.
        sign, verify = ((us["sign"], us["verify"]) if args.single else
                        (us[f"batch_sign/{args.batch}"], us[f"batch_verify/{args.batch}"]))
        ingress_floor = us["schema_validate"] + us["envelope_build"] + sign
        egress_floor = us["orjson_parse"] + verify + us["schema_validate"]
        b = figures["baseline"]
        figures["ratios"] = {
            "e2e_over_baseline_msg_per_s": ratio(e2e["msg_per_s"], b["msg_per_s"]),
            "e2e_over_baseline_p50": ratio(e2e["latency_ms"]["p50"], b["latency_ms"]["p50"]),
            "e2e_over_baseline_p99": ratio(e2e["latency_ms"]["p99"], b["latency_ms"]["p99"]),
            "ingress_floor_us": ingress_floor,
            "egress_floor_us": egress_floor,
            "js_cpu_over_ingress_floor": ratio(cpu.get("js_gateway"), ingress_floor),
            "sh_cpu_over_egress_floor": ratio(cpu.get("sh_gateway"), egress_floor),
            "kafka_cpu_e2e_over_baseline": ratio(cpu.get("kafka_jvm"), b["cpu_us_per_msg"].get("kafka_jvm")),
            "cpu_us_per_msg_all_processes": total_cpu,
            "cpu_bound_ceiling_msg_per_s": ratio(len(os.sched_getaffinity(0)) * 1e6, total_cpu),
        }
        return figures, ok
    finally:
        for s in spies:
            s.stop()
        for g in gateways:
            try:
                g.stop()
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                print(f"stopping gateway {g.region}: {e}", file=sys.stderr)
        if broker is not None:
            broker.stop()


def report(f: dict[str, Any]) -> None:
    c, m, e, b = f["config"], f["machine"], f["end_to_end"], f["baseline"]
    p, r, d = f["primitives"], f["ratios"], f["delivery_check"]
    print()
    print(f"== yrdx relay benchmark: {c['messages']:,} mixed messages {c['route']}, batch {c['batch']}, "
          f"concurrency {c['concurrency']}, warmup {c['warmup']:,}, JS's client {c.get('http_client', 'aiohttp')}, "
          f"JS's token {c.get('auth', 'assertion')}")
    print_suite(f)
    print_machine(m)
    print()
    print("-- end to end (driver -> JS gateway -> Kafka -> SH gateway -> SH pull inbox -> driver)")
    print(f"  delivered          {e['delivered']:,} of {e['accepted']:,} accepted in {e['seconds']:.2f} s"
          f"  (mean envelope {e['envelope_bytes_mean']:,.0f} B)")
    print(f"  throughput         {e['msg_per_s']:,.0f} msg/s end to end   (JS accepted at "
          f"{e['accept_msg_per_s']:,.0f} msg/s)")
    lat, tr, rq = e["latency_ms"], e["created_at_to_pull_ms"], e["batch_request_ms"]
    print(f"  latency            p50 {lat['p50']:,.1f} ms   p99 {lat['p99']:,.1f} ms   "
          f"max {lat['max']:,.1f} ms   (batch POST started -> seen in a pull)")
    print(f"  created_at->pull   p50 {tr['p50']:,.1f} ms   p99 {tr['p99']:,.1f} ms")
    print(f"  batch POST         p50 {rq['p50']:,.1f} ms   p99 {rq['p99']:,.1f} ms   (207 round trip)")
    groups = e.get("groups") or {}
    print(f"  together           {fmt(groups.get('js_messages_per_signature'), ',.1f')} messages per JS signature, "
          f"{fmt(groups.get('sh_messages_per_delivery'), ',.1f')} per SH inbox delivery (means over the window)")
    if e["rejected_at_ingress"] or e["request_errors"] or any(e["gateway_counters"].values()):
        print(f"  refusals           ingress {e['rejected_at_ingress']}, "
              f"request errors {e['request_errors']}, gateway counters {e['gateway_counters']}")
        for sample in e["request_error_samples"]:
            print(f"    {sample}")
    print(f"  CPU over {e['cpu_window_s']:.2f} s (until every receipt was recorded at JS: "
          f"{e['receipts_recorded_at_origin']:,}):")
    for name in ("js_gateway", "sh_gateway", "kafka_jvm", "driver"):
        jit = (f"   (its JIT compiler {fmt(e.get('kafka_jit_us_per_msg'), ',.1f')} us/msg)"
               if name == "kafka_jvm" and e.get("kafka_jit_us_per_msg") is not None else "")
        print(f"    {name:<12} {fmt(e['cpu_us_per_msg'][name], '>8,.1f')} us/msg"
              f"   {fmt(e['cpu_percent'][name], '>5.0f')} % of a core{jit}")
    print(f"    all four     {fmt(r['cpu_us_per_msg_all_processes'], '>8,.1f')} us/msg   "
          f"-> CPU-bound ceiling ~{fmt(r['cpu_bound_ceiling_msg_per_s'])} msg/s on {m['usable_cpus']} cores")
    print(f"    machine busy {e['machine_cpu_busy_percent']:.0f} % of one core; other processes used "
          f"{e['other_processes_cpu_s']:.2f} CPU s in the window")
    idle = ", ".join(f"{k} {fmt(v, '.1f')} %" for k, v in e["idle_cpu_percent"].items())
    print(f"    when idle    {idle} of a core (measured before the window)")
    for region, logs in f["gateway_logs"].items():
        if any(level not in ("debug", "info") for level in logs["levels"]):
            print(f"  {region} gateway log: {logs['levels']}")
            for sample in logs["samples"]:
                print(f"    {sample}")
    print()
    print("-- baseline: raw aiokafka produce -> consume of the same envelope bytes, same broker")
    print(f"  {b['count']:,} records in {b['seconds']:.2f} s: {b['msg_per_s']:,.0f} msg/s   "
          f"p50 {b['latency_ms']['p50']:,.1f} ms   p99 {b['latency_ms']['p99']:,.1f} ms")
    print(f"  CPU: client {fmt(b['cpu_us_per_msg']['driver'], ',.1f')} us/msg, Kafka JVM "
          f"{fmt(b['cpu_us_per_msg']['kafka_jvm'], ',.1f')} us/msg   (bytes identical to the signed "
          f"envelopes: {'yes' if b['bytes_identical_to_signed_envelopes'] else 'NO'})")
    print()
    print(f"-- primitives on a {p['envelope_bytes']:,} B settlement envelope "
          f"({p['alg']}, one core, best of 5)")
    for name, value in p["us"].items():
        print(f"  {name:<16} {value:>8.1f} us   {1e6 / value:>12,.0f} /s")
    print()
    print("-- ratios")
    print(f"  end-to-end / baseline msg/s      {fmt(r['e2e_over_baseline_msg_per_s'], '.3f')}")
    print(f"  end-to-end / baseline p50, p99   {fmt(r['e2e_over_baseline_p50'], '.2f')}, "
          f"{fmt(r['e2e_over_baseline_p99'], '.2f')}")
    print(f"  JS CPU / ingress floor           {fmt(r['js_cpu_over_ingress_floor'], '.1f')}   "
          f"(floor = validate + build + batch sign = {r['ingress_floor_us']:.1f} us)")
    print(f"  SH CPU / egress floor            {fmt(r['sh_cpu_over_egress_floor'], '.1f')}   "
          f"(floor = parse + batch verify + validate = {r['egress_floor_us']:.1f} us)")
    print(f"  Kafka CPU e2e / baseline         {fmt(r['kafka_cpu_e2e_over_baseline'], '.2f')}")
    print()
    print("peak RSS (VmHWM): " + ", ".join(f"{r} gateway {fmt(v, ',.0f')} MiB" for r, v in f["peak_rss_mib"].items()))
    print_delivery_check(d)


def rates(text: str) -> list[int]:
    """`500,1000,2000` -> [500, 1000, 2000], each positive, in the order given (with --seconds per rate, the order
    is the scenario: e.g. an overload, then the recovery)."""
    try:
        values = list(dict.fromkeys(int(v) for v in text.split(",") if v.strip()))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a list of rates: {text!r}") from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("rates are positive integers (msg/s), e.g. 500,1000,2000")
    return values


def seconds_list(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of seconds: {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("at least one duration")
    return values


def seconds_of(args: argparse.Namespace, i: int) -> float:
    """--seconds for the i-th offered rate: its own, or the last one given."""
    return float(args.seconds[min(i, len(args.seconds) - 1)])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20_000, help="messages in the measured window (20000)")
    p.add_argument("--batch", type=int, default=200,
                   help="messages per POST /v1/messages/batch (200, at most 500)")
    p.add_argument("--single", action="store_true",
                   help="one message per POST /v1/messages instead of batches (use a higher --concurrency)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (4)")
    p.add_argument("--auth", choices=("access", "assertion"), default="access",
                   help="JS's posts carry one access token, reused (POST /v1/token, the default), or a fresh "
                        "single-use ES256 assertion each (an ES256 verification and a jti write at JS per request)")
    p.add_argument("--http-client", choices=("lean", "aiohttp"), default="lean",
                   help="the client of JS's posts: bench/lean_http.py (less of the driver's CPU per request, "
                        "the default) or an aiohttp ClientSession; pulls from SH always use aiohttp")
    p.add_argument("--warmup", type=int, default=1000, help="messages relayed before the window opens (1000)")
    p.add_argument("--kafka-pid", type=int, metavar="PID",
                   help="with KAFKA_BOOTSTRAP_SERVERS: the pid of that broker's JVM on this machine, to measure its "
                        "CPU and its JIT (bench/goals.py shares one warmed broker between its runs)")
    p.add_argument("--broker-warmup", type=float, default=120.0, metavar="S",
                   help="a local broker is loaded with raw traffic until its JIT compiler is quiet, at most S "
                        "seconds (120; 0 skips it: a cold JVM's compiling then counts as Kafka CPU)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--stall-timeout", type=float, default=60.0,
                   help="seconds without progress before the missing messages count as lost (60)")
    p.add_argument("--drain", type=float, default=2.0,
                   help="seconds of extra pulls after the run, to catch late duplicates (2)")
    p.add_argument("--idle", type=float, default=3.0,
                   help="seconds of idle CPU measured before the window (3; 0 to skip)")
    p.add_argument("--profile", type=Path, help="profile both gateways into this folder (see --profiler; with "
                   "--open-loop, py-spy over each rate: <region>.<rate>.pyspy.txt)")
    p.add_argument("--profiler", choices=["py-spy", "cprofile"], default="py-spy",
                   help="py-spy: sample the measured window (needs `pip install py-spy`); "
                   "cprofile: the whole process life")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs, broker data)")
    p.add_argument("--alg", choices=["ES256", "EdDSA", "SM2SM3"], default="ES256",
                   help="the exchange's signing suite (SM2SM3: the national suite, sealing with SM2/SM4)")
    p.add_argument("--compression", choices=["none", "gzip", "lz4", "zstd", "snappy"],
                   help="the gateways' kafka.compression (default: the config default)")
    p.add_argument("--linger-ms", type=int, help="the gateways' kafka.linger_ms (default: the config default)")
    p.add_argument("--audit-per-message", action="store_true",
                   help="run the gateways with audit_batch_records: false (one audit record per message, trail "
                        "formats 1 and 2), to compare with batch records (format 3)")
    p.add_argument("--no-audit", action="store_true",
                   help="run the gateways with audit_enabled: false, to measure what the audit trail costs")
    p.add_argument("--open-loop", type=rates, metavar="R1,R2,...",
                   help="open loop: single-message POSTs at each offered rate (msg/s) on a fixed schedule, "
                   "latency from each request's scheduled time; no baseline or primitives")
    p.add_argument("--seconds", type=seconds_list, default=[10.0], metavar="S1,S2,...",
                   help="seconds per offered rate of --open-loop (10); one per rate, the last one for the rest")
    p.add_argument("--connections", type=int, default=OPEN_LOOP_CONNECTIONS,
                   help=f"--open-loop: the client's connection pool ({OPEN_LOOP_CONNECTIONS}; 0: unbounded). "
                   "Requests beyond it wait in the client, so the gateway never holds more at once")
    args = p.parse_args(argv)
    if args.open_loop:
        if min(args.seconds) <= 0 or args.connections < 0:
            p.error("--seconds must be positive, --connections not negative")
        if args.profile is not None and args.profiler == "cprofile":  # it covers the whole process life
            p.error("--profiler cprofile is not supported with --open-loop (py-spy profiles each rate)")
        args.single = True  # the warmup sends single messages too
    if not 1 <= args.batch <= 500:
        p.error("--batch must be between 1 and 500")
    if args.messages < 1 or args.concurrency < 1 or args.warmup < 0:
        p.error("--messages and --concurrency must be positive, --warmup not negative")
    args.py_spy = None
    if args.profile is not None and args.profiler == "py-spy":
        beside = Path(sys.executable).with_name("py-spy")  # installed into the venv, which may not be on PATH
        args.py_spy = str(beside) if beside.is_file() else shutil.which("py-spy")
        if args.py_spy is None:
            p.error("--profiler py-spy needs py-spy (.venv/bin/pip install py-spy), "
                    "or use --profiler cprofile")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="yrdx-bench-"))
    try:
        figures, ok = asyncio.run(run(args, work))
    except BaseException:
        print(f"work folder kept for inspection: {work}", file=sys.stderr)
        raise
    (report_open_loop if args.open_loop else report)(figures)
    if args.json:
        args.json.write_text(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")
    if args.profile is not None:
        from hotspots import summarize_folder  # bench/hotspots.py, beside this file

        print()
        summarize_folder(args.profile)
    if args.keep or not ok:
        print(f"work folder (gateway logs, configs, broker data): {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
