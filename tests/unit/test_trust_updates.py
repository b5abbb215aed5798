"""Trust updates (gateway.relay.trust_updates): only a statement signed by a trust root revokes anything, the
gateway's follower of `yrdx.trust` never stops, and `yrdx trust revoke` (gateway.cli.trust)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.cli import trust as cli_trust
from gateway.config import KafkaConfig
from gateway.crypto.jws import Signer
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.crypto.trust import TrustStore
from gateway.dev.exchange import Exchange, init_exchange
from gateway.dev.pki import init_pki, make_ca
from gateway.kafka.port import OutRecord
from gateway.relay import trust_updates
from gateway.relay.trust_updates import TrustUpdates, apply_update, ca_signer, follow_updates, load_updates, revocation
from gateway.wire.headers import SIGNATURE as SIGNATURE_HEADER
from gateway.wire.regions import REGIONS
from tests.unit.test_reader import FakeCluster, cluster, until

__all__ = ["cluster"]  # the fixture of test_reader


@pytest.mark.parametrize("alg", ["ES256", "SM2SM3"])
def test_revocations_need_the_root_signature(tmp_path: Path, alg: str) -> None:
    pki = init_pki(tmp_path / "pki", alg=alg)  # SM2SM3: an SM2 root signs the revocation
    trust = TrustStore.from_files([pki.ca_cert], [pki.gateway_cert("JS")])
    root = Signer(load_private_key(pki.ca_key), load_certificate(pki.ca_cert))
    gateway = Signer(load_private_key(pki.gateway_key("SH")), load_certificate(pki.gateway_cert("SH")))
    rogue_cert, rogue_key = make_ca("rogue root")
    rogue = Signer(rogue_key, rogue_cert)
    target = "A" * 43

    for not_root in (gateway, rogue):  # a gateway or a foreign CA cannot revoke anybody
        record = revocation(not_root, target, "hostile")
        assert apply_update(TrustUpdates(trust), record.value, dict(record.headers)[SIGNATURE_HEADER]) is None
    assert not trust.is_revoked(target)

    record = revocation(root, target, "key compromise")
    tampered = record.value.replace(b"AAAA", b"BBBB", 1)
    assert apply_update(TrustUpdates(trust), tampered, dict(record.headers)[SIGNATURE_HEADER]) is None
    assert apply_update(TrustUpdates(trust), record.value, None) is None
    assert apply_update(TrustUpdates(trust), record.value, dict(record.headers)[SIGNATURE_HEADER]) == target
    assert trust.is_revoked(target)


# --- loading and following yrdx.trust (over the fake cluster of test_reader) --------------------------------


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Exchange:
    return init_exchange(tmp_path_factory.mktemp("exchange"), base_port=0)


def root_of(ex: Exchange) -> Signer:
    return Signer(load_private_key(ex.pki.ca_key), load_certificate(ex.pki.ca_cert))


def trust_of(ex: Exchange) -> TrustStore:
    return TrustStore.from_files([ex.pki.ca_cert], [ex.pki.gateway_cert(r) for r in REGIONS])


def publish(cluster: FakeCluster, record: OutRecord) -> None:
    cluster.produce(record.topic, record.value, record.key, headers=record.headers)


async def test_load_updates_applies_what_is_on_the_topic(exchange: Exchange, cluster: FakeCluster) -> None:
    kafka = KafkaConfig()
    cluster.create(kafka.topics.trust)
    cluster.produce_undecodable(kafka.topics.trust)  # must not keep the gateway from starting
    publish(cluster, revocation(root_of(exchange), "A" * 43, "key compromise"))
    cluster.produce(kafka.topics.trust, b"{}", b"x")  # unsigned: ignored
    trust = trust_of(exchange)
    assert await load_updates(kafka, TrustUpdates(trust)) == 1 and trust.is_revoked("A" * 43)


async def test_the_follower_of_trust_updates_never_stops_on_a_bad_record(
        exchange: Exchange, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower that stopped would let a revoked signer through: records it cannot decode or apply are
    ignored, and the revocations after them still apply."""
    kafka = KafkaConfig(namespace="tu")
    cluster.create(kafka.topics.trust)
    trust = trust_of(exchange)
    real = trust_updates.apply_update

    def choking(store: trust_updates.TrustUpdates, value: bytes | None, signature: bytes | None) -> str | None:
        if value == b"boom":
            raise RuntimeError("a statement nobody foresaw")
        return real(store, value, signature)

    monkeypatch.setattr(trust_updates, "apply_update", choking)
    task = asyncio.create_task(follow_updates(kafka, TrustUpdates(trust)))
    try:
        await until(lambda: bool(cluster.started()))
        cluster.produce_undecodable(kafka.topics.trust)
        cluster.produce(kafka.topics.trust, b"boom", b"x", headers=[(SIGNATURE_HEADER, b"x")])
        publish(cluster, revocation(root_of(exchange), "B" * 43, "key compromise", kafka.topics.trust))
        await until(lambda: trust.is_revoked("B" * 43))
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- yrdx trust revoke --------------------------------------------------------------------------------------


def test_trust_revoke_publishes_a_revocation_signed_by_the_root(
        exchange: Exchange, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    sent: list[OutRecord] = []

    async def publish_update(kafka: KafkaConfig, record: OutRecord, timeout_s: float = 30.0) -> None:
        sent.append(record)

    monkeypatch.setattr(cli_trust, "publish_update", publish_update)
    config = str(exchange.config_path("SH"))
    assert main(["trust", "revoke", "--config", config, "--thumbprint", "C" * 43, "--reason", "test"]) == 0
    assert capsys.readouterr().out == f"revoked {'C' * 43} on yrdx.trust\n"
    [record] = sent
    trust = trust_of(exchange)
    assert record.topic == "yrdx.trust" and record.key == b"C" * 43
    assert apply_update(TrustUpdates(trust), record.value, dict(record.headers)[SIGNATURE_HEADER]) == "C" * 43


def test_trust_revoke_says_why_it_cannot(exchange: Exchange, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("region: BJ\n")
    assert main(["trust", "revoke", "--config", str(bad), "--thumbprint", "x"]) == 2
    assert capsys.readouterr().err.startswith(f"yrdx: bad config {bad}: ")
    config = str(exchange.config_path("SH"))
    assert main(["trust", "revoke", "--config", config, "--thumbprint", "x", "--ca-key", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("yrdx: cannot load the CA key and certificate: ") and "Traceback" not in err


def test_the_ca_signer_defaults_to_the_key_beside_the_certificate(exchange: Exchange) -> None:
    signer = ca_signer(exchange.pki.ca_cert)
    assert signer.sign(b"x") and ca_signer(exchange.pki.ca_cert, exchange.pki.ca_key).sign(b"x")
