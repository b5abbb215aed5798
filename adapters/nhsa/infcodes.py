"""The NHSA ``infcode`` the facade answers for every outcome (README "At the counter: the NHSA facade").

The national interface knows 0 (成功) and -1 (失败); a HIS branches on ``infcode`` only, so every yrdx
outcome gets its own negative code here and ``err_msg`` names the field or the cause precisely. This table is
the one place those numbers are spelled.
"""

from __future__ import annotations

from typing import Final

__all__ = ["INFCODES", "OK", "NhsaError", "infcode_of_problem"]

OK: Final = 0
REJECTED_DOWNSTREAM: Final = -1  # the insured location answered and refused (its err_msg is passed on)
MALFORMED: Final = -2  # not JSON, not an object, a missing or ill-typed envelope field, a bad msgid
UNKNOWN_FIELD: Final = -3  # a field the envelope or the transaction does not define (never dropped silently)
CODE_VALUE: Final = -4  # a value outside its code table (insutype, med_type, mdtrt_cert_type, opter_type ...)
INVALID_INPUT: Final = -5  # the canonical payload does not match its schema (formats, check digits, money)
UNKNOWN_INFNO: Final = -6  # a transaction the facade does not carry
NOT_PERMITTED: Final = -7  # this platform may not send this transaction's type (exchange config)
UNKNOWN_DIVISION: Final = -8  # insuplc_admdvs is not a region of the exchange
REPLY_TIMEOUT: Final = -9  # no answer within the deadline; for 2207 the gateway has sent the reversal (2601)
MSGID_REUSED: Final = -10  # the msgid was used before for a different transaction
BUSY: Final = -11  # overloaded or a dependency (broker, state) unavailable: retry with the same msgid
INTERNAL: Final = -99  # anything else (the gateway's log has the cause)

INFCODES: Final[dict[int, str]] = {
    OK: "成功",
    REJECTED_DOWNSTREAM: "参保地业务拒绝",
    MALFORMED: "报文格式错误",
    UNKNOWN_FIELD: "未定义字段",
    CODE_VALUE: "代码值不在代码表内",
    INVALID_INPUT: "输入校验失败",
    UNKNOWN_INFNO: "交易编号不支持",
    NOT_PERMITTED: "无此交易权限",
    UNKNOWN_DIVISION: "参保地区划不在本交换范围",
    REPLY_TIMEOUT: "参保地应答超时",
    MSGID_REUSED: "报文ID重复且内容不同",
    BUSY: "系统繁忙, 请使用原报文ID重试",
    INTERNAL: "系统内部错误",
}

# yrdx problem codes (gateway/wire/problems.py, README "Errors") -> infcode.
_BY_PROBLEM: Final[dict[str, int]] = {
    "invalid_json": MALFORMED,
    "invalid_request": MALFORMED,
    "too_large": MALFORMED,
    "schema_violation": INVALID_INPUT,
    "unknown_type": INVALID_INPUT,
    "unauthenticated": NOT_PERMITTED,
    "forbidden": NOT_PERMITTED,
    "not_permitted": NOT_PERMITTED,
    "unknown_region": UNKNOWN_DIVISION,
    "reply_timeout": REPLY_TIMEOUT,
    "idempotency_conflict": MSGID_REUSED,
    "overloaded": BUSY,
    "request_timeout": BUSY,
    "broker_unavailable": BUSY,
    "state_unavailable": BUSY,
    "identity_expired": BUSY,
    "identity_revoked": BUSY,
}


def infcode_of_problem(code: str) -> int:
    """The infcode for a yrdx problem code; INTERNAL for one this table does not know."""
    return _BY_PROBLEM.get(code, INTERNAL)


class NhsaError(Exception):
    """A transaction the facade answers with ``infcode`` and ``err_msg`` (never with payload values)."""

    def __init__(self, infcode: int, err_msg: str) -> None:
        super().__init__(err_msg)
        self.infcode = infcode
        self.err_msg = err_msg
