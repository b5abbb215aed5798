"""Cross-region checkpoints: each gateway countersigns the signed heads it sees of the other regions' chains.

The gateway follows `yrdx.checkpoints` (the signed head each gateway announces every 10 s: a few hundred bytes,
instead of every audit segment), checks each other region's checkpoint against its trust store, and appends a
`countersigned` record {of, seq, hash} to its own chain for each region whose head moved. That record is then
covered by this gateway's own signed checkpoint, so a region that later rewrites or truncates its history is
contradicted by signatures it does not control.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

import orjson
from aiokafka import AIOKafkaConsumer

from gateway.audit.model import Checkpoint, checkpoint_fault
from gateway.audit.trail import AuditTrail
from gateway.config import KafkaConfig
from gateway.crypto.trust import TrustStore
from gateway.kafka.transport import client_options

log = logging.getLogger(__name__)


class Countersigner:
    def __init__(self, region: str, kafka: KafkaConfig, trust: TrustStore, audit: AuditTrail) -> None:
        self._region = region
        self._kafka = kafka
        self._trust = trust
        self._audit = audit
        self.seen: dict[str, Checkpoint] = {}
        self.signed: dict[str, int] = {}

    def observe(self, key: bytes | None, value: bytes) -> None:
        """Remember the newest valid checkpoint of another region; forged or malformed ones are ignored."""
        if key is None or key.decode(errors="replace") == self._region:
            return
        try:
            doc = orjson.loads(value)
            cp = Checkpoint(str(doc["region"]), int(doc["seq"]), str(doc["hash"]), str(doc["jws"]))
            at = datetime.fromisoformat(str(doc["at"]).replace("Z", "+00:00"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        last = self.seen.get(cp.region)
        if last is not None and last.seq >= cp.seq:
            return
        fault = checkpoint_fault(cp, self._trust, at)
        if fault is not None:
            log.warning("ignoring an audit checkpoint that does not verify", extra={"of": cp.region, "fault": fault})
            return
        self.seen[cp.region] = cp

    def countersign(self) -> int:
        """Append one `countersigned` record per region whose head moved since the last round."""
        n = 0
        for region, cp in sorted(self.seen.items()):
            if self.signed.get(region, 0) < cp.seq:
                self._audit.append("countersigned", "", None, of=region, seq=cp.seq, hash=cp.hash)
                self.signed[region] = cp.seq
                n += 1
        return n

    async def run(self, interval_s: float = 10.0) -> None:
        consumer = AIOKafkaConsumer(
            self._kafka.topics.checkpoints, **client_options(self._kafka), group_id=None, enable_auto_commit=False,
            auto_offset_reset="latest", fetch_max_wait_ms=500,
        )
        await consumer.start()
        loop = asyncio.get_running_loop()
        next_round = loop.time() + interval_s
        try:
            while True:
                for msgs in (await consumer.getmany(timeout_ms=1000, max_records=200)).values():
                    for m in msgs:
                        self.observe(m.key, m.value)
                if loop.time() >= next_round:
                    self.countersign()
                    next_round = loop.time() + interval_s
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
