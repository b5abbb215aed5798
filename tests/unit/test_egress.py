"""Egress rules over the in-memory Kafka twin: every dead-letter reason, dedupe after a re-read, receipts per
origin and batch, commit only after the outcomes are acknowledged, and no record that can stop the partition."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.config import GatewayConfig
from gateway.crypto.jws import Signer, thumbprint_s256
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.dev.pki import issue_gateway_cert
from gateway.kafka.memory import MemoryInboxConsumer
from gateway.kafka.port import BrokerUnavailable, InRecord, OutRecord
from gateway.relay.checks import Checks
from gateway.wire import envelope, headers
from tests.unit._relay import REGION, TYPE, Harness, close, days_ago, harness


@pytest_asyncio.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    hx = await harness(tmp_path)
    yield hx
    await close(hx)


async def test_a_valid_message_is_delivered_once_with_a_signed_receipt(h: Harness) -> None:
    msg_id, _ = h.send("JS")
    await h.drain()
    assert h.delivered_ids() == [msg_id]
    assert h.dead_letters() == {}
    (receipt,) = h.receipts_to("JS")
    assert receipt["type"] == "yrdx.receipt" and receipt["payload"]["items"][0]["message_id"] == msg_id
    assert receipt["payload"]["items"][0]["outcome"] == "delivered"


async def test_each_delivered_message_counts_once_in_the_metrics(h: Harness) -> None:
    for sender in ("JS", "JS", "ZJ"):
        h.send(sender)
    await h.drain()
    h.send("JS")
    await h.drain()
    reg = h.metrics.registry

    def delivered(peer: str) -> float | None:
        return reg.get_sample_value("yrdx_messages_total", {"direction": "in", "peer": peer, "family": "license",
                                                            "outcome": "delivered"})

    assert (delivered("JS"), delivered("ZJ")) == (3.0, 1.0)
    assert reg.get_sample_value("yrdx_end_to_end_seconds_count", {"peer": "JS", "family": "license"}) == 3.0


async def test_a_flipped_byte_is_dead_lettered_as_bad_signature(h: Harness) -> None:
    msg_id, raw = h.envelope("JS")
    sig = h.signer("JS").sign(raw)
    i = raw.index(b"use_cause") + 14
    record = h.produce(raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1:], sig)
    await h.drain()
    assert h.reason_for(record) == "bad_signature"
    assert h.delivered_ids() == []


async def test_a_plain_jws_over_other_bytes_is_bad_signature_at_the_receiver(h: Harness) -> None:
    _, raw = h.envelope("JS")
    _, other = h.envelope("JS")
    record = h.produce(raw, h.signer("JS").sign(other))  # a genuine JS signature, of another message
    await h.drain()
    assert h.reason_for(record) == "bad_signature"
    assert h.delivered_ids() == []


async def test_no_signature_header_is_bad_signature(h: Harness) -> None:
    _, raw = h.envelope("JS")
    record = h.produce(raw, None)
    await h.drain()
    assert h.reason_for(record) == "bad_signature"


async def test_a_certificate_of_another_region_is_untrusted(h: Harness) -> None:
    _, raw = h.envelope("JS")
    record = h.produce(raw, h.signer("ZJ").sign(raw))
    await h.drain()
    assert h.reason_for(record) == "untrusted_signer"


async def test_revoked_expired_and_not_yet_valid_certificates_are_refused(h: Harness) -> None:
    ca, ca_key = load_certificate(h.ex.pki.ca_cert), load_private_key(h.ex.pki.ca_key)
    expired = issue_gateway_cert(ca, ca_key, "JS", not_before=days_ago(30), not_after=days_ago(1))
    future = issue_gateway_cert(ca, ca_key, "JS", not_before=days_ago(-2), days=30)
    revoked = issue_gateway_cert(ca, ca_key, "JS")
    h.trust.revoke(thumbprint_s256(revoked[0]))
    records = {}
    for reason, (cert, key) in {"certificate_expired": expired, "certificate_not_yet_valid": future,
                                "certificate_revoked": revoked}.items():
        _, raw = h.envelope("JS")
        records[reason] = h.produce(raw, Signer(key, cert, include_x5c=True).sign(raw))
    await h.drain()
    assert {reason: h.reason_for(r) for reason, r in records.items()} == {r: r for r in records}


@pytest.mark.parametrize(("raw", "detail"), [
    (b"not json at all", "not JSON"),
    (b"[1, 2, 3]", "not a JSON object"),
    (b'{"id": "x"}', "missing"),
])
async def test_bytes_that_are_no_envelope_are_invalid_envelope(h: Harness, raw: bytes, detail: str) -> None:
    record = h.produce(raw, h.signer("JS").sign(raw))
    await h.drain()
    assert h.reason_for(record) == "invalid_envelope"
    (letter,) = h.broker.records(h.cfg.topics.dlq(REGION))
    assert detail in letter.headers[headers.DLQ_DETAIL].decode()


@pytest.mark.parametrize("correlation_id", ["a\r\nX-Injected: 1", "nul\x00", "tab\there", "del\x7f", "c1\x85"])
async def test_header_bound_fields_with_control_characters_are_invalid_envelope(h: Harness,
                                                                                correlation_id: str) -> None:
    """A peer that signs such a correlation_id would otherwise break the webhook request's headers."""
    _, record = h.send("JS", correlation_id=correlation_id)
    valid_id, _ = h.send("JS")
    await h.drain()
    assert h.reason_for(record) == "invalid_envelope"
    assert h.delivered_ids() == [valid_id]


