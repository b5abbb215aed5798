"""A file's manifest: the last record of a file on its files topic, an envelope signed like every message.

Its type is ``yrdx.file``; its payload (sealed to the destination, always) names the file (id, digest, size,
media type, chunk count) and carries the file's chunk key, so the key only ever travels sealed and signed. The
receiving gateway verifies and opens it with the egress checks (`gateway.relay.checks.Checks.verify`), then
reads it here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from gateway.crypto.jws import b64url_decode, b64url_encode
from gateway.files.chunks import CHUNK_BYTES, DIGEST_ALGS

__all__ = ["FILE_TYPE", "MEDIA_TYPE", "Manifest", "ManifestError"]

FILE_TYPE: Final = "yrdx.file"
# As yrdx.claim_check's media_type pattern (RFC 6838 names, lowercase).
MEDIA_TYPE: Final = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_FILE_ID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_FIELDS: Final = {"file_id", "digest", "size", "media_type", "chunks", "chunk_bytes", "key"}


class ManifestError(ValueError):
    """A manifest payload that is not one: the file it names is refused."""


def valid_file_id(value: object) -> bool:
    return isinstance(value, str) and _FILE_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Manifest:
    file_id: str
    digest_alg: str
    digest: str  # lowercase hex
    size: int
    media_type: str
    chunks: int
    key: bytes
    chunk_bytes: int = CHUNK_BYTES

    def claim_check(self) -> dict[str, Any]:
        """The claim-check object of this file (schemas/yrdx/yrdx.claim_check.v1.json)."""
        return {"file_id": self.file_id, "digest": {"alg": self.digest_alg, "value": self.digest},
                "size": self.size, "media_type": self.media_type}

    def payload(self) -> dict[str, Any]:
        """What the manifest envelope seals."""
        return {**self.claim_check(), "chunks": self.chunks, "chunk_bytes": self.chunk_bytes,
                "key": b64url_encode(self.key)}

    @classmethod
    def read(cls, payload: object) -> Manifest:
        """The manifest in an opened payload; ManifestError saying what is wrong with it."""
        if not isinstance(payload, dict) or set(payload) != _FIELDS:
            raise ManifestError(f"a manifest has exactly the fields {sorted(_FIELDS)}")
        digest = payload["digest"]
        size, chunks, chunk_bytes = payload["size"], payload["chunks"], payload["chunk_bytes"]
        if not valid_file_id(payload["file_id"]):
            raise ManifestError("file_id is not a lowercase UUID")
        if (not isinstance(digest, dict) or digest.get("alg") not in DIGEST_ALGS
                or not isinstance(digest.get("value"), str) or not _HEX64.fullmatch(digest["value"])):
            raise ManifestError("digest is not {alg: SHA-256|SM3, value: 64 lowercase hex digits}")
        if not all(type(n) is int and n >= 0 for n in (size, chunks, chunk_bytes)) or chunk_bytes == 0:
            raise ManifestError("size, chunks and chunk_bytes are not non-negative integers")
        if chunks != -(-size // chunk_bytes):
            raise ManifestError(f"{size} bytes in chunks of {chunk_bytes} are not {chunks} chunks")
        if not isinstance(payload["media_type"], str) or not MEDIA_TYPE.fullmatch(payload["media_type"]):
            raise ManifestError("media_type is not a lowercase type/subtype")
        try:
            key = b64url_decode(payload["key"])
        except (ValueError, TypeError) as e:
            raise ManifestError("key is not base64url") from e
        return cls(payload["file_id"], digest["alg"], digest["value"], size, payload["media_type"], chunks, key,
                   chunk_bytes)
