"""Structured JSON logging with a masking filter: personal identifiers never reach a log line in clear.

The gateway never logs payloads; the filter is the second line of defence (DOMAIN.md section 6, item 3):
anything shaped like an ID number or a long numeric person id is masked, wherever it appears.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
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
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
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


def setup(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
