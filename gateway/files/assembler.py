"""The receiving side: the region's files topic read into the spool, each file judged when its manifest arrives.

Per record, one decided outcome: a chunk is kept (store.py), a manifest is verified and opened by the egress
checks and the file checked against it, and anything refused (a record that is no chunk or manifest, a manifest
that does not verify, a file whose chunks are missing, do not open or do not add up to the digest) is
dead-lettered on the region's DLQ with its reason. Offsets are committed after the batch's dead letters were
acknowledged, like egress. A manifest that does not verify leaves no verdict (a forged one must not spoil the
real file): a message waiting for that file ends as `file_incomplete`. Once a batch decided a file, the
messages parked for it are woken (`decided`, the claim-check step's event).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from gateway.audit.trail import AuditTrail
from gateway.files.manifest import FILE_TYPE, Manifest, ManifestError, valid_file_id
from gateway.files.store import FileStore
from gateway.kafka.port import InboxConsumer, InRecord, OutRecord, Publisher
from gateway.relay.checks import Checks, parse_envelope, read_record
from gateway.relay.dead_letters import dead_letter
from gateway.relay.egress import unexpected
from gateway.wire import envelope, headers
from gateway.wire.problems import Rejection
from gateway.wire.regions import Topics

__all__ = ["Assembler"]

log = logging.getLogger(__name__)


class Assembler:
    def __init__(self, region: str, topics: Topics, checks: Checks, store: FileStore, publisher: Publisher,
                 audit: AuditTrail | None = None, decided: asyncio.Event | None = None) -> None:
        self._region = region
        self._decided = decided
        self._audit = audit
        self._dlq = topics.dlq(region)
        self._checks = checks
        self._store = store
        self._publisher = publisher

    async def run(self, consumer: InboxConsumer, stopping: asyncio.Event) -> None:
        """Until asked to stop; the batch in hand is finished and committed first."""
        while not stopping.is_set():
            batch = await consumer.poll()
            if batch:
                await self.handle(batch)
                await consumer.commit(batch)

    async def handle(self, batch: Sequence[InRecord]) -> None:
        dead: list[OutRecord] = []
        for r in batch:
            try:
                rejection = await self.take(r)
            except Exception as e:  # one record's surprise must not stop the partition
                log.warning("unexpected error taking a file record", exc_info=True, extra={"source": r.source})
                rejection = unexpected(e, "taking a file record")
            if rejection is not None:
                file_id = r.headers.get(headers.FILE_ID, b"").decode("ascii", "replace")[:64]
                log.warning("file record refused", extra={"source": r.source, "code": rejection.code,
                                                          "file_id": file_id})
                dead.append(dead_letter(self._dlq, r, rejection, self._region, file_id))
        if dead:
            await self._publisher.publish(dead)
        if self._audit is not None:  # the verdicts are on record before the offsets move
            await self._audit.durable()
        if self._decided is not None and any(headers.FILE_CHUNK not in r.headers for r in batch):
            self._decided.set()  # a manifest was in the batch: a parked message may be waiting for its file

    async def take(self, r: InRecord) -> Rejection | None:
        unreadable = read_record(r)
        if unreadable is not None:
            return unreadable
        file_id = r.headers.get(headers.FILE_ID, b"").decode("ascii", "replace")
        if not valid_file_id(file_id) or r.key != file_id.encode():
            return Rejection("invalid_record", f"no file id header (a lowercase UUID, also the key) on {r.source}")
        chunk = r.headers.get(headers.FILE_CHUNK)
        if chunk is not None:
            if not chunk.isdigit() or len(chunk) > 9:
                return Rejection("invalid_record", "the chunk index is not a decimal integer")
            return await asyncio.to_thread(self._store.put_chunk, file_id, int(chunk), r.value)
        return await self.settle(r, file_id)

    async def settle(self, r: InRecord, file_id: str) -> Rejection | None:
        """The file's manifest: verified and opened like a message, then the file checked against it."""
        env = parse_envelope(r.value)
        if isinstance(env, Rejection):
            return env
        if env.type != FILE_TYPE or env.id != file_id or env.sealed is None:
            return Rejection("invalid_envelope", f"a file's last record is a sealed {FILE_TYPE} with its file id")
        sha256 = envelope.sha256_hex(r.value)
        verified = self._checks.verify(r, env, datetime.now(UTC), sha256)
        if isinstance(verified, Rejection):
            self._record("file_refused", file_id, sha256, env.sender, reason=verified.code)
            return verified
        try:
            manifest = Manifest.read(verified.env.payload)
            if manifest.file_id != file_id:
                raise ManifestError("the manifest names another file")
        except ManifestError as e:
            refused = Rejection("invalid_envelope", f"not a file manifest: {e}")
            await asyncio.to_thread(self._store.fail, file_id, env.sender, refused)
            self._record("file_refused", file_id, sha256, env.sender, reason=refused.code)
            return refused
        stored = await asyncio.to_thread(self._store.settle, manifest, env.sender, env.sealed)
        log.info("file received", extra={"file_id": file_id, "from": env.sender, "status": stored.status,
                                         "size": manifest.size, "code": stored.reason})
        if stored.rejection is None:
            self._record("file_received", file_id, sha256, env.sender, size=manifest.size)
        else:
            self._record("file_refused", file_id, sha256, env.sender, reason=stored.reason)
        return stored.rejection

    def _record(self, stage: str, file_id: str, sha256: str, sender: str, **detail: str | int) -> None:
        """The file's verdict in the audit trail (ids and codes only), under its file id."""
        if self._audit is not None:
            self._audit.append(stage, file_id, sha256, file_id, sender=sender, **detail)
