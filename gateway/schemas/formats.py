"""Custom JSON Schema formats: Chinese identifiers and money (DOMAIN.md sections 4 and 8).

Every ``is_*`` function takes the string a payload carries and returns a bool; none of them raises, so
they can be handed to a schema validator as format checkers (see :data:`FORMATS`). The ``*_check_char``
helpers compute check characters for tests and fixture generators; they raise :class:`ValueError` on input
they cannot handle.

All patterns are ASCII-only and anchored with ``fullmatch``: ``\\d`` in Python matches any Unicode digit
and ``$`` matches before a trailing newline, neither of which an identifier may contain.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Final

__all__ = [
    "FORMATS",
    "USCC_ALPHABET",
    "gb11643_check_char",
    "gb11714_check_char",
    "gb32100_check_char",
    "is_gb11643",
    "is_gb2260",
    "is_gb32100",
    "is_gbt36904",
    "is_money",
    "mod37_36_check_char",
]

# China Standard Time: a birth date is "in the future" by the calendar of the country that issued the number.
_CST: Final = timezone(timedelta(hours=8), "CST")

# --- GB 11643-1999 citizen ID number (ISO 7064 MOD 11-2) -------------------------------------------------

_GB11643_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_GB11643_MAP: Final = "10X98765432"
_GB11643_SHAPE: Final = re.compile(r"[0-9]{17}[0-9X]")
_DIGITS17: Final = re.compile(r"[0-9]{17}")


def gb11643_check_char(first17: str) -> str:
    """Return the MOD 11-2 check character ('0'-'9' or 'X') for the first 17 digits of an ID number."""
    if not _DIGITS17.fullmatch(first17):
        raise ValueError("expected 17 ASCII digits")
    total = sum(int(c) * w for c, w in zip(first17, _GB11643_WEIGHTS, strict=True))
    return _GB11643_MAP[total % 11]


def is_gb11643(s: str, *, today: date | None = None) -> bool:
    """True if ``s`` is a valid 18-character citizen ID number (GB 11643-1999).

    Checks the shape (17 digits and a digit or upper-case ``X``), that characters 7-14 are a real calendar
    date not after ``today`` (default: today in China Standard Time) and the ISO 7064 MOD 11-2 check
    character. A trailing lower-case ``x`` is rejected: payloads carry the normalised upper-case form, so that
    one person always gets one pseudonym. The division prefix is not checked, because historic codes stay
    valid.
    """
    if not isinstance(s, str) or not _GB11643_SHAPE.fullmatch(s):
        return False
    try:
        born = date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    if born > (today if today is not None else datetime.now(_CST).date()):
        return False
    return gb11643_check_char(s[:17]) == s[17]


# --- GB 32100-2015 unified social credit code, with its embedded GB 11714 organisation code -----------------

USCC_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I, O, S, V, Z
_USCC_VALUE: Final = {c: i for i, c in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS: Final = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)  # 3^(i-1) mod 31
_USCC_SHAPE: Final = re.compile(r"[0-9A-HJ-NPQRTUWXY]{18}")
_USCC17: Final = re.compile(r"[0-9A-HJ-NPQRTUWXY]{17}")

_ALNUM: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ALNUM_VALUE: Final = {c: i for i, c in enumerate(_ALNUM)}
_GB11714_WEIGHTS: Final = (3, 7, 9, 10, 5, 8, 4, 2)
_GB11714_BODY: Final = re.compile(r"[0-9A-Z]{8}")


def gb32100_check_char(first17: str) -> str:
    """Return the mod 31 check character of a USCC for its first 17 characters."""
    if not _USCC17.fullmatch(first17):
        raise ValueError("expected 17 characters of the USCC alphabet")
    total = sum(_USCC_VALUE[c] * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def gb11714_check_char(body8: str) -> str:
    """Return the GB 11714 check character of an organisation code (USCC characters 9-16 -> character 17)."""
    if not _GB11714_BODY.fullmatch(body8):
        raise ValueError("expected 8 characters of 0-9A-Z")
    c9 = 11 - sum(_ALNUM_VALUE[c] * w for c, w in zip(body8, _GB11714_WEIGHTS, strict=True)) % 11
    return "X" if c9 == 10 else "0" if c9 == 11 else str(c9)


def is_gb32100(s: str) -> bool:
    """True if ``s`` is a valid unified social credit code (GB 32100-2015).

    Checks the 18-character shape over the 31-character alphabet, the mod 31 check character and the GB 11714
    check character that characters 9-17 (the organisation code) carry of their own.
    """
    if not isinstance(s, str) or not _USCC_SHAPE.fullmatch(s):
        return False
    return gb32100_check_char(s[:17]) == s[17] and gb11714_check_char(s[8:16]) == s[16]


# --- GB/T 2260 administrative division code --------------------------------------------------------------

# Province-level prefixes of GB/T 2260 (stable since 1997; 46 and 50 are the newest). District and prefecture
# codes are NOT checked: re-districting retires codes that stay valid in old records.
_PROVINCES: Final = frozenset(
    {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54,
     61, 62, 63, 64, 65, 71, 81, 82}
)  # fmt: skip
_GB2260_SHAPE: Final = re.compile(r"[0-9]{6}")


def is_gb2260(s: str) -> bool:
    """True if ``s`` is shaped like a GB/T 2260 division code: 6 digits with a real province prefix (11-82).

    An unknown prefecture or district is never rejected (old codes stay valid); a versioned registry, not this
    format, decides whether a code is current.
    """
    return isinstance(s, str) and bool(_GB2260_SHAPE.fullmatch(s)) and int(s[:2]) in _PROVINCES


# --- GB/T 36904-2018 electronic licence identifier (ISO 7064 MOD 37,36 hybrid) --------------------------

_LICENCE_ROOT: Final = ("1", "2", "156", "3005", "2")
_LICENCE_TYPE: Final = re.compile(r"[0-9A-HJ-NPQRTUWXY]{18}[0-9]{3}")
_LICENCE_ISSUER: Final = re.compile(r"[0-9A-HJ-NPQRTUWXY]{18}|[0-9]{6}")
_LICENCE_SERIAL: Final = re.compile(r"[0-9A-Z]{1,64}")
_LICENCE_VERSION: Final = re.compile(r"[0-9]{3}")
_LICENCE_MAX_LEN: Final = 160


def mod37_36_check_char(s: str) -> str:
    """Return the ISO 7064 MOD 37,36 hybrid check character (0-9A-Z) of ``s`` (characters 0-9A-Z only).

    For a licence identifier ``s`` is type code + issuer code + serial + version, without the dots.
    """
    p = 36
    for c in s:
        a = _ALNUM_VALUE.get(c)
        if a is None:
            raise ValueError("expected only the characters 0-9A-Z")
        t = (p + a) % 36 or 36
        p = (2 * t) % 37
    return _ALNUM[(37 - p) % 36]


def is_gbt36904(s: str) -> bool:
    """True if ``s`` is a valid electronic licence identifier (GB/T 36904-2018).

    ``1.2.156.3005.2.<type>.<issuer>.<serial>.<version>.<check>``, validated by splitting on dots (the serial
    has a variable length): type = USCC of the defining authority + 3 digits; issuer = a USCC or a 6-digit
    division code; serial = 1-64 characters of 0-9A-Z; version = 3 digits; check = MOD 37,36 over
    type + issuer + serial + version. The embedded USCCs are checked for shape only, as the standard
    requires.
    """
    if not isinstance(s, str) or len(s) > _LICENCE_MAX_LEN:
        return False
    parts = s.split(".")
    if len(parts) != 10 or tuple(parts[:5]) != _LICENCE_ROOT:
        return False
    type_code, issuer, serial, version, check = parts[5:]
    if not (
        _LICENCE_TYPE.fullmatch(type_code)
        and _LICENCE_ISSUER.fullmatch(issuer)
        and _LICENCE_SERIAL.fullmatch(serial)
        and _LICENCE_VERSION.fullmatch(version)
        and len(check) == 1
    ):
        return False
    return mod37_36_check_char(type_code + issuer + serial + version) == check


# --- money ------------------------------------------------------------------------------------------------

_MONEY: Final = re.compile(r"-?[0-9]{1,14}(\.[0-9]{1,2})?")


def is_money(s: str) -> bool:
    """True if ``s`` is a decimal amount string ``^-?\\d{1,14}(\\.\\d{1,2})?$`` (the NHSA "numeric 16,2").

    Amounts travel as strings, never JSON numbers, so that no float ever rounds them; negative amounts occur
    in cancellations.
    """
    return isinstance(s, str) and _MONEY.fullmatch(s) is not None


FORMATS: Final[dict[str, Callable[[str], bool]]] = {
    "gb11643": is_gb11643,
    "gb32100": is_gb32100,
    "gb2260": is_gb2260,
    "gbt36904": is_gbt36904,
    "money": is_money,
}
"""Custom formats by the name schemas use in their ``format`` keyword."""
