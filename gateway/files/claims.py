"""The claim-check step of egress: a message referencing files is delivered only once each file is complete.

Which messages reference files is read from their schemas once: every object marked ``"x-claim-check"``
(schemas/yrdx/yrdx.claim_check.v1.json), reached through ``properties`` and ``items``, gives a path into the
payload. For a message with claim checks, each named file must have arrived whole from the message's sender with
the claim's digest, size and media type; a file still on its way is waited for (polling the spool, so a file
assembled by another replica counts), up to ``files.wait_s``. Then the message goes on, and its recipient
platform may download the files, or it is refused with the file's reason (`file_incomplete`, `file_corrupt`,
`file_digest_mismatch`). The wait holds up the batch it is in, at most ``files.wait_s``: the sender publishes a
file before it answers the upload, so a message normally finds its file already there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from gateway.config import GatewayConfig
from gateway.files.store import FileStore, StoredFile
from gateway.relay.checks import Refused, Verified
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.problems import Rejection

__all__ = ["ClaimChecks", "claim_paths", "claims_in"]

MARK: Final = "x-claim-check"
POLL_S: Final = 0.1
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
    """Built once per gateway; `settle` runs per batch, after the checks."""

    def __init__(self, cfg: GatewayConfig, registry: SchemaRegistry, store: FileStore) -> None:
        self._cfg = cfg
        self._store = store
        self._wait_s = cfg.files.wait_s
        self._paths = {(t, v): paths for t in registry.types() for v in registry.versions(t)
                       if (paths := claim_paths(registry.schema(t, v)))}

    def claims(self, v: Verified) -> list[Mapping[str, Any]]:
        paths = self._paths.get((v.env.type, v.env.schema_version), ())
        return [c for p in paths for c in claims_in(v.env.payload, p)]

    async def settle(self, checked: Sequence[Verified | Refused]) -> list[Verified | Refused]:
        """The batch with every message whose files did not arrive whole refused; the recipients of the others
        are granted their files."""
        waiting = {i: claims for i, c in enumerate(checked) if isinstance(c, Verified) and (claims := self.claims(c))}
        if not waiting:
            return list(checked)
        deadline = time.monotonic() + self._wait_s
        verdicts: dict[int, Rejection | None] = {}
        while True:
            pending = []
            for i, claims in waiting.items():
                c = checked[i]
                assert isinstance(c, Verified)
                files = [self._store.status(claim["file_id"]) for claim in claims]
                found = [judge(claim, c.env.sender, f) for claim, f in zip(claims, files, strict=True)]
                verdicts[i] = next((r for r in found if r is not None), None)
                if any(f is None for f in files):
                    pending.append(i)
            if not pending or time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_S)
            waiting = {i: waiting[i] for i in pending}
        out = list(checked)
        for i, rejection in verdicts.items():
            c = checked[i]
            assert isinstance(c, Verified)
            if rejection is not None:
                out[i] = Refused(c.record, rejection, c.sha256, c)
                continue
            platform = self._cfg.recipient_of(c.env.type)
            for claim in self.claims(c):
                if platform is not None:
                    self._store.grant(claim["file_id"], platform.id)
        return out
