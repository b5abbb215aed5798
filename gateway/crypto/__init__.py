"""Signing, verification and the development PKI.

- :mod:`gateway.crypto.jws`: detached JWS (RFC 7515 appendix F) over exact bytes, ES256, EdDSA or the national
  SM2SM3, one at a time or per batch over a hash tree (:class:`Signer`, :func:`parse_detached`,
  :func:`verify_detached`, :class:`Verifier`); :mod:`gateway.crypto.hashtree`: the RFC 9162 tree.
- :mod:`gateway.crypto.seal` and :mod:`gateway.crypto.seal_sm`: sealed payloads (JWE), X25519/AES-GCM or SM2/SM4-GCM.
- :mod:`gateway.crypto.sm2`: the SM2 primitives and certificates of the national suite.
- :mod:`gateway.crypto.trust`: which gateway certificates may sign (:class:`TrustStore`).
- :mod:`gateway.crypto.pki`: the development PKI (:func:`init_pki`); development only, keys unencrypted.
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
from gateway.crypto.keys import Alg, PrivateKey, PublicKey
from gateway.crypto.pki import PkiLayout, init_pki, load_certificate, load_private_key, load_public_key
from gateway.crypto.trust import TrustedSigner, TrustError, TrustStore

__all__ = [
    "Alg",
    "DetachedJws",
    "JwsError",
    "PkiLayout",
    "PrivateKey",
    "PublicKey",
    "Signer",
    "TrustError",
    "TrustStore",
    "TrustedSigner",
    "b64url_decode",
    "b64url_encode",
    "init_pki",
    "load_certificate",
    "load_private_key",
    "load_public_key",
    "parse_detached",
    "thumbprint_s256",
    "verify_detached",
]
