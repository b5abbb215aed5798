"""Trust updates (gateway.relay.trust_updates): only a statement signed by a trust root revokes anything, a new
certificate counts only when a trusted root issued it, a new encryption key only when a trusted certificate of
its region announces it, the gateway's follower of `yrdx.trust` never stops, and `yrdx trust revoke|publish`
(gateway.cli.trust)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway.cli import main
from gateway.cli import trust as cli_trust
from gateway.config import KafkaConfig
from gateway.crypto.jws import Signer, thumbprint_s256
from gateway.crypto.keyfiles import load_certificate, load_encryption_pub, load_private_key
from gateway.crypto.keyring import PeerSealers, encryption_kid
from gateway.crypto.trust import TrustStore
from gateway.dev.exchange import Exchange, init_exchange
from gateway.dev.pki import init_pki, issue_gateway_cert, make_ca, rotate_gateway_keys
from gateway.kafka.port import OutRecord
from gateway.relay import trust_updates
from gateway.relay.trust_updates import (
    TrustUpdates,
    apply_update,
    ca_signer,
    certificate_statement,
    encryption_key_statement,
    follow_updates,
    learn_certificates,
    load_updates,
    revocation,
)
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


# --- certificate and encryption_key statements: a region's new keys -------------------------------------------


def sig_of(record: OutRecord) -> bytes:
    return dict(record.headers)[SIGNATURE_HEADER]


def js_next(exchange: Exchange) -> Signer:
    """A new certificate of JS from the exchange's CA, as a rotation issues it."""
    cert, key = issue_gateway_cert(load_certificate(exchange.pki.ca_cert), load_private_key(exchange.pki.ca_key), "JS")
    return Signer(key, cert)


def test_a_new_certificate_is_learned_from_its_own_statement_by_the_live_and_the_audit_trust(
        exchange: Exchange) -> None:
    trust, audit_trust = trust_of(exchange), trust_of(exchange)
    updates = TrustUpdates(trust, audit_trust=audit_trust)
    new = js_next(exchange)
    record = certificate_statement(new)
    assert record.key == f"certificate:{new.thumbprint}".encode()  # apart from a revocation of it under compaction
    assert trust.certificate(new.thumbprint) is None
    assert apply_update(updates, record.value, sig_of(record)) == new.thumbprint
    assert trust.region_of(new.thumbprint) == audit_trust.region_of(new.thumbprint) == "JS"
    assert new.thumbprint in updates.certificates


def test_a_certificate_statement_is_refused_unless_a_trusted_root_issued_it_and_it_is_intact(
        exchange: Exchange) -> None:
    trust = trust_of(exchange)
    updates = TrustUpdates(trust)
    rogue_ca, rogue_key = make_ca("rogue root")
    rogue_cert, key = issue_gateway_cert(rogue_ca, rogue_key, "JS")
    foreign = Signer(key, rogue_cert)
    rogue = certificate_statement(foreign)
    assert apply_update(updates, rogue.value, sig_of(rogue)) is None
    assert trust.certificate(foreign.thumbprint) is None
    new = js_next(exchange)
    record = certificate_statement(new)
    # Claiming another region, or another certificate, than the one that signs breaks the signature or the fit.
    for doc in ({"region": "SH"}, {"thumbprint": "A" * 43}):
        forged = orjson.dumps({**orjson.loads(record.value), **doc}, option=orjson.OPT_SORT_KEYS)
        assert apply_update(updates, forged, sig_of(record)) is None
    other = certificate_statement(Signer(load_private_key(exchange.pki.gateway_key("JS")),
                                         load_certificate(exchange.pki.gateway_cert("JS"))))
    assert apply_update(updates, record.value, sig_of(other)) is None  # signed by another certificate
    assert updates.certificates == set()


