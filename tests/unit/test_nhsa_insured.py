"""The insured location's medical platform (adapters/insured.py): its answers keep the DOMAIN.md invariants,
its ledger settles and reverses exactly once, and its reconciliation balances to the cent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.insured import OPENING_BALANCE, InsuredMedicalPlatform, Person
from adapters.simulated import Delivery, cst_now
from gateway.schemas.registry import SchemaRegistry

PSN = "33050099000010000001689700"
ID_NUMBER = "34010420000229124X"
FIX = "H31011500001"


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load()


@pytest.fixture
def insured(registry: SchemaRegistry, tmp_path: Path) -> Iterator[InsuredMedicalPlatform]:
    platform = InsuredMedicalPlatform("AH", registry, tmp_path / "ledger.sqlite",
                                      [Person(PSN, (("02", ID_NUMBER), ("01", "E-VOUCHER-TOKEN-0001")))])
    yield platform
    platform.close()


def deliver(platform: InsuredMedicalPlatform, msg_type: str, payload: dict[str, Any],
            msg_id: str | None = None) -> tuple[str, dict[str, Any]] | None:
    d = Delivery("AH", msg_id or str(uuid.uuid4()), msg_type, "SH", "c-1", 0.0, b"", "", payload)
    reply = platform.handlers()[msg_type](d)
    if reply is not None:  # every answer is a valid message of its type
        assert platform._registry.validate(reply[0], 1, reply[1]) == [], reply[0]
    return reply


def settlement(registry: SchemaRegistry, n: int, medfee: str = "356.80", inscp: str = "336.30") -> dict[str, Any]:
    req = registry.examples("medical.settlement.request")[0]
    req.update(msgid=f"{FIX}20240315093000{n:04d}", psn_no=PSN, mdtrt_id=f"A34010024031500{n:04d}",
               medfee_sumamt=medfee, inscp_scp_amt=inscp, insuplc_admdvs="340100")
    return req


def reversal(omsgid: str) -> dict[str, Any]:
    return {"omsgid": omsgid, "oinfno": "2207", "psn_no": PSN, "insuplc_admdvs": "340100"}


def summary(insured: InsuredMedicalPlatform, medfee: Decimal, fund: Decimal, acct: Decimal, count: int,
            refunds: str = "1") -> dict[str, Any]:
    today = cst_now().date().isoformat()
    req = {"insutype": "310", "clr_type": "11", "setl_optins": "340100", "stmt_begndate": today,
           "stmt_enddate": today, "medfee_sumamt": str(medfee), "fund_pay_sumamt": str(fund),
           "acct_pay": str(acct), "fixmedins_setl_cnt": count, "refd_setl_flag": refunds,
           "insuplc_admdvs": "340100", "mdtrtarea_admdvs": "310000", "fixmedins_code": FIX}
    reply = deliver(insured, "medical.reconcile.summary", req)
    assert reply is not None
    return reply[1]


def test_person_is_found_by_credential_and_unknown_credential_is_refused(insured: InsuredMedicalPlatform) -> None:
    req = {"mdtrt_cert_type": "02", "mdtrt_cert_no": ID_NUMBER, "insuplc_admdvs": "340100",
           "mdtrtarea_admdvs": "310000", "fixmedins_code": FIX, "use_cause": "x", "service_item_code": "S"}
    reply = deliver(insured, "medical.person.request", req)
    assert reply is not None and reply[1]["psn_no"] == PSN and reply[1]["insuinfo"][0]["balc"] == "2000.00"
    assert "certno" not in reply[1] and "psn_name" not in reply[1]  # minimisation: nothing the HIS sent back
    reply = deliver(insured, "medical.person.request", {**req, "mdtrt_cert_no": "320506199007181520"})
    assert reply == ("medical.person.result", {"outcome": "REJECTED", "err_msg": "参保地无此人员参保信息"})


def test_settlement_keeps_the_sums_in_exact_decimal(registry: SchemaRegistry, insured: InsuredMedicalPlatform) -> None:
    reply = deliver(insured, "medical.settlement.request", settlement(registry, 1, "100.01", "33.33"))
    assert reply is not None
    res = reply[1]
    assert res["fund_pay_sumamt"] == "23.33"  # 33.33 × 0.70 = 23.331, to the cent
    assert Decimal(res["fund_pay_sumamt"]) + Decimal(res["psn_part_amt"]) == Decimal("100.01")
    assert Decimal(res["acct_pay"]) + Decimal(res["psn_cash_pay"]) == Decimal(res["psn_part_amt"])
    assert insured.balance(PSN) == OPENING_BALANCE - Decimal(res["acct_pay"])


def test_a_settlement_replayed_by_msgid_or_message_id_settles_once(
    registry: SchemaRegistry, insured: InsuredMedicalPlatform
) -> None:
    req = settlement(registry, 2)
    first = deliver(insured, "medical.settlement.request", req, "0190a0b1-0000-7000-8000-00000000a001")
    again = deliver(insured, "medical.settlement.request", req)  # the HIS retried: a new message, the same msgid
    same = deliver(insured, "medical.settlement.request", req, "0190a0b1-0000-7000-8000-00000000a001")
    assert first == again == same
    assert first is not None
    assert insured.balance(PSN) == OPENING_BALANCE - Decimal(first[1]["acct_pay"])
    assert summary(insured, Decimal("356.80"), Decimal("235.41"), Decimal("121.39"), 1)["stmt_rslt"] == "0"


def test_a_reversal_replayed_reverses_once(registry: SchemaRegistry, insured: InsuredMedicalPlatform) -> None:
    req = settlement(registry, 3)
    deliver(insured, "medical.settlement.request", req)
    first = deliver(insured, "medical.reversal", reversal(req["msgid"]))
    second = deliver(insured, "medical.reversal", reversal(req["msgid"]))
    assert first is not None and second is not None
    assert (first[1]["rvs_stas"], second[1]["rvs_stas"]) == ("REVERSED", "ALREADY_REVERSED")
    assert insured.balance(PSN) == OPENING_BALANCE
    assert summary(insured, Decimal(0), Decimal(0), Decimal(0), 0)["stmt_rslt"] == "0"


def test_the_gateways_reversal_by_message_id_and_the_his_reversal_by_msgid_undo_one_settlement(
    registry: SchemaRegistry, insured: InsuredMedicalPlatform
) -> None:
    req = settlement(registry, 4)
    message_id = "0190a0b1-0000-7000-8000-00000000b004"
    deliver(insured, "medical.settlement.request", req, message_id)
    by_gateway = deliver(insured, "medical.reversal", reversal(message_id))
    by_his = deliver(insured, "medical.reversal", reversal(req["msgid"]))
    assert by_gateway is not None and by_his is not None
    assert (by_gateway[1]["rvs_stas"], by_his[1]["rvs_stas"]) == ("REVERSED", "ALREADY_REVERSED")
    assert insured.balance(PSN) == OPENING_BALANCE


def test_a_reversal_that_overtakes_its_settlement_leaves_nothing_settled(
    registry: SchemaRegistry, insured: InsuredMedicalPlatform
) -> None:
    req = settlement(registry, 5)
    early = deliver(insured, "medical.reversal", reversal(req["msgid"]))
    assert early is not None and early[1]["rvs_stas"] == "NOTHING_TO_REVERSE"
    assert deliver(insured, "medical.settlement.request", req) is None  # the late original is not settled
    assert insured.balance(PSN) == OPENING_BALANCE
    assert summary(insured, Decimal(0), Decimal(0), Decimal(0), 0)["stmt_rslt"] == "0"


def test_cancellation_negates_the_settlement_once_and_reconciles_either_way(
    registry: SchemaRegistry, insured: InsuredMedicalPlatform
) -> None:
    kept = deliver(insured, "medical.settlement.request", settlement(registry, 6, "100.00", "100.00"))
    gone = deliver(insured, "medical.settlement.request", settlement(registry, 7))
    assert kept is not None and gone is not None
    cancel = {"setl_id": gone[1]["setl_id"], "mdtrt_id": gone[1]["mdtrt_id"], "psn_no": PSN, "reason": "退费"}
    first = deliver(insured, "medical.settlement.cancel", cancel)
    assert first is not None and first == deliver(insured, "medical.settlement.cancel", cancel)
    assert first[1]["medfee_sumamt"] == "-356.80"
    k = kept[1]
    medfee, fund, acct = (Decimal(k[f]) for f in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay"))
    assert summary(insured, medfee, fund, acct, 3, refunds="1")["stmt_rslt"] == "0"  # kept + cancelled + negated
    assert summary(insured, medfee, fund, acct, 1, refunds="0")["stmt_rslt"] == "0"
    assert insured.balance(PSN) == OPENING_BALANCE - acct


def test_reconciliation_names_what_differs(registry: SchemaRegistry, insured: InsuredMedicalPlatform) -> None:
    a = deliver(insured, "medical.settlement.request", settlement(registry, 8))
    assert a is not None
    off = summary(insured, Decimal("356.81"), Decimal("235.41"), Decimal("121.39"), 1)
    assert off["stmt_rslt"] == "1" and off["medfee_sumamt"] == "356.80"
    today = cst_now().date().isoformat()
    item = {"setl_id": a[1]["setl_id"], "mdtrt_id": a[1]["mdtrt_id"], "psn_no": PSN, "medfee_sumamt": "356.80",
            "fund_pay_sumamt": "235.41", "acct_pay": "121.39", "refd_setl_flag": "0"}
    detail = {"insutype": "310", "clr_type": "11", "setl_optins": "340100", "stmt_begndate": today,
              "stmt_enddate": today, "medfee_sumamt": "356.80", "fund_pay_sumamt": "235.41", "acct_pay": "121.39",
              "fixmedins_setl_cnt": 2, "refd_setl_flag": "1", "insuplc_admdvs": "340100",
              "mdtrtarea_admdvs": "310000", "fixmedins_code": FIX,
              "items": [item, {**item, "setl_id": "S9999"}]}
    reply = deliver(insured, "medical.reconcile.detail", detail)
    assert reply is not None
    assert reply[1]["dif_items"] == [{"setl_id": "S9999", "stmt_dif": "HOSPITAL_ONLY"}]
    reply = deliver(insured, "medical.reconcile.detail", {**detail, "items": [{**item, "acct_pay": "0.00"}]})
    assert reply is not None and reply[1]["dif_items"][0]["stmt_dif"] == "AMOUNT"


def test_visit_fee_lines_and_cancels(registry: SchemaRegistry, insured: InsuredMedicalPlatform) -> None:
    visit = {**registry.examples("medical.visit.register")[0], "psn_no": PSN, "insuplc_admdvs": "340100"}
    first = deliver(insured, "medical.visit.register", visit)
    assert first is not None and first == deliver(insured, "medical.visit.register", visit)  # same visit id
    mdtrt_id = first[1]["mdtrt_id"]
    fee = {**registry.examples("medical.fee.upload")[0], "mdtrt_id": mdtrt_id}
    up = deliver(insured, "medical.fee.upload", fee)
    assert up is not None and up[1]["medfee_sumamt"] == "356.80"
    bad = {**fee, "feedetail": [{**fee["feedetail"][0], "det_item_fee_sumamt": "336.31"}]}
    refused = deliver(insured, "medical.fee.upload", bad)
    assert refused == ("medical.fee.upload.result",
                       {"outcome": "REJECTED", "err_msg": "feedetail[0]: det_item_fee_sumamt 不等于 cnt × pric"})
    cancel = {"mdtrt_id": mdtrt_id, "psn_no": PSN, "feedetl_sn": "0000", "insuplc_admdvs": "340100",
              "mdtrtarea_admdvs": "310000", "fixmedins_code": FIX}
    assert deliver(insured, "medical.fee.cancel", cancel) == (
        "medical.fee.cancel.result", {"outcome": "OK", "mdtrt_id": mdtrt_id, "medfee_sumamt": "0.00"})
    done = deliver(insured, "medical.visit.cancel", {"mdtrt_id": mdtrt_id, "psn_no": PSN,
                                                     "ipt_otp_no": visit["ipt_otp_no"], "insuplc_admdvs": "340100",
                                                     "mdtrtarea_admdvs": "310000", "fixmedins_code": FIX})
    assert done == ("medical.visit.cancel.result", {"outcome": "OK", "mdtrt_id": mdtrt_id})


def test_filing_and_its_revocation(registry: SchemaRegistry, insured: InsuredMedicalPlatform) -> None:
    filing = registry.examples("medical.filing.request")[0]
    assert deliver(insured, "medical.filing.request", filing) == (
        "medical.filing.result", {"filing_id": filing["filing_id"], "status": "ACCEPTED"})
    revoke = {"filing_id": filing["filing_id"], "psn_no": filing["psn_no"], "revoke_date": "2024-06-30",
              "reason": "返回参保地", "insuplc_admdvs": "340100"}
    reply = deliver(insured, "medical.filing.revoke", revoke)
    assert reply is not None and reply[1]["status"] == "REVOKED"
    reply = deliver(insured, "medical.filing.revoke", {**revoke, "filing_id": "F00000000000000001"})
    assert reply is not None and reply[1]["status"] == "REJECTED"


def test_the_ledger_survives_a_restart(registry: SchemaRegistry, tmp_path: Path) -> None:
    people = [Person(PSN, (("02", ID_NUMBER),))]
    first = InsuredMedicalPlatform("AH", registry, tmp_path / "l.sqlite", people)
    req = settlement(registry, 9)
    answered = deliver(first, "medical.settlement.request", req)
    first.close()
    second = InsuredMedicalPlatform("AH", registry, tmp_path / "l.sqlite", people)
    try:
        assert deliver(second, "medical.settlement.request", req) == answered
        assert answered is not None
        assert second.balance(PSN) == OPENING_BALANCE - Decimal(answered[1]["acct_pay"])
    finally:
        second.close()


def test_the_ledger_commits_to_a_write_ahead_log_without_an_fsync_per_handler(insured: InsuredMedicalPlatform) -> None:
    """Its handlers run on the webhook server's loop: with the default journal each commit took two fsyncs (~8 ms
    on the development machine), which held every answer of the counter behind them."""
    assert insured._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert insured._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: synced at checkpoints
