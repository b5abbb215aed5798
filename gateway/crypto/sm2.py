"""SM2 (GB/T 32918, GM/T 0003) behind one small API: keys, signatures, public-key encryption, certificates.

The national suite of the gateway (README "The national suite (SM2 / SM3 / SM4)") fixes:

- signatures: SM2 with SM3 and the default signer ID ``"1234567812345678"`` (GM/T 0009-2012), encoded as DER
  ``SEQUENCE { r INTEGER, s INTEGER }``;
- ciphertexts: the GM/T 0003.4 raw layout ``C1 || C3 || C2`` with ``C1 = 04 || x || y`` (65 bytes);
- certificates: X.509 v3 signed with SM2-with-SM3 (OID 1.2.156.10197.1.501, no parameters, as openssl emits),
  the subject key as ``id-ecPublicKey`` with the named curve SM2 (1.2.156.10197.1.301).

Backends: ``tongsuopy`` (Tongsuo, constant-time C) generates keys, signs, verifies and (de)serializes them; the
point multiplication of SM2 encryption, which tongsuopy does not offer, is gmssl's (pure Python). ``cryptography``
has SM3 but no SM2: it parses SM2 certificates (``cert.public_key()`` raises UnsupportedAlgorithm) but can neither
build nor verify them, so :func:`issue_sm2_certificate` and :func:`sm2_verify_issued_by` do that here.

Keys are wrapped in :class:`Sm2PrivateKey` / :class:`Sm2PublicKey` (tongsuopy ships no type information, so
its classes would be ``Any`` to mypy and every key union containing them would accept anything). The wrappers
take ``cryptography``'s serialization enums, so code that writes or compares keys treats all key types alike.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any, Final, TypeVar, final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from gmssl import sm2 as gmssl_sm2
from tongsuopy.crypto import exceptions as ts_exceptions
from tongsuopy.crypto import hashes as ts_hashes
from tongsuopy.crypto import serialization as ts_serialization
from tongsuopy.crypto.asymciphers import ec as ts_ec

__all__ = [
    "SM2_DEFAULT_ID",
    "SM2_WITH_SM3_OID",
    "Sm2Error",
    "Sm2PrivateKey",
    "Sm2PublicKey",
    "derive_sm2_key",
    "generate_sm2_key",
    "is_sm2_certificate",
    "is_sm2_key",
    "issue_sm2_certificate",
    "key_identifier",
    "load_sm2_private_key",
    "load_sm2_public_key",
    "sm2_decrypt",
    "sm2_encrypt",
    "sm2_public_key_from_point",
    "sm2_public_key_of",
    "sm2_sign",
    "sm2_verify",
    "sm2_verify_issued_by",
]

# The signer ID tongsuopy (like openssl and gmssl) puts into Z_A when none is given; signer and verifier must use
# the same one and it is not transmitted. Documentation only: the backends apply it (the tests check that).
SM2_DEFAULT_ID: Final = b"1234567812345678"
SM2_WITH_SM3_OID: Final = x509.ObjectIdentifier("1.2.156.10197.1.501")

# Curve parameters (GB/T 32918.5, the recommended 256-bit curve).
_P: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
_A: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
_B: Final = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
_N: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123

# DER AlgorithmIdentifiers: SM2-with-SM3 (no parameters, as openssl writes it), ecdsa-with-SHA256, and the
# subjectPublicKeyInfo algorithm of an SM2 key (id-ecPublicKey, namedCurve SM2).
_SM2_SM3_ALG_ID: Final = bytes.fromhex("300a06082a811ccf55018375")
_ECDSA_SHA256_ALG_ID: Final = bytes.fromhex("300a06082a8648ce3d040302")
_SM2_SPKI_ALG_ID: Final = bytes.fromhex("301306072a8648ce3d020106082a811ccf5501822d")

_SM2_SM3: Final = ts_ec.ECDSA(ts_hashes.SM3())
_POINT_BYTES: Final = 65  # 04 || x || y
_C3_BYTES: Final = 32  # SM3 digest

# gmssl's point multiplication only reads the curve table, so one instance serves every call (and every thread).
# Its key arguments are deliberately empty: gmssl strips a "04" prefix from a public key with str.lstrip("04"),
# which also eats leading '0'/'4' digits of x, so it is never handed a key.
_GMSSL: Final = gmssl_sm2.CryptSM2(private_key="", public_key="")

_TS_ENCODING: Final = {
    serialization.Encoding.PEM: ts_serialization.Encoding.PEM,
    serialization.Encoding.DER: ts_serialization.Encoding.DER,
    serialization.Encoding.X962: ts_serialization.Encoding.X962,
}
_TS_PRIVATE_FORMAT: Final = {
    serialization.PrivateFormat.PKCS8: ts_serialization.PrivateFormat.PKCS8,
    serialization.PrivateFormat.TraditionalOpenSSL: ts_serialization.PrivateFormat.TraditionalOpenSSL,
}
_TS_PUBLIC_FORMAT: Final = {
    serialization.PublicFormat.SubjectPublicKeyInfo: ts_serialization.PublicFormat.SubjectPublicKeyInfo,
    serialization.PublicFormat.UncompressedPoint: ts_serialization.PublicFormat.UncompressedPoint,
    serialization.PublicFormat.CompressedPoint: ts_serialization.PublicFormat.CompressedPoint,
}


_K = TypeVar("_K")


class Sm2Error(ValueError):
    """An SM2 ciphertext that does not decrypt (malformed, not for this key, or tampered with), or a key or
    certificate that is not a well-formed SM2 one."""


def _ts_encoding(encoding: serialization.Encoding) -> Any:
    try:
        return _TS_ENCODING[encoding]
    except KeyError:
        raise ValueError(f"unsupported encoding {encoding} for an SM2 key") from None


# --- keys --------------------------------------------------------------------------------------------------


@final
class Sm2PublicKey:
    """An SM2 public key (tongsuopy's, validated on the curve). Compare with ``==``; serialize with
    :meth:`public_bytes` (cryptography's enums) or :meth:`point`."""

    __slots__ = ("_key", "_point")

    def __init__(self, key: Any) -> None:
        """Wraps a tongsuopy SM2 public key; use the loaders or :meth:`Sm2PrivateKey.public_key` instead."""
        if not isinstance(key, ts_ec.EllipticCurvePublicKey) or not isinstance(key.curve, ts_ec.SM2):
            raise TypeError(f"not an SM2 public key: {type(key).__name__}")
        self._key = key
        self._point: bytes = key.public_bytes(
            ts_serialization.Encoding.X962, ts_serialization.PublicFormat.UncompressedPoint
        )

    @property
    def key_size(self) -> int:
        return 256

    def point(self) -> bytes:
        """The uncompressed point ``04 || x || y`` (65 bytes)."""
        return self._point

    def public_bytes(self, encoding: serialization.Encoding, format: serialization.PublicFormat) -> bytes:
        """As cryptography's ``public_bytes``: PEM/DER SubjectPublicKeyInfo or X9.62 (un)compressed point."""
        try:
            ts_format = _TS_PUBLIC_FORMAT[format]
        except KeyError:
            raise ValueError(f"unsupported format {format} for an SM2 public key") from None
        return bytes(self._key.public_bytes(_ts_encoding(encoding), ts_format))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sm2PublicKey) and hmac.compare_digest(self._point, other._point)

    def __hash__(self) -> int:
        return hash(self._point)

    def __repr__(self) -> str:
        return f"Sm2PublicKey({self._point[1:9].hex()}...)"


@final
class Sm2PrivateKey:
    """An SM2 private key (tongsuopy's). :meth:`sign` is :func:`sm2_sign`."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: Any) -> None:
        """Wraps a tongsuopy SM2 private key; use :func:`generate_sm2_key` or the loaders instead."""
        if not isinstance(key, ts_ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ts_ec.SM2):
            raise TypeError(f"not an SM2 private key: {type(key).__name__}")
        self._key = key
        self._public = Sm2PublicKey(key.public_key())

    @property
    def key_size(self) -> int:
        return 256

    def public_key(self) -> Sm2PublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        """The DER SM2 signature (SM3, signer ID "1234567812345678") over ``data``."""
        return bytes(self._key.sign(data, _SM2_SM3))

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        """As cryptography's ``private_bytes`` (PEM/DER, PKCS8 or traditional; no encryption or a password)."""
        try:
            ts_format = _TS_PRIVATE_FORMAT[format]
        except KeyError:
            raise ValueError(f"unsupported format {format} for an SM2 private key") from None
        if isinstance(encryption_algorithm, serialization.NoEncryption):
            ts_encryption: Any = ts_serialization.NoEncryption()
        elif isinstance(encryption_algorithm, serialization.BestAvailableEncryption):
            ts_encryption = ts_serialization.BestAvailableEncryption(encryption_algorithm.password)
        else:
            raise ValueError(f"unsupported key encryption {type(encryption_algorithm).__name__}")
        return bytes(self._key.private_bytes(_ts_encoding(encoding), ts_format, ts_encryption))

    def _scalar(self) -> int:
        return int(self._key.private_numbers().private_value)

    def __repr__(self) -> str:
        return f"Sm2PrivateKey(public={self._public!r})"


def generate_sm2_key() -> Sm2PrivateKey:
    return Sm2PrivateKey(ts_ec.generate_private_key(ts_ec.SM2()))


def derive_sm2_key(private_value: int) -> Sm2PrivateKey:
    """The SM2 key with the given scalar (1 <= d <= n - 2); for test vectors and key import."""
    if not 1 <= private_value <= _N - 2:
        raise ValueError("an SM2 private value must lie in [1, n - 2]")
    return Sm2PrivateKey(ts_ec.derive_private_key(private_value, ts_ec.SM2()))


def is_sm2_key(obj: object) -> bool:
    """True for an :class:`Sm2PrivateKey` or :class:`Sm2PublicKey`."""
    return isinstance(obj, Sm2PrivateKey | Sm2PublicKey)


def _is_pem(data: bytes) -> bool:
    return data.lstrip().startswith(b"-----BEGIN")


def load_sm2_private_key(data: bytes, password: bytes | None = None) -> Sm2PrivateKey:
    """An SM2 private key from PEM or DER (PKCS8, or the traditional EC form); ValueError if ``data`` is not
    one (another key type included)."""
    load = ts_serialization.load_pem_private_key if _is_pem(data) else ts_serialization.load_der_private_key
    return _loaded("private key", lambda: load(bytes(data), password), Sm2PrivateKey)


def load_sm2_public_key(data: bytes) -> Sm2PublicKey:
    """An SM2 public key from a PEM or DER SubjectPublicKeyInfo; ValueError if ``data`` is not one."""
    load = ts_serialization.load_pem_public_key if _is_pem(data) else ts_serialization.load_der_public_key
    return _loaded("public key", lambda: load(bytes(data)), Sm2PublicKey)


def _loaded(what: str, load: Callable[[], Any], wrap: Callable[[Any], _K]) -> _K:
    """tongsuopy's key from ``load``, wrapped; Sm2Error whatever tongsuopy raises (or a non-SM2 key)."""
    try:
        key = load()
    except (ValueError, TypeError, ts_exceptions.UnsupportedAlgorithm) as e:
        raise Sm2Error(f"not an SM2 {what}: {e}") from None
    try:
        return wrap(key)
    except TypeError as e:
        raise Sm2Error(str(e)) from None


def _on_curve(x: int, y: int) -> bool:
    return x < _P and y < _P and (y * y - (x * x * x + _A * x + _B)) % _P == 0


def sm2_public_key_from_point(point: bytes) -> Sm2PublicKey:
    """The SM2 public key of an uncompressed point ``04 || x || y``; ValueError if it is not on the curve."""
    if len(point) != _POINT_BYTES or point[0] != 4:
        raise Sm2Error("an SM2 point is 04 || x || y (65 bytes)")
    try:
        return Sm2PublicKey(ts_ec.EllipticCurvePublicKey.from_encoded_point(ts_ec.SM2(), bytes(point)))
    except ValueError:
        raise Sm2Error("not a point on the SM2 curve") from None


# --- signatures --------------------------------------------------------------------------------------------


def sm2_sign(key: Sm2PrivateKey, data: bytes) -> bytes:
    """The DER SM2 signature (SM3, signer ID "1234567812345678") over ``data`` (about 70-72 bytes)."""
    return key.sign(data)


def _der_int(data: bytes, pos: int) -> tuple[int, int] | None:
    """A minimally encoded, positive DER INTEGER of at most 33 bytes at ``pos``: (value, next pos) or None."""
    if pos + 2 > len(data) or data[pos] != 0x02:
        return None
    length = data[pos + 1]
    start, end = pos + 2, pos + 2 + length
    if not 1 <= length <= 33 or end > len(data):
        return None
    body = data[start:end]
    if body[0] & 0x80 or (length > 1 and body[0] == 0 and not body[1] & 0x80):
        return None  # negative, or a superfluous leading zero
    return int.from_bytes(body, "big"), end


def _strict_der_signature(signature: bytes) -> bool:
    """True if ``signature`` is DER ``SEQUENCE { r, s }`` with 1 <= r, s < n, minimally encoded: exactly one
    encoding is accepted per signature, and tongsuopy never sees input it would report as an internal error."""
    if len(signature) < 8 or signature[0] != 0x30 or signature[1] != len(signature) - 2:
        return False  # at most 2 + 2 * 35 = 72 bytes, so the short length form is the only DER one
    r = _der_int(signature, 2)
    if r is None:
        return False
    s = _der_int(signature, r[1])
    return s is not None and s[1] == len(signature) and 0 < r[0] < _N and 0 < s[0] < _N


def sm2_verify(public_key: Sm2PublicKey, signature: bytes, data: bytes) -> bool:
    """True if ``signature`` (DER) is a valid SM2-with-SM3 signature over ``data`` by ``public_key``. Returns
    False, never raises, for a bad or malformed signature or a key that is not an SM2 public key."""
    if not isinstance(public_key, Sm2PublicKey) or not _strict_der_signature(signature):
        return False
    try:
        public_key._key.verify(bytes(signature), data, _SM2_SM3)
    except (ts_exceptions.InvalidSignature, ts_exceptions.InternalError, ValueError):
        return False
    return True


# --- encryption --------------------------------------------------------------------------------------------
#
# gmssl's point multiplication is plain Python double-and-add on the secret scalar, so its running time depends
# on the scalar. That is acceptable where it is used:
# - decryption (d * C1 with the gateway's long-term key): the receiving gateway decrypts a sealed payload only
#   after it has verified the signature of a trusted gateway over it, and then only once per content key (the
#   opener caches content keys, seal_sm.py), so an outsider cannot submit chosen ciphertexts and time them;
# - encryption (k * P_B): k is a fresh random ephemeral per content key (about one a minute per recipient) and
#   is never reused; k * G is computed by tongsuopy (constant time).
# gmssl's own encrypt() is not used: it draws k with random.choice (not a CSPRNG), and its decrypt() neither
# checks that C1 lies on the curve nor compares C3, which this module does.


def _multiply(scalar: int, point: bytes) -> bytes:
    """``scalar * point`` as x || y (64 bytes), for a point already known to be on the curve."""
    product = _GMSSL._kg(scalar, point[1:].hex())
    if product is None:  # the point at infinity: impossible for a valid point and scalar in [1, n - 1]
        raise Sm2Error("SM2 point multiplication gave the point at infinity")
    return bytes.fromhex(product)


def _kdf(z: bytes, length: int) -> bytes:
    """The SM2 key derivation function (GB/T 32918.4 5.4.3) with SM3."""
    out = bytearray()
    counter = 1
    while len(out) < length:
        digest = hashes.Hash(hashes.SM3())
        digest.update(z + counter.to_bytes(4, "big"))
        out += digest.finalize()
        counter += 1
    return bytes(out[:length])


def _sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _encrypt_with(public_key: Sm2PublicKey, plaintext: bytes, k: int) -> bytes | None:
    """Encryption with the ephemeral scalar ``k``; None if the KDF output is all zero (draw another k)."""
    c1 = derive_sm2_key(k).public_key().point()  # k * G, by tongsuopy
    shared = _multiply(k, public_key.point())  # x2 || y2 = k * P_B
    t = _kdf(shared, len(plaintext))
    if not any(t):
        return None
    c3 = _sm3(shared[:32] + plaintext + shared[32:])
    return c1 + c3 + _xor(plaintext, t)


def sm2_encrypt(public_key: Sm2PublicKey, plaintext: bytes) -> bytes:
    """SM2 public-key encryption (GB/T 32918.4) of a non-empty ``plaintext``: ``C1 || C3 || C2`` with
    ``C1 = 04 || x1 || y1`` (65 bytes), C3 the SM3 check value (32 bytes) and C2 as long as the plaintext."""
    if not isinstance(public_key, Sm2PublicKey):
        raise TypeError(f"not an SM2 public key: {type(public_key).__name__}")
    if not plaintext:
        raise ValueError("SM2 encryption needs a non-empty plaintext")
    while True:
        ciphertext = _encrypt_with(public_key, bytes(plaintext), 1 + secrets.randbelow(_N - 2))
        if ciphertext is not None:
            return ciphertext


def sm2_decrypt(private_key: Sm2PrivateKey, ciphertext: bytes) -> bytes:
    """The plaintext of an :func:`sm2_encrypt` ciphertext (``C1 || C3 || C2``); :class:`Sm2Error` (a
    ValueError) if it is malformed, C1 is not on the curve, or C3 does not match (wrong key or tampered)."""
    if not isinstance(private_key, Sm2PrivateKey):
        raise TypeError(f"not an SM2 private key: {type(private_key).__name__}")
    if len(ciphertext) <= _POINT_BYTES + _C3_BYTES or ciphertext[0] != 4:
        raise Sm2Error("not an SM2 ciphertext (04 || x || y || C3 || C2)")
    c1 = bytes(ciphertext[:_POINT_BYTES])
    c3 = bytes(ciphertext[_POINT_BYTES : _POINT_BYTES + _C3_BYTES])
    c2 = bytes(ciphertext[_POINT_BYTES + _C3_BYTES :])
    if not _on_curve(int.from_bytes(c1[1:33], "big"), int.from_bytes(c1[33:], "big")):
        raise Sm2Error("SM2 ciphertext: C1 is not a point on the curve")
    shared = _multiply(private_key._scalar(), c1)  # x2 || y2 = d_B * C1 (the cofactor is 1)
    t = _kdf(shared, len(c2))
    if not any(t):
        raise Sm2Error("SM2 ciphertext: the derived key is zero")
    plaintext = _xor(c2, t)
    if not hmac.compare_digest(_sm3(shared[:32] + plaintext + shared[32:]), c3):
        raise Sm2Error("SM2 ciphertext does not decrypt with this key, or was tampered with")
    return plaintext


# --- certificates ------------------------------------------------------------------------------------------


def _tlv(data: bytes, pos: int) -> tuple[int, int]:
    """The DER element at ``pos``: (start of its content, end). Definite lengths only."""
    if pos + 2 > len(data) or data[pos] & 0x1F == 0x1F:
        raise Sm2Error("malformed DER")
    first = data[pos + 1]
    start = pos + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or start + count > len(data):
            raise Sm2Error("malformed DER length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise Sm2Error("truncated DER")
    return start, end


def _children(der: bytes) -> list[bytes]:
    """The encoded elements inside a DER SEQUENCE that spans all of ``der``."""
    if not der or der[0] != 0x30:
        raise Sm2Error("not a DER SEQUENCE")
    start, end = _tlv(der, 0)
    if end != len(der):
        raise Sm2Error("trailing bytes after a DER SEQUENCE")
    out = []
    pos = start
    while pos < end:
        _, next_pos = _tlv(der, pos)
        out.append(der[pos:next_pos])
        pos = next_pos
    return out


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + content


def _tbs_index(fields: list[bytes]) -> int:
    """The index of the TBSCertificate's signature AlgorithmIdentifier (after the optional [0] version)."""
    return 2 if fields and fields[0][0] == 0xA0 else 1


def _spki(tbs: bytes) -> bytes:
    fields = _children(tbs)
    index = _tbs_index(fields) + 4  # signature, issuer, validity, subject, subjectPublicKeyInfo
    if index >= len(fields):
        raise Sm2Error("TBSCertificate without subjectPublicKeyInfo")
    return fields[index]


def is_sm2_certificate(cert: x509.Certificate) -> bool:
    """True if the certificate's subject key is an SM2 key (whoever signed the certificate)."""
    try:
        spki = _children(_spki(cert.tbs_certificate_bytes))
    except Sm2Error:
        return False
    return bool(spki) and spki[0] == _SM2_SPKI_ALG_ID


def sm2_public_key_of(cert: x509.Certificate) -> Sm2PublicKey:
    """The SM2 subject key of a certificate (which cryptography cannot load); TypeError if the certificate's
    key is of another type, ValueError (:class:`Sm2Error`) if it is malformed."""
    spki = _spki(cert.tbs_certificate_bytes)
    fields = _children(spki)
    if not fields or fields[0] != _SM2_SPKI_ALG_ID:
        raise TypeError("the certificate's key is not an SM2 key")
    return load_sm2_public_key(spki)


def sm2_verify_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if ``cert`` names ``issuer``'s subject as its issuer and carries a valid SM2-with-SM3 signature by
    ``issuer``'s SM2 key over its TBSCertificate (the SM2 counterpart of cryptography's
    ``verify_directly_issued_by``; validity and extensions are the caller's). Never raises."""
    try:
        if cert.issuer != issuer.subject:
            return False
        tbs = cert.tbs_certificate_bytes
        outer = _children(cert.public_bytes(serialization.Encoding.DER))
        inner = _children(tbs)
        if len(outer) != 3 or outer[1] != _SM2_SM3_ALG_ID or inner[_tbs_index(inner)] != _SM2_SM3_ALG_ID:
            return False
        return sm2_verify(sm2_public_key_of(issuer), cert.signature, tbs)
    except (TypeError, ValueError):
        return False


CertificateIssuerKey = Sm2PrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def issue_sm2_certificate(
    builder: x509.CertificateBuilder,
    public_key: Sm2PublicKey | CertificatePublicKeyTypes,
    issuer_key: CertificateIssuerKey,
) -> x509.Certificate:
    """Sign ``builder`` (every field set but the public key) for ``public_key`` with ``issuer_key``, where at
    least one of the two is SM2. An SM2 issuer signs with SM2-with-SM3; a P-256 (ecdsa-with-SHA256) or Ed25519
    issuer may certify an SM2 subject key.

    cryptography encodes every TBSCertificate field (names, validity, extensions) with a throwaway P-256 key in
    the place of each SM2 key; then the throwaway subjectPublicKeyInfo and the ecdsa-with-SHA256 signature
    AlgorithmIdentifier are replaced, at their positions in the TBSCertificate, by the SM2 ones, and the result
    is signed and assembled: Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature BIT STRING }.
    """
    subject_sm2 = isinstance(public_key, Sm2PublicKey)
    issuer_sm2 = isinstance(issuer_key, Sm2PrivateKey)
    if not subject_sm2 and not issuer_sm2:
        raise ValueError("neither the subject key nor the issuer key is SM2: use CertificateBuilder.sign")
    placeholder = ec.generate_private_key(ec.SECP256R1())
    draft_public = placeholder.public_key() if isinstance(public_key, Sm2PublicKey) else public_key
    draft_signer = placeholder if isinstance(issuer_key, Sm2PrivateKey) else issuer_key
    draft_hash = None if isinstance(draft_signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    draft = builder.public_key(draft_public).sign(draft_signer, draft_hash)

    fields = _children(draft.tbs_certificate_bytes)
    alg_index = _tbs_index(fields)
    spki_index = alg_index + 4
    if isinstance(public_key, Sm2PublicKey):
        placeholder_spki = placeholder.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        sm2_spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if fields[spki_index] != placeholder_spki or len(sm2_spki) != len(placeholder_spki):
            raise RuntimeError("unexpected TBSCertificate layout: subjectPublicKeyInfo not found")
        fields[spki_index] = sm2_spki
    if isinstance(issuer_key, Sm2PrivateKey):
        if fields[alg_index] != _ECDSA_SHA256_ALG_ID:
            raise RuntimeError("unexpected TBSCertificate layout: signature AlgorithmIdentifier not found")
        fields[alg_index] = _SM2_SM3_ALG_ID
    tbs = _der(0x30, b"".join(fields))

    if isinstance(issuer_key, Sm2PrivateKey):
        signature = sm2_sign(issuer_key, tbs)
    elif isinstance(issuer_key, ec.EllipticCurvePrivateKey):
        signature = issuer_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    else:
        signature = issuer_key.sign(tbs)
    der = _der(0x30, tbs + fields[alg_index] + _der(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)


def key_identifier(public_key: Sm2PublicKey | CertificatePublicKeyTypes) -> bytes:
    """RFC 5280 4.2.1.2 method (1): SHA-1 over the subjectPublicKey bits, for the subject and authority key
    identifier extensions (what cryptography's ``SubjectKeyIdentifier.from_public_key`` computes)."""
    if isinstance(public_key, Sm2PublicKey):
        return hashlib.sha1(public_key.point(), usedforsecurity=False).digest()
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest
