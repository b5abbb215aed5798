"""Simulated regional platforms for the demo: webhook receivers that react as the real systems would.

They receive webhooks from their gateway and send through their gateway's HTTP API like any platform.

One aiohttp server hosts the four regions' webhook endpoints (``/SH``, ``/JS``, ``/ZJ``, ``/AH``). Each
delivery is checked the way a careful platform checks it (the detached JWS of the sending gateway, against
the exchange's root) and recorded; then the region's platform reacts: the Shanghai medical platform (place of
care) answers a filing with its result, the Anhui medical platform (insured location) settles a visit and
confirms a monthly clearing statement, the Zhejiang licence registry answers a verification, the Jiangsu
identity platform answers an identity check. Answers keep the request's ``correlation_id``, so a
conversation stays one conversation.

Payloads start from the schemas' own (synthetic) examples and carry what the story needs.
Nothing here prints or logs a payload: they hold personal data.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import inspect
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from gateway.crypto.jws import JwsError, parse_detached, verify_detached
from gateway.crypto.trust import TrustError, TrustStore
from gateway.files.chunks import new_digest
from gateway.http.auth import TokenMinter
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.regions import DIVISION, REGIONS

__all__ = [
    "Attempt",
    "Delivery",
    "Ledger",
    "PlatformClient",
    "SimulatedPlatforms",
    "cst_now",
    "family_of",
    "money",
    "pseudonym",
    "settlement_split",
]

log = logging.getLogger(__name__)

CST = timezone(timedelta(hours=8), "CST")  # Beijing time: business timestamps are local, with their offset
CENT = Decimal("0.01")
# The exchange's agreed pseudonymisation key for citizen and holder ids (demo value: not a secret).
PSEUDONYM_KEY = b"yrdx-demo-pseudonym-key"
DELIVERED = "delivered"


def family_of(msg_type: str) -> str:
    """``medical.settlement.request`` -> ``medical``."""
    return msg_type.split(".", 1)[0]


def cst_now() -> datetime:
    return datetime.now(CST)


def money(value: Decimal) -> str:
    """A decimal amount as the NHSA interface spells it: a string with two places."""
    return str(value.quantize(CENT))


def pseudonym(identifier: str) -> str:
    """The lowercase hex HMAC that travels instead of a citizen id or a holder's credit code."""
    return hmac.new(PSEUDONYM_KEY, identifier.encode(), hashlib.sha256).hexdigest()


# --- what was sent and what arrived -------------------------------------------------------------------------


@dataclass
class Attempt:
    """One message a platform (or an attacker) tried to send, what was expected and what happened."""

    type: str
    sender: str
    recipient: str
    story: str
    expect: str  # "delivered" or the rejection code the exchange must answer with
    started: float  # time.monotonic() just before the request left
    id: str | None = None
    refused: str | None = None  # the problem code when the gateway refused the request
    status: int | None = None
    pointers: tuple[str, ...] = ()  # JSON pointers of a schema_violation
    dead_lettered: str | None = None  # the DLQ reason when a region dead-lettered it

    @property
    def family(self) -> str:
        return family_of(self.type)

    @property
    def route(self) -> str:
        return f"{self.sender}->{self.recipient}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook call received by a simulated platform (the body stays in memory, never printed)."""

    region: str
    id: str
    type: str
    sender: str
    correlation_id: str
    arrived: float  # time.monotonic()
    body: bytes  # the exact bytes the sending gateway signed (for a sealed type: the sealed envelope)
    signature: str  # the sending gateway's detached JWS, verified before the delivery was recorded
    opened: dict[str, Any] | None = None  # a sealed type's payload, opened by the receiving gateway

    def envelope(self) -> dict[str, Any]:
        doc: dict[str, Any] = orjson.loads(self.body)
        return doc

    def payload(self) -> dict[str, Any]:
        if self.opened is not None:
            return self.opened
        payload: dict[str, Any] = self.envelope()["payload"]
        return payload


