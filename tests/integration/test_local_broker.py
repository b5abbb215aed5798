"""A real single-node Apache Kafka (gateway.dev.local_kafka.LocalKafka, `yrdx kafka`) against aiokafka 0.14.

One broker for the whole module, on free ports in a tmp dir. Nothing is skipped: the jars come from Maven
Central on the first run (cached outside the repo afterwards) and Java 17 is part of the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from gateway.cli.kafka import register
from gateway.dev.local_kafka import DEFAULT_VERSION, LocalKafka, free_port, probe_metadata


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    kafka = LocalKafka(
        tmp_path_factory.mktemp("kafka") / "broker",
        port=free_port(),
        controller_port=free_port(),
    )
    kafka.start(timeout=120.0)
    try:
        yield kafka
    finally:
        kafka.stop()
        if kafka.is_running():  # pragma: no cover - belt and braces: never leave a JVM behind
            kafka.kill()


def _name(prefix: str) -> str:
    return f"yrdx.test.{prefix}.{uuid.uuid4().hex[:8]}"


async def _create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=name, num_partitions=partitions, replication_factor=1)])
        deadline = time.monotonic() + 15
        while name not in await admin.list_topics():
            assert time.monotonic() < deadline, f"topic {name} never appeared"
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _drain(
    consumer: AIOKafkaConsumer, want: int, timeout: float = 30.0, commit: bool = False
) -> list[bytes]:
    """Read until ``want`` records arrived or the timeout passes; ``commit`` commits after each batch."""
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(values) < want and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=500)
        for records in batches.values():
            values.extend(r.value for r in records)
        if batches and commit:
            await consumer.commit()
    return values


async def test_status_and_metadata_while_running(broker: LocalKafka) -> None:
    status = broker.status()
    assert status["running"] is True
    assert isinstance(status["pid"], int)
    assert status["bootstrap_servers"] == broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
    assert status["version"] == DEFAULT_VERSION
    assert broker.pid_file.read_text().strip() == str(status["pid"])
    assert await asyncio.to_thread(probe_metadata, broker.bootstrap_servers) == 1
    # start() on a running broker is a no-op, not a second JVM
    await asyncio.to_thread(broker.start)
    assert broker.status()["pid"] == status["pid"]


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="yrdx")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    rc = args.func(args)
    assert isinstance(rc, int)
    return rc


def test_cli_against_running_and_absent_broker(
    broker: LocalKafka, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    ours = [
        "--dir",
        str(broker.data_dir),
        "--port",
        str(broker.port),
        "--controller-port",
        str(broker.controller_port),
    ]
    assert _cli("kafka", "status", *ours) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["running"] is True and status["pid"] == broker.status()["pid"]

    assert _cli("kafka", "start", *ours) == 0  # idempotent: already running
    captured = capsys.readouterr()
    assert captured.out.strip() == broker.bootstrap_servers and "already running" in captured.err

    absent = [
        "--dir",
        str(tmp_path / "none"),
        "--port",
        str(free_port()),
        "--controller-port",
        str(free_port()),
    ]
    assert _cli("kafka", "status", *absent) == 3
    assert json.loads(capsys.readouterr().out)["running"] is False
    assert _cli("kafka", "stop", *absent) == 0

    # an external cluster is configured: start/stop touch nothing, status probes it
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    assert _cli("kafka", "stop", *ours) == 0
    assert _cli("kafka", "start", *absent) == 0
    assert "external cluster" in capsys.readouterr().err
    assert broker.is_running() and not (tmp_path / "none").exists()
    assert _cli("kafka", "status") == 0
    external = json.loads(capsys.readouterr().out)
    assert external["external"] is True and external["running"] is True and external["brokers"] == 1
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    assert _cli("kafka", "status", "--timeout", "2") == 3


async def test_idempotent_producer_and_group_round_trip(broker: LocalKafka) -> None:
    bootstrap = broker.bootstrap_servers
    topic, group = _name("roundtrip"), _name("group")
    await _create_topic(bootstrap, topic, partitions=3)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        sent = [f"msg-{i:03d}".encode() for i in range(100)]
        futures = [
            await producer.send(topic, value=v, key=f"key-{i % 7}".encode()) for i, v in enumerate(sent)
        ]
        metadata = await asyncio.gather(*futures)
        # the broker granted a producer id (InitProducerId): idempotence is really on
        assert producer._txn_manager is not None and producer._txn_manager.producer_id >= 0
    finally:
        await producer.stop()
    assert {m.partition for m in metadata} <= {0, 1, 2}

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        received = await _drain(consumer, 100, commit=True)
        partitions = sorted(consumer.assignment())
        committed = {tp: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()
    assert sorted(received) == sorted(sent)
    assert len(partitions) == 3
    assert sum(offset or 0 for offset in committed.values()) == 100

    # a new member of the same group resumes from the committed offsets: nothing left to read
    again = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await again.start()
    try:
        assert await _drain(again, 1, timeout=3.0) == []
        ends = await again.end_offsets(partitions)
        for tp in partitions:
            assert await again.committed(tp) == ends[tp]
    finally:
        await again.stop()


async def test_transactions_commit_visible_abort_invisible(broker: LocalKafka) -> None:
    bootstrap = broker.bootstrap_servers
    topic = _name("txn")
    await _create_topic(bootstrap, topic)

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=_name("txn-producer"), acks="all"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-1")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted-1")
        await producer.send_and_wait(topic, b"aborted-2")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-2")
    finally:
        await producer.stop()

    async def read(isolation_level: str, want: int) -> list[bytes]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, isolation_level=isolation_level, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            return await _drain(consumer, want, timeout=10.0)
        finally:
            await consumer.stop()

    committed = await read("read_committed", 2)
    assert committed == [b"committed-1", b"committed-2"]
    # the aborted records really were written: an uncommitted reader sees them
    assert await read("read_uncommitted", 4) == [b"committed-1", b"aborted-1", b"aborted-2", b"committed-2"]


async def test_restart_keeps_data_and_status_reports_stopped(broker: LocalKafka) -> None:
    bootstrap = broker.bootstrap_servers
    topic = _name("restart")
    await _create_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"survives-restart")
    finally:
        await producer.stop()

    old_pid = broker.status()["pid"]
    await asyncio.to_thread(broker.stop)
    status = broker.status()
    assert status["running"] is False and status["pid"] is None
    assert not broker.is_running()
    assert not broker.pid_file.exists()
    await asyncio.to_thread(broker.stop)  # stopping a stopped broker is fine

    await asyncio.to_thread(broker.start)
    assert broker.is_running() and broker.status()["pid"] != old_pid

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        assert await _drain(consumer, 1) == [b"survives-restart"]
    finally:
        await consumer.stop()


async def test_kill_then_start_recovers(broker: LocalKafka) -> None:
    bootstrap = broker.bootstrap_servers
    topic = _name("crash")
    await _create_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"survives-sigkill")
    finally:
        await producer.stop()

    broker.kill()
    assert broker.status()["running"] is False
    assert not broker.pid_file.exists()
    await asyncio.to_thread(broker.start)

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        assert await _drain(consumer, 1) == [b"survives-sigkill"]
    finally:
        await consumer.stop()
