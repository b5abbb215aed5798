"""At the counter, end to end (issue 11): a Shanghai hospital's HIS speaks NHSA to its gateway's facade, the
Anhui insured platform answers from its ledger, through two real gateway processes and the session's broker.

Driven only through the facade (``POST /v1/facades/nhsa/transactions``); the checks read the insured ledger,
the insured platform's deliveries, the request's status (``GET /v1/requests/{id}``) and Shanghai's pull inbox.
Needs request-reply in the gateway (issue 11 part 1): without it the facade route is absent and every test here
fails on its first answer.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from adapters.counter_exchange import CARE, PATIENT, CounterExchange, counter_exchange
from adapters.his import HisAnswer, HisClient
from adapters.nhsa import infcodes
from adapters.simulated import cst_now
from gateway.dev.exchange import platform_id
from gateway.http.auth import TokenMinter
from tests._util import ROOT

pytestmark = pytest.mark.timeout(600)

ID_NUMBER = "34010420000229124X"
OUTPATIENT = {"insutype": "310", "med_type": "11", "mdtrt_cert_type": "02", "mdtrt_cert_no": ID_NUMBER,
              "psn_setlway": "01", "acct_used_flag": "1", "fulamt_ownpay_amt": "0.00", "overlmt_selfpay": "0.00",
              "preselfpay_amt": "0.00"}
REQUEST_ID = re.compile(r"request ([0-9a-f-]{36})")


@pytest_asyncio.fixture(scope="module")
async def counter(kafka: Any, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[CounterExchange]:
    root = tmp_path_factory.mktemp("nhsa-counter")
    async with counter_exchange(root, kafka.bootstrap_servers, "nhsa-e2e", cwd=ROOT) as ex:
        yield ex


def hospital(counter: CounterExchange, n: int) -> HisClient:
    """A HIS of its own hospital (fixmedins_code), so that each test reconciles only its own settlements."""
    minter = TokenMinter(platform_id(CARE), counter.exchange.pki.platform_key(CARE), CARE)
    return HisClient(counter.session, counter.url(CARE), minter, fixmedins_code=f"H310115{n:05d}")


async def until(check: Callable[[], Awaitable[bool] | bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        await asyncio.sleep(0.1)


def ok(answer: HisAnswer) -> dict[str, Any]:
    assert answer.status == 200, answer
    assert answer.infcode == infcodes.OK, answer.doc
    return answer.output


async def open_visit(his: HisClient, n: int) -> str:
    """1101 then 2201: the visit id the insured location opened."""
    person = ok(await his.transact("1101", {"data": {"mdtrt_cert_type": "02", "mdtrt_cert_no": ID_NUMBER}}))
    assert person["baseinfo"]["psn_no"] == PATIENT.psn_no
    visit = ok(await his.transact("2201", {"data": {
        "psn_no": PATIENT.psn_no, "insutype": "310", "med_type": "11", "begntime": f"{cst_now():%Y-%m-%d %H:%M:%S}",
        "mdtrt_cert_type": "02", "ipt_otp_no": f"MZ{n:013d}", "dept_code": "NK01", "caty": "A03"}}))
    return str(visit["data"]["mdtrt_id"])


def settle_input(mdtrt_id: str, n: int, medfee: Decimal, inscp: Decimal, *, pre: bool = False) -> dict[str, Any]:
    """2207's input (2206's without the invoice number)."""
    data = {**OUTPATIENT, "mdtrt_id": mdtrt_id, "psn_no": PATIENT.psn_no, "medfee_sumamt": str(medfee),
            "inscp_scp_amt": str(inscp), "chrg_bchno": f"CB{n:013d}"}
    return {"data": data if pre else {**data, "invono": f"INV{n:013d}"}}


def reconcile_input(his: HisClient, settled: list[dict[str, Any]]) -> dict[str, Any]:
    """The hospital's own totals of what it believes settled (3201; 3202 adds the rows)."""
    today = cst_now().date().isoformat()
    return {"insutype": "310", "clr_type": "11", "setl_optins": "340100", "stmt_begndate": today,
            "stmt_enddate": today, "refd_setl_flag": "1", "fixmedins_setl_cnt": len(settled),
            "medfee_sumamt": str(sum((Decimal(s["medfee_sumamt"]) for s in settled), Decimal(0))),
            "fund_pay_sumamt": str(sum((Decimal(s["fund_pay_sumamt"]) for s in settled), Decimal(0))),
            "acct_pay": str(sum((Decimal(s["acct_pay"]) for s in settled), Decimal(0)))}


