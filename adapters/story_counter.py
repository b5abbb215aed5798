"""The counter story of the demo: an Anhui patient at a Shanghai hospital, told by the hospital's HIS in NHSA.

1101 finds the patient's insurance, 2201 opens the visit, 2204 uploads the fee lines, 2206 shows the split,
2207 settles it. A second settlement meets a stalled insured platform: the counter gets the timeout's infcode
and the gateway's reversal undoes what Anhui had settled. The day closes with 3201/3202, which balance to the
cent. It runs on its own two gateways in its own `kafka.namespace` (adapters/counter_exchange.py), beside the
demo's exchange on the same broker, and prints each transaction's latency at the counter.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters.counter_exchange import PATIENT, CounterExchange, counter_exchange
from adapters.his import HisAnswer
from adapters.nhsa import infcodes
from adapters.simulated import cst_now
from adapters.stories import StoryResult

__all__ = ["counter_story"]

ID_NUMBER = "34010420000229124X"
STALL_S = 8.0  # past the 5 s deadline of an outpatient settlement


def _settlement(mdtrt_id: str, n: int, medfee: str, inscp: str, *, invoice: bool = True) -> dict[str, Any]:
    data = {"mdtrt_id": mdtrt_id, "psn_no": PATIENT.psn_no, "insutype": "310", "med_type": "11",
            "mdtrt_cert_type": "02", "mdtrt_cert_no": ID_NUMBER, "medfee_sumamt": medfee, "psn_setlway": "01",
            "acct_used_flag": "1", "fulamt_ownpay_amt": "0.00", "overlmt_selfpay": "0.00", "preselfpay_amt": "0.00",
            "inscp_scp_amt": inscp, "chrg_bchno": f"CB2024{n:09d}"}
    return {"data": {**data, "invono": f"INV2024{n:09d}"} if invoice else data}


class _Counter:
    """The transactions of the story, each timed and checked; problems collect what went wrong."""

    def __init__(self, ex: CounterExchange, result: StoryResult) -> None:
        self.ex = ex
        self.result = result
        self.timings: list[tuple[str, str, float, int | None]] = []  # (infno, what, latency s, infcode)

    async def run(self, infno: str, what: str, input: dict[str, Any], expect: int = infcodes.OK) -> HisAnswer:
        answer = await self.ex.his.transact(infno, input)
        self.timings.append((infno, what, answer.latency_s, answer.infcode))
        if answer.infcode != expect:
            self.result.problems.append(f"{infno} {what}: infcode {answer.infcode} (expected {expect}): "
                                        f"{answer.doc.get('err_msg', answer.status)}")
        return answer


async def _story(c: _Counter) -> None:
    person = await c.run("1101", "person information", {"data": {"mdtrt_cert_type": "02", "mdtrt_cert_no": ID_NUMBER}})
    if person.infcode != infcodes.OK:
        return
    visit = await c.run("2201", "visit registration", {"data": {
        "psn_no": PATIENT.psn_no, "insutype": "310", "med_type": "11", "begntime": f"{cst_now():%Y-%m-%d %H:%M:%S}",
        "mdtrt_cert_type": "02", "ipt_otp_no": "MZ2024031500017", "dept_code": "NK01", "caty": "A03"}})
    if visit.infcode != infcodes.OK:
        return
    mdtrt_id = visit.output["data"]["mdtrt_id"]
    await c.run("2204", "fee detail upload", {"feedetail": [
        {"feedetl_sn": "FD0001", "mdtrt_id": mdtrt_id, "psn_no": PATIENT.psn_no, "chrg_bchno": "CB2024000000001",
         "med_list_codg": "XA01BAB001A001010100001", "medins_list_codg": "YP000123", "det_item_fee_sumamt": "336.30",
         "cnt": "3", "pric": "112.10", "fee_ocur_time": f"{cst_now():%Y-%m-%d %H:%M:%S}"},
        {"feedetl_sn": "FD0002", "mdtrt_id": mdtrt_id, "psn_no": PATIENT.psn_no, "chrg_bchno": "CB2024000000001",
         "med_list_codg": "001102000010000", "medins_list_codg": "ZL000456", "det_item_fee_sumamt": "20.50",
         "cnt": "1", "pric": "20.50", "fee_ocur_time": f"{cst_now():%Y-%m-%d %H:%M:%S}"}]})
    await c.run("2206", "pre-settlement", _settlement(mdtrt_id, 1, "356.80", "336.30", invoice=False))
    settled = await c.run("2207", "settlement", _settlement(mdtrt_id, 1, "356.80", "336.30"))
    believed = [settled.output["setlinfo"]] if settled.infcode == infcodes.OK else []
    balance = c.ex.insured.balance(PATIENT.psn_no)
    c.ex.insured.stall(STALL_S)
    try:
        await c.run("2207", "settlement, AH stalled", _settlement(mdtrt_id, 2, "88.00", "80.00"),
                    expect=infcodes.REPLY_TIMEOUT)
    finally:
        c.ex.insured.stall(0.0)
    for _ in range(150):  # the reversal lands at Anhui shortly after the deadline (30 s at most here)
        if c.ex.insured.balance(PATIENT.psn_no) == balance:
            break
        await asyncio.sleep(0.2)
    if c.ex.insured.balance(PATIENT.psn_no) != balance:
        c.result.problems.append("the timed-out settlement was not reversed at the insured location")
    today = cst_now().date().isoformat()
    totals = {"insutype": "310", "clr_type": "11", "setl_optins": "340100", "stmt_begndate": today,
              "stmt_enddate": today, "refd_setl_flag": "1", "fixmedins_setl_cnt": len(believed),
              **{k: str(sum((Decimal(s[k]) for s in believed), Decimal(0)))
                 for k in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay")}}
    summary = await c.run("3201", "reconcile totals", {"data": totals})
    items = [{"setl_id": s["setl_id"], "mdtrt_id": s["mdtrt_id"], "psn_no": s["psn_no"], "refd_setl_flag": "0",
              **{k: s[k] for k in ("medfee_sumamt", "fund_pay_sumamt", "acct_pay")}} for s in believed]
    detail = await c.run("3202", "reconcile detail", {"data": {**totals, "items": items}})
    for answer, name in ((summary, "3201"), (detail, "3202")):
        if answer.infcode == infcodes.OK and answer.output["data"]["stmt_rslt"] != "0":
            c.result.problems.append(f"{name} does not balance: {answer.output['data'].get('stmt_rslt_dscr', '')}")
    c.result.summary = (f"{len(believed)} settled, 1 timed out and reversed by the gateway, "
                        f"3201/3202 {'balanced' if not c.result.problems else 'NOT balanced'}")


def latency_table(timings: list[tuple[str, str, float, int | None]]) -> str:
    lines = ["at the counter (HIS -> SH facade -> AH insured platform -> back):",
             f"  {'infno':<6}{'transaction':<24}{'infcode':>8}{'latency ms':>12}"]
    lines += [f"  {infno:<6}{what:<24}{code if code is not None else '-':>8}{latency * 1000:>12.1f}"
              for infno, what, latency, code in timings]
    return "\n".join(lines)


async def counter_story(root: Path, bootstrap_servers: str, namespace: str) -> tuple[StoryResult, str]:
    """Play the story on its own two gateways; its verdict and the latency table to print."""
    result = StoryResult("the counter (NHSA facade)", "medical")
    own = f"{namespace[:24]}-counter" if namespace else "counter"  # beside the demo's exchange, never in it
    async with counter_exchange(root, bootstrap_servers, own) as ex:
        counter = _Counter(ex, result)
        await _story(counter)
    return result, latency_table(counter.timings)