@dataclass
class Ledger:
    """Every attempt and every delivery of the run, shared by the clients and the webhook server."""

    attempts: list[Attempt] = field(default_factory=list)
    by_id: dict[str, Attempt] = field(default_factory=dict)
    deliveries: dict[str, Delivery] = field(default_factory=dict)

    def add(self, attempt: Attempt) -> Attempt:
        self.attempts.append(attempt)
        return attempt

    def accepted(self, attempt: Attempt, msg_id: str) -> None:
        attempt.id = msg_id
        self.by_id[msg_id] = attempt

    def latency_s(self, attempt: Attempt) -> float | None:
        """Send -> delivered at the destination platform, when it was delivered."""
        d = self.deliveries.get(attempt.id) if attempt.id else None
        return None if d is None else d.arrived - attempt.started

    def outcome(self, attempt: Attempt) -> str | None:
        """``delivered``, the refusal or dead-letter code, or None while nothing is known yet."""
        if attempt.refused:
            return attempt.refused
        if attempt.dead_lettered:
            return attempt.dead_lettered
        if attempt.id and attempt.id in self.deliveries:
            return DELIVERED
        return None


# --- the sending side: a platform talking to its gateway ----------------------------------------------------


class PlatformClient:
    """A local platform's HTTP client for its own gateway: a fresh single-use ES256 JWT per request."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, region: str, minter: TokenMinter, ledger: Ledger
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.region = region
        self._minter = minter
        self._ledger = ledger

    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", **self._minter.header()}

    async def _post(self, path: str, body: object) -> tuple[int, dict[str, Any]]:
        url, data = self.base_url + path, orjson.dumps(body)
        async with self.session.post(url, data=data, headers=self._headers()) as r:
            doc: dict[str, Any] = orjson.loads(await r.read())
            return r.status, doc

    async def send(
        self,
        msg_type: str,
        to: str,
        payload: object,
        *,
        story: str,
        correlation_id: str | None = None,
        expect: str = DELIVERED,
        operator: Mapping[str, str] | None = None,
        use_cause: str | None = None,
    ) -> Attempt:
        """POST /v1/messages; the attempt records the id (202) or the problem code (4xx/5xx). `operator` and
        `use_cause` are the use context of a type that reads personal data or licences."""
        body: dict[str, Any] = {"type": msg_type, "to": to, "payload": payload}
        if correlation_id is not None:
            body["correlation_id"] = correlation_id
        if operator is not None:
            body["operator"] = dict(operator)
        if use_cause is not None:
            body["use_cause"] = use_cause
        attempt = self._ledger.add(Attempt(msg_type, self.region, to, story, expect, time.monotonic()))
        status, doc = await self._post("/v1/messages", body)
        attempt.status = status
        if status == 202:
            self._ledger.accepted(attempt, str(doc["id"]))
        else:
            attempt.refused = str(doc.get("code", f"http_{status}"))
            attempt.pointers = tuple(str(e.get("pointer", "")) for e in doc.get("errors", ()))
        return attempt

    async def send_batch(self, messages: Sequence[Mapping[str, Any]], *, story: str) -> list[Attempt]:
        """POST /v1/messages/batch: one attempt per message, each with its own result."""
        started = time.monotonic()
        attempts = [
            self._ledger.add(Attempt(str(m["type"]), self.region, str(m["to"]), story, DELIVERED, started))
            for m in messages
        ]
        status, doc = await self._post("/v1/messages/batch", {"messages": list(messages)})
        results = doc.get("results", []) if status == 207 else []
        for i, attempt in enumerate(attempts):
            failed = {"status": status, "code": doc.get("code", "batch_failed")}
            result = results[i] if i < len(results) else failed
            attempt.status = int(result.get("status", status))
            if attempt.status == 202:
                self._ledger.accepted(attempt, str(result["id"]))
            else:
                attempt.refused = str(result.get("code", f"http_{attempt.status}"))
        return attempts

    async def upload_file(self, to: str, data: bytes, media_type: str) -> dict[str, Any] | None:
        """POST /v1/files: the file sent to region `to`; its claim check (None if the gateway refused it)."""
        headers = {"Content-Type": media_type, **self._minter.header()}
        async with self.session.post(f"{self.base_url}/v1/files?to={to}", data=data, headers=headers) as r:
            doc: dict[str, Any] = orjson.loads(await r.read())
            return doc if r.status == 201 else None

    async def download_file(self, claim: Mapping[str, Any]) -> bytes | None:
        """GET /v1/files/{id}: the file a received message claims, or None unless it has the claim's exact size
        and digest (a platform checks what it was handed, whatever its gateway checked before)."""
        async with self.session.get(f"{self.base_url}/v1/files/{claim['file_id']}",
                                    headers=self._minter.header()) as r:
            if r.status != 200:
                return None
            data = await r.read()
        digest = new_digest(claim["digest"]["alg"])
        digest.update(data)
        return data if len(data) == claim["size"] and digest.hexdigest() == claim["digest"]["value"] else None

    async def message_status(self, msg_id: str) -> dict[str, Any] | None:
        """GET /v1/messages/{id}: status, history and the receiver's signed receipt; None if unknown."""
        url = f"{self.base_url}/v1/messages/{msg_id}"
        async with self.session.get(url, headers=self._minter.header()) as r:
            if r.status != 200:
                return None
            doc: dict[str, Any] = orjson.loads(await r.read())
            return doc

    async def wait_status(self, msg_id: str, wanted: str, timeout_s: float = 10.0) -> dict[str, Any] | None:
        """Poll the origin's status until it is `wanted` (the last status seen when time runs out)."""
        deadline = time.monotonic() + timeout_s
        while True:
            doc = await self.message_status(msg_id)
            if (doc is not None and doc.get("status") == wanted) or time.monotonic() > deadline:
                return doc
            await asyncio.sleep(0.05)


