"""The console's view of the audit trail: an index of `yrdx.audit` it keeps following (gateway.audit.index, the
one `yrdx audit index --follow` keeps, checkpoints checked against the exchange's trust), the trace of one message
read from it (the document of `yrdx audit trace --json`), and that trace drawn as a journey: one lane per region,
the records in time order, each message's hop from its origin to its destination and the receipt back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.audit.index import AuditIndex, open_index, trace_document, update_index
from gateway.audit.model import AuditRecord, record_chain
from gateway.config import KafkaConfig
from gateway.crypto.trust import TrustStore
from gateway.wire.envelope import timestamp_or_none

log = logging.getLogger(__name__)

RESTART_S = 2.0
GOOD = frozenset({"accepted", "published", "received", "verified", "delivered", "receipt_sent", "receipt_received",
                  "replayed"})
BAD = frozenset({"rejected", "dead_lettered", "publish_failed"})


def default_index_target(exchange_dir: Path) -> str:
    """The console's own SQLite index, beside the gateways' state (var/ of the exchange)."""
    return str(exchange_dir / "var" / "console" / "audit-index.sqlite")


class TrailIndex:
    """The followed index. `run` follows the topic until stopped, starting again (from the stored position) after
    a failure; `trace` and `records_of` read what is indexed so far."""

    def __init__(self, kafka: KafkaConfig, target: str, trust: TrustStore) -> None:
        self.kafka = kafka
        self.target = target
        self.trust = trust
        self.error: str | None = None
        self.following = False
        self._index: AuditIndex | None = None

    async def open(self) -> None:
        self._index = await asyncio.to_thread(open_index, self.target)

    @property
    def index(self) -> AuditIndex:
        if self._index is None:
            raise RuntimeError("the audit index is not open")
        return self._index

    @property
    def where(self) -> str:
        return self.index.where

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.following = True
                await update_index(self.kafka, self.index, trust=self.trust, follow=stop, setup_timeout_s=10.0)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the broker gone, a timeout at set-up: follow again from the stored position
                if self.error != repr(e):
                    log.warning("audit index: following yrdx.audit failed; starting again",
                                extra={"error": repr(e), "index": self.where})
                self.error = repr(e)
            else:
                self.error = None
            finally:
                self.following = False
            try:
                await asyncio.wait_for(stop.wait(), RESTART_S)
            except TimeoutError:
                continue

    async def trace(self, message_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(trace_document, self.index, message_id)

    async def records_of(self, message_ids: Collection[str]) -> list[AuditRecord]:
        return await asyncio.to_thread(self.index.records_with, "message_id", message_ids)

    async def counts(self) -> dict[str, int]:
        return await asyncio.to_thread(self.index.counts)

    async def close(self) -> None:
        if self._index is not None:
            await asyncio.to_thread(self._index.close)
            self._index = None


def _kind(stage: str) -> str:
    return "good" if stage in GOOD else "bad" if stage in BAD else "info"


def _ms_between(start: str | None, end: str | None) -> float | None:
    a, b = timestamp_or_none(start), timestamp_or_none(end)
    return None if a is None or b is None else (b - a).total_seconds() * 1000.0


def _first(records: Sequence[Mapping[str, Any]], stage: str, region: str | None = None) -> Mapping[str, Any] | None:
    return next((r for r in records if r["stage"] == stage and (region is None or r["region"] == region)), None)


def _hop(message_id: str, records: Sequence[Mapping[str, Any]], receipt_of: Mapping[str, str]) -> dict[str, Any]:
    """One message from its origin to its destination: where and when each step happened (ms after `accepted`)."""
    mine = [r for r in records if r["message_id"] == message_id]
    accepted = _first(mine, "accepted") or _first(mine, "published")
    origin = accepted["region"] if accepted else None
    arrived = next((r for r in mine if r["stage"] == "received" and r["region"] != origin), None)
    destination = arrived["region"] if arrived else None
    start = accepted["at"] if accepted else (mine[0]["at"] if mine else None)
    steps = [{"stage": r["stage"], "region": r["region"], "at": r["at"], "after_ms": _ms_between(start, r["at"]),
              "kind": _kind(r["stage"])} for r in mine]
    outcome = "delivered" if _first(mine, "delivered") else "rejected" if (
        _first(mine, "rejected") or _first(mine, "dead_lettered")) else "in transit"
    reason = next((str(r["detail"].get("reason")) for r in mine
                   if r["stage"] in ("rejected", "dead_lettered") and r["detail"].get("reason")), None)
    receipts = sorted({rid for rid, mid in receipt_of.items() if mid == message_id})
    back = _first(mine, "receipt_received", origin) if origin else None  # the receipt back at the origin
    return {"message_id": message_id, "origin": origin, "destination": destination, "outcome": outcome,
            "reason": reason, "steps": steps, "receipts": receipts,
            "round_trip_ms": _ms_between(start, back["at"]) if back else None}


def journey_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The trace document (as `yrdx audit trace --json` prints it) with what the page draws: `lanes` (regions,
    origins first), `rows` (every record in time order, with its lane, ms after the first record, whether it is
    about a receipt, good/bad/info, and `entry`: its position in a batch record, None for a whole record), `hops`
    (per message: origin, destination, outcome and step times)."""
    records: list[Mapping[str, Any]] = list(doc.get("records") or ())
    receipts = set(doc.get("receipt_ids") or ())
    receipt_of: dict[str, str] = {}
    for r in records:
        rid = r["detail"].get("receipt")
        if r["stage"] in ("receipt_sent", "receipt_received") and isinstance(rid, str):
            receipt_of.setdefault(rid, r["message_id"])
    hops = [_hop(m, records, receipt_of) for m in doc.get("message_ids") or ()]
    lanes: list[str] = []
    for h in hops:
        for region in (h["origin"], h["destination"]):
            if region and region not in lanes:
                lanes.append(region)
    lanes += [r for r in doc.get("regions") or () if r not in lanes]
    first = records[0]["at"] if records else None
    rows = [{
        "at": r["at"], "after_ms": _ms_between(first, r["at"]), "region": r["region"], "lane": lanes.index(r["region"])
        if r["region"] in lanes else 0, "chain": record_chain(r), "seq": r["seq"], "entry": r.get("entry"),
        "stage": r["stage"],
        "kind": _kind(r["stage"]),
        "message_id": r["message_id"], "receipt": r["message_id"] in receipts,
        "envelope_sha256": r.get("envelope_sha256"), "hash": r["hash"],
        "detail": {k: v for k, v in sorted(r["detail"].items())},
    } for r in records]
    return {**doc, "lanes": lanes, "rows": rows, "hops": hops}


def letter_status(region: str, dlq_topic: str, where: str, message_id: str,
                  records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What became of one dead letter, from the destination region's audit records of its message id: how often it
    was replayed (the `replayed` records that name its DLQ position) and whether that id was delivered there."""
    mine = sorted((r for r in records if r["region"] == region and r["message_id"] == message_id and message_id),
                  key=lambda r: (r["at"], r["seq"]))
    of = f"{dlq_topic}:{where}"
    replays = [r for r in mine if r["stage"] == "replayed" and r["detail"].get("of") == of]
    delivered = _first(mine, "delivered")
    return {"replays": len(replays), "last_replay_at": replays[-1]["at"] if replays else None,
            "delivered": delivered is not None, "delivered_at": delivered["at"] if delivered else None}
