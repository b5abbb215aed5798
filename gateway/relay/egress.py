"""Egress: poll -> check each record -> dedupe -> claim checks -> replies -> deliver -> outcomes -> commit;
then the parked messages whose files were decided (gateway/files/claims.py), through the same steps.

Every record read ends in exactly one decided outcome, delivered or dead-lettered with a reason, whatever its
bytes: the checks (`checks.py`) turn hostile input into a `Rejection`, and an unexpected exception while handling
one record dead-letters that record as `processing_error` (the exception class in `yrdx-detail`) instead of
stopping the partition. Offsets are committed only after the batch's dead letters, receipts and audit records
are acknowledged by the broker (`outcomes.py`).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import orjson

from gateway.config import GatewayConfig, Platform
from gateway.files.claims import ClaimChecks
from gateway.kafka.port import InboxConsumer, InRecord
from gateway.relay.checks import RECEIPT_TYPE, Checks, Refused, Verified
from gateway.relay.delivery import WebhookDeliverer
from gateway.relay.health import EgressHealth
from gateway.relay.outcomes import BatchOutcomes, Effects
from gateway.relay.requests_replies import ReplyStep
from gateway.state import Decision, InboxDelivery, ReceiptItem
from gateway.wire import envelope, headers
from gateway.wire.problems import Rejection

log = logging.getLogger(__name__)


def opened_document(v: Verified) -> bytes:
    """What a platform receives for a sealed message: the opened payload, and the exact signed bytes as evidence
    (base64) with their signature, so the platform can still verify the sender and prove what travelled."""
    env = v.env
    return orjson.dumps({
        "id": env.id, "type": env.type, "schema_version": env.schema_version, "from": env.sender,
        "to": env.recipient, "correlation_id": env.correlation_id, "created_at": env.created_at,
        "expires_at": env.expires_at, "payload": env.payload,
        "envelope": base64.b64encode(v.record.value).decode("ascii"), "signature": v.signature,
    })


def delivery_body(v: Verified) -> bytes:
    """The webhook body: the exact signed envelope bytes, or for a sealed message the opened document."""
    return v.record.value if v.env.sealed is None else opened_document(v)


def webhook_headers(v: Verified, late_reply_to: str | None = None) -> dict[str, str]:
    late = {headers.WEBHOOK_LATE_REPLY_TO: late_reply_to} if late_reply_to is not None else {}
    return {**late,
        "Content-Type": "application/json",
        headers.WEBHOOK_SEALED: "true" if v.env.sealed is not None else "false",
        headers.WEBHOOK_SIGNATURE: v.signature,
        headers.WEBHOOK_MESSAGE_ID: v.env.id,
        headers.WEBHOOK_TYPE: v.env.type,
        headers.WEBHOOK_FROM: v.env.sender,
        headers.WEBHOOK_CORRELATION_ID: v.env.correlation_id,
    }


def unexpected(e: BaseException, step: str) -> Rejection:
    return Rejection("processing_error", f"{type(e).__name__} while {step}: {str(e)[:200]}")


class Egress:
    def __init__(self, cfg: GatewayConfig, checks: Checks, fx: Effects, webhooks: WebhookDeliverer,
                 health: EgressHealth | None = None, replies: ReplyStep | None = None,
                 claims: ClaimChecks | None = None) -> None:
        self._cfg = cfg
        self._replies = replies  # results answering a request of this region (requests_replies.py)
        self._claims = claims  # files referenced by claim checks must have arrived whole (gateway/files)
        self._checks = checks
        self._fx = fx
        self._webhooks = webhooks
        self.health = health or EgressHealth()

    async def run(self, consumer: InboxConsumer, stopping: asyncio.Event) -> None:
        """Until asked to stop: the batches in hand are finished and committed before returning (drain).

        A batch that sends nothing of its own (receipts applied at the origin) leaves its audit records to the
        next flush that another step begins (BatchOutcomes.carried), for up to CARRY_WAIT_S: the loop polls and
        handles the next batch meanwhile instead of waiting, and commits the two in order. At a platform's
        counter the next batch is often the reply a call is waiting for."""
        carried: asyncio.Task[None] | None = None  # the batches left to a carrier, each committed in turn
        try:
            while not stopping.is_set():
                batch = await consumer.poll()
                self.health.polled()
                if batch:
                    later = await self.handle(batch, stopping, carry=True)
                    if later is not None:  # committed after the batches before it: offsets move in order
                        carried = asyncio.create_task(self._commit_when_durable(consumer, batch, later, carried))
                    else:
                        if carried is not None:  # this batch's flush carried theirs: they are durable, or nearly
                            await carried
                            carried = None
                        await consumer.commit(batch)
                elif carried is not None and carried.done():
                    await carried  # its error, if it had one, stops the loop as an error of this batch would
                    carried = None
                await self.resume_parked(stopping)
                offsets = consumer.offsets()
                self.health.progress(offsets)
                for partition, waiting in self.health.lag.items():
                    self._fx.metrics.consumer_lag.labels(str(partition)).set(waiting)
        except BaseException:
            if carried is not None:  # not committed: read again after the restart, and dropped by the dedupe marks
                carried.cancel()
            raise
        if carried is not None:
            await carried

    @staticmethod
    async def _commit_when_durable(consumer: InboxConsumer, batch: Sequence[InRecord],
                                   durable: Callable[[], Awaitable[None]], after: asyncio.Task[None] | None) -> None:
        if after is not None:
            await after
        await durable()
        await consumer.commit(batch)

    async def resume_parked(self, stopping: asyncio.Event | None = None) -> None:
        """The messages parked until their files were decided (gateway/files/claims.py), through every step."""
        if self._claims is None:
            return
        parked = await self._claims.due()
        try:
            if parked:
                await self.handle(parked, stopping)
        except BaseException:
            self._claims.released()  # still parked, free for the next look (dedupe knows what got delivered)
            raise
        self._claims.resumed()

    # --- the batch -----------------------------------------------------------------------------------------

    async def handle(self, batch: Sequence[InRecord], stopping: asyncio.Event | None = None,
                     carry: bool = False) -> Callable[[], Awaitable[None]] | None:
        """Every record of the batch decided; None once its results are acknowledged by the broker. With `carry`,
        a batch that sends nothing of its own returns instead what to await for its audit records to be durable
        (they wait for another step's flush to carry them): it may be committed only after that."""
        now = datetime.now(UTC)
        out = BatchOutcomes(self._fx, envelope.utc_timestamp(now))
        checked: list[Verified | Refused] = []
        for r in batch:
            try:
                c = self._checks.check(r, now)
            except Exception as e:  # a bug or a case no check foresaw: this record is refused, the rest go on
                log.warning("unexpected error checking a record", exc_info=True, extra={"source": r.source})
                c = Refused(r, unexpected(e, "checking the record"), envelope.sha256_hex(r.value))
            checked.append(c)
            out.received(r, c)
        inbox: list[tuple[Platform, Verified]] = []
        webhooks: dict[str, list[tuple[Platform, Verified]]] = defaultdict(list)
        kept = self.dedupe(checked, out)
        if self._claims is not None:
            kept = self._claims.settle(kept)
        answers = self._replies.match([c for c in kept if isinstance(c, Verified)]) if self._replies else {}
        answered = self._replies.answer([(c, answers[c.env.id]) for c in kept if isinstance(c, Verified)
                                         and c.env.id in answers]) if self._replies and answers else {}
        late: dict[str, str] = {}  # message id -> the request it came too late for (delivered, marked)
        for c in kept:
            if isinstance(c, Refused):
                out.rejected(c)
                continue
            self._fx.audit.append("verified", c.env.id, c.sha256, c.env.correlation_id, signer=c.signer_thumbprint,
                                  type=c.env.type, sender=c.env.sender, **c.use)
            if c.env.type == RECEIPT_TYPE:
                self.apply_receipt(c, out)
                continue
            request = answers.get(c.env.id)
            if request is not None and self._replies is not None:
                taken = self._replies.take(c, request, out, answered.get(c.env.id))
                if taken == "consumed":
                    continue  # it answered a waiting call, or is a late result that must not be delivered
                if taken == "late" and request.message_id is not None:
                    late[c.env.id] = request.message_id
            platform = self._cfg.recipient_of(c.env.type)
            assert platform is not None  # authorize() refused the others
            if platform.delivery.mode == "inbox":
                inbox.append((platform, c))
            else:  # conversation order is kept: one conversation's messages go one after another
                webhooks[c.env.correlation_id].append((platform, c))
        if inbox:
            started = time.perf_counter()
            self._fx.state.deliver_to_inbox([
                InboxDelivery(p.id, v.env.id, v.env.type, v.env.sender, v.record.value, v.signature, v.source,
                              late.get(v.env.id))
                for p, v in inbox
            ])
            self._fx.metrics.stage("deliver").observe(time.perf_counter() - started)
            for p, v in inbox:
                out.delivered(p, v, "inbox")
        if webhooks:
            # Conversations are pushed in parallel up to the platform's concurrency: after a crash, only the
            # messages in flight at that moment can reach the platform a second time.
            limits: dict[str, asyncio.Semaphore] = {}
            for items in webhooks.values():
                platform = items[0][0]
                limits.setdefault(platform.id, asyncio.Semaphore(platform.delivery.concurrency))
            await asyncio.gather(*(
                self.push_conversation(items, limits[items[0][0].id], out, late) for items in webhooks.values()
            ))
        if carry and out.sends_nothing():
            return functools.partial(out.carried, stopping or asyncio.Event())
        await out.flush(stopping or asyncio.Event())
        return None

    def dedupe(self, checked: list[Verified | Refused], out: BatchOutcomes) -> list[Verified | Refused]:
        """Second copies of a delivered id are refused; a re-read of the same record (after a crash before the
        offset commit) is dropped silently, since it was already delivered or dead-lettered."""
        ids = [c.env.id for c in checked if isinstance(c, Verified)]
        seen = self._fx.state.seen(ids)
        in_batch: set[str] = set()
        kept: list[Verified | Refused] = []
        for c in checked:
            if isinstance(c, Verified):
                prior = seen.get(c.env.id)
                if prior is not None and prior.source == c.source:
                    if prior.outcome == "delivered" and c.env.type != RECEIPT_TYPE:
                        out.receipt(c, "delivered")  # its receipt may not have left before the crash
                    continue
                # Only a delivered id makes a second copy a duplicate: a rejected one may come back (replay).
                if (prior is not None and prior.outcome == "delivered") or c.env.id in in_batch:
                    kept.append(Refused(c.record, Rejection("duplicate", f"message {c.env.id} already delivered"),
                                        c.sha256, c))
                    continue
                in_batch.add(c.env.id)
            kept.append(c)
        return kept

    async def push_conversation(self, items: list[tuple[Platform, Verified]], limit: asyncio.Semaphore,
                                out: BatchOutcomes, late: dict[str, str] | None = None) -> None:
        for platform, v in items:
            try:
                async with limit:
                    result = await self._webhooks.deliver(platform.delivery, delivery_body(v),
                                                          webhook_headers(v, (late or {}).get(v.env.id)))
            except Exception as e:  # one message the HTTP client cannot send must not stop its conversation
                log.warning("unexpected error delivering a message", exc_info=True,
                            extra={"message_id": v.env.id, "type": v.env.type, "from": v.env.sender})
                out.rejected(Refused(v.record, unexpected(e, "delivering"), v.sha256, v))
                continue
            if result.delivered:
                # Marked right after the platform's 2xx: after a crash only this one message can come again.
                self._fx.state.mark_seen([Decision(v.env.id, "delivered", v.source)])
                out.delivered(platform, v, "webhook")
            else:
                out.rejected(Refused(v.record, Rejection("delivery_failed", result.detail), v.sha256, v))

    def apply_receipt(self, v: Verified, out: BatchOutcomes) -> None:
        """A peer's signed receipt for messages this gateway sent: their status at the origin becomes final. Each
        item counts only for a message this gateway sent to that peer with that exact envelope hash."""
        fx = self._fx
        base = {"receipt_id": v.env.id, "by": v.env.sender, "signer": v.signer_thumbprint, "signature": v.signature}
        items = v.env.payload["items"]
        try:
            rows = [ReceiptItem(i["message_id"], i["envelope_sha256"], i["outcome"],
                                {**base, "outcome": i["outcome"], "envelope_sha256": i["envelope_sha256"],
                                 "at": i["decided_at"], **({"reason": i["reason"]} if "reason" in i else {})})
                    for i in items]
        except (KeyError, TypeError) as e:  # the schema admitted it, yet it cannot be read: refused, not retried
            out.rejected(Refused(v.record, unexpected(e, "reading the receipt"), v.sha256, v))
            return
        applied = fx.state.apply_receipts(v.env.sender, rows, Decision(v.env.id, "delivered", v.source))
        for i, (outcome, correlation_id) in zip(items, applied, strict=True):
            if outcome == "unmatched":
                log.warning("receipt for a message this gateway did not send", extra={"message_id": i["message_id"]})
            # The message's own conversation, not the receipt's: one receipt covers many conversations.
            fx.audit.append("receipt_received", i["message_id"], i["envelope_sha256"], correlation_id,
                            receipt=v.env.id, outcome=outcome)
            fx.metrics.receipts.labels(outcome).inc()
        out.receipt_applied(v)
