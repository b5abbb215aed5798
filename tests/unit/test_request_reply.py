"""Request-reply (gateway/relay/requests*.py) over the in-memory Kafka twin: SH's platform asks JS; JS's result is
produced into SH's inbox signed by JS's real key and consumed by SH's egress with the reply step. Deadlines,
a reply racing the deadline, exactly one compensation, late results, Idempotency-Key retries."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from gateway.audit.model import all_entries, parse_segment
from gateway.config import GatewayConfig
from gateway.crypto.keyfiles import load_encryption_key, load_encryption_pub
from gateway.crypto.seal import Opener, Sealer
from gateway.kafka.memory import MemoryPublisher
from gateway.relay.checks import Checks
from gateway.relay.delivery import WebhookDeliverer
from gateway.relay.egress import Egress
from gateway.relay.ingress import Ingress
from gateway.relay.outcomes import Effects
from gateway.relay.requests import POLL_S, ReplyOutcome, RequestReply
from gateway.relay.requests_replies import ReplyStep, Waiters
from gateway.relay.requests_table import ReplyTable
from gateway.state import NewRequest
from gateway.wire import envelope
from gateway.wire.problems import ProblemError
from tests._util import with_use_context
from tests.unit._relay import REGION, REGISTRY, Harness, close, harness, with_delivery

PLATFORM = "sh-platform"
LICENSE = "license.verify.request"  # no compensation
SETTLEMENT = "medical.settlement.request"  # compensation: medical.reversal


@dataclass
class Rig:
    h: Harness
    rr: RequestReply

    def request(self, msg_type: str, **extra: Any) -> dict[str, Any]:
        return with_use_context({"type": msg_type, "to": "JS", "payload": copy.deepcopy(REGISTRY.examples(msg_type)[0]),
                                 **extra})

    def sent_to_js(self) -> list[envelope.Envelope]:
        """What SH sent to JS, receipts aside."""
        envs = [envelope.parse(r.value) for r in self.h.broker.records(self.h.cfg.topics.inbox("JS"))]
        return [e for e in envs if e.type != "yrdx.receipt"]

    def answer(self, correlation_id: str, msg_type: str, sender: str = "JS") -> str:
        """JS's result for a request, produced into SH's inbox (not yet consumed)."""
        msg_id, _ = self.h.send(sender, msg_type, correlation_id=correlation_id,
                                payload=copy.deepcopy(REGISTRY.examples(msg_type)[0]))
        return msg_id

    async def sent(self, n: int = 1) -> list[envelope.Envelope]:
        """Wait until n requests reached JS's inbox topic (and the request rows know their ids)."""
        await until(lambda: len(self.sent_to_js()) >= n)
        envs = self.sent_to_js()
        await until(lambda: all(self.h.state.request_by_id(e.id) is not None for e in envs
                                if REGISTRY.x_reply(e.type) is not None))
        return envs


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    made = await make_rig(tmp_path)
    yield made
    await close(made.h)


async def make_rig(tmp_path: Path, edit: Callable[[GatewayConfig], GatewayConfig] | None = None) -> Rig:
    h = await harness(tmp_path, edit)
    cfg = h.cfg
    publisher = MemoryPublisher(h.broker)
    sealers = {r: Sealer.for_key(load_encryption_pub(p), kid=r) for r, p in cfg.encryption_keys.items()}
    opener = Opener.for_key(load_encryption_key(cfg.encryption_key)) if cfg.encryption_key else None
    ingress = Ingress(cfg, REGISTRY, h.signer(REGION), publisher, h.state, h.audit, h.metrics, sealers)
    table = ReplyTable(REGISTRY, cfg.requests)
    waiters = Waiters()
    rr = RequestReply(cfg, table, ingress, h.state, h.audit, h.metrics, opener, waiters)
    h.egress = Egress(cfg, Checks(cfg, REGISTRY, h.trust, opener),
                      Effects(REGION, cfg.topics, h.signer(REGION), publisher, h.state, h.audit, h.metrics),
                      WebhookDeliverer(h.session, h.metrics), None,
                      ReplyStep(cfg, table, h.state, h.audit, h.metrics, waiters))
    return Rig(h, rr)


