"""The use context (issue 12): `operator` and `use_cause` signed into the envelope, required on the types that read
personal data or licences, checked by the sender against its own purposes and by the receiver against its own, and
audited as codes with the holder's pseudonym (never a name or an ID number)."""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.audit.index import Batch, decode_segments, open_index, usage_document
from gateway.audit.journey import flatten_segments
from gateway.audit.model import all_entries
from gateway.audit.trail import AuditTrail
from gateway.config import ConfigError, load_config
from gateway.crypto.jws import Signer
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.dev.exchange import edit_config, init_exchange
from gateway.metrics import Metrics
from gateway.relay.ingress import Ingress
from gateway.relay.purposes import UsePolicy
from gateway.relay.signed import Unsigned
from gateway.schemas.registry import SchemaRegistry
from gateway.state import StateStore
from gateway.wire import envelope
from gateway.wire.envelope import EnvelopeError, Operator
from gateway.wire.problems import Problem
from tests.unit import _relay
from tests.unit._relay import REGION, close, harness

REGISTRY = SchemaRegistry.load()
FETCH = "license.fetch.request"
OPERATOR = {"id": "JS-OP-0001", "role": "clerk", "department": "JS-ZWFW"}
HOLDER_HASH = REGISTRY.examples(FETCH)[0]["holder_id_hash"]
IDENTITY = "identity.verify.request"
# The queries that read personal data or licences, and the purposes their schemas allow (README "Government
# services across regions"): the use context is mandatory on each.
PURPOSES = {
    IDENTITY: {"gov_service", "identity_check"},
    "license.verify.request": {"gov_service", "licence_check", "supervision"},
    "medical.person.request": {"SVC-MED-1101"},
    FETCH: {"gov_service", "supervision"},
}
QUERIES = tuple(PURPOSES)
NOT_ALLOWED = "credit_review"  # a purpose code of the exchange, allowed for none of these types


def fetch(**over: Any) -> dict[str, Any]:
    return {"type": FETCH, "to": "SH", "payload": copy.deepcopy(REGISTRY.examples(FETCH)[0]),
            "operator": OPERATOR, "use_cause": "gov_service", **over}


class Published:
    async def publish(self, records: Any) -> None:
        pass


def ingress_of(tmp_path: Path, purposes: dict[str, frozenset[str]] | None = None) -> Ingress:
    ex = init_exchange(tmp_path / "ex", base_port=0, bootstrap_servers="127.0.0.1:1")
    cfg = load_config(ex.config_path("JS"))
    if purposes is not None:
        cfg = dataclasses.replace(cfg, purposes=purposes)
    signer = Signer(load_private_key(cfg.private_key), load_certificate(cfg.certificate))
    state = StateStore(tmp_path / "state.sqlite")
    audit = AuditTrail("JS", signer, state, Published(), False, cfg.topics)  # type: ignore[arg-type]
    return Ingress(cfg, REGISTRY, signer, Published(), state, audit, Metrics("JS"))  # type: ignore[arg-type]


# --- the envelope ---------------------------------------------------------------------------------------

def test_operator_and_use_cause_are_signed_into_the_envelope_and_read_back() -> None:
    _, raw = envelope.build(msg_type=FETCH, schema_version=1, sender="JS", recipient="SH", payload={},
                            operator=Operator("JS-OP-0001", "clerk", "JS-ZWFW"), use_cause="gov_service")
    doc = orjson.loads(raw)
    assert doc["operator"] == OPERATOR and doc["use_cause"] == "gov_service"
    env = envelope.parse(raw)
    assert env.operator == Operator("JS-OP-0001", "clerk", "JS-ZWFW") and env.use_cause == "gov_service"


def test_an_envelope_without_a_use_context_still_parses() -> None:
    _, raw = envelope.build(msg_type="license.verify.request", schema_version=1, sender="JS", recipient="SH",
                            payload={})
    assert b"operator" not in raw and b"use_cause" not in raw
    env = envelope.parse(raw)
    assert env.operator is None and env.use_cause is None


@pytest.mark.parametrize("field,value", [
    ("operator", "JS-OP-0001"), ("operator", {"id": "JS-OP-0001"}), ("operator", {"id": "a b", "role": "clerk"}),
    ("operator", {"id": "x", "role": "clerk", "name": "张三"}), ("operator", {"id": "x" * 65, "role": "clerk"}),
    ("use_cause", ""), ("use_cause", 7), ("use_cause", "办事"), ("use_cause", "a\r\nb"),
])
def test_a_malformed_use_context_is_an_invalid_envelope(field: str, value: object) -> None:
    _, raw = envelope.build(msg_type=FETCH, schema_version=1, sender="JS", recipient="SH", payload={})
    doc = {**orjson.loads(raw), field: value}
    with pytest.raises(EnvelopeError):
        envelope.parse(orjson.dumps(doc))


# --- the purposes registry ----------------------------------------------------------------------------

