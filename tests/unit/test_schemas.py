"""The message schemas (schemas/**) and the registry that compiles and applies them."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import pytest

from gateway.dev.exchange import NHSA_TYPES
from gateway.schemas.formats import FORMATS, USCC_ALPHABET, is_gb11643, is_gb32100, is_gbt36904
from gateway.schemas.registry import (
    CLASSIFICATIONS,
    DIALECT,
    SchemaError,
    SchemaLoadError,
    SchemaRegistry,
    _classify_value,
    jsonschema_format_checker,
    schema_id,
)

ROOT = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_FILES = sorted(ROOT.rglob("*.json"))

CONTRACT_TYPES = {
    "identity.verify.request",
    "identity.verify.result",
    "license.verify.request",
    "license.verify.result",
    "license.status.notice",
    "license.commitment.record",
    "license.commitment.verification",
    "medical.filing.request",
    "medical.filing.result",
    "medical.settlement.request",
    "medical.settlement.result",
    "medical.settlement.cancel",
    "medical.reversal",
    "medical.clearing.statement",
    "medical.clearing.confirm",
    "yrdx.receipt",
    # issue 12: government services across regions
    "license.authorization.grant",
    "license.authorization.revoke",
    "license.fetch.request",
    "license.fetch.result",
    "case.submit",
    "case.accept",
    "case.progress",
    "case.result",
    "case.evaluation",
    "supervision.lead",
    "supervision.result",
    "credit.list.notice",
    "credit.repair.notice",
    *NHSA_TYPES,
    "yrdx.claim_check",
}
QUERIES = {"identity.verify.request", "license.verify.request"}

# DOMAIN.md section 9: the only identifiers examples may use.
SAMPLE_ID_NUMBERS = {
    "11010519491231002X", "440524188001010014", "310115198503120418", "320506199007181520",
    "330106197811050039", "34010420000229124X",
}  # fmt: skip
SAMPLE_USCC = {
    "11100000000013338W", "11330105002500287C", "11430000006122244L", "11100000000013661B",
    "11100000MB0341032Y", "11420503087246977F", "11100000MB03271699", "113700000045046442",
    "91110108551385082Q", "91110000600037341L", "91310115MA1HK7T23J", "91320506MA1Y3N8Q2R",
    "91330106MA2CD4W58W", "91340104MA8P6R1U22", "11310000002420113A", "11320000014008513K",
}  # fmt: skip
SAMPLE_LICENCE_IDS = {
    "1.2.156.3005.2.11100000000013338W011.11430000006122244L.20230000403.001.U",
    "1.2.156.3005.2.11100000000013338W009.11330105002500287C.2025052201.002.0",
    "1.2.156.3005.2.11100000MB03271699022.340100.000000016.001.9",
    "1.2.156.3005.2.11100000000013338W011.11310000002420113A.2024000123.001.B",
    "1.2.156.3005.2.11100000000013338W011.11310000002420113A.2024000123.002.9",
}
SAMPLE_VALUES_BY_FIELD = {
    "psn_no": {"33050099000010000001689700"},
    "mdtrt_id": {"330000167334638726901198550858"},
    "fixmedins_code": {"H31011500001", "P33052200672"},
    "msgid": {"H31011500001202403150930000001"},
}
APPLICATORS = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas")


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load()


def _load(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


SCHEMAS = {path.name.rsplit(".v", 1)[0]: _load(path) for path in SCHEMA_FILES}
EXAMPLES = [
    pytest.param(type_, i, example, id=f"{type_}#{i}")
    for type_, schema in sorted(SCHEMAS.items())
    for i, example in enumerate(schema.get("examples", []))
]


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """The pure-Python ``jsonschema`` validators, with the same formats, as the reference implementation."""
    checker = jsonschema_format_checker()
    return {t: jsonschema.Draft202012Validator(s, format_checker=checker) for t, s in SCHEMAS.items()}


@pytest.fixture(scope="module")
def compiled() -> dict[str, jsonschema_rs.Validator]:
    return {
        t: jsonschema_rs.Draft202012Validator(s, formats=FORMATS, validate_formats=True)
        for t, s in SCHEMAS.items()
    }


def _pointers(errors: list[SchemaError]) -> list[str]:
    return [e.pointer for e in errors]


# --- the files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_every_schema_file_is_a_valid_2020_12_schema(path: Path) -> None:
    schema = _load(path)
    assert schema["$schema"] == DIALECT
    jsonschema.Draft202012Validator.check_schema(schema)
    type_, version = path.name.removesuffix(".json").rsplit(".v", 1)
    assert path.parent.name == type_.split(".")[0]
    assert schema["$id"] == schema_id(type_, int(version)) == f"urn:yrdx:schema:{type_}:{version}"


def test_every_contract_type_has_a_version_1_schema(registry: SchemaRegistry) -> None:
    assert registry.types() == CONTRACT_TYPES
    for type_ in CONTRACT_TYPES:
        assert registry.has(type_, 1)
        assert (ROOT / type_.split(".")[0] / f"{type_}.v1.json").is_file()


@pytest.mark.parametrize("type_", sorted(CONTRACT_TYPES))
def test_every_schema_carries_an_example(type_: str) -> None:
    assert len(SCHEMAS[type_]["examples"]) >= 1


@pytest.mark.parametrize(("type_", "i", "example"), EXAMPLES)
def test_every_example_validates(
    registry: SchemaRegistry, reference: dict[str, Any], type_: str, i: int, example: dict[str, Any]
) -> None:
    assert registry.validate(type_, 1, example) == []
    assert list(reference[type_].iter_errors(example)) == []


def _strings(value: object, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, key)


@pytest.mark.parametrize(("type_", "i", "example"), EXAMPLES)
def test_examples_use_only_the_synthetic_sample_identifiers(
    type_: str, i: int, example: dict[str, Any]
) -> None:
    for key, value in _strings(example):
        if is_gb11643(value):
            assert value in SAMPLE_ID_NUMBERS, (key, value)
        if is_gb32100(value):
            assert value in SAMPLE_USCC, (key, value)
        if is_gbt36904(value) or key.endswith("license_id"):
            assert value in SAMPLE_LICENCE_IDS, (key, value)
        if key in SAMPLE_VALUES_BY_FIELD:
            assert value in SAMPLE_VALUES_BY_FIELD[key], (key, value)


# --- classification and structure ---------------------------------------------------------------------


def _object_schemas(node: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The root and every object schema nested under properties / items."""
    yield where, node
    for name, sub in node.get("properties", {}).items():
        yield from _object_schemas(sub, f"{where}/{name}")
    if isinstance(node.get("items"), dict):
        yield from _object_schemas(node["items"], f"{where}/*")