def audited(h: Harness, stage: str) -> list[dict[str, Any]]:
    """The audit records of a stage, flushed to the twin's yrdx.audit or still pending."""
    flushed = [r for seg in h.broker.records(h.cfg.topics.audit) for r in parse_segment(seg.value).entries()]
    return [r for r in flushed + all_entries(h.audit._pending) if r["stage"] == stage]


async def test_a_reply_within_the_deadline_answers_the_call_and_is_not_delivered_as_a_fresh_message(rig: Rig) -> None:
    call = asyncio.create_task(rig.rr.call(PLATFORM, rig.request(LICENSE), deadline_ms=5000))
    (req,) = await rig.sent()
    reply_id = rig.answer(req.correlation_id, "license.verify.result")
    await rig.h.drain()
    outcome = await call
    assert outcome.status == "replied" and outcome.message_id == req.id and outcome.problem() is None
    assert outcome.reply is not None and outcome.reply["id"] == reply_id and outcome.reply["from"] == "JS"
    assert outcome.reply["envelope"]["correlation_id"] == req.correlation_id
    assert outcome.elapsed_ms < 5000
    assert reply_id not in rig.h.delivered_ids()  # answered the call, not pushed to the pull inbox
    status = rig.rr.status(PLATFORM, req.id)
    assert status["status"] == "replied" and status["reply"]["id"] == reply_id and "replied_at" in status
    assert rig.h.state.seen([reply_id])[reply_id].outcome == "delivered"  # a second copy is a duplicate
    (delivered,) = [r for r in audited(rig.h, "delivered") if r["message_id"] == reply_id]
    assert delivered["detail"]["mode"] == "reply"
    # The sender gets its receipt, as for any delivered message.
    assert any(item["message_id"] == reply_id for r in rig.h.receipts_to("JS") if r["type"] == "yrdx.receipt"
               for item in r["payload"]["items"])


async def test_the_gateway_gives_a_request_without_correlation_id_a_fresh_one(rig: Rig) -> None:
    first = asyncio.create_task(rig.rr.call(PLATFORM, rig.request(LICENSE), deadline_ms=200))
    second = asyncio.create_task(rig.rr.call(PLATFORM, rig.request(LICENSE), deadline_ms=200))
    a, b = await rig.sent(2)
    assert a.correlation_id != b.correlation_id
    await asyncio.gather(first, second)


async def test_a_deadline_without_reply_times_out_and_a_type_without_compensation_sends_nothing_more(
        rig: Rig) -> None:
    outcome = await rig.rr.call(PLATFORM, rig.request(LICENSE), deadline_ms=150)
    assert outcome.status == "timed_out" and outcome.compensation is None and outcome.reply is None
    problem = outcome.problem()
    assert problem is not None and problem.code == "reply_timeout" and problem.status == 504
    assert problem.body()["status_url"] == f"/v1/requests/{outcome.message_id}"
    assert [e.type for e in rig.sent_to_js()] == [LICENSE]
    assert rig.rr.status(PLATFORM, outcome.message_id)["status"] == "timed_out"
    (timed_out,) = [r for r in audited(rig.h, "rejected") if r["message_id"] == outcome.message_id]
    assert timed_out["detail"]["reason"] == "reply_timeout"
    assert rig.h.metrics.reply_timeouts.labels(LICENSE)._value.get() == 1


