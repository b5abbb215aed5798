"""A file sent JS -> SH in-process over the in-memory Kafka twin, for unit tests of gateway/files: the real
sender (JS's real keys), the real assembler and claim-check step at SH (SH's real keys and checks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from gateway.audit.model import parse_segment
from gateway.config import GatewayConfig, load_config
from gateway.crypto.keyfiles import load_encryption_key, load_encryption_pub
from gateway.crypto.seal import Opener, Sealer
from gateway.files.assembler import Assembler
from gateway.files.claims import ClaimChecks
from gateway.files.manifest import Manifest
from gateway.files.sender import FileSender
from gateway.files.store import FileStore
from gateway.kafka.memory import MemoryInboxConsumer, MemoryPublisher
from gateway.kafka.port import InRecord
from gateway.relay.checks import Checks
from gateway.relay.egress import Egress
from gateway.wire import headers
from tests.unit._relay import REGION, REGISTRY, Harness, harness

CLAIM_TYPE = "yrdx.claim_check"


def accepting_files(cfg: GatewayConfig) -> GatewayConfig:
    """SH accepts yrdx.claim_check from every region, its platform receives it, and a message waits at most
    0.3 s for its file."""
    platform = cfg.platforms[0]
    return replace(cfg, accept={r: types | {CLAIM_TYPE} for r, types in cfg.accept.items()},
                   platforms=(replace(platform, receives=platform.receives | {CLAIM_TYPE}), *cfg.platforms[1:]),
                   files=replace(cfg.files, wait_s=0.3))


def reader(data: bytes, step: int = 100_003) -> Callable[[int], object]:
    """An upload arriving in odd-sized pieces, as a socket hands them over."""
    view = memoryview(data)
    at = 0

    async def read(n: int) -> bytes:
        nonlocal at
        piece = bytes(view[at:at + min(n, step)])
        at += len(piece)
        return piece

    return read


@dataclass
class FileBench:
    h: Harness
    sender: FileSender
    store: FileStore
    assembler: Assembler
    opener: Opener
    claims: ClaimChecks
    _egress: Egress | None = None

    @property
    def files_topic(self) -> str:
        return self.h.cfg.topics.files(REGION)

    async def send(self, data: bytes, media_type: str = "application/pdf") -> Manifest:
        return await self.sender.send(REGION, media_type, reader(data))  # type: ignore[arg-type]

    def records(self, file_id: str) -> list[InRecord]:
        return [r for r in self.h.broker.records(self.files_topic) if r.key == file_id.encode()]

    def chunk_records(self, file_id: str) -> list[InRecord]:
        return [r for r in self.records(file_id) if headers.FILE_CHUNK in r.headers]

    async def assemble(self) -> None:
        consumer = MemoryInboxConsumer(self.h.broker, self.files_topic, "files-test")
        batch = await consumer.poll()
        await self.assembler.handle(batch)
        await consumer.commit(batch)

    def received(self, file_id: str) -> bytes:
        stored = self.store.status(file_id)
        assert stored is not None and stored.status == "complete", stored
        return b"".join(self.store.chunks(stored, self.opener))

    def file_dead_letters(self) -> dict[str, str]:
        """The DLQ's records of the files topic as {file id: reason}."""
        return {r.key.decode(): r.headers[headers.DLQ_REASON].decode()
                for r in self.h.broker.records(self.h.cfg.topics.dlq(REGION))
                if r.key and r.headers[headers.DLQ_SOURCE].startswith(self.files_topic.encode())}

    def audit_records(self, file_id: str) -> list[tuple[str, dict[str, object]]]:
        """SH's audit records about the file, as (stage, detail), in order."""
        return [(r["stage"], r["detail"]) for v in self.h.broker.records(self.h.cfg.topics.audit)
                for r in parse_segment(v.value).entries() if r["message_id"] == file_id]

    def egress(self) -> Egress:
        """SH's egress with the claim-check step (one per bench: the step remembers what it is taking back)."""
        if self._egress is None:
            e = self.h.egress
            self._egress = Egress(self.h.cfg, e._checks, e._fx, e._webhooks, claims=self.claims)
        return self._egress

    async def drain(self) -> None:
        """One turn of the egress loop: a batch of the inbox, then the parked messages that are due."""
        egress = self.egress()
        consumer = MemoryInboxConsumer(self.h.broker, self.h.inbox, self.h.cfg.topics.egress_group("SH"))
        batch = await consumer.poll()
        if batch:
            await egress.handle(batch)
            await consumer.commit(batch)
        await egress.resume_parked()


async def file_bench(root: Path, max_bytes: int = 8 * 1024 * 1024) -> FileBench:
    h = await harness(root, edit=accepting_files)
    js = load_config(h.ex.config_path("JS"))
    sealer = Sealer.for_key(load_encryption_pub(js.encryption_keys[REGION]), kid=REGION)
    publisher = MemoryPublisher(h.broker)
    sender = FileSender("JS", h.cfg.topics, h.signer("JS"), publisher, {REGION: sealer}, max_bytes)
    assert h.cfg.encryption_key is not None
    opener = Opener.for_key(load_encryption_key(h.cfg.encryption_key))
    store = FileStore(root / "spool", max_bytes)
    checks = Checks(h.cfg, REGISTRY, h.trust, opener)
    claims = ClaimChecks(h.cfg, REGISTRY, store, h.state, h.audit)
    return FileBench(h, sender, store, Assembler(REGION, h.cfg.topics, checks, store, publisher, h.audit, claims.wake),
                     opener, claims)
