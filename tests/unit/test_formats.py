"""The identifier and money formats against the fixtures of DOMAIN.md sections 3.2, 4.1, 4.2 and 9."""

from datetime import date, timedelta

import pytest

from gateway.schemas.formats import (
    FORMATS,
    USCC_ALPHABET,
    gb11643_check_char,
    gb11714_check_char,
    gb32100_check_char,
    is_gb2260,
    is_gb11643,
    is_gb32100,
    is_gbt36904,
    is_money,
    mod37_36_check_char,
)

VALID_ID_NUMBERS = [
    "11010519491231002X",  # the example quoted from GB 11643, check X
    "440524188001010014",  # the second quoted example
    "310115198503120418",  # synthetic SH
    "320506199007181520",  # synthetic JS
    "330106197811050039",  # synthetic ZJ
    "34010420000229124X",  # synthetic AH, born on a leap day, check X
]

VALID_USCC = [
    "11100000000013338W",
    "11330105002500287C",
    "11430000006122244L",
    "11100000000013661B",
    "11100000MB0341032Y",
    "11420503087246977F",
    "11100000MB03271699",
    "113700000045046442",  # issuer inside the invalid licence identifier
    "91110108551385082Q",
    "91110000600037341L",
    "91310115MA1HK7T23J",
    "91320506MA1Y3N8Q2R",
    "91330106MA2CD4W58W",
    "91340104MA8P6R1U22",
    "11310000002420113A",
    "11320000014008513K",
]

VALID_LICENCE_IDS = [
    "1.2.156.3005.2.11100000000013338W011.11430000006122244L.20230000403.001.U",  # 住建部
    "1.2.156.3005.2.11100000000013338W009.11330105002500287C.2025052201.002.0",  # ZJ
    "1.2.156.3005.2.11100000MB03271699022.340100.000000016.001.9",  # Hefei: division-code issuer
    "1.2.156.3005.2.11100000000013338W011.11310000002420113A.2024000123.001.B",  # synthetic SH v1
    "1.2.156.3005.2.11100000000013338W011.11310000002420113A.2024000123.002.9",  # synthetic SH v2
    "1.2.156.3005.2.11100000000013338W032.11220000013544541J.2430599.001.F",  # from deployed code (A.4)
]

# A Swagger example: its check character is M, the algorithm gives D.
WRONG_CHECK_LICENCE = (
    "1.2.156.3005.2.11100000000013661B006.113700000045046442.209FA4E88F9E4C878F3E9BED2CE7EA49.001.M"
)


def _with_check(first17: str) -> str:
    return first17 + gb11643_check_char(first17)


# --- GB 11643 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", VALID_ID_NUMBERS)
def test_sample_id_numbers_are_valid(value: str) -> None:
    assert is_gb11643(value)
    assert gb11643_check_char(value[:17]) == value[17]


def test_id_number_with_a_bad_check_digit_is_invalid() -> None:
    assert not is_gb11643("320506199007181529")
    assert gb11643_check_char("32050619900718152") == "0"


def test_id_number_born_on_a_date_that_does_not_exist_is_invalid() -> None:
    # 2001-02-29: the check digit itself is right.
    assert gb11643_check_char("34010420010229124") == "7"
    assert not is_gb11643("340104200102291247")


def test_leap_day_birth_date_is_valid() -> None:
    assert is_gb11643("34010420000229124X")


def test_id_number_born_in_the_future_is_invalid() -> None:
    born = date.today() + timedelta(days=400)
    value = _with_check(f"310115{born:%Y%m%d}041")
    assert not is_gb11643(value)
    assert is_gb11643("310115198503120418", today=date(1985, 3, 12))
    assert not is_gb11643("310115198503120418", today=date(1985, 3, 11))


def test_trailing_lowercase_x_is_not_accepted_in_a_message() -> None:
    assert is_gb11643("11010519491231002X")
    assert not is_gb11643("11010519491231002x")
    assert not is_gb11643("34010420000229124x")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "31011519850312041",  # 17 characters
        "3101151985031204180",  # 19 characters
        "310115198513120418",  # month 13
        "31011519850312041X",  # X where the digit 8 belongs
        "X10115198503120418",
        "３10115198503120418",  # a full-width digit
        "310115198503120418\n",
        " 310115198503120418",
    ],
)
def test_malformed_id_numbers_are_invalid(value: str) -> None:
    assert not is_gb11643(value)


@pytest.mark.parametrize("value", [None, 310115198503120418, b"310115198503120418"])
def test_formats_return_false_for_non_strings(value: object) -> None:
    for check in FORMATS.values():
        assert check(value) is False  # type: ignore[arg-type]


def test_check_char_helpers_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="17 ASCII digits"):
        gb11643_check_char("3101151985031204")
    with pytest.raises(ValueError, match="USCC alphabet"):
        gb32100_check_char("91310115MA1HK7T2I")  # I is not in the alphabet
    with pytest.raises(ValueError, match="0-9A-Z"):
        mod37_36_check_char("abc")
    with pytest.raises(ValueError, match="0-9A-Z"):
        gb11714_check_char("MA1HK7T")