async def test_a_settlement_past_its_deadline_is_reversed_exactly_once(rig: Rig) -> None:
    outcome = await rig.rr.call(PLATFORM, rig.request(SETTLEMENT), deadline_ms=150, idempotency_key="s-1")
    assert outcome.status == "compensated" and outcome.compensation is not None
    assert outcome.compensation.type == "medical.reversal"
    again = await rig.rr.call(PLATFORM, rig.request(SETTLEMENT), deadline_ms=150, idempotency_key="s-1")
    for _ in range(3):
        await rig.rr.sweep()
    sent = rig.sent_to_js()
    assert [e.type for e in sent] == [SETTLEMENT, "medical.reversal"]  # the retry and the sweeps sent nothing
    assert again.status == "compensated" and again.message_id == outcome.message_id
    reversal = sent[1]
    assert reversal.id == outcome.compensation.message_id and reversal.correlation_id == sent[0].correlation_id
    assert reversal.sealed is not None  # medical.reversal is sealed for JS like any message of that type
    opener = Opener.for_key(load_encryption_key(rig.h.ex.pki.encryption_key("JS")))
    payload = orjson.loads(opener.open(reversal.sealed))
    request_payload = REGISTRY.examples(SETTLEMENT)[0]
    assert payload["omsgid"] == outcome.message_id and payload["oinfno"] == "2207"
    assert payload["psn_no"] == request_payload["psn_no"]
    assert REGISTRY.validate("medical.reversal", 1, payload) == []
    doc = rig.rr.status(PLATFORM, outcome.message_id)
    assert doc["status"] == "compensated" and doc["compensation"] == {"type": "medical.reversal",
                                                                      "message_id": reversal.id}
    assert rig.h.metrics.compensations.labels(SETTLEMENT)._value.get() == 1


async def test_a_late_result_after_a_reversal_is_recorded_and_never_delivered(rig: Rig) -> None:
    outcome = await rig.rr.call(PLATFORM, rig.request(SETTLEMENT), deadline_ms=150)
    req = rig.sent_to_js()[0]
    late_id = rig.answer(req.correlation_id, "medical.settlement.result")
    await rig.h.drain()
    assert late_id not in rig.h.delivered_ids()
    doc = rig.rr.status(PLATFORM, outcome.message_id)
    assert doc["status"] == "late_result" and doc["reply"]["id"] == late_id
    assert doc["compensation"]["message_id"] == outcome.compensation.message_id  # type: ignore[union-attr]
    (late,) = audited(rig.h, "late_result")
    assert late["message_id"] == late_id and late["detail"]["request"] == outcome.message_id
    assert late["detail"]["delivered"] == "false"
    assert rig.h.dead_letters() == {}  # consumed, not refused
    # A second copy of the late result is a duplicate, never a fresh outcome either.
    rig.h.produce(rig.h.broker.records(rig.h.inbox)[-1].value, rig.h.broker.records(rig.h.inbox)[-1].headers[
        "yrdx-sig"])
    await rig.h.drain()
    assert late_id not in rig.h.delivered_ids()


async def test_a_late_result_of_a_type_without_compensation_is_recorded_and_delivered(rig: Rig) -> None:
    outcome = await rig.rr.call(PLATFORM, rig.request(LICENSE), deadline_ms=150)
    late_id = rig.answer(rig.sent_to_js()[0].correlation_id, "license.verify.result")
    await rig.h.drain()
    (item,) = rig.h.state.lease_inbox(PLATFORM, 10, lease_s=0.0)
    assert item.id == late_id  # nothing was undone: the platform gets it as any message ...
    assert item.late_reply_to == outcome.message_id  # ... marked as the late result of its request
    doc = rig.rr.status(PLATFORM, outcome.message_id)
    assert doc["status"] == "late_result" and doc["reply"]["id"] == late_id
    (late,) = audited(rig.h, "late_result")
    assert late["detail"]["delivered"] == "true"


