"""The demo (`yrdx demo`): a local Kafka, four gateway processes, simulated platforms and every story, reported.

It plays the stories of :mod:`adapters.stories`, then shows what was delivered, what was rejected and how fast,
and one message's journey read back from the audit topic. `yrdx console` watches the exchange while the stories
play (its URL is printed); with `keep`, broker, gateways and console stay up until Ctrl-C.

Everything started here is stopped here, also on error or Ctrl-C: the gateways with SIGTERM (they drain),
then SIGKILL if one hangs; the broker with SIGTERM. The exit code is 0 only if every story ended as expected:
every good message delivered to its destination platform (and its signed receipt back at the origin), every
bad one refused with the expected code.

Output shows codes, ids and hashes only, never a payload: payloads carry personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess  # noqa: S404 - the gateways are started with a fixed argument list, never a shell
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from adapters.simulated import DELIVERED, Attempt, Ledger, PlatformClient, SimulatedPlatforms
from adapters.stories import Cast, Scale, StoryResult, bad_cases, build_cast, check_receipts, good_stories
from adapters.story_cases import gov_services_story, wire_gov_services
from gateway.audit.journey import journey, read_audit_records
from gateway.audit.verify import verify_values
from gateway.config import KafkaConfig
from gateway.crypto.trust import TrustStore
from gateway.dev.exchange import Exchange, init_exchange, platform_id
from gateway.dev.local_kafka import KafkaError, LocalKafka, env_bootstrap_servers, free_port
from gateway.http.auth import TokenMinter
from gateway.kafka.reader import read_topic
from gateway.kafka.transport import ensure_topics
from gateway.runtime import INBOX_PARTITIONS
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.regions import AUDIT_TOPIC, REGIONS, region_slug

__all__ = ["GatewayFleet", "run_demo", "wait_gateways_ready"]

FAMILIES = ("identity", "license", "medical", "case", "credit")
MARKER = ".yrdx-demo"  # marks a folder the demo owns, so that a rerun may clear what the last run left
GATEWAY_START_S = 60.0
DELIVERY_WAIT_S = 30.0


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why."""


