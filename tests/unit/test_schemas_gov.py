"""The schemas of government services across regions (issue 12): check digits as formats, every field classified,
the shapes that carry a licence or a file, and the annotations the gateways read (x-use-causes, x-subject,
x-stage)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.schemas.registry import SchemaRegistry

REGISTRY = SchemaRegistry.load()
GOV_TYPES = (
    "license.authorization.grant", "license.authorization.revoke", "license.fetch.request", "license.fetch.result",
    "case.submit", "case.accept", "case.progress", "case.result", "case.evaluation",
    "supervision.lead", "supervision.result", "credit.list.notice", "credit.repair.notice",
)
BAD_USCC = "91320506MA1Y3N8Q2X"  # 91320506MA1Y3N8Q2R with a wrong check character
BAD_LICENCE = "1.2.156.3005.2.11100000000013338W011.11310000002420113A.2024000123.001.C"  # should be B
BAD_ID = "320506199007181529"  # DOMAIN.md section 9: bad check digit


def example(msg_type: str, i: int = 0) -> dict[str, Any]:
    return copy.deepcopy(REGISTRY.examples(msg_type)[i])


def pointers(msg_type: str, payload: dict[str, Any]) -> list[str]:
    return [e.pointer for e in REGISTRY.validate(msg_type, 1, payload)]


@pytest.mark.parametrize("msg_type,field,bad", [
    ("credit.list.notice", "subject_uscc", BAD_USCC),
    ("credit.repair.notice", "deciding_authority_code", BAD_USCC),
    ("supervision.lead", "subject_uscc", BAD_USCC),
    ("supervision.result", "deciding_authority_code", BAD_USCC),
    ("license.authorization.grant", "grantee_org_code", BAD_USCC),
    ("license.authorization.grant", "license_id", BAD_LICENCE),
    ("license.fetch.request", "license_id", BAD_LICENCE),
    ("license.fetch.request", "requester_org_code", BAD_USCC),
    ("case.accept", "handling_authority_code", BAD_USCC),
    ("case.result", "issued_license_id", BAD_LICENCE),
    ("case.submit", "accepting_admdvs", "990000"),
])
def test_identifiers_are_checked_by_their_check_digits(msg_type: str, field: str, bad: str) -> None:
    assert pointers(msg_type, {**example(msg_type), field: bad}) == [f"/{field}"]


def test_the_applicants_id_number_is_checked_by_its_type() -> None:
    submit = example("case.submit")
    submit["applicant"]["id_number"] = BAD_ID
    assert pointers("case.submit", submit) == ["/applicant/id_number"]
    submit["applicant"].update(id_type="001", id_number="320506199007181520")  # an ID number is not a USCC
    assert pointers("case.submit", submit) == ["/applicant/id_number"]
    submit["applicant"].update(subject_type="LEGAL_PERSON", id_number="91320506MA1Y3N8Q2R")
    assert pointers("case.submit", submit) == []


@pytest.mark.parametrize("msg_type", GOV_TYPES)
def test_every_field_is_classified_and_identifiers_are_not_public(msg_type: str) -> None:
    tags = REGISTRY.classifications(msg_type, 1)
    assert tags and all(tag for tag in tags.values())
    for pointer, tag in tags.items():
        name = pointer.rsplit("/", 1)[-1]
        if name in ("license_id", "holder_id_hash", "id_hash", "agent_id_hash", "name", "id_number"):
            assert tag != "PUBLIC", pointer


def test_the_applicant_is_sensitive_and_masked_in_logs() -> None:
    sensitive = REGISTRY.sensitive_pointers("case.submit", 1)
    assert {"/applicant/id_number", "/applicant/name", "/applicant/id_hash"} <= sensitive
    assert REGISTRY.classifications("case.submit", 1)["/applicant/id_number"] == "SENSITIVE_ID"
    assert "/materials/*/claim_check/digest/value" in sensitive


def test_a_material_is_a_claim_check_or_a_licence_reference_never_both_nor_neither() -> None:
    submit = example("case.submit")
    by_file, by_licence = submit["materials"]
    both = {**by_file, "license_ref": by_licence["license_ref"]}
    neither = {k: v for k, v in by_file.items() if k != "claim_check"}
    for material in (both, neither):
        assert pointers("case.submit", {**submit, "materials": [material]}) == ["/materials/0"]
    broken = copy.deepcopy(by_file)
    broken["claim_check"]["digest"]["value"] = "XYZ"
    assert pointers("case.submit", {**submit, "materials": [broken]}) == ["/materials/0/claim_check/digest/value"]


def test_a_refused_fetch_carries_nothing_of_the_licence() -> None:
    delivered, refused = example("license.fetch.result", 0), example("license.fetch.result", 1)
    assert pointers("license.fetch.result", {**refused, "metadata": delivered["metadata"]}) != []
    assert pointers("license.fetch.result", {**refused, "file": delivered["file"]}) != []
    without = {k: v for k, v in delivered.items() if k != "annotation"}
    assert pointers("license.fetch.result", without) == ["/annotation"]


def test_a_decision_carries_its_reason_or_its_licence() -> None:
    assert pointers("case.result", {**example("case.result"), "decision": "REJECTED"}) == ["/reason"]
    approved = {k: v for k, v in example("case.result").items() if k != "issued_license_id"}
    assert pointers("case.result", approved) == ["/issued_license_id"]
    entering = {k: v for k, v in example("credit.list.notice").items() if k != "period_to"}
    assert pointers("credit.list.notice", entering) == ["/period_to"]
    assert pointers("license.authorization.grant", {**example("license.authorization.grant"),
                                                    "granted_by": "AGENT"}) == ["/agent_id_hash"]


def test_the_annotations_the_gateways_read() -> None:
    def schema(t: str) -> dict[str, Any]:
        return REGISTRY.schema(t)

    assert schema("license.fetch.request")["x-use-causes"] == ["gov_service", "supervision"]
    assert schema("license.fetch.request")["x-subject"] == "/holder_id_hash"
    assert schema("case.submit")["x-subject"] == "/applicant/id_hash"
    assert [schema(f"case.{s}")["x-stage"] for s in ("submit", "accept", "progress", "result", "evaluation")] == [
        "submit", "accept", "progress", "result", "evaluation"]
    assert all("x-use-causes" not in schema(t) for t in GOV_TYPES if t != "license.fetch.request")