async def test_a_sealed_payload_that_does_not_open_is_undecryptable(h: Harness) -> None:
    _, raw = h.envelope("JS", sealed="eyJhbGciOiJFQ0RILUVTIn0.AAAA.AAAA.AAAA.AAAA")
    record = h.produce(raw, h.signer("JS").sign(raw))
    await h.drain()
    assert h.reason_for(record) == "undecryptable"


async def test_wrong_destination_unknown_type_schema_violation_and_expired(h: Harness) -> None:
    _, wrong = h.send("JS", recipient="ZJ")
    _, unknown = h.send("JS", schema_version=99)
    _, invalid = h.send("JS", payload={"nothing": "valid"})
    _, expired = h.send("JS", expires_at="2020-01-01T00:00:00Z")
    _, bad_time = h.send("JS", expires_at="yesterday")
    await h.drain()
    assert [h.reason_for(r) for r in (wrong, unknown, invalid, expired, bad_time)] == [
        "wrong_destination", "unknown_type", "schema_violation", "expired", "invalid_envelope"]
    items = {i["message_id"]: i for r in h.receipts_to("JS") for i in r["payload"]["items"]}
    assert {i["reason"] for i in items.values()} == {"unknown_type", "schema_violation", "expired", "invalid_envelope"}


async def test_a_type_the_sender_may_not_send_or_nobody_receives(tmp_path: Path) -> None:
    def edit(cfg: GatewayConfig) -> GatewayConfig:
        accept = {**cfg.accept, "JS": cfg.accept["JS"] - {TYPE}}
        platform = dataclasses.replace(cfg.platforms[0], receives=cfg.platforms[0].receives - {"license.verify.result"})
        return dataclasses.replace(cfg, accept=accept, platforms=(platform,))
    h = await harness(tmp_path, edit)
    try:
        _, refused = h.send("JS")
        _, unreceived = h.send("ZJ", "license.verify.result")
        await h.drain()
        assert h.reason_for(refused) == "not_permitted"
        assert h.reason_for(unreceived) == "no_recipient"
    finally:
        await close(h)


async def test_a_second_copy_of_a_delivered_id_is_a_duplicate(h: Harness) -> None:
    msg_id, raw = h.envelope("JS")
    sig = h.signer("JS").sign(raw)
    h.produce(raw, sig)
    await h.drain()
    again = h.produce(raw, sig)  # the same signed bytes, produced a second time (a replay)
    await h.drain()
    assert h.reason_for(again) == "duplicate"
    assert h.delivered_ids() == [msg_id]


