"""Countersigning: each gateway chains the signed heads it sees of the other regions' audit chains into its own.

The gateway follows `yrdx.checkpoints` (the signed head each gateway announces every 10 s: a few hundred bytes,
instead of every audit segment), checks each other region's checkpoint against its trust store, and appends a
`countersigned` record {of, seq, hash} to its own chain for each chain whose head moved (`of`: the chain id, the
region itself unless the region runs replicas, gateway.audit.model). A region's own replicas share its key, so
they do not countersign each other. That record is then
covered by this gateway's own signed checkpoint, so a region that later rewrites or truncates its history is
contradicted by signatures it does not control.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

import orjson

from gateway.audit.model import Checkpoint, chain_region, checkpoint_fault
from gateway.audit.trail import AuditTrail
from gateway.config import KafkaConfig
from gateway.crypto.trust import TrustStore
from gateway.kafka.reader import follow_topic

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
            cp = Checkpoint(str(doc["region"]), int(doc["seq"]), str(doc["hash"]), str(doc["jws"]),
                            str(doc.get("chain", "")))
            at = datetime.fromisoformat(str(doc["at"]).replace("Z", "+00:00"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        if cp.region == self._region or chain_region(cp.chain) != cp.region:
            return
        last = self.seen.get(cp.chain)
        if last is not None and last.seq >= cp.seq:
            return
        fault = checkpoint_fault(cp, self._trust, at)
        if fault is not None:
            log.warning("ignoring an audit checkpoint that does not verify", extra={"of": cp.region, "fault": fault})
            return
        self.seen[cp.chain] = cp

    def countersign(self) -> int:
        """Append one `countersigned` record per chain whose head moved since the last round."""
        n = 0
        for chain, cp in sorted(self.seen.items()):
            if self.signed.get(chain, 0) < cp.seq:
                self._audit.append("countersigned", "", None, of=chain, seq=cp.seq, hash=cp.hash)
                self.signed[chain] = cp.seq
                n += 1
        return n

    async def run(self, interval_s: float = 10.0) -> None:
        """Follow `yrdx.checkpoints` from its end and countersign every `interval_s`, until cancelled. Records
        that are not checkpoints (even ones the client library cannot decode) are ignored, and a client that
        fails is started again (gateway.kafka.reader.follow_topic): countersigning never stops on its own."""
        loop = asyncio.get_running_loop()
        next_round = loop.time() + interval_s
        batches = follow_topic(self._kafka, self._kafka.topics.checkpoints, max_records=200)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                for r in batch:
                    try:
                        self.observe(r.key, r.value)
                    except Exception as e:  # a checkpoint nobody foresaw must not stop countersigning
                        log.warning("ignoring an audit checkpoint that cannot be read",
                                    extra={"offset": r.offset, "error": f"{type(e).__name__}: {e}"})
                if loop.time() >= next_round:
                    self.countersign()
                    next_round = loop.time() + interval_s
