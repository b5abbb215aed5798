"""Sealed payloads: a standard JWE that a third-party JOSE library opens, and that refuses tampering."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from jwcrypto import jwe, jwk

from gateway.crypto.seal import SealError, X25519Opener, X25519Sealer

PAYLOAD = json.dumps({"id_number": "310115198503120418", "name": "张三"}, ensure_ascii=False).encode()


def test_round_trip_and_a_fresh_content_key_per_message() -> None:
    key = X25519PrivateKey.generate()
    sealer, opener = X25519Sealer(key.public_key(), "SH"), X25519Opener(key)
    a, b = sealer.seal(PAYLOAD), sealer.seal(PAYLOAD)
    assert a != b and a.split(".")[0] == b.split(".")[0]  # same ephemeral key, different content keys
    assert opener.open(a) == opener.open(b) == PAYLOAD
    assert b"310115198503120418" not in a.encode()


def test_a_third_party_library_opens_what_we_seal() -> None:
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    token = jwe.JWE()
    token.deserialize(X25519Sealer(key.public_key(), "SH").seal(PAYLOAD), key=jwk.JWK.from_pem(pem))
    assert token.payload == PAYLOAD


def test_we_open_what_a_third_party_library_seals() -> None:
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    recipient = jwk.JWK.from_pem(pem)
    token = jwe.JWE(PAYLOAD, json.dumps({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}))
    token.add_recipient(recipient)
    assert X25519Opener(key).open(token.serialize(compact=True)) == PAYLOAD


@pytest.mark.parametrize("part", [0, 1, 2, 3, 4])
def test_a_changed_byte_in_any_part_does_not_open(part: int) -> None:
    key = X25519PrivateKey.generate()
    parts = X25519Sealer(key.public_key(), "SH").seal(PAYLOAD).split(".")
    p = parts[part]
    parts[part] = p[:5] + ("A" if p[5] != "A" else "B") + p[6:]
    with pytest.raises(SealError):
        X25519Opener(key).open(".".join(parts))


def test_another_gateways_key_does_not_open() -> None:
    sealed = X25519Sealer(X25519PrivateKey.generate().public_key(), "SH").seal(PAYLOAD)
    with pytest.raises(SealError):
        X25519Opener(X25519PrivateKey.generate()).open(sealed)