async def test_a_re_read_after_a_crash_is_skipped_silently_and_its_receipt_sent_again(h: Harness) -> None:
    msg_id, record = h.send("JS")
    await h.egress.handle([record])  # handled, but the offset never committed (a crash before the commit)
    await h.drain()  # the same record again, from the same offset
    assert h.delivered_ids() == [msg_id]
    assert h.dead_letters() == {}
    receipts = [i["message_id"] for r in h.receipts_to("JS") for i in r["payload"]["items"]]
    assert receipts == [msg_id, msg_id]  # the receipt may not have left before the crash


async def test_receipts_are_one_per_origin_and_batch(h: Harness) -> None:
    js = [h.send("JS")[0] for _ in range(3)]
    zj = [h.send("ZJ")[0] for _ in range(2)]
    _, bad = h.send("AH", payload={"nothing": "valid"})
    await h.drain()
    assert [[i["message_id"] for i in r["payload"]["items"]] for r in h.receipts_to("JS")] == [js]
    assert [[i["message_id"] for i in r["payload"]["items"]] for r in h.receipts_to("ZJ")] == [zj]
    ((item,),) = [r["payload"]["items"] for r in h.receipts_to("AH")]
    assert item["outcome"] == "rejected" and item["reason"] == "schema_violation"


# --- records that are not messages at all -----------------------------------------------------------------

def flawed(h: Harness, flaw: str, value: bytes = b"") -> InRecord:
    parts = h.broker.topics.setdefault(h.inbox, [[] for _ in range(h.broker.partitions)])
    r = InRecord(h.inbox, 0, len(parts[0]), None, value, {}, flaw)
    parts[0].append(r)
    return r


async def test_flawed_records_are_invalid_record_and_valid_traffic_continues(h: Harness) -> None:
    first, _ = h.send("JS")
    tombstone = flawed(h, "the record has no value (a tombstone)")
    undecodable = flawed(h, "the client library cannot decode the record: UnicodeDecodeError")
    last, _ = h.send("JS")
    await h.drain()
    assert h.reason_for(tombstone) == h.reason_for(undecodable) == "invalid_record"
    assert h.delivered_ids() == [first, last]


async def test_an_oversize_record_is_stored_truncated_with_its_size_and_hash(h: Harness) -> None:
    value = b'{"id": "' + b"x" * 1_100_000 + b'"}'
    record = h.produce(value, "e30..AAAA", extra=[("huge", b"y" * 10)])
    await h.drain()
    (letter,) = h.broker.records(h.cfg.topics.dlq(REGION))
    assert letter.headers[headers.DLQ_REASON] == b"invalid_record"
    assert letter.headers[headers.DLQ_TRUNCATED] == b"true"
    assert int(letter.headers[headers.DLQ_ORIGINAL_SIZE]) >= len(value)
    assert letter.headers[headers.DLQ_ORIGINAL_SHA256] == envelope.sha256_hex(value).encode()
    assert OutRecord(letter.topic, letter.value, letter.key, list(letter.headers.items())).size < 1024 * 1024
    assert h.reason_for(record) == "invalid_record"


async def test_an_exception_in_a_check_dead_letters_that_record_only(h: Harness, monkeypatch: Any) -> None:
    before, _ = h.send("JS")
    poison, poisoned = h.send("JS")
    after, _ = h.send("JS")
    validate = Checks.validate

    def failing(self: Checks, v: Any) -> Any:
        if v.env.id == poison:
            raise RecursionError("maximum recursion depth exceeded")
        return validate(self, v)
    monkeypatch.setattr(Checks, "validate", failing)
    await h.drain()
    assert h.reason_for(poisoned) == "processing_error"
    (letter,) = h.broker.records(h.cfg.topics.dlq(REGION))
    assert letter.headers[headers.DLQ_DETAIL].startswith(b"RecursionError")
    assert h.delivered_ids() == [before, after]


# --- ordering: nothing is committed before its outcomes are on Kafka -----------------------------------------

