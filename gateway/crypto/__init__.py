"""Signing, verification, sealing and the key files of the gateway.

- :mod:`gateway.crypto.jws`: detached JWS (RFC 7515 appendix F) over exact bytes, ES256, EdDSA or the national
  SM2SM3, one at a time or per batch over a hash tree (:class:`Signer`, :func:`parse_detached`,
  :func:`verify_detached`, :class:`Verifier`); :mod:`gateway.crypto.hashtree`: the RFC 9162 tree.
- :mod:`gateway.crypto.seal` (with :mod:`gateway.crypto.seal_sm` and :mod:`gateway.crypto.seal_base`): sealed
  payloads (JWE), X25519/AES-GCM or SM2/SM4-GCM; :mod:`gateway.crypto.keyring`: those keys over time (open with
  the old and the new key by kid, seal to a peer's newest announced key).
- :mod:`gateway.crypto.sm2`: the SM2 primitives and certificates of the national suite.
- :mod:`gateway.crypto.trust`: which gateway certificates may sign (:class:`TrustStore`).
- :mod:`gateway.crypto.keyfiles`: reading PEM keys and certificates (:func:`load_private_key`, ...). The
  development PKI that writes them is :mod:`gateway.dev.pki`.
"""

from gateway.crypto.jws import (
    DetachedJws,
    JwsError,
    Signer,
    b64url_decode,
    b64url_encode,
    parse_detached,
    thumbprint_s256,
    verify_detached,
)
from gateway.crypto.keyfiles import load_certificate, load_private_key, load_signing_public_key
from gateway.crypto.keys import Alg, PrivateKey, PublicKey
from gateway.crypto.trust import TrustedSigner, TrustError, TrustStore

__all__ = [
    "Alg",
    "DetachedJws",
    "JwsError",
    "PrivateKey",
    "PublicKey",
    "Signer",
    "TrustError",
    "TrustStore",
    "TrustedSigner",
    "b64url_decode",
    "b64url_encode",
    "load_certificate",
    "load_private_key",
    "load_signing_public_key",
    "parse_detached",
    "thumbprint_s256",
    "verify_detached",
]
