"""The trust store: which gateway certificates may sign, with the development PKI's real root."""

from __future__ import annotations

import base64
import datetime as dt
import pickle
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.crypto.jws import Signer, parse_detached, thumbprint_s256, verify_detached
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.crypto.keys import PrivateKey
from gateway.crypto.sm2 import Sm2PrivateKey, Sm2PublicKey, sm2_sign, sm2_verify
from gateway.crypto.trust import TrustedSigner, TrustError, TrustStore
from gateway.dev.pki import CA_NAME, PkiLayout, init_pki, issue_gateway_cert, make_ca
from gateway.wire.regions import REGIONS


def now() -> dt.datetime:
    """This moment, read per test: a module-level constant goes stale in a long run, older than the
    certificates the fixtures issue later (backdated by only a few minutes)."""
    return dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
CONTENT = b'{"id":"x","type":"medical.settlement.request","from":"JS","to":"SH","payload":{}}'


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def root(pki: PkiLayout) -> tuple[x509.Certificate, PrivateKey]:
    return load_certificate(pki.ca_cert), load_private_key(pki.ca_key)


@pytest.fixture
def store(pki: PkiLayout) -> TrustStore:
    return TrustStore.from_files([pki.ca_cert], [pki.gateway_cert(region) for region in REGIONS])


def header_for(cert: x509.Certificate, *, x5c: bool = False) -> dict[str, object]:
    header: dict[str, object] = {"alg": "ES256", "kid": "k", "x5t#S256": thumbprint_s256(cert)}
    if x5c:
        header["x5c"] = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    return header


def expect(code: str, store: TrustStore, header: dict[str, object], at: dt.datetime | None = None) -> TrustError:
    with pytest.raises(TrustError) as info:
        store.signer(header, at or now())
    assert info.value.code == code, info.value
    return info.value


# --- trusted ------------------------------------------------------------------------------------------------


def test_js_gateway_of_the_real_root_is_trusted(pki: PkiLayout, store: TrustStore) -> None:
    cert = load_certificate(pki.gateway_cert("JS"))
    signer = store.signer(header_for(cert), now())
    assert isinstance(signer, TrustedSigner)
    assert signer.region == "JS"
    assert signer.thumbprint == thumbprint_s256(cert)
    assert signer.subject == cert.subject.rfc4514_string() and "yrdx gateway JS" in signer.subject
    assert signer.not_before <= now() <= signer.not_after
    assert store.region_of(signer.thumbprint) == "JS"
    assert sorted(s.region for s in store.known()) == sorted(REGIONS)


def test_end_to_end_sign_lookup_verify(pki: PkiLayout, store: TrustStore) -> None:
    signer = Signer(load_private_key(pki.gateway_key("JS")), load_certificate(pki.gateway_cert("JS")))
    parsed = parse_detached(signer.sign(CONTENT))
    trusted = store.signer(parsed.header, now())
    assert trusted.region == "JS"
    assert verify_detached(parsed, CONTENT, trusted.public_key)
    # Another region's key does not verify a JS signature.
    other = store.signer(header_for(load_certificate(pki.gateway_cert("SH"))), now())
    assert not verify_detached(parsed, CONTENT, other.public_key)


