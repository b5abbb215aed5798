"""Detached JWS over exact bytes: real keys, real signatures, interop with pyjwt (a third-party library)."""

from __future__ import annotations

import base64
import hashlib
import json

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.crypto.jws import (
    MAX_JWS_LENGTH,
    DetachedJws,
    JwsError,
    Signer,
    Verifier,
    b64url_decode,
    b64url_encode,
    parse_detached,
    thumbprint_s256,
    verify_detached,
)
from gateway.crypto.keys import PrivateKey, public_key_of
from gateway.dev.pki import issue_gateway_cert, make_ca

ALGS = ["ES256", "EdDSA"]

# A 2 KB envelope-like content (exact bytes: whitespace and key order matter to the signature).
CONTENT = (
    b'{"id":"01936f5e-8b1a-7c2d-9e3f-0a1b2c3d4e5f","type":"medical.settlement.request","schema_version":1,'
    b'"from":"AH","to":"SH","payload":{"psn_no":"' + b"x" * 1900 + b'"}}'
)


@pytest.fixture(scope="module")
def ca() -> tuple[x509.Certificate, PrivateKey]:
    return make_ca("yrdx test root CA")


@pytest.fixture(scope="module", params=ALGS)
def gateway(
    request: pytest.FixtureRequest, ca: tuple[x509.Certificate, PrivateKey]
) -> tuple[x509.Certificate, PrivateKey]:
    ca_cert, ca_key = ca
    return issue_gateway_cert(ca_cert, ca_key, "JS", alg=request.param)


@pytest.fixture(scope="module")
def signer(gateway: tuple[x509.Certificate, PrivateKey]) -> Signer:
    cert, key = gateway
    return Signer(key, cert)


def _header_of(jws: str) -> dict[str, object]:
    return json.loads(b64url_decode(jws.split(".")[0]))  # type: ignore[no-any-return]


def _with_header(jws: str, header: dict[str, object]) -> str:
    """The same signature under a different (re-encoded) protected header."""
    return b64url_encode(json.dumps(header).encode()) + ".." + jws.split(".")[2]


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- round trip ---------------------------------------------------------------------------------------------


