"""The countersigner follows a real broker's `yrdx.checkpoints` (gateway.kafka.reader.follow_topic) and goes on
past a record the client library cannot decode. Its rules on hand-made checkpoints are unit-tested in
tests/unit/test_countersign.py."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit.countersign import Countersigner
from gateway.audit.trail import AuditTrail
from gateway.config import KafkaConfig
from gateway.crypto.trust import TrustStore
from gateway.dev.pki import PkiLayout, init_pki
from gateway.kafka.port import OutRecord
from gateway.kafka.transport import KafkaPublisher, ensure_topics
from gateway.state import StateStore
from tests._util import produce_undecodable
from tests.conftest import Broker
from tests.unit.test_countersign import NoPublisher, announcement, signer_of


@pytest.fixture()
def pki(tmp_path: Path) -> PkiLayout:
    return init_pki(tmp_path / "pki")


async def until(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.05)


async def test_the_countersigner_follows_past_a_record_the_client_library_cannot_decode(
        pki: PkiLayout, tmp_path: Path, kafka: Broker, caplog: pytest.LogCaptureFixture) -> None:
    # A namespace of its own: these checkpoints are signed by a throw-away PKI and must not reach the session's
    # shared exchange, whose gateways countersign what they see on yrdx.checkpoints.
    cfg = KafkaConfig(bootstrap_servers=kafka.bootstrap_servers, namespace=f"cs-{uuid.uuid4().hex[:8]}")
    topic = cfg.topics.checkpoints
    await ensure_topics(cfg, {topic: 1})
    trust = TrustStore.from_files([pki.ca_cert], [pki.gateway_cert(r) for r in ("SH", "JS", "ZJ", "AH")])
    audit = AuditTrail("SH", signer_of(pki, "SH"), StateStore(tmp_path / "state.sqlite"), NoPublisher())
    cs = Countersigner("SH", cfg, trust, audit)
    publisher = KafkaPublisher(cfg, 10.0)
    await publisher.start()
    task = asyncio.create_task(cs.run(interval_s=0.1))
    try:
        # The follower starts at the end of the topic: announce AH's head until it is countersigned, so the
        # follower is known to be reading before the records under test are produced.
        n = 0

        async def ah_countersigned() -> None:
            nonlocal n
            while "AH" not in cs.signed:
                n += 1
                await publisher.publish([OutRecord(topic, announcement(signer_of(pki, "AH"), "AH", n), b"AH")])
                await asyncio.sleep(0.2)

        await asyncio.wait_for(ah_countersigned(), 30.0)
        await publisher.publish([OutRecord(topic, announcement(signer_of(pki, "JS"), "JS", 3), b"JS")])
        await produce_undecodable(kafka.bootstrap_servers, topic, b"JS")
        await publisher.publish([OutRecord(topic, announcement(signer_of(pki, "ZJ"), "ZJ", 2), b"ZJ")])
        await until(lambda: cs.signed.get("ZJ") == 2)
        assert cs.signed["JS"] == 3 and not task.done()
        stepped = [r for r in caplog.records if r.name == "gateway.kafka.reader"]
        assert [r.getMessage() for r in stepped] == ["a record could not be decoded; reading one record at a time"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await publisher.stop()