class Progress:
    """Timestamped progress lines (seconds since the start)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._t0 = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"[{time.monotonic() - self._t0:5.1f}s] {text}", file=self._out, flush=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._t0


# --- the gateway processes ----------------------------------------------------------------------------------


class GatewayFleet:
    """`yrdx serve` once per region, each its own process, as operators run it."""

    def __init__(self, log_dir: Path, cwd: Path | None = None) -> None:
        self.log_dir = log_dir
        self.cwd = cwd  # where the processes start (default: the exchange's folder); a checkout runs its own code
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def _ready_file(self, region: str) -> Path:
        return self.log_dir / f"{region_slug(region)}.port"

    def log_file(self, region: str) -> Path:
        return self.log_dir / f"{region_slug(region)}.log"

    def start(self, exchange: Exchange, regions: Sequence[str] = REGIONS) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for region in regions:
            ready = self._ready_file(region)
            ready.unlink(missing_ok=True)
            with self.log_file(region).open("ab") as log:  # the child keeps its own copy of the descriptor
                self.procs[region] = subprocess.Popen(  # noqa: S603 - fixed argv
                    [sys.executable, "-m", "gateway.cli", "serve", "--config",
                     str(exchange.config_path(region)), "--ready-file", str(ready), "--log-level", "WARNING"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd or exchange.dir,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    # Out of the terminal's process group: Ctrl-C reaches the demo alone, which then stops
                    # the gateways in order (SIGTERM, drain) instead of racing them.
                    start_new_session=True,
                )

    def _tail(self, region: str, lines: int = 15) -> str:
        try:
            text = self.log_file(region).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self, timeout_s: float = GATEWAY_START_S) -> dict[str, int]:
        """The port of each gateway, once each has written its ready file."""
        deadline = time.monotonic() + timeout_s
        while len(self.ports) < len(self.procs):
            for region, proc in self.procs.items():
                if region in self.ports:
                    continue
                if proc.poll() is not None:
                    tail = self._tail(region)
                    raise DemoError(f"gateway {region} exited with code {proc.returncode}:\n{tail}")
                ready = self._ready_file(region)
                text = ready.read_text().strip() if ready.exists() else ""
                if text:
                    self.ports[region] = int(text)
            if time.monotonic() > deadline:
                late = ", ".join(r for r in self.procs if r not in self.ports)
                raise DemoError(f"gateway(s) {late} did not start within {timeout_s:.0f} s")
            await asyncio.sleep(0.05)
        return dict(self.ports)

    def stop(self, timeout_s: float = 20.0) -> list[str]:
        """SIGTERM to every gateway still running, SIGKILL to those still there after `timeout_s`.

        Idempotent. Returns how each one ended, for the progress line."""
        running = {r: p for r, p in self.procs.items() if p.poll() is None}
        for p in running.values():
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        ended = []
        for region, p in running.items():
            try:
                code = p.wait(max(0.1, deadline - time.monotonic()))
                ended.append(f"{region} exit {code}")
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
                ended.append(f"{region} killed")
        return ended


class ConsoleProcess:
    """`yrdx console` over the demo's exchange, its own process (out of the terminal's process group, like the
    gateways), told where each gateway listens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def log_file(self) -> Path:
        return self.log_dir / "console.log"

    def _spawn(self, exchange: Exchange, ports: Mapping[str, int], ready: Path) -> subprocess.Popen[bytes]:
        ready.unlink(missing_ok=True)
        gateways = [f"--gateway={r}=http://127.0.0.1:{p}" for r, p in ports.items()]
        with self.log_file.open("ab") as log:
            return subprocess.Popen(  # noqa: S603 - fixed argv
                [sys.executable, "-m", "gateway.cli", "console", "--dir", str(exchange.dir), "--port", "0",
                 "--ready-file", str(ready), "--log-level", "WARNING", *gateways],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=exchange.dir,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
            )

    async def start(self, exchange: Exchange, ports: Mapping[str, int], timeout_s: float = 30.0) -> str:
        ready = self.log_dir / "console.port"
        self.proc = await asyncio.to_thread(self._spawn, exchange, ports, ready)
        deadline = time.monotonic() + timeout_s
        while not (ready.exists() and ready.read_text().strip()):
            if self.proc.poll() is not None:
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
                raise DemoError(f"yrdx console exited with code {self.proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise DemoError(f"yrdx console did not start within {timeout_s:.0f} s")
            await asyncio.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(ready.read_text())}/"
        return self.url

    def stop(self, timeout_s: float = 15.0) -> str:
        """SIGTERM, then SIGKILL after `timeout_s`; idempotent. How it ended, for the progress line."""
        p = self.proc
        if p is None or p.poll() is not None:
            return "not running"
        p.send_signal(signal.SIGTERM)
        try:
            return f"exit {p.wait(timeout_s)}"
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
            return "killed"


