"""The audit index against a real PostgreSQL server (tests/_postgres.py) and the real Kafka broker.

The backend behaviours of tests/unit/test_audit_index.py run here once per backend, SQLite and PostgreSQL, through
the parametrized `index` fixture below; then both backends catch up from a real topic, resume at the stored
position and follow it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from gateway.audit.index import AuditIndex, open_index, trace, update_index
from gateway.audit.model import Segment
from gateway.config import KafkaConfig
from gateway.kafka.transport import ensure_topics
from tests.conftest import Broker
from tests.unit.test_audit_index import (  # the same behaviours, collected here again for both backends
    SCENARIO,
    A,
    keys,
    test_a_batch_stores_its_records_checkpoints_and_position_together,
    test_a_batch_that_fails_midway_leaves_neither_records_nor_position,
    test_a_batched_trail_is_indexed_a_row_per_entry_and_traced_message_by_message,
    test_a_different_record_under_a_known_seq_is_kept_apart_as_a_conflict,
    test_a_mixed_topic_indexes_and_traces_a_batched_chain_beside_one_of_a_record_per_message,
    test_an_unknown_message_has_no_trace,
    test_another_record_under_a_batch_record_s_seq_adds_no_row_and_is_reported,
    test_reindexing_the_same_segments_stores_each_record_once,
    test_the_stored_position_never_moves_back,
    test_trace_document_names_messages_receipts_and_signers,
    test_trace_gathers_the_conversation_its_receipts_and_claimed_copies,
    test_trace_is_the_same_from_any_message_of_the_conversation_or_its_receipts,
    test_trace_orders_records_by_time_then_region_then_seq,
    test_usage_lists_the_verified_records_of_the_subjects_in_the_region,
    test_usage_reads_every_replica_chain_of_the_region,
    test_usage_reads_the_entries_of_batched_verified_records,
    ticking,
)
from tests.unit.test_audit_replicas import (  # a region's replicas' chains side by side, on both backends
    clock,
    pki,
    test_the_index_keeps_a_region_s_chains_apart_and_returns_records_as_written,
    trust,
)

__all__ = [
    "test_a_batched_trail_is_indexed_a_row_per_entry_and_traced_message_by_message",
    "test_a_mixed_topic_indexes_and_traces_a_batched_chain_beside_one_of_a_record_per_message",
    "test_another_record_under_a_batch_record_s_seq_adds_no_row_and_is_reported",
    "test_usage_reads_the_entries_of_batched_verified_records",
    "ticking",
    "test_usage_reads_every_replica_chain_of_the_region",
    "test_a_batch_stores_its_records_checkpoints_and_position_together",
    "test_a_batch_that_fails_midway_leaves_neither_records_nor_position",
    "test_a_different_record_under_a_known_seq_is_kept_apart_as_a_conflict",
    "test_an_unknown_message_has_no_trace",
    "test_reindexing_the_same_segments_stores_each_record_once",
    "test_the_stored_position_never_moves_back",
    "test_trace_document_names_messages_receipts_and_signers",
    "test_trace_gathers_the_conversation_its_receipts_and_claimed_copies",
    "test_trace_is_the_same_from_any_message_of_the_conversation_or_its_receipts",
    "test_trace_orders_records_by_time_then_region_then_seq",
    "test_usage_lists_the_verified_records_of_the_subjects_in_the_region",
    "test_the_index_keeps_a_region_s_chains_apart_and_returns_records_as_written", "clock", "pki", "trust",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditIndex]:
    if request.param == "sqlite":
        target = str(tmp_path / "audit-index.sqlite")
    else:
        target = request.getfixturevalue("postgres_db")
    with open_index(target) as ix:
        assert ix.where.startswith(request.param)
        yield ix


# --- catching up from a real topic ----------------------------------------------------------------------------


async def _topic(kafka: Broker) -> str:
    """A fresh topic of one partition: the indexer reads it exactly as it reads yrdx.audit."""
    name = f"yrdx.test.audit.{uuid.uuid4().hex[:8]}"
    await ensure_topics(KafkaConfig(bootstrap_servers=kafka.bootstrap_servers), {name: 1})
    return name


async def _publish(kafka: Broker, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(topic, v, key=b"SH")
    finally:
        await producer.stop()


def _values(segments: Sequence[Segment]) -> list[bytes]:
    return [orjson.dumps(s.to_json()) for s in segments]


async def test_catch_up_indexes_a_real_topic_and_resumes_at_the_stored_position(
    kafka: Broker, index: AuditIndex
) -> None:
    topic = await _topic(kafka)
    half = len(SCENARIO.segments) // 2
    first = _values(SCENARIO.segments[:half])
    await _publish(kafka, topic, [*first, b"not a segment"])

    run = await update_index(kafka.bootstrap_servers, index, topic=topic)
    assert run.resumed == {} and run.positions == {0: half + 1}
    assert run.skipped == 1 and run.segments == half
    assert run.new == run.read == sum(len(s.records) for s in SCENARIO.segments[:half])

    await _publish(kafka, topic, _values(SCENARIO.segments[half:]))
    run = await update_index(kafka.bootstrap_servers, index, topic=topic)
    assert run.resumed == {0: half + 1}  # read on from where the last run stopped, not from the beginning
    assert run.new == run.read == sum(len(s.records) for s in SCENARIO.segments[half:])
    assert index.positions(topic) == {0: len(SCENARIO.segments) + 1}

    run = await update_index(kafka.bootstrap_servers, index, topic=topic)
    assert run.read == run.new == 0 and run.resumed == {0: len(SCENARIO.segments) + 1}
    assert index.counts()["records"] == len(SCENARIO.records)
    assert set(keys(trace(index, A))) >= SCENARIO.of(A)


async def test_a_segment_published_twice_is_indexed_once(kafka: Broker, index: AuditIndex) -> None:
    topic = await _topic(kafka)
    values = _values(SCENARIO.segments)
    await _publish(kafka, topic, values + values[:3])  # e.g. a publish retried after an unclear timeout
    run = await update_index(kafka.bootstrap_servers, index, topic=topic)
    assert run.read == len(SCENARIO.records) + sum(len(s.records) for s in SCENARIO.segments[:3])
    assert run.new == len(SCENARIO.records) and run.conflicts == 0
    assert index.counts() == {"records": len(SCENARIO.records), "segments": len(SCENARIO.segments), "conflicts": 0}


async def test_follow_indexes_segments_as_they_arrive_until_stopped(kafka: Broker, index: AuditIndex) -> None:
    topic = await _topic(kafka)
    stop = asyncio.Event()
    follower = asyncio.create_task(update_index(kafka.bootstrap_servers, index, topic=topic, follow=stop))
    try:
        for seg in SCENARIO.segments:
            await _publish(kafka, topic, _values([seg]))
        deadline = time.monotonic() + 30
        while (await asyncio.to_thread(index.counts))["records"] < len(SCENARIO.records):
            assert time.monotonic() < deadline, "the follower did not index every segment"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        run = await asyncio.wait_for(follower, 10)
    assert run.new == len(SCENARIO.records) and run.positions == {0: len(SCENARIO.segments)}
    assert index.positions(topic) == {0: len(SCENARIO.segments)}


async def test_catch_up_of_a_topic_that_does_not_exist_yet_indexes_nothing(kafka: Broker, index: AuditIndex) -> None:
    run = await update_index(kafka.bootstrap_servers, index, topic=f"yrdx.test.absent.{uuid.uuid4().hex[:8]}")
    assert run.read == 0 and run.positions == {}


async def test_an_unreachable_index_server_is_reported_not_crashed(kafka: Broker) -> None:
    """The HTTP route answers 503 index_unavailable from this exception instead of a bare 500."""
    from gateway.audit.index import IndexUnavailable, current_trace
    from gateway.config import KafkaConfig
    from gateway.dev.local_kafka import free_port

    with pytest.raises(IndexUnavailable, match="cannot open the audit index"):
        await current_trace(KafkaConfig(bootstrap_servers=kafka.bootstrap_servers),
                            f"postgresql://yrdx@127.0.0.1:{free_port()}/nothing", "no-such-message")
