"""A message as ingress builds it: checked and in its envelope (`Unsigned`), then signed and ready to publish."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.kafka.port import OutRecord
from gateway.wire import headers
from gateway.wire.regions import Topics


@dataclass(frozen=True, slots=True)
class Unsigned:
    """A checked message in its envelope, waiting for the signature (signed per request, not per message)."""

    platform: str  # the platform that sent it
    id: str
    type: str
    to: str
    correlation_id: str
    envelope: bytes
    sha256: str
    use: Mapping[str, str] = field(default_factory=dict)  # the use context for the audit (relay/purposes.py)

    def signed(self, signature: str) -> Signed:
        return Signed(self.platform, self.id, self.type, self.to, self.correlation_id, self.envelope, signature,
                      self.sha256, self.use)


@dataclass(frozen=True, slots=True)
class Signed:
    platform: str
    id: str
    type: str
    to: str
    correlation_id: str
    envelope: bytes
    signature: str
    sha256: str
    use: Mapping[str, str] = field(default_factory=dict)

    def record(self, topics: Topics) -> OutRecord:
        """The inbox record: the envelope bytes, keyed by conversation (one conversation stays ordered)."""
        return OutRecord(
            topics.inbox(self.to), self.envelope, self.correlation_id.encode(),
            [(headers.SIGNATURE, self.signature.encode())],
        )
