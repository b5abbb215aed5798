"""The auditors' side end to end, on the session's exchange: `yrdx audit trace` follows a medical conversation
over three regions (receipts included) with the gateways' certificate thumbprints, the HTTP route answers the same,
`yrdx audit index --follow` killed mid-way resumes from its stored offset and indexes every record exactly once,
and no audit record carries an ID number, a name or an amount from the sample payloads. The gateways write batch
records (trail format 3): the index and the trace hold them entry by entry, `(region, seq, entry)`."""

from __future__ import annotations

import asyncio
import copy
import os
import re
import signal
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.journey import flatten_segments
from gateway.audit.model import all_entries, record_hash
from gateway.crypto.jws import thumbprint_s256
from gateway.crypto.keyfiles import load_certificate
from gateway.dev.exchange import BUSINESS_TYPES
from gateway.files.claims import names_a_file
from gateway.kafka.reader import read_topic
from gateway.relay.purposes import UsePolicy
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.regions import AUDIT_TOPIC
from tests._util import ROOT
from tests.conftest import Broker, Exchange4

REGISTRY = SchemaRegistry.load()
ORIGIN_STAGES = {"accepted", "published", "receipt_received"}
DESTINATION_STAGES = {"received", "verified", "delivered", "receipt_sent"}


def example(msg_type: str, i: int = 0) -> dict[str, Any]:
    return copy.deepcopy(REGISTRY.examples(msg_type)[i])


