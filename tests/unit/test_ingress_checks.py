"""The checks ingress and the HTTP API make on what a platform sends, without a broker: each bad field is one
precise 4xx problem, and nothing is published for it."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import MultiDict

from gateway.audit.trail import AuditTrail
from gateway.config import Platform, load_config
from gateway.crypto.jws import Signer
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.dev.exchange import init_exchange
from gateway.http import api
from gateway.http.api import ProblemError, inbox_query, read_json
from gateway.metrics import Metrics
from gateway.relay.ingress import MAX_CORRELATION_ID, Ingress
from gateway.relay.signed import Signed, Unsigned
from gateway.schemas.registry import SchemaRegistry
from gateway.state import StateStore
from gateway.wire.problems import Problem
from gateway.wire.text import header_safe
from tests._util import with_use_context

REGISTRY = SchemaRegistry.load()
REGION, TO, TYPE = "JS", "ZJ", "license.verify.request"


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value,ok", [
    ("conv-1", True), ("会话-一", True), ("a" * 128, True), ("a b", True),
    ("", False), ("a" * 129, False), (None, False), (42, False), (["a"], False),
    ("a\r\nX-Injected: 1", False), ("a\nb", False), ("a\rb", False), ("\x00", False), ("a\tb", False),
    ("\x1f", False), ("a\x7f", False), ("a\x80", False), ("a\x85", False), ("a\x9f", False),
    ("\ud800", False), ("key-\udcff", False),  # lone surrogates: a non-UTF-8 header byte, as aiohttp decodes it
])
def test_header_safe(value: object, ok: bool) -> None:
    assert header_safe(value, MAX_CORRELATION_ID) is ok


class Published:
    """A publisher that acknowledges everything and remembers it."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    async def publish(self, records: Sequence[Any]) -> None:
        self.records += records


@pytest.fixture(scope="module")
def gateway_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ex = init_exchange(tmp_path_factory.mktemp("ingress"), base_port=0, bootstrap_servers="127.0.0.1:1")
    return ex.config_path(REGION)


@pytest.fixture
def ingress(gateway_files: Path, tmp_path: Path) -> tuple[Ingress, Platform, Published]:
    cfg = load_config(gateway_files)
    signer = Signer(load_private_key(cfg.private_key), load_certificate(cfg.certificate))
    state = StateStore(tmp_path / "state.sqlite")
    published = Published()
    audit = AuditTrail(REGION, signer, state, published, False, cfg.topics)  # type: ignore[arg-type]
    ing = Ingress(cfg, REGISTRY, signer, published, state, audit, Metrics(REGION))  # type: ignore[arg-type]
    return ing, cfg.platforms[0], published


def message(**over: Any) -> dict[str, Any]:
    return with_use_context({"type": TYPE, "to": TO, "payload": copy.deepcopy(REGISTRY.examples(TYPE)[0]), **over})


def test_a_good_message_is_prepared(ingress: tuple[Ingress, Platform, Published]) -> None:
    ing, platform, _ = ingress
    assert isinstance(ing.prepare(platform, message(correlation_id="会话-1")), Unsigned)


@pytest.mark.parametrize("over,code", [
    ({"correlation_id": "a\r\nb"}, "invalid_request"),
    ({"correlation_id": "\x00"}, "invalid_request"),
    ({"correlation_id": "a\x85"}, "invalid_request"),
    ({"correlation_id": 7}, "invalid_request"),
    ({"correlation_id": "c" * 129}, "invalid_request"),
    ({"schema_version": nested(1000)}, "invalid_request"),  # repr() of it used to raise RecursionError
    ({"schema_version": "1"}, "invalid_request"),
    ({"schema_version": True}, "invalid_request"),
    ({"schema_version": 1e29}, "invalid_request"),  # what orjson makes of a 30-digit integer
    ({"schema_version": 99}, "unknown_type"),
    ({"expires_at": nested(1000)}, "invalid_request"),  # str() of it used to raise RecursionError
    ({"expires_at": 1700000000}, "invalid_request"),
    ({"expires_at": "2030-01-01T00:00:00"}, "invalid_request"),  # no time zone
    ({"payload": nested(300)}, "schema_violation"),
    ({"to": "BJ"}, "unknown_region"),
    ({"type": "license.teleport.request"}, "unknown_type"),
    ({"priority": "high"}, "invalid_request"),
])
def test_each_bad_field_is_one_precise_problem(ingress: tuple[Ingress, Platform, Published], over: dict[str, Any],
                                               code: str) -> None:
    ing, platform, _ = ingress
    result = ing.prepare(platform, message(**over))
    assert isinstance(result, Problem) and result.code == code, result
    assert result.status < 500


