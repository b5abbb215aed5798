"""Idempotency-Key: a retry of a request gets the message first built for it (same id, same signed bytes), and
a key reused for another request is a conflict. The remembered requests live in the state store."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from gateway.relay.signed import Signed
from gateway.state import IdempotentRequest, StateStore
from gateway.wire import envelope
from gateway.wire.problems import Problem


@dataclass(frozen=True, slots=True)
class Recalled:
    answer: Signed | Problem
    final: bool  # True: that is the whole answer (already on Kafka, or a conflict); False: publish it (again)


def request_hash(item: object) -> str | None:
    """The request's identity for its key: SHA-256 of its canonical JSON; None if it cannot be serialized."""
    try:
        return hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()
    except orjson.JSONEncodeError:  # orjson parses 1,024 levels but serializes 254
        return None


class IdempotencyKeys:
    def __init__(self, state: StateStore) -> None:
        self._state = state

    def recall(self, platform: str, key: str, request_sha: str) -> Recalled | None:
        """What a retry with a key seen before gets; None for a new key."""
        known = self._state.idempotent(platform, key)
        if known is None:
            return None
        if known.request_sha256 != request_sha:
            return Recalled(Problem("idempotency_conflict", "this Idempotency-Key was used for another request"),
                            final=True)
        env = envelope.parse(known.envelope)
        signed = Signed(platform, env.id, env.type, env.recipient, env.correlation_id, known.envelope,
                        known.signature, envelope.sha256_hex(known.envelope))
        earlier = self._state.sent(env.id)
        return Recalled(signed, final=earlier is not None and earlier.status not in ("accepted", "publish_failed"))

    @staticmethod
    def claim(request_sha: str, signed: Signed) -> IdempotentRequest:
        """What remembering a key for `signed` stores."""
        return IdempotentRequest(request_sha, signed.id, signed.envelope, signed.signature)

    def remember(self, platform: str, key: str, claim: IdempotentRequest) -> Recalled | None:
        """Claim the key for the message of `claim` (see `claim`). None when this request holds it; otherwise what
        the request that claimed it first (another replica a moment ago) answers, so that only one message is ever
        published per key."""
        holder = self._state.remember_idempotent(platform, key, claim)
        if holder.message_id == claim.message_id:
            return None
        return self.recall(platform, key, claim.request_sha256)
