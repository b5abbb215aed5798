"""What the state store holds and answers: the row types every backend returns, and the errors it raises."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson


class StateUnavailable(RuntimeError):  # noqa: N818 (the name says what callers need to know)
    """The state database cannot serve this call now: unreachable, too slow (a timeout), locked, full. When the
    database said so, nothing of the call was committed; when its answer never came (a lost connection, the
    client's deadline), the call may have committed or not, as a broker timeout leaves a record. Every caller
    copes with either: a re-read record is known by its source, a lost lease lapses. The store reconnects by
    itself; the caller decides whether to retry or to refuse."""


class StateSchemaError(RuntimeError):
    """The database holds a schema this gateway cannot use (written by a newer version of yrdx)."""


@dataclass(frozen=True, slots=True)
class SentMessage:
    id: str
    platform: str
    type: str
    to_region: str
    correlation_id: str
    envelope_sha256: str
    status: str
    history: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    request_sha256: str
    message_id: str
    envelope: bytes
    signature: str


@dataclass(frozen=True, slots=True)
class InboxItem:
    seq: int
    id: str
    type: str
    from_region: str
    envelope: bytes
    signature: str
    late_reply_to: str | None = None  # a result after its request's deadline: the request's message id


@dataclass(frozen=True, slots=True)
class Decision:
    """How a received message id was decided, and from which record (topic:partition:offset)."""

    id: str
    outcome: str  # "delivered" or a rejection code
    source: str


@dataclass(frozen=True, slots=True)
class InboxDelivery:
    """A verified message queued for a pull-inbox platform."""

    platform: str
    id: str
    type: str
    from_region: str
    envelope: bytes
    signature: str
    source: str
    late_reply_to: str | None = None  # see InboxItem


@dataclass(frozen=True, slots=True)
class ParkedMessage:
    """A consumed record set aside until the files its message claims are decided (gateway/files/parking.py):
    the record's value and, opaque to the store, the rest of it (`meta`, JSON); `file_ids` empty for a message
    parked behind an earlier one of its conversation."""

    source: str
    message_id: str
    correlation_id: str
    value: bytes
    meta: bytes
    file_ids: tuple[str, ...]
    deadline_at: float
    seq: int = 0  # set by the store: the order in which messages were parked


@dataclass(frozen=True, slots=True)
class ReceiptItem:
    """One item of a peer's signed receipt, as the origin applies it."""

    message_id: str
    envelope_sha256: str
    outcome: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewSent:
    id: str
    platform: str
    type: str
    to_region: str
    correlation_id: str
    envelope_sha256: str


# Statuses only move forward (accepted < publish_failed < published < delivered/rejected): a peer's receipt can
# overtake the local 'published' update, which must not undo it. The same CASE serves both SQL dialects.
STATUS_RANK = "(CASE {} WHEN 'accepted' THEN 0 WHEN 'publish_failed' THEN 1 WHEN 'published' THEN 2 ELSE 3 END)"


def storable(text: str) -> bool:
    """Whether a key can be stored at all: PostgreSQL text holds no NUL, and neither database takes a lone
    surrogate. A lookup of a key that cannot be stored finds nothing (a URL's %00 is an unknown id, not an
    error), in both backends alike."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def history_event(at: float, stage: str, detail: str | None) -> dict[str, Any]:
    """One entry of a sent message's history; a detail that is JSON (a receipt) is returned parsed."""
    event: dict[str, Any] = {"stage": stage, "at": at}
    if detail:
        try:
            event["detail"] = orjson.loads(detail)
        except orjson.JSONDecodeError:
            event["detail"] = detail
    return event


def match_receipts(
    by: str, items: Sequence[ReceiptItem], known: dict[str, tuple[str, str, str]], now: float
) -> tuple[list[tuple[str, str]], list[tuple[str, float, str]], list[tuple[str, float, str, str]]]:
    """Which receipt items count: `known` maps a sent id to (envelope sha256, to_region, correlation id). Returns
    (outcome applied, correlation id) per item ('unmatched' where the message is not one this gateway sent to `by`
    with that exact hash), the status updates (outcome, now, id) and the history events to write."""
    applied: list[tuple[str, str]] = []
    updates: list[tuple[str, float, str]] = []
    events: list[tuple[str, float, str, str]] = []
    for item in items:
        row = known.get(item.message_id)
        if row is None or row[:2] != (item.envelope_sha256, by):
            applied.append(("unmatched", ""))
            continue
        updates.append((item.outcome, now, item.message_id))
        events.append((item.message_id, now, item.outcome, orjson.dumps(item.detail).decode()))
        applied.append((item.outcome, row[2]))
    return applied, updates, events


# --- request-reply -------------------------------------------------------------------------------------------

REQUEST_STATUSES = ("pending", "replied", "timed_out", "compensated", "late_result")


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A request a local platform waits on, claimed by its correlation id before it is published (a reply can
    come back before the broker's ack does), with the id of its signed message and its rendered compensation:
    a claim always knows what it would have to undo, even after a crash between the publish and its answer."""

    correlation_id: str
    platform: str
    type: str
    to_region: str
    reply_type: str
    deadline_at: float  # epoch seconds
    idempotency_key: str | None = None
    compensation_type: str | None = None
    created_at: float = 0.0  # epoch seconds; the caller's clock, so it knows the row it reads back is its own
    message_id: str | None = None
    compensation_payload: str | None = None  # JSON, rendered from the schema's template for this message


@dataclass(frozen=True, slots=True)
class Opened:
    """What claiming a request came to: `request` is the row that holds its correlation id (`ours`: this claim's,
    just written), or None when its Idempotency-Key already named another message (`key_holder`), in which case
    nothing was written."""

    request: RequestRecord | None
    ours: bool
    key_holder: IdempotentRequest | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """The result that answered a request, as signed by its sender (sealed payloads stay sealed)."""

    id: str
    type: str
    from_region: str
    envelope: bytes
    signature: str


@dataclass(frozen=True, slots=True)
class RequestRecord:
    correlation_id: str
    platform: str
    message_id: str | None  # set with the claim (None: a row an earlier yrdx claimed, before it was sent)
    type: str
    to_region: str
    reply_type: str
    idempotency_key: str | None
    status: str  # one of REQUEST_STATUSES
    created_at: float
    deadline_at: float
    replied_at: float | None
    reply: Reply | None
    compensation_type: str | None
    compensation_payload: str | None  # JSON, rendered from the schema's template with the claim
    compensation_id: str | None


# The columns of `requests` in RequestRecord's order (the reply's five columns folded into one field).
REQUEST_COLUMNS = (
    "correlation_id, platform, message_id, type, to_region, reply_type, idempotency_key, status, created_at, "
    "deadline_at, replied_at, reply_id, reply_type_got, reply_from, reply_envelope, reply_signature, "
    "compensation_type, compensation_payload, compensation_id"
)


def request_record(row: Sequence[Any]) -> RequestRecord:
    """A `requests` row (REQUEST_COLUMNS) as its record."""
    reply = Reply(row[11], row[12], row[13], bytes(row[14]), row[15]) if row[11] is not None else None
    return RequestRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10],
                         reply, row[16], row[17], row[18])


# A timed-out request (or one a late result came for) whose compensation was rendered but is not recorded as sent:
# the sweeper sends it again, so its row must stay.
COMPENSATION_OWED = ("status IN ('timed_out', 'late_result') AND compensation_type IS NOT NULL "
                     "AND compensation_payload IS NOT NULL AND compensation_id IS NULL")


# The request-reply statements, written once with `?` placeholders (postgres.py swaps in `%s`). Every transition
# is one conditional UPDATE: whichever of a reply and the deadline comes first wins, the other changes nothing.
class RequestSql:
    OPEN = ("INSERT INTO requests (correlation_id, platform, type, to_region, reply_type, idempotency_key, status, "
            "created_at, deadline_at, compensation_type, message_id, compensation_payload) "
            "VALUES (?,?,?,?,?,?,'pending',?,?,?,?,?) ON CONFLICT (correlation_id) DO NOTHING")
    BY_CORRELATION = f"SELECT {REQUEST_COLUMNS} FROM requests WHERE correlation_id = ?"  # noqa: S608
    BY_ID = f"SELECT {REQUEST_COLUMNS} FROM requests WHERE message_id = ?"  # noqa: S608
    # Of the given correlation ids, those whose request left pending (the watcher's read: ids, not rows).
    SETTLED = "SELECT correlation_id FROM requests WHERE correlation_id IN ({marks}) AND status != 'pending'"
    REPLIED = ("UPDATE requests SET status = 'replied', replied_at = ?, reply_id = ?, reply_type_got = ?, "
               "reply_from = ?, reply_envelope = ?, reply_signature = ? WHERE correlation_id = ? "
               "AND status = 'pending'")
    TIMED_OUT = "UPDATE requests SET status = 'timed_out' WHERE correlation_id = ? AND status = 'pending'"
    LATE = ("UPDATE requests SET status = 'late_result', replied_at = ?, reply_id = ?, reply_type_got = ?, "
            "reply_from = ?, reply_envelope = ?, reply_signature = ? WHERE correlation_id = ? "
            "AND status IN ('timed_out', 'compensated') AND reply_id IS NULL")
    COMPENSATED = ("UPDATE requests SET compensation_id = ?, status = CASE WHEN status = 'timed_out' "
                   "THEN 'compensated' ELSE status END WHERE correlation_id = ? AND compensation_id IS NULL")
    OVERDUE = (f"SELECT {REQUEST_COLUMNS} FROM requests WHERE (status = 'pending' AND deadline_at < ?) "  # noqa: S608
               f"OR ({COMPENSATION_OWED} AND deadline_at < ?) ORDER BY deadline_at LIMIT ?")


def open_params(req: NewRequest) -> tuple[Any, ...]:
    return (req.correlation_id, req.platform, req.type, req.to_region, req.reply_type, req.idempotency_key,
            req.created_at or time.time(), req.deadline_at, req.compensation_type, req.message_id,
            req.compensation_payload)


def opened_record(params: Sequence[Any]) -> RequestRecord:
    """The row RequestSql.OPEN inserted with `params` (open_params), as a read of it would return it."""
    (correlation_id, platform, msg_type, to_region, reply_type, idempotency_key, created_at, deadline_at,
     compensation_type, message_id, compensation_payload) = params
    return RequestRecord(correlation_id, platform, message_id, msg_type, to_region, reply_type, idempotency_key,
                         "pending", created_at, deadline_at, None, None, compensation_type, compensation_payload, None)


def reply_params(at: float, reply: Reply, correlation_id: str) -> tuple[Any, ...]:
    return (at, reply.id, reply.type, reply.from_region, reply.envelope, reply.signature, correlation_id)


# The parking statements, written once with `?` placeholders (postgres.py swaps in `%s`).
class ParkedSql:
    PARK = ("INSERT INTO parked (source, message_id, correlation_id, value, meta, file_ids, parked_at, deadline_at) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (source) DO NOTHING")
    # Conversations of which no message is leased (being taken back by a replica), oldest first.
    FREE = ("SELECT seq, source, message_id, correlation_id, value, meta, file_ids, deadline_at FROM parked "
            "WHERE correlation_id NOT IN (SELECT correlation_id FROM parked WHERE leased_until >= ?) "
            "ORDER BY seq LIMIT ?")
    LEASE = "UPDATE parked SET leased_until = ? WHERE correlation_id = ? AND leased_until < ?"
    DROP = "DELETE FROM parked WHERE source = ?"
    RELEASE = "UPDATE parked SET leased_until = 0 WHERE correlation_id = ?"
    COUNT = "SELECT count(*) FROM parked"


def park_params(m: ParkedMessage, now: float) -> tuple[Any, ...]:
    return (m.source, m.message_id, m.correlation_id, m.value, m.meta, orjson.dumps(list(m.file_ids)).decode(), now,
            m.deadline_at)


def parked_message(row: Sequence[Any]) -> ParkedMessage:
    return ParkedMessage(row[1], row[2], row[3], bytes(row[4]), bytes(row[5]), tuple(orjson.loads(row[6])),
                         float(row[7]), int(row[0]))
