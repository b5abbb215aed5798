"""The DLQ view of one region: its dead letters (gateway.relay.replay.read_dead_letters, as `yrdx dlq list`) with
the envelope's routing fields (never its payload), counted by reason, each with what became of it according to
the audit index; and picking the letters a replay request names (by DLQ position, or all of a reason)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from gateway.console.trail import letter_status
from gateway.relay.replay import DeadLetter, select
from gateway.wire.envelope import EnvelopeError, parse

MAX_LISTED = 500  # letters listed per request (newest first); the reason counts cover every letter
MAX_DETAIL = 300


class SelectionError(ValueError):
    """A replay request that names no letter, or letters that are not (or no longer) on the DLQ."""


def _routing(letter: DeadLetter) -> dict[str, Any]:
    """The envelope's routing fields; a letter whose bytes do not parse (a tampered record) has none."""
    try:
        env = parse(letter.record.value)
    except EnvelopeError:
        return {"type": None, "from": None, "to": None, "correlation_id": None, "created_at": None}
    return {"type": env.type, "from": env.sender, "to": env.recipient, "correlation_id": env.correlation_id,
            "created_at": env.created_at}


def letter_doc(letter: DeadLetter, region: str, dlq_topic: str, records: Sequence[Mapping[str, Any]]
               ) -> dict[str, Any]:
    detail = letter.detail if len(letter.detail) <= MAX_DETAIL else letter.detail[:MAX_DETAIL] + "..."
    return {
        "at": letter.where, "partition": letter.record.partition, "offset": letter.record.offset,
        "reason": letter.reason or "unknown", "detail": detail, "message_id": letter.message_id or None,
        **_routing(letter),
        "status": letter_status(region, dlq_topic, letter.where, letter.message_id, records),
    }


def dlq_view(region: str, dlq_topic: str, letters: Sequence[DeadLetter], records: Sequence[Mapping[str, Any]],
             reason: str | None = None) -> dict[str, Any]:
    """The page's document: counts by reason over every letter, the letters of `reason` (None: all), newest
    first, at most MAX_LISTED of them."""
    counts = Counter(d.reason or "unknown" for d in letters)
    chosen = [d for d in letters if reason is None or (d.reason or "unknown") == reason]
    newest = sorted(chosen, key=lambda d: (d.record.partition, d.record.offset), reverse=True)[:MAX_LISTED]
    return {
        "region": region, "topic": dlq_topic, "count": len(letters), "reason": reason,
        "reasons": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "listed": len(newest), "matching": len(chosen),
        "letters": [letter_doc(d, region, dlq_topic, records) for d in newest],
    }


def choose(letters: Sequence[DeadLetter], positions: Collection[str] = (), reason: str | None = None
           ) -> list[DeadLetter]:
    """The letters at these DLQ positions (`partition:offset`, every one of them must be there), or every letter
    of `reason` (gateway.relay.replay.select, as `yrdx dlq replay --reason`)."""
    if positions:
        by_where = {d.where: d for d in letters}
        missing = sorted(set(positions) - set(by_where))
        if missing:
            raise SelectionError(f"not on the DLQ: {', '.join(missing)}")
        return [by_where[p] for p in dict.fromkeys(positions)]
    if reason:
        found = [d for d in select(letters, reason=reason) if d.reason]
        if not found:
            raise SelectionError(f"no dead letter of reason {reason}")
        return found
    raise SelectionError('name the letters: {"at": ["partition:offset", ...]} or {"reason": CODE}')
