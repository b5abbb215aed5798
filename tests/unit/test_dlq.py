"""Dead letters (gateway.relay.replay) and `yrdx dlq list|replay` (gateway.cli.dlq), with the DLQ read and the
inbox publish replaced by stand-ins: what is listed, what a replay produces, the options, output and exit codes.
tests/e2e/test_dlq_replay.py replays against the real exchange."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from gateway.cli import main
from gateway.config import KafkaConfig
from gateway.dev.exchange import Exchange, init_exchange
from gateway.kafka.port import OutRecord
from gateway.kafka.reader import TopicRecord
from gateway.relay import replay as replay_module
from gateway.relay.replay import dead_letters, read_dead_letters, replay, select
from gateway.wire import headers

M1, M2 = "0190a0b1-0000-7000-8000-000000000001", "0190a0b1-0000-7000-8000-000000000002"


def envelope(mid: str) -> bytes:
    return orjson.dumps({"id": mid, "type": "x.y", "schema_version": 1, "from": "JS", "to": "SH", "correlation_id": "c",
                         "created_at": "2026-11-23T15:00:00.000Z", "payload": {}})


def letter(offset: int, value: bytes, reason: bytes, detail: bytes = b"") -> TopicRecord:
    return TopicRecord("yrdx.sh.dlq", 0, offset, b"k", value, {headers.SIGNATURE: b"sig", headers.DLQ_REASON: reason,
                                                                headers.DLQ_DETAIL: detail, "other": b"x"})


DLQ = [
    letter(0, envelope(M1), b"delivery_failed", b"webhook answered 503"),
    letter(1, b"\xff not an envelope", b"invalid_record", "détail".encode() + b"\xff"),
    letter(2, envelope(M2), b"schema_invalid"),
]


def test_dead_letters_carry_their_reason_detail_and_message_id() -> None:
    letters = dead_letters(DLQ)
    assert [(d.where, d.reason, d.message_id) for d in letters] == [
        ("0:0", "delivery_failed", M1), ("0:1", "invalid_record", ""), ("0:2", "schema_invalid", M2)]
    assert letters[1].detail == "détail\ufffd"
    assert dead_letters([TopicRecord("yrdx.sh.dlq", 0, 5, None, b"", {})])[0].reason == ""
    assert select(letters) == letters
    assert select(letters, "schema_invalid") == [letters[2]]
    assert select(letters, ids=[M1, M2]) == [letters[0], letters[2]]
    assert select(letters, "delivery_failed", [M2]) == []


@pytest.fixture()
def topic(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float]]:
    """The DLQ as read_topic returns it; the list says which topic was read with which timeout."""
    asked: list[tuple[str, float]] = []

    async def read_topic(kafka: KafkaConfig, name: str, timeout_s: float) -> list[TopicRecord]:
        asked.append((name, timeout_s))
        return DLQ

    monkeypatch.setattr(replay_module, "read_topic", read_topic)
    return asked


class Publisher:
    sent: list[OutRecord] = []

    def __init__(self, kafka: KafkaConfig, timeout_s: float) -> None:
        self.kafka, self.timeout_s = kafka, timeout_s

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def publish(self, records: Sequence[OutRecord]) -> None:
        Publisher.sent.extend(records)


@pytest.fixture()
def published(monkeypatch: pytest.MonkeyPatch) -> list[OutRecord]:
    Publisher.sent = []
    monkeypatch.setattr(replay_module, "KafkaPublisher", Publisher)
    return Publisher.sent


async def test_a_replay_is_the_same_signed_record_to_the_regions_inbox(topic: list[tuple[str, float]],
                                                                       published: list[OutRecord]) -> None:
    kafka = KafkaConfig(namespace="ns")
    letters = await read_dead_letters(kafka, "SH", 3.0)
    assert topic == [("ns.yrdx.sh.dlq", 3.0)] and len(letters) == 3
    await replay(kafka, "SH", letters[:1])
    [record] = published
    assert (record.topic, record.value, record.key) == ("ns.yrdx.sh.inbox", envelope(M1), b"k")
    assert record.headers == [(headers.SIGNATURE, b"sig"), (headers.REPLAY_OF, b"ns.yrdx.sh.dlq:0:0")]


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Exchange:
    return init_exchange(tmp_path_factory.mktemp("exchange"), base_port=0)


def test_dlq_list_prints_a_line_per_dead_letter(exchange: Exchange, topic: list[tuple[str, float]],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = str(exchange.config_path("SH"))
    assert main(["dlq", "list", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["0:0", "delivery_failed", M1, "webhook", "answered", "503"]
    assert lines[1].split()[:3] == ["0:1", "invalid_record", "-"]
    assert lines[-1] == "3 dead letter(s)" and topic == [("yrdx.sh.dlq", 30.0)]
    assert main(["dlq", "list", "--config", config, "--reason", "schema_invalid", "--timeout", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 dead letter(s)" and topic[-1] == ("yrdx.sh.dlq", 2.0)


def test_dlq_replay_needs_a_selection_and_replays_what_matches(
        exchange: Exchange, topic: list[tuple[str, float]], published: list[OutRecord],
        capsys: pytest.CaptureFixture[str]) -> None:
    config = str(exchange.config_path("SH"))
    assert main(["dlq", "replay", "--config", config]) == 2
    assert capsys.readouterr().err == "yrdx: dlq replay needs --id ID (repeatable), --reason CODE or --all\n"
    assert main(["dlq", "replay", "--config", config, "--id", "0190a0b1-0000-7000-8000-00000000ffff"]) == 1
    assert capsys.readouterr().err == "yrdx: no dead letter matches\n" and published == []
    assert main(["dlq", "replay", "--config", config, "--id", M1, "--id", M2]) == 0
    assert capsys.readouterr().out == "replayed 2 dead letter(s) into yrdx.sh.inbox\n"
    assert [r.value for r in published] == [envelope(M1), envelope(M2)]
    assert main(["dlq", "replay", "--config", config, "--all"]) == 0
    assert len(published) == 5


def test_dlq_commands_say_why_they_cannot(exchange: Exchange, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("region: BJ\n")
    assert main(["dlq", "list", "--config", str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"yrdx: bad config {bad}: region: unknown region 'BJ'")

    async def unreachable(kafka: KafkaConfig, name: str, timeout_s: float) -> list[TopicRecord]:
        raise OSError("connection refused")

    monkeypatch.setattr(replay_module, "read_topic", unreachable)
    assert main(["dlq", "replay", "--all", "--config", str(exchange.config_path("AH"))]) == 2
    assert capsys.readouterr().err == "yrdx: cannot read yrdx.ah.dlq: connection refused\n"