def test_the_refused_value_is_not_echoed(ingress: tuple[Ingress, Platform, Published]) -> None:
    ing, platform, _ = ingress
    result = ing.prepare(platform, message(schema_version=nested(1000)))
    assert isinstance(result, Problem) and "[" not in result.detail


async def test_a_batch_answers_a_deeply_nested_item_on_its_own(ingress: tuple[Ingress, Platform, Published]) -> None:
    ing, platform, published = ingress
    results = await ing.submit_batch(platform, [message(schema_version=nested(1000)), message(),
                                                message(expires_at=nested(1000))])
    assert [type(r) for r in results] == [Problem, Signed, Problem]
    assert len(published.records) == 1


async def test_an_idempotent_request_too_deep_to_serialize_is_refused(
        ingress: tuple[Ingress, Platform, Published]) -> None:
    ing, platform, published = ingress
    result = await ing.submit(platform, message(payload=nested(300)), "key-1")
    assert isinstance(result, Problem) and result.code == "invalid_request"
    assert published.records == []


@pytest.mark.parametrize("query,expected", [
    ({}, (100, 0.0)), ({"max": "1", "wait": "0"}, (1, 0.0)), ({"max": "1000", "wait": "30"}, (1000, 30.0)),
    ({"wait": "2.5"}, (100, 2.5)),
])
def test_inbox_query_in_range(query: dict[str, str], expected: tuple[int, float]) -> None:
    assert inbox_query(MultiDict(query)) == expected


@pytest.mark.parametrize("query", [
    {"wait": "nan"}, {"wait": "NaN"}, {"wait": "inf"}, {"wait": "-inf"}, {"wait": "1e309"}, {"wait": "30.001"},
    {"wait": "-0.5"}, {"wait": "soon"}, {"wait": ""}, {"max": "0"}, {"max": "1001"}, {"max": "9" * 40},
    {"max": "1.5"}, {"max": "-1"}, {"max": "+5"}, {"max": " 5"}, {"max": "1_0"}, {"max": "٣"},  # Arabic-Indic 3
])
def test_inbox_query_out_of_range_or_not_finite_is_refused(query: dict[str, str]) -> None:
    with pytest.raises(ProblemError) as e:
        inbox_query(MultiDict(query))
    assert e.value.problem.code == "invalid_request"


@pytest_asyncio.fixture
async def body_server() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """read_json behind a bare aiohttp app: 200 with the parsed body, or the problem it raised."""
    async def handler(request: web.Request) -> web.Response:
        try:
            return api.json_response({"got": await read_json(request, 1024)})
        except ProblemError as e:
            return api.problem_response(e.problem)

    app = web.Application()
    app.router.add_post("/", handler)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_a_body_that_arrives_too_slowly_gets_408(body_server: TestClient[web.Request, web.Application],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "BODY_TIMEOUT_S", 0.3)

    async def dribble() -> AsyncIterator[bytes]:
        for b in b'{"a": 1}':
            yield bytes([b])
            await asyncio.sleep(0.1)

    async with body_server.post("/", data=dribble()) as r:
        assert r.status == 408 and (await r.json())["code"] == "request_timeout"


async def test_read_json_answers(body_server: TestClient[web.Request, web.Application]) -> None:
    async with body_server.post("/", data=b'{"a": 1}') as r:
        assert r.status == 200 and await r.json() == {"got": {"a": 1}}
    async with body_server.post("/", data=b'{"a": ') as r:
        assert r.status == 400 and (await r.json())["code"] == "invalid_json"
    async with body_server.post("/", data=b"x" * 2000) as r:
        assert r.status == 413 and (await r.json())["code"] == "too_large"
    async with body_server.post("/", data=b"not gzip", headers={"Content-Encoding": "gzip"}) as r:
        assert r.status == 400 and (await r.json())["code"] == "invalid_request"