async def _until_interrupted() -> None:
    """Until Ctrl-C (SIGINT) or SIGTERM: the end of `yrdx demo --keep`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
    except (RuntimeError, ValueError):  # not the main thread: only KeyboardInterrupt ends it
        pass
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


# --- the report ---------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def render_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], align: str, indent: str = "  "
) -> str:
    """A plain-text table; `align` has one letter per column, ``l`` (left) or ``r`` (right)."""
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align, strict=True)]
        return (indent + "  ".join(parts)).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def family_report(ledger: Ledger, family: str) -> str:
    attempts = [a for a in ledger.attempts if a.family == family]
    groups: dict[tuple[str, str], list[Attempt]] = defaultdict(list)
    for a in attempts:
        groups[a.type, a.route].append(a)

    def row(label: str, route: str, items: Sequence[Attempt]) -> list[object]:
        outcomes = [ledger.outcome(a) for a in items]
        latencies = [x for x in (ledger.latency_s(a) for a in items) if x is not None]
        rejected = sum(1 for o in outcomes if o not in (None, DELIVERED))
        return [label, route, len(items), outcomes.count(DELIVERED), rejected,
                _ms(percentile(latencies, 50)), _ms(percentile(latencies, 99))]

    rows = [row(t, route, items) for (t, route), items in sorted(groups.items())]
    rows.append(row("all", "", attempts))
    reasons = Counter(
        (o, a.story) for a in attempts if (o := ledger.outcome(a)) not in (None, DELIVERED)
    )
    pending = sum(1 for a in attempts if ledger.outcome(a) is None)
    headers = ("type", "route", "sent", "delivered", "rejected", "p50 ms", "p99 ms")
    lines = [family, render_table(headers, rows, "llrrrrr")]
    for (code, story), n in sorted(reasons.items()):
        lines.append(f"  rejected: {n} x {code} ({story})")
    if pending:
        lines.append(f"  not delivered: {pending}")
    return "\n".join(lines)


def _short(value: object) -> str:
    """Codes and ids as they are; hashes and thumbprints (long hex or base64url tokens) cut short."""
    text = str(value)
    if len(text) > 40 and all(c.isalnum() or c in "-_" for c in text):
        return text[:12] + ".."
    return text


def journey_report(records: Sequence[Mapping[str, Any]], message_id: str, attempt: Attempt,
                   status: Mapping[str, Any] | None) -> str:
    steps = journey(records, message_id)
    rows = [
        [r.get("at", ""), r.get("region", ""), r.get("seq", ""), r.get("stage", ""),
         _short(r.get("hash", "")),
         " ".join(f"{k}={_short(v)}" for k, v in sorted((r.get("detail") or {}).items()))
         + ("" if r.get("message_id") == message_id else "  (the receipt itself)")]
        for r in steps
    ]
    regions = sorted({str(r.get("region")) for r in steps})
    lines = [
        f"journey of {attempt.type} {message_id} ({attempt.route}): {len(steps)} audit records at "
        f"{', '.join(regions) or 'no region'}, read back from {AUDIT_TOPIC}",
        render_table(("at", "region", "seq", "stage", "hash", "detail"), rows, "llrlll")
        if rows else "  (no audit records)",
    ]
    where = f"GET /v1/messages/{{id}} at {attempt.sender}"
    if status is None:
        lines.append(f"  origin status ({where}): unavailable")
    else:
        receipt = status.get("receipt") or {}
        same = receipt.get("envelope_sha256") == status.get("envelope_sha256")
        lines += [
            f"  origin status ({where}): {status.get('status')}, envelope sha256 "
            f"{_short(status.get('envelope_sha256', ''))}",
            f"  receipt {receipt.get('receipt_id', '-')} signed by {receipt.get('by', '-')} "
            f"(certificate {_short(receipt.get('signer', '-'))}): outcome {receipt.get('outcome', '-')}, "
            f"envelope sha256 {'matches' if same else 'DIFFERS'}",
        ]
    return "\n".join(lines)


# --- the run ------------------------------------------------------------------------------------------------


def _prepare(work_dir: Path) -> Path:
    root = work_dir.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()) and not (root / MARKER).exists():
        raise DemoError(f"{root} is not empty and was not made by `yrdx demo`; choose a new or empty folder")
    for name in ("kafka", "var", "logs"):  # a fresh broker and fresh gateway state at every run
        shutil.rmtree(root / name, ignore_errors=True)
    (root / MARKER).write_text("a work folder of `yrdx demo`; the next run replaces its content\n")
    return root


async def _create_topics(kafka: KafkaConfig) -> None:
    names = kafka.topics
    topics = {names.inbox(r): INBOX_PARTITIONS for r in REGIONS}
    topics.update({names.dlq(r): 1 for r in REGIONS})
    topics.update({names.audit: 1, names.trust: 1})
    await ensure_topics(kafka, topics)


async def wait_gateways_ready(
    session: aiohttp.ClientSession, ports: Mapping[str, int], timeout_s: float = 30.0
) -> None:
    """Every gateway's /readyz says ready (broker reachable, trust and schemas loaded, consumer running)."""
    deadline = time.monotonic() + timeout_s
    for region, port in ports.items():
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as r:
                    if r.status == 200:
                        break
            if time.monotonic() > deadline:
                raise DemoError(f"gateway {region} is not ready after {timeout_s:.0f} s")
            await asyncio.sleep(0.1)


async def _audit_summary(kafka: KafkaConfig, trust: TrustStore) -> str:
    """What an auditor's `yrdx audit verify` says about the whole trail the demo left."""
    values = [(r.key, r.value, r.offset) for r in
              sorted(await read_topic(kafka, kafka.topics.audit, 15.0), key=lambda r: (r.partition, r.offset))]
    report = verify_values(values, trust)
    heads = ", ".join(f"{region} #{s.head_seq}" for region, s in sorted(report.regions.items()))
    verdict = "every chain, checkpoint signature and countersignature holds" if report.ok else (
        f"{len(report.faults)} fault(s): " + ", ".join(f"{k} {n}" for k, n in report.counts().items() if n))
    return (f"audit verify: {report.records} records in {report.segments} signed segments ({heads}): {verdict}"
            + (f"; {len(report.notes)} note(s)" if report.notes else ""))


