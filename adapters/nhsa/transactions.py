"""Per-transaction translation: a HIS ``input`` to one canonical message, the canonical result to ``output``.

Each NHSA transaction the facade carries is one :class:`Transaction` row of :data:`TRANSACTIONS`: which
canonical type it becomes, where its fields sit in ``input`` and ``output``, and the defaults the HIS does not
send. The envelope supplies the routing fields (``insuplc_admdvs``, ``mdtrtarea_admvs`` spelt
``mdtrtarea_admdvs``, ``fixmedins_code``) and, for the settlement, ``msgid``. Field names are NHSA's verbatim,
so translating is checking: an unknown field, a wrong code, a payload the schema refuses each stop here with
their own infcode, before anything leaves the hospital's region.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from adapters.nhsa.code_tables import check_codes, is_inpatient
from adapters.nhsa.envelope import HisRequest
from adapters.nhsa.infcodes import (
    INVALID_INPUT,
    MALFORMED,
    REJECTED_DOWNSTREAM,
    UNKNOWN_DIVISION,
    UNKNOWN_FIELD,
    UNKNOWN_INFNO,
    NhsaError,
)
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.regions import DIVISION

__all__ = ["TRANSACTIONS", "Transaction", "output_of", "schemas_of", "to_message", "transaction"]

INPATIENT_DEADLINE_MS: Final = 10_000  # DOMAIN.md / issue 11: inpatient settlement 10 s (outpatient 5 s)
_REGION_OF_PROVINCE: Final = {code[:2]: region for region, code in DIVISION.items()}
# Fields of a 2204 fee line that describe the visit: lifted to the canonical message's top level.
_VISIT_OF_LINE: Final = ("mdtrt_id", "psn_no", "chrg_bchno")


def _data(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {"data": {k: v for k, v in payload.items() if k not in ("outcome", "err_msg")}}


def _setlinfo(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {"setlinfo": {k: v for k, v in payload.items() if k != "setldetail"},
            "setldetail": list(payload.get("setldetail", []))}


def _person(payload: Mapping[str, Any]) -> dict[str, Any]:
    base = {k: payload[k] for k in ("psn_no", "gend", "brdy", "age") if k in payload}
    return {"baseinfo": base, "insuinfo": list(payload.get("insuinfo", []))}


def _fee_result(payload: Mapping[str, Any]) -> dict[str, Any]:
    out = _data(payload)
    out["result"] = out["data"].pop("result", [])
    return out


@dataclass(frozen=True, slots=True)
class Transaction:
    """One NHSA transaction as the facade carries it."""

    infno: str
    name: str
    type: str  # the canonical request type; its schema's x-reply names the result type
    purpose: str  # use_cause of the canonical request (and of the envelope)
    output: Callable[[Mapping[str, Any]], dict[str, Any]] = _data
    input_key: str = "data"  # where the fields sit in `input`: {"data": {...}} or {"feedetail": [...]}
    defaults: Mapping[str, str] = field(default_factory=dict)  # canonical fields the HIS does not send

    @property
    def service_item_code(self) -> str:
        """事项编码 of the transaction: in the payload of a request type, and the envelope's purpose code."""
        return f"SVC-MED-{self.infno}"

    def deadline_ms(self, payload: Mapping[str, Any]) -> int | None:
        """The wait for this call; None = the type's x-reply default (inpatient settlements wait longer)."""
        if self.type == "medical.settlement.request" and is_inpatient(str(payload.get("med_type", ""))):
            return INPATIENT_DEADLINE_MS
        return None


TRANSACTIONS: Final[dict[str, Transaction]] = {t.infno: t for t in (
    Transaction("1101", "人员信息获取", "medical.person.request", "异地就医人员信息获取", _person),
    Transaction("2201", "门诊挂号", "medical.visit.register", "异地就医门诊挂号"),
    Transaction("2202", "门诊挂号撤销", "medical.visit.cancel", "异地就医门诊挂号撤销"),
    Transaction("2204", "门诊费用明细信息上传", "medical.fee.upload", "异地就医费用明细上传", _fee_result,
                input_key="feedetail"),
    Transaction("2205", "门诊费用明细信息撤销", "medical.fee.cancel", "异地就医费用明细撤销"),
    Transaction("2206", "门诊预结算", "medical.settlement.pre.request", "异地就医预结算", _setlinfo),
    Transaction("2207", "门诊结算", "medical.settlement.request", "异地就医直接结算", _setlinfo),
    Transaction("2208", "门诊结算撤销", "medical.settlement.cancel", "异地就医结算撤销", _setlinfo,
                defaults={"reason": "定点医药机构发起结算撤销"}),
    Transaction("2601", "冲正交易", "medical.reversal", "异地就医冲正",
                defaults={"reason": "定点医药机构发起冲正"}),
    Transaction("2501", "异地就医备案", "medical.filing.request", "异地就医备案"),
    Transaction("2502", "异地就医备案撤销", "medical.filing.revoke", "异地就医备案撤销"),
    Transaction("3201", "医药机构费用结算对总账", "medical.reconcile.summary", "异地就医对总账"),
    Transaction("3202", "医药机构费用结算对明细账", "medical.reconcile.detail", "异地就医对明细账"),
)}


