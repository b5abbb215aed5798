"""Retention of the gateway's state (README "Retention of the state"): how long each table's rows are kept, from
`state.retention` and `kafka.retention`, and which rows of each table a sweep deletes. StateStore.sweep runs it,
a chunk at a time; sweeper.py runs that in the background."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import GatewayConfig, Retention, StateRetention
from gateway.state.rows import COMPENSATION_OWED

SWEEP_CHUNK = 5000  # rows per DELETE: a chunk holds SQLite's one writer lock for milliseconds, not seconds
# Kept beyond the longest time a copy of a message can still arrive: a replay started at the DLQ's last moment,
# a broker deleting segments late (retention is a lower bound), clocks that differ.
SEEN_MARGIN_S = 24 * 3600.0
HOUR_S = 3600.0
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Sweep:
    """The rows of `table` past their time: `where`, with one `?` for the cutoff (epoch seconds). `history`: a
    table whose rows (keyed by the same `id`) go with each deleted row, in the same transaction."""

    table: str
    where: str
    history: str | None = None


# Swept in this order: idempotency keys before the sent rows they point at (a retry that found its key but no
# sent row would publish the message again).
SWEEPS: tuple[Sweep, ...] = (
    Sweep("idempotency", "created_at < ?"),
    Sweep("sent", "created_at < ?", history="sent_events"),
    # Settled ones only: a pending request is still waited on, an owed compensation still to be sent.
    Sweep("requests", f"deadline_at < ? AND status <> 'pending' AND NOT ({COMPENSATION_OWED})"),
    Sweep("inbox", "acked_at < ?"),  # acked ones only: a pending row (acked_at NULL) is never past its time
    Sweep("seen", "at < ?"),
)
TABLES: tuple[str, ...] = tuple(t for s in SWEEPS for t in (s.table, s.history) if t is not None)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    state: StateRetention = StateRetention()
    kafka: Retention = Retention()

    @classmethod
    def of(cls, cfg: GatewayConfig) -> RetentionPolicy:
        return cls(cfg.state_retention, cfg.kafka.retention)

    @property
    def copies_s(self) -> float:
        """The longest a record can wait on Kafka before it is decided: read from the inbox topic (kept
        `inbox_hours`), dead-lettered and replayed from the DLQ (kept `dlq_hours`); plus the margin."""
        return (self.kafka.inbox_hours + self.kafka.dlq_hours) * HOUR_S + SEEN_MARGIN_S

    @property
    def seen_s(self) -> float:
        """How long a dedupe mark is kept: while a copy of its message can still arrive. A sender's retry with its
        Idempotency-Key (remembered `days`) publishes the same message again when its first publish was not
        acknowledged, and that copy may then wait on Kafka too. Never shorter, whatever `days` says: a mark
        forgotten early lets a copy be delivered twice."""
        return self.state.days * DAY_S + self.copies_s

    def cutoffs(self, now: float) -> dict[str, float]:
        """Table -> the time before which its rows are past their retention, at `now` (epoch seconds). A settled
        request is kept while a late result for it can still arrive (one its compensation undid is withheld,
        and only its row tells)."""
        kept = now - self.state.days * DAY_S
        return {"idempotency": kept, "sent": kept, "requests": min(kept, now - self.copies_s),
                "inbox": now - self.state.acked_inbox_hours * HOUR_S, "seen": now - self.seen_s}