def test_the_types_that_read_licences_declare_their_purposes_and_others_need_none() -> None:
    uses = UsePolicy(REGISTRY)
    assert {t: uses.allowed(t) for t in QUERIES} == PURPOSES
    assert {t for t in REGISTRY.types() if uses.allowed(t)} == set(QUERIES)  # no other type reads them
    assert uses.allowed("case.progress") == frozenset()
    assert uses.refusal("case.progress", None, None) is None


def test_a_region_overrides_the_purposes_of_a_type() -> None:
    uses = UsePolicy(REGISTRY, {FETCH: frozenset({"supervision"}), "identity.verify.request": frozenset({"x"})})
    assert uses.refusal(FETCH, Operator("a", "b"), "gov_service") is not None
    assert uses.refusal("identity.verify.request", None, None) is not None  # now required there


# --- ingress: refused already at the sender --------------------------------------------------------------

@pytest.mark.parametrize("over,code,status", [
    ({"operator": None}, "purpose_required", 400),
    ({"use_cause": None}, "purpose_required", 400),
    ({"use_cause": "marketing"}, "not_permitted_purpose", 403),
    ({"operator": {"id": "JS-OP-0001"}}, "invalid_request", 400),
    ({"use_cause": "不是代码"}, "invalid_request", 400),
])
def test_ingress_refuses_a_query_without_an_allowed_use_context(tmp_path: Path, over: dict[str, Any], code: str,
                                                                status: int) -> None:
    ing = ingress_of(tmp_path)
    item = {k: v for k, v in fetch(**over).items() if v is not None}
    result = ing.prepare(ing_platform(tmp_path), item)
    assert isinstance(result, Problem) and (result.code, result.status) == (code, status), result


def ing_platform(tmp_path: Path) -> Any:
    return load_config(tmp_path / "ex" / "js.yaml").platforms[0]


@pytest.mark.parametrize("msg_type", QUERIES)
def test_every_query_without_its_use_context_is_refused_at_ingress(tmp_path: Path, msg_type: str) -> None:
    ing, platform = ingress_of(tmp_path), ing_platform(tmp_path)
    item = {"type": msg_type, "to": "SH", "payload": copy.deepcopy(REGISTRY.examples(msg_type)[0])}
    allowed = min(PURPOSES[msg_type])
    for over, code, status in (({}, "purpose_required", 400), ({"operator": OPERATOR}, "purpose_required", 400),
                               ({"use_cause": allowed}, "purpose_required", 400),
                               ({"operator": OPERATOR, "use_cause": NOT_ALLOWED}, "not_permitted_purpose", 403)):
        result = ing.prepare(platform, {**item, **over})
        assert isinstance(result, Problem) and (result.code, result.status) == (code, status), (over, result)
    assert UsePolicy(REGISTRY).refusal(msg_type, Operator(**OPERATOR), allowed) is None  # (sealing needs keys)


def test_ingress_signs_the_use_context_and_audits_codes_and_the_pseudonym_only(tmp_path: Path) -> None:
    ing = ingress_of(tmp_path)
    result = ing.prepare(ing_platform(tmp_path), fetch())
    assert isinstance(result, Unsigned)
    env = envelope.parse(result.envelope)
    assert env.operator == Operator(**OPERATOR) and env.use_cause == "gov_service"
    assert result.use == {"operator_id": "JS-OP-0001", "operator_role": "clerk", "operator_department": "JS-ZWFW",
                          "use_cause": "gov_service", "subject": HOLDER_HASH}


def test_the_senders_own_override_refuses_at_ingress(tmp_path: Path) -> None:
    ing = ingress_of(tmp_path, {"license.verify.request": frozenset({"licence_check"})})
    item = {"type": "license.verify.request", "to": "SH",
            "payload": REGISTRY.examples("license.verify.request")[0]}
    result = ing.prepare(ing_platform(tmp_path), item)
    assert isinstance(result, Problem) and result.code == "purpose_required"
    ok = ing.prepare(ing_platform(tmp_path), {**item, "operator": OPERATOR, "use_cause": "licence_check"})
    assert isinstance(ok, Unsigned)


def test_a_case_message_audits_its_stage(tmp_path: Path) -> None:
    ing = ingress_of(tmp_path)
    result = ing.prepare(ing_platform(tmp_path), {"type": "case.accept", "to": "SH",
                                                  "payload": REGISTRY.examples("case.accept")[0]})
    assert isinstance(result, Unsigned) and result.use == {"business_stage": "accept"}


# --- egress: the receiver decides by its own registry ---------------------------------------------------

def audit_records(h: Any) -> list[dict[str, Any]]:
    """The trail message by message (a batch record's entries each)."""
    return all_entries(flatten_segments(r.value for r in h.broker.records(h.cfg.topics.audit)))


