"""The insured location's medical-insurance platform (Anhui in the counter story): answers the NHSA counter
transactions from its own ledger.

It sits behind the webhook server of :mod:`adapters.simulated` like the other simulated platforms and answers
through its own gateway, keeping the request's ``correlation_id``. Its ledger is a SQLite file: persons and
credentials, visits and fee lines, settlements (and cancellations) with their answers, reversals, filings.
Money is ``Decimal`` from the payload's strings to the ledger's TEXT columns and back; sums are taken in
Python, never by SQLite (whose SUM is a float).

Exactly-once money, as the ledger decides it:

- A settlement (2207) is keyed by its HIS ``msgid`` and by its yrdx message id: a replay of either answers the
  stored result and settles nothing new.
- A reversal (2601) names the original by ``omsgid`` (either key). The first one undoes the settlement
  (``REVERSED``: the account share goes back to the balance, the row leaves every reconciliation); every
  replay answers ``ALREADY_REVERSED``. A reversal of an original the ledger never saw answers
  ``NOTHING_TO_REVERSE`` and leaves a mark, so the original, should it arrive afterwards, is not settled.
- So a 2207 and a 2601 for the same settlement, in either order, end in one state: nothing settled, the
  balance as before. (A 2207 refused that way gets no answer: medical.settlement.result v1 cannot say
  "refused"; its caller's deadline passes and the gateway's own reversal finds nothing to undo.)
- A cancellation (2208) of a standing settlement adds a negated row (its own ``setl_id``) and marks the
  original cancelled; a replay answers the same cancellation.

Reconciliation (3201 totals, 3202 rows) reads the same rows: reversed settlements never count; with
``refd_setl_flag`` 1 a cancelled settlement counts with its negated cancellation row (net zero), with 0
neither counts.

``stall(seconds)`` delays every answer (the ledger still changes at once): the insured location is slow, the
caller's deadline passes, the result arrives late.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from adapters.simulated import CENT, Delivery, Reply, SimulatedPlatforms, cst_now, money, settlement_split
from gateway.schemas.registry import SchemaRegistry

__all__ = ["OPENING_BALANCE", "InsuredMedicalPlatform", "Person", "Row"]

OPENING_BALANCE: Final = Decimal("2000.00")
INPATIENT: Final = frozenset({"21", "22", "23", "24", "25", "26", "27", "28", "52"})
SETTLED, REVERSED, CANCELLED = "SETTLED", "REVERSED", "CANCELLED"
SETTLEMENT, CANCELLATION = "SETTLEMENT", "CANCELLATION"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS person (psn_no TEXT PRIMARY KEY, gend TEXT, brdy TEXT, insutype TEXT, psn_type TEXT,
                                   insu_date TEXT, balance TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS credential (cert_type TEXT, cert_no TEXT, psn_no TEXT NOT NULL,
                                       PRIMARY KEY (cert_type, cert_no));
CREATE TABLE IF NOT EXISTS visit (mdtrt_id TEXT PRIMARY KEY, psn_no TEXT, fixmedins_code TEXT, ipt_otp_no TEXT,
                                  status TEXT NOT NULL, UNIQUE (fixmedins_code, ipt_otp_no));
CREATE TABLE IF NOT EXISTS fee_line (mdtrt_id TEXT, feedetl_sn TEXT, amount TEXT NOT NULL,
                                     PRIMARY KEY (mdtrt_id, feedetl_sn));
CREATE TABLE IF NOT EXISTS settlement (
    setl_id TEXT PRIMARY KEY, request_id TEXT UNIQUE, msgid TEXT UNIQUE, mdtrt_id TEXT, psn_no TEXT,
    fixmedins_code TEXT, insutype TEXT, clr_type TEXT, setl_date TEXT, medfee TEXT, fund TEXT, acct TEXT,
    kind TEXT NOT NULL, cancels TEXT UNIQUE, state TEXT NOT NULL, answer TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reversal (omsgid TEXT PRIMARY KEY, oinfno TEXT, rvs_stas TEXT NOT NULL, setl_id TEXT);
CREATE TABLE IF NOT EXISTS filing (filing_id TEXT PRIMARY KEY, psn_no TEXT, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS serial (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Person:
    """An insured person of the ledger, with the credentials a counter may present (type, number)."""

    psn_no: str
    credentials: tuple[tuple[str, str], ...]
    gend: str = "2"
    brdy: str = "2000-02-29"
    insutype: str = "310"
    psn_type: str = "11"
    insu_date: str = "2020-07-01"
    balance: Decimal = OPENING_BALANCE


@dataclass(frozen=True, slots=True)
class Row:
    """One settlement or cancellation row as reconciliation sees it."""

    setl_id: str
    mdtrt_id: str
    psn_no: str
    medfee: Decimal
    fund: Decimal
    acct: Decimal
    kind: str
    state: str


def _ok(**fields: Any) -> dict[str, Any]:
    return {"outcome": "OK", **fields}


def _refused(why: str) -> dict[str, Any]:
    return {"outcome": "REJECTED", "err_msg": why}


class InsuredMedicalPlatform:
    """The insured region's medical-insurance platform: one ledger, one handler per request type."""

    def __init__(self, region: str, registry: SchemaRegistry, ledger: Path, persons: Iterable[Person]) -> None:
        self.region = region
        self._registry = registry
        self._db = sqlite3.connect(ledger, isolation_level=None)
        # WAL, synced at checkpoints: a handler's commit is a write to the log instead of an fsync of the
        # journal and the file each time (it ran on the webhook server's loop, in every answer's path). A
        # committed settlement survives the process; only a power cut may lose the last ones.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        with self._tx():
            for p in persons:
                self._db.execute(
                    "INSERT OR IGNORE INTO person VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (p.psn_no, p.gend, p.brdy, p.insutype, p.psn_type, p.insu_date, str(p.balance)),
                )
                self._db.executemany(
                    "INSERT OR IGNORE INTO credential VALUES (?, ?, ?)", [(*c, p.psn_no) for c in p.credentials]
                )
        self._platforms: SimulatedPlatforms | None = None

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """One handler's changes commit together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- wiring ------------------------------------------------------------------------------------------

    def handlers(self) -> dict[str, Callable[[Delivery], Reply | None]]:
        return {
            "medical.person.request": self.on_person,
            "medical.visit.register": self.on_visit_register,
            "medical.visit.cancel": self.on_visit_cancel,
            "medical.fee.upload": self.on_fee_upload,
            "medical.fee.cancel": self.on_fee_cancel,
            "medical.settlement.pre.request": self.on_pre_settlement,
            "medical.settlement.request": self.on_settlement,
            "medical.settlement.cancel": self.on_settlement_cancel,
            "medical.reversal": self.on_reversal,
            "medical.filing.request": self.on_filing,
            "medical.filing.revoke": self.on_filing_revoke,
            "medical.reconcile.summary": self.on_reconcile_summary,
            "medical.reconcile.detail": self.on_reconcile_detail,
        }

    def attach(self, platforms: SimulatedPlatforms) -> None:
        """Answer this region's counter transactions on the webhook server."""
        self._platforms = platforms
        for msg_type, handler in self.handlers().items():
            platforms.on(self.region, msg_type, handler)

    def stall(self, seconds: float) -> None:
        """Answer every request ``seconds`` late from now on (0: answer at once again)."""
        if self._platforms is not None:
            self._platforms.answer_delay_s[self.region] = seconds

    # --- ids and balances ----------------------------------------------------------------------------------

    def _next(self, name: str) -> int:
        self._db.execute("INSERT INTO serial VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET n = n + 1", (name,))
        n: int = self._db.execute("SELECT n FROM serial WHERE name = ?", (name,)).fetchone()[0]
        return n

    def _balance(self, psn_no: str) -> Decimal:
        row = self._db.execute("SELECT balance FROM person WHERE psn_no = ?", (psn_no,)).fetchone()
        return Decimal(row[0]) if row else Decimal(0)

    def _add_balance(self, psn_no: str, delta: Decimal) -> None:
        self._db.execute("UPDATE person SET balance = ? WHERE psn_no = ?",
                         (money(self._balance(psn_no) + delta), psn_no))

    def balance(self, psn_no: str) -> Decimal:
        return self._balance(psn_no)

    # --- 1101, 2201/2202, 2204/2205 ---------------------------------------------------------------------

    def on_person(self, d: Delivery) -> Reply:
        req = d.payload()
        row = self._db.execute(
            "SELECT p.psn_no, gend, brdy, insutype, psn_type, insu_date, balance FROM credential c "
            "JOIN person p ON p.psn_no = c.psn_no WHERE cert_type = ? AND cert_no = ?",
            (req["mdtrt_cert_type"], req["mdtrt_cert_no"]),
        ).fetchone()
        if row is None:
            return "medical.person.result", _refused("参保地无此人员参保信息")
        psn_no, gend, brdy, insutype, psn_type, insu_date, balance = row
        now = cst_now().date()
        born = [int(x) for x in brdy.split("-")]
        age = now.year - born[0] - ((now.month, now.day) < (born[1], born[2]))
        insuinfo = {"insutype": insutype, "psn_type": psn_type, "psn_insu_stas": "1", "psn_insu_date": insu_date,
                    "cvlserv_flag": "0", "balc": balance, "insuplc_admdvs": req["insuplc_admdvs"]}
        return "medical.person.result", _ok(psn_no=psn_no, gend=gend, brdy=brdy, age=age, insuinfo=[insuinfo])

    def on_visit_register(self, d: Delivery) -> Reply:
        req = d.payload()
        with self._tx():
            if self._db.execute("SELECT 1 FROM person WHERE psn_no = ?", (req["psn_no"],)).fetchone() is None:
                return "medical.visit.register.result", _refused("参保地无此人员")
            known = self._db.execute("SELECT mdtrt_id FROM visit WHERE fixmedins_code = ? AND ipt_otp_no = ?",
                                     (req["fixmedins_code"], req["ipt_otp_no"])).fetchone()
            if known is not None:  # the same hospital visit registered again: the same visit id
                mdtrt_id = known[0]
            else:
                mdtrt_id = f"A{req['insuplc_admdvs']}{cst_now():%y%m%d}{self._next('visit'):07d}"
                self._db.execute("INSERT INTO visit VALUES (?, ?, ?, ?, 'OPEN')",
                                 (mdtrt_id, req["psn_no"], req["fixmedins_code"], req["ipt_otp_no"]))
        return "medical.visit.register.result", _ok(mdtrt_id=mdtrt_id, psn_no=req["psn_no"],
                                                    ipt_otp_no=req["ipt_otp_no"])

    def _settled_visit(self, mdtrt_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM settlement WHERE mdtrt_id = ? AND state = ? AND kind = ?",
                                (mdtrt_id, SETTLED, SETTLEMENT)).fetchone() is not None

    def on_visit_cancel(self, d: Delivery) -> Reply:
        req = d.payload()
        with self._tx():
            if self._settled_visit(req["mdtrt_id"]):
                return "medical.visit.cancel.result", _refused("就诊已结算, 请先撤销结算")
            done = self._db.execute("UPDATE visit SET status = 'CANCELLED' WHERE mdtrt_id = ? AND psn_no = ?",
                                    (req["mdtrt_id"], req["psn_no"])).rowcount
        if not done:
            return "medical.visit.cancel.result", _refused("就诊ID不存在")
        return "medical.visit.cancel.result", _ok(mdtrt_id=req["mdtrt_id"])

    def _visit_total(self, mdtrt_id: str) -> Decimal:
        rows = self._db.execute("SELECT amount FROM fee_line WHERE mdtrt_id = ?", (mdtrt_id,)).fetchall()
        return sum((Decimal(a) for (a,) in rows), Decimal(0))

    def on_fee_upload(self, d: Delivery) -> Reply:
        req = d.payload()
        visit = self._db.execute("SELECT status FROM visit WHERE mdtrt_id = ?", (req["mdtrt_id"],)).fetchone()
        if visit is None or visit[0] != "OPEN":
            return "medical.fee.upload.result", _refused("就诊ID不存在或已撤销")
        for i, line in enumerate(req["feedetail"]):
            if (Decimal(line["cnt"]) * Decimal(line["pric"])).quantize(CENT) != Decimal(line["det_item_fee_sumamt"]):
                return "medical.fee.upload.result", _refused(f"feedetail[{i}]: det_item_fee_sumamt 不等于 cnt × pric")
        with self._tx():
            self._db.executemany(
                "INSERT INTO fee_line VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET amount = excluded.amount",
                [(req["mdtrt_id"], line["feedetl_sn"], line["det_item_fee_sumamt"]) for line in req["feedetail"]],
            )
            total = self._visit_total(req["mdtrt_id"])
        result = [{"feedetl_sn": line["feedetl_sn"], "det_item_fee_sumamt": line["det_item_fee_sumamt"],
                   "chrgitm_lv": "01", "fulamt_ownpay_amt": "0.00", "inscp_scp_amt": line["det_item_fee_sumamt"]}
                  for line in req["feedetail"]]
        return "medical.fee.upload.result", _ok(mdtrt_id=req["mdtrt_id"], medfee_sumamt=money(total), result=result)

    def on_fee_cancel(self, d: Delivery) -> Reply:
        req = d.payload()
        with self._tx():
            if self._settled_visit(req["mdtrt_id"]):
                return "medical.fee.cancel.result", _refused("就诊已结算, 请先撤销结算")
            if req["feedetl_sn"] == "0000":
                self._db.execute("DELETE FROM fee_line WHERE mdtrt_id = ?", (req["mdtrt_id"],))
            else:
                self._db.execute("DELETE FROM fee_line WHERE mdtrt_id = ? AND feedetl_sn = ?",
                                 (req["mdtrt_id"], req["feedetl_sn"]))
            total = self._visit_total(req["mdtrt_id"])
        return "medical.fee.cancel.result", _ok(mdtrt_id=req["mdtrt_id"], medfee_sumamt=money(total))

    # --- 2206, 2207, 2208, 2601 ----------------------------------------------------------------------------

    def _split(self, req: Mapping[str, Any], setl_id: str, serial: int) -> dict[str, Any]:
        now = cst_now()
        result = settlement_split(
            self._registry, req, self._balance(req["psn_no"]), setl_id=setl_id, now=now,
            medins_setl_id=f"{req['fixmedins_code']}{now:%Y%m%d%H%M%S}{serial % 10000:04d}",
            clr_optins=req["insuplc_admdvs"],
        )
        result["clr_type"] = "21" if req["med_type"][:2] in INPATIENT else "11"
        return result

    def on_pre_settlement(self, d: Delivery) -> Reply:
        result = self._split(d.payload(), "PRE", 0)
        for committed in ("setl_id", "setl_time", "medins_setl_id"):
            del result[committed]
        return "medical.settlement.pre.result", result

    def _reversal_of(self, *keys: str) -> str | None:
        for key in keys:
            row = self._db.execute("SELECT rvs_stas FROM reversal WHERE omsgid = ?", (key,)).fetchone()
            if row is not None:
                return str(row[0])
        return None

    def on_settlement(self, d: Delivery) -> Reply | None:
        req = d.payload()
        msgid = req.get("msgid")
        with self._tx():
            known = self._db.execute("SELECT answer FROM settlement WHERE request_id = ? OR msgid = ?",
                                     (d.id, msgid)).fetchone()
            if known is not None:  # a replay: the same answer, nothing settled twice
                return "medical.settlement.result", json.loads(known[0])
            if self._reversal_of(d.id, *([msgid] if msgid else [])) is not None:
                return None  # reversed before it arrived: never settled (see the module docstring)
            serial = self._next("settlement")
            setl_id = f"S{req['insuplc_admdvs']}{cst_now():%y%m%d}{serial:07d}"
            result = self._split(req, setl_id, serial)
            self._add_balance(req["psn_no"], -Decimal(result["acct_pay"]))
            self._db.execute(
                "INSERT INTO settlement VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                (setl_id, d.id, msgid, req["mdtrt_id"], req["psn_no"], req["fixmedins_code"], req["insutype"],
                 result["clr_type"], result["setl_time"][:10], result["medfee_sumamt"], result["fund_pay_sumamt"],
                 result["acct_pay"], SETTLEMENT, SETTLED, json.dumps(result, ensure_ascii=False)),
            )
        return "medical.settlement.result", result

    def on_settlement_cancel(self, d: Delivery) -> Reply | None:
        req = d.payload()
        with self._tx():
            done = self._db.execute("SELECT answer FROM settlement WHERE cancels = ?", (req["setl_id"],)).fetchone()
            if done is not None:
                return "medical.settlement.cancel.result", json.loads(done[0])
            row = self._db.execute(
                "SELECT answer FROM settlement WHERE setl_id = ? AND psn_no = ? AND state = ? AND kind = ?",
                (req["setl_id"], req["psn_no"], SETTLED, SETTLEMENT),
            ).fetchone()
            if row is None:
                return None  # nothing standing to cancel (the result type cannot say so; see the docstring)
            original = json.loads(row[0])
            serial = self._next("settlement")
            now = cst_now()
            setl_id = f"S{original['clr_optins']}{now:%y%m%d}{serial:07d}"
            negated = {k: money(-Decimal(original[k])) for k in
                       ("medfee_sumamt", "fund_pay_sumamt", "psn_part_amt", "acct_pay", "psn_cash_pay")}
            self._add_balance(req["psn_no"], Decimal(original["acct_pay"]))
            result = {
                "setl_id": setl_id, "mdtrt_id": original["mdtrt_id"], "psn_no": original["psn_no"],
                "setl_time": f"{now:%Y-%m-%d %H:%M:%S}", **negated, "balc": money(self._balance(req["psn_no"])),
                "clr_optins": original["clr_optins"], "clr_way": original["clr_way"],
                "clr_type": original["clr_type"],
                "setldetail": [
                    {"fund_pay_type": line["fund_pay_type"], "fund_payamt": money(-Decimal(line["fund_payamt"]))}
                    for line in original["setldetail"]
                ],
            }
            self._db.execute("UPDATE settlement SET state = ? WHERE setl_id = ?", (CANCELLED, req["setl_id"]))
            self._db.execute(
                "INSERT INTO settlement SELECT ?, NULL, NULL, mdtrt_id, psn_no, fixmedins_code, insutype, clr_type, "
                "?, ?, ?, ?, ?, setl_id, ?, ? FROM settlement WHERE setl_id = ?",
                (setl_id, f"{now:%Y-%m-%d}", negated["medfee_sumamt"], negated["fund_pay_sumamt"],
                 negated["acct_pay"], CANCELLATION, SETTLED, json.dumps(result, ensure_ascii=False), req["setl_id"]),
            )
        return "medical.settlement.cancel.result", result

    def on_reversal(self, d: Delivery) -> Reply:
        req = d.payload()
        omsgid, oinfno = req["omsgid"], req["oinfno"]
        answer: dict[str, Any] = {"omsgid": omsgid, "oinfno": oinfno}
        with self._tx():
            row = self._db.execute(
                "SELECT setl_id, psn_no, acct, state FROM settlement WHERE (msgid = ? OR request_id = ?) AND kind = ?",
                (omsgid, omsgid, SETTLEMENT),
            ).fetchone() if oinfno == "2207" else None
            if row is None:
                status = self._reversal_of(omsgid) or "NOTHING_TO_REVERSE"
                if oinfno == "2207":  # a mark, so that a late original is not settled
                    self._db.execute("INSERT OR IGNORE INTO reversal VALUES (?, ?, ?, NULL)",
                                     (omsgid, oinfno, "NOTHING_TO_REVERSE"))
                return "medical.reversal.result", {**answer, "rvs_stas": status}
            setl_id, psn_no, acct, state = row
            if state == SETTLED:
                self._db.execute("UPDATE settlement SET state = ? WHERE setl_id = ?", (REVERSED, setl_id))
                self._add_balance(psn_no, Decimal(acct))
                status = "REVERSED"
            else:  # reversed already (by the gateway or an earlier 2601), or cancelled by a 2208 that stands
                status = "ALREADY_REVERSED" if state == REVERSED else "NOTHING_TO_REVERSE"
            self._db.execute("INSERT OR IGNORE INTO reversal VALUES (?, ?, ?, ?)", (omsgid, oinfno, status, setl_id))
        return "medical.reversal.result", {**answer, "rvs_stas": status, "setl_id": setl_id}

    # --- 2501/2502 -----------------------------------------------------------------------------------------

    def on_filing(self, d: Delivery) -> Reply:
        req = d.payload()
        with self._tx():
            self._db.execute("INSERT OR IGNORE INTO filing VALUES (?, ?, 'ACCEPTED')",
                             (req["filing_id"], req["psn_no"]))
        return "medical.filing.result", {"filing_id": req["filing_id"], "status": "ACCEPTED"}

    def on_filing_revoke(self, d: Delivery) -> Reply:
        req = d.payload()
        with self._tx():
            done = self._db.execute("UPDATE filing SET status = 'REVOKED' WHERE filing_id = ? AND psn_no = ?",
                                    (req["filing_id"], req["psn_no"])).rowcount
        if not done:
            return "medical.filing.revoke.result", {"filing_id": req["filing_id"], "status": "REJECTED",
                                                    "err_msg": "无此备案"}
        return "medical.filing.revoke.result", {"filing_id": req["filing_id"], "status": "REVOKED"}

    # --- 3201/3202 -----------------------------------------------------------------------------------------

    def rows(self, req: Mapping[str, Any]) -> list[Row]:
        """The ledger's rows a reconciliation of this hospital, insurance, clearing type and period counts."""
        found = self._db.execute(
            "SELECT setl_id, mdtrt_id, psn_no, medfee, fund, acct, kind, state FROM settlement "
            "WHERE fixmedins_code = ? AND insutype = ? AND clr_type = ? AND setl_date BETWEEN ? AND ? "
            "AND state != ? ORDER BY setl_id",
            (req["fixmedins_code"], req["insutype"], req["clr_type"], req["stmt_begndate"], req["stmt_enddate"],
             REVERSED),
        ).fetchall()
        rows = [Row(s, m, p, Decimal(f), Decimal(fu), Decimal(a), k, st) for s, m, p, f, fu, a, k, st in found]
        if req["refd_setl_flag"] == "0":  # refunds excluded: neither a cancelled settlement nor its cancellation
            rows = [r for r in rows if r.kind == SETTLEMENT and r.state == SETTLED]
        return rows

    def on_reconcile_summary(self, d: Delivery) -> Reply:
        req = d.payload()
        rows = self.rows(req)
        ours = (sum((r.medfee for r in rows), Decimal(0)), sum((r.fund for r in rows), Decimal(0)),
                sum((r.acct for r in rows), Decimal(0)), len(rows))
        theirs = (Decimal(req["medfee_sumamt"]), Decimal(req["fund_pay_sumamt"]), Decimal(req["acct_pay"]),
                  req["fixmedins_setl_cnt"])
        result: dict[str, Any] = {
            "stmt_rslt": "0" if ours == theirs else "1", "medfee_sumamt": money(ours[0]),
            "fund_pay_sumamt": money(ours[1]), "acct_pay": money(ours[2]), "fixmedins_setl_cnt": ours[3],
            "stmt_begndate": req["stmt_begndate"], "stmt_enddate": req["stmt_enddate"],
        }
        if ours != theirs:
            result["stmt_rslt_dscr"] = (f"笔数 医院 {theirs[3]} / 参保地 {ours[3]}; "
                                        f"医疗费总额 医院 {money(theirs[0])} / 参保地 {money(ours[0])}")
        return "medical.reconcile.summary.result", result

    def on_reconcile_detail(self, d: Delivery) -> Reply:
        req = d.payload()
        ours = {r.setl_id: r for r in self.rows(req)}
        theirs = {i["setl_id"]: i for i in req["items"]}
        dif: list[dict[str, str]] = []
        for setl_id in sorted(ours.keys() | theirs.keys()):
            mine, item = ours.get(setl_id), theirs.get(setl_id)
            if mine is None:
                dif.append({"setl_id": setl_id, "stmt_dif": "HOSPITAL_ONLY"})
            elif item is None:
                dif.append({"setl_id": setl_id, "mdtrt_id": mine.mdtrt_id, "stmt_dif": "LEDGER_ONLY"})
            elif (mine.medfee, mine.fund, mine.acct) != tuple(
                Decimal(item[k]) for k in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay")
            ):
                dif.append({"setl_id": setl_id, "mdtrt_id": mine.mdtrt_id, "stmt_dif": "AMOUNT"})
        result: dict[str, Any] = {"stmt_rslt": "1" if dif else "0", "fixmedins_setl_cnt": len(ours),
                                  "dif_items": dif[:1000]}
        if dif:
            result["stmt_rslt_dscr"] = f"{len(dif)} 笔不符"
        return "medical.reconcile.detail.result", result