# --- GB 32100 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", VALID_USCC)
def test_sample_credit_codes_are_valid(value: str) -> None:
    assert is_gb32100(value)
    assert gb32100_check_char(value[:17]) == value[17]
    assert gb11714_check_char(value[8:16]) == value[16]


@pytest.mark.parametrize("value", VALID_USCC)
def test_credit_code_with_any_other_check_character_is_invalid(value: str) -> None:
    for c in USCC_ALPHABET:
        if c != value[17]:
            assert not is_gb32100(value[:17] + c)


def test_credit_code_with_a_bad_organisation_code_check_is_invalid() -> None:
    # Character 17 (the GB 11714 check) is wrong, character 18 recomputed so that the mod 31 check passes.
    good = "91310115MA1HK7T23J"
    body = good[:16] + ("4" if good[16] != "4" else "5")
    forged = body + gb32100_check_char(body)
    assert gb32100_check_char(forged[:17]) == forged[17]
    assert not is_gb32100(forged)


@pytest.mark.parametrize(
    "value",
    [
        "91310115ma1hk7t23j",  # lower case
        "91310115MA1HK7T23",  # 17 characters
        "91310115MA1HK7T23JX",  # 19 characters
        "91310115MA1HK7TO3J",  # O is not in the alphabet
        "91310115MA1HK7T23J\n",
    ],
)
def test_malformed_credit_codes_are_invalid(value: str) -> None:
    assert not is_gb32100(value)


# --- GB/T 2260 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["310000", "320000", "330000", "340000", "310115", "320506", "330522", "340104", "110105", "820000"],
)
def test_division_codes_are_valid(value: str) -> None:
    assert is_gb2260(value)


def test_unknown_district_is_never_rejected() -> None:
    assert is_gb2260("310199")
    assert is_gb2260("349999")


@pytest.mark.parametrize(
    "value",
    ["000000", "100000", "990000", "830000", "31000", "3100000", "31000A", "３１００００", "310000\n"],
)
def test_malformed_division_codes_are_invalid(value: str) -> None:
    assert not is_gb2260(value)


# --- GB/T 36904 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", VALID_LICENCE_IDS)
def test_sample_licence_identifiers_are_valid(value: str) -> None:
    assert is_gbt36904(value)
    parts = value.split(".")
    assert mod37_36_check_char("".join(parts[5:9])) == parts[9]


def test_licence_identifier_with_check_character_m_should_be_d() -> None:
    parts = WRONG_CHECK_LICENCE.split(".")
    assert mod37_36_check_char("".join(parts[5:9])) == "D"
    assert not is_gbt36904(WRONG_CHECK_LICENCE)
    assert is_gbt36904(WRONG_CHECK_LICENCE[:-1] + "D")
    assert is_gb32100(parts[6])  # only the check character is wrong


@pytest.mark.parametrize(
    "value",
    [
        "1.2.156.3005.3.11100000000013338W011.11310000002420113A.2024000123.001.B",  # wrong root
        "1.2.156.3005.11100000000013338W011.11310000002420113A.2024000123.001.B",  # root too short
        "1.2.156.3005.2.11100000000013338W011.11310000002420113A.2024000123.001",  # no check
        "1.2.156.3005.2.11100000000013338W011.11310000002420113A.2024.000123.001.B",  # extra part
        "1.2.156.3005.2.11100000000013338W01.11310000002420113A.2024000123.001.B",  # type of 20
        "1.2.156.3005.2.11100000000013338W011.1131000000242011.2024000123.001.B",  # issuer of 16
        "1.2.156.3005.2.11100000000013338W011.11310000002420113A..001.B",  # empty serial
        "1.2.156.3005.2.11100000000013338W011.11310000002420113A.2024000abc.001.B",  # lower-case serial
        "1.2.156.3005.2.11100000000013338W011.11310000002420113A.2024000123.01.B",  # version of 2
        "1.2.156.3005.2.11100000000013338W011.11310000002420113A.2024000123.001.BB",
        "1.2.156.3005.2.11100000000013338W011.11310000002420113A.2024000123.001.b",
        "1.2.156.3005.2.11100000000013338W011.11310000002420113A.2024000123.001.B\n",
        "",
    ],
)
def test_malformed_licence_identifiers_are_invalid(value: str) -> None:
    assert not is_gbt36904(value)


def test_licence_identifier_with_any_other_check_character_is_invalid() -> None:
    value = VALID_LICENCE_IDS[3]
    for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        assert is_gbt36904(value[:-1] + c) == (c == "B")


# --- money ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "0.5", "356.80", "-12.00", "-0.01", "1250", "99999999999999.99"])
def test_decimal_strings_are_money(value: str) -> None:
    assert is_money(value)


@pytest.mark.parametrize(
    "value",
    ["", "356.805", "1e3", "+1", ".5", "1.", "123456789012345", " 1", "1,000.00", "NaN", "١٢", "1\n", "--1"],
)
def test_other_strings_are_not_money(value: str) -> None:
    assert not is_money(value)


def test_a_float_is_not_money() -> None:
    assert not is_money(356.8)  # type: ignore[arg-type]


def test_formats_are_named_for_schemas() -> None:
    assert FORMATS == {
        "gb11643": is_gb11643,
        "gb32100": is_gb32100,
        "gb2260": is_gb2260,
        "gbt36904": is_gbt36904,
        "money": is_money,
    }
