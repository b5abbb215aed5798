"""Parking: a message whose claim-checked file is still on its way is set aside in the state store, so that the
records after it in its partition go on and its offset can be committed.

A parked message is the consumed record itself (value, and topic, partition, offset, key and headers as JSON),
kept until its files are decided. Egress takes it back (`ready`) when every file it waits for has a verdict in
the spool, or when `files.wait_s` has passed since it was parked, and runs it through the whole pipeline again
as a record of its original source: checks, dedupe, the claim-check step (now final: a file still missing is
`file_incomplete`), delivery, receipt. A message of a conversation that has a parked message is parked behind it
(no files of its own to wait for), so a case's messages still reach the platform in order.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Sequence
from itertools import groupby

import orjson

from gateway.files.store import StoredFile
from gateway.kafka.port import InRecord
from gateway.state import ParkedMessage

__all__ = ["Resumed", "as_record", "parked_row", "ready"]

# Why a parked message is taken back (the `reason` of its `unparked` audit record).
FILES_DECIDED = "files_decided"
WAIT_PASSED = "wait_s_passed"
AHEAD_DECIDED = "ahead_decided"

Resumed = tuple[ParkedMessage, str]  # a parked message taken back, and why


def parked_row(r: InRecord, message_id: str, correlation_id: str, file_ids: Sequence[str],
               deadline_at: float) -> ParkedMessage:
    meta = {"topic": r.topic, "partition": r.partition, "offset": r.offset,
            "key": None if r.key is None else base64.b64encode(r.key).decode("ascii"),
            "headers": {k: base64.b64encode(v).decode("ascii") for k, v in r.headers.items()}}
    return ParkedMessage(r.source, message_id, correlation_id, r.value, orjson.dumps(meta), tuple(file_ids),
                         deadline_at)


def as_record(m: ParkedMessage) -> InRecord:
    """The consumed record again, exactly as it was read (same source, so dedupe knows a re-run of it)."""
    meta = orjson.loads(m.meta)
    key = None if meta["key"] is None else base64.b64decode(meta["key"])
    return InRecord(meta["topic"], meta["partition"], meta["offset"], key, m.value,
                    {k: base64.b64decode(v) for k, v in meta["headers"].items()})


def ready(parked: Sequence[ParkedMessage], status: Callable[[str], StoredFile | None],
          now: float) -> Iterator[list[Resumed]]:
    """Per conversation, the parked messages that can be taken back now, oldest first: each one whose files all
    have a verdict or whose wait has passed, and the messages behind them, up to the first that must wait on."""
    for _, rows in groupby(sorted(parked, key=lambda m: (m.correlation_id, m.seq)), key=lambda m: m.correlation_id):
        taken: list[Resumed] = []
        for m in rows:
            if not m.file_ids:
                taken.append((m, AHEAD_DECIDED))
            elif all(status(f) is not None for f in m.file_ids):
                taken.append((m, FILES_DECIDED))
            elif now >= m.deadline_at:
                taken.append((m, WAIT_PASSED))
            else:
                break
        if taken:
            yield taken
