"""Kafka names of an exchange: the default names, each prefixed with `kafka.namespace` when set."""

from __future__ import annotations

import pytest

from gateway.config import KafkaConfig
from gateway.kafka.reader import TopicRecord
from gateway.relay.replay import DeadLetter, replay_record
from gateway.wire.regions import (
    AUDIT_TOPIC,
    CHECKPOINT_TOPIC,
    DEFAULT_TOPICS,
    REGIONS,
    TRUST_TOPIC,
    Topics,
    check_namespace,
    dlq_topic,
    inbox_topic,
)


def test_default_names_are_design_names() -> None:
    t = Topics()
    assert t == DEFAULT_TOPICS == KafkaConfig().topics
    assert [t.inbox(r) for r in REGIONS] == ["yrdx.sh.inbox", "yrdx.js.inbox", "yrdx.zj.inbox", "yrdx.ah.inbox"]
    assert [t.dlq(r) for r in REGIONS] == ["yrdx.sh.dlq", "yrdx.js.dlq", "yrdx.zj.dlq", "yrdx.ah.dlq"]
    assert [t.files(r) for r in REGIONS] == ["yrdx.sh.files", "yrdx.js.files", "yrdx.zj.files", "yrdx.ah.files"]
    assert (t.audit, t.checkpoints, t.trust) == ("yrdx.audit", "yrdx.checkpoints", "yrdx.trust")
    assert (t.audit, t.checkpoints, t.trust) == (AUDIT_TOPIC, CHECKPOINT_TOPIC, TRUST_TOPIC)
    assert all(t.inbox(r) == inbox_topic(r) and t.dlq(r) == dlq_topic(r) for r in REGIONS)
    assert t.egress_group("SH") == "yrdx-sh" and t.group("yrdx-tx-sh") == "yrdx-tx-sh"


def test_a_namespace_prefixes_every_name() -> None:
    t = Topics("staging")
    assert t.inbox("SH") == "staging.yrdx.sh.inbox" and t.dlq("AH") == "staging.yrdx.ah.dlq"
    assert t.files("JS") == "staging.yrdx.js.files"
    assert (t.audit, t.checkpoints, t.trust) == ("staging.yrdx.audit", "staging.yrdx.checkpoints", "staging.yrdx.trust")
    assert t.egress_group("ZJ") == "staging.yrdx-zj" and t.group("yrdx-tx-sh") == "staging.yrdx-tx-sh"
    assert KafkaConfig(namespace="staging").topics == t


def test_two_namespaces_share_no_name() -> None:
    def names(t: Topics) -> set[str]:
        return {t.audit, t.checkpoints, t.trust,
                *(f(r) for r in REGIONS for f in (t.inbox, t.dlq, t.files, t.egress_group))}

    a, b, default = names(Topics("a")), names(Topics("b")), names(Topics())
    assert len(a) == len(b) == len(default) == 3 + 4 * len(REGIONS)
    assert not (a & b) and not (a & default) and not (b & default)


@pytest.mark.parametrize("good", ["", "a", "9", "staging", "gm-suite", "a-", "x" * 32])
def test_valid_namespaces(good: str) -> None:
    assert check_namespace(good) == good


@pytest.mark.parametrize("bad", ["-a", "A", "a.b", "a_b", "a b", "x" * 33, "é", "a\n"])
def test_invalid_namespaces(bad: str) -> None:
    with pytest.raises(ValueError, match="lowercase letters, digits or '-'"):
        check_namespace(bad)
    with pytest.raises(ValueError):
        Topics(bad)


def test_replay_goes_to_the_inbox_of_its_own_namespace() -> None:
    letter = DeadLetter(TopicRecord("alt.yrdx.sh.dlq", 0, 7, b"k", b"v", {"yrdx-sig": b"s"}), "duplicate", "", "id")
    record = replay_record(letter, "SH", Topics("alt"))
    assert record.topic == "alt.yrdx.sh.inbox"
    assert dict(record.headers)["yrdx-replay-of"] == b"alt.yrdx.sh.dlq:0:7"
    assert replay_record(letter, "SH").topic == "yrdx.sh.inbox"