def transaction(infno: str) -> Transaction:
    tx = TRANSACTIONS.get(infno)
    if tx is None:
        raise NhsaError(UNKNOWN_INFNO, f"infno {infno} is not carried by the exchange facade")
    return tx


def destination(req: HisRequest) -> str:
    """The insured location's region, from ``insuplc_admdvs`` (required on every cross-region transaction)."""
    if req.insuplc_admdvs is None:
        raise NhsaError(MALFORMED, "insuplc_admdvs is required: it names the insured location")
    region = _REGION_OF_PROVINCE.get(req.insuplc_admdvs[:2])
    if region is None:
        raise NhsaError(UNKNOWN_DIVISION, "insuplc_admdvs is not in a region of the exchange")
    return region


def _fields(tx: Transaction, req: HisRequest) -> dict[str, Any]:
    unknown = sorted(req.input.keys() - {tx.input_key})
    if unknown:
        raise NhsaError(UNKNOWN_FIELD, f"unknown input field(s) for {tx.infno}: {', '.join(unknown)}")
    data = req.input.get(tx.input_key)
    if tx.input_key == "feedetail":
        return _lift_fee_lines(data)
    if not isinstance(data, dict):
        raise NhsaError(MALFORMED, f"input.{tx.input_key} must be an object")
    fields = dict(data)
    if "mdtrtarea_admvs" in fields:  # the envelope's spelling, mapped onto the payload's
        fields["mdtrtarea_admdvs"] = fields.pop("mdtrtarea_admvs")
    return fields


def _lift_fee_lines(lines: Any) -> dict[str, Any]:
    if not isinstance(lines, list) or not lines or not all(isinstance(line, dict) for line in lines):
        raise NhsaError(MALFORMED, "input.feedetail must be a non-empty list of fee lines")
    visit = {k: lines[0].get(k) for k in _VISIT_OF_LINE}
    for i, line in enumerate(lines):
        for k in _VISIT_OF_LINE:
            if line.get(k) != visit[k]:
                raise NhsaError(MALFORMED, f"input.feedetail[{i}].{k} differs from the first line's")
    return {**visit, "feedetail": [{k: v for k, v in line.items() if k not in _VISIT_OF_LINE} for line in lines]}


def _conform(value: Any, schema: Mapping[str, Any], where: str) -> Any:
    """Unknown fields refused (naming them), JSON numbers of string fields written as exact decimal strings."""
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties", {})
        unknown = sorted(value.keys() - props.keys())
        if unknown:
            raise NhsaError(UNKNOWN_FIELD, f"unknown field(s) in {where}: {', '.join(unknown)}")
        return {k: _conform(v, props[k], f"{where}.{k}") for k, v in value.items()}
    if kind == "array" and isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_conform(v, schema["items"], f"{where}[{i}]") for i, v in enumerate(value)]
    if kind == "string" and isinstance(value, Decimal | int) and not isinstance(value, bool):
        return str(value)  # 3043.64 -> "3043.64": the digits as written (parsed as Decimal, never a float)
    if kind == "integer" and isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


def schemas_of(registry: SchemaRegistry) -> dict[str, Mapping[str, Any]]:
    """The schema of every transaction's type, read once (the registry hands out copies)."""
    return {tx.type: registry.schema(tx.type) for tx in TRANSACTIONS.values()}


def to_message(
    tx: Transaction, req: HisRequest, registry: SchemaRegistry, schemas: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The canonical message ``{type, to, payload}`` of one HIS transaction, checked against its schema."""
    to = destination(req)
    schema = schemas[tx.type]
    props: Mapping[str, Any] = schema["properties"]
    fields = _fields(tx, req)
    from_envelope = {
        "insuplc_admdvs": req.insuplc_admdvs, "mdtrtarea_admdvs": req.mdtrtarea_admdvs,
        "fixmedins_code": req.fixmedins_code, "msgid": req.msgid,
        "use_cause": tx.purpose, "service_item_code": tx.service_item_code, **tx.defaults,
    }
    for name, value in from_envelope.items():
        if name not in props or value is None:
            continue
        if name in fields and fields[name] != value and name not in tx.defaults:
            raise NhsaError(MALFORMED, f"input.{tx.input_key}.{name} differs from the envelope's")
        fields.setdefault(name, value)
    payload = _conform(fields, schema, f"input.{tx.input_key}")
    check_codes(payload, f"input.{tx.input_key}")
    errors = registry.validate(tx.type, registry.latest_version(tx.type) or 1, payload)
    if errors:
        raise NhsaError(INVALID_INPUT, "; ".join(f"{e.pointer or '/'}: {e.message}" for e in errors[:5]))
    return {"type": tx.type, "to": to, "payload": payload}


def output_of(tx: Transaction, reply: Mapping[str, Any]) -> dict[str, Any]:
    """The HIS ``output`` of a result payload, or NhsaError(REJECTED_DOWNSTREAM) when the insured location
    refused (its err_msg, or the filing's reject_reason, passed on)."""
    refused = reply.get("outcome") == "REJECTED" or reply.get("status") == "REJECTED"
    if refused:
        why = reply.get("err_msg") or reply.get("reject_reason") or "refused by the insured location"
        raise NhsaError(REJECTED_DOWNSTREAM, str(why))
    return tx.output(reply)