def _applicator_properties(node: dict[str, Any]) -> Iterator[str]:
    for keyword in APPLICATORS:
        sub = node.get(keyword)
        if sub is None:
            continue
        subs = (
            sub if isinstance(sub, list) else list(sub.values()) if keyword == "dependentSchemas" else [sub]
        )
        for s in subs:
            if isinstance(s, dict):
                yield from s.get("properties", {})
                yield from _applicator_properties(s)


@pytest.mark.parametrize("type_", sorted(SCHEMAS))
def test_every_property_carries_an_x_classification(type_: str) -> None:
    for where, node in _object_schemas(SCHEMAS[type_], ""):
        for name, sub in node.get("properties", {}).items():
            assert sub.get("x-classification") in CLASSIFICATIONS, f"{type_}: {where}/{name}"


@pytest.mark.parametrize("type_", sorted(SCHEMAS))
def test_every_object_refuses_unknown_properties(type_: str) -> None:
    for where, node in _object_schemas(SCHEMAS[type_], ""):
        if node.get("type") == "object" or "properties" in node:
            assert node.get("additionalProperties") is False, f"{type_}: {where}"
            assert set(node.get("required", [])) <= set(node["properties"]), f"{type_}: {where}"
            # Conditions only constrain declared (and so classified) properties.
            assert set(_applicator_properties(node)) <= set(node["properties"]), f"{type_}: {where}"


def test_a_property_without_classification_fails_loading() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}},
    }
    schema["properties"]["a"]["x-classification"] = "PUBLIC"
    with pytest.raises(SchemaLoadError, match=r"x.json: property /a/b needs an x-classification"):
        _classify_value(schema, "", {}, Path("x.json"))


