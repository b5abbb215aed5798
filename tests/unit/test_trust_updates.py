"""Only a statement signed by a trust root revokes anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.crypto.jws import Signer
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.crypto.trust import TrustStore
from gateway.dev.pki import init_pki, make_ca
from gateway.relay.revocations import apply_update, revocation
from gateway.wire.headers import SIGNATURE as SIGNATURE_HEADER


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
        assert apply_update(trust, record.value, dict(record.headers)[SIGNATURE_HEADER]) is None
    assert not trust.is_revoked(target)

    record = revocation(root, target, "key compromise")
    tampered = record.value.replace(b"AAAA", b"BBBB", 1)
    assert apply_update(trust, tampered, dict(record.headers)[SIGNATURE_HEADER]) is None
    assert apply_update(trust, record.value, None) is None
    assert apply_update(trust, record.value, dict(record.headers)[SIGNATURE_HEADER]) == target
    assert trust.is_revoked(target)