async def test_the_receiver_dead_letters_a_query_without_use_context(tmp_path: Path) -> None:
    h = await harness(tmp_path)
    try:
        _, bare = h.send("JS", FETCH, operator=None, use_cause=None)
        _, wrong = h.send("JS", FETCH, operator=Operator("JS-OP-0001", "clerk"), use_cause="marketing")
        ok_id, _ = h.send("JS", FETCH, operator=Operator("JS-OP-0001", "clerk", "JS-ZWFW"), use_cause="gov_service")
        await h.drain()
        assert h.reason_for(bare) == "purpose_required"
        assert h.reason_for(wrong) == "not_permitted_purpose"
        assert h.delivered_ids() == [ok_id]
        verified = [r for r in audit_records(h) if r["stage"] == "verified" and r["message_id"] == ok_id]
        assert [r["detail"] for r in verified] == [{
            "signer": verified[0]["detail"]["signer"], "type": FETCH, "sender": "JS", "operator_id": "JS-OP-0001",
            "operator_role": "clerk", "operator_department": "JS-ZWFW", "use_cause": "gov_service",
            "subject": HOLDER_HASH,
        }]
    finally:
        await close(h)


async def test_the_receiver_dead_letters_every_query_without_an_allowed_purpose(tmp_path: Path) -> None:
    h = await harness(tmp_path)
    try:
        clerk = Operator("JS-OP-0001", "counter_clerk", "JS-ZWFW")
        sent = {t: (h.send("JS", t, operator=None, use_cause=None)[1],
                    h.send("JS", t, operator=clerk, use_cause=NOT_ALLOWED)[1],
                    h.send("JS", t, operator=clerk, use_cause=min(PURPOSES[t]))[0]) for t in QUERIES}
        await h.drain()
        assert {t: (h.reason_for(bare), h.reason_for(wrong)) for t, (bare, wrong, _) in sent.items()} == {
            t: ("purpose_required", "not_permitted_purpose") for t in QUERIES}
        assert sorted(h.delivered_ids()) == sorted(ok for _, _, ok in sent.values())
    finally:
        await close(h)


@pytest.mark.parametrize("batch_records", [True, False], ids=["format 3", "format 1"])
async def test_usage_lists_the_identity_verifications_of_a_subject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   batch_records: bool) -> None:
    """The holder's region lists who verified the holder's identity and why; a refused query is not a use. The
    same from a trail of batch records as from one of a record per message."""
    monkeypatch.setattr(_relay, "AuditTrail", functools.partial(AuditTrail, batch_records=batch_records))
    h = await harness(tmp_path)
    try:
        holder = REGISTRY.examples(IDENTITY)[0]["id_hash"]
        clerk = Operator("JS-OP-0001", "counter_clerk", "JS-ZWFW")
        asked, _ = h.send("JS", IDENTITY, operator=clerk, use_cause="identity_check", correlation_id="case-1")
        h.send("ZJ", IDENTITY, operator=Operator("ZJ-OP-0002", "clerk"), use_cause=NOT_ALLOWED)
        other = {**REGISTRY.examples(IDENTITY)[0], "id_hash": "3f" * 32}
        h.send("AH", IDENTITY, payload=other, operator=Operator("AH-OP-0003", "clerk"), use_cause="gov_service")
        await h.drain()
        values = [(r.partition, r.offset, r.value) for r in h.broker.records(h.cfg.topics.audit)]
        verified = [r for r in flatten_segments(v for _, _, v in values) if r["stage"] == "verified"]
        # JS's and AH's queries (ZJ's purpose is refused first), in batch records (format 3) or not (format 1)
        assert {"entries" in r for r in verified} == {batch_records} and len(all_entries(verified)) == 2
        segments, skipped = decode_segments(values)
        index = open_index(tmp_path / "index.sqlite")
        try:
            index.store(Batch(h.cfg.topics.audit, segments, {0: len(values)}))
            doc = usage_document(index, REGION, [holder])
        finally:
            index.close()
        assert skipped == 0 and doc["subjects"] == [holder]
        assert [(u["message_id"], u["correlation_id"], u["type"], u["from"], u["subject"], u["operator"],
                 u["use_cause"]) for u in doc["uses"]] == [
            (asked, "case-1", IDENTITY, "JS", holder, {"id": "JS-OP-0001", "role": "counter_clerk",
                                                       "department": "JS-ZWFW"}, "identity_check")]
    finally:
        await close(h)


async def test_the_receivers_purposes_override_the_schema(tmp_path: Path) -> None:
    h = await harness(tmp_path, lambda cfg: dataclasses.replace(cfg, purposes={FETCH: frozenset({"supervision"})}))
    try:
        _, record = h.send("JS", FETCH, operator=Operator("JS-OP-0001", "clerk"), use_cause="gov_service")
        await h.drain()
        assert h.reason_for(record) == "not_permitted_purpose"
        assert h.delivered_ids() == []
    finally:
        await close(h)



def test_the_purposes_of_the_config_are_checked(tmp_path: Path) -> None:
    ex = init_exchange(tmp_path / "ex", base_port=0, bootstrap_servers="127.0.0.1:1")
    path = ex.config_path("SH")
    edit_config(path, purposes={FETCH: ["gov_service"], "license.verify.request": ["licence_check"]})
    assert load_config(path).purposes == {FETCH: {"gov_service"}, "license.verify.request": {"licence_check"}}
    for bad in ([], ["办事"], "gov_service", [""]):
        edit_config(path, purposes={FETCH: bad})
        with pytest.raises(ConfigError, match=f"purposes.{FETCH}"):
            load_config(path)
