"""The development PKI (gateway/dev/pki.py) and its files read back (gateway/crypto/keyfiles.py): files,
permissions, certificate contents."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from gateway.cli import main as cli_main
from gateway.crypto.jws import Signer, parse_detached, verify_detached
from gateway.crypto.keyfiles import (
    load_certificate,
    load_encryption_key,
    load_encryption_pub,
    load_private_key,
    load_signing_public_key,
)
from gateway.crypto.keys import public_key_of, same_public_key
from gateway.crypto.sm2 import SM2_WITH_SM3_OID, Sm2PrivateKey, Sm2PublicKey, sm2_verify_issued_by
from gateway.crypto.trust import TrustStore
from gateway.dev.pki import CA_NAME, PkiLayout, init_pki
from gateway.wire.regions import REGIONS


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cn(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def test_layout_paths_create_nothing(tmp_path: Path) -> None:
    layout = PkiLayout(tmp_path / "pki")
    assert layout.ca_cert == tmp_path / "pki" / "ca.crt"
    assert layout.ca_key == tmp_path / "pki" / "ca.key"
    assert layout.gateway_cert("SH") == tmp_path / "pki" / "gateways" / "sh.crt"
    assert layout.gateway_key("SH") == tmp_path / "pki" / "gateways" / "sh.key"
    assert layout.platform_key("AH") == tmp_path / "pki" / "platforms" / "ah-platform.key"
    assert layout.platform_pub("AH") == tmp_path / "pki" / "platforms" / "ah-platform.pub.pem"
    assert layout.auditor_key == tmp_path / "pki" / "auditor.key"
    assert layout.auditor_pub == tmp_path / "pki" / "auditor.pub.pem"
    assert not layout.exists()
    assert not (tmp_path / "pki").exists()


def test_init_makes_all_files(tmp_path: Path) -> None:
    layout = init_pki(tmp_path / "pki")
    assert layout == PkiLayout(tmp_path / "pki")
    files = list(layout.files())
    assert len(files) == 2 + 6 * len(REGIONS) + 2  # per region: cert, signing key, encryption key pair, platform pair
    for path in files:
        assert path.is_file() and path.stat().st_size > 0, path
    on_disk = {p for p in (tmp_path / "pki").rglob("*") if p.is_file()}
    assert on_disk == set(files)


def test_private_keys_are_0600(tmp_path: Path) -> None:
    old = os.umask(0o000)  # even with a permissive umask
    try:
        layout = init_pki(tmp_path / "pki")
    finally:
        os.umask(old)
    keys = list(layout.private_keys())
    assert len(keys) == 1 + 3 * len(REGIONS) + 1  # CA; per region signing, encryption, platform; auditor
    for path in keys:
        assert _mode(path) == 0o600, path
        assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    assert _mode(layout.ca_cert) == 0o644  # certificates and public keys are public
    assert _mode(layout.auditor_pub) == 0o644


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    layout = init_pki(tmp_path / "pki")
    before = layout.ca_cert.read_bytes()
    with pytest.raises(FileExistsError):
        init_pki(tmp_path / "pki")
    assert layout.ca_cert.read_bytes() == before
    # One leftover file is enough to refuse.
    other = tmp_path / "other"
    PkiLayout(other).auditor_key.parent.mkdir(parents=True)
    PkiLayout(other).auditor_key.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        init_pki(other)
    assert PkiLayout(other).auditor_key.read_bytes() == b"keep me"
    # force regenerates.
    init_pki(tmp_path / "pki", force=True)
    assert layout.ca_cert.read_bytes() != before
    assert all(_mode(path) == 0o600 for path in layout.private_keys())


def test_ca_certificate(tmp_path: Path) -> None:
    layout = init_pki(tmp_path / "pki")
    ca = load_certificate(layout.ca_cert)
    assert _cn(ca.subject) == CA_NAME
    assert ca.issuer == ca.subject
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    ca.verify_directly_issued_by(ca)
    assert isinstance(load_private_key(layout.ca_key), ec.EllipticCurvePrivateKey)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_gateway_certificates(tmp_path: Path, alg: str) -> None:
    layout = init_pki(tmp_path / "pki", alg=alg)
    ca = load_certificate(layout.ca_cert)
    store = TrustStore([ca])
    for region in REGIONS:
        cert = load_certificate(layout.gateway_cert(region))
        cert.verify_directly_issued_by(ca)  # raises if the CA did not sign it
        assert _cn(cert.subject) == f"yrdx gateway {region}"
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [
            f"urn:yrdx:region:{region}",
            f"urn:yrdx:gateway:{region}",
        ]
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
        key = load_private_key(layout.gateway_key(region))
        expected = ec.EllipticCurvePrivateKey if alg == "ES256" else ed25519.Ed25519PrivateKey
        assert isinstance(key, expected)
        # The key belongs to the certificate and the trust store accepts it for its region.
        signer = Signer(key, cert)
        assert signer.alg == alg and signer.kid.startswith(f"gw-{region.lower()}-")
        assert store.add_certificate(cert).region == region
        assert verify_detached(parse_detached(signer.sign(b"content")), b"content", cert.public_key())


def test_platform_and_auditor_keys(tmp_path: Path) -> None:
    layout = init_pki(tmp_path / "pki", alg="EdDSA")
    pairs = [(layout.platform_key(r), layout.platform_pub(r)) for r in REGIONS]
    pairs.append((layout.auditor_key, layout.auditor_pub))
    for key_path, pub_path in pairs:
        key = load_private_key(key_path)
        pub = load_signing_public_key(pub_path)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(pub, ec.EllipticCurvePublicKey)
        assert isinstance(key.curve, ec.SECP256R1)
        assert key.public_key().public_numbers() == pub.public_numbers()


def test_days_sets_the_validity(tmp_path: Path) -> None:
    layout = init_pki(tmp_path / "pki", days=30)
    cert = load_certificate(layout.gateway_cert("ZJ"))
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 29 <= lifetime.days <= 31


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        init_pki(tmp_path / "a", alg="RS256")
    with pytest.raises(ValueError):
        init_pki(tmp_path / "b", days=0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --- the national suite --------------------------------------------------------------------------------------


def _extensions(cert: x509.Certificate) -> list[tuple[str, bool, object]]:
    """The extensions of a certificate but the key identifiers' values: OID, criticality, value, in order."""
    key_ids = (x509.SubjectKeyIdentifier.oid, x509.AuthorityKeyIdentifier.oid)
    return [(e.oid.dotted_string, e.critical, None if e.oid in key_ids else e.value) for e in cert.extensions]


