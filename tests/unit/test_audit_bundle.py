"""Audit bundles (gateway.audit.bundle): exported from hand-made chains (tests/unit/test_audit_verify.World, in trail
formats 1 and 3), they hold both sides of a message and verify on their own; the auditor's own roots refuse a
foreign PKI; a proof accepts the exact envelope and refuses one changed byte. A bundle of batch records is
`yrdx-audit-bundle/2` and carries them whole; one of formats 1/2 stays /1."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.audit.bundle import (
    BundleError,
    Selection,
    build_bundle,
    bundle_trust,
    format_proof,
    load_bundle,
    prove,
    select_records,
    verify_bundle,
)
from gateway.audit.model import all_entries
from gateway.crypto.trust import TrustStore
from gateway.dev.pki import PkiLayout, make_ca
from tests.unit.test_audit_verify import (
    COMPANION,
    CONV,
    ENVELOPE,
    MSG,
    RECEIPT,
    World,
    batch,
    batch_of,
    export,
    pki,
    receipt_of,
    relay,
    sha_of,
    trust,
    world,
)

__all__ = ["batch", "pki", "trust", "world"]  # the fixtures of test_audit_verify


def ignore(warning: str) -> None:
    pass


def test_a_message_bundle_holds_both_sides_and_verifies_on_its_own(world: World, trust: TrustStore,
                                                                    tmp_path: Path) -> None:
    relay(world, "JS", "AH", msg="other-message")
    bundle = load_bundle(export(world, trust, tmp_path, message=MSG))
    assert {s["region"] for s in bundle.segments} == {"SH", "ZJ"}
    assert set(bundle.selection.messages) == {MSG, RECEIPT}
    warnings: list[str] = []
    report = verify_bundle(bundle, bundle_trust(bundle, [], warnings.append))
    assert report.ok, report.faults
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: trusting the root certificates inside the bundle (")
    stages = {(s["region"], r["stage"]) for s in bundle.segments for r in all_entries(s["records"])
              if r["message_id"] == MSG}
    assert {("SH", "accepted"), ("SH", "published"), ("ZJ", "delivered"), ("SH", "receipt_received")} <= stages


def test_a_bundle_checked_against_the_auditors_own_roots_refuses_a_foreign_pki(world: World, trust: TrustStore,
                                                                                tmp_path: Path) -> None:
    bundle = load_bundle(export(world, trust, tmp_path, conversation=CONV))
    own_ca = tmp_path / "auditor-ca.crt"
    own_ca.write_bytes(make_ca("auditor's root")[0].public_bytes(serialization.Encoding.PEM))
    warnings: list[str] = []
    report = verify_bundle(bundle, bundle_trust(bundle, [own_ca], warnings.append))
    assert not report.ok and {f.kind for f in report.faults} == {"forged"}
    # the bundle's gateway certificates are not the auditor's root's: refused, each with a warning
    refused = "warning: a gateway certificate of the bundle is not accepted"
    assert warnings and all(w.startswith(refused) for w in warnings)


def test_prove_accepts_the_exact_envelope_and_refuses_one_changed_byte(world: World, trust: TrustStore,
                                                                        tmp_path: Path) -> None:
    bundle = load_bundle(export(world, trust, tmp_path, message=MSG))
    t = bundle_trust(bundle, [], ignore)
    proof = prove(bundle, t, ENVELOPE)
    text = format_proof(proof)
    assert proof.proved and proof.problems == (), text
    assert {(e.region, e.stage) for e in proof.evidence} >= {("SH", "accepted"), ("ZJ", "delivered")}
    assert all(e.matches and e.checkpoint is not None for e in proof.evidence)
    assert text.splitlines()[-1].startswith("PROVED: ") and "DIFFERS" not in text
    i = ENVELOPE.index(b"audit test")
    changed = ENVELOPE[:i] + b"A" + ENVELOPE[i + 1:]
    proof = prove(bundle, t, changed)
    text = format_proof(proof)
    assert not proof.proved and proof.sha256 == hashlib.sha256(changed).hexdigest()
    assert not any(e.matches for e in proof.evidence)
    assert "NOT PROVED" in text and "DIFFERS" in text


def test_a_time_window_bundle_keeps_the_messages_it_touches_whole(world: World, trust: TrustStore,
                                                                   tmp_path: Path) -> None:
    delivered = next(r for s in world.topic for r in s.records if r["stage"] == "delivered")
    at = dt.datetime.fromisoformat(delivered["at"].replace("Z", "+00:00"))
    keys, messages = select_records(world.topic, start=at, end=at)
    assert MSG in messages
    picked = {(region, seq) for region, seq, _ in keys}
    accepted = next(r for s in world.topic for r in s.records if r["stage"] == "accepted")
    assert ("SH", accepted["seq"]) in picked  # outside the window, but the same message
    doc = build_bundle(world.topic, trust, keys, Selection(messages, None, delivered["at"], delivered["at"]))
    path = tmp_path / "window.json"
    path.write_bytes(orjson.dumps(doc))
    bundle = load_bundle(path)
    assert verify_bundle(bundle, bundle_trust(bundle, [], ignore)).ok


def test_a_proof_of_bytes_that_are_no_envelope_fails_at_once(world: World, trust: TrustStore, tmp_path: Path) -> None:
    bundle = load_bundle(export(world, trust, tmp_path, message=MSG))
    proof = prove(bundle, bundle_trust(bundle, [], ignore), b"not json")
    assert not proof.proved and proof.message_id is None and proof.report is None
    assert format_proof(proof) == (f"envelope: 8 bytes, sha256 {hashlib.sha256(b'not json').hexdigest()}: not an "
                                   "envelope (no message id)\nNOT PROVED")


def test_a_bundle_without_roots_warns_then_fails(world: World, trust: TrustStore, tmp_path: Path) -> None:
    path = export(world, trust, tmp_path, message=MSG)
    doc = orjson.loads(path.read_bytes())
    doc["certificates"]["roots"] = []
    path.write_bytes(orjson.dumps(doc))
    bundle = load_bundle(path)
    warnings: list[str] = []
    with pytest.raises(BundleError, match="no trust roots"):
        bundle_trust(bundle, [], warnings.append)
    assert len(warnings) == 1 and "inside the bundle (none)" in warnings[0]  # the warning comes first


@pytest.mark.parametrize(("change", "why"), [
    (lambda d: d.update(format="other/1"), "not a bundle"),
    (lambda d: d.pop("segments"), "needs certificates, selection and segments"),
    (lambda d: d["selection"].update(messages=[1]), "selection.messages must be a list"),
    (lambda d: d["certificates"].update(roots=["not a PEM"]), "certificates.roots"),
])
def test_a_file_that_is_not_a_readable_bundle_is_a_bundle_error(world: World, trust: TrustStore, tmp_path: Path,
                                                                 change: object, why: str) -> None:
    path = export(world, trust, tmp_path, message=MSG)
    doc = orjson.loads(path.read_bytes())
    change(doc)  # type: ignore[operator]
    path.write_bytes(orjson.dumps(doc))
    with pytest.raises(BundleError, match=why):
        load_bundle(path)
    path.write_bytes(b"{")
    with pytest.raises(BundleError, match="not JSON"):
        load_bundle(path)


def test_a_damaged_segment_in_a_bundle_is_an_edited_fault(world: World, trust: TrustStore, tmp_path: Path) -> None:
    path = export(world, trust, tmp_path, message=MSG)
    doc = orjson.loads(path.read_bytes())
    doc["segments"][0]["records"] = "gone"
    path.write_bytes(orjson.dumps(doc))
    bundle = load_bundle(path)
    report = verify_bundle(bundle, bundle_trust(bundle, [], ignore))
    assert any(f.kind == "edited" and "segment 0 of the bundle is damaged" in f.detail for f in report.faults)


def test_a_bundle_is_format_2_when_it_holds_batch_records_and_carries_them_whole(world: World, trust: TrustStore,
                                                                                 tmp_path: Path, batch: bool) -> None:
    """Format 1 keeps writing bundle/1; a batch record travels with all its entries (its hash covers them), while
    the selection names only the messages asked for."""
    path = export(world, trust, tmp_path, message=MSG)
    doc = orjson.loads(path.read_bytes())
    assert doc["format"] == ("yrdx-audit-bundle/2" if batch else "yrdx-audit-bundle/1")
    bundle = load_bundle(path)
    assert set(bundle.selection.messages) == {MSG, RECEIPT}
    on_topic = {r["hash"]: r for seg in world.topic for r in seg.records}
    carried = [r for s in doc["segments"] for r in s["records"]]
    assert all(on_topic[r["hash"]] == r for r in carried)  # as written, entries and all
    assert (COMPANION in {r["message_id"] for r in all_entries(carried)}) == batch
    assert verify_bundle(bundle, bundle_trust(bundle, [], ignore)).ok
    _, messages = select_records(world.topic, conversation=CONV)  # a conversation is looked for entry by entry
    assert set(messages) == {MSG, RECEIPT} | ({COMPANION, receipt_of(COMPANION)} if batch else set())


def test_prove_over_batch_records_names_each_entry_s_position(pki: PkiLayout, trust: TrustStore,
                                                              tmp_path: Path) -> None:
    w = World(pki, batch=True)
    relay(w, msg="m-before", sha=sha_of("m-before"), along=(MSG,))  # MSG's entries come second: position 1
    proof = prove(load_bundle(export(w, trust, tmp_path, message=MSG)), trust, ENVELOPE)
    text = format_proof(proof)
    assert proof.proved, text
    delivered = next(e for e in proof.evidence if e.stage == "delivered")
    assert delivered.entry == 1 and f"  {delivered.seq}.1  delivered" in text
    assert all(e.entry == 1 for e in proof.evidence if e.region == "ZJ")
    assert {(e.region, e.stage) for e in proof.evidence} >= {("SH", "accepted"), ("SH", "published"),
                                                            ("ZJ", "received"), ("ZJ", "delivered")}


def test_an_entry_changed_inside_a_bundled_batch_record_is_edited_and_proves_nothing(
        pki: PkiLayout, trust: TrustStore, tmp_path: Path) -> None:
    w = World(pki, batch=True)
    relay(w, along=(COMPANION,))
    path = export(w, trust, tmp_path, message=MSG)
    doc = orjson.loads(path.read_bytes())
    seq = batch_of(w, "ZJ", "received")["seq"]
    record = next(r for s in doc["segments"] for r in s["records"] if r["seq"] == seq and s["region"] == "ZJ")
    record["entries"][0][2] = "0" * 64  # MSG's received entry now names another envelope
    path.write_bytes(orjson.dumps(doc))
    bundle = load_bundle(path)
    report = verify_bundle(bundle, trust)
    assert {(f.region, f.seq, f.kind) for f in report.faults} == {("ZJ", seq, "edited")}
    proof = prove(bundle, trust, ENVELOPE)
    assert not proof.proved and "no received record of" in " ".join(proof.problems)
