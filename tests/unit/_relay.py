"""One region's egress (and its audit trail) assembled in-process over the in-memory Kafka twin, for unit tests
of pipeline logic. The keys, certificates, schemas and SQLite state are real; only the broker is the twin."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from gateway.audit.trail import AuditTrail
from gateway.config import GatewayConfig, load_config
from gateway.crypto.jws import Signer
from gateway.crypto.keyfiles import load_certificate, load_encryption_key, load_private_key
from gateway.crypto.seal import Opener
from gateway.crypto.trust import TrustStore
from gateway.dev.exchange import Exchange, init_exchange
from gateway.kafka.memory import MemoryBroker, MemoryInboxConsumer, MemoryPublisher
from gateway.kafka.port import InRecord, OutRecord
from gateway.metrics import Metrics
from gateway.relay.checks import Checks
from gateway.relay.delivery import WebhookDeliverer
from gateway.relay.egress import Egress
from gateway.relay.outcomes import Effects
from gateway.schemas.registry import SchemaRegistry
from gateway.state import NewSent, StateStore
from gateway.wire import envelope, headers
from tests._util import envelope_use_context

REGISTRY = SchemaRegistry.load()
REGION = "SH"
TYPE = "license.verify.request"  # not sealed by default: its payload travels in clear


def make_exchange(root: Path) -> Exchange:
    return init_exchange(root, base_port=0, bootstrap_servers="127.0.0.1:1")  # no broker is ever contacted


def signer_of(ex: Exchange, region: str) -> Signer:
    return Signer(load_private_key(ex.pki.gateway_key(region)), load_certificate(ex.pki.gateway_cert(region)))


@dataclass
class Harness:
    ex: Exchange
    cfg: GatewayConfig
    broker: MemoryBroker
    state: StateStore
    audit: AuditTrail
    metrics: Metrics
    trust: TrustStore
    egress: Egress
    session: aiohttp.ClientSession
    signers: dict[str, Signer] = field(default_factory=dict)

    @property
    def inbox(self) -> str:
        return self.cfg.topics.inbox(REGION)

    def signer(self, region: str) -> Signer:
        if region not in self.signers:
            self.signers[region] = signer_of(self.ex, region)
        return self.signers[region]

    def envelope(self, sender: str = "JS", msg_type: str = TYPE, **kw: Any) -> tuple[str, bytes]:
        """A signable envelope; with the test's use context where the type needs one and `kw` names neither
        `operator` nor `use_cause` (tests/_util.py)."""
        payload = kw.pop("payload", copy.deepcopy(REGISTRY.examples(msg_type)[0]))
        if "operator" not in kw and "use_cause" not in kw:
            kw |= envelope_use_context(msg_type)
        return envelope.build(msg_type=msg_type, schema_version=kw.pop("schema_version", 1), sender=sender,
                              recipient=kw.pop("recipient", REGION), payload=payload, **kw)

    def produce(self, raw: bytes, signature: str | bytes | None, key: bytes = b"k", partition: int = 0,
                extra: list[tuple[str, bytes]] | None = None) -> InRecord:
        hdrs = [] if signature is None else [(headers.SIGNATURE, signature if isinstance(signature, bytes)
                                              else signature.encode())]
        return self.broker.append(OutRecord(self.inbox, raw, key, hdrs + (extra or [])), partition)

    def send(self, sender: str = "JS", msg_type: str = TYPE, partition: int = 0, **kw: Any) -> tuple[str, InRecord]:
        """A message signed by the sender's real gateway key, produced to this region's inbox."""
        msg_id, raw = self.envelope(sender, msg_type, **kw)
        return msg_id, self.produce(raw, self.signer(sender).sign(raw), partition=partition)

    async def drain(self) -> list[InRecord]:
        """Poll, handle and commit once, as the egress loop does; returns the batch."""
        consumer = MemoryInboxConsumer(self.broker, self.inbox, self.cfg.topics.egress_group(REGION))
        batch = await consumer.poll()
        if batch:
            await self.egress.handle(batch)
            await consumer.commit(batch)
        return batch

    def dead_letters(self) -> dict[str, str]:
        """The DLQ's records as {claimed id or source: reason}."""
        out = {}
        for r in self.broker.records(self.cfg.topics.dlq(REGION)):
            source = r.headers[headers.DLQ_SOURCE].decode()
            out[r.key.decode() if r.key and r.key != b"k" else source] = r.headers[headers.DLQ_REASON].decode()
        return out

    def reason_for(self, record: InRecord) -> str | None:
        for r in self.broker.records(self.cfg.topics.dlq(REGION)):
            if r.headers[headers.DLQ_SOURCE].decode() == record.source:
                return r.headers[headers.DLQ_REASON].decode()
        return None

    def delivered_ids(self) -> list[str]:
        return [i.id for i in self.state.lease_inbox(self.cfg.platforms[0].id, 1000, lease_s=0.0)]

    def receipts_to(self, origin: str) -> list[dict[str, Any]]:
        from orjson import loads
        return [loads(r.value) for r in self.broker.records(self.cfg.topics.inbox(origin))]

    def record_sent(self, msg_id: str, to: str, raw: bytes) -> None:
        self.state.record_sent([NewSent(msg_id, self.cfg.platforms[0].id, TYPE, to, msg_id,
                                        envelope.sha256_hex(raw))], "published")


async def harness(root: Path, edit: Callable[[GatewayConfig], GatewayConfig] | None = None,
                  trust_edit: Callable[[TrustStore], None] | None = None) -> Harness:
    ex = make_exchange(root)
    cfg = load_config(ex.config_path(REGION))
    if edit is not None:
        cfg = edit(cfg)
    trust = TrustStore.from_files(list(cfg.trust_ca), list(cfg.trust_certificates))
    if trust_edit is not None:
        trust_edit(trust)
    broker = MemoryBroker()
    publisher = MemoryPublisher(broker)
    signer = signer_of(ex, REGION)
    state = StateStore(cfg.state_path)
    metrics = Metrics(REGION)
    audit = AuditTrail(REGION, signer, state, publisher, True, cfg.topics)
    opener = Opener.for_key(load_encryption_key(cfg.encryption_key)) if cfg.encryption_key else None
    session = aiohttp.ClientSession()
    egress = Egress(cfg, Checks(cfg, REGISTRY, trust, opener),
                    Effects(REGION, cfg.topics, signer, publisher, state, audit, metrics),
                    WebhookDeliverer(session, metrics))
    return Harness(ex, cfg, broker, state, audit, metrics, trust, egress, session)


def with_delivery(cfg: GatewayConfig, **delivery: Any) -> GatewayConfig:
    platform = cfg.platforms[0]
    return replace(cfg, platforms=(replace(platform, delivery=replace(platform.delivery, **delivery)),))


def days_ago(n: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=n)


async def close(h: Harness) -> None:
    await h.session.close()
    h.state.close()
    await asyncio.sleep(0)
