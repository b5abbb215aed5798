"""The NHSA code tables the facade checks before anything is sent (DOMAIN.md section 2.5).

The schemas keep province-extensible code lists as patterns; the values themselves are checked here, at the
counter, so a wrong value gets its own infcode and an err_msg naming the field and the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from adapters.nhsa.infcodes import CODE_VALUE, NhsaError

__all__ = ["CODE_TABLES", "check_codes", "is_inpatient"]

INSUTYPE: Final = frozenset({"310", "320", "330", "340", "350", "360", "370", "380", "390", "391", "392", "410", "510"})
MED_TYPE: Final = frozenset({
    "11", "12", "13", "14", "15", "16", "21", "22", "23", "24", "25", "26", "27", "28", "41", "51", "52",
})
INPATIENT_MED_TYPE: Final = frozenset({"21", "22", "23", "24", "25", "26", "27", "28", "52"})
CODE_TABLES: Final[dict[str, frozenset[str]]] = {
    "insutype": INSUTYPE,
    "med_type": MED_TYPE,
    "mdtrt_cert_type": frozenset({"01", "02", "03"}),
    "psn_setlway": frozenset({"01", "02"}),
    "opter_type": frozenset({"1", "2", "3"}),
}


def _in_table(field: str, value: str) -> bool:
    if field == "med_type" and len(value) > 2:
        # Provincial subcodes (140104 门诊慢病, 9903 儿童两病门诊) come from registries the exchange does not
        # hold: their shape is the schema's pattern, their value the insured location's to judge.
        return value.isascii() and value.isdigit() and len(value) <= 6
    return value in CODE_TABLES[field]


def check_codes(fields: Mapping[str, Any], where: str) -> None:
    """Raise NhsaError(CODE_VALUE) for the first field of a code table whose value is not in it."""
    for field in sorted(CODE_TABLES.keys() & fields.keys()):
        value = fields[field]
        if not isinstance(value, str) or not _in_table(field, value):
            raise NhsaError(CODE_VALUE, f"{where}.{field}: not a value of the {field} code table")


def is_inpatient(med_type: str) -> bool:
    """Inpatient settlements (医疗类别 2x and 52) get the longer deadline (10 s instead of 5 s)."""
    return med_type[:2] in INPATIENT_MED_TYPE
