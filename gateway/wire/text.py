"""Text that ends up in an HTTP or Kafka header: what it may contain."""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls (a correlation_id becomes the receiver's Yrdx-Correlation-Id webhook header,
# where CR or LF would break or split it), and lone surrogates (what a non-UTF-8 header byte decodes to; they
# cannot be encoded again, e.g. into SQLite).
_NOT_IN_HEADERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def header_safe(value: object, max_chars: int) -> bool:
    """A string of 1 to `max_chars` characters that can travel as an HTTP or Kafka header value."""
    return isinstance(value, str) and 0 < len(value) <= max_chars and _NOT_IN_HEADERS.search(value) is None