async def _read_journey(kafka: KafkaConfig, message_id: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The audit records, read again until the origin's `receipt_received` is among them (audit segments are
    flushed every 0.2 s, so the last step may trail the receipt by a moment)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = await read_audit_records(kafka, timeout_s=timeout_s)
        stages = {r.get("stage") for r in journey(records, message_id)}
        if "receipt_received" in stages or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.3)


async def _wait_all_delivered(cast: Cast, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await cast.sim.settle(timeout_s=max(0.0, deadline - time.monotonic()))
        if all(cast.ledger.outcome(a) is not None for a in cast.ledger.attempts):
            return
        await asyncio.sleep(0.1)


async def _demo(root: Path, kafka: KafkaConfig, alg: str, fleet: GatewayFleet, console: ConsoleProcess, say: Progress,
                out: TextIO, keep: bool = False) -> int:
    registry = SchemaRegistry.load()
    ledger = Ledger()
    sim = SimulatedPlatforms(ledger, registry)
    await sim.start()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        await _create_topics(kafka)
        exchange = init_exchange(root, base_port=0, bootstrap_servers=kafka.bootstrap_servers,
                                 webhook_urls={r: sim.url(r) for r in REGIONS}, force=True,
                                 namespace=kafka.namespace, alg=alg)
        say(f"exchange initialised in {root}: development PKI, 4 gateway configs, platforms on webhooks "
            f"at :{sim.port}/<region>")
        await asyncio.to_thread(fleet.start, exchange)
        ports = await fleet.wait_ready()
        await wait_gateways_ready(session, ports)
        say("gateways ready: " + "  ".join(f"{r} :{p}" for r, p in ports.items()))
        url = await console.start(exchange, ports)
        say(f"console: {url} (sign in with the operator token in {root / 'secrets' / 'metrics.token'})")

        trust = TrustStore.from_files([exchange.pki.ca_cert], [exchange.pki.gateway_cert(r) for r in REGIONS])
        clients = {
            r: PlatformClient(session, f"http://127.0.0.1:{ports[r]}", r,
                              TokenMinter(platform_id(r), exchange.pki.platform_key(r), r), ledger)
            for r in REGIONS
        }
        sim.connect(clients, trust)
        cast = build_cast(registry, ledger, sim, Scale())

        say("stories: Anhui patients treated in Shanghai, Zhejiang licences checked by Jiangsu, "
            "Jiangsu residents verified by Shanghai ...")
        gov = wire_gov_services(sim, root)
        results: list[StoryResult] = list(await asyncio.gather(*(story() for story in good_stories(cast)),
                                                               gov_services_story(cast, gov)))
        for r in results:
            say(f"  {'ok' if r.ok else 'FAILED'}: {r.name}: {r.summary}")
        say("bad ones: a tampered record, a schema violation, a type the platform may not send ...")
        bad = await bad_cases(cast, kafka)
        for r in bad:
            say(f"  {'ok' if r.ok else 'FAILED'}: {r.name}: {r.summary}")
        results += bad

        await _wait_all_delivered(cast, DELIVERY_WAIT_S)
        delivered = [a for a in ledger.attempts if ledger.outcome(a) == DELIVERED]
        receipts, receipt_problems = await check_receipts(cast, delivered)
        say(f"signed receipts back at the origins: {receipts}/{len(delivered)}")

        highlight = next((a for a in ledger.attempts if a.id == cast.highlight), None)
        journey_text = "  (no settlement request was delivered)"
        if highlight is not None and highlight.id is not None:
            status = await clients[highlight.sender].wait_status(highlight.id, DELIVERED)
            records = await _read_journey(kafka, highlight.id)
            journey_text = journey_report(records, highlight.id, highlight, status)

        print("\nper family (latency: the platform's POST to its gateway -> the webhook call at the "
              "destination platform)\n", file=out)
        for family in FAMILIES:
            print(family_report(ledger, family) + "\n", file=out)
        print(journey_text + "\n", file=out, flush=True)
        print(await _audit_summary(kafka, trust) + "\n", file=out, flush=True)

        from adapters.story_counter import counter_story  # it runs on this module's GatewayFleet

        say("the counter: an Anhui patient at a Shanghai hospital, in NHSA through the facade (own gateways) ...")
        counter, latencies = await counter_story(root / "counter", kafka.bootstrap_servers, kafka.namespace)
        say(f"  {'ok' if counter.ok else 'FAILED'}: {counter.name}: {counter.summary}")
        print(latencies + "\n", file=out, flush=True)
        results.append(counter)

        failures = _failures(ledger, results, receipt_problems, sim)
        for f in failures:
            print(f"FAILED: {f}", file=out)
        good = sum(1 for a in ledger.attempts if a.expect == DELIVERED)
        say(f"{len(failures)} unexpected outcome(s)" if failures else
            f"every story ended as expected: {good} good messages delivered, "
            f"{len(ledger.attempts) - good} bad ones refused")
        if keep:
            say(f"--keep: Kafka ({kafka.bootstrap_servers}), the gateways and the console ({url}) keep running; "
                "Ctrl-C stops everything")
            await _until_interrupted()
        return 1 if failures else 0
    finally:
        await session.close()
        await sim.stop()


def _failures(ledger: Ledger, results: Sequence[StoryResult], receipt_problems: Sequence[str],
              sim: SimulatedPlatforms) -> list[str]:
    failures: list[str] = []
    for a in ledger.attempts:
        outcome = ledger.outcome(a)
        if outcome != a.expect:
            got = outcome or "nothing"
            failures.append(f"{a.type} {a.route} ({a.story}): expected {a.expect}, got {got}")
    failures += [p for r in results for p in r.problems]
    failures += list(receipt_problems)
    failures += sim.reaction_errors
    failures += [f"{region} platform refused a delivery: {why}" for region, why in sim.refused_deliveries]
    return failures


def run_demo(work_dir: Path | None, keep: bool = False, out: TextIO | None = None, *, alg: str = "ES256",
             namespace: str = "") -> int:
    """Run the whole demo; 0 if every story ended as expected. `work_dir` None: a temporary folder, removed at
    the end unless `keep`; with `keep`, the broker, the gateways and the console also stay up until Ctrl-C.
    `alg` SM2SM3 plays it with the national suite; `namespace` (a `kafka.namespace`) keeps it apart from another
    exchange on the same cluster."""
    out = out or sys.stdout
    say = Progress(out)
    kafka: LocalKafka | None = None
    fleet: GatewayFleet | None = None
    console: ConsoleProcess | None = None
    root: Path | None = None
    temporary = work_dir is None
    try:
        root = Path(tempfile.mkdtemp(prefix="yrdx-demo-")) if work_dir is None else _prepare(work_dir)
        fleet = GatewayFleet(root / "logs")
        console = ConsoleProcess(root / "logs")
        bootstrap = env_bootstrap_servers()
        if bootstrap is not None:
            say(f"using the Kafka cluster at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS)")
        else:
            kafka = LocalKafka(root / "kafka", port=free_port(), controller_port=free_port())
            if not kafka.jars_ready():
                say(f"fetching Apache Kafka {kafka.version} jars with Maven (first run only) ...")
            say(f"starting Apache Kafka {kafka.version} (KRaft, one node) on {kafka.bootstrap_servers} ...")
            kafka.start()
            bootstrap = kafka.bootstrap_servers
            say("Kafka ready")
        if alg != "ES256":
            say(f"signing suite: {alg}")
        kafka_cfg = KafkaConfig(bootstrap_servers=bootstrap, namespace=namespace)
        code = asyncio.run(_demo(root, kafka_cfg, alg, fleet, console, say, out, keep))
        say(f"stopping the console: {console.stop()}")
        console = None
        say(f"stopping gateways: {', '.join(fleet.stop()) or 'none running'}")
        fleet = None
        return code
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    except (DemoError, KafkaError) as e:
        say(f"yrdx demo failed: {e}")
        return 1
    except Exception:  # anything else is a bug: show where, then clean up
        traceback.print_exc(file=out)
        say("yrdx demo failed with an unexpected error")
        return 1
    finally:
        if console is not None:
            say(f"stopping the console: {console.stop()}")
        if fleet is not None:
            say(f"stopping gateways: {', '.join(fleet.stop()) or 'none running'}")
        if kafka is not None:
            kafka.stop()
            say("Kafka stopped")
        if root is not None:
            if temporary and not keep:
                shutil.rmtree(root, ignore_errors=True)
            else:
                say(f"work folder kept: {root} (gateway logs in {root / 'logs'})")
