"""The government-services story (issue 12): a case handled across regions, a licence used under the holder's
grant, a credit list notice to every region.

- A Zhejiang enterprise applies at a Jiangsu counter for a Shanghai service item (跨省通办). Its legal
  representative authorizes Shanghai's handling authority to fetch the enterprise's Zhejiang licence once
  (license.authorization.grant JS->ZJ), and Jiangsu forwards the case to Shanghai (case.submit JS->SH, sealed),
  the application form by claim check (uploaded with POST /v1/files first) and the licence by reference instead
  of a copy; Shanghai's platform downloads the form (GET /v1/files/{id}) and checks its digest.
- Shanghai accepts (case.accept SH->JS) and fetches the licence from Zhejiang under the grant, with its operator
  and purpose (license.fetch.request SH->ZJ); Zhejiang's library uploads the licence file to Shanghai and answers
  with the metadata, that file's claim check and the annotated copy (license.fetch.result ZJ->SH); Shanghai's
  platform downloads the licence file and checks its digest. A second fetch under the same single-use grant is
  refused GRANT_EXHAUSTED.
- Shanghai reports progress and approves with the issued licence (case.progress, case.result SH->JS); the
  applicant rates the handling at the Jiangsu counter (case.evaluation JS->SH). Every message of the case has the
  case id as its correlation id: one partition, in order, one `yrdx audit trace`.
- Jiangsu puts an enterprise whose commitment was found untrue on the joint punishment list and tells every
  other region (credit.list.notice JS->SH, JS->ZJ, JS->AH).

The story prints what each region's platforms saw (types and outcome codes, never a payload value).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from adapters.grants import GrantBook, LicenceFile, LicenceIssuer, synthetic_pdf
from adapters.simulated import Delivery, Licence, Reply, SimulatedPlatforms, cst_now, pseudonym
from adapters.stories import ZJ_HOLDER, Cast, StoryResult, checked, zj_licence

__all__ = ["GovServices", "gov_services_story", "wire_gov_services"]

APPLICANT_AT, HANDLER, ISSUER = "JS", "SH", "ZJ"
SH_AUTHORITY, JS_AUTHORITY = "11310000002420113A", "11320000014008513K"
SH_OPERATOR = {"id": "SH-OP-0007", "role": "case_officer", "department": "SH-ZWFW"}
JS_OPERATOR = {"id": "JS-OP-0001", "role": "counter_clerk", "department": "JS-ZWFW"}
LISTED = "91320506MA1Y3N8Q2R"  # the synthetic Jiangsu enterprise whose commitment was untrue


@dataclass
class GovServices:
    """The platforms' side of the story: Zhejiang's library with its grant book, what each region saw, and the
    files each platform downloaded (`files`: "type:file ok" or "type:file refused", in order)."""

    issuer: LicenceIssuer
    licence: Licence
    sim: SimulatedPlatforms
    seen: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # region -> "type[:code]"
    files: list[str] = field(default_factory=list)

    def saw(self, d: Delivery, code: str | None = None) -> None:
        self.seen[d.region].append(d.type if code is None else f"{d.type}:{code}")

    async def download(self, d: Delivery, claim: dict[str, Any]) -> None:
        """The platform downloads a file its message claims and checks the size and digest."""
        data = await self.sim.clients[d.region].download_file(claim)
        self.files.append(f"{d.type}:{'file ok' if data is not None else 'file refused'}")

    async def on_fetch_result(self, d: Delivery) -> None:
        answer = d.payload()
        self.saw(d, answer["outcome"])
        if answer["outcome"] == "DELIVERED":
            await self.download(d, answer["file"])

    async def on_case_submit(self, d: Delivery) -> None:
        self.saw(d)
        for material in d.payload()["materials"]:
            if "claim_check" in material:
                await self.download(d, material["claim_check"])

    async def on_fetch_request(self, d: Delivery) -> Reply:
        self.saw(d)
        return await self.issuer.on_fetch_request(d)

    def on_grant(self, d: Delivery) -> None:
        self.saw(d)
        self.issuer.on_grant(d)


def wire_gov_services(sim: SimulatedPlatforms, book_dir: Path | None = None) -> GovServices:
    """Zhejiang's library (its grant book in `book_dir`, default a temporary folder) and the reactions."""
    folder = book_dir or Path(tempfile.mkdtemp(prefix="yrdx-grants-"))
    licence = zj_licence(1)  # the enterprise ZJ_HOLDER's licence
    number = "91330106MA2CD4W58W"
    file = LicenceFile(number, "2025-05-22", synthetic_pdf(f"business licence {number}"))

    async def upload(to: str, data: bytes, media_type: str) -> dict[str, Any] | None:
        return await sim.clients[ISSUER].upload_file(to, data, media_type)

    gov = GovServices(LicenceIssuer(ISSUER, GrantBook(folder / "grants.sqlite"), [(licence, file)], upload),
                      licence, sim)
    sim.on(ISSUER, "license.authorization.grant", gov.on_grant)
    sim.on(ISSUER, "license.fetch.request", gov.on_fetch_request)
    sim.on(HANDLER, "license.fetch.result", gov.on_fetch_result)
    sim.on(HANDLER, "case.submit", gov.on_case_submit)
    for region, msg_type in ((APPLICANT_AT, "case.accept"),
                             (APPLICANT_AT, "case.progress"), (APPLICANT_AT, "case.result"),
                             (HANDLER, "case.evaluation"), ("SH", "credit.list.notice"),
                             ("ZJ", "credit.list.notice"), ("AH", "credit.list.notice")):
        sim.on(region, msg_type, gov.saw)
    return gov


