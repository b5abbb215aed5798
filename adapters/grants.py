"""The issuing region's licence platform: holders' grants (授权用证) and licence fetches under them (证照调取).

Grants live with the licence library of the issuing region, not in the gateways: the holder's authorization is
business data of that library (DOMAIN.md A.5: 委托授权用证, a licence fetched by its 用证码), and the library is the
one that hands the file out. The gateways relay the grant, the revocation, the fetch and its result, and audit each
with the operator, the purpose and the holder's pseudonym.

A grant is one row of a SQLite book; a fetch is decided in ONE immediate transaction that reads the grant, counts
the use and records the fetch's message id, so the count drops exactly once per fetch: a fetch delivered twice
(a webhook retried after a crash) gets the answer it got the first time, and fetches racing on the last use (from
any number of processes sharing the book) get one DELIVERED and GRANT_EXHAUSTED for the rest.

The answer to a DELIVERED fetch carries the licence metadata, the file by claim check and the annotation (加注件:
who fetched it, for what and until when, with the file's digest); the issuing gateway signs the envelope that
carries it, so the relying region holds a copy annotated and signed by the issuing region. The file itself is
uploaded for each DELIVERED fetch (POST /v1/files, sealed to the fetching region), after the decision and before
the answer: the claim check in the answer is the one the issuing gateway gave for that upload, and the fetching
platform downloads the file with it (GET /v1/files/{id}) and checks its digest.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from adapters.simulated import Delivery, Licence, Reply, cst_now

__all__ = ["FETCH_REFUSALS", "GrantBook", "LicenceFile", "LicenceIssuer", "Upload", "synthetic_pdf"]

# The refusal codes of license.fetch.result (README "Government services across regions").
FETCH_REFUSALS = ("NOT_FOUND", "NO_GRANT", "GRANT_REVOKED", "GRANTEE_MISMATCH", "GRANT_EXPIRED",
                  "PURPOSE_NOT_GRANTED", "GRANT_EXHAUSTED")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (
    grant_id TEXT PRIMARY KEY, license_id TEXT NOT NULL, holder_id_hash TEXT NOT NULL, grantee_region TEXT NOT NULL,
    grantee_org_code TEXT NOT NULL, use_causes TEXT NOT NULL, max_uses INTEGER NOT NULL, used INTEGER NOT NULL,
    valid_from TEXT NOT NULL, valid_until TEXT NOT NULL, revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS fetches (
    message_id TEXT PRIMARY KEY, grant_id TEXT NOT NULL, outcome TEXT NOT NULL, uses_left INTEGER NOT NULL,
    valid_until TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str  # DELIVERED or one of FETCH_REFUSALS
    uses_left: int
    valid_until: str = ""


@dataclass(frozen=True, slots=True)
class Fetch:
    """What a decision looks at: the request's message id, payload fields and use context."""

    message_id: str
    grant_id: str
    license_id: str
    holder_id_hash: str
    region: str  # the sending region (the gateway signature vouches for it)
    org_code: str
    use_cause: str | None
    at: datetime


class GrantBook:
    """Grants and the fetches decided under them, in one SQLite file (shareable by processes)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # one connection: calls from several threads take turns

    def close(self) -> None:
        self._db.close()

    def grant(self, g: Mapping[str, Any]) -> None:
        """A license.authorization.grant payload; the same grant id again changes nothing (a redelivery)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO grants VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, NULL) ON CONFLICT (grant_id) DO NOTHING",
                (g["grant_id"], g["license_id"], g["holder_id_hash"], g["grantee_region"], g["grantee_org_code"],
                 " ".join(g["use_causes"]), g["max_uses"], g["valid_from"], g["valid_until"]))

    def revoke(self, r: Mapping[str, Any]) -> bool:
        """A license.authorization.revoke payload: True when it ended a grant of that licence and holder."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE grants SET revoked_at = coalesce(revoked_at, ?) "
                "WHERE grant_id = ? AND license_id = ? AND holder_id_hash = ?",
                (r["revoked_at"], r["grant_id"], r["license_id"], r["holder_id_hash"]))
            return cur.rowcount == 1

    def decide(self, f: Fetch) -> Decision:
        """Check the grant and count the use, exactly once per fetch message."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                decision = self._decide(f)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return decision

    def _decide(self, f: Fetch) -> Decision:
        known = self._db.execute("SELECT outcome, uses_left, valid_until FROM fetches WHERE message_id = ?",
                                 (f.message_id,)).fetchone()
        if known is not None:
            return Decision(*known)
        row = self._db.execute(
            "SELECT license_id, holder_id_hash, grantee_region, grantee_org_code, use_causes, max_uses, used, "
            "valid_from, valid_until, revoked_at FROM grants WHERE grant_id = ?", (f.grant_id,)).fetchone()
        outcome, left, until = self._judge(f, row)
        if outcome == "DELIVERED":
            self._db.execute("UPDATE grants SET used = used + 1 WHERE grant_id = ?", (f.grant_id,))
        self._db.execute("INSERT INTO fetches VALUES (?, ?, ?, ?, ?)",
                         (f.message_id, f.grant_id, outcome, left, until))
        return Decision(outcome, left, until)

    @staticmethod
    def _judge(f: Fetch, row: tuple[Any, ...] | None) -> tuple[str, int, str]:
        if row is None or (row[0], row[1]) != (f.license_id, f.holder_id_hash):
            return "NO_GRANT", 0, ""
        _, _, region, org, causes, max_uses, used, valid_from, valid_until, revoked_at = row
        left = max_uses - used
        if revoked_at is not None:
            return "GRANT_REVOKED", 0, valid_until
        if (region, org) != (f.region, f.org_code):
            return "GRANTEE_MISMATCH", left, valid_until
        if not datetime.fromisoformat(valid_from) <= f.at <= datetime.fromisoformat(valid_until):
            return "GRANT_EXPIRED", left, valid_until
        if f.use_cause not in causes.split():
            return "PURPOSE_NOT_GRANTED", left, valid_until
        if left <= 0:
            return "GRANT_EXHAUSTED", 0, valid_until
        return "DELIVERED", left - 1, valid_until


