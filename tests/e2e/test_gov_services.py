"""Government services across regions (issue 12), end to end: two gateway processes (JS and SH) of their own
namespace on the session's broker, pull-inbox platforms played by the test, Shanghai's licence library by
adapters/grants.py.

- the use context: a fetch without use_cause is refused at the sender (400 purpose_required); one whose purpose
  Shanghai does not allow is dead-lettered there (not_permitted_purpose), though Jiangsu's registry allows it;
- licences under the holder's grant: no grant, a used-up grant and a revoked grant are refused with their codes,
  a valid one answers the licence with the annotated copy signed by Shanghai, and the licence file itself travels:
  Shanghai's library uploads it, Jiangsu's platform downloads it by the answer's claim check and checks its digest;
- `GET /v1/usage` lists exactly the fetches that reached Shanghai's library, with operator and purpose;
- a case from submit to evaluation is one `yrdx audit trace`, each message with its stage, in both regions; its
  application form travels as a file (uploaded by Jiangsu, downloaded whole by Shanghai's platform);
- no ID number and no name of the test is in clear on any of the exchange's topics.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from adapters.grants import GrantBook, LicenceFile, LicenceIssuer, synthetic_pdf
from adapters.simulated import Delivery, Licence, cst_now
from gateway.crypto.jws import parse_detached, verify_detached
from gateway.crypto.trust import TrustStore
from gateway.dev.exchange import Exchange, edit_config, init_exchange
from gateway.kafka.reader import read_topic
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.regions import Topics
from tests._util import ROOT, GatewayProcess, PlatformClient, pull_until
from tests.conftest import Broker
from tests.e2e.test_files import download, upload

REGISTRY = SchemaRegistry.load()
REGIONS = ("JS", "SH")
FETCH = "license.fetch.request"
OPERATOR = {"id": "JS-OP-0001", "role": "counter_clerk", "department": "JS-ZWFW"}
GRANT = REGISTRY.examples("license.authorization.grant")[0]  # JS (11320000014008513K) may fetch the SH licence
HOLDER = GRANT["holder_id_hash"]
SH_LICENCE = Licence(GRANT["license_id"], "11100000000013338W011", "11310000002420113A", HOLDER)
SH_FILE = LicenceFile("91310115MA1HK7T23J", "2024-01-10", synthetic_pdf("business licence 91310115MA1HK7T23J"))
ID_NUMBER, NAME = "320506199007181520", "李四"  # the applicant of the case (case.submit example)


@dataclass
class Gov:
    exchange: Exchange
    topics: Topics
    clients: dict[str, PlatformClient]
    issuer: LicenceIssuer
    trust: TrustStore
    root: Path


@pytest_asyncio.fixture(scope="module")
async def gov(kafka: Broker, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gov]:
    root = tmp_path_factory.mktemp("gov")
    namespace = f"gov-{uuid.uuid4().hex[:8]}"
    ex = init_exchange(root, base_port=0, bootstrap_servers=kafka.bootstrap_servers, namespace=namespace)
    # Shanghai lets its licences be fetched for government services only; Jiangsu's view is the schema's.
    edit_config(ex.config_path("SH"), purposes={FETCH: ["gov_service"]})
    gateways = {r: GatewayProcess(ex.config_path(r), root) for r in REGIONS}
    book = GrantBook(root / "sh-grants.sqlite")
    try:
        for g in gateways.values():
            await asyncio.to_thread(g.start)
        async with aiohttp.ClientSession() as session:
            trust = TrustStore.from_files([ex.pki.ca_cert], [ex.pki.gateway_cert(r) for r in REGIONS])
            clients = {r: PlatformClient(session, gateways[r], ex, r) for r in REGIONS}

            async def upload_at_sh(to: str, data: bytes, media_type: str) -> dict[str, Any] | None:
                status, claim = await upload(clients["SH"], data, to, media_type)
                return claim if status == 201 else None

            yield Gov(ex, Topics(namespace), clients,
                      LicenceIssuer("SH", book, [(SH_LICENCE, SH_FILE)], upload_at_sh), trust, root)
    finally:
        book.close()
        for g in gateways.values():
            await asyncio.to_thread(g.stop)


def delivery(region: str, m: dict[str, Any]) -> Delivery:
    """A pulled inbox message as the simulated platforms see a webhook."""
    env = m["envelope"]
    return Delivery(region, m["id"], m["type"], m["from"], env["correlation_id"], time.monotonic(),
                    orjson.dumps(env), m["signature"], m.get("payload"))


async def send(gov: Gov, frm: str, msg_type: str, to: str, payload: Any, **extra: Any) -> str:
    status, doc = await gov.clients[frm].send(msg_type, to, payload, **extra)
    assert status == 202, doc
    return str(doc["id"])


async def relay(gov: Gov, frm: str, msg_type: str, to: str, payload: Any, **extra: Any) -> dict[str, Any]:
    """Sent and pulled by the destination platform: the inbox message."""
    msg_id = await send(gov, frm, msg_type, to, payload, **extra)
    pulled = await pull_until(gov.clients[to], msg_id, timeout=60)
    return next(m for m in pulled if m["id"] == msg_id)


async def fetch(gov: Gov, grant_id: str) -> tuple[str, dict[str, Any]]:
    """JS fetches the SH licence under `grant_id`; SH's library answers; JS pulls the answer."""
    payload = {**REGISTRY.examples(FETCH)[0], "grant_id": grant_id}
    request = await relay(gov, "JS", FETCH, "SH", payload, operator=OPERATOR, use_cause="gov_service")
    answer_type, answer = await gov.issuer.on_fetch_request(delivery("SH", request))
    result = await relay(gov, "SH", answer_type, "JS", answer, correlation_id=request["envelope"]["correlation_id"])
    return request["id"], result


