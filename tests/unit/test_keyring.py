"""Encryption keys over time (gateway.crypto.keyring): an opener holding the old and the new key picks the one a
payload names, peers switch to a newer key and never back, and a gateway's one Signer switches in place."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gateway.crypto.jws import Signer, b64url_decode, parse_detached, verify_detached
from gateway.crypto.keyring import OpenerRing, PeerSealers, encryption_kid
from gateway.crypto.keys import public_key_of
from gateway.crypto.seal import Sealer, SealError, X25519Sealer
from gateway.crypto.sm2 import generate_sm2_key
from gateway.dev.pki import issue_gateway_cert, make_ca

PAYLOAD = orjson.dumps({"id_number": "310115198503120418", "name": "张三"})
T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)


def kid_of(jwe: str) -> str:
    return str(orjson.loads(b64url_decode(jwe.split(".")[0]))["kid"])


@pytest.mark.parametrize("generate", [X25519PrivateKey.generate, generate_sm2_key], ids=["X25519", "SM2"])
def test_an_opener_with_the_old_and_the_new_key_opens_what_was_sealed_to_either(generate: object) -> None:
    old, new = generate(), generate()  # type: ignore[operator]
    ring = OpenerRing("SH", [new, old])
    assert ring.current_kid == encryption_kid("SH", new.public_key()) != encryption_kid("SH", old.public_key())
    to_old = Sealer.for_key(old.public_key(), encryption_kid("SH", old.public_key())).seal(PAYLOAD)
    to_new = Sealer.for_key(new.public_key(), encryption_kid("SH", new.public_key())).seal(PAYLOAD)
    assert kid_of(to_old) == encryption_kid("SH", old.public_key())
    assert ring.open(to_old) == ring.open(to_new) == PAYLOAD

    # After the overlap the old key is dropped: what was sealed to it no longer opens, and says why.
    ring.replace([new])
    assert ring.open(to_new) == PAYLOAD and ring.kids() == [ring.current_kid]
    with pytest.raises(SealError, match="does not hold"):
        ring.open(to_old)


def test_a_payload_naming_only_the_region_or_no_key_is_tried_with_every_key() -> None:
    old, new = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    ring = OpenerRing("SH", [new, old])
    legacy = X25519Sealer(old.public_key(), "SH").seal(PAYLOAD)  # sealed before kids named keys
    assert ring.open(legacy) == PAYLOAD
    stranger = X25519Sealer(X25519PrivateKey.generate().public_key(), "SH").seal(PAYLOAD)
    with pytest.raises(SealError):
        ring.open(stranger)
    foreign_kid = X25519Sealer(old.public_key(), "SH:0000000000000000").seal(PAYLOAD)
    with pytest.raises(SealError, match="SH:0000000000000000"):  # the right key, but a kid naming another
        ring.open(foreign_kid)
    with pytest.raises(SealError, match="malformed"):
        ring.open("!!!.a.b.c.d")


def test_a_peer_seals_to_the_newest_announced_key_and_never_back() -> None:
    old, new = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    sealers = PeerSealers({"SH": old.public_key()})  # from the config
    assert kid_of(sealers["SH"].seal(PAYLOAD)) == encryption_kid("SH", old.public_key())
    assert sealers.learn("SH", old.public_key(), T0) is False  # the same key: nothing changes
    assert sealers.learn("SH", new.public_key(), T0 + dt.timedelta(minutes=1)) is True
    assert kid_of(sealers["SH"].seal(PAYLOAD)) == sealers.kid("SH") == encryption_kid("SH", new.public_key())
    # A replayed older statement does not switch back to a key its owner may have dropped.
    assert sealers.learn("SH", old.public_key(), T0) is False
    assert sealers.kid("SH") == encryption_kid("SH", new.public_key())
    assert list(sealers) == ["SH"] and len(sealers) == 1


def test_a_signer_adopts_a_new_key_and_certificate_in_place() -> None:
    ca_cert, ca_key = make_ca("test root")
    old_cert, old_key = issue_gateway_cert(ca_cert, ca_key, "JS")
    new_cert, new_key = issue_gateway_cert(ca_cert, ca_key, "JS")
    shared = Signer(old_key, old_cert)  # what ingress, egress and the audit trail hold
    before = parse_detached(shared.sign(b"x"))
    assert "x5c" not in before.header
    shared.adopt(Signer(new_key, new_cert).with_x5c())
    after = parse_detached(shared.sign(b"x"))
    assert after.thumbprint == shared.thumbprint != before.thumbprint
    assert verify_detached(after, b"x", public_key_of(new_cert))
    assert not verify_detached(after, b"x", public_key_of(old_cert))
    assert after.header["x5c"]  # a peer that has not learned it yet checks it against the root
