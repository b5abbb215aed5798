"""gateway/http/openapi.py and GET /openapi.json (gateway/http/api.py): the document names exactly the live
routes, every problem code with its status, validates as OpenAPI 3.1, and is served without a token; the
`Server` header names no versions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest_asyncio
from aiohttp import web
from openapi_spec_validator import validate
from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator

from gateway.config import FilesConfig, Limits
from gateway.http import openapi
from gateway.http.api import MAX_PULL, MAX_WAIT_S, build_app, make_runner
from gateway.metrics import Metrics
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.problems import HTTP_STATUS, Problem

REGISTRY = SchemaRegistry.load()
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def minimal_context(region: str = "JS", limits: Limits | None = None) -> Any:
    """What build_app and the routes that need no gateway state touch: the config, the metrics and the ingress
    queue's wait (admission control)."""
    return SimpleNamespace(cfg=SimpleNamespace(region=region, limits=limits or Limits(), files=FilesConfig()),
                           metrics=Metrics(region), ingress=SimpleNamespace(queue_wait=lambda: 0.0),
                           registry=REGISTRY)


def doc_of(region: str = "JS", limits: Limits | None = None) -> dict[str, Any]:
    return openapi.document(region=region, limits=limits or Limits(), max_pull=MAX_PULL, max_wait_s=MAX_WAIT_S,
                            message_types=REGISTRY.types())


def live_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route, without the HEAD that aiohttp adds to each GET."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        assert resource is not None
        if route.method != "HEAD":
            found.add((route.method, resource.canonical))
    return found


def documented_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item if m in METHODS}


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, path, op) for path, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


def schema_validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for a schema of the document: its #/components/... references resolve in the document."""
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def test_the_document_names_exactly_the_routes_of_the_app() -> None:
    ctx = minimal_context()
    app = build_app(ctx)
    doc = doc_of()
    assert documented_routes(doc) == live_routes(app)
    assert ("GET", "/openapi.json") in live_routes(app)


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = doc_of()
    assert doc["openapi"].startswith("3.1.")
    validate(doc, cls=OpenAPIV31SpecValidator)
    # what a client sees: the bytes the gateway serves decode to the same, valid document
    validate(orjson.loads(orjson.dumps(doc)), cls=OpenAPIV31SpecValidator)


def test_every_problem_code_appears_with_its_status() -> None:
    doc = doc_of()
    seen: dict[str, set[int]] = {}
    for _, _, op in operations(doc):
        for status, response in op["responses"].items():
            for code in response.get("content", {}).get("application/problem+json", {}).get("examples", {}):
                seen.setdefault(code, set()).add(int(status))
    for name, response in doc["components"]["responses"].items():
        schema = response["content"]["application/problem+json"]["schema"]
        (code,) = schema["allOf"][1]["properties"]["code"]["enum"]
        seen.setdefault(code, set()).add(schema["allOf"][1]["properties"]["status"]["const"])
        assert name in {"NotFound", "MethodNotAllowed", "MalformedRequest"}
    assert set(seen) == set(HTTP_STATUS)
    assert all(statuses == {HTTP_STATUS[code]} for code, statuses in seen.items()), seen
    problem = doc["components"]["schemas"]["Problem"]
    assert problem["properties"]["code"]["enum"] == sorted(HTTP_STATUS)
    for code, status in HTTP_STATUS.items():  # and the README's Errors table, generated from the same source
        assert f"| {status} | `{code}` |" in doc["info"]["description"]


def test_each_problem_response_takes_the_gateways_own_problem_bodies() -> None:
    """The examples are real Problem bodies (gateway.wire.problems), and each response's schema accepts them and
    refuses a code of another status."""
    doc = doc_of()
    checked = 0
    for method, path, op in operations(doc):
        for status, response in op["responses"].items():
            content = response.get("content", {}).get("application/problem+json")
            if content is None:
                continue
            validator = schema_validator(doc, content["schema"])
            for code, example in content["examples"].items():
                assert example["value"] == Problem(code, example["value"]["detail"]).body()
                if op["operationId"] == "postBatch" and code == "broker_unavailable":
                    assert not validator.is_valid(example["value"])  # the batch's 503 lists `results` too
                    assert validator.is_valid({**example["value"], "results": []})
                else:
                    validator.validate(example["value"])
                checked += 1
            other = next(c for c, s in HTTP_STATUS.items() if str(s) != status)
            assert not validator.is_valid(Problem(other, "x").body()), (method, path, status, other)
    assert checked >= 30