async def _until(done: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def gov_services_story(cast: Cast, gov: GovServices) -> StoryResult:
    result = StoryResult("A case forwarded JS->SH, a ZJ licence fetched under a grant, a credit list notice",
                         "case")
    reg, clients, problems = cast.registry, cast.clients, result.problems
    now = cst_now()
    case_id = f"JS-CASE-{uuid.uuid4().hex[:12].upper()}"
    grant_id = f"GR-{uuid.uuid4().hex[:12].upper()}"
    holder = pseudonym(ZJ_HOLDER)

    async def send(frm: str, msg_type: str, to: str, payload: dict[str, Any], conversation: str | None = case_id,
                   **use: Any) -> str | None:
        attempt = await clients[frm].send(msg_type, to, checked(reg, msg_type, payload),
                                          correlation_id=conversation, story="government services", **use)
        if attempt.id is None:
            problems.append(f"{msg_type} {frm}->{to} refused: {attempt.refused}")
            return None
        if await cast.sim.wait_delivered(attempt.id) is None:
            problems.append(f"{msg_type} {frm}->{to} never reached {to}")
            return None
        return attempt.id

    await send(APPLICANT_AT, "license.authorization.grant", ISSUER, {
        **reg.examples("license.authorization.grant")[0], "grant_id": grant_id, "license_id": gov.licence.license_id,
        "holder_id_hash": holder, "grantee_region": HANDLER, "grantee_org_code": SH_AUTHORITY, "max_uses": 1,
        "valid_from": now.isoformat(timespec="seconds"),
        "valid_until": (now + timedelta(days=7)).isoformat(timespec="seconds"),
        "granted_at": now.isoformat(timespec="seconds"),
    })
    submit: dict[str, Any] = reg.examples("case.submit")[0]  # the form by claim check, the licence by reference
    submit["case_id"] = case_id
    form = await clients[APPLICANT_AT].upload_file(HANDLER, synthetic_pdf(f"application form {case_id}"),
                                                   "application/pdf")
    if form is None:
        problems.append("Jiangsu's gateway refused the application form's upload")
    else:
        submit["materials"][0]["claim_check"] = form
    submit["materials"][1]["license_ref"] = {"license_id": gov.licence.license_id, "grant_id": grant_id}
    await send(APPLICANT_AT, "case.submit", HANDLER, submit, operator=JS_OPERATOR)
    await send(HANDLER, "case.accept", APPLICANT_AT, {**reg.examples("case.accept")[0], "case_id": case_id})
    fetch = {**reg.examples("license.fetch.request")[0], "grant_id": grant_id, "license_id": gov.licence.license_id,
             "holder_id_hash": holder, "requester_org_code": SH_AUTHORITY, "biz_num": case_id}
    def answered() -> int:
        return sum(t.startswith("license.fetch.result") for t in gov.seen[HANDLER])

    for n in (1, 2):  # the second is over the grant's single use
        await send(HANDLER, "license.fetch.request", ISSUER, fetch, operator=SH_OPERATOR, use_cause="gov_service")
        if not await _until(lambda: answered() >= n):  # noqa: B023 - awaited in this iteration
            problems.append("Zhejiang did not answer the fetch")
    if gov.issuer.decisions != ["DELIVERED", "GRANT_EXHAUSTED"]:
        problems.append(f"fetches decided {gov.issuer.decisions}, expected DELIVERED then GRANT_EXHAUSTED")
    downloads = ["case.submit:file ok", "license.fetch.result:file ok"]
    if not await _until(lambda: len(gov.files) >= len(downloads)) or sorted(gov.files) != downloads:
        problems.append(f"Shanghai's downloads: {gov.files}, expected the form and the licence file, both whole")
    for msg_type in ("case.progress", "case.result"):
        await send(HANDLER, msg_type, APPLICANT_AT, {**reg.examples(msg_type)[0], "case_id": case_id})
    await send(APPLICANT_AT, "case.evaluation", HANDLER, {**reg.examples("case.evaluation")[0], "case_id": case_id})
    notice: dict[str, Any] = {**reg.examples("credit.list.notice")[0], "subject_uscc": LISTED}
    for region in ("SH", "ZJ", "AH"):
        await send(APPLICANT_AT, "credit.list.notice", region, notice, conversation=str(notice["notice_id"]))
    result.summary = "; ".join(f"{r} saw {', '.join(types)}" for r, types in sorted(gov.seen.items()))
    result.summary += f"; SH downloaded {', '.join(gov.files)}"
    return result
