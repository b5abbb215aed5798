"""The Kafka port: the records the pipelines exchange with Kafka and the two small interfaces they use.

`transport.py` implements them with aiokafka against a real broker; `memory.py` is an in-memory twin for unit
tests of pipeline logic. Integration and end-to-end tests always run the pipelines against the real broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class BrokerUnavailable(RuntimeError):
    """The broker did not acknowledge in time; the caller must treat the records as not sent."""


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Bytes this record adds to a produce request, near enough to check it against the size limit."""
        return len(self.value) + len(self.key or b"") + sum(len(k) + len(v) + 2 for k, v in self.headers) + 64


@dataclass(frozen=True, slots=True)
class InRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    # Set when the record as stored cannot be a yrdx message at all (a null value, a header without a value or
    # given twice, a header the client library could not decode): egress dead-letters it as `invalid_record`.
    flaw: str | None = None

    @property
    def source(self) -> str:
        """Where the record came from (topic:partition:offset): evidence in dead letters and audit records."""
        return f"{self.topic}:{self.partition}:{self.offset}"


class Publisher(Protocol):
    async def publish(self, records: Sequence[OutRecord]) -> None:
        """Return once the broker acknowledged every record; raise BrokerUnavailable otherwise (none may count
        as sent)."""


class InboxConsumer(Protocol):
    async def poll(self) -> list[InRecord]:
        """The next records of the assigned partitions (possibly none), in offset order per partition."""

    async def commit(self, batch: Sequence[InRecord]) -> None:
        """Commit past the highest offset of each partition in the batch."""

    def offsets(self) -> dict[int, tuple[int, int]]:
        """partition -> (committed offset, log end offset) for the assigned partitions, as last seen; the
        difference is the records waiting. Partitions not known yet are left out."""
