"""Two Shanghai replicas on one PostgreSQL state, in an exchange of their own (namespace `rx`) on the session's
broker: they share SH's consumer group and ingress, each writes its own audit chain (SH/sh-a, SH/sh-b).

(a) 5,000 messages from JS (pull inbox) and ZJ (webhook), one replica SIGKILLed in the middle: every accepted
message delivered, none twice into the pull inbox, a webhook repeat only for a message in flight at the kill (the
same id and bytes), and `yrdx audit verify` holds with the killed replica's chain ended (a crash_gap note).
(b) A rolling restart under steady traffic loses nothing and delivers nothing twice; one Idempotency-Key sent to
both replicas sends one message. Both print their figures (messages, lost, duplicated, takeover time)."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from gateway.dev.exchange import Exchange, edit_config
from gateway.dev.pki import PkiLayout
from gateway.kafka.reader import read_topic
from gateway.schemas.registry import SchemaRegistry
from gateway.wire import envelope
from gateway.wire.regions import Topics
from tests._util import GatewayProcess, PlatformClient, WebhookSink, yrdx
from tests.conftest import Broker

REGISTRY = SchemaRegistry.load()
pytestmark = pytest.mark.disruptive

NAMESPACE = "rx"
INBOX_TYPE = "medical.clearing.statement"  # SH delivers it to its pull inbox
WEBHOOK_TYPE = "medical.clearing.confirm"  # ... and this one by webhook (a second SH platform)
STREAM = 5000
BATCH = 250


@dataclass
class Replicas:
    root: Path
    sh: dict[str, GatewayProcess]  # instance id -> replica
    peers: dict[str, GatewayProcess]
    clients: dict[str, PlatformClient]  # JS, ZJ, and SH through replica sh-a
    sh_clients: dict[str, PlatformClient]  # SH's platform through each replica
    sink: WebhookSink
    bootstrap: str


@pytest_asyncio.fixture
async def replicas(kafka: Broker, postgres_db: str, tmp_path: Path) -> AsyncIterator[Replicas]:
    done = await asyncio.to_thread(yrdx, "init", "--dir", str(tmp_path), "--base-port", "0", "--bootstrap-servers",
                                   kafka.bootstrap_servers, "--namespace", NAMESPACE)
    assert done.returncode == 0, done.stderr
    ex = Exchange(tmp_path.resolve(), PkiLayout(tmp_path.resolve() / "certs"))
    sink = WebhookSink()
    await sink.start()
    sh = yaml.safe_load(ex.config_path("SH").read_text())
    inbox_platform = sh["platforms"][0]
    inbox_platform["receives"].remove(WEBHOOK_TYPE)
    webhook_platform = {**inbox_platform, "id": "sh-webhook", "receives": [WEBHOOK_TYPE], "may_send": [],
                        "delivery": {"mode": "webhook", "url": sink.url("SH"), "max_attempts": 40,
                                     "backoff_initial_s": 0.1, "backoff_max_s": 0.5}}
    edit_config(ex.config_path("SH"), platforms=[inbox_platform, webhook_platform], state={"dsn": postgres_db},
                kafka={**sh["kafka"], "inbox_partitions": 4})
    base = yaml.safe_load(ex.config_path("SH").read_text())
    sh_replicas = {}
    for instance in ("sh-a", "sh-b"):
        path = tmp_path / f"{instance}.yaml"
        path.write_text(yaml.safe_dump({**base, "instance_id": instance}))
        sh_replicas[instance] = GatewayProcess(path, tmp_path)
    peers = {r: GatewayProcess(ex.config_path(r), tmp_path) for r in ("JS", "ZJ")}
    session = aiohttp.ClientSession()
    everyone = [*sh_replicas.values(), *peers.values()]
    try:
        for g in everyone:
            await asyncio.to_thread(g.start)
        clients = {r: PlatformClient(session, g, ex, r) for r, g in peers.items()}
        sh_clients = {i: PlatformClient(session, g, ex, "SH") for i, g in sh_replicas.items()}
        yield Replicas(tmp_path, sh_replicas, peers, {**clients, "SH": sh_clients["sh-a"]}, sh_clients, sink,
                       kafka.bootstrap_servers)
    finally:
        await session.close()
        for g in everyone:
            await asyncio.to_thread(g.stop)
        await sink.stop()


def payload(msg_type: str, i: int) -> dict[str, Any]:
    doc = copy.deepcopy(REGISTRY.examples(msg_type)[0])
    if msg_type == INBOX_TYPE:
        doc["clr_appy_evt_id"] = f"EVT{i:08d}"
    return doc


async def send_stream(client: PlatformClient, msg_type: str, count: int, accepted: list[str]) -> None:
    """`count` messages to SH in batches of BATCH (ten conversations); each 202 lands in `accepted`."""
    conversations = [str(uuid.uuid4()) for _ in range(10)]
    for start in range(0, count, BATCH):
        batch = [{"type": msg_type, "to": "SH", "payload": payload(msg_type, i),
                  "correlation_id": conversations[i % 10]} for i in range(start, start + BATCH)]
        status, doc = await client.post("/v1/messages/batch", {"messages": batch})
        assert status == 207, doc
        accepted += [r["id"] for r in doc["results"] if r["status"] == 202]


async def pull_all(r: Replicas, wanted: set[str], got: list[str], timeout: float) -> None:
    """Pull SH's inbox (through either replica: the inbox is the shared state) until `wanted` is in `got`."""
    deadline = time.monotonic() + timeout
    turn = 0
    while not wanted <= set(got) and time.monotonic() < deadline:
        live = [c for i, c in r.sh_clients.items() if r.sh[i].proc and r.sh[i].proc.poll() is None]
        got += [m["id"] for m in await live[turn % len(live)].pull(max_n=1000, wait=1.0)]
        turn += 1