def test_peers_seal_to_a_key_announced_by_a_trusted_certificate_of_its_region_only(exchange: Exchange) -> None:
    trust = trust_of(exchange)
    old = load_encryption_pub(exchange.pki.encryption_pub("SH"))
    sealers = PeerSealers({"SH": old})
    updates = TrustUpdates(trust, sealers=sealers, region="JS")
    sh = Signer(load_private_key(exchange.pki.gateway_key("SH")), load_certificate(exchange.pki.gateway_cert("SH")))
    zj = Signer(load_private_key(exchange.pki.gateway_key("ZJ")), load_certificate(exchange.pki.gateway_cert("ZJ")))
    new = X25519PrivateKey.generate().public_key()

    # ZJ's certificate cannot announce SH's key, whatever the statement says.
    by_zj = encryption_key_statement(zj, new)
    claims_sh = orjson.dumps({**orjson.loads(by_zj.value), "region": "SH", "kid": encryption_kid("SH", new)},
                             option=orjson.OPT_SORT_KEYS)
    assert apply_update(updates, claims_sh, sig_of(by_zj)) is None
    signed_by_zj = orjson.dumps({**orjson.loads(by_zj.value), "region": "SH"}, option=orjson.OPT_SORT_KEYS)
    assert apply_update(updates, signed_by_zj, zj.with_x5c().sign(signed_by_zj).encode()) is None
    assert sealers.kid("SH") == encryption_kid("SH", old) and "ZJ" not in sealers
    # A kid that does not name the key is refused (an opener would pick the wrong key by it).
    record = encryption_key_statement(sh, new)
    wrong_kid = orjson.dumps({**orjson.loads(record.value), "kid": "SH:0000000000000000"},
                             option=orjson.OPT_SORT_KEYS)
    assert apply_update(updates, wrong_kid, sig_of(record)) is None

    assert record.key == b"encryption-key:SH"
    assert apply_update(updates, record.value, sig_of(record)) == encryption_kid("SH", new) == sealers.kid("SH")
    # A revoked certificate of SH announces nothing any more.
    trust.revoke(sh.thumbprint)
    newer = X25519PrivateKey.generate().public_key()
    late = encryption_key_statement(sh, newer)
    assert apply_update(updates, late.value, sig_of(late)) is None
    assert sealers.kid("SH") == encryption_kid("SH", new)


def test_a_gateway_notes_its_own_announced_key_without_sealing_to_itself(exchange: Exchange) -> None:
    sealers = PeerSealers({})
    updates = TrustUpdates(trust_of(exchange), sealers=sealers, region="SH")
    sh = Signer(load_private_key(exchange.pki.gateway_key("SH")), load_certificate(exchange.pki.gateway_cert("SH")))
    key = X25519PrivateKey.generate().public_key()
    record = encryption_key_statement(sh, key)
    assert apply_update(updates, record.value, sig_of(record)) == updates.own_kid == encryption_kid("SH", key)
    assert "SH" not in sealers


async def test_learn_certificates_adds_announced_certificates_and_no_revocation(
        exchange: Exchange, cluster: FakeCluster) -> None:
    kafka = KafkaConfig(namespace="lc")
    cluster.create(kafka.topics.trust)
    new = js_next(exchange)
    publish(cluster, certificate_statement(new, kafka.topics.trust))
    publish(cluster, revocation(root_of(exchange), new.thumbprint, "superseded", kafka.topics.trust))
    trust = trust_of(exchange)
    await learn_certificates(kafka, trust)
    assert trust.region_of(new.thumbprint) == "JS" and not trust.is_revoked(new.thumbprint)


# --- yrdx trust publish ----------------------------------------------------------------------------------------


def test_trust_publish_announces_a_certificate_or_an_encryption_key(
        exchange: Exchange, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sent: list[OutRecord] = []

    async def publish_update(kafka: KafkaConfig, record: OutRecord, timeout_s: float = 30.0) -> None:
        sent.append(record)

    monkeypatch.setattr(cli_trust, "publish_update", publish_update)
    keys = rotate_gateway_keys(exchange.pki, "JS", "cli")
    config = str(exchange.config_path("JS"))
    new_thumbprint = thumbprint_s256(load_certificate(keys.certificate))
    assert main(["trust", "publish", "--config", config, "--certificate", str(keys.certificate),
                 "--key", str(keys.private_key)]) == 0
    assert capsys.readouterr().out == f"published certificate {new_thumbprint} of JS on yrdx.trust\n"
    assert main(["trust", "publish", "--config", config, "--encryption-key", str(keys.encryption_pub)]) == 0
    kid = encryption_kid("JS", load_encryption_pub(keys.encryption_pub))
    assert capsys.readouterr().out == f"published {kid} of JS on yrdx.trust\n"
    sealers = PeerSealers({})
    updates = TrustUpdates(trust_of(exchange), sealers=sealers, region="SH")
    assert [apply_update(updates, r.value, sig_of(r)) for r in sent] == [new_thumbprint, kid]
    assert sealers.kid("JS") == kid

    # Refused at once: a certificate of another region than the config's, a key that does not belong to it.
    sh = str(exchange.config_path("SH"))
    assert main(["trust", "publish", "--config", sh, "--certificate", str(keys.certificate),
                 "--key", str(keys.private_key)]) == 2
    assert "the certificate is of JS, the config of SH" in capsys.readouterr().err
    assert main(["trust", "publish", "--config", config, "--certificate", str(keys.certificate)]) == 2
    assert "does not belong to the certificate" in capsys.readouterr().err
    assert len(sent) == 2