def grant(**over: Any) -> dict[str, Any]:
    now = cst_now()
    return {**copy.deepcopy(GRANT), "grant_id": f"GR-{uuid.uuid4().hex[:10]}",
            "valid_from": (now - timedelta(minutes=1)).isoformat(timespec="seconds"),
            "valid_until": (now + timedelta(days=1)).isoformat(timespec="seconds"), **over}


async def test_a_fetch_needs_a_use_context_the_receiving_region_allows(gov: Gov) -> None:
    payload = REGISTRY.examples(FETCH)[0]
    status, doc = await gov.clients["JS"].send(FETCH, "SH", payload, operator=OPERATOR)
    assert (status, doc["code"]) == (400, "purpose_required"), doc
    status, doc = await gov.clients["JS"].send(FETCH, "SH", payload, use_cause="gov_service")
    assert (status, doc["code"]) == (400, "purpose_required"), doc
    # Jiangsu's registry allows supervision for fetches; Shanghai's does not: dead-lettered there, with its code.
    refused = await send(gov, "JS", FETCH, "SH", payload, operator=OPERATOR, use_cause="supervision")
    final = await gov.clients["JS"].wait_status(refused, "rejected", timeout=60)
    assert final["status"] == "rejected" and final["receipt"]["reason"] == "not_permitted_purpose", final