def takeover_seconds(log: Path, since: int, killed_at: float, partitions: int, timeout: float) -> float:
    """Seconds from the kill until the survivor's log says it was assigned all `partitions` of the inbox."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with log.open("rb") as f:
            f.seek(since)
            for line in f.read().decode(errors="replace").splitlines():
                if "inbox partitions assigned" in line and len(json.loads(line)["partitions"]) == partitions:
                    at = datetime.fromisoformat(json.loads(line)["ts"].replace("Z", "+00:00")).timestamp()
                    return at - killed_at
        time.sleep(0.2)
    raise AssertionError(f"the survivor never took over all {partitions} partitions")


def holds_partitions(log: Path) -> bool:
    """Whether the replica's latest assignment in its log holds at least one inbox partition."""
    latest: list[int] = []
    for line in log.read_bytes().decode(errors="replace").splitlines():
        if "inbox partitions assigned" in line:
            latest = json.loads(line)["partitions"]
    return bool(latest)


async def both_hold_partitions(r: Replicas, timeout: float = 120.0) -> None:
    """Until each SH replica holds inbox partitions: the stream must be shared before one is killed (ingress can
    accept half of it before a second member's join has gone through the group)."""
    deadline = time.monotonic() + timeout
    while not all(holds_partitions(g.log_path) for g in r.sh.values()):
        assert time.monotonic() < deadline, "the replicas never shared the inbox's partitions"
        await asyncio.sleep(0.2)


async def verify_json(config: Path) -> dict[str, Any]:
    done = await asyncio.to_thread(yrdx, "audit", "verify", "--config", str(config), "--json", "--timeout", "60")
    assert done.stdout, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


