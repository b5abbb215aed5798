"""The gateway's state (dedupe marks, pull inbox and leases, sent messages and receipts, idempotency keys, used
JWT ids, the audit chain head): `StateStore` over SQLite (sqlite.py, the embedded default) or PostgreSQL
(postgres.py, shared by replicas), with the schema of each as numbered migrations (schema.py)."""

from gateway.state.rows import (
    Decision,
    IdempotentRequest,
    InboxDelivery,
    InboxItem,
    NewRequest,
    NewSent,
    Opened,
    ParkedMessage,
    ReceiptItem,
    Reply,
    RequestRecord,
    SentMessage,
    StateSchemaError,
    StateUnavailable,
)
from gateway.state.store import DEFAULT_TIMEOUT_S, Backend, StateStore

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Backend",
    "Decision",
    "IdempotentRequest",
    "InboxDelivery",
    "InboxItem",
    "NewRequest",
    "NewSent",
    "Opened",
    "ParkedMessage",
    "ReceiptItem",
    "Reply",
    "RequestRecord",
    "SentMessage",
    "StateSchemaError",
    "StateStore",
    "StateUnavailable",
]