@pytest.mark.parametrize("type_", sorted(SCHEMAS))
def test_money_is_a_decimal_string_and_never_a_number(type_: str) -> None:
    for _, node in _object_schemas(SCHEMAS[type_], ""):
        for name, sub in node.get("properties", {}).items():
            assert sub.get("type") not in ("number",), name
            if sub.get("format") == "money":
                assert sub["type"] == "string"


def test_sensitive_pointers_cover_nested_items_for_log_masking(registry: SchemaRegistry) -> None:
    pointers = registry.sensitive_pointers("medical.settlement.result", 1)
    assert {"/psn_no", "/acct_pay", "/medfee_sumamt", "/setldetail", "/setldetail/*/fund_payamt"} <= pointers
    assert "/clr_type" not in pointers
    assert registry.classifications("medical.settlement.result", 1)["/psn_no"] == "SENSITIVE_ID"
    assert registry.classifications("medical.settlement.result", 1)["/acct_pay"] == "SENSITIVE_FINANCIAL"
    assert {"/id_number", "/id_hash", "/name"} <= registry.sensitive_pointers("identity.verify.request", 1)
    assert registry.sensitive_pointers("yrdx.receipt", 1) == frozenset()
    assert "/disputed_items/*/mdtrt_id" in registry.sensitive_pointers("medical.clearing.confirm", 1)


@pytest.mark.parametrize("type_", sorted(QUERIES | {t for t in CONTRACT_TYPES if t.endswith(".request")}))
def test_requests_carry_a_mandatory_purpose(registry: SchemaRegistry, type_: str) -> None:
    schema = SCHEMAS[type_]
    assert {"use_cause", "service_item_code"} <= set(schema["required"])
    example = registry.examples(type_)[0]
    for bad in ("", "x" * 201):
        assert _pointers(registry.validate(type_, 1, {**example, "use_cause": bad})) == ["/use_cause"]
    assert registry.validate(type_, 1, {**example, "use_cause": "x" * 200}) == []


@pytest.mark.parametrize("type_", ["identity.verify.result", "license.verify.result"])
def test_verification_results_never_echo_attributes(type_: str) -> None:
    echoed = {"name", "id_number", "id_hash", "certno", "psn_name", "holder_id", "holder_name", "face_data"}
    assert not echoed & set(SCHEMAS[type_]["properties"])


# --- the registry -------------------------------------------------------------------------------------


def test_registry_lists_versions_and_hands_out_copies_of_examples(registry: SchemaRegistry) -> None:
    assert registry.versions("yrdx.receipt") == (1,)
    assert registry.latest_version("yrdx.receipt") == 1
    assert registry.versions("no.such.type") == ()
    assert registry.latest_version("no.such.type") is None
    assert not registry.has("yrdx.receipt", 2)
    first = registry.examples("medical.settlement.result")
    first[0]["psn_no"] = "changed"
    assert registry.examples("medical.settlement.result", 1)[0]["psn_no"] != "changed"
    with pytest.raises(KeyError):
        registry.examples("no.such.type")
    with pytest.raises(KeyError):
        registry.sensitive_pointers("yrdx.receipt", 2)


def test_unknown_type_or_version_is_an_error_not_an_exception(registry: SchemaRegistry) -> None:
    assert _pointers(registry.validate("no.such.type", 1, {})) == [""]
    assert _pointers(registry.validate("yrdx.receipt", 2, {})) == [""]


def test_a_value_that_is_not_json_is_an_error_not_an_exception(registry: SchemaRegistry) -> None:
    example = registry.examples("yrdx.receipt")[0]
    errors = registry.validate("yrdx.receipt", 1, {**example, "detail": {1, 2}})
    assert errors == [SchemaError("", "payload is not JSON data")]


def test_default_root_is_the_repository_schemas_folder() -> None:
    assert SchemaRegistry.load(ROOT).types() == SchemaRegistry.load().types()


def test_loading_a_folder_without_schemas_fails_naming_it() -> None:
    with pytest.raises(SchemaLoadError, match="no-such-folder"):
        SchemaRegistry.load(ROOT / "no-such-folder")


# --- errors and pointers ------------------------------------------------------------------------------


def _settlement(registry: SchemaRegistry, i: int = 0) -> dict[str, Any]:
    return registry.examples("medical.settlement.result", 1)[i]


