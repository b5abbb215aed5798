"""The aiokafka side of the Kafka port (`port.py`): publish a group of records and wait for every
acknowledgement; consume an inbox and commit only what the caller has decided.

Consuming is where hostile bytes meet the client library: a record it cannot decode (a header key that is not
UTF-8) makes aiokafka raise inside its fetch, over and over at the same offset. `KafkaInboxConsumer` then reads
that partition one record at a time and hands the undecodable record on as a flawed `InRecord`, so egress
dead-letters it and the partition moves past it.

A region's replicas share the inbox's consumer group. aiokafka rebalances eagerly (every member gives up all its
partitions, then the new assignment is handed out), so `KafkaInboxConsumer` commits on revoke: when partitions are
revoked it takes no new batch and waits (at most `revoke_wait_s`) until the batch in hand is committed. A batch
that cannot be committed by then, or whose commit the group refuses, is abandoned: the new owner reads it again
and the dedupe marks the replicas share (state.dsn) drop every record already decided, so nothing reaches the
pull inbox twice (a webhook can repeat only a message that was in flight).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, TopicAlreadyExistsError, for_code

from gateway.config import KafkaConfig, read_secret
from gateway.kafka.partitioner import KeyPartitioner
from gateway.kafka.port import BrokerUnavailable, InRecord, OutRecord
from gateway.wire.regions import REGIONS

log = logging.getLogger(__name__)

# How often egress commits its inbox offsets at most: one commit then covers the batches decided in between,
# instead of a round trip per batch that the loop waits for (a crash re-reads them; the dedupe marks skip them).
INBOX_COMMIT_INTERVAL_S = 0.1


def client_options(cfg: KafkaConfig) -> dict[str, Any]:
    """Connection and security settings of every aiokafka client the gateway and the CLI build (producer,
    consumers, admin, metadata client): the one place a KafkaConfig becomes client keyword arguments. The SASL
    password is read from its file here, when a client is built, and never kept in the configuration."""
    opts: dict[str, Any] = {"bootstrap_servers": cfg.bootstrap_servers, "security_protocol": cfg.security_protocol}
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        # Verifies the broker's certificate and host name against ssl_cafile (else the system CAs).
        ctx = ssl.create_default_context(cafile=str(cfg.ssl_cafile) if cfg.ssl_cafile else None)
        if cfg.ssl_certfile:
            ctx.load_cert_chain(str(cfg.ssl_certfile), str(cfg.ssl_keyfile) if cfg.ssl_keyfile else None)
        opts["ssl_context"] = ctx
    if cfg.security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = cfg.sasl_mechanism or "SCRAM-SHA-512"
        user = cfg.sasl_username or (read_secret(cfg.sasl_username_file) if cfg.sasl_username_file else "")
        opts["sasl_plain_username"] = user
        opts["sasl_plain_password"] = read_secret(cfg.sasl_password_file) if cfg.sasl_password_file else ""
    return opts


_HOUR_MS = 3_600_000


def topic_configs(cfg: KafkaConfig, region: str) -> dict[str, dict[str, str]]:
    """The topic configs the gateway of `region` creates its topics with (`kafka.retention`): inboxes and its DLQ
    deleted after `inbox_hours`/`dlq_hours`, the audit trail and the checkpoints after `audit_days`, and the
    trust topic compacted (the latest statement per key, never deleted by age)."""
    retention, names = cfg.retention, cfg.topics

    def deleted_after(ms: int) -> dict[str, str]:
        return {"cleanup.policy": "delete", "retention.ms": str(ms)}

    configs = {names.inbox(r): deleted_after(retention.inbox_hours * _HOUR_MS) for r in REGIONS}
    # A file's sealed chunks are personal data as the messages naming it are: the inboxes' retention.
    configs.update({names.files(r): deleted_after(retention.inbox_hours * _HOUR_MS) for r in REGIONS})
    configs[names.dlq(region)] = deleted_after(retention.dlq_hours * _HOUR_MS)
    configs[names.audit] = configs[names.checkpoints] = deleted_after(retention.audit_days * 24 * _HOUR_MS)
    configs[names.trust] = {"cleanup.policy": "compact"}
    return configs


async def ensure_topics(
    cfg: KafkaConfig, topics: dict[str, int], configs: dict[str, dict[str, str]] | None = None, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet (name -> partitions, optional topic configs by name). Existing
    ones are not altered: four gateways (and the cluster's operators) share them, and a gateway that rewrote
    them at each start would undo an operator's choice or fight a region configured otherwise. Instead, every
    config of `configs` that an existing topic holds differently is logged as a warning; the lines are returned."""
    configs = configs or {}
    admin = AIOKafkaAdminClient(**client_options(cfg), request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, n, 1, topic_configs=configs.get(t, {})) for t, n in topics.items()
                   if t not in existing]
        if missing:
            try:
                response = await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another gateway created it at the same moment
            else:
                # Per-topic errors come in the response, not raised: an ACL that lacks CREATE must stop the start.
                for topic, code, *_ in response.topic_errors:
                    if code not in (0, TopicAlreadyExistsError.errno):
                        raise for_code(code)(f"cannot create topic {topic}")
        checked = [t for t in topics if t in existing and configs.get(t)]
        differences = await _config_differences(admin, {t: configs[t] for t in checked}) if checked else []
    finally:
        await admin.close()
    for line in differences:
        log.warning("topic config differs from the gateway's config (not altered)", extra={"detail": line})
    return differences