async def test_offsets_are_committed_only_after_dead_letters_receipts_and_audit_are_acknowledged(
        h: Harness) -> None:
    h.send("JS")
    h.send("JS", payload={"nothing": "valid"})
    stopping = asyncio.Event()
    consumer = MemoryInboxConsumer(h.broker, h.inbox, h.cfg.topics.egress_group(REGION))
    commit = consumer.commit

    async def commit_and_stop(batch: Any) -> None:
        await commit(batch)
        stopping.set()
    consumer.commit = commit_and_stop  # type: ignore[method-assign]
    await h.egress.run(consumer, stopping)
    events = h.broker.events
    commit_at = events.index(("commit", h.inbox))
    before = set(events[:commit_at])
    assert {("publish", h.cfg.topics.dlq(REGION)), ("publish", h.cfg.topics.inbox("JS")),
            ("publish", h.cfg.topics.audit)} <= before
    assert h.audit.pending() == 0


async def test_egress_waits_for_the_audit_records_before_committing(h: Harness) -> None:
    """The audit publish fails once: the commit must wait for the retry, never run ahead of it."""
    h.send("JS")
    failures = {"left": 1}
    publish = h.egress._fx.publisher.publish

    async def flaky(records: Any) -> None:
        if failures["left"] and any(r.topic == h.cfg.topics.audit for r in records):
            failures["left"] -= 1
            raise BrokerUnavailable("audit segment not acknowledged")
        await publish(records)
    h.audit._publisher.publish = flaky  # type: ignore[method-assign]
    await h.drain()
    events = h.broker.events
    assert failures["left"] == 0
    assert events.index(("publish", h.cfg.topics.audit)) < events.index(("commit", h.inbox))


async def test_a_stopping_gateway_gives_up_flushing_when_the_broker_is_down_and_commits_nothing(
        h: Harness) -> None:
    from gateway.relay.outcomes import Draining
    h.send("JS")
    h.broker.down = True
    stopping = asyncio.Event()
    consumer = MemoryInboxConsumer(h.broker, h.inbox, h.cfg.topics.egress_group(REGION))
    task = asyncio.create_task(h.egress.run(consumer, stopping))
    await asyncio.sleep(0.3)
    stopping.set()
    with pytest.raises(Draining):
        await asyncio.wait_for(task, 5)
    assert ("commit", h.inbox) not in h.broker.events


# --- a batch that sends nothing (receipts applied) does not hold the loop ---------------------------------------

class PacedConsumer(MemoryInboxConsumer):
    """The twin's consumer as the loop meets a real one: one record per batch, an empty poll waits 5 ms (the
    broker's fetch wait), and each commit noted with what had been delivered to the platform by then."""

    def __init__(self, h: Harness) -> None:
        super().__init__(h.broker, h.inbox, h.cfg.topics.egress_group(REGION), max_records=1)
        self.h = h
        self.commits: list[tuple[dict[int, int], list[str]]] = []

    async def poll(self) -> list[InRecord]:
        batch = await super().poll()
        if not batch:
            await asyncio.sleep(0.005)
        return batch

    async def commit(self, batch: Any) -> None:
        self.commits.append(({r.partition: r.offset + 1 for r in batch}, self.h.delivered_ids()))
        await super().commit(batch)


def sent_and_receipted(h: Harness) -> None:
    """A message this region sent to JS, and JS's signed receipt for it on this region's inbox."""
    msg_id, raw = h.envelope(REGION, recipient="JS")
    h.record_sent(msg_id, "JS", raw)
    _, receipt = receipt_record(h, "JS", msg_id, raw)
    h.produce(receipt, h.signer("JS").sign(receipt))


async def run_until(h: Harness, consumer: PacedConsumer, commits: int) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(h.egress.run(consumer, stopping))
    async with asyncio.timeout(5):
        while len(consumer.commits) < commits:
            await asyncio.sleep(0.001)
    stopping.set()
    await asyncio.wait_for(task, 5)


async def test_a_batch_that_sends_nothing_does_not_hold_back_the_message_behind_it(h: Harness) -> None:
    """Receipts applied send nothing: their audit records wait for a flush to carry them, and meanwhile the loop
    delivers the next batch, whose flush carries them. Before, the loop waited up to 50 ms for a carrier first
    (at a counter, the reply a call was waiting for sat behind it)."""
    sent_and_receipted(h)
    msg_id, _ = h.send("JS")
    consumer = PacedConsumer(h)
    await run_until(h, consumer, 2)
    # Committed in offset order, and the receipts' batch only once the message behind it was delivered.
    assert consumer.commits == [({0: 1}, [msg_id]), ({0: 2}, [msg_id])]
    assert h.audit.pending() == 0


