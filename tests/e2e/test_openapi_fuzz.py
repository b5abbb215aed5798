"""Schemathesis fuzzes a running gateway (the session's JS gateway, a real `yrdx serve` process on the real broker)
from the OpenAPI document it serves at /openapi.json (gateway/http/openapi.py): every operation, positive and
negative data, each request with a fresh single-use token. No answer may be a 5xx, and every answer must conform
to the document: a documented status, its content type, its schema (for a problem, a code documented for that
route and status) and its documented headers.

Bounded and deterministic: Hypothesis derandomized (its seed comes from the test), what Schemathesis draws outside
it seeded with FUZZ_SEED, no example database; at most FUZZ_BUDGET_S seconds and a fixed number of examples per
operation and mode (449 requests in all, the same ones every run).

It leaves nothing other tests count. It talks only to the JS gateway, as the JS platform (an auditor for the audit
route). What it POSTs is almost never a valid message (random types and payloads get 400 unknown_type or
schema_violation); if one were, it would be a message of its own id from JS to another region, and the tests that
look at a region's deliveries filter by their own ids. Its
POST /v1/files uploads do travel (small random files to other regions), but no message names them: they are
never delivered, and the receivers' retention sweeps them. GET /v1/inbox leases what the JS inbox holds for 60 s:
only leftovers of tests that already ran (nothing is sent to JS while this runs), and none is acked, as the
random ids of /v1/inbox/ack never name a real message. Its long polls are capped at 0.1 s to stay in budget.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Exchange4

REGION = "JS"
FUZZ_BUDGET_S = 60.0
EXAMPLES = 30  # per operation and generation mode (fewer for the probes and the audit route)
FEW = {"/healthz": 3, "/readyz": 3, "/openapi.json": 3, "/metrics": 5, "/v1/audit/messages/{id}": 8}
MAX_LONG_POLL_S = 0.1
FUZZ_SEED = 9
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


@dataclass
class Figures:
    requests: int = 0
    server_errors: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    out_of_time: bool = False
    nothing_to_negate: list[str] = field(default_factory=list)


def _capped_wait(case: Any) -> None:
    """A long poll `wait` within range becomes at most MAX_LONG_POLL_S (a valid value stays valid)."""
    query = case.query
    if not query or "wait" not in query or isinstance(query["wait"], bool):
        return
    try:
        wait = float(query["wait"])
    except (TypeError, ValueError):
        return
    if math.isfinite(wait) and MAX_LONG_POLL_S < wait <= 30:
        query["wait"] = MAX_LONG_POLL_S


def fuzz(doc: dict[str, Any], base_url: str, auth: dict[str, Any]) -> Figures:
    """Runs in a thread (schemathesis calls with `requests`): every operation of `doc`, both modes."""
    random.seed(FUZZ_SEED)  # what is drawn outside Hypothesis (whose examples are derandomized)
    schemathesis.generation.RANDOM.seed(FUZZ_SEED)
    schema = schemathesis.openapi.from_dict(doc)
    figures = Figures()
    deadline = time.monotonic() + FUZZ_BUDGET_S
    session = requests.Session()

    def authorization(path: str) -> dict[str, str]:
        if path in ("/healthz", "/readyz", "/openapi.json"):
            return {}
        if path == "/metrics":
            return {"Authorization": f"Bearer {auth['metrics']}"}
        minter = auth["auditor"] if path.startswith("/v1/audit/") else auth["platform"]
        return dict(minter.header())  # a fresh single-use JWT

    def run(operation: Any, mode: GenerationMode) -> None:
        label = f"{operation.method.upper()} {operation.path}"

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=FEW.get(operation.path, EXAMPLES), derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
                  verbosity=Verbosity.quiet, print_blob=False)
        def one(case: Any) -> None:
            if time.monotonic() > deadline:
                figures.out_of_time = True
                return
            _capped_wait(case)
            headers = authorization(operation.path)
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=15)
            figures.requests += 1
            figures.by_status[response.status_code] += 1
            figures.by_operation[f"{label} ({mode.value})"] += 1
            if response.status_code >= 500:
                figures.server_errors += 1
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except Exception as e:  # noqa: BLE001 - collected, not raised: no shrinking, no extra requests
                figures.failures.append(f"{label} ({mode.value}): {str(e)[:1500]}")

        one()

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                run(operation, mode)
            except Unsatisfiable:  # nothing to negate: no parameter or body (the probes, /metrics)
                figures.nothing_to_negate.append(f"{operation.method.upper()} {operation.path}")
    session.close()
    return figures


async def test_schemathesis_finds_no_5xx_and_every_answer_conforms(exchange: Exchange4,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    gw = exchange.gateways[REGION]
    client = exchange.clients[REGION]
    async with client.session.get(gw.url + "/openapi.json") as r:  # no token
        assert r.status == 200, await r.text()
        doc = orjson.loads(await r.read())
    log_start = gw.log_path.stat().st_size
    auth = {"platform": client.minter, "auditor": client.auditor,
            "metrics": (exchange.exchange.dir / "secrets" / "metrics.token").read_text().strip()}
    started = time.monotonic()
    figures = await asyncio.to_thread(fuzz, doc, gw.url, auth)
    took = time.monotonic() - started
    with capsys.disabled():  # the figures, in `make test`'s output too
        print(f"\nschemathesis against {REGION}: {figures.requests} requests in {took:.1f} s, "
              f"{figures.server_errors} 5xx, {len(figures.failures)} non-conforming; statuses "
              f"{dict(sorted(figures.by_status.items()))}")
        for op, n in sorted(figures.by_operation.items()):
            print(f"  {op}: {n}")
    assert figures.server_errors == 0
    assert figures.failures == [], "\n\n".join(figures.failures[:5])
    assert 200 <= figures.requests <= 1000 and not figures.out_of_time, figures.requests
    assert {op.split(" (")[0] for op in figures.by_operation} == {
        f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item}  # every operation was fuzzed
    log = gw.log_path.read_bytes()[log_start:]
    assert b"Traceback" not in log and b'"level":"error"' not in log