async def test_a_reply_racing_the_deadline_ends_in_one_state(rig: Rig) -> None:
    """The reply is consumed after the waiting call's deadline passed but before it looked: the row decides once,
    and whichever transition came second changes nothing."""
    call = asyncio.create_task(rig.rr.call(PLATFORM, rig.request(SETTLEMENT), deadline_ms=300))
    (req,) = await rig.sent()
    rig.answer(req.correlation_id, "medical.settlement.result")
    await rig.h.drain()  # the reply lands first ...
    assert not rig.h.state.settle_request(req.correlation_id, None, time.time())  # ... the deadline loses
    outcome = await call
    assert outcome.status == "replied"
    assert [e.type for e in rig.sent_to_js()] == [SETTLEMENT]  # no reversal for an answered settlement
    # And the other order: the deadline first, then the reply cannot answer it any more.
    row = rig.h.state.open_request(NewRequest("race-2", PLATFORM, SETTLEMENT, "JS", "medical.settlement.result",
                                              time.time() + 60, None, "medical.reversal", time.time())).request
    assert row is not None and row.status == "pending"
    assert rig.h.state.settle_request("race-2", None, time.time())
    rig.answer("race-2", "medical.settlement.result")
    await rig.h.drain()
    assert rig.h.state.requests(["race-2"])["race-2"].status == "late_result"


async def test_a_reply_consumed_by_another_replica_reaches_the_waiting_call_within_the_poll_interval(
        rig: Rig) -> None:
    """The egress that takes the reply belongs to another process (its own Waiters): nothing wakes this call but
    the watcher's read of the row."""
    assert rig.h.egress._replies is not None
    rig.h.egress._replies.waiters = Waiters()  # the other replica's
    call = asyncio.create_task(rig.rr.call(PLATFORM, rig.request(LICENSE), deadline_ms=8000))
    (req,) = await rig.sent()
    reply_id = rig.answer(req.correlation_id, "license.verify.result")
    await rig.h.drain()
    outcome = await call
    assert outcome.status == "replied" and outcome.reply is not None and outcome.reply["id"] == reply_id
    assert outcome.elapsed_ms < 4000  # well before the deadline: POLL_S, not the 8 s deadline