def test_bad_money_value_is_reported_at_its_pointer(registry: SchemaRegistry) -> None:
    for bad in ("356.805", 356.8, "abc", None):
        payload = {**_settlement(registry), "medfee_sumamt": bad}
        assert _pointers(registry.validate("medical.settlement.result", 1, payload)) == ["/medfee_sumamt"]


def test_nested_errors_are_reported_at_their_pointer(registry: SchemaRegistry) -> None:
    payload = _settlement(registry)
    payload["setldetail"][1]["fund_payamt"] = "20.001"
    payload["setldetail"][0]["unexpected"] = "x"
    del payload["setldetail"][0]["fund_pay_type"]
    assert _pointers(registry.validate("medical.settlement.result", 1, payload)) == [
        "/setldetail/0/fund_pay_type",
        "/setldetail/0/unexpected",
        "/setldetail/1/fund_payamt",
    ]


def test_all_errors_are_reported_sorted_by_pointer(registry: SchemaRegistry) -> None:
    payload = _settlement(registry)
    del payload["psn_no"]
    payload["zz_extra"] = 1
    payload["a~b/c"] = 2
    payload["acct_pay"] = 57.04
    payload["med_type"] = "1"
    errors = registry.validate("medical.settlement.result", 1, payload)
    assert _pointers(errors) == ["/acct_pay", "/a~0b~1c", "/med_type", "/psn_no", "/zz_extra"]
    assert errors[1] == SchemaError("/a~0b~1c", "is not allowed")  # JSON pointer escapes ~ and /
    assert errors[3] == SchemaError("/psn_no", "is a required property")
    assert errors[4] == SchemaError("/zz_extra", "is not allowed")


def test_error_messages_never_quote_the_payload_value(registry: SchemaRegistry) -> None:
    example = registry.examples("identity.verify.request", 1)[1]
    errors = registry.validate("identity.verify.request", 1, {**example, "id_number": "320506199007181529"})
    assert _pointers(errors) == ["/id_number"]
    assert "320506199007181529" not in errors[0].message
    assert "gb11643" in errors[0].message


def test_identity_request_carries_exactly_one_of_hash_or_number(registry: SchemaRegistry) -> None:
    by_hash, by_number = registry.examples("identity.verify.request", 1)
    both = {**by_hash, "id_number": by_number["id_number"]}
    neither = {k: v for k, v in by_hash.items() if k != "id_hash"}
    assert registry.validate("identity.verify.request", 1, both) != []
    assert registry.validate("identity.verify.request", 1, neither) != []
    assert _pointers(registry.validate("identity.verify.request", 1, {**by_hash, "id_hash": "AB" * 32})) == [
        "/id_hash"
    ]
    lower_x = {**by_number, "id_number": "34010420000229124x"}
    assert _pointers(registry.validate("identity.verify.request", 1, lower_x)) == ["/id_number"]
    assert registry.validate("identity.verify.request", 1, {**by_number, "id_type": "001"}) != []


def test_licence_request_names_the_licence_one_way_only(registry: SchemaRegistry) -> None:
    by_id, by_number = registry.examples("license.verify.request", 1)
    assert (
        registry.validate("license.verify.request", 1, {**by_number, "license_id": by_id["license_id"]}) != []
    )
    only_number = {k: v for k, v in by_number.items() if k != "license_type_code"}
    assert registry.validate("license.verify.request", 1, only_number) != []


def test_rejected_receipt_requires_a_reason(registry: SchemaRegistry) -> None:
    delivered, rejected = registry.examples("yrdx.receipt", 1)[0]["items"]

    def receipt(item: dict[str, Any]) -> list[str]:
        return _pointers(registry.validate("yrdx.receipt", 1, {"items": [delivered, item]}))

    assert receipt({k: v for k, v in rejected.items() if k != "reason"}) == ["/items/1/reason"]
    assert receipt({**delivered, "detail": "x" * 500}) == []
    assert receipt({**delivered, "detail": "x" * 501}) == ["/items/1/detail"]
    assert receipt({**delivered, "outcome": "lost"}) == ["/items/1/outcome"]
    assert receipt({**delivered, "message_id": "42"}) == ["/items/1/message_id"]
    assert _pointers(registry.validate("yrdx.receipt", 1, {"items": []})) == ["/items"]


