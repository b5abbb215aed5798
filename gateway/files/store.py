"""The receiving gateway's file spool: sealed chunks as they arrive, then the file's verdict once its manifest came.

Layout under ``files.spool_dir`` (one directory per file, named by its id):

- ``chunk-<index>``: a chunk exactly as it travelled (sealed), written atomically (temporary file, then rename),
  so a chunk read again after a restart, or twice, just replaces itself;
- ``file.json``: the verdict, written once the manifest is in: ``complete`` (every chunk opened and the bytes
  have the manifest's digest and size) with the manifest's sealed payload (its chunk key stays sealed at rest),
  or ``failed`` with the reason;
- ``grant-<hash of a platform id>``: that platform received a message referencing the file and may download it.

Nothing is ever decrypted to disk: a download opens the chunks again on the way out. Directories older than
``files.retention_days`` are deleted by :meth:`FileStore.sweep`. Several replicas of one region share the spool
on a shared volume: the consumer group hands each partition (so each file) to one of them, writes are atomic
renames, and any replica can answer a download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.crypto.seal import Opener
from gateway.files.chunks import CHUNK_BYTES, TAG_BYTES, ChunkCipher, ChunkError, new_digest
from gateway.files.manifest import Manifest, valid_file_id
from gateway.wire.envelope import utc_timestamp
from gateway.wire.problems import Rejection

__all__ = ["FileStore", "StoredFile"]

_VERDICT = "file.json"


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file's verdict: ``complete`` (with its claim check) or ``failed`` (with the reason)."""

    file_id: str
    sender: str
    status: str
    claim: dict[str, Any]
    chunks: int = 0
    sealed: str = ""  # the manifest's sealed payload: the chunk key, opened only to serve a download
    reason: str = ""
    detail: str = ""

    @property
    def rejection(self) -> Rejection | None:
        return Rejection(self.reason, self.detail) if self.status == "failed" else None


def _chunk_name(index: int) -> str:
    return f"chunk-{index:08d}"


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # the offset is committed after this: the chunk must be on disk by then
    tmp.replace(path)