def test_request_bodies_have_schemas_of_the_message_and_batch() -> None:
    doc = doc_of(limits=Limits(batch_max=200))
    schemas = doc["components"]["schemas"]
    message = schema_validator(doc, schemas["Message"])
    t = "medical.filing.request"
    message.validate({"type": t, "to": "SH", "payload": {}, "correlation_id": "c-1", "schema_version": 1})
    for bad in ({"type": t, "to": "SH"}, {"type": t, "to": "XX", "payload": {}},
                {"type": "no.such.type", "to": "SH", "payload": {}},
                {"type": t, "to": "SH", "payload": {}, "extra": 1},
                {"type": t, "to": "SH", "payload": {}, "correlation_id": "a\nb"},
                {"type": t, "to": "SH", "payload": {}, "correlation_id": "x" * 129}):
        assert not message.is_valid(bad), bad
    assert schemas["Message"]["properties"]["type"]["enum"] == sorted(REGISTRY.types())
    batch = schema_validator(doc, schemas["Batch"])
    item = {"type": t, "to": "SH", "payload": {}}
    assert batch.is_valid({"messages": [item] * 200})
    assert not batch.is_valid({"messages": [item] * 201}) and not batch.is_valid({"messages": []})
    post = doc["paths"]["/v1/messages"]["post"]
    assert [p["name"] for p in post["parameters"]] == ["Idempotency-Key"]
    inbox = {p["name"]: p["schema"] for p in doc["paths"]["/v1/inbox"]["get"]["parameters"]}
    assert inbox["max"]["maximum"] == MAX_PULL and inbox["wait"]["maximum"] == MAX_WAIT_S


def test_security_schemes_cover_the_jwt_routes_and_metrics() -> None:
    doc = doc_of()
    public = {"/healthz", "/readyz", "/openapi.json"}
    for _, path, op in operations(doc):
        if path in public:
            assert op["security"] == []
        elif path == "/metrics":
            assert op["security"] == [{"operatorToken": []}] and "401" in op["responses"]
        else:
            (requirement,) = op["security"]
            assert list(requirement) == ["platformJwt"] and "401" in op["responses"], path
    assert doc["paths"]["/v1/audit/messages/{id}"]["get"]["security"] == [{"platformJwt": ["audit:read"]}]
    assert doc["components"]["securitySchemes"]["platformJwt"]["bearerFormat"] == "JWT"
    assert "urn:yrdx:gateway:JS" in doc["components"]["securitySchemes"]["platformJwt"]["description"]


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[str, int]]:
    runner = make_runner(minimal_context())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", port
    await runner.cleanup()


async def test_openapi_json_is_served_without_a_token_and_no_header_names_versions(served: tuple[str, int]) -> None:
    url, port = served
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/openapi.json") as r:
            assert r.status == 200 and r.content_type == "application/json"
            assert await r.json() == orjson.loads(orjson.dumps(doc_of()))
            assert r.headers["Server"] == "yrdx"
        async with session.get(url + "/no/such/route") as r:  # before authentication
            assert r.status == 404 and r.content_type == "application/problem+json"
            assert (await r.json())["code"] == "not_found" and r.headers["Server"] == "yrdx"
        async with session.delete(url + "/openapi.json") as r:
            assert r.status == 405 and r.headers["Allow"] == "GET, HEAD" and r.headers["Server"] == "yrdx"
    # a request that does not parse never reaches the app: its answer says the same
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.split(" ")[1] == "400" and "\r\nserver: yrdx\r\n" in head + "\r\n"
    assert "python" not in head and "aiohttp" not in head
