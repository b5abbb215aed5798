"""SM2 primitives (gateway/crypto/sm2.py): the GM/T 0003.5 examples, interop with gmssl and openssl, refusals,
and SM2 certificates that cryptography loads and openssl verifies."""

from __future__ import annotations

import hashlib
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from gmssl import sm2 as gmssl_sm2

from gateway.crypto import sm2
from gateway.crypto.keys import (
    alg_of_private_key,
    alg_of_public_key,
    generate_private_key,
    public_key_of,
    same_public_key,
)
from gateway.crypto.sm2 import (
    SM2_WITH_SM3_OID,
    Sm2Error,
    Sm2PrivateKey,
    Sm2PublicKey,
    derive_sm2_key,
    generate_sm2_key,
    is_sm2_certificate,
    is_sm2_key,
    load_sm2_private_key,
    load_sm2_public_key,
    sm2_decrypt,
    sm2_encrypt,
    sm2_public_key_from_point,
    sm2_public_key_of,
    sm2_sign,
    sm2_verify,
    sm2_verify_issued_by,
)
from gateway.dev.pki import issue_gateway_cert, make_ca

# GM/T 0003.5-2012 (GB/T 32918.5) examples on the recommended curve, default signer ID "1234567812345678":
# the key pair, the signature of "message digest" with nonce K, the encryption of "encryption standard" with K.
D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
PUBLIC_POINT = bytes.fromhex(
    "04"
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
K = 0x59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21
R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
CIPHERTEXT = bytes.fromhex(
    "04"
    "04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73"  # C1 x
    "E858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0"  # C1 y
    "59983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766"  # C3
    "21886CA989CA9C7D58087307CA93092D651EFA"  # C2
)
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
DATA = b'{"id":"x","type":"medical.settlement.request","from":"JS","to":"SH","payload":{}}'


def _gmssl(key: Sm2PrivateKey | Sm2PublicKey, mode: int = 1) -> gmssl_sm2.CryptSM2:
    public = key.public_key() if isinstance(key, Sm2PrivateKey) else key
    private = f"{key._scalar():064x}" if isinstance(key, Sm2PrivateKey) else ""
    crypt = gmssl_sm2.CryptSM2(private_key=private, public_key="", mode=mode)
    crypt.public_key = public.point()[1:].hex()  # set directly: the constructor lstrip("04")s x's leading digits
    return crypt


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- the standard's examples -------------------------------------------------------------------------------


def test_standard_key_pair() -> None:
    key = derive_sm2_key(D)
    assert key.public_key().point() == PUBLIC_POINT
    assert key.public_key() == sm2_public_key_from_point(PUBLIC_POINT)


def test_standard_signature_verifies_with_the_default_id() -> None:
    public = sm2_public_key_from_point(PUBLIC_POINT)
    signature = encode_dss_signature(R, S)
    assert sm2_verify(public, signature, b"message digest")
    assert not sm2_verify(public, signature, b"message digesT")
    assert not sm2_verify(public, encode_dss_signature(R, S ^ 1), b"message digest")


def test_gmssl_reproduces_the_standard_signature() -> None:
    # The reference used for the cross-checks below signs as the standard does with its nonce K.
    assert _gmssl(derive_sm2_key(D)).sign_with_sm3(b"message digest", f"{K:064x}") == f"{R:064x}{S:064x}"


def test_standard_ciphertext() -> None:
    key = derive_sm2_key(D)
    assert sm2._encrypt_with(key.public_key(), b"encryption standard", K) == CIPHERTEXT
    assert sm2_decrypt(key, CIPHERTEXT) == b"encryption standard"


# --- signatures --------------------------------------------------------------------------------------------


def test_sign_verify_round_trip_and_der_encoding() -> None:
    key = generate_sm2_key()
    signature = sm2_sign(key, DATA)
    assert 68 <= len(signature) <= 72 and signature[0] == 0x30
    r, s = decode_dss_signature(signature)
    assert 0 < r < N and 0 < s < N
    assert sm2_verify(key.public_key(), signature, DATA)
    assert key.sign(DATA) != signature  # randomized nonce
    assert sm2_verify(key.public_key(), key.sign(DATA), DATA)


def test_gmssl_verifies_our_signature() -> None:
    key = generate_sm2_key()
    r, s = decode_dss_signature(sm2_sign(key, DATA))
    assert _gmssl(key.public_key()).verify_with_sm3(f"{r:064x}{s:064x}", DATA)
    assert not _gmssl(key.public_key()).verify_with_sm3(f"{r:064x}{s:064x}", DATA + b" ")


def test_we_verify_gmssls_signature() -> None:
    key = generate_sm2_key()
    raw = _gmssl(key).sign_with_sm3(DATA, secrets.token_hex(32))
    signature = encode_dss_signature(int(raw[:64], 16), int(raw[64:], 16))
    assert sm2_verify(key.public_key(), signature, DATA)
    assert not sm2_verify(key.public_key(), signature, DATA[:-1])


@pytest.mark.parametrize("index", [0, 1, 4, 20, 40, -1])
def test_a_flipped_signature_byte_fails(index: int) -> None:
    key = generate_sm2_key()
    signature = sm2_sign(key, DATA)
    assert not sm2_verify(key.public_key(), _flip(signature, index % len(signature)), DATA)


@pytest.mark.parametrize("index", [0, 10, len(DATA) - 1])
def test_a_flipped_content_byte_fails(index: int) -> None:
    key = generate_sm2_key()
    assert not sm2_verify(key.public_key(), sm2_sign(key, DATA), _flip(DATA, index))


def test_another_key_fails() -> None:
    signature = sm2_sign(generate_sm2_key(), DATA)
    assert not sm2_verify(generate_sm2_key().public_key(), signature, DATA)


def _malformed(signature: bytes) -> list[bytes]:
    r, s = decode_dss_signature(signature)
    return [
        b"",
        b"\x30\x00",
        signature[:-1],
        signature + b"\x00",
        signature[:1] + bytes([signature[1] + 1]) + signature[2:] + b"\x00",  # length covers a trailing byte
        r.to_bytes(32, "big") + s.to_bytes(32, "big"),  # raw r || s is not the fixed encoding
        encode_dss_signature(0, s),
        encode_dss_signature(r, 0),
        encode_dss_signature(N, s),
        encode_dss_signature(r + N, s),
        # r with a superfluous leading zero (BER, not DER)
        b"\x30" + bytes([len(signature) - 1]) + b"\x02" + bytes([signature[3] + 1]) + b"\x00" + signature[4:],
        b"x" * 71,
    ]


def test_malformed_signatures_return_false_and_never_raise() -> None:
    key = generate_sm2_key()
    signature = sm2_sign(key, DATA)
    for bad in _malformed(signature):
        assert not sm2_verify(key.public_key(), bad, DATA), bad.hex()
    # Still usable afterwards (no error left on a queue).
    assert sm2_verify(key.public_key(), signature, DATA)


def test_verify_with_a_key_of_another_type_is_false() -> None:
    key = generate_sm2_key()
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not sm2_verify(p256, sm2_sign(key, DATA), DATA)  # type: ignore[arg-type]


# --- encryption --------------------------------------------------------------------------------------------


def test_encrypt_decrypt_round_trip() -> None:
    key = generate_sm2_key()
    for plaintext in (b"\x00", bytes(16), secrets.token_bytes(16), secrets.token_bytes(100)):
        ciphertext = sm2_encrypt(key.public_key(), plaintext)
        assert len(ciphertext) == 65 + 32 + len(plaintext) and ciphertext[0] == 4
        assert sm2_decrypt(key, ciphertext) == plaintext
    assert sm2_encrypt(key.public_key(), b"same") != sm2_encrypt(key.public_key(), b"same")  # fresh k


def test_gmssl_decrypts_ours() -> None:
    key = generate_sm2_key()
    plaintext = secrets.token_bytes(16)
    ciphertext = sm2_encrypt(key.public_key(), plaintext)
    assert _gmssl(key, mode=1).decrypt(ciphertext[1:]) == plaintext  # gmssl's C1 has no 04 byte


def test_we_decrypt_gmssls() -> None:
    key = generate_sm2_key()
    plaintext = secrets.token_bytes(16)
    assert sm2_decrypt(key, b"\x04" + _gmssl(key.public_key(), mode=1).encrypt(plaintext)) == plaintext


@pytest.mark.parametrize("index", [1, 40, 64, 65, 80, 96, 97, 112])  # C1 x, C1 y, C3, C2
def test_tampered_ciphertext_is_refused(index: int) -> None:
    key = generate_sm2_key()
    ciphertext = sm2_encrypt(key.public_key(), secrets.token_bytes(16))
    with pytest.raises(Sm2Error):
        sm2_decrypt(key, _flip(ciphertext, index))


def test_another_key_cannot_decrypt() -> None:
    ciphertext = sm2_encrypt(generate_sm2_key().public_key(), secrets.token_bytes(16))
    with pytest.raises(Sm2Error):
        sm2_decrypt(generate_sm2_key(), ciphertext)


@pytest.mark.parametrize(
    "ciphertext",
    [b"", b"\x04", CIPHERTEXT[:97], b"\x02" + CIPHERTEXT[1:], CIPHERTEXT[1:], b"\x04" + bytes(64) + CIPHERTEXT[65:]],
)
def test_malformed_ciphertext_is_refused(ciphertext: bytes) -> None:
    with pytest.raises(Sm2Error) as info:
        sm2_decrypt(derive_sm2_key(D), ciphertext)
    assert isinstance(info.value, ValueError)


def test_empty_plaintext_and_wrong_key_types() -> None:
    key = generate_sm2_key()
    with pytest.raises(ValueError):
        sm2_encrypt(key.public_key(), b"")
    with pytest.raises(TypeError):
        sm2_encrypt(ec.generate_private_key(ec.SECP256R1()).public_key(), b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sm2_decrypt(ec.generate_private_key(ec.SECP256R1()), CIPHERTEXT)  # type: ignore[arg-type]


# --- keys --------------------------------------------------------------------------------------------------


def test_key_serialization_round_trips() -> None:
    key = generate_sm2_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_sm2_private_key(pem)
    assert loaded.public_key() == key.public_key()
    assert sm2_verify(key.public_key(), sm2_sign(loaded, DATA), DATA)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert load_sm2_private_key(der).public_key() == key.public_key()
    encrypted = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    assert load_sm2_private_key(encrypted, b"pw").public_key() == key.public_key()

    public = key.public_key()
    spki_der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    spki_pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert len(spki_der) == 91
    assert load_sm2_public_key(spki_der) == load_sm2_public_key(spki_pem) == public
    assert hash(load_sm2_public_key(spki_der)) == hash(public)
    point = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert point == public.point()
    assert public != generate_sm2_key().public_key()


def test_loaders_refuse_other_key_types() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = p256.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError):
        load_sm2_private_key(pkcs8)
    with pytest.raises(ValueError):
        load_sm2_public_key(
            p256.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    with pytest.raises(ValueError):
        load_sm2_public_key(b"not a key")
    with pytest.raises(ValueError):
        sm2_public_key_from_point(b"\x04" + bytes(64))  # not on the curve
    with pytest.raises(ValueError):
        derive_sm2_key(0)


def test_key_helpers_know_sm2() -> None:
    key = generate_private_key("SM2SM3")
    assert isinstance(key, Sm2PrivateKey) and is_sm2_key(key) and is_sm2_key(key.public_key())
    assert not is_sm2_key(ec.generate_private_key(ec.SECP256R1()))
    assert alg_of_private_key(key) == "SM2SM3" and alg_of_public_key(key.public_key()) == "SM2SM3"
    assert same_public_key(key.public_key(), key.public_key())
    assert not same_public_key(key.public_key(), ec.generate_private_key(ec.SECP256R1()).public_key())


# --- certificates ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sm2_root() -> tuple[x509.Certificate, Sm2PrivateKey]:
    cert, key = make_ca("sm2 test root", alg="SM2SM3")
    assert isinstance(key, Sm2PrivateKey)
    return cert, key


def test_sm2_certificates_load_with_cryptography(sm2_root: tuple[x509.Certificate, Sm2PrivateKey]) -> None:
    ca, ca_key = sm2_root
    cert, key = issue_gateway_cert(ca, ca_key, "SH", alg="SM2SM3")
    again = x509.load_pem_x509_certificate(cert.public_bytes(serialization.Encoding.PEM))
    assert again == cert and again.version == x509.Version.v3
    assert cert.signature_algorithm_oid == SM2_WITH_SM3_OID
    assert cert.issuer == ca.subject
    with pytest.raises(UnsupportedAlgorithm):
        cert.public_key()
    assert is_sm2_certificate(cert) and is_sm2_certificate(ca)
    assert sm2_public_key_of(cert) == public_key_of(cert) == key.public_key()
    # Key identifiers as RFC 5280 method (1), the authority's matching the root's subject key identifier.
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert ski == hashlib.sha1(key.public_key().point()).digest()
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki == ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def test_issued_by(sm2_root: tuple[x509.Certificate, Sm2PrivateKey]) -> None:
    ca, ca_key = sm2_root
    cert, _ = issue_gateway_cert(ca, ca_key, "JS", alg="SM2SM3")
    assert sm2_verify_issued_by(cert, ca)
    assert sm2_verify_issued_by(ca, ca)  # self-signed
    assert not sm2_verify_issued_by(ca, cert)
    # Another SM2 root with the very same name did not sign it.
    impostor, impostor_key = make_ca("sm2 test root", alg="SM2SM3")
    assert impostor.subject == ca.subject
    assert not sm2_verify_issued_by(cert, impostor)
    forged, _ = issue_gateway_cert(impostor, impostor_key, "JS", alg="SM2SM3")
    assert not sm2_verify_issued_by(forged, ca)


def test_a_changed_tbs_byte_breaks_the_signature(sm2_root: tuple[x509.Certificate, Sm2PrivateKey]) -> None:
    ca, ca_key = sm2_root
    cert, _ = issue_gateway_cert(ca, ca_key, "JS", alg="SM2SM3")
    der = cert.public_bytes(serialization.Encoding.DER)
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8, "big")
    at = der.index(serial) + len(serial) - 1  # the last byte of the serial number, inside the TBSCertificate
    tampered = x509.load_der_x509_certificate(_flip(der, at))
    assert tampered.serial_number != cert.serial_number
    assert not sm2_verify_issued_by(tampered, ca)


def test_mixed_suites(sm2_root: tuple[x509.Certificate, Sm2PrivateKey]) -> None:
    # A P-256 root may certify an SM2 key, and an SM2 root a P-256 key.
    es_root, es_key = make_ca("p256 root")
    sm2_leaf, sm2_leaf_key = issue_gateway_cert(es_root, es_key, "ZJ", alg="SM2SM3")
    sm2_leaf.verify_directly_issued_by(es_root)
    assert public_key_of(sm2_leaf) == sm2_leaf_key.public_key()
    es_leaf, es_leaf_key = issue_gateway_cert(*sm2_root, "ZJ")
    assert sm2_verify_issued_by(es_leaf, sm2_root[0])
    assert same_public_key(public_key_of(es_leaf), es_leaf_key.public_key())
    assert not sm2_verify_issued_by(sm2_leaf, sm2_root[0])  # ecdsa-with-SHA256, not SM2-with-SM3
    assert not sm2_verify_issued_by(es_leaf, es_root)


def test_sm2_public_key_of_a_p256_certificate_is_a_type_error() -> None:
    cert, _ = make_ca("p256 root")
    assert not is_sm2_certificate(cert)
    with pytest.raises(TypeError):
        sm2_public_key_of(cert)


# --- openssl as an independent implementation --------------------------------------------------------------


def _openssl_sm2() -> bool:
    if shutil.which("openssl") is None:
        return False
    curves = subprocess.run(["openssl", "ecparam", "-list_curves"], capture_output=True, text=True, check=False)
    return "SM2" in curves.stdout


needs_openssl = pytest.mark.skipif(not _openssl_sm2(), reason="no openssl with SM2 on this machine")
# Our SM2 signatures, certificates included, use the standard default signer ID (GM/T 0009, GM/T 0015), as
# Tongsuo, GmSSL and gmssl do. openssl 3.0 defaults to an empty ID (measured with 3.0.19), so it is told the ID:
# `-pkeyopt`/`-vfyopt distid:...`. In `openssl verify` that option reaches only the certificate being verified,
# so openssl cannot check a root's self-signature there (-check_ss_sig); the root is checked with pkeyutl.
DISTID = "distid:1234567812345678"


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def _pem(path: Path, cert: x509.Certificate) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


@needs_openssl
def test_openssl_verifies_the_sm2_chain(tmp_path: Path, sm2_root: tuple[x509.Certificate, Sm2PrivateKey]) -> None:
    ca, ca_key = sm2_root
    cert, _ = issue_gateway_cert(ca, ca_key, "AH", alg="SM2SM3")
    ca_file, cert_file = _pem(tmp_path / "ca.pem", ca), _pem(tmp_path / "gw.pem", cert)
    ok = _openssl("verify", "-vfyopt", DISTID, "-CAfile", ca_file, cert_file)
    assert ok.returncode == 0 and ok.stdout.strip().endswith(": OK"), ok.stderr
    text = _openssl("x509", "-in", cert_file, "-noout", "-text").stdout
    assert "Signature Algorithm: SM2-with-SM3" in text and "ASN1 OID: SM2" in text
    assert "URI:urn:yrdx:region:AH" in text

    impostor, impostor_key = make_ca("sm2 test root", alg="SM2SM3")
    forged, _ = issue_gateway_cert(impostor, impostor_key, "AH", alg="SM2SM3")
    bad = _openssl("verify", "-vfyopt", DISTID, "-CAfile", ca_file, _pem(tmp_path / "forged.pem", forged))
    assert bad.returncode != 0


@needs_openssl
def test_openssl_verifies_the_roots_self_signature(
    tmp_path: Path, sm2_root: tuple[x509.Certificate, Sm2PrivateKey]
) -> None:
    ca, _ = sm2_root
    pub = _openssl("x509", "-in", _pem(tmp_path / "ca.pem", ca), "-noout", "-pubkey")
    assert pub.returncode == 0, pub.stderr
    (tmp_path / "ca.pub").write_text(pub.stdout)
    (tmp_path / "tbs").write_bytes(ca.tbs_certificate_bytes)
    (tmp_path / "sig").write_bytes(ca.signature)
    ok = _openssl("pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "ca.pub"), "-rawin", "-digest", "sm3",
                  "-in", str(tmp_path / "tbs"), "-sigfile", str(tmp_path / "sig"), "-pkeyopt", DISTID)
    assert ok.returncode == 0 and "Verified Successfully" in ok.stdout, ok.stderr


def _write_key_pair(tmp_path: Path, key: Sm2PrivateKey) -> None:
    """key.pem (PKCS8) and pub.pem (SPKI) for the openssl command line."""
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (tmp_path / "pub.pem").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@needs_openssl
def test_openssl_signature_interop(tmp_path: Path) -> None:
    key = generate_sm2_key()
    _write_key_pair(tmp_path, key)
    (tmp_path / "data").write_bytes(DATA)
    (tmp_path / "ours.sig").write_bytes(sm2_sign(key, DATA))
    ok = _openssl("pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "pub.pem"), "-rawin", "-digest", "sm3",
                  "-in", str(tmp_path / "data"), "-sigfile", str(tmp_path / "ours.sig"), "-pkeyopt", DISTID)
    assert ok.returncode == 0 and "Verified Successfully" in ok.stdout, ok.stderr
    signed = _openssl("pkeyutl", "-sign", "-inkey", str(tmp_path / "key.pem"), "-rawin", "-digest", "sm3",
                      "-in", str(tmp_path / "data"), "-out", str(tmp_path / "theirs.sig"), "-pkeyopt", DISTID)
    assert signed.returncode == 0, signed.stderr
    assert sm2_verify(key.public_key(), (tmp_path / "theirs.sig").read_bytes(), DATA)


def _der(tag: int, content: bytes) -> bytes:
    assert len(content) < 0x80
    return bytes((tag, len(content))) + content


def _der_uint(value: int) -> bytes:
    body = value.to_bytes(32, "big").lstrip(b"\x00") or b"\x00"
    return _der(0x02, b"\x00" + body if body[0] & 0x80 else body)  # a leading zero keeps it positive


@needs_openssl
def test_openssl_encryption_interop(tmp_path: Path) -> None:
    # openssl reads and writes the GM/T 0009 ASN.1 form SEQUENCE { x, y, C3 OCTET STRING, C2 OCTET STRING }.
    key = generate_sm2_key()
    _write_key_pair(tmp_path, key)
    plaintext = secrets.token_bytes(16)
    raw = sm2_encrypt(key.public_key(), plaintext)
    x, y = int.from_bytes(raw[1:33], "big"), int.from_bytes(raw[33:65], "big")
    asn1 = _der(0x30, _der_uint(x) + _der_uint(y) + _der(0x04, raw[65:97]) + _der(0x04, raw[97:]))
    (tmp_path / "ours.bin").write_bytes(asn1)
    out = tmp_path / "ours.out"
    opened = _openssl("pkeyutl", "-decrypt", "-inkey", str(tmp_path / "key.pem"), "-in", str(tmp_path / "ours.bin"),
                      "-out", str(out))
    assert opened.returncode == 0, opened.stderr
    assert out.read_bytes() == plaintext

    (tmp_path / "plain").write_bytes(plaintext)
    sealed = _openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", str(tmp_path / "pub.pem"),
                      "-in", str(tmp_path / "plain"), "-out", str(tmp_path / "theirs.bin"))
    assert sealed.returncode == 0, sealed.stderr
    fields = sm2._children((tmp_path / "theirs.bin").read_bytes())
    values = [field[2:] for field in fields]  # every field is short here: tag, one length byte, content
    x, y = (int.from_bytes(v, "big") for v in values[:2])
    theirs = b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big") + values[2] + values[3]
    assert sm2_decrypt(key, theirs) == plaintext