class FileStore:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_chunks = -(-max_bytes // CHUNK_BYTES)
        root.mkdir(parents=True, exist_ok=True)

    def _dir(self, file_id: str) -> Path:
        if not valid_file_id(file_id):
            raise ValueError("not a file id")
        return self.root / file_id

    # --- arriving ------------------------------------------------------------------------------------------

    def put_chunk(self, file_id: str, index: int, sealed: bytes) -> Rejection | None:
        """Keep one sealed chunk; a chunk that cannot belong to any file this gateway accepts is refused."""
        if not 0 <= index < self.max_chunks:
            return Rejection("invalid_record", f"chunk index {index} is outside 0..{self.max_chunks - 1}")
        if not TAG_BYTES <= len(sealed) <= CHUNK_BYTES + TAG_BYTES:
            return Rejection("invalid_record", f"a sealed chunk of {len(sealed)} bytes")
        where = self._dir(file_id)
        if (where / _VERDICT).exists():
            return None  # read again after the verdict (a restart): the verdict stands
        where.mkdir(exist_ok=True)
        _write_atomically(where / _chunk_name(index), sealed)
        return None

    def settle(self, manifest: Manifest, sender: str, sealed: str) -> StoredFile:
        """Check the file against its manifest (every chunk there, each opens, digest and size match) and keep
        the verdict. Reads each chunk once and holds one at a time. Runs off the event loop (a thread)."""
        existing = self.status(manifest.file_id)
        if existing is not None:
            return existing  # the manifest read again after a restart
        rejection = self._check(manifest)
        where = self._dir(manifest.file_id)
        where.mkdir(exist_ok=True)
        if rejection is None:
            stored = StoredFile(manifest.file_id, sender, "complete", manifest.claim_check(), manifest.chunks, sealed)
        else:
            stored = StoredFile(manifest.file_id, sender, "failed", manifest.claim_check(), manifest.chunks,
                                reason=rejection.code, detail=rejection.detail)
            for chunk in where.glob("chunk-*"):  # nothing of a refused file is kept
                chunk.unlink(missing_ok=True)
        self._write_verdict(stored)
        return stored

    def fail(self, file_id: str, sender: str, rejection: Rejection) -> None:
        """A file whose manifest itself was refused (bad signature, undecryptable ...): refused as a whole."""
        if not valid_file_id(file_id) or self.status(file_id) is not None:
            return
        self._dir(file_id).mkdir(exist_ok=True)
        self._write_verdict(StoredFile(file_id, sender, "failed", {}, reason=rejection.code, detail=rejection.detail))
        for chunk in self._dir(file_id).glob("chunk-*"):
            chunk.unlink(missing_ok=True)

    def _check(self, m: Manifest) -> Rejection | None:
        where = self._dir(m.file_id)
        missing = [i for i in range(m.chunks) if not (where / _chunk_name(i)).is_file()]
        if missing:
            return Rejection("file_incomplete", f"{len(missing)} of {m.chunks} chunks missing, the first {missing[0]}")
        try:
            cipher = ChunkCipher(m.digest_alg, m.file_id, m.key)
        except ChunkError as e:
            return Rejection("file_corrupt", str(e))
        digest = new_digest(m.digest_alg)
        size = 0
        for i in range(m.chunks):
            try:
                plain = cipher.open(i, (where / _chunk_name(i)).read_bytes())
            except ChunkError as e:
                return Rejection("file_corrupt", str(e))
            if i < m.chunks - 1 and len(plain) != m.chunk_bytes:
                return Rejection("file_corrupt", f"chunk {i} holds {len(plain)} bytes, not {m.chunk_bytes}")
            size += len(plain)
            digest.update(plain)
        if size != m.size:
            return Rejection("file_digest_mismatch", f"{size} bytes arrived, the manifest says {m.size}")
        if digest.hexdigest() != m.digest:
            return Rejection("file_digest_mismatch", f"the bytes do not have the manifest's {m.digest_alg} digest")
        return None

    def _write_verdict(self, f: StoredFile) -> None:
        doc = {"file_id": f.file_id, "from": f.sender, "status": f.status, "claim": f.claim, "chunks": f.chunks,
               "sealed": f.sealed, "reason": f.reason, "detail": f.detail, "at": utc_timestamp()}
        _write_atomically(self._dir(f.file_id) / _VERDICT, orjson.dumps(doc))

    # --- looking up, granting, serving ---------------------------------------------------------------------

    def status(self, file_id: str) -> StoredFile | None:
        """The file's verdict, or None while its manifest has not arrived (or for an unknown id)."""
        if not valid_file_id(file_id):
            return None
        try:
            doc = orjson.loads((self.root / file_id / _VERDICT).read_bytes())
        except FileNotFoundError:
            return None
        return StoredFile(doc["file_id"], doc["from"], doc["status"], doc["claim"], doc["chunks"], doc["sealed"],
                          doc["reason"], doc["detail"])

    @staticmethod
    def _grant_name(platform_id: str) -> str:
        return "grant-" + hashlib.sha256(platform_id.encode()).hexdigest()[:32]

    def grant(self, file_id: str, platform_id: str) -> None:
        """The platform received (or is receiving) a message referencing the file: it may download it."""
        _write_atomically(self._dir(file_id) / self._grant_name(platform_id), b"")

    def granted(self, file_id: str, platform_id: str) -> bool:
        return valid_file_id(file_id) and (self.root / file_id / self._grant_name(platform_id)).is_file()

    def chunks(self, f: StoredFile, opener: Opener) -> Iterator[bytes]:
        """The plaintext of a complete file, one chunk at a time (ChunkError if the spool was altered since)."""
        m = Manifest.read(orjson.loads(opener.open(f.sealed)))
        cipher = ChunkCipher(m.digest_alg, m.file_id, m.key)
        where = self._dir(f.file_id)
        for i in range(m.chunks):
            yield cipher.open(i, (where / _chunk_name(i)).read_bytes())

    def sweep(self, older_than_s: float) -> int:
        """Delete the files (complete, failed or partial) not touched for ``older_than_s``; how many."""
        cutoff = time.time() - older_than_s
        removed = 0
        for where in self.root.iterdir():
            if where.is_dir() and valid_file_id(where.name) and where.stat().st_mtime < cutoff:
                shutil.rmtree(where, ignore_errors=True)
                removed += 1
        return removed