def test_sm2_pki_layout_round_trip(tmp_path: Path) -> None:
    layout = init_pki(tmp_path / "pki", alg="SM2SM3")
    files = list(layout.files())
    assert {p for p in (tmp_path / "pki").rglob("*") if p.is_file()} == set(files)
    for path in layout.private_keys():
        assert _mode(path) == 0o600, path
        assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted

    ca = load_certificate(layout.ca_cert)
    ca_key = load_private_key(layout.ca_key)
    assert isinstance(ca_key, Sm2PrivateKey)
    assert ca.signature_algorithm_oid == SM2_WITH_SM3_OID and ca.issuer == ca.subject and _cn(ca.subject) == CA_NAME
    assert sm2_verify_issued_by(ca, ca)
    assert public_key_of(ca) == ca_key.public_key()
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign

    store = TrustStore([ca])
    for region in REGIONS:
        cert = load_certificate(layout.gateway_cert(region))
        key = load_private_key(layout.gateway_key(region))
        assert isinstance(key, Sm2PrivateKey)
        assert sm2_verify_issued_by(cert, ca)
        assert same_public_key(public_key_of(cert), key.public_key())
        assert store.add_certificate(cert).region == region
        enc_key, enc_pub = load_encryption_key(layout.encryption_key(region)), load_encryption_pub(
            layout.encryption_pub(region)
        )
        assert isinstance(enc_key, Sm2PrivateKey) and isinstance(enc_pub, Sm2PublicKey)
        assert enc_key.public_key() == enc_pub != key.public_key()  # a separate key for encryption
    # Platforms and the auditor sign HTTP JWTs (ES256, pyjwt): P-256 in every suite.
    for key_path, pub_path in [(layout.platform_key(r), layout.platform_pub(r)) for r in REGIONS] + [
        (layout.auditor_key, layout.auditor_pub)
    ]:
        key, pub = load_private_key(key_path), load_signing_public_key(pub_path)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
        assert isinstance(pub, ec.EllipticCurvePublicKey) and key.public_key().public_numbers() == pub.public_numbers()


def test_sm2_certificates_have_the_es256_layout(tmp_path: Path) -> None:
    es = init_pki(tmp_path / "es", alg="ES256")
    sm = init_pki(tmp_path / "sm", alg="SM2SM3")
    for es_path, sm_path in [(es.ca_cert, sm.ca_cert), (es.gateway_cert("ZJ"), sm.gateway_cert("ZJ"))]:
        a, b = load_certificate(es_path), load_certificate(sm_path)
        assert a.subject == b.subject and a.issuer == b.issuer and a.version == b.version
        assert a.not_valid_after_utc - a.not_valid_before_utc == b.not_valid_after_utc - b.not_valid_before_utc
        assert _extensions(a) == _extensions(b)
    gateway = load_certificate(sm.gateway_cert("ZJ"))
    aki = gateway.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    ski = load_certificate(sm.ca_cert).extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert aki == ski


def test_es256_pki_keeps_x25519_encryption_keys(tmp_path: Path) -> None:
    layout = init_pki(tmp_path / "pki")
    assert isinstance(load_encryption_key(layout.encryption_key("SH")), X25519PrivateKey)
    assert isinstance(load_encryption_pub(layout.encryption_pub("SH")), X25519PublicKey)
    with pytest.raises(TypeError):
        load_encryption_key(layout.gateway_key("SH"))  # a P-256 signing key is no encryption key
    with pytest.raises(TypeError):
        load_private_key(layout.encryption_key("SH"))  # nor an X25519 key a signing key


def test_sm2_keys_are_refused_where_another_type_is_expected(tmp_path: Path) -> None:
    layout = init_pki(tmp_path / "pki", alg="SM2SM3")
    with pytest.raises(TypeError):
        load_encryption_key(layout.platform_key("SH"))
    with pytest.raises(TypeError):
        load_encryption_pub(layout.auditor_pub)
    bogus = tmp_path / "bogus.pem"
    bogus.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError):
        load_private_key(bogus)


def test_cli_certs_init_takes_sm2sm3(tmp_path: Path) -> None:
    assert cli_main(["certs", "init", "--dir", str(tmp_path / "pki"), "--alg", "SM2SM3"]) == 0
    layout = PkiLayout(tmp_path / "pki")
    assert isinstance(load_private_key(layout.gateway_key("AH")), Sm2PrivateKey)
    assert sm2_verify_issued_by(load_certificate(layout.gateway_cert("AH")), load_certificate(layout.ca_cert))
