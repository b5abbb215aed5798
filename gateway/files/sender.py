"""The sending side: a platform's upload streamed to the destination's files topic as sealed chunks, then the
file's signed manifest, without ever holding the file (at most ``window`` chunks are in flight at once).

The 201 of POST /v1/files is answered only after the broker acknowledged every chunk and the manifest, so a
message that references the file is always published after it. An upload cut off half-way leaves chunks
without a manifest on the topic: the receiver never accepts them, and its retention sweep deletes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import orjson

from gateway.audit.trail import AuditTrail
from gateway.crypto.jws import Signer
from gateway.crypto.seal import Sealer, SmSealer
from gateway.files.chunks import CHUNK_BYTES, ChunkCipher, new_digest
from gateway.files.manifest import FILE_TYPE, Manifest
from gateway.kafka.port import OutRecord, Publisher
from gateway.wire import envelope, headers
from gateway.wire.regions import Topics

__all__ = ["FileSender", "TooLarge"]

WINDOW: Final = 4  # chunks published but not yet acknowledged: what an upload holds (4 x 512 KiB)

Read = Callable[[int], Awaitable[bytes]]  # up to n bytes of the upload; b"" at its end


class TooLarge(ValueError):
    """The upload passed the configured maximum; nothing was acknowledged to the platform."""


def digest_alg(sealer: Sealer) -> str:
    """The destination's suite names the file's digest (and so its chunk cipher): SM3 for the national suite."""
    return "SM3" if isinstance(sealer, SmSealer) else "SHA-256"


async def read_chunk(read: Read) -> bytes:
    """The next CHUNK_BYTES of the upload (fewer only at its end)."""
    parts: list[bytes] = []
    size = 0
    while size < CHUNK_BYTES:
        part = await read(CHUNK_BYTES - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


class FileSender:
    def __init__(self, region: str, topics: Topics, signer: Signer, publisher: Publisher,
                 sealers: Mapping[str, Sealer], max_bytes: int, audit: AuditTrail | None = None) -> None:
        self._region = region
        self._audit = audit
        self._topics = topics
        self._signer = signer
        self._publisher = publisher
        self._sealers = sealers
        self.max_bytes = max_bytes

    def can_send_to(self, region: str) -> bool:
        return region in self._sealers

    async def send(self, to: str, media_type: str, read: Read) -> Manifest:
        """Stream the upload to ``to``; its manifest once the broker acknowledged everything. Raises TooLarge,
        BrokerUnavailable, or what ``read`` raises (a client gone, a timeout)."""
        sealer = self._sealers[to]
        file_id = envelope.uuid7()
        cipher = ChunkCipher(digest_alg(sealer), file_id)
        digest = new_digest(cipher.digest_alg)
        topic, key = self._topics.files(to), file_id.encode()
        in_flight: list[asyncio.Task[None]] = []
        size = index = 0
        try:
            while chunk := await read_chunk(read):
                size += len(chunk)
                if size > self.max_bytes:
                    raise TooLarge(f"the file exceeds {self.max_bytes} bytes")
                digest.update(chunk)
                record = OutRecord(topic, cipher.seal(index, chunk), key,
                                   [(headers.FILE_ID, key), (headers.FILE_CHUNK, str(index).encode())])
                if len(in_flight) >= WINDOW:
                    await in_flight.pop(0)
                in_flight.append(asyncio.create_task(self._publisher.publish([record])))
                index += 1
            await asyncio.gather(*in_flight)
        finally:  # cut off (TooLarge, a client gone, the broker): nothing of it is left running
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        manifest = Manifest(file_id, cipher.digest_alg, digest.hexdigest(), size, media_type, index, cipher.key)
        _, env = envelope.build(msg_type=FILE_TYPE, schema_version=1, sender=self._region, recipient=to,
                                payload=None, msg_id=file_id, sealed=sealer.seal(orjson.dumps(manifest.payload())))
        await self._publisher.publish([OutRecord(topic, env, key, [
            (headers.SIGNATURE, self._signer.sign(env).encode()), (headers.FILE_ID, key)])])
        if self._audit is not None:  # acknowledged before the 201, as a message's records before its 202
            self._audit.append("file_sent", file_id, envelope.sha256_hex(env), file_id, to=to, size=size,
                               chunks=index, digest=manifest.digest_alg)
            await self._audit.durable()
        return manifest