def deliveries(counter: CounterExchange, msg_type: str, **match: str) -> list[Any]:
    return [d for d in counter.sim.ledger.deliveries.values()
            if d.type == msg_type and all(d.payload().get(k) == v for k, v in match.items())]


async def request_status(counter: CounterExchange, message_id: str) -> dict[str, Any]:
    minter = TokenMinter(platform_id(CARE), counter.exchange.pki.platform_key(CARE), CARE)
    async with counter.session.get(f"{counter.url(CARE)}/v1/requests/{message_id}", headers=minter.header()) as r:
        assert r.status == 200, await r.text()
        doc: dict[str, Any] = orjson.loads(await r.read())
        return doc


async def pull_all(counter: CounterExchange) -> list[dict[str, Any]]:
    minter = TokenMinter(platform_id(CARE), counter.exchange.pki.platform_key(CARE), CARE)
    async with counter.session.get(f"{counter.url(CARE)}/v1/inbox?max=1000&wait=0.5", headers=minter.header()) as r:
        assert r.status == 200
        messages: list[dict[str, Any]] = orjson.loads(await r.read())["messages"]
    return messages


async def test_a_settlement_between_two_regions_through_the_facade(counter: CounterExchange) -> None:
    his = hospital(counter, 1)
    mdtrt_id = await open_visit(his, 1)
    fee = ok(await his.transact("2204", {"feedetail": [
        {"feedetl_sn": "FD0001", "mdtrt_id": mdtrt_id, "psn_no": PATIENT.psn_no, "chrg_bchno": "CB0000000000001",
         "med_list_codg": "XA01BAB001A001010100001", "medins_list_codg": "YP000123", "det_item_fee_sumamt": 336.30,
         "cnt": 3, "pric": 112.10, "fee_ocur_time": f"{cst_now():%Y-%m-%d %H:%M:%S}"}]}))
    assert fee["data"]["medfee_sumamt"] == "336.30"
    pre = ok(await his.transact("2206", settle_input(mdtrt_id, 1, Decimal("356.80"), Decimal("336.30"), pre=True)))
    assert "setl_id" not in pre["setlinfo"]
    settled = ok(await his.transact("2207", settle_input(mdtrt_id, 1, Decimal("356.80"), Decimal("336.30"))))
    info = settled["setlinfo"]
    assert {k: info[k] for k in ("medfee_sumamt", "fund_pay_sumamt", "psn_part_amt")} == {
        k: pre["setlinfo"][k] for k in ("medfee_sumamt", "fund_pay_sumamt", "psn_part_amt")}
    assert Decimal(info["fund_pay_sumamt"]) + Decimal(info["psn_part_amt"]) == Decimal("356.80")
    assert Decimal(info["acct_pay"]) + Decimal(info["psn_cash_pay"]) == Decimal(info["psn_part_amt"])
    assert sum(Decimal(d["fund_payamt"]) for d in settled["setldetail"]) == Decimal(info["fund_pay_sumamt"])
    summary = ok(await his.transact("3201", {"data": reconcile_input(his, [info])}))
    assert summary["data"]["stmt_rslt"] == "0", summary
    item = {"setl_id": info["setl_id"], "mdtrt_id": mdtrt_id, "psn_no": PATIENT.psn_no, "refd_setl_flag": "0",
            **{k: info[k] for k in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay")}}
    detail = ok(await his.transact("3202", {"data": {**reconcile_input(his, [info]), "items": [item]}}))
    assert (detail["data"]["stmt_rslt"], detail["data"]["dif_items"]) == ("0", [])


async def test_stalled_insured_side_answers_reply_timeout_with_one_reversal_and_the_late_result_withheld(
    counter: CounterExchange,
) -> None:
    his = hospital(counter, 2)
    mdtrt_id = await open_visit(his, 2)
    balance = counter.insured.balance(PATIENT.psn_no)
    counter.insured.stall(8.0)  # past the 5 s deadline of an outpatient settlement
    try:
        answer = await his.transact("2207", settle_input(mdtrt_id, 2, Decimal("120.00"), Decimal("100.00")))
    finally:
        counter.insured.stall(0.0)
    assert answer.status == 200 and answer.infcode == infcodes.REPLY_TIMEOUT, answer.doc
    assert "已自动冲正" in answer.doc["err_msg"] and answer.doc["output"] == {}
    found = REQUEST_ID.search(answer.doc["err_msg"])
    assert found is not None, answer.doc
    request_id = found[1]
    # The late result reaches Shanghai: recorded on the request, never delivered as a fresh outcome.
    await until(lambda: _status_is(counter, request_id, "late_result"), 60, "the late result recorded")
    status = await request_status(counter, request_id)
    assert status["compensation"]["type"] == "medical.reversal"
    assert status["reply"]["type"] == "medical.settlement.result"
    # Exactly one reversal reached Anhui, and it undid the settlement the stalled platform had made.
    await until(lambda: len(deliveries(counter, "medical.reversal", omsgid=request_id)) >= 1, 30, "the reversal")
    await asyncio.sleep(3)  # a second reversal (another replica, a retry) would arrive in this time
    assert len(deliveries(counter, "medical.reversal", omsgid=request_id)) == 1
    assert counter.insured.balance(PATIENT.psn_no) == balance
    inbox = await pull_all(counter)
    assert not [m for m in inbox if m["type"] == "medical.settlement.result"], "the late result was delivered"
    summary = ok(await his.transact("3201", {"data": reconcile_input(his, [])}))
    assert summary["data"]["stmt_rslt"] == "0", summary


async def _status_is(counter: CounterExchange, message_id: str, wanted: str) -> bool:
    return (await request_status(counter, message_id))["status"] == wanted


async def test_2207_retried_with_one_msgid_settles_once(counter: CounterExchange) -> None:
    his = hospital(counter, 3)
    mdtrt_id = await open_visit(his, 3)
    balance = counter.insured.balance(PATIENT.psn_no)
    envelope = his.envelope("2207", settle_input(mdtrt_id, 3, Decimal("80.00"), Decimal("50.00")))
    answers = await asyncio.gather(*(his.post(envelope) for _ in range(3)))  # the HIS retries while waiting
    answers.append(await his.post(envelope))  # and once more after the answer
    setl_ids = {ok(a)["setlinfo"]["setl_id"] for a in answers}
    assert len(setl_ids) == 1
    assert len(deliveries(counter, "medical.settlement.request", msgid=envelope["msgid"])) == 1
    acct = Decimal(ok(answers[0])["setlinfo"]["acct_pay"])
    assert counter.insured.balance(PATIENT.psn_no) == balance - acct
    summary = ok(await his.transact("3201", {"data": reconcile_input(his, [ok(answers[0])["setlinfo"]])}))
    assert summary["data"]["stmt_rslt"] == "0" and summary["data"]["fixmedins_setl_cnt"] == 1


async def test_2601_replayed_reverses_once(counter: CounterExchange) -> None:
    his = hospital(counter, 4)
    mdtrt_id = await open_visit(his, 4)
    balance = counter.insured.balance(PATIENT.psn_no)
    settle = his.envelope("2207", settle_input(mdtrt_id, 4, Decimal("200.00"), Decimal("150.00")))
    ok(await his.post(settle))
    reversal = {"data": {"psn_no": PATIENT.psn_no, "omsgid": settle["msgid"], "oinfno": "2207"}}
    first = ok(await his.transact("2601", reversal))
    second = ok(await his.transact("2601", reversal))  # a new msgid: the HIS replays the reversal
    assert (first["data"]["rvs_stas"], second["data"]["rvs_stas"]) == ("REVERSED", "ALREADY_REVERSED")
    assert counter.insured.balance(PATIENT.psn_no) == balance
    summary = ok(await his.transact("3201", {"data": reconcile_input(his, [])}))
    assert summary["data"]["stmt_rslt"] == "0"


async def test_concurrent_2207_and_2601_for_one_settlement_leave_nothing_standing(counter: CounterExchange) -> None:
    his = hospital(counter, 7)
    mdtrt_id = await open_visit(his, 7)
    balance = counter.insured.balance(PATIENT.psn_no)
    settle = his.envelope("2207", settle_input(mdtrt_id, 7, Decimal("66.60"), Decimal("60.00")))
    reversal = his.envelope("2601", {"data": {"psn_no": PATIENT.psn_no, "omsgid": settle["msgid"], "oinfno": "2207"}})
    settled, reversed_ = await asyncio.gather(his.post(settle), his.post(reversal))
    # Either order at Anhui: settled then reversed, or reversed first (the settlement is then never made, goes
    # unanswered, and the gateway's own reversal at the deadline finds nothing more to undo).
    assert settled.infcode in (infcodes.OK, infcodes.REPLY_TIMEOUT), settled.doc
    assert ok(reversed_)["data"]["rvs_stas"] in ("REVERSED", "NOTHING_TO_REVERSE")
    rows = {"fixmedins_code": his.fixmedins_code, **reconcile_input(his, [])}
    await until(lambda: counter.insured.rows(rows) == [], 30, "nothing standing at Anhui")
    assert counter.insured.balance(PATIENT.psn_no) == balance
    summary = ok(await his.transact("3201", {"data": reconcile_input(his, [])}))
    assert summary["data"]["stmt_rslt"] == "0"


async def test_unknown_fields_and_wrong_code_values_get_the_documented_infcode(counter: CounterExchange) -> None:
    his = hospital(counter, 5)
    before = len(counter.sim.ledger.deliveries)
    bad_field = his.envelope("1101", {"data": {"mdtrt_cert_type": "02", "mdtrt_cert_no": ID_NUMBER, "x": "1"}})
    bad_code = his.envelope("1101", {"data": {"mdtrt_cert_type": "09", "mdtrt_cert_no": ID_NUMBER}})
    bad_envelope = {**his.envelope("1101", {"data": {}}), "psn_name": "张三"}
    answers = [await his.post(doc) for doc in (bad_field, bad_code, bad_envelope)]
    assert [(a.status, a.infcode) for a in answers] == [
        (200, infcodes.UNKNOWN_FIELD), (200, infcodes.CODE_VALUE), (200, infcodes.UNKNOWN_FIELD)]
    assert answers[0].doc["err_msg"] == "unknown field(s) in input.data: x"
    assert answers[1].doc["err_msg"] == "input.data.mdtrt_cert_type: not a value of the mdtrt_cert_type code table"
    assert answers[2].doc["err_msg"] == "unknown envelope field(s): psn_name"
    assert len(counter.sim.ledger.deliveries) == before  # nothing reached the insured location


async def test_reconciliation_after_200_settlements_with_timeouts_and_retries_balances(
    counter: CounterExchange,
) -> None:
    his = hospital(counter, 6)
    mdtrt_id = await open_visit(his, 6)
    believed: dict[str, dict[str, Any]] = {}  # what the hospital believes settled: setl_id -> setlinfo
    timed_out: list[str] = []
    gate = asyncio.Semaphore(8)

    async def one(n: int) -> None:
        medfee = Decimal(10 + n) + Decimal(n % 100) / 100  # 10.00 .. 210.99, every cent different
        inscp = (medfee * Decimal("0.8")).quantize(Decimal("0.01"))
        envelope = his.envelope("2207", settle_input(mdtrt_id, 1000 + n, medfee, inscp))
        async with gate:
            answer = await his.post(envelope)
            if n % 10 == 3:  # a retry with the same msgid (the HIS lost the first answer)
                answer = await his.post(envelope)
        if answer.infcode == infcodes.OK:
            believed[answer.output["setlinfo"]["setl_id"]] = answer.output["setlinfo"]
        else:
            assert answer.infcode == infcodes.REPLY_TIMEOUT, answer.doc
            timed_out.append(envelope["msgid"])

    await asyncio.gather(*(one(n) for n in range(90)))
    counter.insured.stall(7.0)  # injected timeouts: these settle at Anhui but answer too late
    try:
        await asyncio.gather(*(one(n) for n in range(90, 110)))
    finally:
        counter.insured.stall(0.0)
    await asyncio.gather(*(one(n) for n in range(110, 200)))
    assert len(timed_out) >= 20 and len(believed) + len(timed_out) == 200
    # Every timed-out settlement is reversed at Anhui by the gateway (its reversal may land after the answer).
    rows = {"fixmedins_code": his.fixmedins_code, **reconcile_input(his, [])}

    def standing() -> int:
        return len(counter.insured.rows(rows))

    await until(lambda: standing() == len(believed), 60, "the reversals of the timed-out settlements")
    summary = ok(await his.transact("3201", {"data": reconcile_input(his, list(believed.values()))}))
    assert summary["data"]["stmt_rslt"] == "0", summary
    items = [{"setl_id": s["setl_id"], "mdtrt_id": s["mdtrt_id"], "psn_no": s["psn_no"], "refd_setl_flag": "0",
              **{k: s[k] for k in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay")}} for s in believed.values()]
    detail = ok(await his.transact("3202", {"data": {**reconcile_input(his, list(believed.values())), "items": items}}))
    assert (detail["data"]["stmt_rslt"], detail["data"]["dif_items"]) == ("0", []), detail


async def test_the_facade_is_mounted_only_where_a_platform_names_it(counter: CounterExchange) -> None:
    minter = TokenMinter(platform_id("AH"), counter.exchange.pki.platform_key("AH"), "AH")
    his = HisClient(counter.session, counter.url("AH"), minter)
    answer = await his.transact("1101", {"data": {"mdtrt_cert_type": "02", "mdtrt_cert_no": ID_NUMBER}})
    assert answer.status == 404


def test_this_file_runs_against_the_worktree() -> None:
    assert (ROOT / "adapters" / "nhsa" / "routes.py").is_file() and Path(__file__).is_relative_to(ROOT)
