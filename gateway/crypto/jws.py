"""JWS with detached content (RFC 7515 appendix F) over exact bytes, written directly on `cryptography`.

The envelope bytes travel unchanged (Kafka record value, webhook body, audit export) and the signature
travels beside them in the compact detached form ``<b64url(protected header)>..<b64url(signature)>``. The
signing input is the standard JWS one, ``b64url(protected header) "." b64url(content)``, so any JOSE library
verifies it once the payload part is put back (``header.b64url(content).signature``). The RFC 7797
unencoded-payload variant (``"b64": false``) is neither produced nor accepted.

The protected header is ``{"alg", "kid", "x5t#S256"}`` (plus ``x5c`` if asked for); it is serialized once per
:class:`Signer`, so signing a message costs one base64 pass over the content and one signature.

**Batch signatures.** :meth:`Signer.sign_batch` signs many contents with one signature: it builds an RFC 9162
hash tree over them (:mod:`gateway.crypto.hashtree`) and signs the 32-byte root as the detached content of a
JWS whose protected header adds ``"yrdx-tree": {"hash": "SHA-256", "size": N}``. Each content's signature is
that JWS followed by its inclusion proof: ``<header>..<signature>~<leaf index>~<b64url(sibling hashes)>``. The
JWS part is a standard detached JWS over the root, so a JOSE library checks it; the proof is the RFC 9162
inclusion check. The header parameter is protected, so a tree signature cannot pass as a signature over an
envelope and the reverse. :class:`Verifier` remembers the roots it has checked, so the receiver of a batch
pays one public-key verification per batch, not per message.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from gateway.crypto.hashtree import DIGEST_SIZE, HASHES, inclusion_root, leaf_hash, tree
from gateway.crypto.keys import (
    ALGORITHMS,
    Alg,
    PrivateKey,
    alg_of_private_key,
    alg_of_public_key,
    certificate_regions,
    public_key_of,
    same_public_key,
    sha256_fingerprint,
)
from gateway.crypto.sm2 import Sm2PrivateKey, Sm2PublicKey, sm2_sign, sm2_verify

__all__ = [
    "MAX_JWS_LENGTH",
    "DetachedJws",
    "InclusionProof",
    "JwsError",
    "Signer",
    "TREE_HEADER",
    "Verifier",
    "b64url_decode",
    "b64url_encode",
    "es256_verify",
    "parse_detached",
    "thumbprint_s256",
    "verify_detached",
]

# Upper bound on a detached JWS accepted by parse_detached (a header with an x5c chain is ~1 KB).
MAX_JWS_LENGTH: Final = 16384

_B64URL_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64URL_VALUES: Final = {c: i for i, c in enumerate(_B64URL_ALPHABET)}
# base64url -> standard alphabet; a byte outside the url alphabet maps to "*", which strict decoding rejects.
_B64URL_TO_STD: Final = bytes(
    _B64_ALPHABET[_B64URL_VALUES[c]] if c in _B64URL_VALUES else ord("*") for c in range(256)
)
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
TREE_HEADER: Final = "yrdx-tree"
_PROOF_SEPARATOR: Final = "~"
_MAX_TREE_SIZE: Final = 1 << 16
_P256_BYTES: Final = 32


class JwsError(ValueError):
    """A malformed or unsupported JWS (not a bad signature: verify_detached returns False for that)."""


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(data: str | bytes) -> bytes:
    """Strict base64url-without-padding decoding: ValueError on padding, foreign characters (including the
    standard alphabet's ``+`` and ``/``) or non-canonical trailing bits, so a byte string has one encoding."""
    raw = data.encode("ascii") if isinstance(data, str) else bytes(data)
    tail = len(raw) % 4
    if tail == 0:
        return binascii.a2b_base64(raw.translate(_B64URL_TO_STD), strict_mode=True)
    # The last character of a 2- or 3-character group carries 4 or 2 unused bits, which must be zero.
    if tail == 1 or _B64URL_VALUES.get(raw[-1], 0x3F) & (0x0F if tail == 2 else 0x03):
        raise ValueError("invalid base64url")
    padding = b"==" if tail == 2 else b"="
    return binascii.a2b_base64(raw.translate(_B64URL_TO_STD) + padding, strict_mode=True)


def thumbprint_s256(cert: x509.Certificate) -> str:
    """The x5t#S256 value of a certificate: base64url (no padding) SHA-256 of its DER encoding."""
    return b64url_encode(sha256_fingerprint(cert))


class Signer:
    """Signs content bytes as a detached JWS with one private key and its certificate.

    ``alg`` is "ES256" for a P-256 key, "EdDSA" for an Ed25519 key and "SM2SM3" for an SM2 key (the national
    suite, whose batch-signature trees hash with SM3). ``kid`` defaults to
    ``gw-<region lower>-<first 16 hex digits of the certificate's SHA-256>`` (``x5t-<hex>`` when the
    certificate names no single region). ``include_x5c`` adds the certificate (standard base64 DER) as
    ``x5c`` so that a receiver that has not seen it yet can validate it against its root.
    """

    __slots__ = (
        "_key",
        "_prefix_dot",
        "_sig_prefix",
        "alg",
        "certificate",
        "header",
        "kid",
        "region",
        "thumbprint",
        "tree_hash",
    )

    def __init__(
        self,
        private_key: PrivateKey,
        certificate: x509.Certificate,
        *,
        include_x5c: bool = False,
        kid: str | None = None,
    ) -> None:
        self.alg: Alg = alg_of_private_key(private_key)
        try:
            cert_key = public_key_of(certificate)
        except (TypeError, ValueError):
            raise ValueError("the certificate's key is of no supported type") from None
        if (
            alg_of_public_key(cert_key) != self.alg
            or not same_public_key(private_key.public_key(), cert_key)
        ):
            raise ValueError("the private key does not belong to the certificate")
        self._key = private_key
        self.tree_hash = "SM3" if self.alg == "SM2SM3" else "SHA-256"  # the hash of batch-signature trees
        self.certificate = certificate
        digest = sha256_fingerprint(certificate)
        self.thumbprint: str = b64url_encode(digest)
        regions = certificate_regions(certificate)
        self.region: str | None = regions[0] if len(regions) == 1 else None
        if kid is None:
            short = digest.hex()[:16]
            kid = f"gw-{self.region.lower()}-{short}" if self.region else f"x5t-{short}"
        self.kid: str = kid
        header: dict[str, Any] = {"alg": self.alg, "kid": kid, "x5t#S256": self.thumbprint}
        if include_x5c:
            der = certificate.public_bytes(serialization.Encoding.DER)
            header["x5c"] = [base64.b64encode(der).decode("ascii")]
        self.header: dict[str, Any] = header
        header_b64 = b64url_encode(json.dumps(header, separators=(",", ":")).encode("utf-8"))
        self._prefix_dot = header_b64.encode("ascii") + b"."  # start of the signing input
        self._sig_prefix = header_b64 + ".."  # start of the compact detached JWS

    def with_x5c(self) -> Signer:
        """The same key and certificate, with the certificate in every header (``x5c``): for signatures a
        receiver must be able to check before it has learned the certificate (trust statements, a rotation)."""
        return Signer(self._key, self.certificate, include_x5c=True, kid=self.kid)

    def adopt(self, other: Signer) -> None:
        """Sign with ``other``'s key and certificate from now on. A gateway shares one Signer between ingress,
        egress and the audit trail; a key rotation swaps its content here, between two signatures (signing runs
        on the event loop only), so every holder switches at once."""
        for name in Signer.__slots__:
            setattr(self, name, getattr(other, name))

    def sign(self, content: bytes) -> str:
        """The compact detached JWS ``<b64url(header)>..<b64url(signature)>`` over exactly ``content``."""
        signing_input = self._prefix_dot + base64.urlsafe_b64encode(content).rstrip(b"=")
        return self._sig_prefix + b64url_encode(self._signature(signing_input))

    def sign_batch(self, contents: Sequence[bytes]) -> list[str]:
        """One signature for all of ``contents``: a JWS over their hash tree's root, plus each one's inclusion
        proof (see the module docstring). A batch of one gets a plain :meth:`sign`, which needs no proof."""
        if len(contents) <= 1:
            return [self.sign(c) for c in contents]
        if len(contents) > _MAX_TREE_SIZE:
            raise ValueError(f"a batch signature covers at most {_MAX_TREE_SIZE} contents")
        root, paths = tree(self.tree_hash, [leaf_hash(self.tree_hash, c) for c in contents])
        header = {**self.header, TREE_HEADER: {"hash": self.tree_hash, "size": len(contents)}}
        header_b64 = b64url_encode(json.dumps(header, separators=(",", ":")).encode("utf-8"))
        signing_input = header_b64.encode("ascii") + b"." + base64.urlsafe_b64encode(root).rstrip(b"=")
        jws = f"{header_b64}..{b64url_encode(self._signature(signing_input))}"
        return [f"{jws}~{i}~{b64url_encode(b''.join(path))}" for i, path in enumerate(paths)]

    def _signature(self, signing_input: bytes) -> bytes:
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(signing_input, _ECDSA_SHA256))
            return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
        if isinstance(key, Sm2PrivateKey):
            return sm2_sign(key, signing_input)  # DER, as GM/T 0009 fixes it (not JOSE's fixed-width r||s)
        return key.sign(signing_input)

    def __repr__(self) -> str:
        return f"Signer(alg={self.alg!r}, kid={self.kid!r}, thumbprint={self.thumbprint!r})"


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Where one content sits in a batch signature's tree: its leaf index and the sibling hashes to the root."""

    hash: str  # "SHA-256" or "SM3", from the protected header
    size: int
    index: int
    path: tuple[bytes, ...]

    def root(self, content: bytes) -> bytes | None:
        """The root this proof leads to from ``content`` (None if the proof does not fit the tree's size)."""
        return inclusion_root(self.hash, leaf_hash(self.hash, content), self.index, self.size, self.path)


