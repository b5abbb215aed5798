"""The NHSA transaction envelope (DOMAIN.md section 2.2): the HIS request read strictly, the answer built.

A request is ``InCommon``: ``infno``, ``msgid``, ``mdtrtarea_admvs``, ``insuplc_admdvs``, ``recer_sys_code``,
``opter``, ``opter_type``, ``inf_time``, ``input`` and the optional device, signature and sign-in fields. The
body is parsed with numbers as exact decimals (A.7: some HIS send amounts as JSON numbers), so an amount is
never a float at any point. Every field the envelope does not define is refused, never dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Final

from adapters.nhsa.code_tables import check_codes
from adapters.nhsa.infcodes import MALFORMED, OK, UNKNOWN_FIELD, NhsaError

__all__ = ["CST", "HisRequest", "answer", "operator_of", "parse_request", "refmsgid"]

CST: Final = timezone(timedelta(hours=8), "CST")
MSGID: Final = re.compile(r"[A-Z][0-9]{29}")  # fixmedins_code (12) + yyyyMMddHHmmss (14) + sequence (4)
INFNO: Final = re.compile(r"[0-9]{4}")
DIVISION: Final = re.compile(r"[0-9]{6}")
FIXMEDINS: Final = re.compile(r"[A-Z][0-9]{11}")
# yyyy-MM-dd HH:mm:ss: the shape here, the calendar by datetime.fromisoformat (strptime took ~1% of the SH
# gateway's CPU at the counter).
INF_TIME: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")

# field -> (required, maximum length); `input` is checked apart.
_STRINGS: Final[dict[str, tuple[bool, int]]] = {
    "infno": (True, 4), "msgid": (True, 30), "mdtrtarea_admvs": (True, 6), "insuplc_admdvs": (False, 6),
    "recer_sys_code": (True, 10), "dev_no": (False, 100), "dev_safe_info": (False, 2000),
    "cainfo": (False, 1024), "signtype": (False, 10), "infver": (True, 6), "opter_type": (True, 3),
    "opter": (True, 30), "opter_name": (True, 50), "inf_time": (True, 19), "fixmedins_code": (True, 12),
    "fixmedins_name": (True, 200), "sign_no": (False, 30),
}
ENVELOPE_FIELDS: Final = frozenset(_STRINGS) | {"input"}
# How the facade names the role of `opter_type` in the envelope's `operator` (DOMAIN.md 2.5).
OPERATOR_ROLES: Final = {"1": "counter_clerk", "2": "self_service_terminal", "3": "mobile_terminal"}


@dataclass(frozen=True, slots=True)
class HisRequest:
    """One HIS transaction, its envelope checked; ``input`` is the transaction's own (checked per infno)."""

    infno: str
    msgid: str
    mdtrtarea_admdvs: str  # the envelope's `mdtrtarea_admvs`, in the canonical spelling
    insuplc_admdvs: str | None
    fixmedins_code: str
    opter: str
    opter_type: str
    inf_time: str
    input: Mapping[str, Any]


def parse_body(body: bytes) -> Any:
    """JSON with every number as a Decimal (never a float), or NhsaError(MALFORMED)."""
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and invalid UTF-8 are ValueErrors
        raise NhsaError(MALFORMED, f"body is not JSON: {type(e).__name__}") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(name)


def parse_request(body: bytes) -> HisRequest:
    """The HIS envelope checked field by field: NhsaError naming the first field that is wrong."""
    doc = parse_body(body)
    if not isinstance(doc, dict):
        raise NhsaError(MALFORMED, "the request is a JSON object (the NHSA transaction envelope)")
    unknown = sorted(doc.keys() - ENVELOPE_FIELDS)
    if unknown:
        raise NhsaError(UNKNOWN_FIELD, f"unknown envelope field(s): {', '.join(unknown)}")
    for name, (required, max_len) in _STRINGS.items():
        value = doc.get(name)
        if value is None or value == "":
            if required:
                raise NhsaError(MALFORMED, f"{name} is required")
            continue
        if not isinstance(value, str) or len(value) > max_len:
            raise NhsaError(MALFORMED, f"{name} must be a string of at most {max_len} characters")
    _match(doc, "infno", INFNO, "4 digits")
    _match(doc, "msgid", MSGID, "fixmedins_code (12) + yyyyMMddHHmmss (14) + a 4-digit sequence")
    _match(doc, "mdtrtarea_admvs", DIVISION, "a 6-digit division code")
    _match(doc, "fixmedins_code", FIXMEDINS, "a letter and 11 digits")
    if doc.get("insuplc_admdvs"):
        _match(doc, "insuplc_admdvs", DIVISION, "a 6-digit division code")
    if not doc["msgid"].startswith(doc["fixmedins_code"]):
        raise NhsaError(MALFORMED, "msgid must start with fixmedins_code")
    try:
        if INF_TIME.fullmatch(doc["inf_time"]) is None:
            raise ValueError(doc["inf_time"])
        datetime.fromisoformat(doc["inf_time"])  # Beijing time by convention, no offset
    except ValueError:
        raise NhsaError(MALFORMED, "inf_time must be yyyy-MM-dd HH:mm:ss") from None
    check_codes({"opter_type": doc["opter_type"]}, "envelope")
    if not isinstance(doc.get("input"), dict):
        raise NhsaError(MALFORMED, "input must be an object")
    return HisRequest(
        infno=doc["infno"], msgid=doc["msgid"], mdtrtarea_admdvs=doc["mdtrtarea_admvs"],
        insuplc_admdvs=doc.get("insuplc_admdvs") or None, fixmedins_code=doc["fixmedins_code"],
        opter=doc["opter"], opter_type=doc["opter_type"], inf_time=doc["inf_time"], input=doc["input"],
    )


def _match(doc: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str) -> None:
    if pattern.fullmatch(doc[name]) is None:
        raise NhsaError(MALFORMED, f"{name} must be {what}")


def operator_of(req: HisRequest) -> dict[str, str]:
    """Who at the counter asked, as the envelope's ``operator`` (issue 12): the id and the role, never the name
    (``opter_name`` stays at the hospital). The one place ``opter``/``opter_type`` are mapped."""
    return {"id": req.opter, "role": OPERATOR_ROLES[req.opter_type]}


def refmsgid(insured_division: str, message_id: str, at: datetime) -> str:
    """``inf_refmsgid``: receiver division (6) + time (14) + sequence (10), the sequence taken from the yrdx
    message id so that a retried msgid gets the same reference back."""
    sequence = int(message_id.replace("-", ""), 16) % 10**10 if message_id else 0
    return f"{insured_division}{at.astimezone(CST):%Y%m%d%H%M%S}{sequence:010d}"


def answer(
    infcode: int,
    *,
    output: Mapping[str, Any] | None = None,
    err_msg: str = "",
    refmsg: str = "",
    at: datetime,
) -> dict[str, Any]:
    """``OutCommon``: the HIS's usual answer; ``respond_time`` is ``yyyyMMddHHmmssSSS`` Beijing time."""
    local = at.astimezone(CST)
    return {
        "infcode": infcode,
        "inf_refmsgid": refmsg,
        "refmsg_time": f"{local:%Y%m%d%H%M%S}",
        "respond_time": f"{local:%Y%m%d%H%M%S}{local.microsecond // 1000:03d}",
        "err_msg": "" if infcode == OK else err_msg,
        "output": dict(output or {}),
    }