async def test_batches_left_to_a_carrier_are_committed_in_order_once_durable_with_no_traffic_after(
        h: Harness) -> None:
    sent_and_receipted(h)
    sent_and_receipted(h)
    consumer = PacedConsumer(h)
    await run_until(h, consumer, 2)
    assert [offsets for offsets, _ in consumer.commits] == [{0: 1}, {0: 2}]
    audit_at_commit = h.broker.events.index(("publish", h.cfg.topics.audit))
    assert audit_at_commit < h.broker.events.index(("commit", h.inbox))  # durable first, then committed
    assert h.audit.pending() == 0


# --- receipts at the origin --------------------------------------------------------------------------------

def receipt_record(h: Harness, by: str, msg_id: str, raw: bytes, outcome: str = "delivered") -> tuple[str, bytes]:
    item = {"message_id": msg_id, "envelope_sha256": envelope.sha256_hex(raw), "outcome": outcome,
            "received_at": envelope.utc_timestamp(), "decided_at": envelope.utc_timestamp(),
            **({"reason": "schema_violation", "detail": "forged"} if outcome == "rejected" else {})}
    return envelope.build(msg_type="yrdx.receipt", schema_version=1, sender=by, recipient=REGION,
                          payload={"items": [item]})


async def test_a_receipt_from_the_destination_marks_the_message_delivered(h: Harness) -> None:
    msg_id, raw = h.envelope(REGION, recipient="JS")
    h.record_sent(msg_id, "JS", raw)
    _, receipt = receipt_record(h, "JS", msg_id, raw)
    h.produce(receipt, h.signer("JS").sign(receipt))
    await h.drain()
    sent = h.state.sent(msg_id)
    assert sent is not None and sent.status == "delivered"


async def test_a_receipt_whose_signature_covers_other_bytes_changes_nothing(h: Harness) -> None:
    msg_id, raw = h.envelope(REGION, recipient="JS")
    h.record_sent(msg_id, "JS", raw)
    _, genuine = receipt_record(h, "JS", msg_id, raw, "delivered")
    _, forged = receipt_record(h, "JS", msg_id, raw, "rejected")
    record = h.produce(forged, h.signer("JS").sign(genuine))  # the destination's real header, other bytes
    await h.drain()
    assert h.reason_for(record) == "bad_signature"
    sent = h.state.sent(msg_id)
    assert sent is not None and sent.status == "published"


async def test_a_receipt_from_a_region_the_message_was_not_sent_to_is_unmatched(h: Harness) -> None:
    msg_id, raw = h.envelope(REGION, recipient="JS")
    h.record_sent(msg_id, "JS", raw)
    _, receipt = receipt_record(h, "ZJ", msg_id, raw)  # validly signed, by the wrong region
    h.produce(receipt, h.signer("ZJ").sign(receipt))
    await h.drain()
    assert h.dead_letters() == {}
    sent = h.state.sent(msg_id)
    assert sent is not None and sent.status == "published"
    assert h.metrics.receipts.labels("unmatched")._value.get() == 1


async def test_delivery_failed_when_the_webhook_refuses(tmp_path: Path) -> None:
    from aiohttp import web

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=422)
    app = web.Application()
    app.router.add_post("/hook", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    from tests.unit._relay import with_delivery
    h = await harness(tmp_path, lambda c: with_delivery(c, mode="webhook", url=f"http://127.0.0.1:{port}/hook",
                                                        max_attempts=2, backoff_initial_s=0.01))
    try:
        _, record = h.send("JS")
        await h.drain()
        assert h.reason_for(record) == "delivery_failed"
        ((item,),) = [r["payload"]["items"] for r in h.receipts_to("JS")]
        assert item["reason"] == "delivery_failed" and "422" in item["detail"]
    finally:
        await close(h)
        await runner.cleanup()


