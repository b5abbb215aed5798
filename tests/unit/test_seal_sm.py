"""Sealed payloads in the national suite (seal_sm.py): SM2 key transport, SM4-GCM, content-key reuse, refusals,
and the choice of suite by key type."""

from __future__ import annotations

import json
import time
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway.crypto import seal_sm
from gateway.crypto.jws import b64url_decode, b64url_encode
from gateway.crypto.keyfiles import load_encryption_key, load_encryption_pub
from gateway.crypto.seal import Opener, Sealer, SealError, X25519Opener, X25519Sealer
from gateway.crypto.seal_sm import SmOpener, SmSealer
from gateway.crypto.sm2 import Sm2PrivateKey, generate_sm2_key, sm2_decrypt
from gateway.dev.pki import init_pki
from gateway.wire.regions import REGIONS

PAYLOAD = json.dumps({"id_number": "310115198503120418", "name": "张三"}, ensure_ascii=False).encode()


@pytest.fixture(scope="module")
def key() -> Sm2PrivateKey:
    return generate_sm2_key()


def _parts(jwe: str) -> list[str]:
    parts = jwe.split(".")
    assert len(parts) == 5
    return parts


def test_round_trip(key: Sm2PrivateKey) -> None:
    sealed = SmSealer(key.public_key(), "SH").seal(PAYLOAD)
    assert SmOpener(key).open(sealed) == PAYLOAD
    assert b"310115198503120418" not in sealed.encode()
    assert b"310115198503120418" not in b"".join(b64url_decode(p) for p in _parts(sealed))
    assert SmOpener(key).open(SmSealer(key.public_key(), "SH").seal(b"")) == b""


def test_the_format(key: Sm2PrivateKey) -> None:
    header_b64, encrypted_key_b64, iv_b64, ciphertext_b64, tag_b64 = _parts(
        SmSealer(key.public_key(), "SH").seal(PAYLOAD)
    )
    assert orjson.loads(b64url_decode(header_b64)) == {"alg": "SM2", "enc": "SM4GCM", "kid": "SH"}
    encrypted_key = b64url_decode(encrypted_key_b64)
    assert len(encrypted_key) == 65 + 32 + 16 and encrypted_key[0] == 4  # C1 || C3 || C2 of a 16-byte key
    assert len(b64url_decode(iv_b64)) == 12 and len(b64url_decode(tag_b64)) == 16
    assert len(b64url_decode(ciphertext_b64)) == len(PAYLOAD)
    # Opened by hand, without SmOpener: SM2 for the content key, SM4-GCM with AAD = the ASCII header (RFC 7516).
    cek = sm2_decrypt(key, encrypted_key)
    decryptor = Cipher(algorithms.SM4(cek), modes.GCM(b64url_decode(iv_b64), b64url_decode(tag_b64))).decryptor()
    decryptor.authenticate_additional_data(header_b64.encode("ascii"))
    assert decryptor.update(b64url_decode(ciphertext_b64)) + decryptor.finalize() == PAYLOAD


def test_content_key_reused_within_the_window_with_fresh_ivs(key: Sm2PrivateKey) -> None:
    sealer = SmSealer(key.public_key(), "SH")
    sealed = [_parts(sealer.seal(PAYLOAD)) for _ in range(50)]
    assert len({p[1] for p in sealed}) == 1  # one encrypted content key
    assert len({p[2] for p in sealed}) == 50  # a fresh IV per message
    assert len({p[3] for p in sealed}) == 50  # so a different ciphertext for the same payload
    assert len({p[0] for p in sealed}) == 1


def test_content_key_rotates_after_rotate_uses(key: Sm2PrivateKey) -> None:
    sealer = SmSealer(key.public_key(), "SH", rotate_uses=3)
    keys = [_parts(sealer.seal(PAYLOAD))[1] for _ in range(7)]
    assert keys[0] == keys[1] == keys[2] != keys[3]
    assert keys[3] == keys[4] == keys[5] != keys[6]
    opener = SmOpener(key)
    assert all(opener.open(sealer.seal(PAYLOAD)) == PAYLOAD for _ in range(4))


def test_content_key_rotates_after_rotate_s(key: Sm2PrivateKey) -> None:
    sealer = SmSealer(key.public_key(), "SH", rotate_s=0.3)
    first = _parts(sealer.seal(PAYLOAD))[1]
    assert _parts(sealer.seal(PAYLOAD))[1] == first
    time.sleep(0.4)
    assert _parts(sealer.seal(PAYLOAD))[1] != first