async def yrdx(*args: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """The `yrdx` command line as a separate process (without blocking the session's event loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def send(ex: Exchange4, sender: str, to: str, msg_type: str, correlation_id: str | None = None) -> dict[str, Any]:
    """One message from `sender`'s platform, returned once the origin holds the destination's signed receipt."""
    extra = {"correlation_id": correlation_id} if correlation_id else {}
    status, doc = await ex.clients[sender].send(msg_type, to, example(msg_type), **extra)
    assert status == 202, doc
    final = await ex.clients[sender].wait_status(doc["id"], "delivered")
    assert final["status"] == "delivered", final
    return final


def thumbprint(ex: Exchange4, region: str) -> str:
    return thumbprint_s256(load_certificate(ex.exchange.pki.gateway_cert(region)))


async def drain_inbox(ex: Exchange4, region: str, ids: set[str]) -> None:
    """Inbox regions hold what was delivered until the platform pulls it: take ours away."""
    deadline = time.monotonic() + 30
    while ids and time.monotonic() < deadline:
        ids -= {m["id"] for m in await ex.clients[region].pull(wait=0.5)}


def complete(doc: dict[str, Any], hops: dict[str, tuple[str, str]]) -> bool:
    """Every message's stages at its origin and destination, and its receipt's arrival, are in the trace."""
    have = {(r["message_id"], r["region"], r["stage"]) for r in doc["records"]}
    for msg, (origin, dest) in hops.items():
        if not {(msg, origin, s) for s in ORIGIN_STAGES} | {(msg, dest, s) for s in DESTINATION_STAGES} <= have:
            return False
        receipt = next(r["detail"]["receipt"] for r in doc["records"]
                       if r["message_id"] == msg and r["stage"] == "receipt_sent")
        if not {(receipt, origin, "received"), (receipt, origin, "verified")} <= have:
            return False
    return True


async def traced(config: Path, db: Path, msg_id: str, hops: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """`yrdx audit trace --json` until every expected stage is there (segments are flushed every 0.2 s)."""
    deadline = time.monotonic() + 30
    while True:
        code, out, err = await yrdx("audit", "trace", msg_id, "--config", str(config), "--db", str(db), "--json")
        assert code in (0, 3), err
        doc: dict[str, Any] = orjson.loads(out) if code == 0 else {"records": []}
        if code == 0 and complete(doc, hops):
            return doc
        assert time.monotonic() < deadline, f"trace of {msg_id} never completed: {out or err}"
        await asyncio.sleep(0.3)


def sorted_keys(records: list[dict[str, Any]]) -> set[bytes]:
    return {orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records}


async def test_trace_follows_a_medical_conversation_across_three_regions_with_receipts_and_signers(
    exchange: Exchange4, kafka: Broker, tmp_path: Path
) -> None:
    # Anhui files a patient's relocation with Shanghai, Shanghai asks Anhui to settle, Anhui answers, and Anhui's
    # clearing statement to Zhejiang goes in the same conversation.
    filing = await send(exchange, "AH", "SH", "medical.filing.request")
    conv = filing["correlation_id"]
    request = await send(exchange, "SH", "AH", "medical.settlement.request", conv)
    result = await send(exchange, "AH", "SH", "medical.settlement.result", conv)
    clearing = await send(exchange, "AH", "ZJ", "medical.clearing.statement", conv)
    await drain_inbox(exchange, "AH", {request["id"]})
    hops = {filing["id"]: ("AH", "SH"), request["id"]: ("SH", "AH"), result["id"]: ("AH", "SH"),
            clearing["id"]: ("AH", "ZJ")}
    status = {m["id"]: m for m in (filing, request, result, clearing)}
    assert {m["correlation_id"] for m in status.values()} == {conv}

    config, db = exchange.exchange.config_path("AH"), tmp_path / "audit-index.sqlite"
    doc = await traced(config, db, request["id"], hops)
    records = doc["records"]

    assert doc["message_id"] == request["id"] and doc["correlation_ids"] == [conv]
    assert doc["message_ids"] == list(hops)  # in the order the conversation happened
    assert doc["regions"] == ["AH", "SH", "ZJ"]
    assert [(r["at"], r["region"], r["seq"], r.get("entry", -1)) for r in records] == sorted(
        (r["at"], r["region"], r["seq"], r.get("entry", -1)) for r in records)
    # Exactly the records the gateways wrote, message by message (a batch record's entries), whose hashes compute.
    written = flatten_segments(r.value for r in await read_topic(kafka.bootstrap_servers, AUDIT_TOPIC, timeout_s=60))
    assert sorted_keys(records) <= sorted_keys(all_entries(written))
    assert any("entry" in r for r in records)  # the gateways write format 3
    hashes = {r["hash"] for r in written if r["hash"] == record_hash(r["prev_hash"], r)}
    assert {r["hash"] for r in records} <= hashes
    for msg, (origin, dest) in hops.items():
        mine = [r for r in records if r["message_id"] == msg]
        assert {r["stage"] for r in mine if r["region"] == origin} >= ORIGIN_STAGES
        assert {r["stage"] for r in mine if r["region"] == dest} >= DESTINATION_STAGES
        assert {r["envelope_sha256"] for r in mine} == {status[msg]["envelope_sha256"]}
        # Signed by the origin gateway's key: the destination verified it against that certificate.
        assert doc["signers"][msg] == thumbprint(exchange, origin)
        assert [r["detail"]["signer"] for r in mine if r["stage"] == "verified"] == [thumbprint(exchange, origin)]
        receipt = next(r["detail"]["receipt"] for r in mine if r["stage"] == "receipt_sent")
        assert receipt in doc["receipt_ids"] and doc["signers"][receipt] == thumbprint(exchange, dest)

        # The hops in causal order have non-decreasing times (one clock here; ties are broken by region).
        when = {(r["message_id"], r["region"], r["stage"]): r["at"] for r in records}
        chain = [when[msg, origin, "accepted"], when[msg, dest, "received"], when[msg, dest, "verified"],
                 when[msg, dest, "delivered"], when[msg, dest, "receipt_sent"], when[receipt, origin, "received"],
                 when[receipt, origin, "verified"], when[msg, origin, "receipt_received"]]
        assert chain == sorted(chain), (msg, chain)
    # Each stage has one record per message: nothing is listed twice.
    assert len({(r["region"], r["seq"], r.get("entry")) for r in records}) == len(records)

    # The table for people: every message's signer, short ids and hashes.
    code, text, err = await yrdx("audit", "trace", clearing["id"], "--config", str(config), "--db", str(db),
                                 "--no-update")
    assert code == 0, err
    for region in ("AH", "SH", "ZJ"):
        assert thumbprint(exchange, region) in text
    for r in records:
        assert r["hash"][:12] in text
    assert f"message {clearing['id']}" in text and "4 messages, 4 receipts" in text

    code, _, err = await yrdx("audit", "trace", "0190a0b1-0000-7000-8000-00000000dead", "--config", str(config),
                              "--db", str(db))
    assert code == 3 and "no audit record names" in err

    # The same JSON over HTTP, from each gateway's own index (it catches up before answering).
    for region in ("AH", "ZJ"):
        deadline = time.monotonic() + 30
        while True:
            code_http, body = await exchange.clients[region].get(f"/v1/audit/messages/{request['id']}", auditor=True)
            if code_http == 200 and body == doc:
                break
            assert time.monotonic() < deadline, (region, code_http, body)
            await asyncio.sleep(0.3)
    code_http, body = await exchange.clients["AH"].get(f"/v1/audit/messages/{request['id']}")
    assert code_http == 403 and body["code"] == "forbidden"  # a platform token has no audit scope
    code_http, body = await exchange.clients["SH"].get("/v1/audit/messages/0190a0b1-0000-7000-8000-00000000dead",
                                                       auditor=True)
    assert code_http == 404 and body["code"] == "not_found"


def _stored(db: Path) -> dict[int, int]:
    if not db.exists():
        return {}
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        try:
            rows = conn.execute("SELECT partition, next_offset FROM audit_positions WHERE topic = ?", (AUDIT_TOPIC,))
            return {int(p): int(o) for p, o in rows}
        except sqlite3.OperationalError:  # the indexer has not created its tables yet
            return {}


async def _start_indexer(config: Path, db: Path, log: Path) -> tuple[asyncio.subprocess.Process, str]:
    """`yrdx audit index --follow` and the first line it prints (where it starts from)."""
    with log.open("ab") as err:  # the child keeps its own copy of the descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "audit", "index", "--follow", "--config", str(config),
            "--db", str(db), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert proc.stdout is not None
    first = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    return proc, first


async def _until(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_indexer_killed_midway_resumes_at_its_stored_offset_and_indexes_every_record_once(
    exchange: Exchange4, kafka: Broker, tmp_path: Path
) -> None:
    config, db = exchange.exchange.config_path("SH"), tmp_path / "audit-index.sqlite"
    stop_traffic = asyncio.Event()
    last_ids: list[str] = []

    async def traffic() -> int:
        """Batches from Shanghai to Zhejiang while the indexer runs, is killed and restarts."""
        batches = 0
        while not stop_traffic.is_set() or batches < 3:
            items = [{"type": "medical.settlement.cancel", "to": "ZJ", "payload": example("medical.settlement.cancel")}
                     for _ in range(20)]
            status, doc = await exchange.clients["SH"].post("/v1/messages/batch", {"messages": items})
            assert status == 207 and doc["accepted"] == 20, doc
            last_ids[:] = [r["id"] for r in doc["results"]]
            batches += 1
            await asyncio.sleep(0.15)
        return batches

    sending = asyncio.create_task(traffic())
    try:
        first, line = await _start_indexer(config, db, tmp_path / "indexer.log")
        assert line.startswith(f"{AUDIT_TOPIC}: nothing indexed yet"), line
        await _until("the indexer stored nothing", lambda: _stored(db).get(0, 0) > 0)
        await asyncio.sleep(0.3)  # a few batches in
        first.send_signal(signal.SIGKILL)
        await first.wait()
        killed_at = _stored(db)[0]
        assert not sending.done()  # killed mid-way: the topic kept growing

        second, line = await _start_indexer(config, db, tmp_path / "indexer.log")
        assert line.startswith(f"{AUDIT_TOPIC}[0]: resuming at offset {killed_at} "), line
    finally:
        stop_traffic.set()
        batches = await sending
    assert batches >= 3
    for msg_id in last_ids:
        await exchange.clients["SH"].wait_status(msg_id, "delivered")
    await asyncio.sleep(0.5)  # the gateways' periodic flush (0.2 s) of their last records
    end = (await read_topic(kafka.bootstrap_servers, AUDIT_TOPIC, timeout_s=60))[-1].offset + 1
    await _until("the restarted indexer did not reach the end of the topic", lambda: _stored(db).get(0, 0) >= end)
    second.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(second.communicate(), 30)
    assert second.returncode == 0, (tmp_path / "indexer.log").read_text()
    stopped_at = _stored(db)[0]
    summary = re.search(r"(\d+) new records indexed \((\d+) read in", out.decode())
    assert summary, out.decode()

    on_topic = [r for r in await read_topic(kafka.bootstrap_servers, AUDIT_TOPIC, timeout_s=60)
                if r.offset < stopped_at]
    # The restart read exactly the segments from the stored offset on, not one before it (counted message by
    # message: a batch record's entries each).
    assert int(summary[2]) == len(all_entries(flatten_segments(r.value for r in on_topic if r.offset >= killed_at)))
    # Every record is indexed exactly once, a row per entry (a different record under a known (region, seq), which
    # would be a rewritten or forked chain, is kept in the conflicts table instead).
    on_topic_keys = {(r["region"], r["seq"], r.get("entry", -1), r["hash"])
                     for r in all_entries(flatten_segments(r.value for r in on_topic))}
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        indexed = conn.execute("SELECT region, seq, entry, hash FROM audit_records").fetchall()
        conflicts = conn.execute("SELECT region, seq, entry, hash FROM audit_conflicts").fetchall()
    assert len(indexed) == len(set(indexed)) == len({(r, s, e) for r, s, e, _ in on_topic_keys})
    assert any(e >= 0 for _, _, e, _ in indexed)  # batch records' entries among them
    assert set(indexed) | set(conflicts) == on_topic_keys


# The sample values of DOMAIN.md and of the schemas' examples that must never reach an audit record.
PERSONAL = {"310115198503120418", "320506199007181520", "330106197811050039", "34010420000229124X",
            "33050099000010000001689700", "张三", "356.80"}
OPERATOR = {"id": "SH-OP-0001", "role": "clerk", "department": "SH-ZWFW"}
PERSONAL_KEYS = {"name", "id_number", "psn_no", "mdtrt_id", "subject_id", "certno", "psn_name"}
MONEY = re.compile(r"^\d+\.\d{2}$")


def _sample_values() -> set[str]:
    found = set(PERSONAL)

    def walk(value: Any, key: str | None) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and (key in PERSONAL_KEYS or (MONEY.match(value) and value != "0.00")):
            found.add(value)

    for t in BUSINESS_TYPES:
        for e in REGISTRY.examples(t):
            walk(e, None)
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else [str(value)]


async def test_no_audit_record_carries_an_id_number_a_name_or_an_amount(exchange: Exchange4, kafka: Broker) -> None:
    # Every sample payload of every business type, Shanghai to Zhejiang: the trail then holds their hops.
    uses = UsePolicy(REGISTRY)  # the types that read personal data carry who asks and why
    # An example naming a claim-checked file waits for a file that never travels here: tests/e2e/test_files.py
    # scans the files topic and the trail of a real file for the same kind of leak.
    items = [{"type": t, "to": "ZJ", "payload": e,
              **({"operator": OPERATOR, "use_cause": min(uses.allowed(t))} if uses.allowed(t) else {})}
             for t in BUSINESS_TYPES for e in REGISTRY.examples(t) if not names_a_file(REGISTRY.schema(t), e)]
    status, doc = await exchange.clients["SH"].post("/v1/messages/batch", {"messages": items})
    assert status == 207 and doc["rejected"] == 0, doc
    for r in doc["results"]:
        final = await exchange.clients["SH"].wait_status(r["id"], "delivered")
        assert final["status"] == "delivered", final
    await asyncio.sleep(0.5)  # the last periodic flush

    records = all_entries(flatten_segments(r.value for r in await read_topic(kafka.bootstrap_servers, AUDIT_TOPIC,
                                                                             timeout_s=60)))
    assert {r["message_id"] for r in records} >= {r["id"] for r in doc["results"]}
    values = _sample_values()
    assert {"张三", "356.80", "33050099000010000001689700"} <= values and len(values) > 20
    leaks = []
    for record in records:
        # `at` is the gateway's own clock (digits and a dot, like an amount); every other value is checked.
        for s in _strings({k: v for k, v in record.items() if k != "at"}):
            # A short amount ("8.50") is a leak when it is a whole value; longer values and names must not appear
            # inside any value either.
            hits = [v for v in values if s == v or ((len(v) >= 6 or not v.isascii()) and v in s)]
            leaks += [(record["region"], record["seq"], record["stage"], v) for v in hits]
    assert not leaks, leaks[:20]
