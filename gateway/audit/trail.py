"""Writing the gateway's own audit trail: one hash chain per gateway, published on `yrdx.audit` in signed segments.

Records hold hashes and metadata, never payloads or personal data. Appending is synchronous and cheap (one
SHA-256); `durable()` publishes everything appended so far as one Kafka record (a segment; a run longer than
SEGMENT_RECORDS as several) and returns when the broker has acknowledged it, so a step is acknowledged to anyone
only after its audit record is on Kafka. The records a step produces (the messages of an ingress group, the dead
letters and receipts of an egress batch) can ride in the same produce call as the segment: one round trip to the
broker for both, instead of one for the records and another for their audit trail.
Each segment carries a checkpoint signed by the gateway over the chain head: the chain links every record to the
one before, so one signature per segment authenticates all of them.

Consecutive appends of one stage that name a message join one batch record (trail format 3, gateway.audit.model):
an ingress group's `accepted`, a consumed batch's `received`, `verified`, `delivered`... each become one record
with an entry per message. A record is hashed when its segment is cut, so it takes entries until then; the next
stage, a record without a message, or the flush closes it. `batch_records=False` writes one record per message
(formats 1 and 2) as earlier versions did: old trails are reproduced in tests, and the bench measures both.

One replica of several (config `instance_id`) writes a chain of its own, `<REGION>/<instance_id>`, with its head
under a state key of its own: replicas on one database never share a head, so their chains never fork. A replica
that stops cleanly ends its chain with a `stopped` record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.audit.model import GENESIS, REPLICA_FORMAT, STAGES, TRAIL_FORMAT, chain_id, checkpoint_bytes, record_hash
from gateway.crypto.jws import Signer
from gateway.kafka.port import OutRecord, Publisher
from gateway.state import StateStore
from gateway.wire.envelope import utc_timestamp
from gateway.wire.regions import DEFAULT_TOPICS, Topics

log = logging.getLogger(__name__)

# Records per Kafka record: about 300 bytes each, so a segment stays far below the broker's 1 MB default.
SEGMENT_RECORDS = 1000
SEGMENT_MAX_BYTES = 512 * 1024  # half the producer's max_request_size: room for the record's framing
# Entries per batch record: about 200 bytes each; a batch record stays far below the broker's 1 MB default too.
BATCH_ENTRIES = 2000
_HEAD_KEY = "audit_head"


def head_key(chain: str, region: str) -> str:
    """The state key of a chain's head: `audit_head` for a region's one chain (as it always was), else per chain."""
    return _HEAD_KEY if chain == region else f"{_HEAD_KEY}:{chain}"


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: str


class AuditTrail:
    def __init__(
        self, region: str, signer: Signer, state: StateStore, publisher: Publisher, enabled: bool = True,
        topics: Topics = DEFAULT_TOPICS, instance_id: str | None = None, batch_records: bool = True,
    ) -> None:
        self.region = region
        self.chain = chain_id(region, instance_id)
        self._head_key = head_key(self.chain, region)
        # Format 2 names the chain in the segment and in each record (covered by the record's hash).
        self._chain_fields: dict[str, Any] = {} if self.chain == region else {"chain": self.chain}
        self._topics = topics  # the exchange's `yrdx.audit` and `yrdx.checkpoints` (kafka.namespace)
        # `audit_enabled: false` exists only to measure what the trail costs (bench --no-audit); never in service.
        self.enabled = enabled
        self._batch_records = batch_records
        self._format = TRAIL_FORMAT if batch_records else REPLICA_FORMAT if self._chain_fields else 1
        self._signer = signer
        self._state = state
        self._publisher = publisher
        saved = state.get(self._head_key)
        head: dict[str, Any] = orjson.loads(saved) if saved else {"seq": 0, "hash": GENESIS}
        self._head = Head(int(head["seq"]), str(head["hash"]))
        self._seq = self._durable_seq = self._head.seq  # the last seq given out; the last one on Kafka
        self._pending: list[dict[str, Any]] = []  # appended, not yet hashed: hashed in order when a segment is cut
        self._unsent: list[dict[str, Any]] = []  # hashed, but their publish failed: they go first next time
        self._open: dict[str, Any] | None = None  # the batch record that takes the next entry of its stage
        # Records that travel with the next segment, each group with the future its caller waits on.
        self._riders: list[tuple[list[OutRecord], asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._flush_started = 0.0  # the loop's clock when the last flush began (the periodic flush skips after it)
        self._next_flush: asyncio.Future[None] | None = None  # resolved when a flush begins: see `durable(wait_s)`
        self._last_checkpoint: dict[str, Any] | None = None
        if self._head.seq:
            # Records up to saved_seq may have been appended but never published before the restart; nothing
            # was acknowledged for them. `yrdx audit verify` reports such a gap as a crash gap, not a deletion.
            self.append("resumed", "", None, saved_seq=self._head.seq)

    @property
    def head(self) -> Head:
        """The chain's last hashed record (records are hashed when their segment is cut)."""
        return self._head

    def pending(self) -> int:
        """Records appended but not yet acknowledged by the broker."""
        return self._seq - self._durable_seq

    def append(
        self, stage: str, message_id: str, envelope_sha256: str | None, correlation_id: str = "", **detail: str | int
    ) -> int:
        """Chain one record, or one entry of the open batch record of this stage; returns its sequence number.
        `detail` carries codes and ids, never personal data."""
        assert stage in STAGES, stage
        if not self.enabled:
            return self._head.seq
        batch = self._open
        if message_id and self._batch_records:
            if batch is not None and batch["stage"] == stage and len(batch["entries"]) < BATCH_ENTRIES:
                batch["entries"].append([message_id, correlation_id, envelope_sha256, detail])
                return int(batch["seq"])
            body = self._new_record(stage, "", "", None, {})
            body["entries"] = [[message_id, correlation_id, envelope_sha256, detail]]
            self._open = body
        else:
            body = self._new_record(stage, message_id, correlation_id, envelope_sha256, detail)
            self._open = None
        return int(body["seq"])

    def _new_record(self, stage: str, message_id: str, correlation_id: str, envelope_sha256: str | None,
                    detail: dict[str, Any]) -> dict[str, Any]:
        seq = self._seq + 1
        body: dict[str, Any] = {
            "seq": seq, "region": self.region, "message_id": message_id, "correlation_id": correlation_id,
            "stage": stage, "at": utc_timestamp(), "envelope_sha256": envelope_sha256, "detail": detail,
            **self._chain_fields,
        }
        self._pending.append(body)
        self._seq = seq
        return body

    def _hashed(self) -> list[dict[str, Any]]:
        """The pending records linked and hashed in chain order from the head; they take no more entries."""
        records, self._pending, self._open = self._pending, [], None
        prev = self._head.hash
        for body in records:
            body["prev_hash"] = prev
            prev = body["hash"] = record_hash(prev, body)
        if records:
            self._head = Head(int(records[-1]["seq"]), prev)
        return records

    async def durable(self, riders: Sequence[OutRecord] = (), wait_s: float = 0.0) -> None:
        """Return once every record appended so far is acknowledged by the broker, and `riders` with them: they
        are published in the same produce call as the segment. Raises BrokerUnavailable if that call fails; the
        riders of a failed call are never sent later (their caller answers the failure).

        `wait_s`: when no flush is in flight, wait up to that long for another caller's flush to carry the
        records (an ingress group's) before starting one. For a step whose records nobody waits on but its own
        offset commit: started on its own, that flush is a produce round trip every ingress group in the
        meantime waits for before it can start its own (at 1,000 single requests a second, the receipts' flushes
        at the origin held back nine groups in ten by ~5 ms each)."""
        target = self._seq
        carry_until = asyncio.get_running_loop().time() + wait_s if wait_s > 0 and not riders else 0.0
        ticket: asyncio.Future[None] | None = None
        if riders:
            ticket = asyncio.get_running_loop().create_future()
            entry = (list(riders), ticket)
            self._riders.append(entry)
        try:
            while self._durable_seq < target or (ticket is not None and not ticket.done()):
                # A flush in flight when the records were appended does not carry them: wait for the next one.
                if self._flushing is None and carry_until:
                    remaining = carry_until - asyncio.get_running_loop().time()
                    if remaining > 0:
                        await self._carrier(remaining)
                        continue
                await asyncio.shield(self._flushing or self._start_flush())
        except BaseException:
            if ticket is not None and entry in self._riders:  # a flush before ours failed, or we were cancelled
                self._riders.remove(entry)                    # before ours started: these records never leave
                ticket.cancel()
            raise

    async def _carrier(self, wait_s: float) -> None:
        """Until a flush begins, at most `wait_s`: it takes every record appended so far, these included."""
        if self._next_flush is None:
            self._next_flush = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._next_flush), wait_s)
        except TimeoutError:
            pass

    def _start_flush(self) -> asyncio.Task[None]:
        self._flushing = flushing = asyncio.create_task(self._flush())
        self._flush_started = asyncio.get_running_loop().time()
        if self._next_flush is not None:
            self._next_flush.set_result(None)
            self._next_flush = None
        return flushing

    async def _flush(self) -> None:
        try:
            records, self._unsent = self._unsent + self._hashed(), []
            riders, self._riders = self._riders, []
            if not records and not riders:
                return
            try:
                out = [r for group, _ in riders for r in group]
                if records:
                    last = records[-1]
                    # The head is saved before publishing: after a crash the chain continues past a gap instead
                    # of forking; the gap covers only records whose steps were never acknowledged. A failed save
                    # (the state database gone) or publish puts the records back, in order, for the next flush.
                    self._state.put(self._head_key, orjson.dumps({"seq": last["seq"], "hash": last["hash"]}))
                    out += [OutRecord(self._topics.audit, segment, self.region.encode())
                            for i in range(0, len(records), SEGMENT_RECORDS)
                            for segment in self._sized_segments(records[i:i + SEGMENT_RECORDS])]
                await self._publisher.publish(out)  # the audit topic has one partition, the producer is idempotent
            except BaseException as e:
                self._unsent = records + self._unsent
                for _, ticket in riders:
                    if not ticket.done():
                        ticket.set_exception(e)
                        ticket.exception()  # retrieved: its caller gets the same error from this task
                raise
            if records:
                self._durable_seq = records[-1]["seq"]
            for _, ticket in riders:
                if not ticket.done():
                    ticket.set_result(None)
        finally:
            self._flushing = None

    def stop(self) -> None:
        """A replica stopping cleanly: its chain ends here on purpose (`yrdx audit verify` tells it from a kill).
        The caller then waits for `durable()`."""
        if self._chain_fields:
            self.append("stopped", "", None)

    def _sized_segments(self, records: list[dict[str, Any]]) -> list[bytes]:
        """The records as one segment, or halved until each is at most SEGMENT_MAX_BYTES: the broker refuses a
        record over its limit (~1 MB), and a flush refused for good would hold every later step. Batch records
        naming many messages reach that well before SEGMENT_RECORDS, when a flush gathers several batches'."""
        segment = self._segment(records)
        if len(segment) <= SEGMENT_MAX_BYTES or len(records) == 1:
            return [segment]
        half = len(records) // 2
        return self._sized_segments(records[:half]) + self._sized_segments(records[half:])

    def _segment(self, records: list[dict[str, Any]]) -> bytes:
        last = records[-1]
        checkpoint = {
            "seq": last["seq"], "hash": last["hash"],
            "jws": self._signer.sign(checkpoint_bytes(self.region, last["seq"], last["hash"], self.chain)),
        }
        self._last_checkpoint = {"region": self.region, "at": last["at"], **self._chain_fields, **checkpoint}
        head = {"format": self._format, **self._chain_fields} if self._format != 1 else {}
        return orjson.dumps({**head, "region": self.region, "records": records, "checkpoint": checkpoint})

    async def run_periodic_flush(self, interval_s: float = 0.2, checkpoint_every_s: float = 10.0) -> None:
        """Flush records nobody waits for (e.g. after a rejection), so the trail never lags far behind; and
        append a `checkpoint` heartbeat now and then, so even an idle gateway publishes a signed head for the
        other regions to countersign."""
        loop = asyncio.get_running_loop()
        next_checkpoint = loop.time() + checkpoint_every_s
        while True:
            await asyncio.sleep(interval_s)
            announce = loop.time() >= next_checkpoint
            if announce:
                self.append("checkpoint", "", None)
                next_checkpoint = loop.time() + checkpoint_every_s
            if not self._pending and not self._unsent:
                continue
            # A gateway under traffic flushes many times in an interval: the records left over ride with its
            # next flush, instead of one of their own that every step waiting to flush would queue behind.
            if not announce and loop.time() - self._flush_started < interval_s:
                continue
            try:
                await self.durable()
                if announce and self._last_checkpoint is not None:  # only a head that is on yrdx.audit
                    await self._publisher.publish([
                        OutRecord(self._topics.checkpoints, orjson.dumps(self._last_checkpoint), self.region.encode())
                    ])
            except Exception as e:  # broker down: the next round retries
                log.warning("audit flush failed", extra={"error": str(e)})
