"""The NHSA facade's checks and its infcode table: every refusal has its own infcode and a precise err_msg,
nothing is dropped silently, and every yrdx outcome of request-reply maps to the documented infcode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.nhsa import infcodes
from adapters.nhsa.envelope import operator_of, parse_request
from adapters.nhsa.routes import NhsaFacade
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.problems import Problem
from tests.unit._nhsa import (
    MESSAGE_ID,
    NOW,
    Context,
    Outcome,
    Platform,
    ProblemError,
    RecordingReplies,
    facade,
    replied,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "nhsa"


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load()


def _request(infno: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((GOLDEN / infno / "request.json").read_text(encoding="utf-8"))
    return doc


async def _answer(registry: SchemaRegistry, body: object, replies: RecordingReplies | None = None) -> dict[str, Any]:
    replies = replies or RecordingReplies(problem=ProblemError(Problem("invalid_request", "must not be called")))
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return await facade(registry, replies).transact("sh-platform", raw)


async def _refused(registry: SchemaRegistry, body: object) -> tuple[int, str]:
    replies = RecordingReplies()
    doc = await _answer(registry, body, replies)
    assert replies.calls == []  # refused at the counter: nothing left the region
    assert doc["output"] == {} and doc["inf_refmsgid"] == ""
    return doc["infcode"], doc["err_msg"]


async def test_unknown_envelope_field_is_refused_naming_it(registry: SchemaRegistry) -> None:
    body = {**_request("2207"), "psn_name": "张三"}
    assert await _refused(registry, body) == (infcodes.UNKNOWN_FIELD, "unknown envelope field(s): psn_name")


@pytest.mark.parametrize(("infno", "path", "value", "expected"), [
    ("2207", ("data", "mid_setl_flag"), "0", (infcodes.UNKNOWN_FIELD, "unknown field(s) in input.data: mid_setl_flag")),
    ("2204", ("feedetail", 1, "rxno"), "RX1",
     (infcodes.UNKNOWN_FIELD, "unknown field(s) in input.feedetail.feedetail[1]: rxno")),
    ("2207", ("agnterinfo",), {}, (infcodes.UNKNOWN_FIELD, "unknown input field(s) for 2207: agnterinfo")),
    ("2207", ("data", "insuplc_admdvs"), "320500",
     (infcodes.MALFORMED, "input.data.insuplc_admdvs differs from the envelope's")),
    ("2204", ("feedetail", 1, "mdtrt_id"), "A340100240315000002",
     (infcodes.MALFORMED, "input.feedetail[1].mdtrt_id differs from the first line's")),
])
async def test_input_refusals_name_the_field(
    registry: SchemaRegistry, infno: str, path: tuple[str | int, ...], value: object, expected: tuple[int, str]
) -> None:
    body = _request(infno)
    node: Any = body["input"]
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    assert await _refused(registry, body) == expected


@pytest.mark.parametrize(("field", "value"), [
    ("insutype", "311"), ("med_type", "19"), ("mdtrt_cert_type", "04"), ("psn_setlway", "03"),
])
async def test_wrong_code_table_value_is_refused_naming_the_table(
    registry: SchemaRegistry, field: str, value: str
) -> None:
    body = _request("2207")
    body["input"]["data"][field] = value
    assert await _refused(registry, body) == (
        infcodes.CODE_VALUE, f"input.data.{field}: not a value of the {field} code table")


async def test_wrong_opter_type_is_refused_as_a_code_value(registry: SchemaRegistry) -> None:
    body = {**_request("1101"), "opter_type": "4"}
    assert await _refused(registry, body) == (
        infcodes.CODE_VALUE, "envelope.opter_type: not a value of the opter_type code table")


async def test_provincial_med_type_subcode_passes_the_code_table(registry: SchemaRegistry) -> None:
    body = _request("2207")
    body["input"]["data"]["med_type"] = "140104"
    reply = json.loads((GOLDEN / "2207" / "reply.json").read_text())
    doc = await _answer(registry, body, replied(reply["type"], reply["payload"]))
    assert doc["infcode"] == infcodes.OK


async def test_schema_violation_names_the_pointer_never_the_value(registry: SchemaRegistry) -> None:
    body = _request("2207")
    body["input"]["data"]["medfee_sumamt"] = "356.805"
    code, msg = await _refused(registry, body)
    assert code == infcodes.INVALID_INPUT
    assert msg.startswith("/medfee_sumamt: ") and "356.805" not in msg


async def test_bad_check_digit_is_an_input_error(registry: SchemaRegistry) -> None:
    body = _request("1101")
    body["input"]["data"]["certno"] = "320506199007181529"
    code, msg = await _refused(registry, body)
    assert code == infcodes.INVALID_INPUT and msg.startswith("/certno: ")


@pytest.mark.parametrize(("change", "expected"), [
    ({"infno": "9001"}, (infcodes.UNKNOWN_INFNO, "infno 9001 is not carried by the exchange facade")),
    ({"insuplc_admdvs": "110100"}, (infcodes.UNKNOWN_DIVISION, "insuplc_admdvs is not in a region of the exchange")),
    ({"insuplc_admdvs": ""}, (infcodes.MALFORMED, "insuplc_admdvs is required: it names the insured location")),
    ({"msgid": "H3101150000120240315"},
     (infcodes.MALFORMED, "msgid must be fixmedins_code (12) + yyyyMMddHHmmss (14) + a 4-digit sequence")),
    ({"msgid": "H31011500002202403150930000001"}, (infcodes.MALFORMED, "msgid must start with fixmedins_code")),
    ({"inf_time": "2024-03-15T09:30:00"}, (infcodes.MALFORMED, "inf_time must be yyyy-MM-dd HH:mm:ss")),
    ({"inf_time": "2024-02-30 09:30:00"}, (infcodes.MALFORMED, "inf_time must be yyyy-MM-dd HH:mm:ss")),
    ({"inf_time": "2024-3-15 9:30:00"}, (infcodes.MALFORMED, "inf_time must be yyyy-MM-dd HH:mm:ss")),
    ({"inf_time": "2024-03-15 24:00:00"}, (infcodes.MALFORMED, "inf_time must be yyyy-MM-dd HH:mm:ss")),
    ({"opter": ""}, (infcodes.MALFORMED, "opter is required")),
    ({"input": []}, (infcodes.MALFORMED, "input must be an object")),
])
async def test_envelope_errors_have_their_infcode(
    registry: SchemaRegistry, change: dict[str, Any], expected: tuple[int, str]
) -> None:
    assert await _refused(registry, {**_request("2207"), **change}) == expected


async def test_body_that_is_not_json_is_malformed(registry: SchemaRegistry) -> None:
    assert (await _refused(registry, b"{infno"))[0] == infcodes.MALFORMED
    assert (await _refused(registry, b'{"a": NaN}'))[0] == infcodes.MALFORMED
    assert (await _refused(registry, b"[]"))[0] == infcodes.MALFORMED


async def test_amounts_sent_as_json_numbers_travel_as_the_exact_decimal_strings(registry: SchemaRegistry) -> None:
    body = _request("2206")
    raw = json.dumps(body, ensure_ascii=False).replace('"medfee_sumamt": 356.8', '"medfee_sumamt": 356.80')
    reply = json.loads((GOLDEN / "2206" / "reply.json").read_text())
    replies = replied(reply["type"], reply["payload"])
    await _answer(registry, raw.encode(), replies)
    payload = replies.calls[0]["message"]["payload"]
    assert payload["medfee_sumamt"] == "356.80" and payload["overlmt_selfpay"] == "0"


async def test_msgid_is_the_idempotency_key_and_inpatient_settlement_waits_longer(registry: SchemaRegistry) -> None:
    reply = json.loads((GOLDEN / "2207" / "reply.json").read_text())
    replies = replied(reply["type"], reply["payload"])
    body = _request("2207")
    body["input"]["data"]["med_type"] = "21"
    await _answer(registry, body, replies)
    await _answer(registry, _request("2207"), replies)
    assert [c["idempotency_key"] for c in replies.calls] == [body["msgid"]] * 2
    assert [c["deadline_ms"] for c in replies.calls] == [10_000, None]  # None: the schema's 5 s outpatient default


@pytest.mark.parametrize(("problem", "infcode"), [
    ("schema_violation", infcodes.INVALID_INPUT), ("not_permitted", infcodes.NOT_PERMITTED),
    ("unknown_region", infcodes.UNKNOWN_DIVISION), ("reply_timeout", infcodes.REPLY_TIMEOUT),
    ("idempotency_conflict", infcodes.MSGID_REUSED), ("overloaded", infcodes.BUSY),
    ("broker_unavailable", infcodes.BUSY), ("state_unavailable", infcodes.BUSY),
    ("invalid_request", infcodes.MALFORMED), ("method_not_allowed", infcodes.INTERNAL),
])
async def test_every_gateway_problem_has_its_infcode(registry: SchemaRegistry, problem: str, infcode: int) -> None:
    replies = RecordingReplies(problem=ProblemError(Problem(problem, "what the gateway said",
                                                            [{"pointer": "/psn_no", "message": "is required"}])))
    doc = await _answer(registry, _request("2207"), replies)
    assert doc["infcode"] == infcode
    assert "what the gateway said" in doc["err_msg"] and "/psn_no: is required" in doc["err_msg"]


async def test_compensated_settlement_answers_reply_timeout_naming_the_reversal(registry: SchemaRegistry) -> None:
    reversal_id = "0190a0b1-7c3e-7d2a-9b4f-000000000099"
    replies = RecordingReplies(Outcome(MESSAGE_ID, "compensated", None, 5000.0, ("medical.reversal", reversal_id)))
    doc = await _answer(registry, _request("2207"), replies)
    assert doc["infcode"] == infcodes.REPLY_TIMEOUT
    assert reversal_id in doc["err_msg"] and "已自动冲正" in doc["err_msg"]


async def test_insured_location_refusal_is_passed_on_with_its_reason(registry: SchemaRegistry) -> None:
    replies = replied("medical.person.result", {"outcome": "REJECTED", "err_msg": "参保地无此人员参保信息"})
    doc = await _answer(registry, _request("1101"), replies)
    assert (doc["infcode"], doc["err_msg"], doc["output"]) == (
        infcodes.REJECTED_DOWNSTREAM, "参保地无此人员参保信息", {})
    replies = replied("medical.filing.result", {"filing_id": "F34010024031500001", "status": "REJECTED",
                                                "reject_reason": "就医地不在本统筹区"})
    doc = await _answer(registry, _request("2501"), replies)
    assert (doc["infcode"], doc["err_msg"]) == (infcodes.REJECTED_DOWNSTREAM, "就医地不在本统筹区")


async def test_unexpected_error_answers_internal_with_the_class_only(registry: SchemaRegistry) -> None:
    replies = RecordingReplies(Outcome(MESSAGE_ID, "replied", {"no": "payload"}))
    doc = await _answer(registry, _request("2207"), replies)
    assert (doc["infcode"], doc["err_msg"]) == (infcodes.INTERNAL, "KeyError")


def test_operator_carries_the_id_and_role_never_the_name() -> None:
    req = parse_request(json.dumps(_request("2207")).encode())
    assert operator_of(req) == {"id": "OP0001", "role": "counter_clerk"}


async def test_operator_and_purpose_code_travel_beside_the_message(registry: SchemaRegistry) -> None:
    reply = json.loads((GOLDEN / "2207" / "reply.json").read_text())
    replies = replied(reply["type"], reply["payload"])
    body = json.dumps(_request("2207"), ensure_ascii=False).encode()
    await facade(registry, replies).transact("sh-platform", body)
    message = replies.calls[0]["message"]
    assert (message["operator"], message["use_cause"]) == ({"id": "OP0001", "role": "counter_clerk"}, "SVC-MED-2207")
    assert "张收费" not in json.dumps(message, ensure_ascii=False)  # opter_name stays at the hospital


def test_every_infcode_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for code, meaning in infcodes.INFCODES.items():
        assert f"| {code} | {meaning} |" in readme, code


@web.middleware
async def _problems(request: web.Request, handler: Any) -> web.StreamResponse:
    """What the gateway's middleware does with a ProblemError (here without a gateway behind it)."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ProblemError as e:
        return web.json_response(e.problem.body(), status=e.problem.status)