def test_add_certificate_is_idempotent(root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([root[0]])
    cert, _ = issue_gateway_cert(*root, "ZJ")
    first = store.add_certificate(cert)
    assert store.add_certificate(cert) is first
    assert store.known() == [first]
    assert store.certificate(first.thumbprint) == cert


def test_eddsa_gateway_certificate_is_trusted(root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([root[0]])
    cert, key = issue_gateway_cert(*root, "AH", alg="EdDSA")
    parsed = parse_detached(Signer(key, cert).sign(CONTENT))
    trusted = store.signer({**parsed.header, "x5c": header_for(cert, x5c=True)["x5c"]}, now())
    assert trusted.region == "AH"
    assert verify_detached(parsed, CONTENT, trusted.public_key)


def test_unknown_certificate_with_valid_x5c_is_learned(root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([root[0]])
    cert, key = issue_gateway_cert(*root, "SH")
    parsed = parse_detached(Signer(key, cert, include_x5c=True).sign(CONTENT))
    assert store.signer(parsed.header, now()).region == "SH"
    # Learned once: later messages need no x5c.
    assert store.signer(header_for(cert), now()).region == "SH"


# --- untrusted ----------------------------------------------------------------------------------------------


def test_certificate_of_another_ca_is_untrusted(root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([root[0]])
    rogue_ca = make_ca("rogue CA")
    cert, _ = issue_gateway_cert(*rogue_ca, "JS")
    with pytest.raises(TrustError) as info:
        store.add_certificate(cert)
    assert info.value.code == "untrusted_signer"
    expect("untrusted_signer", store, header_for(cert, x5c=True))
    assert store.known() == []


def test_another_ca_with_the_same_name_is_untrusted(root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([root[0]])
    impostor = make_ca(str(root[0].subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value))
    assert impostor[0].subject == root[0].subject
    cert, _ = issue_gateway_cert(*impostor, "JS")
    expect("untrusted_signer", store, header_for(cert, x5c=True))


def test_expired_certificate(root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([root[0]])
    cert, _ = issue_gateway_cert(*root, "JS", not_before=now() - 10 * DAY, not_after=now() - DAY)
    store.add_certificate(cert)
    expect("certificate_expired", store, header_for(cert))


def test_not_yet_valid_certificate(root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([root[0]])
    cert, _ = issue_gateway_cert(*root, "JS", not_before=now() + DAY, not_after=now() + 10 * DAY)
    store.add_certificate(cert)
    expect("certificate_not_yet_valid", store, header_for(cert))
    assert store.signer(header_for(cert), now() + 2 * DAY).region == "JS"


def test_certificate_outliving_its_root_expires_with_it(root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([root[0]])
    cert, _ = issue_gateway_cert(*root, "JS", days=10 * 365)
    signer = store.add_certificate(cert)
    assert signer.not_after == root[0].not_valid_after_utc
    expect("certificate_expired", store, header_for(cert), at=root[0].not_valid_after_utc + DAY)


def test_revoked_certificate(pki: PkiLayout, store: TrustStore) -> None:
    cert = load_certificate(pki.gateway_cert("JS"))
    store.revoke(thumbprint_s256(cert))
    assert store.is_revoked(thumbprint_s256(cert))
    expect("certificate_revoked", store, header_for(cert))
    # Other regions are unaffected.
    assert store.signer(header_for(load_certificate(pki.gateway_cert("SH"))), now()).region == "SH"


def test_revoked_before_it_is_seen(root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([root[0]])
    cert, _ = issue_gateway_cert(*root, "JS")
    store.revoke(thumbprint_s256(cert))
    expect("certificate_revoked", store, header_for(cert, x5c=True))


def test_unknown_thumbprint_without_x5c(root: tuple[x509.Certificate, PrivateKey], store: TrustStore) -> None:
    cert, _ = issue_gateway_cert(*root, "JS")  # a perfectly good certificate, just never presented
    error = expect("untrusted_signer", store, header_for(cert))
    assert error.detail == f"unknown certificate {thumbprint_s256(cert)}"
    assert store.region_of(thumbprint_s256(cert)) is None


def test_x5c_thumbprint_mismatch(root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([root[0]])
    claimed, _ = issue_gateway_cert(*root, "JS")
    presented, _ = issue_gateway_cert(*root, "JS")
    header = {**header_for(claimed), "x5c": header_for(presented, x5c=True)["x5c"]}
    expect("untrusted_signer", store, header)
    assert store.known() == []


@pytest.mark.parametrize(
    "x5c", [[], "not a list", [7], ["!!not base64!!"], [base64.b64encode(b"not a certificate").decode()]]
)
def test_malformed_x5c(root: tuple[x509.Certificate, PrivateKey], x5c: object) -> None:
    store = TrustStore([root[0]])
    cert, _ = issue_gateway_cert(*root, "JS")
    expect("untrusted_signer", store, {**header_for(cert), "x5c": x5c})


def test_header_without_thumbprint(store: TrustStore) -> None:
    expect("untrusted_signer", store, {"alg": "ES256", "kid": "k"})


def test_unknown_region_is_untrusted(root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([root[0]])
    cert, _ = issue_gateway_cert(*root, "XX")
    with pytest.raises(TrustError) as info:
        store.add_certificate(cert)
    assert info.value.code == "untrusted_signer"


def test_the_ca_itself_is_not_a_gateway(root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([root[0]])
    with pytest.raises(TrustError) as info:
        store.add_certificate(root[0])
    assert info.value.code == "untrusted_signer"


def _custom_cert(
    root: tuple[x509.Certificate, PrivateKey], uris: list[str], *, ca: bool = False
) -> x509.Certificate:
    ca_cert, ca_key = root
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "custom")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - DAY)
        .not_valid_after(now() + DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False
        )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    return builder.sign(ca_key, hashes.SHA256())


@pytest.mark.parametrize(
    ("uris", "ca"),
    [
        ([], False),  # no SAN at all
        (["urn:yrdx:gateway:JS"], False),  # no region SAN
        (["urn:yrdx:region:JS", "urn:yrdx:region:SH"], False),  # two regions
        (["urn:yrdx:region:js"], False),  # region codes are upper case
        (["urn:yrdx:region:JS"], True),  # a CA certificate
    ],
)
def test_not_a_gateway_certificate(
    root: tuple[x509.Certificate, PrivateKey], uris: list[str], ca: bool
) -> None:
    store = TrustStore([root[0]])
    cert = _custom_cert(root, uris, ca=ca)
    with pytest.raises(TrustError) as info:
        store.add_certificate(cert)
    assert info.value.code == "untrusted_signer"


def test_custom_certificate_with_one_region_is_trusted(root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([root[0]])
    assert store.add_certificate(_custom_cert(root, ["urn:yrdx:region:ZJ"])).region == "ZJ"


# --- construction -------------------------------------------------------------------------------------------


def test_from_files_rejects_a_bad_gateway_certificate(pki: PkiLayout, tmp_path: Path) -> None:
    rogue, _ = issue_gateway_cert(*make_ca("rogue CA"), "JS")
    path = tmp_path / "rogue.crt"
    path.write_bytes(rogue.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(TrustError):
        TrustStore.from_files([pki.ca_cert], [path])


def test_root_must_be_a_ca(pki: PkiLayout) -> None:
    with pytest.raises(ValueError):
        TrustStore([load_certificate(pki.gateway_cert("JS"))])


def test_trust_error_carries_code_and_detail() -> None:
    error = TrustError("certificate_revoked", "certificate abc is revoked")
    assert str(error) == "certificate_revoked: certificate abc is revoked"
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert (copy.code, copy.detail) == (error.code, error.detail)


# --- the national suite (SM2 roots and gateway certificates) -------------------------------------------------


@pytest.fixture(scope="module")
def sm2_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("sm2-pki"), alg="SM2SM3")


@pytest.fixture(scope="module")
def sm2_root(sm2_pki: PkiLayout) -> tuple[x509.Certificate, PrivateKey]:
    return load_certificate(sm2_pki.ca_cert), load_private_key(sm2_pki.ca_key)


def test_sm2_gateways_of_the_sm2_root_are_trusted(sm2_pki: PkiLayout) -> None:
    store = TrustStore.from_files([sm2_pki.ca_cert], [sm2_pki.gateway_cert(region) for region in REGIONS])
    assert sorted(s.region for s in store.known()) == sorted(REGIONS)
    cert = load_certificate(sm2_pki.gateway_cert("JS"))
    key = load_private_key(sm2_pki.gateway_key("JS"))
    assert isinstance(key, Sm2PrivateKey)
    signer = store.signer(header_for(cert), now())
    assert signer.region == "JS" and isinstance(signer.public_key, Sm2PublicKey)
    assert signer.public_key == key.public_key()
    # The trusted key verifies the gateway's SM2 signatures and no other gateway's.
    signature = sm2_sign(key, CONTENT)
    assert sm2_verify(signer.public_key, signature, CONTENT)
    other = store.signer(header_for(load_certificate(sm2_pki.gateway_cert("SH"))), now())
    assert not sm2_verify(other.public_key, signature, CONTENT)


def test_sm2_certificate_learned_from_x5c(sm2_root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([sm2_root[0]])
    cert, _ = issue_gateway_cert(*sm2_root, "AH", alg="SM2SM3")
    assert store.signer(header_for(cert, x5c=True), now()).region == "AH"
    assert store.signer(header_for(cert), now()).region == "AH"


def test_sm2_certificate_of_another_sm2_root_is_untrusted(sm2_root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([sm2_root[0]])
    for name in ("rogue SM2 CA", CA_NAME):  # another name, and an impostor with the root's very name
        rogue = make_ca(name, alg="SM2SM3")
        cert, _ = issue_gateway_cert(*rogue, "JS", alg="SM2SM3")
        with pytest.raises(TrustError) as info:
            store.add_certificate(cert)
        assert info.value.code == "untrusted_signer"
        expect("untrusted_signer", store, header_for(cert, x5c=True))
    assert store.known() == []


def test_expired_and_not_yet_valid_sm2_certificates(sm2_root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([sm2_root[0]])
    expired, _ = issue_gateway_cert(*sm2_root, "JS", alg="SM2SM3", not_before=now() - 10 * DAY, not_after=now() - DAY)
    store.add_certificate(expired)
    expect("certificate_expired", store, header_for(expired))
    future, _ = issue_gateway_cert(*sm2_root, "JS", alg="SM2SM3", not_before=now() + DAY, not_after=now() + 10 * DAY)
    store.add_certificate(future)
    expect("certificate_not_yet_valid", store, header_for(future))
    assert store.signer(header_for(future), now() + 2 * DAY).region == "JS"


def test_revoked_sm2_certificate(sm2_pki: PkiLayout) -> None:
    store = TrustStore.from_files([sm2_pki.ca_cert], [sm2_pki.gateway_cert("ZJ")])
    cert = load_certificate(sm2_pki.gateway_cert("ZJ"))
    store.revoke(thumbprint_s256(cert))
    expect("certificate_revoked", store, header_for(cert))


def test_sm2_root_is_not_a_gateway(sm2_root: tuple[x509.Certificate, PrivateKey]) -> None:
    store = TrustStore([sm2_root[0]])
    with pytest.raises(TrustError) as info:
        store.add_certificate(sm2_root[0])
    assert info.value.code == "untrusted_signer"


def test_mixed_store_trusts_both_suites(
    pki: PkiLayout, sm2_pki: PkiLayout, root: tuple[x509.Certificate, PrivateKey],
    sm2_root: tuple[x509.Certificate, PrivateKey],
) -> None:
    # Both development roots carry the same name (CA_NAME), so every certificate meets a root of the other suite
    # with a matching issuer name first or second: each must be checked with its own root's algorithm.
    assert root[0].subject == sm2_root[0].subject
    for roots in ([pki.ca_cert, sm2_pki.ca_cert], [sm2_pki.ca_cert, pki.ca_cert]):
        store = TrustStore.from_files(
            roots, [pki.gateway_cert("SH"), sm2_pki.gateway_cert("JS"), sm2_pki.gateway_cert("AH")]
        )
        es = store.signer(header_for(load_certificate(pki.gateway_cert("SH"))), now())
        sm = store.signer(header_for(load_certificate(sm2_pki.gateway_cert("JS"))), now())
        assert (es.region, sm.region) == ("SH", "JS")
        assert not isinstance(es.public_key, Sm2PublicKey) and isinstance(sm.public_key, Sm2PublicKey)
        # A certificate neither root issued stays untrusted, whatever its suite.
        for rogue_alg in ("ES256", "SM2SM3"):
            rogue, _ = issue_gateway_cert(*make_ca(CA_NAME, alg=rogue_alg), "ZJ", alg=rogue_alg)
            expect("untrusted_signer", store, header_for(rogue, x5c=True))


def test_cross_suite_certificates(
    root: tuple[x509.Certificate, PrivateKey], sm2_root: tuple[x509.Certificate, PrivateKey]
) -> None:
    # A P-256 root certifying an SM2 gateway key, and an SM2 root certifying a P-256 one.
    sm2_leaf, sm2_key = issue_gateway_cert(*root, "SH", alg="SM2SM3")
    es_leaf, es_key = issue_gateway_cert(*sm2_root, "JS", alg="ES256")
    store = TrustStore([root[0], sm2_root[0]])
    assert store.add_certificate(sm2_leaf).public_key == sm2_key.public_key()
    assert store.add_certificate(es_leaf).region == "JS"
    assert TrustStore([root[0]]).add_certificate(sm2_leaf).region == "SH"
    with pytest.raises(TrustError):
        TrustStore([root[0]]).add_certificate(es_leaf)
    with pytest.raises(TrustError):
        TrustStore([sm2_root[0]]).add_certificate(sm2_leaf)