def test_round_trip(signer: Signer, gateway: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, key = gateway
    jws = signer.sign(CONTENT)
    header_b64, middle, signature_b64 = jws.split(".")
    assert middle == ""
    parsed = parse_detached(jws)
    assert parsed.signing_prefix == header_b64.encode()
    assert parsed.header == {"alg": signer.alg, "kid": signer.kid, "x5t#S256": thumbprint_s256(cert)}
    assert parsed.alg == signer.alg and parsed.kid == signer.kid and parsed.thumbprint == signer.thumbprint
    assert len(parsed.signature) == 64  # ES256 raw r||s, or an Ed25519 signature
    assert verify_detached(parsed, CONTENT, cert.public_key())
    assert verify_detached(parse_detached(jws.encode()), CONTENT, key.public_key())  # bytes input too


def test_alg_follows_the_key(gateway: tuple[x509.Certificate, PrivateKey], signer: Signer) -> None:
    _, key = gateway
    expected = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "EdDSA"
    assert signer.alg == expected
    assert signer.region == "JS"
    assert signer.kid.startswith("gw-js-") and len(signer.kid) == len("gw-js-") + 16


def test_header_is_serialized_once(signer: Signer) -> None:
    first, second = signer.sign(CONTENT), signer.sign(b"other")
    assert first.split(".")[0] == second.split(".")[0]


def test_empty_and_binary_content(signer: Signer, gateway: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, _ = gateway
    for content in (b"", b"\x00\xff" * 10, bytes(range(256))):
        assert verify_detached(parse_detached(signer.sign(content)), content, cert.public_key())


def test_x5c_header(gateway: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, key = gateway
    jws = Signer(key, cert, include_x5c=True).sign(CONTENT)
    parsed = parse_detached(jws)
    (x5c,) = parsed.header["x5c"]
    assert base64.b64decode(x5c, validate=True) == cert.public_bytes(serialization.Encoding.DER)
    assert verify_detached(parsed, CONTENT, cert.public_key())


# --- tampering ----------------------------------------------------------------------------------------------


def test_flipped_content_byte_fails(signer: Signer, gateway: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, _ = gateway
    parsed = parse_detached(signer.sign(CONTENT))
    for index in [*range(0, len(CONTENT), 97), len(CONTENT) - 1]:
        assert not verify_detached(parsed, _flip(CONTENT, index), cert.public_key()), index
    assert not verify_detached(parsed, CONTENT + b" ", cert.public_key())
    assert not verify_detached(parsed, CONTENT[:-1], cert.public_key())


def test_flipped_signature_byte_fails(signer: Signer, gateway: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, _ = gateway
    parsed = parse_detached(signer.sign(CONTENT))
    for index in range(len(parsed.signature)):
        tampered = DetachedJws(parsed.header, parsed.signing_prefix, _flip(parsed.signature, index))
        assert not verify_detached(tampered, CONTENT, cert.public_key()), index
    for bad in (b"", parsed.signature[:-1], parsed.signature + b"\x00", b"\x00" * 64):
        tampered = DetachedJws(parsed.header, parsed.signing_prefix, bad)
        assert not verify_detached(tampered, CONTENT, cert.public_key())


def test_changed_header_fails(signer: Signer, gateway: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, _ = gateway
    jws = signer.sign(CONTENT)
    header = _header_of(jws)
    header["kid"] = "gw-sh-0000000000000000"
    assert not verify_detached(parse_detached(_with_header(jws, header)), CONTENT, cert.public_key())


def test_wrong_key_fails(signer: Signer, ca: tuple[x509.Certificate, PrivateKey]) -> None:
    other_cert, _ = issue_gateway_cert(*ca, "JS", alg=signer.alg)
    assert not verify_detached(parse_detached(signer.sign(CONTENT)), CONTENT, other_cert.public_key())


def test_alg_confusion_fails(ca: tuple[x509.Certificate, PrivateKey]) -> None:
    ec_cert, ec_key = issue_gateway_cert(*ca, "JS", alg="ES256")
    ed_cert, ed_key = issue_gateway_cert(*ca, "JS", alg="EdDSA")
    es256 = Signer(ec_key, ec_cert).sign(CONTENT)
    eddsa = Signer(ed_key, ed_cert).sign(CONTENT)

    # A header claiming EdDSA, checked with an EC key (and the reverse): never valid.
    claims_eddsa = parse_detached(_with_header(es256, {**_header_of(es256), "alg": "EdDSA"}))
    assert not verify_detached(claims_eddsa, CONTENT, ec_cert.public_key())
    claims_es256 = parse_detached(_with_header(eddsa, {**_header_of(eddsa), "alg": "ES256"}))
    assert not verify_detached(claims_es256, CONTENT, ed_cert.public_key())
    # The genuine header with the key of the other type.
    assert not verify_detached(parse_detached(eddsa), CONTENT, ec_cert.public_key())
    assert not verify_detached(parse_detached(es256), CONTENT, ed_cert.public_key())
    # ES256 means P-256: another curve is refused, as is something that is not a key at all.
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    assert not verify_detached(parse_detached(es256), CONTENT, p384)
    assert not verify_detached(parse_detached(es256), CONTENT, b"not a key")


# --- malformed input ----------------------------------------------------------------------------------------


def _jws_with(header: object, signature: bytes = b"\x01" * 64) -> str:
    return b64url_encode(json.dumps(header).encode()) + ".." + b64url_encode(signature)


GOOD_HEADER = {"alg": "ES256", "kid": "gw-js-0123456789abcdef", "x5t#S256": b64url_encode(b"\x07" * 32)}

MALFORMED = {
    "empty": "",
    "one part": "abc",
    "two parts": "abc.def",
    "four parts": "eyJ9..AAAA.AAAA",
    "payload not detached": _jws_with(GOOD_HEADER).replace("..", ".cGF5bG9hZA."),
    "empty header": "..AAAA",
    "empty signature": b64url_encode(json.dumps(GOOD_HEADER).encode()) + "..",
    "bad base64 header": "!!!!..AAAA",
    "bad base64 signature": b64url_encode(json.dumps(GOOD_HEADER).encode()) + "..AA*A",
    "padded base64": b64url_encode(json.dumps(GOOD_HEADER).encode()) + "..AAAAAA==",
    "standard base64 alphabet": b64url_encode(json.dumps(GOOD_HEADER).encode()) + "..AA+/",
    "non-ascii": "é..AAAA",
    "header not json": b64url_encode(b"{not json") + "..AAAA",
    "header a list": _jws_with(["ES256"]),
    "header a string": _jws_with("ES256"),
    "alg none": _jws_with({**GOOD_HEADER, "alg": "none"}),
    "alg HS256": _jws_with({**GOOD_HEADER, "alg": "HS256"}),
    "alg RS256": _jws_with({**GOOD_HEADER, "alg": "RS256"}),
    "alg not a string": _jws_with({**GOOD_HEADER, "alg": ["ES256"]}),
    "alg missing": _jws_with({k: v for k, v in GOOD_HEADER.items() if k != "alg"}),
    "kid missing": _jws_with({k: v for k, v in GOOD_HEADER.items() if k != "kid"}),
    "kid empty": _jws_with({**GOOD_HEADER, "kid": ""}),
    "kid not a string": _jws_with({**GOOD_HEADER, "kid": 7}),
    "x5t missing": _jws_with({k: v for k, v in GOOD_HEADER.items() if k != "x5t#S256"}),
    "x5t too short": _jws_with({**GOOD_HEADER, "x5t#S256": "abc"}),
    "x5t not base64url": _jws_with({**GOOD_HEADER, "x5t#S256": "+" * 43}),
    "crit": _jws_with({**GOOD_HEADER, "crit": ["exp"]}),
    "b64 false (RFC 7797)": _jws_with({**GOOD_HEADER, "b64": False, "crit": ["b64"]}),
    "too long": "A" * (MAX_JWS_LENGTH + 1) + "..AAAA",
}


@pytest.mark.parametrize("jws", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_jws_raises(jws: str) -> None:
    with pytest.raises(JwsError):
        parse_detached(jws)


def test_well_formed_fixture_parses() -> None:
    assert parse_detached(_jws_with(GOOD_HEADER)).header == GOOD_HEADER


# --- interop with pyjwt -------------------------------------------------------------------------------------


def test_pyjwt_verifies_our_signature(signer: Signer, gateway: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, _ = gateway
    header_b64, _, signature_b64 = signer.sign(CONTENT).split(".")
    # RFC 7515 appendix F: a detached JWS is verified by putting the base64url content back in the middle.
    attached = f"{header_b64}.{b64url_encode(CONTENT)}.{signature_b64}"
    decoded = jwt.api_jws.PyJWS().decode_complete(attached, key=public_key_of(cert), algorithms=[signer.alg])
    assert decoded["payload"] == CONTENT
    assert decoded["header"]["x5t#S256"] == signer.thumbprint

    tampered = f"{header_b64}.{b64url_encode(_flip(CONTENT, 10))}.{signature_b64}"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.api_jws.PyJWS().decode_complete(tampered, key=public_key_of(cert), algorithms=[signer.alg])


def test_we_verify_a_pyjwt_signature(signer: Signer, gateway: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, key = gateway
    token = jwt.api_jws.PyJWS().encode(
        CONTENT, key, algorithm=signer.alg, headers={"kid": "made-by-pyjwt", "x5t#S256": signer.thumbprint}
    )
    header_b64, payload_b64, signature_b64 = token.split(".")
    assert b64url_decode(payload_b64) == CONTENT
    parsed = parse_detached(f"{header_b64}..{signature_b64}")
    assert parsed.kid == "made-by-pyjwt"
    assert verify_detached(parsed, CONTENT, cert.public_key())
    assert not verify_detached(parsed, _flip(CONTENT, 0), cert.public_key())


# --- signer construction and helpers ------------------------------------------------------------------------


def test_signer_refuses_a_key_that_is_not_the_certificates(ca: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, _ = issue_gateway_cert(*ca, "JS")
    with pytest.raises(ValueError):
        Signer(ec.generate_private_key(ec.SECP256R1()), cert)
    with pytest.raises(ValueError):
        Signer(ed25519.Ed25519PrivateKey.generate(), cert)


def test_signer_refuses_unsupported_curves(ca: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, _ = issue_gateway_cert(*ca, "JS")
    with pytest.raises(ValueError):
        Signer(ec.generate_private_key(ec.SECP384R1()), cert)


def test_thumbprint(gateway: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, _ = gateway
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    assert thumbprint_s256(cert) == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert len(thumbprint_s256(cert)) == 43


@pytest.mark.parametrize("data", [b"", b"f", b"fo", b"foo", b"\xfb\xff\xfe", bytes(range(256))])
def test_b64url_round_trip(data: bytes) -> None:
    encoded = b64url_encode(data)
    assert "=" not in encoded and "+" not in encoded and "/" not in encoded
    assert b64url_decode(encoded) == data


@pytest.mark.parametrize("bad", ["A", "Zg==", "Zh", "a+b/", "ab c", "ab\n"])
def test_b64url_decode_is_strict(bad: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(bad)


# --- batch signatures (one signature over a hash tree, a proof per content) ----------------------------------

BATCH = [CONTENT + str(i).encode() for i in range(7)]


def test_batch_signature_verifies_every_content(
    signer: Signer, gateway: tuple[x509.Certificate, PrivateKey]
) -> None:
    cert, _ = gateway
    sigs = signer.sign_batch(BATCH)
    assert len(sigs) == len(BATCH)
    assert len({s.split("~")[0] for s in sigs}) == 1  # one JWS, seven proofs
    for content, sig in zip(BATCH, sigs, strict=True):
        parsed = parse_detached(sig)
        assert parsed.proof is not None and parsed.proof.size == len(BATCH)
        assert parsed.header["yrdx-tree"] == {"hash": "SHA-256", "size": 7}
        assert verify_detached(parsed, content, public_key_of(cert))


def test_batch_signature_does_not_fit_another_content(
    signer: Signer, gateway: tuple[x509.Certificate, PrivateKey]
) -> None:
    cert, _ = gateway
    sigs = signer.sign_batch(BATCH)
    assert not verify_detached(parse_detached(sigs[2]), BATCH[3], public_key_of(cert))  # another member's proof
    assert not verify_detached(parse_detached(sigs[2]), _flip(BATCH[2], 40), public_key_of(cert))
    jws, index, path = sigs[2].split("~")
    assert not verify_detached(parse_detached(f"{jws}~3~{path}"), BATCH[2], public_key_of(cert))  # moved
    proof = bytearray(b64url_decode(path))
    proof[5] ^= 1
    assert not verify_detached(parse_detached(f"{jws}~{index}~{b64url_encode(bytes(proof))}"), BATCH[2],
                               public_key_of(cert))


def test_batch_jws_and_plain_jws_cannot_stand_in_for_each_other(
    signer: Signer, gateway: tuple[x509.Certificate, PrivateKey]
) -> None:
    cert, _ = gateway
    jws = signer.sign_batch(BATCH)[0].split("~")[0]
    with pytest.raises(JwsError, match="without its inclusion proof"):
        parse_detached(jws)  # the tree header is protected: the proof cannot be dropped
    plain = signer.sign(BATCH[0])
    with pytest.raises(JwsError, match="yrdx-tree"):
        parse_detached(f"{plain}~0~{b64url_encode(b'0' * 32)}")


def test_pyjwt_verifies_the_signed_tree_root(signer: Signer, gateway: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, _ = gateway
    sig = signer.sign_batch(BATCH)[4]
    parsed = parse_detached(sig)
    assert parsed.proof is not None
    root = parsed.proof.root(BATCH[4])
    assert root is not None
    header_b64, _, signature_b64 = sig.split("~")[0].split(".")
    decoded = jwt.api_jws.PyJWS().decode_complete(
        f"{header_b64}.{b64url_encode(root)}.{signature_b64}", key=public_key_of(cert), algorithms=[signer.alg]
    )
    assert decoded["payload"] == root


def test_a_batch_of_one_is_a_plain_signature(signer: Signer) -> None:
    (sig,) = signer.sign_batch(BATCH[:1])
    assert "~" not in sig and parse_detached(sig).proof is None
    assert signer.sign_batch([]) == []


@pytest.mark.parametrize("suffix", [
    "~", "~1", "~1~", "~01~AAAA", "~-1~", "~7~", "~x~", "~1~!!!!", "~1~" + "A" * 10, "~1~" + "A" * 43 + "~2",
    "~1~" + b64url_encode(b"0" * 32 * 4),  # deeper than a tree of 7
])
def test_malformed_proofs_raise(signer: Signer, suffix: str) -> None:
    jws = signer.sign_batch(BATCH)[1].split("~")[0]
    with pytest.raises(JwsError):
        parse_detached(jws + suffix)


def test_verifier_checks_a_batch_signature_once(signer: Signer, gateway: tuple[x509.Certificate, PrivateKey],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.crypto.jws as jws_module

    cert, _ = gateway
    key = public_key_of(cert)
    calls = []
    real = jws_module._verify_signature

    def counting(parsed: DetachedJws, content: bytes, public_key: object) -> bool:
        calls.append(content)
        return real(parsed, content, public_key)

    monkeypatch.setattr(jws_module, "_verify_signature", counting)
    verifier = jws_module.Verifier()
    sigs = signer.sign_batch(BATCH)
    assert all(verifier.verify(parse_detached(s), c, key) for s, c in zip(sigs, BATCH, strict=True))
    assert len(calls) == 1
    # a remembered signature does not excuse a content whose proof leads elsewhere, nor another key
    assert not verifier.verify(parse_detached(sigs[0]), BATCH[1], key)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not verifier.verify(parse_detached(sigs[0]), BATCH[0], other)


# --- the national suite: SM2 with SM3 -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sm2_gateway() -> tuple[x509.Certificate, PrivateKey]:
    ca_cert, ca_key = make_ca("yrdx national test root", alg="SM2SM3")
    return issue_gateway_cert(ca_cert, ca_key, "JS", alg="SM2SM3")


def test_sm2_signer_signs_a_detached_jws_that_verifies(sm2_gateway: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, key = sm2_gateway
    signer = Signer(key, cert)
    assert signer.alg == "SM2SM3" and signer.tree_hash == "SM3"
    jws = signer.sign(CONTENT)
    parsed = parse_detached(jws)
    assert parsed.alg == "SM2SM3" and parsed.thumbprint == thumbprint_s256(cert)
    assert verify_detached(parsed, CONTENT, public_key_of(cert))
    assert not verify_detached(parsed, _flip(CONTENT, 3), public_key_of(cert))
    assert not verify_detached(parse_detached(_with_header(jws, {**parsed.header, "kid": "other"})), CONTENT,
                               public_key_of(cert))


def test_gmssl_verifies_our_sm2_jws(sm2_gateway: tuple[x509.Certificate, PrivateKey]) -> None:
    """An independent SM2 implementation (pure-Python gmssl, default signer ID) checks the JWS signing input."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from gmssl import sm2 as gmssl_sm2

    cert, key = sm2_gateway
    header_b64, _, signature_b64 = Signer(key, cert).sign(CONTENT).split(".")
    r, s = decode_dss_signature(b64url_decode(signature_b64))  # DER, as GM/T 0009 fixes it
    point = public_key_of(cert).public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    verifier = gmssl_sm2.CryptSM2(private_key="", public_key=point[1:].hex())
    signing_input = f"{header_b64}.{b64url_encode(CONTENT)}".encode()
    assert verifier.verify_with_sm3(f"{r:064x}{s:064x}", signing_input)
    assert not verifier.verify_with_sm3(f"{r:064x}{s:064x}", signing_input + b"x")


def test_sm2_batch_signature_hashes_its_tree_with_sm3(sm2_gateway: tuple[x509.Certificate, PrivateKey]) -> None:
    cert, key = sm2_gateway
    sigs = Signer(key, cert).sign_batch(BATCH)
    verifier = Verifier()
    for content, sig in zip(BATCH, sigs, strict=True):
        parsed = parse_detached(sig)
        assert parsed.header["yrdx-tree"] == {"hash": "SM3", "size": len(BATCH)}
        assert verifier.verify(parsed, content, public_key_of(cert))
    assert not verifier.verify(parse_detached(sigs[1]), BATCH[2], public_key_of(cert))


def test_sm2_and_es256_keys_cannot_stand_in_for_each_other(
    sm2_gateway: tuple[x509.Certificate, PrivateKey], signer: Signer, gateway: tuple[x509.Certificate, PrivateKey]
) -> None:
    sm2_cert, sm2_key = sm2_gateway
    sm2_jws = Signer(sm2_key, sm2_cert).sign(CONTENT)
    assert not verify_detached(parse_detached(sm2_jws), CONTENT, public_key_of(gateway[0]))
    assert not verify_detached(parse_detached(signer.sign(CONTENT)), CONTENT, public_key_of(sm2_cert))
    # an SM2 signature relabelled as ES256 (or the reverse) does not verify under either key
    relabelled = _with_header(sm2_jws, {**_header_of(sm2_jws), "alg": signer.alg})
    assert not verify_detached(parse_detached(relabelled), CONTENT, public_key_of(sm2_cert))


def test_verifier_parses_a_batch_jws_once_and_still_checks_each_proof(signer: Signer) -> None:
    verifier = Verifier()
    sigs = signer.sign_batch(BATCH)
    parsed = [verifier.parse(s) for s in sigs]
    assert parsed == [parse_detached(s) for s in sigs]
    assert parsed[0].header is parsed[1].header  # the shared part was parsed once
    jws = sigs[0].split("~")[0]
    with pytest.raises(JwsError):
        verifier.parse(jws + "~9~" + sigs[0].split("~")[2])  # index outside the cached tree's size
    with pytest.raises(JwsError, match="without its inclusion proof"):
        verifier.parse(jws)
    assert verifier.parse(signer.sign(BATCH[0])).proof is None
