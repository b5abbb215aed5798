"""Dead letters: reading what a region dead-lettered, and replaying them into its inbox once the cause is fixed.

A dead letter holds the original record bytes and signature header, so a replay is the same signed message
produced again to the region's own inbox, marked with `yrdx-replay-of: <dlq partition:offset>`. The gateway
checks it again from scratch (signature, schema, policy, expiry), records a `replayed` audit record, and delivers
it unless the same id was already delivered: replaying never delivers a message twice. `yrdx dlq list|replay`
(gateway.cli.dlq) is the command line over these functions.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from gateway.config import KafkaConfig
from gateway.kafka.port import OutRecord
from gateway.kafka.reader import TopicRecord, read_topic
from gateway.kafka.transport import KafkaPublisher
from gateway.wire import headers
from gateway.wire.envelope import EnvelopeError, parse
from gateway.wire.regions import DEFAULT_TOPICS, Topics


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: TopicRecord
    reason: str
    detail: str
    message_id: str

    @property
    def where(self) -> str:
        return f"{self.record.partition}:{self.record.offset}"


def dead_letters(records: Sequence[TopicRecord]) -> list[DeadLetter]:
    """The dead letters of a region's DLQ records: each with its reason, detail and (when it parses) message id."""
    out = []
    for r in records:
        try:
            msg_id = parse(r.value).id
        except EnvelopeError:
            msg_id = ""  # unparsable bytes (e.g. a tampered record) stay listed, without an id
        reason = r.headers.get(headers.DLQ_REASON) or b""
        detail = r.headers.get(headers.DLQ_DETAIL) or b""
        out.append(DeadLetter(r, reason.decode(errors="replace"), detail.decode(errors="replace"),
                              msg_id))
    return out


def select(letters: Sequence[DeadLetter], reason: str | None = None, ids: Collection[str] = ()) -> list[DeadLetter]:
    """The dead letters of that reason (None: any) and, when `ids` names some, of those message ids."""
    wanted = set(ids)
    return [d for d in letters
            if (not reason or d.reason == reason) and (not wanted or d.message_id in wanted)]


async def read_dead_letters(kafka: KafkaConfig, region: str, timeout_s: float = 30.0) -> list[DeadLetter]:
    """Every dead letter on the region's DLQ so far (gateway.kafka.reader.read_topic: TimeoutError when it cannot
    all be read in `timeout_s`, the client library's errors when the broker cannot be reached)."""
    return dead_letters(await read_topic(kafka, kafka.topics.dlq(region), timeout_s))


def replay_record(letter: DeadLetter, region: str, topics: Topics = DEFAULT_TOPICS) -> OutRecord:
    """The dead letter as it first arrived (bytes, key, signature), marked as a replay of its DLQ position."""
    kept = [(k, v) for k, v in letter.record.headers.items() if k == headers.SIGNATURE]
    kept.append((headers.REPLAY_OF, f"{topics.dlq(region)}:{letter.where}".encode()))
    return OutRecord(topics.inbox(region), letter.record.value, letter.record.key, kept)


async def replay(kafka: KafkaConfig, region: str, letters: Sequence[DeadLetter], timeout_s: float = 30.0) -> None:
    """Produce the dead letters again to the region's inbox (replay_record) and wait for the acknowledgements."""
    publisher = KafkaPublisher(kafka, timeout_s)
    await publisher.start()
    try:
        await publisher.publish([replay_record(d, region, kafka.topics) for d in letters])
    finally:
        await publisher.stop()
