"""The development PKI: files, permissions, certificate contents."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.crypto.jws import Signer, parse_detached, verify_detached
from gateway.crypto.pki import (
    CA_NAME,
    PkiLayout,
    init_pki,
    load_certificate,
    load_private_key,
    load_public_key,
)
from gateway.crypto.trust import TrustStore
from gateway.regions import REGIONS


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
        pub = load_public_key(pub_path)
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