async def test_licences_are_fetched_only_under_a_valid_grant_and_the_usage_lists_each_fetch(gov: Gov) -> None:
    fetches: list[str] = []
    no_grant_id, result = await fetch(gov, "GR-NEVER-GRANTED")
    fetches.append(no_grant_id)
    assert result["envelope"]["payload"]["outcome"] == "NO_GRANT"
    assert "metadata" not in result["envelope"]["payload"]

    once = grant(max_uses=1)
    gov.issuer.on_grant(delivery("SH", await relay(gov, "JS", "license.authorization.grant", "SH", once)))
    first_id, first = await fetch(gov, once["grant_id"])
    fetches.append(first_id)
    answer = first["envelope"]["payload"]
    assert answer["outcome"] == "DELIVERED" and answer["uses_left"] == 0
    assert answer["metadata"]["license_number"] == SH_FILE.license_number
    licence_sha256 = hashlib.sha256(SH_FILE.content).hexdigest()
    assert answer["file"]["digest"] == {"alg": "SHA-256", "value": licence_sha256}
    assert (answer["file"]["size"], answer["file"]["media_type"]) == (len(SH_FILE.content), SH_FILE.media_type)
    assert answer["annotation"] == {
        "fetched_by_region": "JS", "fetched_by_org_code": GRANT["grantee_org_code"], "operator_id": OPERATOR["id"],
        "use_cause": "gov_service", "valid_until": once["valid_until"], "license_digest": licence_sha256,
    }
    # The licence file itself: Jiangsu's platform downloads it by the claim check and gets exactly those bytes.
    status, _, got_sha256, got_size = await download(gov.clients["JS"], answer["file"]["file_id"])
    assert (status, got_sha256, got_size) == (200, licence_sha256, len(SH_FILE.content))
    # The annotated copy is signed by the issuing region: SH's gateway signature over the exact envelope bytes.
    jws = parse_detached(first["signature"])
    signer = gov.trust.signer(jws.header, cst_now())
    assert signer.region == "SH" and verify_detached(jws, orjson.dumps(first["envelope"]), signer.public_key)

    again_id, again = await fetch(gov, once["grant_id"])
    fetches.append(again_id)
    assert again["envelope"]["payload"]["outcome"] == "GRANT_EXHAUSTED"

    withdrawn = grant(max_uses=5)
    gov.issuer.on_grant(delivery("SH", await relay(gov, "JS", "license.authorization.grant", "SH", withdrawn)))
    revoke = {**REGISTRY.examples("license.authorization.revoke")[0], "grant_id": withdrawn["grant_id"]}
    gov.issuer.on_revoke(delivery("SH", await relay(gov, "JS", "license.authorization.revoke", "SH", revoke)))
    revoked_id, revoked = await fetch(gov, withdrawn["grant_id"])
    fetches.append(revoked_id)
    assert revoked["envelope"]["payload"]["outcome"] == "GRANT_REVOKED"

    # Shanghai's platform tells the holder who used the licence: exactly these fetches (the grants, the revocation
    # and the fetch Shanghai dead-lettered are not uses of the holder's data).
    uses = await usage_until(gov, len(fetches))
    assert [u["message_id"] for u in uses] == fetches
    assert all(u["type"] == FETCH and u["from"] == "JS" and u["operator"] == OPERATOR
               and u["use_cause"] == "gov_service" and u["subject"] == HOLDER for u in uses), uses
    status, doc = await gov.clients["SH"].get(f"/v1/usage?subject={'0' * 64}")
    assert status == 200 and doc["uses"] == []
    status, doc = await gov.clients["SH"].get("/v1/usage?subject=320506199007181520")
    assert (status, doc["code"]) == (400, "invalid_request")