async def test_waiting_calls_share_one_read_of_their_rows_per_poll_interval(rig: Rig,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A read per call and interval grew with the queue (and fed it); the watcher reads all rows at once."""
    calls = [asyncio.create_task(rig.rr.call(PLATFORM, rig.request(LICENSE), deadline_ms=3000)) for _ in range(20)]
    await rig.sent(20)
    reads: list[int] = []
    read = rig.h.state.settled_requests

    def counting(correlation_ids: Any) -> Any:
        reads.append(len(correlation_ids))
        return read(correlation_ids)

    monkeypatch.setattr(rig.h.state, "settled_requests", counting)
    await asyncio.sleep(1.0)
    monkeypatch.setattr(rig.h.state, "settled_requests", read)
    assert 1 <= len(reads) <= 1.0 / POLL_S + 3  # one per interval (a read per call would be ~200)
    assert max(reads) == 20  # each read covers every waiting call
    for c in calls:
        c.cancel()
    await asyncio.gather(*calls, return_exceptions=True)


async def test_without_replicas_no_watcher_reads_and_the_local_egress_hands_the_call_its_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store only this process uses: the egress that took the reply wakes the call with the settled row, so
    neither a watcher nor the call itself reads the request back."""
    rig = await make_rig(tmp_path)
    rr = rig.rr
    rig.rr = RequestReply(rig.h.cfg, rr.table, rr._ingress, rig.h.state, rig.h.audit, rig.h.metrics, rr._opener,
                          rr._waiters, watch_replicas=False)
    try:
        polls: list[int] = []
        reads: list[list[str]] = []
        settled, rows = rig.h.state.settled_requests, rig.h.state.requests
        monkeypatch.setattr(rig.h.state, "settled_requests", lambda ids: polls.append(len(ids)) or settled(ids))
        monkeypatch.setattr(rig.h.state, "requests", lambda ids: reads.append(list(ids)) or rows(ids))
        call = asyncio.create_task(rig.rr.call(PLATFORM, rig.request(LICENSE), deadline_ms=5000))
        (req,) = await rig.sent()
        await asyncio.sleep(3 * POLL_S)
        reply_id = rig.answer(req.correlation_id, "license.verify.result")
        await rig.h.drain()
        outcome = await call
        assert outcome.status == "replied" and outcome.reply is not None and outcome.reply["id"] == reply_id
        assert polls == []  # no watcher
        assert reads == [[req.correlation_id]]  # the egress's match of the reply; the call read nothing
        stored = rows([req.correlation_id])[req.correlation_id]
        assert stored.status == "replied" and stored.reply is not None and stored.reply.id == reply_id
        assert outcome.reply == rig.rr.reply_document(stored)  # what it was handed is what the store holds
    finally:
        await close(rig.h)


async def test_a_retry_with_one_idempotency_key_sends_one_request_and_gets_the_same_reply(rig: Rig) -> None:
    body = rig.request(LICENSE)
    first = asyncio.create_task(rig.rr.call(PLATFORM, body, deadline_ms=5000, idempotency_key="k-1"))
    (req,) = await rig.sent()
    second = asyncio.create_task(rig.rr.call(PLATFORM, copy.deepcopy(body), deadline_ms=5000, idempotency_key="k-1"))
    await asyncio.sleep(0.05)
    reply_id = rig.answer(req.correlation_id, "license.verify.result")
    await rig.h.drain()
    a, b = await asyncio.gather(first, second)
    after: ReplyOutcome = await rig.rr.call(PLATFORM, copy.deepcopy(body), idempotency_key="k-1")
    assert len(rig.sent_to_js()) == 1
    assert {a.message_id, b.message_id, after.message_id} == {req.id}
    assert a.reply == b.reply == after.reply and a.reply is not None and a.reply["id"] == reply_id


async def test_calls_with_one_idempotency_key_at_once_send_one_request(rig: Rig) -> None:
    """Three calls with one key in the same turn of the loop, each signed before any claims the key: the claim in
    the request row decides, so one request is sent and every call answers with its id and its reply."""
    body = rig.request(LICENSE)
    calls = [asyncio.create_task(rig.rr.call(PLATFORM, copy.deepcopy(body), deadline_ms=5000,
                                             idempotency_key="k-at-once")) for _ in range(3)]
    (req,) = await rig.sent()
    reply_id = rig.answer(req.correlation_id, "license.verify.result")
    await rig.h.drain()
    outcomes = await asyncio.gather(*calls)
    assert len(rig.sent_to_js()) == 1
    assert {o.message_id for o in outcomes} == {req.id}
    assert all(o.reply is not None and o.reply["id"] == reply_id for o in outcomes)


async def test_a_correlation_id_of_another_request_is_refused(rig: Rig) -> None:
    first = asyncio.create_task(rig.rr.call(PLATFORM, rig.request(LICENSE, correlation_id="c-1"), deadline_ms=200))
    await rig.sent()
    with pytest.raises(ProblemError) as e:
        await rig.rr.call(PLATFORM, rig.request(LICENSE, correlation_id="c-1"))
    assert e.value.problem.code == "invalid_request" and "another request" in e.value.problem.detail
    await first
    assert len(rig.sent_to_js()) == 1


@pytest.mark.parametrize(("message", "deadline", "code"), [
    ({"type": "license.verify.result", "to": "JS", "payload": {}}, None, "invalid_request"),  # not a request type
    ({"type": LICENSE, "to": "JS"}, None, "invalid_request"),
    ({"type": LICENSE, "to": "JS", "payload": {}}, None, "schema_violation"),
    ({"type": "no.such.type", "to": "JS", "payload": {}}, None, "unknown_type"),
    ({"type": LICENSE, "to": "SH", "payload": {}}, None, "unknown_region"),
    (None, 10_001, "invalid_request"),  # above license.verify.request's limit of 10 s
    (None, 0, "invalid_request"),
    (None, "1000", "invalid_request"),
])
async def test_refused_requests_leave_nothing_behind(rig: Rig, message: dict[str, Any] | None, deadline: Any,
                                                     code: str) -> None:
    with pytest.raises(ProblemError) as e:
        await rig.rr.call(PLATFORM, message or rig.request(LICENSE), deadline_ms=deadline)
    assert e.value.problem.code == code
    assert rig.sent_to_js() == []
    assert rig.h.state.overdue_requests(time.time() + 3600, time.time() + 3600, 10) == []


async def test_the_sweeper_times_out_and_compensates_a_request_nobody_waits_for(rig: Rig) -> None:
    """A replica that crashed while holding the call leaves the row pending: any replica's sweeper decides it."""
    call = asyncio.create_task(rig.rr.call(PLATFORM, rig.request(SETTLEMENT), deadline_ms=30_000))
    (req,) = await rig.sent()
    call.cancel()  # the waiting call is gone; the row stays pending
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await rig.rr.sweep() == 0  # its deadline has not passed
    rig.h.state._b._db.execute("UPDATE requests SET deadline_at = ? WHERE correlation_id = ?",  # type: ignore
                               (time.time() - 5, req.correlation_id))
    assert await rig.rr.sweep() == 1
    assert await rig.rr.sweep() == 0
    assert [e.type for e in rig.sent_to_js()] == [SETTLEMENT, "medical.reversal"]
    assert rig.rr.status(PLATFORM, req.id)["status"] == "compensated"


async def test_status_is_only_for_the_platform_that_sent_the_request(rig: Rig) -> None:
    outcome = await rig.rr.call(PLATFORM, rig.request(LICENSE), deadline_ms=100)
    with pytest.raises(ProblemError) as e:
        rig.rr.status("other-platform", outcome.message_id)
    assert e.value.problem.code == "not_found"
    with pytest.raises(ProblemError):
        rig.rr.status(PLATFORM, "no-such-id")


async def test_a_webhook_platform_gets_no_answered_reply_and_a_late_result_marked_late(tmp_path: Path) -> None:
    from aiohttp import web

    got: list[dict[str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        got.append(dict(request.headers))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    rig = await make_rig(tmp_path, lambda c: with_delivery(c, mode="webhook", url=url))
    try:
        call = asyncio.create_task(rig.rr.call(PLATFORM, rig.request(LICENSE), deadline_ms=5000))
        (req,) = await rig.sent()
        rig.answer(req.correlation_id, "license.verify.result")
        await rig.h.drain()
        assert (await call).status == "replied" and got == []  # the answer went to the call only
        timed_out = await rig.rr.call(PLATFORM, rig.request(LICENSE), deadline_ms=100)
        (asked,) = [e for e in rig.sent_to_js() if e.id == timed_out.message_id]  # partitions: no global order
        late_id = rig.answer(asked.correlation_id, "license.verify.result")
        await rig.h.drain()
        (delivered,) = got
        assert delivered["Yrdx-Message-Id"] == late_id
        assert delivered["Yrdx-Late-Reply-To"] == timed_out.message_id
    finally:
        await close(rig.h)
        await runner.cleanup()


async def test_a_sealed_reply_is_opened_once_and_handed_to_the_call_as_the_store_would_give_it(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Egress opened the sealed result to check it; the waiting call takes that payload instead of opening the
    stored envelope a second time, and gets the document a read of the store gives."""
    opener = rig.rr._opener
    assert opener is not None
    opened: list[str] = []
    real_open = opener.open
    monkeypatch.setattr(opener, "open", lambda sealed: opened.append(sealed) or real_open(sealed))
    call = asyncio.create_task(rig.rr.call(PLATFORM, rig.request(SETTLEMENT), deadline_ms=5000))
    (req,) = await rig.sent()
    result = REGISTRY.examples("medical.settlement.result")[0]
    sealer = Sealer.for_key(load_encryption_pub(rig.h.ex.pki.encryption_pub(REGION)), kid=REGION)
    _, raw = rig.h.envelope("JS", "medical.settlement.result", correlation_id=req.correlation_id,
                            sealed=sealer.seal(orjson.dumps(result)))
    rig.h.produce(raw, rig.h.signer("JS").sign(raw))
    await rig.h.drain()
    outcome = await call
    assert outcome.status == "replied" and outcome.reply is not None
    assert outcome.reply["envelope"].get("sealed") is not None and outcome.reply["payload"] == result
    assert len(opened) == 1  # by the egress checks only
    stored = rig.h.state.requests([req.correlation_id])[req.correlation_id]
    assert outcome.reply == rig.rr.reply_document(stored)  # opened here now: the same document
    assert len(opened) == 2


async def test_a_request_the_broker_did_not_acknowledge_keeps_its_claim_and_a_retry_resends_it(rig: Rig) -> None:
    """broker_unavailable: the settlement may have reached the broker all the same, so its row stays pending with
    the message id and the rendered reversal (its deadline still reverses it), and a retry with the key resends
    the very same message."""
    body = rig.request(SETTLEMENT)
    rig.h.broker.down = True
    with pytest.raises(ProblemError) as e:
        await rig.rr.call(PLATFORM, copy.deepcopy(body), deadline_ms=30_000, idempotency_key="k-down")
    assert e.value.problem.code == "broker_unavailable"
    (row,) = rig.h.state.overdue_requests(time.time() + 60, 0, 10)
    assert row.status == "pending" and row.message_id is not None and row.compensation_payload is not None
    assert orjson.loads(row.compensation_payload)["omsgid"] == row.message_id
    rig.h.broker.down = False
    retry = asyncio.create_task(rig.rr.call(PLATFORM, copy.deepcopy(body), deadline_ms=30_000,
                                            idempotency_key="k-down"))
    (req,) = await rig.sent()
    assert req.id == row.message_id
    rig.answer(req.correlation_id, "medical.settlement.result")
    await rig.h.drain()
    outcome = await retry
    assert (outcome.status, outcome.message_id) == ("replied", row.message_id)


async def test_a_call_gone_right_after_the_brokers_ack_leaves_a_settlement_the_sweeper_reverses(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim carries the message id and the reversal before the publish: a replica that dies between the
    broker's ack and its answer leaves a row that any sweeper can reverse (not a settlement standing unseen)."""
    published = rig.h.audit.durable
    stuck = asyncio.Event()

    async def acked_then_stuck(*args: Any, **kwargs: Any) -> None:
        await published(*args, **kwargs)
        await stuck.wait()

    monkeypatch.setattr(rig.h.audit, "durable", acked_then_stuck)
    call = asyncio.create_task(rig.rr.call(PLATFORM, rig.request(SETTLEMENT), deadline_ms=30_000))
    (req,) = await rig.sent()  # on the broker, and the call never got the ack's answer
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    monkeypatch.undo()
    stuck.set()
    row = rig.h.state.request_by_id(req.id)
    assert row is not None and row.status == "pending" and row.compensation_payload is not None
    assert orjson.loads(row.compensation_payload)["omsgid"] == req.id
    rig.h.state._b._db.execute("UPDATE requests SET deadline_at = ? WHERE correlation_id = ?",  # type: ignore
                               (time.time() - 5, req.correlation_id))
    assert await rig.rr.sweep() == 1
    assert [e.type for e in rig.sent_to_js()] == [SETTLEMENT, "medical.reversal"]
    assert rig.rr.status(PLATFORM, req.id)["status"] == "compensated"


async def test_the_replies_of_one_batch_answer_their_requests_in_one_transaction(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = [asyncio.create_task(rig.rr.call(PLATFORM, rig.request(LICENSE), deadline_ms=5000)) for _ in range(3)]
    sent = await rig.sent(3)
    transactions: list[int] = []
    answer_requests = rig.h.state.answer_requests

    def counted(answers: Any, at: float) -> list[bool]:
        transactions.append(len(answers))
        return answer_requests(answers, at)

    monkeypatch.setattr(rig.h.state, "answer_requests", counted)
    replies = {rig.answer(req.correlation_id, "license.verify.result") for req in sent}
    await rig.h.drain()  # one poll: the three results in one batch
    outcomes = await asyncio.gather(*calls)
    assert transactions == [3]
    assert {o.status for o in outcomes} == {"replied"} and {o.reply["id"] for o in outcomes if o.reply} == replies
