"""Idempotency-Key: a retry gets the message first built for it; a key reused for another request is a conflict;
and when two requests (two replicas) race on one key, the one that lost answers with the winner's message
instead of publishing its own."""

from __future__ import annotations

from pathlib import Path

from gateway.relay.idempotency import IdempotencyKeys, request_hash
from gateway.relay.signed import Signed
from gateway.state import NewSent, StateStore
from gateway.wire import envelope
from gateway.wire.problems import Problem


def signed(msg_id: str) -> Signed:
    _, raw = envelope.build(msg_type="license.verify.request", schema_version=1, sender="SH", recipient="JS",
                            payload={}, msg_id=msg_id)
    return Signed("sh-platform", msg_id, "license.verify.request", "JS", msg_id, raw, "sig-" + msg_id,
                  envelope.sha256_hex(raw))


def test_the_request_that_lost_the_race_answers_with_the_winners_message(tmp_path: Path) -> None:
    replica_a, replica_b = (IdempotencyKeys(StateStore(tmp_path / "state.sqlite")) for _ in range(2))
    sha = request_hash({"type": "license.verify.request", "to": "JS", "payload": {}})
    assert sha is not None
    # Both looked the key up before either remembered it; each built its own message.
    assert replica_a.recall("sh-platform", "k", sha) is None and replica_b.recall("sh-platform", "k", sha) is None
    first = signed("first")
    # a holds the key: publishes
    assert replica_a.remember("sh-platform", "k", IdempotencyKeys.claim(sha, first)) is None
    lost = replica_b.remember("sh-platform", "k", IdempotencyKeys.claim(sha, signed("second")))
    assert lost is not None and isinstance(lost.answer, Signed) and lost.answer.id == "first"
    assert lost.answer.envelope == first.envelope and not lost.final  # b (re)publishes a's very bytes


def test_a_retry_after_publication_is_answered_without_publishing_again(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state.sqlite")
    keys = IdempotencyKeys(state)
    sha = request_hash({"a": 1})
    assert sha is not None
    first = signed("m1")
    keys.remember("sh-platform", "k", keys.claim(sha, first))
    state.record_sent([NewSent(first.id, first.platform, first.type, first.to, first.correlation_id, first.sha256)],
                      "published")
    again = keys.recall("sh-platform", "k", sha)
    assert again is not None and again.final and isinstance(again.answer, Signed) and again.answer.id == "m1"
    other = keys.recall("sh-platform", "k", request_hash({"a": 2}) or "")
    assert other is not None and isinstance(other.answer, Problem) and other.answer.code == "idempotency_conflict"