@pytest.mark.parametrize(("value", "ok"), [("11", True), ("140104", True), ("9903", True), ("1", False),
                                           ("1234567", False), ("1a", False)])  # fmt: skip
def test_med_type_is_a_pattern_that_provinces_extend(registry: SchemaRegistry, value: str, ok: bool) -> None:
    payload = {**registry.examples("medical.settlement.request", 1)[0], "med_type": value}
    assert (registry.validate("medical.settlement.request", 1, payload) == []) is ok


def test_conditional_formats_follow_the_identifier_type(registry: SchemaRegistry) -> None:
    person, organisation = registry.examples("license.commitment.record", 1)
    swapped = {**person, "subject_id": organisation["subject_id"]}
    assert _pointers(registry.validate("license.commitment.record", 1, swapped)) == ["/subject_id"]


# --- the settlement sums (DOMAIN.md 2.4) ---------------------------------------------------------------


def test_settlement_examples_satisfy_the_sums(registry: SchemaRegistry) -> None:
    for p in registry.examples("medical.settlement.result", 1):
        parts = (
            Decimal(p["fund_pay_sumamt"]) + Decimal(p["psn_part_amt"]) + Decimal(p.get("hosp_part_amt", 0))
        )
        assert parts == Decimal(p["medfee_sumamt"])
        assert Decimal(p["acct_pay"]) + Decimal(p["psn_cash_pay"]) == Decimal(p["psn_part_amt"])
        assert sum(Decimal(d["fund_payamt"]) for d in p["setldetail"]) == Decimal(p["fund_pay_sumamt"])


def test_total_that_is_not_the_sum_of_its_parts_is_reported(registry: SchemaRegistry) -> None:
    payload = {**_settlement(registry), "medfee_sumamt": "356.81"}
    errors = registry.validate("medical.settlement.result", 1, payload)
    assert _pointers(errors) == ["/medfee_sumamt"]


def test_hospital_share_counts_in_the_total(registry: SchemaRegistry) -> None:
    with_hosp = _settlement(registry, 1)
    assert registry.validate("medical.settlement.result", 1, with_hosp) == []
    without = {k: v for k, v in with_hosp.items() if k != "hosp_part_amt"}
    assert _pointers(registry.validate("medical.settlement.result", 1, without)) == ["/medfee_sumamt"]


def test_personal_share_that_is_not_account_plus_cash_is_reported(registry: SchemaRegistry) -> None:
    payload = {
        **_settlement(registry),
        "psn_cash_pay": "50.01",
        "psn_part_amt": "107.05",
        "medfee_sumamt": "356.81",
    }
    assert _pointers(registry.validate("medical.settlement.result", 1, payload)) == []
    payload["psn_cash_pay"] = "50.00"
    assert _pointers(registry.validate("medical.settlement.result", 1, payload)) == ["/psn_part_amt"]


def test_fund_lines_that_do_not_add_up_are_reported(registry: SchemaRegistry) -> None:
    payload = _settlement(registry)
    payload["setldetail"][1]["fund_payamt"] = "20.01"
    assert _pointers(registry.validate("medical.settlement.result", 1, payload)) == ["/fund_pay_sumamt"]
    payload["setldetail"] = []
    assert _pointers(registry.validate("medical.settlement.result", 1, payload)) == ["/fund_pay_sumamt"]


def test_sums_compare_exact_decimals_not_spellings(registry: SchemaRegistry) -> None:
    payload = {**_settlement(registry), "medfee_sumamt": "356.8", "psn_cash_pay": "50", "acct_pay": "57.04"}
    assert registry.validate("medical.settlement.result", 1, payload) == []


def test_negative_amounts_of_a_cancellation_add_up(registry: SchemaRegistry) -> None:
    payload = _settlement(registry)
    for key in ("medfee_sumamt", "fund_pay_sumamt", "psn_part_amt", "acct_pay", "psn_cash_pay"):
        payload[key] = "-" + payload[key]
    for line in payload["setldetail"]:
        line["fund_payamt"] = "-" + line["fund_payamt"]
    assert registry.validate("medical.settlement.result", 1, payload) == []


def test_sums_are_checked_only_once_the_schema_passed(registry: SchemaRegistry) -> None:
    payload = {**_settlement(registry), "medfee_sumamt": "1.00", "acct_pay": 57.04}
    assert _pointers(registry.validate("medical.settlement.result", 1, payload)) == ["/acct_pay"]