async def _config_differences(admin: AIOKafkaAdminClient, wanted: dict[str, dict[str, str]]) -> list[str]:
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t, configs=dict.fromkeys(c)) for t, c in wanted.items()])
    lines = []
    for response in responses:
        for resource in response.to_object()["resources"]:
            topic = resource["resource_name"]
            if resource["error_code"]:  # e.g. no DESCRIBE_CONFIGS grant: say so instead of "differs"
                lines.append(f"{topic}: configs not readable ({for_code(resource['error_code']).__name__})")
                continue
            held = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
            lines += [f"{topic}: {key}={held.get(key)}, the config says {value}"
                      for key, value in wanted.get(topic, {}).items() if held.get(key) != value]
    return lines


class KafkaPublisher:
    """An idempotent, batching producer. `publish` waits for every record's acknowledgement or fails whole."""

    def __init__(self, cfg: KafkaConfig, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._producer = AIOKafkaProducer(
            **client_options(cfg),
            enable_idempotence=True,
            acks="all",
            linger_ms=cfg.linger_ms,
            max_batch_size=256 * 1024,
            compression_type=cfg.compression,
            partitioner=KeyPartitioner(),  # aiokafka's default partitions, computed faster
            # A batch that cannot reach a leader in time fails instead of lingering and leaving later.
            request_timeout_ms=int(timeout_s * 1000),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, records: Sequence[OutRecord]) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                futures = [
                    await self._producer.send(r.topic, r.value, key=r.key, headers=r.headers) for r in records
                ]
                await asyncio.gather(*futures)
        except (TimeoutError, KafkaError) as e:
            raise BrokerUnavailable(f"{type(e).__name__}: {e}") from e

    async def reachable(self, timeout_s: float = 3.0) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                return bool(await self._producer.client.fetch_all_metadata())
        except (TimeoutError, KafkaError, OSError):
            return False


def in_record(m: Any) -> InRecord:
    """An aiokafka ConsumerRecord as the pipelines see it; a record that cannot be a yrdx message keeps its
    offset and says why (`flaw`), so it is dead-lettered rather than crashing a later step."""
    headers: dict[str, bytes] = {}
    flaw = None if m.value is not None else "the record has no value (a tombstone)"
    for k, v in m.headers or ():
        if v is None:
            flaw = flaw or f"header {k[:64]!r} has no value"
        elif k in headers:
            flaw = flaw or f"header {k[:64]!r} appears more than once"
        headers[k] = v if v is not None else b""
    return InRecord(m.topic, m.partition, m.offset, m.key, m.value if m.value is not None else b"", headers, flaw)


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka awaits these before it rejoins the group and after it got its new partitions."""

    def __init__(self, consumer: KafkaInboxConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._consumer.settle(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._consumer.assigned(assigned)


class KafkaInboxConsumer:
    """Reads one region's inbox in a consumer group; offsets are committed only when the caller says so, and the
    batch in hand is committed before its partitions move to another replica (commit on revoke)."""

    def __init__(self, cfg: KafkaConfig, topic: str, group_id: str, max_records: int = 500,
                 revoke_wait_s: float = 20.0, commit_interval_s: float = 0.0) -> None:
        self._topic = topic
        self._max_records = max_records
        self._revoke_wait_s = revoke_wait_s
        self._committed: dict[TopicPartition, int] = {}
        # Decided past these offsets, not committed yet. With `commit_interval_s` > 0 the commit is sent in the
        # background at most that often (and when a poll comes back empty), so the loop does not wait for it and
        # one commit covers several batches; 0 commits each batch before `commit` returns.
        self._decided: dict[TopicPartition, int] = {}
        self._commit_interval_s = commit_interval_s
        self._committing: asyncio.Task[None] | None = None
        self._next_commit_at = 0.0
        self._settled = asyncio.Event()  # set while no batch is in hand (polled and not yet committed)
        self._settled.set()
        self._in_hand = 0  # batches polled and not yet committed (egress may hold two: relay/egress.py run)
        self._revoking = False
        self.assignments = 0  # assignments received: how often the group moved partitions to this replica
        self._consumer = AIOKafkaConsumer(
            **client_options(cfg),
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
            max_poll_records=max_records,
            isolation_level="read_committed",
            # How long the group waits for this member to rejoin: the revoke wait (the batch in hand) and then
            # some. aiokafka's default, the session timeout (10 s), would drop a member still committing.
            rebalance_timeout_ms=int((revoke_wait_s + 10.0) * 1000),
        )
        self._consumer.subscribe([topic], listener=_CommitOnRevoke(self))

    async def start(self) -> None:
        await self._consumer.start()

    async def settle(self, revoked: set[TopicPartition]) -> None:
        """Partitions are being revoked: no new batch, and the one in hand committed first (or, past
        `revoke_wait_s`, abandoned to the next owner, which skips what was already decided)."""
        self._revoking = True
        if not revoked or (self._settled.is_set() and not self._decided and self._committing is None):
            return
        try:
            await asyncio.wait_for(self._settle(), self._revoke_wait_s)
        except TimeoutError:
            log.warning("partitions revoked with a batch in hand not committed; the next owner reads it again",
                        extra={"partitions": sorted(tp.partition for tp in revoked)})
        except KafkaError as e:
            log.warning("partitions revoked before their decided offsets were committed; the next owner reads "
                        "those records again", extra={"error": type(e).__name__})

    async def _settle(self) -> None:
        """The batch in hand decided, then everything decided committed (the commit in flight and the rest)."""
        await self._settled.wait()
        await self.flush_commits()

    def assigned(self, assigned: set[TopicPartition]) -> None:
        self._revoking = False
        self.assignments += 1
        for tp in set(self._committed) - assigned:
            del self._committed[tp]  # another replica commits it now
        for tp in set(self._decided) - assigned:
            del self._decided[tp]  # not committed in time: its new owner reads those records again (dedupe)
        # WARNING: every rebalance is worth an operator's eye (and the failover tests time the takeover by it); the
        # partitions are in the message so that the log's repeat filter keeps each new assignment.
        partitions = sorted(tp.partition for tp in assigned)
        log.warning(f"inbox partitions assigned: {partitions}", extra={"partitions": partitions})  # noqa: G004

    async def stop(self, commit_timeout_s: float = 5.0) -> None:
        """Commit what was decided (bounded: an unreachable broker leaves it to be read again), then leave."""
        try:
            await asyncio.wait_for(self.flush_commits(), commit_timeout_s)
        except (TimeoutError, KafkaError) as e:
            log.warning("decided offsets not committed at stop; those records are read again after the restart",
                        extra={"error": type(e).__name__})
        await self._consumer.stop()

    async def poll(self, timeout_ms: int = 200) -> list[InRecord]:
        if self._revoking:  # records fetched now would belong to partitions on their way to another replica
            await asyncio.sleep(timeout_ms / 1000)
            return []
        try:
            fetched = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self._max_records)
        except KafkaError:
            raise
        except Exception as e:  # the client library could not decode a record
            log.warning("a record could not be decoded; reading one record at a time",
                        extra={"error": type(e).__name__})
            batch = await self._poll_one_by_one()
        else:
            batch = [in_record(m) for msgs in fetched.values() for m in msgs]
        if batch:
            self._in_hand += 1
            self._settled.clear()
        elif self._decided:
            self._commit_soon(at_once=True)  # idle: what is decided need not wait for the interval
        return batch

    async def _poll_one_by_one(self) -> list[InRecord]:
        """After a decoding failure: back to the committed position of every partition (aiokafka has already
        moved past the records it drained from other partitions in the failed call, and dropped them), then
        one record at a time, so the failing record is found at its exact offset and stepped over."""
        starts: dict[TopicPartition, int | None] = {}
        for tp in sorted(self._consumer.assignment(), key=lambda tp: tp.partition):
            decided = self._decided.get(tp, self._committed.get(tp))
            starts[tp] = decided if decided is not None else await self._consumer.committed(tp)
        return [
            InRecord(m.topic, m.partition, m.offset, None, b"", {},
                     flaw=f"the client library cannot decode the record: {m.error}")
            if isinstance(m, Undecodable) else in_record(m)
            for m in await read_one_at_a_time(self._consumer, starts, self._max_records)
        ]

    async def commit(self, batch: Sequence[InRecord]) -> None:
        """The batch is decided: commit past the highest offset of each of its partitions, before returning or
        (with `commit_interval_s`) in the background soon, together with the batches decided meanwhile. A
        commit is only ever sent for decided records, so a crash before it only means those are read again and
        dropped by the dedupe marks. When the group has already moved a partition to another replica, the
        batch is abandoned: that replica reads it again and skips what this one decided (the shared marks)."""
        for p, o in next_offsets(batch).items():
            self._decided[TopicPartition(self._topic, p)] = o  # per partition in offset order: the latest wins
        if self._commit_interval_s <= 0:
            try:
                await self._commit_decided()
            finally:
                self._batch_decided()
            return
        self._batch_decided()
        self._commit_soon()

    def _batch_decided(self) -> None:
        """One batch in hand less; settled once none is left (a revocation waits for that)."""
        self._in_hand = max(0, self._in_hand - 1)
        if not self._in_hand:
            self._settled.set()

    def _commit_soon(self, at_once: bool = False) -> None:
        """Start a background commit of the decided offsets, unless one is in flight or the last started less
        than `commit_interval_s` ago (the next batch's commit, or the next empty poll, sends it then)."""
        loop = asyncio.get_running_loop()
        if self._committing is not None or not (at_once or loop.time() >= self._next_commit_at):
            return
        self._next_commit_at = loop.time() + self._commit_interval_s
        self._committing = asyncio.create_task(self._commit_in_background(), name="inbox-commit")

    async def _commit_in_background(self) -> None:
        try:
            await self._commit_decided()
        except KafkaError as e:  # kept in _decided: the next commit sends them again
            log.warning("offset commit failed; it is retried with the next one", extra={"error": type(e).__name__})
        finally:
            self._committing = None

    async def flush_commits(self) -> None:
        """Return once every decided offset is committed (or refused by the group): the commit in flight, then
        what is left. Raises the client library's other errors, the offsets kept for the next try."""
        if self._committing is not None:
            await asyncio.shield(self._committing)
        await self._commit_decided()

    async def _commit_decided(self) -> None:
        offsets, self._decided = self._decided, {}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
            self._committed.update(offsets)
        except (CommitFailedError, IllegalStateError) as e:
            log.warning("batch abandoned: its partitions moved to another replica before the commit",
                        extra={"partitions": sorted(tp.partition for tp in offsets), "error": type(e).__name__})
        except BaseException:
            for tp, o in offsets.items():
                self._decided.setdefault(tp, o)  # not committed: again with the next commit, unless overtaken
            raise

    def offsets(self) -> dict[int, tuple[int, int]]:
        known: dict[int, tuple[int, int]] = {}
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            committed = self._committed.get(tp)
            if end is not None and committed is not None:
                known[tp.partition] = (committed, end)
        return known


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A record the client library could not decode, at its exact position (`error`: the exception's class)."""

    topic: str
    partition: int
    offset: int
    error: str


async def read_one_at_a_time(
    consumer: AIOKafkaConsumer, starts: Mapping[TopicPartition, int | None], max_records: int
) -> list[Any]:
    """Read each partition of `starts` one record at a time, from its offset there (None: its beginning) up to its
    high watermark, at most `max_records` in all: after the client library failed to decode a record inside a
    fetch, this finds that record at its exact offset and steps over it. Returns aiokafka's ConsumerRecords, with
    an `Undecodable` in place of each record that cannot be decoded. Shared by the inbox consumer and
    gateway.kafka.reader's followers, so both step over such a record the same way."""
    for tp, start in starts.items():
        if start is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
    out: list[Any] = []
    for tp in starts:
        while len(out) < max_records:
            position = await consumer.position(tp)
            end = consumer.highwater(tp)
            if end is not None and position >= end:
                break
            try:
                got = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
            except KafkaError:
                raise
            except Exception as e:  # this one record cannot be decoded
                out.append(Undecodable(tp.topic, tp.partition, position, type(e).__name__))
                consumer.seek(tp, position + 1)
                continue
            records = [m for msgs in got.values() for m in msgs]
            if not records:
                break
            out.extend(records)
    return out


def next_offsets(batch: Iterable[InRecord]) -> dict[int, int]:
    """partition -> the offset after the highest one of the batch: what committing the batch means."""
    offsets: dict[int, int] = {}
    for r in batch:
        offsets[r.partition] = max(offsets.get(r.partition, -1), r.offset + 1)
    return offsets