def test_opener_decrypts_each_content_key_once(key: Sm2PrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []

    def counting(private_key: Sm2PrivateKey, ciphertext: bytes) -> bytes:
        calls.append(ciphertext)
        return sm2_decrypt(private_key, ciphertext)

    monkeypatch.setattr(seal_sm, "sm2_decrypt", counting)
    a, b = SmSealer(key.public_key(), "JS"), SmSealer(key.public_key(), "ZJ")
    opener = SmOpener(key, cache=1)
    for _ in range(5):
        assert opener.open(a.seal(PAYLOAD)) == PAYLOAD
    assert len(calls) == 1
    assert opener.open(b.seal(PAYLOAD)) == PAYLOAD  # another sender's key evicts the first (cache of one)
    assert opener.open(a.seal(PAYLOAD)) == PAYLOAD
    assert len(calls) == 3
    big = SmOpener(key, cache=8)
    for _ in range(3):
        assert big.open(a.seal(PAYLOAD)) == big.open(b.seal(PAYLOAD)) == PAYLOAD
    assert len(calls) == 5


@pytest.mark.parametrize("part", [0, 1, 2, 3, 4])
def test_a_changed_byte_in_any_part_does_not_open(key: Sm2PrivateKey, part: int) -> None:
    parts = _parts(SmSealer(key.public_key(), "SH").seal(PAYLOAD))
    p = parts[part]
    parts[part] = p[:5] + ("A" if p[5] != "A" else "B") + p[6:]
    with pytest.raises(SealError):
        SmOpener(key).open(".".join(parts))


def test_a_changed_header_fails_even_with_a_cached_key(key: Sm2PrivateKey) -> None:
    sealer, opener = SmSealer(key.public_key(), "SH"), SmOpener(key)
    parts = _parts(sealer.seal(PAYLOAD))
    assert opener.open(".".join(parts)) == PAYLOAD  # caches the content key
    parts[0] = b64url_encode(orjson.dumps({"alg": "SM2", "enc": "SM4GCM", "kid": "JS"}))  # AAD changed
    with pytest.raises(SealError):
        opener.open(".".join(parts))


def test_sealed_for_one_region_does_not_open_for_another(tmp_path: Path) -> None:
    pki = init_pki(tmp_path / "pki", alg="SM2SM3")
    sealed = Sealer.for_key(load_encryption_pub(pki.encryption_pub("SH")), kid="SH").seal(PAYLOAD)
    assert Opener.for_key(load_encryption_key(pki.encryption_key("SH"))).open(sealed) == PAYLOAD
    for other in REGIONS:
        if other != "SH":
            with pytest.raises(SealError):
                Opener.for_key(load_encryption_key(pki.encryption_key(other))).open(sealed)


@pytest.mark.parametrize(
    "jwe",
    [
        "",
        "a.b.c.d",
        "a.b.c.d.e.f",
        "!!.AA.AA.AA.AA",
        b64url_encode(b"[1]") + ".AA.AA.AA.AA",
        b64url_encode(b"not json") + ".AA.AA.AA.AA",
        b64url_encode(b'{"alg":"SM2","enc":"A256GCM","kid":"SH"}') + ".AA.AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA",
        b64url_encode(b'{"alg":"SM2","enc":"SM4GCM","kid":"SH"}') + ".AA.AAAA.AA.AAAAAAAAAAAAAAAAAAAAAA",  # short IV
        b64url_encode(b'{"alg":"SM2","enc":"SM4GCM","kid":"SH"}') + ".AA.AAAAAAAAAAAAAAAA.AA.AAAA",  # short tag
        b64url_encode(b'{"alg":"SM2","enc":"SM4GCM","kid":"SH"}') + ".AA.AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA",
        "é.AA.AA.AA.AA",
    ],
)
def test_malformed_is_a_seal_error(key: Sm2PrivateKey, jwe: str) -> None:
    with pytest.raises(SealError):
        SmOpener(key).open(jwe)


def test_the_suites_do_not_mix(key: Sm2PrivateKey) -> None:
    x25519 = X25519PrivateKey.generate()
    with pytest.raises(SealError):
        SmOpener(key).open(X25519Sealer(x25519.public_key(), "SH").seal(PAYLOAD))
    with pytest.raises(SealError):
        X25519Opener(x25519).open(SmSealer(key.public_key(), "SH").seal(PAYLOAD))
    with pytest.raises(TypeError):
        SmSealer(x25519.public_key(), "SH")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SmOpener(x25519)  # type: ignore[arg-type]


def test_the_factories_choose_by_key_type(key: Sm2PrivateKey) -> None:
    x25519 = X25519PrivateKey.generate()
    jose_sealer, jose_opener = Sealer.for_key(x25519.public_key(), "SH"), Opener.for_key(x25519)
    assert type(jose_sealer) is X25519Sealer and type(jose_opener) is X25519Opener
    assert jose_opener.open(jose_sealer.seal(PAYLOAD)) == PAYLOAD
    sm_sealer, sm_opener = Sealer.for_key(key.public_key(), "SH"), Opener.for_key(key)
    assert isinstance(sm_sealer, SmSealer) and isinstance(sm_opener, SmOpener)
    assert isinstance(sm_sealer, Sealer) and isinstance(sm_opener, Opener)  # what ingress and egress take
    assert sm_opener.open(sm_sealer.seal(PAYLOAD)) == PAYLOAD
    assert _parts(sm_sealer.seal(PAYLOAD))[0] == b64url_encode(b'{"alg":"SM2","enc":"SM4GCM","kid":"SH"}')


def test_the_factories_refuse_a_key_of_no_suite() -> None:
    signing_key = ec.generate_private_key(ec.SECP256R1())  # a P-256 key signs; nothing is sealed to it
    with pytest.raises(TypeError, match="no sealing suite for a"):
        Sealer.for_key(signing_key.public_key(), "SH")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no sealing suite for a"):
        Opener.for_key(signing_key)  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ["ES256", "SM2SM3"])
def test_the_pki_encryption_keys_pick_the_suite(tmp_path: Path, alg: str) -> None:
    pki = init_pki(tmp_path / "pki", alg=alg)
    sealer = Sealer.for_key(load_encryption_pub(pki.encryption_pub("AH")), kid="AH")
    opener = Opener.for_key(load_encryption_key(pki.encryption_key("AH")))
    assert opener.open(sealer.seal(PAYLOAD)) == PAYLOAD
    header = orjson.loads(b64url_decode(sealer.seal(PAYLOAD).split(".")[0]))
    assert header["alg"] == ("SM2" if alg == "SM2SM3" else "ECDH-ES+A256KW")