# --- differential: jsonschema_rs against the pure-Python reference ---------------------------------------

_CHECKED_FORMATS = {
    "gb11643": "0123456789X",
    "gb32100": USCC_ALPHABET,
    "gbt36904": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
}
_EXTRA = "unexpected_field"


def _wrong_type(value: object) -> object:
    if isinstance(value, bool):
        return "true"
    if isinstance(value, str):
        return 12345
    if isinstance(value, int):
        return "1"
    if isinstance(value, list):
        return {}
    if isinstance(value, dict):
        return []
    return 5


def _mutations(type_: str, example: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(label, pointer the error must name, mutated payload); every mutation makes the payload invalid."""
    schema = SCHEMAS[type_]
    properties = schema["properties"]
    for name in schema["required"]:
        if name in example:
            yield f"without {name}", f"/{name}", {k: v for k, v in example.items() if k != name}
    for name, value in example.items():
        yield f"wrong type {name}", f"/{name}", {**example, name: _wrong_type(value)}
        fmt = properties[name].get("format")
        if fmt in _CHECKED_FORMATS and isinstance(value, str):
            other = next(c for c in _CHECKED_FORMATS[fmt] if c != value[-1])
            yield f"bad check character {name}", f"/{name}", {**example, name: value[:-1] + other}
        if fmt == "money":
            yield f"float {name}", f"/{name}", {**example, name: float(value)}
    yield "extra property", f"/{_EXTRA}", {**example, _EXTRA: "x"}
    for name, value in example.items():
        items = properties[name].get("items", {})
        if isinstance(value, list) and value and isinstance(value[0], dict):
            nested = copy.deepcopy(example)
            nested[name][0][_EXTRA] = "x"
            yield f"extra property in {name}", f"/{name}/0/{_EXTRA}", nested
            for field, sub in items["properties"].items():
                if sub.get("format") == "money" and field in value[0]:
                    floated = copy.deepcopy(example)
                    floated[name][0][field] = float(value[0][field])
                    yield f"float {name}/0/{field}", f"/{name}/0/{field}", floated


DIFFERENTIAL = [
    pytest.param(type_, label, pointer, payload, id=f"{type_}#{i}: {label}")
    for type_, i, example in (p.values for p in EXAMPLES)
    for label, pointer, payload in _mutations(type_, example)
]


def test_mutations_cover_every_kind() -> None:
    labels = {p.values[1].split(" ")[0] for p in DIFFERENTIAL}
    assert {"without", "wrong", "bad", "float", "extra"} <= labels
    assert any(p.values[1].startswith("bad check character license_id") for p in DIFFERENTIAL)
    assert any(p.values[1].startswith("bad check character id_number") for p in DIFFERENTIAL)
    assert any(p.values[1].startswith("bad check character issuer_code") for p in DIFFERENTIAL)


@pytest.mark.parametrize(("type_", "i", "example"), EXAMPLES)
def test_both_validators_accept_every_example(
    reference: dict[str, Any], compiled: dict[str, jsonschema_rs.Validator], type_: str, i: int, example: Any
) -> None:
    assert reference[type_].is_valid(example)
    assert compiled[type_].is_valid(example)


@pytest.mark.parametrize(("type_", "label", "pointer", "payload"), DIFFERENTIAL)
def test_both_validators_refuse_every_mutation(
    registry: SchemaRegistry,
    reference: dict[str, Any],
    compiled: dict[str, jsonschema_rs.Validator],
    type_: str,
    label: str,
    pointer: str,
    payload: dict[str, Any],
) -> None:
    assert reference[type_].is_valid(payload) is False
    assert compiled[type_].is_valid(payload) is False
    errors = registry.validate(type_, 1, payload)
    assert pointer in _pointers(errors), errors


def test_the_types_sealed_by_default_are_exactly_those_with_sensitive_fields(registry: SchemaRegistry) -> None:
    from gateway.dev.exchange import BUSINESS_TYPES, SEALED_BY_DEFAULT

    sensitive = {t for t in BUSINESS_TYPES
                 if any(tag.startswith("SENSITIVE_") for tag in registry.classifications(t, 1).values())}
    assert set(SEALED_BY_DEFAULT) == sensitive
