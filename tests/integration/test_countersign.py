"""Countersigning takes only checkpoints that verify, and chains one record per region whose head moved."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio

from gateway.audit.countersign import Countersigner
from gateway.audit.model import GENESIS, checkpoint_bytes, record_hash
from gateway.audit.trail import AuditTrail
from gateway.config import KafkaConfig
from gateway.crypto.jws import Signer
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.crypto.trust import TrustStore
from gateway.dev.pki import PkiLayout, init_pki, issue_gateway_cert, make_ca
from gateway.kafka.transport import KafkaPublisher
from gateway.state import StateStore
from gateway.wire.envelope import utc_timestamp
from tests.conftest import Broker


def segment(signer: Signer, region: str, n: int) -> bytes:
    records, prev = [], GENESIS
    for seq in range(1, n + 1):
        body = {"seq": seq, "region": region, "message_id": "", "correlation_id": "", "stage": "checkpoint",
                "at": utc_timestamp(), "envelope_sha256": None, "detail": {}, "prev_hash": prev}
        body["hash"] = prev = record_hash(prev, body)
        records.append(body)
    # What a gateway announces on yrdx.checkpoints: the signed head of its chain.
    return orjson.dumps({"region": region, "seq": n, "hash": prev, "at": records[-1]["at"],
                         "jws": signer.sign(checkpoint_bytes(region, n, prev))})


@pytest.fixture()
def pki(tmp_path: Path) -> PkiLayout:
    return init_pki(tmp_path / "pki")


def signer_of(pki: PkiLayout, region: str) -> Signer:
    return Signer(load_private_key(pki.gateway_key(region)), load_certificate(pki.gateway_cert(region)))


@pytest_asyncio.fixture()
async def publisher(kafka: Broker) -> AsyncIterator[KafkaPublisher]:
    """A real producer, never used to publish: these records are signed by a throw-away PKI and must not
    land on the session's shared yrdx.audit, which other tests verify against the exchange's own PKI."""
    p = KafkaPublisher(KafkaConfig(bootstrap_servers=kafka.bootstrap_servers), 5.0)
    await p.start()
    yield p
    await p.stop()


def countersigner(pki: PkiLayout, tmp_path: Path, publisher: KafkaPublisher) -> tuple[Countersigner, AuditTrail]:
    trust = TrustStore.from_files([pki.ca_cert], [pki.gateway_cert(r) for r in ("SH", "JS", "ZJ", "AH")])
    audit = AuditTrail("SH", signer_of(pki, "SH"), StateStore(tmp_path / "state.sqlite"), publisher)
    return Countersigner("SH", KafkaConfig(), trust, audit), audit


async def test_valid_checkpoints_of_other_regions_are_countersigned_once(
    pki: PkiLayout, tmp_path: Path, publisher: KafkaPublisher
) -> None:
    cs, audit = countersigner(pki, tmp_path, publisher)
    cs.observe(b"JS", segment(signer_of(pki, "JS"), "JS", 3))
    cs.observe(b"SH", segment(signer_of(pki, "SH"), "SH", 5))  # its own chain: never countersigned
    assert cs.countersign() == 1
    assert cs.countersign() == 0  # nothing moved
    cs.observe(b"JS", segment(signer_of(pki, "JS"), "JS", 4))
    assert cs.countersign() == 1
    assert audit.head.seq == 2


async def test_forged_checkpoints_are_not_countersigned(
    pki: PkiLayout, tmp_path: Path, publisher: KafkaPublisher
) -> None:
    cs, _ = countersigner(pki, tmp_path, publisher)
    rogue_ca, rogue_key = make_ca("rogue")
    cert, key = issue_gateway_cert(rogue_ca, rogue_key, "JS")
    cs.observe(b"JS", segment(Signer(key, cert, include_x5c=True), "JS", 3))  # unknown CA
    cs.observe(b"ZJ", segment(signer_of(pki, "AH"), "ZJ", 3))  # AH's key signing ZJ's chain
    cs.observe(b"AH", b"not a checkpoint")
    assert cs.seen == {} and cs.countersign() == 0