async def _serve(registry: SchemaRegistry, platforms: dict[str, Platform]) -> TestServer:
    reply = json.loads((GOLDEN / "2207" / "reply.json").read_text())
    ctx = Context(replied(reply["type"], reply["payload"]), registry, platforms=platforms)
    sub = web.Application()
    sub.add_routes(NhsaFacade(ctx, clock=lambda: NOW).routes())
    app = web.Application(middlewares=[_problems])
    app.add_subapp("/v1/facades/nhsa", sub)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_route_answers_the_his_envelope_and_refuses_a_platform_of_no_facade(registry: SchemaRegistry) -> None:
    server = await _serve(registry, {"sh-platform": Platform("sh-platform"), "sh-other": Platform("sh-other", None)})
    body = json.dumps(_request("2207"), ensure_ascii=False).encode()
    url = str(server.make_url("/v1/facades/nhsa/transactions"))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=body, headers={"X-Test-Platform": "sh-platform"}) as r:
                assert r.status == 200
                assert (await r.json())["output"]["setlinfo"]["setl_id"] == "S3401002403150000001"
            async with session.post(url, data=body, headers={"X-Test-Platform": "sh-other"}) as r:
                assert r.status == 403
                assert (await r.json())["code"] == "not_permitted"
    finally:
        await server.close()
