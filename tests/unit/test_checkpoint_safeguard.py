"""The JWS signature of an audit checkpoint is checked, not only who it names.

A checkpoint's protected header names a certificate (kid, x5t#S256) and anyone can copy a gateway's header:
the thumbprint is public. If only trust (the named certificate chains to a root, is valid, is not revoked) and
region were checked, such a header over a wrong signature would make any history verify. Each consumer of
checkpoints must refuse it: `yrdx audit verify` (topic and `--bundle`), the countersigner and the audit index.
Every forgery here copies the real gateway's protected header and differs only in the signature bytes.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.audit.countersign import Countersigner
from gateway.audit.model import Checkpoint, Segment, all_entries, checkpoint_bytes, checkpoint_time, segment_fault
from gateway.audit.trail import AuditTrail
from gateway.cli import main
from gateway.config import KafkaConfig
from gateway.crypto.jws import Signer, b64url_encode, parse_detached
from gateway.crypto.trust import TrustStore
from gateway.dev.pki import PkiLayout, init_pki
from gateway.state import StateStore
from gateway.wire.regions import REGIONS
from tests.unit.test_audit_verify import MSG, World, export, faults, relay, signer_of, verify

Forge = Callable[[Signer, str], str]  # the real gateway's signer, the real JWS -> a forged JWS


def _header(jws: str) -> str:
    return jws.split("..", 1)[0]


def other_key(pki: PkiLayout, region: str) -> Forge:
    """The real header over a signature by another key of the same algorithm (another gateway's)."""
    other = signer_of(pki, next(r for r in REGIONS if r != region))

    def forge(real: Signer, jws: str) -> str:
        return f"{_header(jws)}..{other.sign(b'anything').split('..', 1)[1]}"

    return forge


def garbage(real: Signer, jws: str) -> str:
    """The real header over 64 bytes that are no signature at all (the length of an ES256 one)."""
    return f"{_header(jws)}..{b64url_encode(os.urandom(64))}"


def replayed(real: Signer, jws: str) -> str:
    """A real signature by the real key, but over another checkpoint: lifted from an older segment."""
    return real.sign(checkpoint_bytes("JS", 1, "0" * 64))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def trust(pki: PkiLayout) -> TrustStore:
    return TrustStore.from_files([pki.ca_cert], [pki.gateway_cert(r) for r in REGIONS])


def forgeries(pki: PkiLayout) -> dict[str, Forge]:
    return {"another key": other_key(pki, "JS"), "garbage bytes": garbage, "a replayed signature": replayed}


def with_forged_checkpoint(seg: Segment, forge: Forge, real: Signer) -> Segment:
    cp = seg.checkpoint
    jws = forge(real, cp.jws)
    assert parse_detached(jws).header == parse_detached(cp.jws).header  # the real kid and x5t#S256
    assert jws != cp.jws
    return Segment(seg.region, seg.records, Checkpoint(cp.region, cp.seq, cp.hash, jws), seg.offset)


def forged_tail(w: World, forge: Forge) -> Segment:
    """JS's next records chained onto its real head, under a checkpoint with the real header: what a forger who
    knows JS's public certificate (but not its key) writes to yrdx.audit."""
    js = w.gw["JS"]
    js.append("delivered", "01a20000-0000-7000-8000-00000000f0a1", "f" * 64, "", platform="js-platform")
    seg = js.flush()
    forged = with_forged_checkpoint(seg, forge, js.signer)
    w.topic[-1] = forged
    return forged


@pytest.mark.parametrize("how", ["another key", "garbage bytes", "a replayed signature"])
def test_a_real_header_over_a_wrong_signature_is_named_forged_by_verify(pki: PkiLayout, trust: TrustStore,
                                                                        how: str) -> None:
    w = World(pki)
    relay(w)
    assert verify(w, trust).ok
    seg = forged_tail(w, forgeries(pki)[how])
    assert segment_fault(seg, trust) == "checkpoint signature does not verify"
    report = verify(w, trust)
    assert faults(report) == {("JS", seg.checkpoint.seq, "forged")}
    assert "checkpoint signature does not verify" in report.faults[0].detail
    assert report.regions["JS"].head_seq == seg.checkpoint.seq - 1  # the forged record is not JS's


@pytest.mark.parametrize("batch", [False, True], ids=["format 1", "format 3"])
@pytest.mark.parametrize("how", ["another key", "garbage bytes", "a replayed signature"])
def test_a_bundle_whose_checkpoint_has_a_wrong_signature_does_not_verify(pki: PkiLayout, trust: TrustStore,
                                                                         tmp_path: Path, how: str, batch: bool,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Through `yrdx audit verify --bundle FILE --ca ROOT`, against the exchange's real root: the bundle holds
    the real certificates, so only the signature bytes can tell. The same over batch records (format 3)."""
    w = World(pki, batch=batch)
    relay(w)
    zj = next(i for i, s in enumerate(w.topic) if s.region == "ZJ" and any(
        r["stage"] == "delivered" and r["message_id"] == MSG for r in all_entries(s.records)))
    genuine = w.topic[zj]
    w.topic[zj] = with_forged_checkpoint(genuine, forgeries(pki)[how], w.gw["ZJ"].signer)
    path = export(w, trust, tmp_path, message=MSG)
    segments = orjson.loads(path.read_bytes())["segments"]
    assert any(s["checkpoint"]["jws"] == w.topic[zj].checkpoint.jws for s in segments)  # exported as it is

    code = main(["audit", "verify", "--bundle", str(path), "--ca", str(pki.ca_cert), "--json"])
    report: dict[str, Any] = orjson.loads(capsys.readouterr().out)
    assert code == 1
    forged = [f for f in report["faults"] if f["kind"] == "forged"]
    assert [(f["region"], f["seq"]) for f in forged] == [("ZJ", genuine.checkpoint.seq)]
    assert "checkpoint signature does not verify" in forged[0]["detail"]


class _NoPublisher:
    """The countersigner only appends; nothing here reaches a broker."""

    async def publish(self, records: object) -> None:
        raise AssertionError("nothing is published in this test")


def _announcement(seg: Segment) -> bytes:
    """What a gateway announces on yrdx.checkpoints for a segment: its signed head and when it was made."""
    cp = seg.checkpoint
    return orjson.dumps({"region": cp.region, "seq": cp.seq, "hash": cp.hash, "jws": cp.jws,
                         "at": seg.records[-1]["at"]})


@pytest.mark.parametrize("how", ["another key", "garbage bytes", "a replayed signature"])
def test_a_checkpoint_with_a_wrong_signature_is_not_countersigned(pki: PkiLayout, trust: TrustStore,
                                                                  tmp_path: Path, how: str) -> None:
    w = World(pki)
    relay(w)
    audit = AuditTrail("SH", signer_of(pki, "SH"), StateStore(tmp_path / "state.sqlite"), _NoPublisher())
    countersigner = Countersigner("SH", KafkaConfig(), trust, audit)
    genuine = next(s for s in reversed(w.topic) if s.region == "JS")
    forged = forged_tail(w, forgeries(pki)[how])
    assert forged.checkpoint.seq > genuine.checkpoint.seq  # newer: it would displace the genuine head

    countersigner.observe(b"JS", _announcement(forged))
    assert countersigner.seen == {} and countersigner.countersign() == 0
    assert audit.pending() == 0  # nothing appended to SH's chain

    countersigner.observe(b"JS", _announcement(genuine))  # the control: the real head is countersigned
    assert countersigner.countersign() == 1
    assert countersigner.seen["JS"] == genuine.checkpoint
    assert audit.pending() == 1


def test_checkpoint_time_is_that_of_the_record_the_checkpoint_names(pki: PkiLayout) -> None:
    w = World(pki)
    relay(w)
    seg = w.topic[0]
    assert checkpoint_time(seg) == dt.datetime.fromisoformat(seg.records[-1]["at"].replace("Z", "+00:00"))
