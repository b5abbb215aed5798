"""ID numbers never reach a log line in clear, through the logging the gateway really sets up (`yrdx serve` calls
`gateway.logs.setup`): the message, its arguments, `extra` values of any type and an exception's traceback.

The values are DOMAIN.md's synthetic ID numbers (section 9); the masked form keeps the first 6 and last 4.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import orjson
import pytest

from gateway import logs

SH_ID, AH_ID = "310115198503120418", "34010420000229124X"  # synthetic (DOMAIN.md section 9)
SH_MASKED, AH_MASKED = "310115********0418", "340104********124X"
PSN_NO = "33050099000010000001689700"  # a long numeric person id (DOMAIN.md sample)


@pytest.fixture
def gateway_logging() -> Iterator[Callable[[], logging.Logger]]:
    """`logs.setup` as the gateway calls it, to be called in the test itself: the handler writes to the
    sys.stderr of the moment it is made, which capsys has replaced by then. The root logger's handlers and the
    levels `setup` changes are put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {n: logging.getLogger(n).level for n in ("aiokafka", "aiohttp.access")}

    def setup() -> logging.Logger:
        logs.setup("yrdx-gateway-sh", "INFO")
        return logging.getLogger("gateway.test")

    try:
        yield setup
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, saved in noisy.items():
            logging.getLogger(name).setLevel(saved)


def lines(err: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in err.splitlines() if line.strip()]


def test_id_numbers_in_message_extra_and_traceback_are_masked(gateway_logging: Callable[[], logging.Logger],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    log = gateway_logging()
    log.warning("identity check failed for %s", SH_ID, extra={
        "subject": f"id_number={AH_ID}", "psn_no": PSN_NO, "as_int": int(SH_ID),
        "nested": {"ids": [SH_ID, {"holder": AH_ID}]}, "error": ValueError(f"bad {SH_ID}"),
    })
    try:
        raise RuntimeError(f"lookup of\n{SH_ID} failed")  # after a newline: an escape in JSON, not in the text
    except RuntimeError:
        log.exception("payload rejected")

    err = capsys.readouterr().err
    assert SH_ID not in err and AH_ID not in err and PSN_NO not in err
    assert SH_ID[6:14] not in err  # not even the birth date in the middle
    warning, exception = lines(err)
    assert warning["msg"] == f"identity check failed for {SH_MASKED}"
    assert warning["subject"] == f"id_number={AH_MASKED}"
    assert warning["psn_no"] == f"<{len(PSN_NO)} digits>"
    assert warning["as_int"] == SH_MASKED
    assert warning["nested"] == {"ids": [SH_MASKED, {"holder": AH_MASKED}]}
    assert warning["error"] == f"bad {SH_MASKED}"
    assert (warning["level"], warning["service"], warning["logger"]) == ("warning", "yrdx-gateway-sh", "gateway.test")
    assert exception["msg"] == "payload rejected"
    exc = str(exception["exc"])
    assert "Traceback (most recent call last)" in exc and f"RuntimeError: lookup of\n{SH_MASKED} failed" in exc


def test_values_that_are_not_identifiers_are_logged_as_they_are(gateway_logging: Callable[[], logging.Logger],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    gateway_logging().info("published", extra={"offset": 1234, "ratio": 0.5, "ok": True, "none": None,
                                             "sha": "ab" * 32, "topic": "yrdx.sh.inbox"})
    (line,) = lines(capsys.readouterr().err)
    assert {k: line[k] for k in ("offset", "ratio", "ok", "none", "sha", "topic")} == {
        "offset": 1234, "ratio": 0.5, "ok": True, "none": None, "sha": "ab" * 32, "topic": "yrdx.sh.inbox"}
