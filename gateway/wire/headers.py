"""Every Kafka record header and webhook header yrdx writes or reads: writers and readers import these names,
so a header can never be spelled two ways."""

from __future__ import annotations

# On inbox records (and copied to dead letters): the sending gateway's detached JWS over the value.
SIGNATURE = "yrdx-sig"
# Set by `yrdx dlq replay`: the dead letter (dlq topic:partition:offset) this record puts back.
REPLAY_OF = "yrdx-replay-of"

# On records of a files topic (`yrdx.<region>.files`, README "Files (claim checks)"): every record names its file;
# a chunk says its index, the file's last record (its signed manifest) has none.
FILE_ID = "yrdx-file-id"
FILE_CHUNK = "yrdx-file-chunk"

# On dead letters (`yrdx.<region>.dlq`).
DLQ_REASON = "yrdx-reason"
DLQ_DETAIL = "yrdx-detail"
DLQ_SOURCE = "yrdx-source"  # topic:partition:offset of the refused record
DLQ_REGION = "yrdx-region"
# Set when the refused record was too large to copy whole: its size and SHA-256, and the bytes kept.
DLQ_TRUNCATED = "yrdx-truncated"
DLQ_ORIGINAL_SIZE = "yrdx-original-size"
DLQ_ORIGINAL_SHA256 = "yrdx-original-sha256"

# Webhook request headers (the body is the envelope, or the opened document of a sealed message).
WEBHOOK_SEALED = "Yrdx-Sealed"
WEBHOOK_SIGNATURE = "Yrdx-Signature"
WEBHOOK_MESSAGE_ID = "Yrdx-Message-Id"
WEBHOOK_TYPE = "Yrdx-Type"
WEBHOOK_FROM = "Yrdx-From"
WEBHOOK_CORRELATION_ID = "Yrdx-Correlation-Id"
# A result that came after its request's deadline (README "Request-reply"): the request's message id.
WEBHOOK_LATE_REPLY_TO = "Yrdx-Late-Reply-To"

# On GET /v1/files/{id}: the file's digest, `<alg>=<lowercase hex>` (SHA-256 or SM3).
FILE_DIGEST = "Yrdx-File-Digest"