async def usage_until(gov: Gov, n: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """GET /v1/usage until it lists `n` uses (the audit segments reach the index within a few flushes)."""
    deadline = time.monotonic() + timeout
    while True:
        status, doc = await gov.clients["SH"].get(f"/v1/usage?subject={HOLDER}")
        assert status == 200, doc
        uses: list[dict[str, Any]] = doc["uses"]
        if len(uses) >= n or time.monotonic() > deadline:
            return uses
        await asyncio.sleep(0.5)


async def submit_case(gov: Gov, case_id: str, **extra: Any) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """JS uploads an application form to SH and submits the case with it by claim check (the licence by
    reference); the case.submit as SH's platform pulled it, the payload sent, and the form's bytes."""
    submit = {**REGISTRY.examples("case.submit")[0], "case_id": case_id}
    form = synthetic_pdf(f"application form {case_id}")
    status, claim = await upload(gov.clients["JS"], form, "SH", "application/pdf")
    assert status == 201, claim
    submit["materials"] = [{**submit["materials"][0], "claim_check": claim}, *submit["materials"][1:]]
    return await relay(gov, "JS", "case.submit", "SH", submit, correlation_id=case_id, **extra), submit, form


CASE_STAGES = ("submit", "accept", "progress", "result", "evaluation")


async def test_a_case_is_one_trace_from_submit_to_evaluation_across_two_regions(gov: Gov) -> None:
    case_id = f"JS-CASE-{uuid.uuid4().hex[:10].upper()}"
    submitted, submit, form = await submit_case(gov, case_id, operator=OPERATOR)
    claim = submit["materials"][0]["claim_check"]
    sent = {"submit": submitted["id"]}
    for stage in ("accept", "progress", "result"):
        payload = {**REGISTRY.examples(f"case.{stage}")[0], "case_id": case_id}
        sent[stage] = (await relay(gov, "SH", f"case.{stage}", "JS", payload, correlation_id=case_id))["id"]
    # Shanghai's platform downloads the application form by its claim check: whole, with its digest.
    status, _, got_sha256, got_size = await download(gov.clients["SH"], claim["file_id"])
    assert (status, got_sha256, got_size) == (200, hashlib.sha256(form).hexdigest(), len(form))
    evaluation = {**REGISTRY.examples("case.evaluation")[0], "case_id": case_id}
    sent["evaluation"] = (await relay(gov, "JS", "case.evaluation", "SH", evaluation, correlation_id=case_id))["id"]

    doc = await traced(gov, sent["submit"], set(sent.values()))
    stages = {(r["message_id"], r["region"], r["stage"]): r["detail"] for r in doc["records"]}
    for stage, msg_id in sent.items():
        origin, dest = ("JS", "SH") if stage in ("submit", "evaluation") else ("SH", "JS")
        assert stages[msg_id, origin, "accepted"]["business_stage"] == stage
        assert stages[msg_id, dest, "verified"]["business_stage"] == stage
    # One conversation: the case id is the correlation id (and the Kafka key) of every message of the case.
    assert {r["correlation_id"] for r in doc["records"]
            if r["message_id"] in sent.values() and r["stage"] in ("accepted", "verified")} == {case_id}
    # The submission was verified in SH with the counter clerk's codes; the applicant only as a pseudonym.
    verified = stages[sent["submit"], "SH", "verified"]
    assert verified["operator_id"] == OPERATOR["id"] and verified["subject"] == submit["applicant"]["id_hash"]


async def traced(gov: Gov, msg_id: str, ids: set[str], timeout: float = 60.0) -> dict[str, Any]:
    """`yrdx audit trace --json` until both regions' `verified` records of every message are in it."""
    deadline = time.monotonic() + timeout
    db = gov.root / "trace-index.sqlite"
    while True:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "audit", "trace", msg_id, "--config",
            str(gov.exchange.config_path("JS")), "--db", str(db), "--json", cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode in (0, 3), err.decode()
        doc: dict[str, Any] = orjson.loads(out) if proc.returncode == 0 else {"records": []}
        have = {r["message_id"] for r in doc["records"] if r["stage"] == "verified"}
        if ids <= have:
            return doc
        assert time.monotonic() < deadline, f"the trace of {msg_id} never held every message: {sorted(have)}"
        await asyncio.sleep(0.5)


async def test_no_id_number_or_name_is_in_clear_on_any_topic(kafka: Broker, gov: Gov) -> None:
    # A case with the applicant's ID number and name, and a fetch, travel (besides those of the tests above).
    case_id = f"JS-CASE-{uuid.uuid4().hex[:10].upper()}"
    submitted, _, _ = await submit_case(gov, case_id)
    opened = submitted.get("payload") or submitted["envelope"]["payload"]  # sealed: opened for SH's platform only
    assert opened["applicant"]["id_number"] == ID_NUMBER
    await fetch(gov, "GR-NEVER-GRANTED")
    await usage_until(gov, 1)  # the audit segments of both have been flushed to yrdx.audit
    topics = [gov.topics.audit, gov.topics.checkpoints, *(gov.topics.inbox(r) for r in REGIONS),
              *(gov.topics.dlq(r) for r in REGIONS), *(gov.topics.files(r) for r in REGIONS)]
    seen = 0
    for topic in topics:
        for record in await read_topic(kafka.bootstrap_servers, topic, timeout_s=30):
            raw = (record.key or b"") + record.value + b"".join(record.headers.values())
            seen += 1
            for secret in (ID_NUMBER, NAME):
                assert secret.encode() not in raw, (topic, secret)
    assert seen > 5