# --- the platforms' own behaviour ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settled:
    """One settled visit as a medical platform keeps it for the monthly clearing."""

    mdtrt_id: str
    setl_id: str
    fixmedins_code: str
    medfee: Decimal
    fund: Decimal
    acct: Decimal
    cash: Decimal


Reply = tuple[str, dict[str, Any]]  # (message type, payload) sent back to the sender of a delivery


class CareLocationMedical:
    """The medical-insurance platform of the place of care (Shanghai in the demo): accepts filings of patients
    insured elsewhere, keeps the settlements the insured location returned, and builds the monthly clearing
    statements from them, one per hospital."""

    def __init__(self, region: str, registry: SchemaRegistry) -> None:
        self.region = region
        self._registry = registry
        self.filings: dict[str, str] = {}  # filing_id -> status
        self.settled: dict[str, Settled] = {}  # mdtrt_id -> settlement
        self.pending: dict[str, str] = {}  # mdtrt_id -> fixmedins_code of a request not yet settled

    def on_filing_request(self, d: Delivery) -> Reply:
        req = d.payload()
        ok = req["mdtrtarea_admdvs"][:2] == _division(self.region)[:2]
        status = "ACCEPTED" if ok else "REJECTED"
        self.filings[req["filing_id"]] = status
        payload: dict[str, Any] = {**self._registry.examples("medical.filing.result")[0],
                                   "filing_id": req["filing_id"], "status": status}
        if not ok:
            payload["reject_reason"] = "就医地不在本统筹区"
        return "medical.filing.result", payload

    def expect_settlement(self, mdtrt_id: str, fixmedins_code: str) -> None:
        self.pending[mdtrt_id] = fixmedins_code

    def on_settlement_result(self, d: Delivery) -> None:
        res = d.payload()
        fixmedins = self.pending.pop(res["mdtrt_id"], "")
        self.settled[res["mdtrt_id"]] = Settled(
            res["mdtrt_id"], res["setl_id"], fixmedins, Decimal(res["medfee_sumamt"]),
            Decimal(res["fund_pay_sumamt"]), Decimal(res["acct_pay"]), Decimal(res["psn_cash_pay"]),
        )

    def reverse(self, mdtrt_id: str) -> None:
        """The hospital reverses a settlement: it leaves the month's clearing."""
        self.settled.pop(mdtrt_id, None)

    def clearing_statements(
        self, insured_division: str, setlym: str, evt_prefix: str
    ) -> list[dict[str, Any]]:
        by_hospital: dict[str, list[Settled]] = defaultdict(list)
        for s in self.settled.values():
            by_hospital[s.fixmedins_code].append(s)
        year, month = int(setlym[:4]), int(setlym[4:])
        first = datetime(year, month, 1, tzinfo=CST).date()
        last = (datetime(year + month // 12, month % 12 + 1, 1, tzinfo=CST) - timedelta(days=1)).date()
        statements = []
        for n, (hospital, visits) in enumerate(sorted(by_hospital.items()), start=1):
            medfee = sum((v.medfee for v in visits), Decimal(0))
            statements.append({
                **self._registry.examples("medical.clearing.statement")[0],
                "clr_appy_evt_id": f"{evt_prefix}{n:05d}", "setlym": setlym, "clr_type": "11", "clr_way": "1",
                "fixmedins_code": hospital, "insuplc_admdvs": insured_division,
                "mdtrtarea_admdvs": _division(self.region), "psntime": len(visits),
                "medfee_sumamt": money(medfee), "med_sumfee": money(medfee),
                "fund_appy_sum": money(sum((v.fund for v in visits), Decimal(0))),
                "cash_payamt": money(sum((v.cash for v in visits), Decimal(0))),
                "acct_pay": money(sum((v.acct for v in visits), Decimal(0))),
                "begndate": first.isoformat(), "enddate": last.isoformat(),
            })
        return statements


POOL_SHARE = Decimal("0.70")  # share of in-scope costs the pooled fund pays (a demo rule)


def settlement_split(
    registry: SchemaRegistry, req: Mapping[str, Any], balance: Decimal, *, setl_id: str, medins_setl_id: str,
    clr_optins: str, now: datetime,
) -> dict[str, Any]:
    """The insured location's split of a settlement (or pre-settlement) request, in exact decimal: the pooled
    fund pays POOL_SHARE of the in-scope costs, the personal account what it holds when the patient allows it,
    cash the rest; the result satisfies the sums of DOMAIN.md section 2.4."""
    medfee = Decimal(req["medfee_sumamt"])
    inscp = Decimal(req["inscp_scp_amt"])
    fund = (inscp * POOL_SHARE).quantize(CENT)
    psn_part = medfee - fund
    acct = max(Decimal(0), min(psn_part, balance)) if req["acct_used_flag"] == "1" else Decimal(0)
    result = registry.examples("medical.settlement.result")[0]
    result.update({
        "setl_id": setl_id, "mdtrt_id": req["mdtrt_id"], "psn_no": req["psn_no"],
        "setl_time": f"{now:%Y-%m-%d %H:%M:%S}", "insutype": req["insutype"], "med_type": req["med_type"],
        "medfee_sumamt": money(medfee), "fulamt_ownpay_amt": req["fulamt_ownpay_amt"],
        "overlmt_selfpay": req["overlmt_selfpay"], "preselfpay_amt": req["preselfpay_amt"],
        "inscp_scp_amt": money(inscp), "hifp_pay": money(fund), "cvlserv_pay": "0.00",
        "pool_prop_selfpay": str(Decimal(1) - POOL_SHARE), "fund_pay_sumamt": money(fund),
        "psn_part_amt": money(psn_part), "acct_pay": money(acct), "psn_cash_pay": money(psn_part - acct),
        "balc": money(balance - acct), "clr_optins": clr_optins, "medins_setl_id": medins_setl_id,
        "setldetail": [{"fund_pay_type": "310100", "fund_pay_type_name": "职工基本医疗保险统筹基金",
                        "inscp_scp_amt": money(inscp), "fund_payamt": money(fund)}],
    })
    return result


class InsuredLocationMedical:
    """The medical-insurance platform of the insured location (Anhui in the demo): settles visits made
    elsewhere from its own rules and account balances, honours reversals, and checks the monthly clearing
    statements against its own settlements."""

    OPENING_BALANCE = Decimal("2000.00")

    def __init__(self, region: str, registry: SchemaRegistry) -> None:
        self.region = region
        self._registry = registry
        self._balances: dict[str, Decimal] = {}
        self._by_msgid: dict[str, str] = {}  # settlement request msgid -> mdtrt_id
        self.settled: dict[str, Settled] = {}  # mdtrt_id -> settlement
        self.reversed: set[str] = set()
        self.clearing: dict[str, str] = {}  # clr_appy_evt_id -> CONFIRMED / DISPUTED
        self._serial = 0

    def on_settlement_request(self, d: Delivery) -> Reply:
        req = d.payload()
        balance = self._balances.get(req["psn_no"], self.OPENING_BALANCE)
        self._serial += 1
        now = cst_now()
        setl_id = f"S{_division(self.region)}{now:%Y%m%d}{self._serial:08d}"
        result = settlement_split(
            self._registry, req, balance, setl_id=setl_id, now=now,
            medins_setl_id=f"{req['fixmedins_code']}{now:%Y%m%d%H%M%S}{self._serial:04d}",
            clr_optins=req.get("insuplc_admdvs") or _division(self.region),
        )
        acct = Decimal(result["acct_pay"])
        self._balances[req["psn_no"]] = balance - acct
        if "msgid" in req:
            self._by_msgid[req["msgid"]] = req["mdtrt_id"]
        self.settled[req["mdtrt_id"]] = Settled(
            req["mdtrt_id"], setl_id, req["fixmedins_code"], Decimal(result["medfee_sumamt"]),
            Decimal(result["fund_pay_sumamt"]), acct, Decimal(result["psn_cash_pay"]),
        )
        return "medical.settlement.result", result

    def on_reversal(self, d: Delivery) -> None:
        rev = d.payload()
        mdtrt_id = self._by_msgid.pop(rev["omsgid"], None)
        if mdtrt_id is not None:
            s = self.settled.pop(mdtrt_id)
            self._balances[rev["psn_no"]] = self._balances.get(rev["psn_no"], self.OPENING_BALANCE) + s.acct
            self.reversed.add(mdtrt_id)

    def on_clearing_statement(self, d: Delivery) -> Reply:
        st = d.payload()
        ours = [s for s in self.settled.values() if s.fixmedins_code == st.get("fixmedins_code")]
        fund = sum((s.fund for s in ours), Decimal(0))
        agree = len(ours) == st["psntime"] and fund == Decimal(st["fund_appy_sum"])
        status = "CONFIRMED" if agree else "DISPUTED"
        self.clearing[st["clr_appy_evt_id"]] = status
        confirm: dict[str, Any] = {
            "clr_appy_evt_id": st["clr_appy_evt_id"], "setlym": st["setlym"], "status": status,
        }
        if not agree:
            confirm["disputed_items"] = [
                {"setl_sn": s.setl_id, "mdtrt_id": s.mdtrt_id, "medfee_sumamt": money(s.medfee),
                 "cnfm_flag": "1"}
                for s in ours[:100]
            ] or [{"setl_sn": "NONE", "mdtrt_id": "NONE", "cnfm_flag": "0", "reason": "参保地无此结算记录"}]
        return "medical.clearing.confirm", confirm


@dataclass(frozen=True, slots=True)
class Licence:
    license_id: str
    license_type_code: str
    issuer_code: str
    holder_id_hash: str
    status: str = "01"  # 01 valid, 03 revoked (GB/T 36904 status codes)


class LicenceRegistry:
    """A region's electronic licence registry: answers verifications from its records, and revokes."""

    def __init__(self, region: str, licences: Iterable[Licence]) -> None:
        self.region = region
        self.licences = {lic.license_id: lic for lic in licences}

    def on_verify_request(self, d: Delivery) -> Reply:
        req = d.payload()
        lic = self.licences.get(req.get("license_id", ""))
        verdict = "NOT_FOUND" if lic is None else {"01": "VALID", "03": "REVOKED"}.get(lic.status, "INVALID")
        result: dict[str, Any] = {"verdict": verdict, "checked_at": cst_now().isoformat(timespec="seconds")}
        if lic is not None:
            result.update(license_id=lic.license_id, status=lic.status, issuer_signature_ok=True)
        return "license.verify.result", result

    def revoke(self, license_id: str, reason: str) -> dict[str, Any]:
        """Revoke a licence and return the status notice for the regions that relied on it."""
        lic = self.licences[license_id]
        self.licences[license_id] = Licence(lic.license_id, lic.license_type_code, lic.issuer_code,
                                            lic.holder_id_hash, "03")
        return {
            "license_id": lic.license_id, "license_type_code": lic.license_type_code,
            "holder_id_type_code": "001", "holder_id_hash": lic.holder_id_hash, "old_status": lic.status,
            "new_status": "03", "operation_type": "05",
            "effective_at": cst_now().isoformat(timespec="seconds"), "reason": reason,
            "issuer_code": lic.issuer_code,
        }


class LicenceConsumer:
    """A platform that accepts licences of other regions and follows their status notices."""

    def __init__(self) -> None:
        self.verdicts: dict[str, str] = {}  # license_id -> last verdict or status learnt
        self.revoked: set[str] = set()

    def on_verify_result(self, d: Delivery) -> None:
        res = d.payload()
        if "license_id" in res:
            self.verdicts[res["license_id"]] = res["verdict"]

    def on_status_notice(self, d: Delivery) -> None:
        notice = d.payload()
        if notice["new_status"] == "03":
            self.revoked.add(notice["license_id"])
            self.verdicts[notice["license_id"]] = "REVOKED"


class IdentityPlatform:
    """A region's identity platform: matches a pseudonymised citizen id and a name against its residents."""

    def __init__(self, region: str, residents: Mapping[str, str]) -> None:
        self.region = region
        self._residents = dict(residents)  # id_hash -> name

    def on_verify_request(self, d: Delivery) -> Reply:
        req = d.payload()
        name = self._residents.get(req.get("id_hash", ""))
        match = name is not None and name == req["name"]
        return "identity.verify.result", {
            "match": "MATCH" if match else "NO_MATCH",
            "assurance_level_achieved": req["required_assurance_level"] if match else 0,
            "verified_by": self.region, "verified_at": cst_now().isoformat(timespec="milliseconds"),
        }


def _division(region: str) -> str:
    return DIVISION[region]


# --- the webhook side ---------------------------------------------------------------------------------------

# A reaction answers at once, or (awaitable) after calling its gateway first, e.g. to upload a file it answers with.
Handler = Callable[[Delivery], Reply | None | Awaitable[Reply | None]]


class AnswerSender(Protocol):
    async def send(self, msg_type: str, to: str, payload: object, *, story: str,
                   correlation_id: str | None = None) -> Attempt: ...


class SimulatedPlatforms:
    """The four regions' platforms behind one webhook server: each delivery is verified, recorded, answered.

    Reactions are registered per (region, message type); a handler returns the answer to send back (type and
    payload) or None. Answers leave from background tasks, so the webhook returns 204 at once.
    """

    def __init__(self, ledger: Ledger, registry: SchemaRegistry) -> None:
        self.ledger = ledger
        self.registry = registry
        self.port = 0
        self.clients: dict[str, PlatformClient] = {}
        self.refused_deliveries: list[tuple[str, str]] = []  # (region, why) of webhooks we refused
        self.reaction_errors: list[str] = []
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._trust: TrustStore | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Condition()
        # region -> seconds its platform waits before answering (a stalled insured location, for timeouts)
        self.answer_delay_s: dict[str, float] = {}
        # region -> what its answers leave through instead of its client's one POST each (adapters/answer_batch.py)
        self.answer_via: dict[str, AnswerSender] = {}
        # (region, type, conversation) -> the first such delivery
        self._first: dict[tuple[str, str, str], Delivery] = {}

    # wiring
    def on(self, region: str, msg_type: str, handler: Handler) -> None:
        self._handlers[region, msg_type] = handler

    def connect(self, clients: Mapping[str, PlatformClient], trust: TrustStore) -> None:
        """Once the gateways are up: the clients to answer through, the trust to check deliveries with."""
        self.clients = dict(clients)
        self._trust = trust

    def url(self, region: str) -> str:
        return f"http://127.0.0.1:{self.port}/{region}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{region}", self._webhook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()  # port 0: the kernel picks a free one
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # receiving
    def _verify(self, sender: str, body: bytes, signature: str) -> str | None:
        """Why this delivery cannot be trusted (None if it can): the sending gateway's signature over the
        exact body bytes, by a certificate of the exchange's root naming the region the message claims."""
        if self._trust is None:
            return "no trust configured"
        try:
            jws = parse_detached(signature)
            signer = self._trust.signer(jws.header, datetime.now(UTC))
        except (JwsError, TrustError) as e:
            return f"signature: {e}"
        if signer.region != sender:
            return f"signed by {signer.region}, claims to be from {sender}"
        if not verify_detached(jws, body, signer.public_key):
            return "signature does not match the body"
        return None

    async def _webhook(self, request: web.Request) -> web.Response:
        region = request.match_info["region"]
        if region not in REGIONS:
            return web.Response(status=404)
        body = await request.read()
        h = request.headers
        try:
            msg_id, msg_type, sender = h["Yrdx-Message-Id"], h["Yrdx-Type"], h["Yrdx-From"]
            correlation_id, signature = h["Yrdx-Correlation-Id"], h["Yrdx-Signature"]
        except KeyError as e:
            self.refused_deliveries.append((region, f"missing header {e}"))
            return web.Response(status=400)
        opened: dict[str, Any] | None = None
        if h.get("Yrdx-Sealed") == "true":  # the opened document: payload in clear, the signed bytes as evidence
            try:
                doc = orjson.loads(body)
                opened, body = doc["payload"], base64.b64decode(doc["envelope"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                self.refused_deliveries.append((region, "malformed opened document"))
                return web.Response(status=400)
        why = self._verify(sender, body, signature)
        if why is not None:
            self.refused_deliveries.append((region, why))
            return web.Response(status=400)  # a 4xx the gateway does not retry: it dead-letters the message
        if msg_id in self.ledger.deliveries:
            return web.Response(status=204)  # a redelivery after a gateway restart: already handled
        arrived = time.monotonic()
        delivery = Delivery(region, msg_id, msg_type, sender, correlation_id, arrived, body, signature, opened)
        self.ledger.deliveries[msg_id] = delivery
        self._first.setdefault((region, msg_type, correlation_id), delivery)
        handler = self._handlers.get((region, msg_type))
        if handler is not None:
            # The platform updates its own records at once (before anyone waiting on this delivery wakes up);
            # only its answer leaves in the background.
            try:
                reply = handler(delivery)
            except Exception as e:  # a reaction must never take the webhook server down
                log.exception("reaction failed")
                self.reaction_errors.append(f"{region} reaction to {msg_type} failed: {type(e).__name__}")
                reply = None
            if inspect.isawaitable(reply):  # a reaction that must call its gateway first (a file upload)
                self._spawn(self._answer_when(delivery, reply))
            elif reply is not None:
                self._spawn(self._answer(delivery, *reply))
        async with self._arrived:
            self._arrived.notify_all()
        return web.Response(status=204)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_when(self, d: Delivery, pending: Awaitable[Reply | None]) -> None:
        try:
            reply = await pending
        except Exception as e:  # as a plain reaction's failure: recorded, never raised into the server
            log.exception("reaction failed")
            self.reaction_errors.append(f"{d.region} reaction to {d.type} failed: {type(e).__name__}")
            return
        if reply is not None:
            await self._answer(d, *reply)

    async def _answer(self, d: Delivery, msg_type: str, payload: dict[str, Any]) -> None:
        delay = self.answer_delay_s.get(d.region, 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        errors = self.registry.validate(msg_type, self.registry.latest_version(msg_type) or 1, payload)
        if errors:  # our own bug: say where, never what
            pointers = ", ".join(e.pointer or "/" for e in errors)
            self.reaction_errors.append(f"{d.region} built an invalid {msg_type} ({pointers})")
            return
        try:
            sender: AnswerSender = self.answer_via.get(d.region) or self.clients[d.region]
            attempt = await sender.send(msg_type, d.sender, payload, story=f"{d.region} platform answers",
                                        correlation_id=d.correlation_id)
        except (aiohttp.ClientError, TimeoutError) as e:
            self.reaction_errors.append(f"{d.region} could not reach its gateway: {type(e).__name__}")
            return
        if attempt.refused:
            self.reaction_errors.append(f"{d.region} could not answer with {msg_type}: {attempt.refused}")

    # waiting
    async def wait_for(
        self, region: str, msg_type: str, correlation_id: str, timeout_s: float = 20.0
    ) -> Delivery | None:
        """The first delivery of `msg_type` in this conversation at `region` (None if none came in time)."""

        return await self._wait(lambda: self._first.get((region, msg_type, correlation_id)), timeout_s)

    async def wait_delivered(self, msg_id: str, timeout_s: float = 20.0) -> Delivery | None:
        return await self._wait(lambda: self.ledger.deliveries.get(msg_id), timeout_s)

    async def _wait(self, find: Callable[[], Delivery | None], timeout_s: float) -> Delivery | None:
        try:
            async with asyncio.timeout(timeout_s), self._arrived:
                await self._arrived.wait_for(lambda: find() is not None)
        except TimeoutError:
            return None
        return find()

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until the reactions in flight have left."""
        deadline = time.monotonic() + timeout_s
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
