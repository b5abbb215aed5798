"""The demo's stories: who sends what to whom, and what must come of it.

Good stories (every message must reach the destination platform, and the platforms' answers must say what the
story expects):
- medical: patients insured in Anhui treated in Shanghai hospitals. Anhui files each patient's off-site
  care with Shanghai (filing AH->SH, result SH->AH); the hospital settles the visit with the insured
  location (settlement request SH->AH, result AH->SH); some visits are reversed (reversal SH->AH); at month
  end Shanghai sends one clearing statement per hospital in a batch and Anhui confirms each against its own
  settlements (clearing statement SH->AH, confirmation AH->SH).
- license: a Jiangsu platform verifies Zhejiang licences (request JS->ZJ, result ZJ->JS); Zhejiang then
  revokes one of them and notifies Jiangsu (status notice ZJ->JS); a new check of it answers REVOKED.
- identity: Shanghai verifies the identity of Jiangsu residents (request SH->JS, result JS->SH); one person is
  not known in Jiangsu and gets NO_MATCH (still a delivered answer).

Bad ones, each refused with a stable code:
- a tampered record: a real signed envelope with one byte changed, produced straight to the destination's
  inbox topic with its original signature header: the destination dead-letters it as `bad_signature`;
- a schema violation: HTTP 400 `schema_violation`, with JSON pointers to the faulty fields;
- a type the sender may not send (a platform forging a `yrdx.receipt`): HTTP 403 `not_permitted`.

Every payload is synthetic (in the shapes of the real documents) and is checked against its schema before it
leaves.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from adapters.simulated import (
    Attempt,
    CareLocationMedical,
    IdentityPlatform,
    InsuredLocationMedical,
    Ledger,
    Licence,
    LicenceConsumer,
    LicenceRegistry,
    PlatformClient,
    SimulatedPlatforms,
    cst_now,
    money,
    pseudonym,
)
from gateway.config import KafkaConfig
from gateway.kafka.reader import read_topic
from gateway.schemas.formats import gb11643_check_char, mod37_36_check_char
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.headers import SIGNATURE as SIGNATURE_HEADER
from gateway.wire.regions import DIVISION

__all__ = ["Cast", "Scale", "StoryResult", "bad_cases", "build_cast", "good_stories"]

# Who plays what.
CARE, INSURED = "SH", "AH"  # medical: place of care, insured location
LICENCE_HOLDER, LICENCE_USER = "ZJ", "JS"  # license: issuing registry, relying platform
ID_ASKER, ID_HOME = "SH", "JS"  # identity: asking platform, the residents' home region
# Who asks, and why (the use context these queries must carry): the clerks at the relying counters, for a case.
LICENCE_CLERK = {"id": "JS-OP-0002", "role": "counter_clerk", "department": "JS-ZWFW"}
ID_CLERK = {"id": "SH-OP-0003", "role": "counter_clerk", "department": "SH-ZWFW"}
SERVICE_CASE = "gov_service"

HOSPITALS = ("H31011500001", "H31010400003", "H31011200007")  # Shanghai designated hospitals (synthetic)
LICENCE_TYPE = "11100000000013338W009"  # type code of a real Zhejiang licence
ZJ_ISSUER = "11330105002500287C"  # a real Zhejiang government body
ZJ_HOLDER = "91330106MA2CD4W58W"  # synthetic Zhejiang enterprise
NAMES = ("张三", "李四", "王五", "赵六", "钱七", "孙八", "周九", "吴十")


@dataclass(frozen=True, slots=True)
class Scale:
    """How much traffic the stories make (the defaults run in seconds on a 2-core machine)."""

    patients: int = 12
    licences: int = 16
    identity_checks: int = 40
    seed: int = 2026


@dataclass
class StoryResult:
    """A story's own verdict beyond delivery: what the platforms answered."""

    name: str
    family: str
    summary: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Cast:
    """The platforms of the demo and the state they keep."""

    registry: SchemaRegistry
    ledger: Ledger
    sim: SimulatedPlatforms
    care: CareLocationMedical
    insured: InsuredLocationMedical
    zj_registry: LicenceRegistry
    js_licences: LicenceConsumer
    js_identity: IdentityPlatform
    residents: list[tuple[str, str]]  # (id_hash, name) of Jiangsu residents
    licences: list[Licence]
    scale: Scale
    highlight: str | None = None  # the message whose journey the demo prints (a settlement request)

    @property
    def clients(self) -> dict[str, PlatformClient]:
        return self.sim.clients


