"""A refused record as its dead letter: the original bytes and signature with the reason headers, cut down to a
stored prefix plus its size and hash when the copy would not fit in one Kafka record."""

from __future__ import annotations

import hashlib

from gateway.kafka.port import InRecord, OutRecord
from gateway.wire import headers
from gateway.wire.problems import Rejection

# Below the producer's max.request.size (1 MiB) with room for the headers this module adds.
MAX_DEAD_LETTER_BYTES = 900 * 1024
KEPT_PREFIX_BYTES = 64 * 1024  # what a truncated dead letter keeps of the original value
_MAX_KEY_BYTES = 256
_MAX_SIGNATURE_BYTES = 16 * 1024  # a real yrdx-sig is a few hundred bytes (a few KB with x5c)


def dead_letter(topic: str, record: InRecord, rejection: Rejection, region: str, message_id: str) -> OutRecord:
    hdrs = [
        (headers.DLQ_REASON, rejection.code.encode()),
        (headers.DLQ_DETAIL, rejection.detail[:500].encode(errors="replace")),
        (headers.DLQ_SOURCE, record.source.encode()),
        (headers.DLQ_REGION, region.encode()),
    ]
    signature = record.headers.get(headers.SIGNATURE)
    if signature is not None and len(signature) <= _MAX_SIGNATURE_BYTES:
        hdrs.append((headers.SIGNATURE, signature))
    value = record.value
    original_size = len(value) + sum(len(k) + len(v) for k, v in record.headers.items())
    if original_size > MAX_DEAD_LETTER_BYTES or (signature is not None and len(signature) > _MAX_SIGNATURE_BYTES):
        hdrs += [
            (headers.DLQ_TRUNCATED, b"true"),
            (headers.DLQ_ORIGINAL_SIZE, str(original_size).encode()),
            (headers.DLQ_ORIGINAL_SHA256, hashlib.sha256(value).hexdigest().encode()),
        ]
        value = value[:KEPT_PREFIX_BYTES]
    key = message_id.encode() or record.key
    if key is not None and len(key) > _MAX_KEY_BYTES:
        key = hashlib.sha256(key).hexdigest().encode()
    return OutRecord(topic, value, key, hdrs)