async def test_a_killed_replica_loses_nothing_and_its_chain_verifies_as_ended(replicas: Replicas) -> None:
    r = replicas
    await both_hold_partitions(r)
    inbox_ids: list[str] = []
    webhook_ids: list[str] = []
    senders = asyncio.gather(send_stream(r.clients["JS"], INBOX_TYPE, STREAM // 2, inbox_ids),
                             send_stream(r.clients["ZJ"], WEBHOOK_TYPE, STREAM // 2, webhook_ids))
    started = time.monotonic()
    while len(inbox_ids) + len(webhook_ids) < STREAM // 2:
        assert time.monotonic() - started < 300, "the stream stalled before the kill"
        await asyncio.sleep(0.05)
    survivor, victim = r.sh["sh-a"], r.sh["sh-b"]
    since = survivor.log_path.stat().st_size
    killed_at = time.time()
    victim.kill()
    await senders
    took = await asyncio.to_thread(takeover_seconds, survivor.log_path, since, killed_at, 4, 120)

    wanted = set(inbox_ids)
    got: list[str] = []
    await pull_all(r, wanted, got, timeout=240)
    deadline = time.monotonic() + 240
    while not set(webhook_ids) <= set(r.sink.ids("SH")) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    hooks = r.sink.ids("SH")
    lost = len(wanted - set(got)) + len(set(webhook_ids) - set(hooks))
    inbox_twice = [i for i, n in Counter(got).items() if n > 1]
    hook_twice = [i for i, n in Counter(hooks).items() if n > 1]
    print(f"\nreplica SIGKILL: {len(inbox_ids) + len(webhook_ids)} messages accepted ({len(inbox_ids)} inbox, "
          f"{len(webhook_ids)} webhook), lost {lost}, inbox twice {len(inbox_twice)}, webhook repeats "
          f"{len(hook_twice)}, survivor took over all partitions {took:.1f} s after the kill")
    assert len(inbox_ids) + len(webhook_ids) == STREAM
    assert lost == 0, f"{lost} accepted messages were never delivered"
    assert inbox_twice == [], f"{len(inbox_twice)} messages were queued twice"
    assert len(hook_twice) <= 32, f"{len(hook_twice)} webhook repeats: more than the deliveries in flight"
    for i in hook_twice:  # a repeat is the same message: same id, same bytes
        assert len({d["body"] for d in r.sink.received["SH"] if d["id"] == i}) == 1

    # The killed replica's chain ends (crash_gap note), the survivor's goes on, and the whole trail holds.
    deadline = time.monotonic() + 180
    while True:
        report = await verify_json(r.sh["sh-a"].config)
        ended = [n for n in report["notes"] if n["region"] == "SH/sh-b" and n["kind"] == "crash_gap"]
        if ended or time.monotonic() > deadline:
            break
        await asyncio.sleep(5)
    assert report["ok"], report["faults"][:10]
    assert {"SH/sh-a", "SH/sh-b", "JS", "ZJ"} <= set(report["regions"]), report["regions"]
    assert ended, [n for n in report["notes"] if n["region"].startswith("SH")]
    assert "killed" in ended[0]["detail"]
    assert report["counts"]["truncated"] == 0


async def steady(client: PlatformClient, stop: asyncio.Event, accepted: list[str], refused: list[int]) -> None:
    """Batches of 20 to SH every 0.1 s until `stop`."""
    i = 0
    while not stop.is_set():
        batch = [{"type": INBOX_TYPE, "to": "SH", "payload": payload(INBOX_TYPE, i + k)} for k in range(20)]
        i += 20
        status, doc = await client.post("/v1/messages/batch", {"messages": batch})
        if status == 207:
            accepted += [m["id"] for m in doc["results"] if m["status"] == 202]
        else:
            refused.append(status)
        await asyncio.sleep(0.1)


async def test_a_rolling_restart_loses_nothing_and_one_idempotency_key_sends_one_message(replicas: Replicas) -> None:
    r = replicas
    stop = asyncio.Event()
    accepted: list[str] = []
    refused: list[int] = []
    traffic = asyncio.create_task(steady(r.clients["JS"], stop, accepted, refused))
    got: list[str] = []
    started = time.monotonic()
    for instance in ("sh-a", "sh-b"):
        await asyncio.sleep(2)
        await asyncio.to_thread(r.sh[instance].stop)  # SIGTERM: drain, commit, close the chain
        assert r.sh[instance].proc is not None and r.sh[instance].proc.returncode == 0
        await asyncio.to_thread(r.sh[instance].start)
    await asyncio.sleep(2)
    stop.set()
    await traffic
    took = time.monotonic() - started
    await pull_all(r, set(accepted), got, timeout=180)
    lost = set(accepted) - set(got)
    twice = [i for i, n in Counter(got).items() if n > 1]
    print(f"\nrolling restart: {len(accepted)} messages accepted in {took:.0f} s of steady traffic, lost {len(lost)}, "
          f"delivered twice {len(twice)}, refused requests {len(refused)}")
    assert len(accepted) > 200
    assert refused == [], refused  # the sender (JS) was never restarted: nothing to refuse
    assert not lost, f"{len(lost)} accepted messages were never delivered"
    assert twice == [], f"{len(twice)} messages were delivered twice"

    # One Idempotency-Key sent to both replicas at once: one id, one message's bytes, one delivery at JS.
    key = f"replicas-{uuid.uuid4()}"
    body = {"type": "medical.filing.request", "to": "JS", "payload": REGISTRY.examples("medical.filing.request")[0]}
    answers = await asyncio.gather(*(
        r.sh_clients[i].post("/v1/messages", body, {"Idempotency-Key": key}) for i in ("sh-a", "sh-b") * 4
    ))
    ids = {doc.get("id") for _, doc in answers}
    assert all(status == 202 for status, _ in answers), answers
    assert len(ids) == 1, ids
    (mid,) = ids
    js = r.clients["JS"]
    pulled: list[str] = []
    deadline = time.monotonic() + 60
    while mid not in pulled and time.monotonic() < deadline:
        pulled += [m["id"] for m in await js.pull(wait=1.0)]
    pulled += [m["id"] for m in await js.pull(wait=2.0)]
    assert pulled.count(mid) == 1, pulled
    records = await read_topic(r.bootstrap, Topics(NAMESPACE).inbox("JS"))
    copies = {rec.value for rec in records if envelope.parse(rec.value).id == mid}
    assert len(copies) == 1, f"{len(copies)} different envelopes travelled under one Idempotency-Key"

