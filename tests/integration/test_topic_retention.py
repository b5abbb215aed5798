"""Topic retention is configuration (`kafka.retention`), set when the gateway creates its topics and read back
from the real broker: inboxes and the DLQ kept a short time (personal data), the audit trail and checkpoints at
least six months, the trust topic compacted. A topic that exists already is not altered; what differs is
reported (README "Topics and retention")."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from gateway.config import ConfigError, KafkaConfig, Retention, parse_config
from gateway.kafka.transport import ensure_topics, topic_configs
from gateway.wire.regions import REGIONS
from tests.conftest import Broker

DAY_MS = 24 * 3_600_000
KEYS = ("cleanup.policy", "retention.ms")


async def read_configs(kafka: KafkaConfig, topics: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    finally:
        await admin.close()
    return {res["resource_name"]: {e["config_names"]: e["config_value"] for e in res["config_entries"]
                                   if e["config_names"] in KEYS}
            for r in responses for res in r.to_object()["resources"]}


async def listed(kafka: KafkaConfig, topics: list[str], timeout: float = 30.0) -> None:
    """Until the broker lists every topic (a topic just created may not be in the metadata yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while not set(topics) <= set(await admin.list_topics()):
            assert time.monotonic() < deadline, f"{topics} not listed within {timeout} s"
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def test_topics_are_created_with_the_configured_retention(kafka: Broker) -> None:
    cfg = KafkaConfig(kafka.bootstrap_servers, namespace=f"ret-{uuid.uuid4().hex[:8]}",
                      retention=Retention(inbox_hours=24, dlq_hours=72, audit_days=200))
    names = cfg.topics
    topics = {names.inbox(r): 4 for r in REGIONS} | {names.dlq("SH"): 1, names.audit: 1, names.checkpoints: 1,
                                                     names.trust: 1}
    assert await ensure_topics(cfg, topics, topic_configs(cfg, "SH")) == []
    held = await read_configs(cfg, list(topics))
    for r in REGIONS:
        assert held[names.inbox(r)] == {"cleanup.policy": "delete", "retention.ms": str(DAY_MS)}
    assert held[names.dlq("SH")] == {"cleanup.policy": "delete", "retention.ms": str(3 * DAY_MS)}
    assert held[names.audit] == held[names.checkpoints] == {"cleanup.policy": "delete",
                                                            "retention.ms": str(200 * DAY_MS)}
    assert held[names.trust]["cleanup.policy"] == "compact"

    # A second gateway whose config says otherwise changes nothing, and says what differs.
    await listed(cfg, list(topics))
    other = KafkaConfig(kafka.bootstrap_servers, namespace=cfg.namespace)  # the defaults: 7 days, 190 days
    differences = await ensure_topics(other, topics, topic_configs(other, "SH"))
    assert f"{names.audit}: retention.ms={200 * DAY_MS}, the config says {190 * DAY_MS}" in differences
    assert f"{names.inbox('JS')}: retention.ms={DAY_MS}, the config says {7 * DAY_MS}" in differences
    assert not any(names.trust in line for line in differences)
    assert (await read_configs(cfg, [names.audit]))[names.audit]["retention.ms"] == str(200 * DAY_MS)


async def test_a_topic_made_by_hand_with_the_broker_defaults_is_reported(kafka: Broker) -> None:
    cfg = KafkaConfig(kafka.bootstrap_servers, namespace=f"ret-{uuid.uuid4().hex[:8]}")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(cfg.topics.trust, 1, 1)])  # delete policy: statements would expire
    finally:
        await admin.close()
    await listed(cfg, [cfg.topics.trust])
    differences = await ensure_topics(cfg, {cfg.topics.trust: 1}, topic_configs(cfg, "SH"))
    assert differences == [f"{cfg.topics.trust}: cleanup.policy=delete, the config says compact"]


def test_retention_is_configured_and_the_audit_trail_is_kept_six_months_at_least(tmp_path: object) -> None:
    base = {"region": "SH", "identity": {}, "trust": {}}
    with pytest.raises(ConfigError) as e:
        parse_config({**base, "kafka": {"retention": {"audit_days": 90, "inbox_hours": 0, "keep": 1}}}, tmp_path)
    assert "kafka.retention.audit_days: expected an integer >= 183" in e.value.errors
    assert "kafka.retention.inbox_hours: expected an integer >= 1" in e.value.errors
    assert any(line.startswith("kafka.retention.keep: unknown key") for line in e.value.errors)
    assert Retention() == Retention(inbox_hours=168, dlq_hours=168, audit_days=190)
