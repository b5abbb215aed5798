"""The claim-check step of egress: a message referencing files is delivered only once each file is complete.

Which messages reference files is read from their schemas once: every object marked ``"x-claim-check"``
(schemas/yrdx/yrdx.claim_check.v1.json), reached through ``properties`` and ``items``, gives a path into the
payload. For a message with claim checks, each named file must have arrived whole from the message's sender with
the claim's digest, size and media type. Then the message goes on, and its recipient platform may download the
files, or it is refused with the file's reason (`file_incomplete`, `file_corrupt`, `file_digest_mismatch`).

A file still on its way holds nothing up: the message is parked in the state store (parking.py) and left out of
the batch, the records after it go on, and its offset is committed with theirs. Egress takes it back when its
files are decided (the assembler wakes it; a file assembled by another replica is found by looking at the spool
every second) or when ``files.wait_s`` has passed, and runs it through the pipeline again; this step is then
final. A message of a conversation with a parked message is parked behind it, to keep the conversation's order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from gateway.audit.trail import AuditTrail
from gateway.config import GatewayConfig
from gateway.files.parking import as_record, parked_row, ready
from gateway.files.store import FileStore, StoredFile
from gateway.kafka.port import InRecord
from gateway.relay.checks import RECEIPT_TYPE, Refused, Verified
from gateway.schemas.registry import SchemaRegistry
from gateway.state import ParkedMessage, StateStore, StateUnavailable
from gateway.wire import envelope
from gateway.wire.problems import Rejection

__all__ = ["ClaimChecks", "claim_paths", "claims_in", "names_a_file"]

log = logging.getLogger(__name__)

MARK: Final = "x-claim-check"
LOOK_EVERY_S: Final = 1.0  # how often egress looks for parked messages when no assembler here woke it
LEASE_S: Final = 120.0  # a replica taking parked messages back holds them this long (then another may)
TAKEN_AT_ONCE: Final = 500  # parked messages looked at per look
Path = tuple[str, ...]  # property names, "*" for every item of an array


def claim_paths(schema: Mapping[str, Any], here: Path = ()) -> list[Path]:
    """Where a payload of this schema holds claim-check objects."""
    found: list[Path] = [here] if schema.get(MARK) else []
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, Mapping):
            found += claim_paths(sub, (*here, name))
    items = schema.get("items")
    if isinstance(items, Mapping):
        found += claim_paths(items, (*here, "*"))
    return found


def claims_in(payload: object, path: Path) -> Iterator[Mapping[str, Any]]:
    """The claim-check objects of ``payload`` at ``path`` (the schema has already validated their shape)."""
    if not path:
        if isinstance(payload, Mapping):
            yield payload
        return
    head, rest = path[0], path[1:]
    if head == "*":
        for item in payload if isinstance(payload, list) else ():
            yield from claims_in(item, rest)
    elif isinstance(payload, Mapping) and head in payload:
        yield from claims_in(payload[head], rest)


def names_a_file(schema: Mapping[str, Any], payload: object) -> bool:
    """Whether a payload of this schema carries a claim check (its message waits for that file)."""
    return any(True for path in claim_paths(schema) for _ in claims_in(payload, path))


def judge(claim: Mapping[str, Any], sender: str, stored: StoredFile | None) -> Rejection | None:
    """A claim against the file as the spool holds it (None: arrived, and it is the file claimed)."""
    file_id = claim["file_id"]
    if stored is None:
        return Rejection("file_incomplete", f"file {file_id} has not arrived whole")
    if stored.rejection is not None:
        return Rejection(stored.reason, f"file {file_id}: {stored.detail}")
    if stored.sender != sender:
        return Rejection("file_incomplete", f"file {file_id} did not come from {sender}")
    if stored.claim != dict(claim):
        return Rejection("file_digest_mismatch", f"file {file_id} has another digest, size or media type than claimed")
    return None


class ClaimChecks:
    """Built once per gateway; `settle` runs per batch, after dedupe; `due` gives egress the parked records to
    run again, and `resumed` forgets them once their batch is flushed."""

    def __init__(self, cfg: GatewayConfig, registry: SchemaRegistry, store: FileStore, state: StateStore,
                 audit: AuditTrail) -> None:
        self._cfg = cfg
        self._store = store
        self._state = state
        self._audit = audit
        self._wait_s = cfg.files.wait_s
        self._paths = {(t, v): paths for t in registry.types() for v in registry.versions(t)
                       if (paths := claim_paths(registry.schema(t, v)))}
        self.wake = asyncio.Event()  # set by the assembler when a file was decided
        self._looked = 0.0
        self._taking: dict[str, ParkedMessage] = {}  # source -> the parked message egress is running again
        self._leased: list[str] = []  # the conversations leased for it

    def claims(self, v: Verified) -> list[Mapping[str, Any]]:
        paths = self._paths.get((v.env.type, v.env.schema_version), ())
        return [c for p in paths for c in claims_in(v.env.payload, p)]

    def settle(self, checked: Sequence[Verified | Refused]) -> list[Verified | Refused]:
        """The batch less the messages parked now, with every message whose files did not arrive whole refused;
        the recipients of the others are granted their files."""
        verified = [c for c in checked if isinstance(c, Verified) and c.env.type != RECEIPT_TYPE]
        if not verified:
            return list(checked)
        ahead = self._state.parked_conversations([c.env.correlation_id for c in verified
                                                  if c.source not in self._taking])
        deadline = time.time() + self._wait_s
        parked: list[tuple[Verified, list[str]]] = []
        out: list[Verified | Refused] = []
        for c in checked:
            claims = self.claims(c) if isinstance(c, Verified) else []
            if (not isinstance(c, Verified) or c.env.type == RECEIPT_TYPE
                    or (not claims and c.env.correlation_id not in ahead)):
                out.append(c)
                continue
            files = [self._store.status(claim["file_id"]) for claim in claims]
            final = c.source in self._taking
            if not final and (c.env.correlation_id in ahead or None in files):
                parked.append((c, [claim["file_id"] for claim, f in zip(claims, files, strict=True) if f is None]))
                ahead.add(c.env.correlation_id)  # what comes after it in its conversation waits behind it
                continue
            found = [judge(claim, c.env.sender, f) for claim, f in zip(claims, files, strict=True)]
            rejection = next((r for r in found if r is not None), None)
            if rejection is not None:
                out.append(Refused(c.record, rejection, c.sha256, c))
                continue
            platform = self._cfg.recipient_of(c.env.type)
            for claim in claims:
                if platform is not None:
                    self._store.grant(claim["file_id"], platform.id)
            out.append(c)
        if parked:
            self._park(parked, deadline)
        return out

    def _park(self, parked: list[tuple[Verified, list[str]]], deadline: float) -> None:
        # In the state store before the audit record, and both before the offsets move past the record.
        self._state.park([parked_row(v.record, v.env.id, v.env.correlation_id, waiting, deadline)
                          for v, waiting in parked])
        until = envelope.utc_timestamp(datetime.fromtimestamp(deadline, UTC))
        for v, waiting in parked:
            detail: dict[str, str | int] = ({"reason": "awaiting_file", "files": ",".join(waiting), "until": until}
                                            if waiting else {"reason": "behind_parked"})
            self._audit.append("parked", v.env.id, v.sha256, v.env.correlation_id, source=v.source, **detail)

    async def due(self) -> list[InRecord]:
        """The parked records to run through egress again now, in order per conversation (leased for it), or
        none. Looks when the assembler decided a file, else at most every LOOK_EVERY_S."""
        now = time.time()
        if not self.wake.is_set() and time.monotonic() - self._looked < LOOK_EVERY_S:
            return []
        self.wake.clear()
        self._looked = time.monotonic()
        parked = self._state.parked(TAKEN_AT_ONCE)
        if not parked:
            return []
        conversations = await asyncio.to_thread(lambda: list(ready(parked, self._store.status, now)))
        records: list[InRecord] = []
        for taken in conversations:
            conversation = taken[0][0].correlation_id
            leased = self._state.lease_parked(conversation, LEASE_S)
            if not leased:
                continue  # another replica is taking it back
            self._leased.append(conversation)
            for m, reason in taken:
                if m.source not in leased:  # parked after this look: it waits for the next one
                    break
                self._taking[m.source] = m
                self._audit.append("unparked", m.message_id, envelope.sha256_hex(m.value), m.correlation_id,
                                   source=m.source, reason=reason)
                records.append(as_record(m))
        return records

    def released(self) -> None:
        """Running them again failed (the broker or the database, a stop): they stay parked, unleased, for the
        next look here or at another replica. Upkeep on a failure path, so it raises nothing of its own."""
        try:
            self._state.unpark([], self._leased)
        except StateUnavailable:
            log.warning("parked messages left leased; the lease lapses", extra={"count": len(self._taking)})
        self._taking.clear()
        self._leased.clear()

    def resumed(self) -> None:
        """The records `due` gave were decided and flushed: forget them, release what is left of their
        conversations."""
        if not self._leased:
            return
        self._state.unpark(list(self._taking), self._leased)
        self._taking.clear()
        self._leased.clear()
