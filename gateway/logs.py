"""Structured JSON logging: one JSON line per event with an RFC 3339 UTC timestamp, personal identifiers masked
in every value, and a repeated warning or error (the broker down) collapsed to one line per interval with a count.

The gateway never logs payloads; masking is the second line of defence: anything shaped like an ID number or a
long numeric person id is masked, wherever it appears.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
import threading
import time
from typing import Any

import orjson

# 18-character ID numbers (GB 11643) keep the first 6 and last 4; other long digit runs (psn_no, card numbers)
# keep only their length.
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[\dXx])(?![0-9A-Za-z])")
_LONG_DIGITS = re.compile(r"(?<![0-9A-Za-z])\d{15,}(?![0-9A-Za-z])")

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def mask(text: str) -> str:
    text = _ID_NUMBER.sub(lambda m: f"{m.group(1)}********{m.group(2)[-4:]}", text)
    return _LONG_DIGITS.sub(lambda m: f"<{len(m.group(0))} digits>", text)


def _masked(value: object) -> object:
    """`value` fit for a log line: every string inside it masked, and so is a number or any other object that
    reads like an identifier (an ID number given as an int, an exception in `extra`). Values are masked before
    serialization: in JSON text an escape (`\\n` before the digits) would hide an ID number from the pattern."""
    if isinstance(value, str):
        return mask(value)
    if value is None or isinstance(value, bool | float | dt.date):  # orjson writes dates in ISO 8601
        return value
    if isinstance(value, int):
        text = str(value)
        return value if mask(text) == text else mask(text)
    if isinstance(value, dict):
        return {mask(str(k)): _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(v) for v in value]
    return mask(str(value))


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self._service,
            "msg": record.getMessage(),
        }
        doc.update((k, v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(_masked(doc)).decode()  # every value, the message and extras alike


def rfc3339(created: float) -> str:
    """`2026-12-01T08:15:02.123Z`: UTC, milliseconds, the zone always written."""
    whole = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((created - whole) * 1000):03d}Z"


class RepeatFilter(logging.Filter):
    """Lets the first of a run of identical warnings or errors (same logger and message template) through, drops
    the repeats for `interval_s`, then lets one through carrying `repeated`: how many were dropped. A broker
    that is down would otherwise fill the log with the same line many times a second."""

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}  # key -> (window start, dropped)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        with self._lock:
            start, dropped = self._seen.get(key, (-1e18, 0))
            if now - start < self._interval_s:
                self._seen[key] = (start, dropped + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # bounded: forget the oldest runs
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:500]:
                    del self._seen[old]
        if dropped:
            record.repeated = dropped
        return True


def setup(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