@dataclass(frozen=True, slots=True)
class LicenceFile:
    """What the library holds of a licence beyond its registry record: face fields and the file itself."""

    license_number: str
    issue_date: str
    content: bytes  # the licence file (OFD/PDF); a synthetic one in the simulation
    media_type: str = "application/pdf"


# The library's gateway client: (region to send to, the bytes, media type) -> the claim check POST /v1/files
# answered, or None if the gateway refused the upload.
Upload = Callable[[str, bytes, str], Awaitable[Mapping[str, Any] | None]]


def synthetic_pdf(title: str, size: int = 48 * 1024) -> bytes:
    """A small PDF-like byte string standing for a licence or a case material (no personal data in it)."""
    head = f"%PDF-1.7\n% yrdx synthetic file: {title}\n".encode()
    body = (b"0123456789abcdef" * (size // 16 + 1))[:max(size - len(head) - 6, 0)]
    return head + body + b"\n%%EOF"


class LicenceIssuer:
    """The issuing region's library: keeps grants, answers fetches under them."""

    def __init__(self, region: str, book: GrantBook, licences: Iterable[tuple[Licence, LicenceFile]],
                 upload: Upload) -> None:
        self.region = region
        self.book = book
        self._upload = upload
        self._licences = {lic.license_id: (lic, f) for lic, f in licences}
        self.decisions: list[str] = []  # outcome of every fetch answered, in order (for the story's print)

    def on_grant(self, d: Delivery) -> None:
        self.book.grant(d.payload())

    def on_revoke(self, d: Delivery) -> None:
        self.book.revoke(d.payload())

    async def on_fetch_request(self, d: Delivery) -> Reply:
        req, env = d.payload(), d.envelope()
        now = cst_now()
        result: dict[str, Any] = {"grant_id": req["grant_id"], "license_id": req["license_id"],
                                  "decided_at": now.isoformat(timespec="seconds")}
        held = self._licences.get(req["license_id"])
        if held is None:
            self.decisions.append("NOT_FOUND")
            return "license.fetch.result", {**result, "outcome": "NOT_FOUND"}
        lic, file = held
        decision = self.book.decide(Fetch(d.id, req["grant_id"], req["license_id"], req["holder_id_hash"], d.sender,
                                          req["requester_org_code"], env.get("use_cause"), now))
        self.decisions.append(decision.outcome)
        if decision.outcome != "DELIVERED":
            return "license.fetch.result", {**result, "outcome": decision.outcome}
        claim = await self._upload(d.sender, file.content, file.media_type)  # sealed to the fetching region
        if claim is None:  # the use was counted, the file could not be handed out: say so, never a claim of nothing
            raise RuntimeError("the issuing gateway refused the licence file's upload")
        return "license.fetch.result", {
            **result, "outcome": "DELIVERED", "uses_left": decision.uses_left,
            "metadata": {"license_type_code": lic.license_type_code, "license_number": file.license_number,
                         "issuer_code": lic.issuer_code, "issue_date": file.issue_date, "status": lic.status},
            "file": dict(claim),
            "annotation": {"fetched_by_region": d.sender, "fetched_by_org_code": req["requester_org_code"],
                           "operator_id": env["operator"]["id"], "use_cause": env["use_cause"],
                           "valid_until": decision.valid_until,
                           "license_digest": claim["digest"]["value"]},
        }