@dataclass(frozen=True, slots=True)
class DetachedJws:
    """A parsed (not yet verified) detached JWS; ``proof`` is set for one content of a batch signature."""

    header: dict[str, Any]
    signing_prefix: bytes  # the base64url protected header, as received
    signature: bytes
    proof: InclusionProof | None = None

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str:
        return str(self.header["kid"])

    @property
    def thumbprint(self) -> str:
        return str(self.header["x5t#S256"])

    def signed_content(self, content: bytes) -> bytes | None:
        """What the signature itself covers: ``content``, or for a batch signature the tree root that the
        proof leads to from ``content`` (None if the proof does not fit)."""
        return content if self.proof is None else self.proof.root(content)


def _parse_proof(header: dict[str, Any], index: bytes, path: bytes) -> InclusionProof:
    params = header.get(TREE_HEADER)
    if not isinstance(params, dict) or set(params) != {"hash", "size"}:
        raise JwsError(f"an inclusion proof needs a {TREE_HEADER} header {{hash, size}}")
    hash_name, size = params["hash"], params["size"]
    if not isinstance(hash_name, str) or hash_name not in HASHES:
        raise JwsError(f"unsupported tree hash {hash_name!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= _MAX_TREE_SIZE:
        raise JwsError(f"tree size must be an integer from 2 to {_MAX_TREE_SIZE}")
    # At most 10 digits before int(): a 5,000-digit index would hit Python's integer-string limit.
    if (not index.isdigit() or len(index) > 10 or (len(index) > 1 and index[0] == ord("0"))
            or int(index) >= size):
        raise JwsError("leaf index is not a decimal integer below the tree size")
    try:
        hashes_ = b64url_decode(path)
    except ValueError:
        raise JwsError("inclusion path is not base64url") from None
    depth = (size - 1).bit_length()  # the longest path in a tree of that size
    if len(hashes_) % DIGEST_SIZE or not 0 < len(hashes_) <= depth * DIGEST_SIZE:
        raise JwsError(f"inclusion path is not a list of 1 to {depth} {DIGEST_SIZE}-byte hashes")
    path_ = tuple(hashes_[i:i + DIGEST_SIZE] for i in range(0, len(hashes_), DIGEST_SIZE))
    return InclusionProof(hash_name, size, int(index), path_)


def parse_detached(jws: str | bytes, known: OrderedDict[bytes, DetachedJws] | None = None) -> DetachedJws:
    """Parse ``<b64url(header)>..<b64url(signature)>``, optionally followed by ``~<leaf index>~<b64url(path)>``
    for a batch signature; JwsError if it is malformed or unsupported. ``known`` (see :meth:`Verifier.parse`)
    holds the JWS parts already parsed, which every member of a batch shares."""
    if len(jws) > MAX_JWS_LENGTH:
        raise JwsError(f"JWS longer than {MAX_JWS_LENGTH} characters")
    if isinstance(jws, str):
        try:
            raw = jws.encode("ascii")
        except UnicodeEncodeError:
            raise JwsError("JWS contains non-ASCII characters") from None
    else:
        raw = bytes(jws)
    raw, *proof_parts = raw.split(_PROOF_SEPARATOR.encode())
    if len(proof_parts) not in (0, 2):
        raise JwsError("a batch signature is <JWS>~<leaf index>~<inclusion path>")
    base = known.get(raw) if known is not None else None
    if base is None:
        base = _parse_jws(raw)
        if known is not None and proof_parts:
            known[raw] = base
    if proof_parts:
        proof = _parse_proof(base.header, proof_parts[0], proof_parts[1])
        return DetachedJws(header=base.header, signing_prefix=base.signing_prefix, signature=base.signature,
                           proof=proof)
    if TREE_HEADER in base.header:
        raise JwsError("a batch signature without its inclusion proof")
    return base


def _parse_jws(raw: bytes) -> DetachedJws:
    parts = raw.split(b".")
    if len(parts) != 3:
        raise JwsError("a detached JWS has three dot-separated parts")
    header_b64, payload_b64, signature_b64 = parts
    if payload_b64:
        raise JwsError("the payload part of a detached JWS must be empty")
    if not header_b64 or not signature_b64:
        raise JwsError("empty header or signature part")
    try:
        header_json = b64url_decode(header_b64)
        signature = b64url_decode(signature_b64)
    except ValueError:
        raise JwsError("header or signature is not base64url") from None
    try:
        header = orjson.loads(header_json)
    except orjson.JSONDecodeError:
        raise JwsError("protected header is not JSON") from None
    if not isinstance(header, dict):
        raise JwsError("protected header is not a JSON object")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise JwsError(f"unsupported alg {alg!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JwsError("missing kid")
    x5t = header.get("x5t#S256")
    if (
        not isinstance(x5t, str)
        or len(x5t) != 43  # 32 bytes
        or x5t.encode("ascii", "replace").translate(None, _B64URL_ALPHABET)
    ):
        raise JwsError("missing or malformed x5t#S256")
    if "crit" in header or "b64" in header:
        # RFC 7515 4.1.11: critical extensions we do not implement must be rejected (RFC 7797 b64 included).
        raise JwsError("unsupported critical header parameters")
    return DetachedJws(header=header, signing_prefix=header_b64, signature=signature)


def verify_detached(parsed: DetachedJws, content: bytes, public_key: object) -> bool:
    """True if ``parsed`` is a valid signature over exactly ``content`` by ``public_key`` (for a batch
    signature: the proof leads from ``content`` to a root that the signature covers).

    The key type must match the header's alg (a P-256 key for ES256, an Ed25519 key for EdDSA): any mismatch,
    a wrong signature length or a bad signature returns False; it never raises for those.
    """
    signed = parsed.signed_content(content)
    return signed is not None and _verify_signature(parsed, signed, public_key)


class Verifier:
    """:func:`verify_detached` that remembers the batch signatures it has verified (the most recent
    ``capacity``): the messages of a batch share one signature over one root, so the receiver checks the
    signature once and each further message costs its inclusion proof (a few hashes). Only successes are
    remembered, keyed by the signature's bytes and checked against the same root and the same key object."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._verified: OrderedDict[tuple[bytes, bytes], tuple[bytes, object]] = OrderedDict()
        self._parsed: OrderedDict[bytes, DetachedJws] = OrderedDict()

    def parse(self, jws: str | bytes) -> DetachedJws:
        """:func:`parse_detached`, parsing a batch's shared JWS part (header JSON, base64) once."""
        parsed = parse_detached(jws, self._parsed)
        if len(self._parsed) > self._capacity:
            self._parsed.popitem(last=False)
        return parsed

    def verify(self, parsed: DetachedJws, content: bytes, public_key: object) -> bool:
        signed = parsed.signed_content(content)
        if signed is None:
            return False
        if parsed.proof is None:
            return _verify_signature(parsed, signed, public_key)
        key = (parsed.signing_prefix, parsed.signature)
        known = self._verified.get(key)
        if known is not None and known[0] == signed and known[1] is public_key:
            return True
        if not _verify_signature(parsed, signed, public_key):
            return False
        self._verified[key] = (signed, public_key)
        if len(self._verified) > self._capacity:
            self._verified.popitem(last=False)
        return True


def es256_verify(public_key: object, signature: bytes, signing_input: bytes) -> bool:
    """An ES256 signature as JWS spells it (r || s, 32 bytes each, RFC 7518 3.4) by a P-256 key over
    `signing_input`. Shared by the detached JWS here and the platform tokens (gateway/http/es256.py)."""
    if (
        not isinstance(public_key, ec.EllipticCurvePublicKey)
        or not isinstance(public_key.curve, ec.SECP256R1)
        or len(signature) != 2 * _P256_BYTES
    ):
        return False
    der = encode_dss_signature(
        int.from_bytes(signature[:_P256_BYTES], "big"), int.from_bytes(signature[_P256_BYTES:], "big")
    )
    try:
        public_key.verify(der, signing_input, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


def _verify_signature(parsed: DetachedJws, content: bytes, public_key: object) -> bool:
    alg = parsed.header.get("alg")
    signature = parsed.signature
    signing_input = parsed.signing_prefix + b"." + base64.urlsafe_b64encode(content).rstrip(b"=")
    try:
        if alg == "ES256":
            return es256_verify(public_key, signature, signing_input)
        if alg == "SM2SM3":
            return isinstance(public_key, Sm2PublicKey) and sm2_verify(public_key, signature, signing_input)
        if alg == "EdDSA":
            if not isinstance(public_key, ed25519.Ed25519PublicKey) or len(signature) != 64:
                return False
            public_key.verify(signature, signing_input)
            return True
    except (InvalidSignature, ValueError):
        return False
    return False
