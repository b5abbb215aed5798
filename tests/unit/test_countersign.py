"""Countersigning takes only checkpoints that verify, chains one record per region whose head moved, and its
follower of `yrdx.checkpoints` never stops (over the fake cluster of test_reader; tests/integration/
test_countersign.py follows a real broker). test_checkpoint_safeguard.py covers forged signatures under a real
header."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from gateway.audit.countersign import Countersigner
from gateway.audit.model import GENESIS, checkpoint_bytes, record_hash
from gateway.audit.trail import AuditTrail
from gateway.config import KafkaConfig
from gateway.crypto.jws import Signer
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.crypto.trust import TrustStore
from gateway.dev.pki import PkiLayout, init_pki, issue_gateway_cert, make_ca
from gateway.state import StateStore
from gateway.wire.envelope import utc_timestamp
from tests.unit.test_reader import FakeCluster, cluster, until

__all__ = ["cluster"]  # the fixture of test_reader

REGIONS4 = ("SH", "JS", "ZJ", "AH")


def announcement(signer: Signer, region: str, n: int) -> bytes:
    """What a gateway announces on yrdx.checkpoints: the signed head of its chain of n records."""
    records, prev = [], GENESIS
    for seq in range(1, n + 1):
        body = {"seq": seq, "region": region, "message_id": "", "correlation_id": "", "stage": "checkpoint",
                "at": utc_timestamp(), "envelope_sha256": None, "detail": {}, "prev_hash": prev}
        body["hash"] = prev = record_hash(prev, body)
        records.append(body)
    return orjson.dumps({"region": region, "seq": n, "hash": prev, "at": records[-1]["at"],
                         "jws": signer.sign(checkpoint_bytes(region, n, prev))})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki"))


def signer_of(pki: PkiLayout, region: str) -> Signer:
    return Signer(load_private_key(pki.gateway_key(region)), load_certificate(pki.gateway_cert(region)))


class NoPublisher:
    """The countersigner only appends to the trail; nothing here is published."""

    async def publish(self, records: object) -> None:
        raise AssertionError("nothing is published in this test")


def countersigner(pki: PkiLayout, tmp_path: Path, kafka: KafkaConfig | None = None
                  ) -> tuple[Countersigner, AuditTrail]:
    trust = TrustStore.from_files([pki.ca_cert], [pki.gateway_cert(r) for r in REGIONS4])
    audit = AuditTrail("SH", signer_of(pki, "SH"), StateStore(tmp_path / "state.sqlite"), NoPublisher())
    return Countersigner("SH", kafka or KafkaConfig(), trust, audit), audit


def test_valid_checkpoints_of_other_regions_are_countersigned_once(pki: PkiLayout, tmp_path: Path) -> None:
    cs, audit = countersigner(pki, tmp_path)
    cs.observe(b"JS", announcement(signer_of(pki, "JS"), "JS", 3))
    cs.observe(b"SH", announcement(signer_of(pki, "SH"), "SH", 5))  # its own chain: never countersigned
    assert cs.countersign() == 1
    assert cs.countersign() == 0  # nothing moved
    cs.observe(b"JS", announcement(signer_of(pki, "JS"), "JS", 4))
    cs.observe(b"JS", announcement(signer_of(pki, "JS"), "JS", 2))  # older than what was seen: ignored
    assert cs.countersign() == 1
    assert audit.pending() == 2 and cs.signed == {"JS": 4}  # two records appended


def test_forged_or_malformed_checkpoints_are_not_countersigned(pki: PkiLayout, tmp_path: Path) -> None:
    cs, _ = countersigner(pki, tmp_path)
    rogue_ca, rogue_key = make_ca("rogue")
    cert, key = issue_gateway_cert(rogue_ca, rogue_key, "JS")
    cs.observe(b"JS", announcement(Signer(key, cert, include_x5c=True), "JS", 3))  # unknown CA
    cs.observe(b"ZJ", announcement(signer_of(pki, "AH"), "ZJ", 3))  # AH's key signing ZJ's chain
    cs.observe(b"AH", b"not a checkpoint")
    cs.observe(b"AH", b"")  # what a record the client library cannot decode comes as
    cs.observe(None, announcement(signer_of(pki, "AH"), "AH", 1))  # no key
    assert cs.seen == {} and cs.countersign() == 0


@contextlib.asynccontextmanager
async def running(cs: Countersigner) -> AsyncIterator[None]:
    task = asyncio.create_task(cs.run(interval_s=0.01))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_follower_of_the_checkpoints_goes_on_past_records_it_cannot_read(
        pki: PkiLayout, tmp_path: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = KafkaConfig(namespace="cs")
    topic = kafka.topics.checkpoints
    cluster.create(topic)
    cluster.produce(topic, announcement(signer_of(pki, "AH"), "AH", 1), b"AH")  # before the start: not read
    cs, audit = countersigner(pki, tmp_path, kafka)
    observe = cs.observe

    def choking(key: bytes | None, value: bytes) -> None:
        if value == b"boom":
            raise RuntimeError("a checkpoint nobody foresaw")
        observe(key, value)

    monkeypatch.setattr(cs, "observe", choking)
    async with running(cs):
        await until(lambda: bool(cluster.started()))
        cluster.produce(topic, announcement(signer_of(pki, "JS"), "JS", 3), b"JS")
        cluster.produce_undecodable(topic)
        cluster.produce(topic, b"boom", b"ZJ")
        cluster.produce(topic, announcement(signer_of(pki, "ZJ"), "ZJ", 2), b"ZJ")
        await until(lambda: audit.pending() == 2)
    assert cs.signed == {"JS": 3, "ZJ": 2}
    assert not cluster.started()