def checked(registry: SchemaRegistry, msg_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload, after making sure it matches its schema (a story bug names the pointers, never values)."""
    errors = registry.validate(msg_type, registry.latest_version(msg_type) or 1, payload)
    if errors:
        raise ValueError(f"demo built an invalid {msg_type}: {', '.join(e.pointer or '/' for e in errors)}")
    return payload


# --- synthetic people, licences and money -------------------------------------------------------------------


def citizen_id(division: str, born: date, serial: int) -> str:
    first17 = f"{division}{born:%Y%m%d}{serial % 1000:03d}"
    return first17 + gb11643_check_char(first17)


def zj_licence(serial: int) -> Licence:
    body = f"2025{serial:06d}"
    check = mod37_36_check_char(LICENCE_TYPE + ZJ_ISSUER + body + "001")
    license_id = f"1.2.156.3005.2.{LICENCE_TYPE}.{ZJ_ISSUER}.{body}.001.{check}"
    holder = ZJ_HOLDER if serial == 1 else f"ZJ-{serial}"
    return Licence(license_id, LICENCE_TYPE, ZJ_ISSUER, pseudonym(holder))


def build_cast(registry: SchemaRegistry, ledger: Ledger, sim: SimulatedPlatforms, scale: Scale) -> Cast:
    """The platforms and their records, with their reactions registered on the webhook server."""
    rng = random.Random(scale.seed)  # noqa: S311 - synthetic test data, not security
    residents = [
        (pseudonym(citizen_id("320506", date(1960 + rng.randrange(45), 1 + i % 12, 1 + i % 28), 100 + i)),
         NAMES[i % len(NAMES)])
        for i in range(scale.identity_checks)
    ]
    licences = [zj_licence(i + 1) for i in range(scale.licences)]
    cast = Cast(
        registry=registry, ledger=ledger, sim=sim,
        care=CareLocationMedical(CARE, registry), insured=InsuredLocationMedical(INSURED, registry),
        zj_registry=LicenceRegistry(LICENCE_HOLDER, licences), js_licences=LicenceConsumer(),
        # The last person asked about is not a Jiangsu resident: Jiangsu answers NO_MATCH.
        js_identity=IdentityPlatform(ID_HOME, dict(residents[:-1])),
        residents=residents, licences=licences, scale=scale,
    )
    sim.on(CARE, "medical.filing.request", cast.care.on_filing_request)
    sim.on(CARE, "medical.settlement.result", cast.care.on_settlement_result)
    sim.on(INSURED, "medical.settlement.request", cast.insured.on_settlement_request)
    sim.on(INSURED, "medical.reversal", cast.insured.on_reversal)
    sim.on(INSURED, "medical.clearing.statement", cast.insured.on_clearing_statement)
    sim.on(LICENCE_HOLDER, "license.verify.request", cast.zj_registry.on_verify_request)
    sim.on(LICENCE_USER, "license.verify.result", cast.js_licences.on_verify_result)
    sim.on(LICENCE_USER, "license.status.notice", cast.js_licences.on_status_notice)
    sim.on(ID_HOME, "identity.verify.request", cast.js_identity.on_verify_request)
    return cast


async def _jitter(rng: random.Random, max_s: float) -> None:
    """Platforms do not all speak at the same millisecond."""
    await asyncio.sleep(rng.uniform(0.0, max_s))


def _accepted(attempt: Attempt, what: str, problems: list[str]) -> bool:
    if attempt.refused:
        problems.append(f"{what} refused by the {attempt.sender} gateway: {attempt.refused}")
        return False
    return True


# --- medical ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Patient:
    n: int
    psn_no: str
    certno_hash: str
    hospital: str


async def _patient(cast: Cast, p: Patient, rng: random.Random, reverse: bool, result: StoryResult) -> None:
    reg, clients, sim = cast.registry, cast.clients, cast.sim
    story = "patient insured in Anhui, treated in Shanghai"
    today = cst_now().date()
    await _jitter(rng, 5.0)
    temporary = p.n % 2 == 0
    filing = checked(reg, "medical.filing.request", {
        **reg.examples("medical.filing.request")[0],
        "filing_id": f"F{DIVISION[INSURED]}{today:%y%m%d}{p.n:05d}", "psn_no": p.psn_no,
        "certno_hash": p.certno_hash, "insutype": "310", "insuplc_admdvs": DIVISION[INSURED],
        "mdtrtarea_admdvs": DIVISION[CARE],
        "filing_type": "TEMP_REFERRAL" if temporary else "LONG_TERM_RESIDENT", "begndate": today.isoformat(),
        "enddate": (today + timedelta(days=180)).isoformat() if temporary else None,
        "filing_channel": "APP", "promise_flag": not temporary,
    })
    sent = await clients[INSURED].send("medical.filing.request", CARE, filing, story=story)
    if not _accepted(sent, "filing", result.problems) or sent.id is None:
        return
    conversation = sent.id
    answer = await sim.wait_for(INSURED, "medical.filing.result", conversation)
    if answer is None or answer.payload()["status"] != "ACCEPTED":
        result.problems.append(f"patient {p.n}: no accepted filing result came back to {INSURED}")
        return

    await _jitter(rng, 1.0)
    medfee = Decimal(rng.randrange(8_000, 300_000)) / 100
    ownpay = (medfee * Decimal("0.05")).quantize(Decimal("0.01"))
    preself = (medfee * Decimal("0.03")).quantize(Decimal("0.01"))
    mdtrt_id = f"{DIVISION[CARE]}{today:%Y%m%d}{p.n:016d}"
    msgid = f"{p.hospital}{cst_now():%Y%m%d%H%M%S}{p.n:04d}"
    request = checked(reg, "medical.settlement.request", {
        **reg.examples("medical.settlement.request")[0],
        "msgid": msgid, "mdtrt_id": mdtrt_id, "psn_no": p.psn_no, "insutype": "310",
        "med_type": "11" if p.n % 3 else "21", "medfee_sumamt": money(medfee),
        "fulamt_ownpay_amt": money(ownpay), "overlmt_selfpay": "0.00", "preselfpay_amt": money(preself),
        "inscp_scp_amt": money(medfee - ownpay - preself), "fixmedins_code": p.hospital,
        "chrg_bchno": f"CB{today:%Y%m%d}{p.n:05d}", "invono": f"INV{today:%Y%m%d}{p.n:05d}",
        "insuplc_admdvs": DIVISION[INSURED], "mdtrtarea_admdvs": DIVISION[CARE],
    })
    cast.care.expect_settlement(mdtrt_id, p.hospital)
    sent = await clients[CARE].send("medical.settlement.request", INSURED, request, story=story,
                                    correlation_id=conversation)
    if not _accepted(sent, "settlement request", result.problems):
        return
    if cast.highlight is None:
        cast.highlight = sent.id
    answer = await sim.wait_for(CARE, "medical.settlement.result", conversation)
    if answer is None:
        result.problems.append(f"patient {p.n}: no settlement result came back to {CARE}")
        return
    if not reverse:
        return

    # The hospital's cashier cancels the visit: the settlement is reversed at the insured location.
    cast.care.reverse(mdtrt_id)
    reversal = checked(reg, "medical.reversal", {
        **reg.examples("medical.reversal")[-1],
        "omsgid": msgid, "oinfno": "2207", "psn_no": p.psn_no, "insuplc_admdvs": DIVISION[INSURED],
        "reason": "患者取消结算",
    })
    sent = await clients[CARE].send("medical.reversal", INSURED, reversal, story=story,
                                    correlation_id=conversation)
    if _accepted(sent, "reversal", result.problems) and sent.id is not None:
        if await sim.wait_delivered(sent.id) is None or mdtrt_id not in cast.insured.reversed:
            result.problems.append(f"patient {p.n}: the reversal was not applied in {INSURED}")


async def medical_story(cast: Cast) -> StoryResult:
    result = StoryResult("Anhui-insured patients treated in Shanghai", "medical")
    rng = random.Random(cast.scale.seed + 1)  # noqa: S311 - synthetic test data
    today = cst_now().date()
    patients = []
    for n in range(1, cast.scale.patients + 1):
        certno = citizen_id("340104", date(1950 + rng.randrange(50), 1 + n % 12, 1 + n % 28), n)
        hospital = HOSPITALS[n % len(HOSPITALS)]
        patients.append(Patient(n, f"34010099000010{n:012d}", pseudonym(certno), hospital))
    # One patient in four has the settlement reversed.
    await asyncio.gather(*(
        _patient(cast, p, random.Random(rng.random()), p.n % 4 == 0, result)  # noqa: S311
        for p in patients
    ))
    reversed_ = len(cast.insured.reversed)

    # Month end: one clearing statement per hospital, sent as one batch; Anhui checks each against its books.
    statements = cast.care.clearing_statements(
        DIVISION[INSURED], f"{today:%Y%m}", f"CLR{DIVISION[CARE]}{today:%Y%m%d}"
    )
    messages = [
        {"type": "medical.clearing.statement", "to": INSURED,
         "payload": checked(cast.registry, "medical.clearing.statement", s)}
        for s in statements
    ]
    confirmed = 0
    if messages:
        attempts = await cast.clients[CARE].send_batch(messages, story="monthly clearing")
        for a in attempts:
            if not _accepted(a, "clearing statement", result.problems) or a.id is None:
                continue
            answer = await cast.sim.wait_for(CARE, "medical.clearing.confirm", a.id)
            if answer is not None and answer.payload()["status"] == "CONFIRMED":
                confirmed += 1
            else:
                result.problems.append("a clearing statement was not confirmed by the insured location")
    else:
        result.problems.append("no settlement to clear")
    settled = len(cast.care.settled) + reversed_
    result.summary = (
        f"{len(patients)} patients: {len(cast.care.filings)} filings accepted, {settled} visits settled, "
        f"{reversed_} reversed, {confirmed}/{len(statements)} clearing statements confirmed"
    )
    return result


# --- license ------------------------------------------------------------------------------------------------


async def _verify_licence(cast: Cast, licence: Licence, rng: random.Random, expect: str,
                          problems: list[str], spread_s: float = 6.0) -> None:
    await _jitter(rng, spread_s)
    request = checked(cast.registry, "license.verify.request", {
        **cast.registry.examples("license.verify.request")[0],
        "license_id": licence.license_id, "use_cause": "跨省通办：核验企业经营许可证",
    })
    sent = await cast.clients[LICENCE_USER].send("license.verify.request", LICENCE_HOLDER, request,
                                                 story="Jiangsu verifies a Zhejiang licence",
                                                 operator=LICENCE_CLERK, use_cause=SERVICE_CASE)
    if not _accepted(sent, "licence verification", problems) or sent.id is None:
        return
    answer = await cast.sim.wait_for(LICENCE_USER, "license.verify.result", sent.id)
    verdict = answer.payload()["verdict"] if answer is not None else None
    if verdict != expect:
        problems.append(f"licence verification answered {verdict}, expected {expect}")


async def licence_story(cast: Cast) -> StoryResult:
    result = StoryResult("Jiangsu verifies Zhejiang licences; Zhejiang revokes one", "license")
    rng = random.Random(cast.scale.seed + 2)  # noqa: S311 - synthetic test data
    await asyncio.gather(*(
        _verify_licence(cast, lic, random.Random(rng.random()), "VALID", result.problems)  # noqa: S311
        for lic in cast.licences
    ))
    # Zhejiang revokes the first licence and tells Jiangsu, which relied on it.
    revoked = cast.licences[0]
    notice = checked(cast.registry, "license.status.notice",
                     cast.zj_registry.revoke(revoked.license_id, "以欺骗手段取得许可，依法撤销"))
    sent = await cast.clients[LICENCE_HOLDER].send("license.status.notice", LICENCE_USER, notice,
                                                   story="Zhejiang revokes a licence")
    if _accepted(sent, "revocation notice", result.problems) and sent.id is not None:
        arrived = await cast.sim.wait_delivered(sent.id)
        if arrived is None or revoked.license_id not in cast.js_licences.revoked:
            result.problems.append("Jiangsu did not learn of the revocation")
    # A new check of the revoked licence is answered REVOKED.
    await _verify_licence(cast, revoked, rng, "REVOKED", result.problems, spread_s=0.5)
    result.summary = (f"{len(cast.licences)} licences verified VALID, 1 revoked and notified, "
                      f"re-check answered {cast.js_licences.verdicts.get(revoked.license_id, '?')}")
    return result


# --- identity -----------------------------------------------------------------------------------------------


async def _verify_person(cast: Cast, id_hash: str, name: str, rng: random.Random, expect: str,
                         answers: dict[str, int], problems: list[str]) -> None:
    await _jitter(rng, 8.0)
    request = checked(cast.registry, "identity.verify.request", {
        **cast.registry.examples("identity.verify.request")[0],
        "subject_type": "NATURAL_PERSON", "id_type": "111", "id_hash": id_hash, "name": name,
        "required_assurance_level": 3, "use_cause": "跨省通办：核验申请人身份",
        "service_item_code": "SVC-ID-0001",
    })
    sent = await cast.clients[ID_ASKER].send("identity.verify.request", ID_HOME, request,
                                             story="Shanghai verifies a Jiangsu resident",
                                             operator=ID_CLERK, use_cause=SERVICE_CASE)
    if not _accepted(sent, "identity verification", problems) or sent.id is None:
        return
    answer = await cast.sim.wait_for(ID_ASKER, "identity.verify.result", sent.id)
    match = answer.payload()["match"] if answer is not None else "none"
    answers[match] = answers.get(match, 0) + 1
    if match != expect:
        problems.append(f"identity verification answered {match}, expected {expect}")


async def identity_story(cast: Cast) -> StoryResult:
    result = StoryResult("Shanghai verifies the identity of Jiangsu residents", "identity")
    rng = random.Random(cast.scale.seed + 3)  # noqa: S311 - synthetic test data
    answers: dict[str, int] = {}
    last = len(cast.residents) - 1
    await asyncio.gather(*(
        _verify_person(cast, h, name, random.Random(rng.random()), "NO_MATCH" if i == last else "MATCH",  # noqa: S311
                       answers, result.problems)
        for i, (h, name) in enumerate(cast.residents)
    ))
    result.summary = ", ".join(f"{n} {match}" for match, n in sorted(answers.items()))
    return result


def good_stories(cast: Cast) -> list[Callable[[], Awaitable[StoryResult]]]:
    return [lambda: medical_story(cast), lambda: licence_story(cast), lambda: identity_story(cast)]


# --- the bad ones -------------------------------------------------------------------------------------------


def flip_one_byte(body: bytes) -> bytes:
    """The same envelope with one character of its payload (or of its sealed payload) changed: still JSON, no
    longer what was signed."""
    start = body.index(b'"sealed"') if b'"sealed"' in body else body.index(b'"payload"')
    for i in range(start + 12, len(body)):
        if 0x30 <= body[i] <= 0x39:
            return body[:i] + bytes([0x30 + (body[i] - 0x30 + 1) % 10]) + body[i + 1:]
    raise ValueError("no digit to change in the payload")


async def tampered_record(cast: Cast, kafka: KafkaConfig, timeout_s: float = 20.0) -> StoryResult:
    """Someone with write access to Kafka alters a delivered identity request and replays it to Jiangsu."""
    inbox, dlq = kafka.topics.inbox(ID_HOME), kafka.topics.dlq(ID_HOME)
    result = StoryResult(f"tampered record produced straight to {inbox}", "identity")
    genuine = next((d for d in cast.ledger.deliveries.values()
                    if d.region == ID_HOME and d.type == "identity.verify.request"), None)
    if genuine is None:
        result.problems.append("no delivered identity request to tamper with")
        return result
    tampered = flip_one_byte(genuine.body)
    attempt = cast.ledger.add(Attempt("identity.verify.request", genuine.sender, ID_HOME, result.name,
                                      "bad_signature", time.monotonic()))
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(inbox, tampered, key=genuine.correlation_id.encode(),
                                     headers=[(SIGNATURE_HEADER, genuine.signature.encode())])
    finally:
        await producer.stop()
    deadline = time.monotonic() + timeout_s
    while attempt.dead_lettered is None and time.monotonic() < deadline:
        for record in await read_topic(kafka, dlq):
            if record.value == tampered:
                attempt.dead_lettered = record.headers.get("yrdx-reason", b"?").decode()
                break
        else:
            await asyncio.sleep(0.25)
    if attempt.dead_lettered is None:
        result.problems.append(f"the tampered record did not reach {dlq} in {timeout_s:.0f} s")
    elif cast.ledger.deliveries.get(genuine.id) is not genuine:
        result.problems.append("the tampered record reached the platform")
    result.summary = f"{ID_HOME} dead-lettered it: {attempt.dead_lettered or 'nothing'}"
    return result


async def schema_violation(cast: Cast) -> StoryResult:
    """A hospital system sends an amount as a JSON number and forgets the person number."""
    result = StoryResult("settlement request with a float amount and no psn_no", "medical")
    payload: dict[str, Any] = cast.registry.examples("medical.settlement.request")[0]
    payload.update(insuplc_admdvs=DIVISION[INSURED], medfee_sumamt=356.8)
    del payload["psn_no"]
    attempt = await cast.clients[CARE].send("medical.settlement.request", INSURED, payload, story=result.name,
                                            expect="schema_violation")
    pointers = ", ".join(attempt.pointers) or "no pointers"
    result.summary = f"HTTP {attempt.status} {attempt.refused}: {pointers}"
    if not {"/medfee_sumamt", "/psn_no"} <= set(attempt.pointers):
        result.problems.append(f"expected pointers /medfee_sumamt and /psn_no, got {list(attempt.pointers)}")
    return result


async def not_permitted(cast: Cast) -> StoryResult:
    """The licence registry tries to forge a delivery receipt: only gateways send receipts."""
    result = StoryResult("platform sends a yrdx.receipt", "license")
    payload = cast.registry.examples("yrdx.receipt")[0]
    attempt = await cast.clients[LICENCE_HOLDER].send(
        "yrdx.receipt", LICENCE_USER, payload, story=result.name, expect="not_permitted"
    )
    result.summary = f"HTTP {attempt.status} {attempt.refused}"
    return result


async def bad_cases(cast: Cast, kafka: KafkaConfig) -> list[StoryResult]:
    return list(await asyncio.gather(
        tampered_record(cast, kafka), schema_violation(cast), not_permitted(cast),
    ))


async def check_receipts(
    cast: Cast, attempts: Sequence[Attempt], timeout_s: float = 15.0
) -> tuple[int, list[str]]:
    """Each delivered message shows `delivered` at its origin, with the destination's signed receipt."""
    gate = asyncio.Semaphore(8)
    problems: list[str] = []

    async def one(a: Attempt) -> bool:
        assert a.id is not None
        async with gate:
            try:
                doc = await cast.clients[a.sender].wait_status(a.id, "delivered", timeout_s)
            except (aiohttp.ClientError, orjson.JSONDecodeError) as e:
                problems.append(f"status of a {a.type} at {a.sender}: {type(e).__name__}")
                return False
        receipt = (doc or {}).get("receipt") or {}
        status = (doc or {}).get("status")
        ok = status == "delivered" and receipt.get("by") == a.recipient
        if not ok:
            problems.append(f"no signed receipt at {a.sender} for a {a.type} (status {status})")
        return ok

    results = await asyncio.gather(*(one(a) for a in attempts))
    return sum(results), problems
