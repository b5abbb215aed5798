"""Hostile and broken HTTP against the real gateway processes: every bad input gets its documented 4xx as
problem+json, never a 5xx, a hang or an ERROR traceback in the gateway's log; slow clients are cut off; a refused
upload closes its connection at once; and after all of it a valid message still goes through exactly once.

Raw sockets send what aiohttp's client refuses to (CR/LF in headers, non-UTF-8 bytes, broken framing)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.dev.exchange import platform_id
from gateway.http.api import HEADER_TIMEOUT_S
from gateway.schemas.registry import SchemaRegistry
from tests._util import GatewayProcess, SideExchange, side_exchange, with_use_context
from tests.conftest import Broker, Exchange4

REGISTRY = SchemaRegistry.load()
SENDER, RECEIVER = "JS", "ZJ"  # ZJ delivers by webhook: a bad correlation_id used to crash its delivery
MSG_TYPE = "license.verify.request"
SECRET = "s3cr3t-token-bytes"  # put into malformed headers: must never come back or reach a log
ROUTES = [("POST", "/v1/messages"), ("POST", "/v1/messages/batch"), ("GET", "/v1/messages/0190-x"),
          ("GET", "/v1/inbox"), ("POST", "/v1/inbox/ack"), ("GET", "/v1/audit/messages/0190-x")]


def example() -> dict[str, Any]:
    return copy.deepcopy(REGISTRY.examples(MSG_TYPE)[0])


def message(**extra: Any) -> dict[str, Any]:
    return with_use_context({"type": MSG_TYPE, "to": RECEIVER, "payload": example(), **extra})


def nested(depth: int) -> bytes:
    """JSON arrays `depth` deep (orjson parses 1,024 levels but serializes only 254, so this is spliced in)."""
    return b"[" * depth + b"1" + b"]" * depth


def with_raw(doc: dict[str, Any], **fields: bytes) -> bytes:
    """`doc` serialized, with raw JSON text added for `fields` (repeated keys and deep nesting included)."""
    return orjson.dumps(doc)[:-1] + b"".join(b',"%s":%s' % (k.encode(), v) for k, v in fields.items()) + b"}"


# --- raw HTTP ----------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = orjson.loads(self.body)
        return doc


Header = tuple[str | bytes, str | bytes]


def http(method: str, path: str | bytes, headers: Sequence[Header] = (), body: bytes = b"",
         length: bool = True) -> bytes:
    """One HTTP/1.1 request as bytes, exactly as given (`length`: add Content-Length for the body)."""
    def raw(v: str | bytes) -> bytes:
        return v if isinstance(v, bytes) else v.encode()
    lines = [method.encode() + b" " + raw(path) + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [raw(k) + b": " + raw(v) for k, v in headers]
    if length and body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def read_answer(reader: asyncio.StreamReader, timeout: float = 10.0) -> Answer:
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(status_line.split()[1]), headers, body)


async def send_raw(gw: GatewayProcess, data: bytes) -> Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_answer(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class Ctx:
    """What a bad-input case needs: the sending platform's gateway, fresh tokens, and ways to send."""

    def __init__(self, ex: Exchange4) -> None:
        self.ex = ex
        self.client = ex.clients[SENDER]
        self.gw = self.client.gateway
        self.key = load_pem_private_key(ex.exchange.pki.platform_key(SENDER).read_bytes(), password=None)
        self.metrics_token = (ex.exchange.dir / "secrets" / "metrics.token").read_text().strip()

    def bearer(self) -> str:
        return f"Bearer {self.client.minter.mint()}"

    def signed(self, **over: Any) -> str:
        """A token signed with the platform's real key, with some claims overridden."""
        now = int(time.time())
        claims = {"iss": platform_id(SENDER), "aud": f"urn:yrdx:gateway:{SENDER}", "iat": now, "exp": now + 60,
                  "jti": str(uuid.uuid4()), **over}
        return f"Bearer {jwt.encode(claims, self.key, algorithm='ES256')}"  # type: ignore[arg-type]

    async def raw(self, data: bytes) -> list[Answer]:
        return [await send_raw(self.gw, data)]

    async def post(self, path: str, body: bytes, *headers: Header, authorization: str | None = None) -> list[Answer]:
        """POST with a valid token (or `authorization`) and JSON content type over a raw socket."""
        h: list[Header] = [("Authorization", authorization or self.bearer()), ("Content-Type", "application/json"),
                           *headers]
        return await self.raw(http("POST", path, h, body))

    async def message(self, doc: Any, *headers: Header) -> list[Answer]:
        return await self.post("/v1/messages", orjson.dumps(doc), *headers)

    async def get(self, path: str, *headers: Header) -> list[Answer]:
        return await self.raw(http("GET", path, [("Authorization", self.bearer()), *headers]))


Case = Callable[[Ctx], Awaitable[list[Answer]]]
CASES: dict[str, tuple[Case, int, str]] = {}


def case(name: str, status: int, code: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = (fn, status, code)
        return fn
    return register


# --- credentials: none needed to try these -----------------------------------------------------------------


@case("non_utf8_bearer_on_every_protected_route", 401, "unauthenticated")
async def _(c: Ctx) -> list[Answer]:
    auth = b"Bearer \xff\xfe" + c.client.minter.mint().encode()
    return [await send_raw(c.gw, http(m, p, [("Authorization", auth)], b"{}" if m == "POST" else b""))
            for m, p in ROUTES]


@case("latin1_byte_in_the_metrics_bearer", 401, "unauthenticated")
async def _(c: Ctx) -> list[Answer]:
    return await c.raw(http("GET", "/metrics", [("Authorization", b"Bearer caf\xe9-" + c.metrics_token.encode())]))


@case("two_authorization_headers", 401, "unauthenticated")
async def _(c: Ctx) -> list[Answer]:
    answers = await c.post("/v1/messages", orjson.dumps(message()), ("Authorization", c.bearer()))
    assert "more than one Authorization header" in answers[0].doc()["detail"]
    return answers


@case("two_authorization_headers_on_metrics", 401, "unauthenticated")
async def _(c: Ctx) -> list[Answer]:
    token = f"Bearer {c.metrics_token}"
    return await c.raw(http("GET", "/metrics", [("Authorization", token), ("Authorization", token)]))


@case("signed_token_with_iat_exp_as_numeric_strings", 401, "unauthenticated")
async def _(c: Ctx) -> list[Answer]:
    now = int(time.time())
    return await c.post("/v1/messages", orjson.dumps(message()), authorization=c.signed(iat=str(now),
                                                                                      exp=str(now + 60)))


@case("signed_token_with_exp_not_a_number", 401, "unauthenticated")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", orjson.dumps(message()), authorization=c.signed(exp=[1]))


@case("signed_token_with_a_lone_surrogate_jti", 401, "unauthenticated")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", orjson.dumps(message()), authorization=c.signed(jti="\ud800"))


@case("signed_token_with_a_scope_that_is_not_a_string", 401, "unauthenticated")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", orjson.dumps(message()), authorization=c.signed(scope={"read": [1]}))


@case("token_over_4096_characters", 401, "unauthenticated")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", orjson.dumps(message()), authorization="Bearer " + "a" * 5000)


# --- fields that become headers at the receiver ------------------------------------------------------------


for _name, _value in [("crlf", "conv\r\nX-Injected: 1"), ("lf", "conv\nx"), ("nul", "conv\x00"), ("tab", "a\tb"),
                      ("del", "conv\x7f"), ("c1_nel", "conv\x85"), ("not_a_string", 42), ("empty", ""),
                      ("overlong", "c" * 129)]:
    def _make(value: Any) -> Case:
        async def run(c: Ctx) -> list[Answer]:
            return await c.message(message(correlation_id=value))
        return run
    case(f"correlation_id_{_name}", 400, "invalid_request")(_make(_value))


@case("correlation_id_with_lf_in_a_batch", 207, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages/batch", orjson.dumps({"messages": [message(correlation_id="a\nb")]}))


@case("idempotency_key_with_a_non_utf8_byte", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.message(message(), ("Idempotency-Key", b"key-\xff\xfe"))


@case("idempotency_key_with_a_control_character", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.message(message(), ("Idempotency-Key", b"key-\x01-\x7f"))


@case("two_idempotency_keys", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.message(message(), ("Idempotency-Key", "k1"), ("Idempotency-Key", "k2"))


@case("idempotency_key_over_200_characters", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.message(message(), ("Idempotency-Key", "k" * 201))


# --- deep nesting, odd numbers ----------------------------------------------------------------------------


@case("schema_version_as_1000_nested_arrays", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", with_raw(message(), schema_version=nested(1000)))


@case("expires_at_as_1000_nested_arrays", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", with_raw(message(), expires_at=nested(1000)))


@case("nested_schema_version_in_a_batch", 207, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    items = with_raw(message(), schema_version=nested(1000)) + b"," + with_raw(message(), expires_at=nested(1000))
    return await c.post("/v1/messages/batch", b'{"messages": [' + items + b"]}")


@case("payload_too_deep_to_serialize_with_an_idempotency_key", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    doc = message()
    del doc["payload"]
    return await c.post("/v1/messages", with_raw(doc, payload=nested(300)), ("Idempotency-Key", f"deep-{uuid.uuid4()}"))


@case("payload_too_deep_to_serialize", 400, "schema_violation")
async def _(c: Ctx) -> list[Answer]:
    doc = message()
    del doc["payload"]
    return await c.post("/v1/messages", with_raw(doc, payload=nested(300)))


@case("schema_version_as_a_huge_integer", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", with_raw(message(), schema_version=b"100000000000000000000000000000"))


@case("number_beyond_double_range", 400, "invalid_json")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", with_raw(message(), schema_version=b"1e400"))


# --- bodies ------------------------------------------------------------------------------------------------


@case("malformed_json", 400, "invalid_json")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", b'{"type": "license.verify.request",')


@case("empty_body", 400, "invalid_json")
async def _(c: Ctx) -> list[Answer]:
    return await c.raw(http("POST", "/v1/messages", [("Authorization", c.bearer()), ("Content-Length", "0")]))


@case("json_array_at_top_level", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.message([message()])


@case("invalid_utf8_in_the_body", 400, "invalid_json")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", orjson.dumps(message(correlation_id="X"))
                        .replace(b'"X"', b'"\xff\xfe"'))


@case("lone_surrogate_escape_in_the_body", 400, "invalid_json")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", orjson.dumps(message(correlation_id="X")).replace(b'"X"', b'"\\ud800"'))


@case("nan_literal", 400, "invalid_json")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", with_raw(message(), schema_version=b"NaN"))


@case("duplicate_key_the_last_one_counts", 404, "unknown_region")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", with_raw(message(), to=b'"BJ"'))


@case("unknown_region", 404, "unknown_region")
async def _(c: Ctx) -> list[Answer]:
    return await c.message({**message(), "to": "BJ"})


@case("unknown_field", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.message(message(priority="high"))


@case("unknown_type", 400, "unknown_type")
async def _(c: Ctx) -> list[Answer]:
    return await c.message({**message(), "type": "license.teleport.request"})


@case("batch_without_a_list", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages/batch", orjson.dumps({"messages": message()}))


@case("ack_with_more_than_1000_ids", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/inbox/ack", orjson.dumps({"ids": [str(i) for i in range(1001)]}))


@case("body_over_the_limit", 413, "too_large")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", b"{" + b" " * 300_000 + b"}")


@case("bad_gzip_body", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v1/messages", b"this is not gzip" * 10, ("Content-Encoding", "gzip"))


@case("bad_chunk_size", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    h: list[Header] = [("Authorization", c.bearer()), ("Transfer-Encoding", "chunked")]
    return await c.raw(http("POST", "/v1/messages", h, b"zz\r\n{}\r\n0\r\n\r\n", length=False))


# --- the long poll -----------------------------------------------------------------------------------------


for _query in ["wait=nan", "wait=inf", "wait=-inf", "wait=1e309", "wait=31", "wait=-1", "wait=soon", "max=0",
               "max=1001", "max=1000000000000000000000000000000", "max=1.5", "max=-5", "max=1_0"]:
    def _make_poll(query: str) -> Case:
        async def run(c: Ctx) -> list[Answer]:
            return await c.get(f"/v1/inbox?{query}")
        return run
    case(f"inbox_{_query}", 400, "invalid_request")(_make_poll(_query))


# --- malformed HTTP: aiohttp's parser refuses these --------------------------------------------------------


@case("header_line_without_a_colon", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.raw(http("GET", "/healthz", [("X-Fine", "1")]).replace(b"X-Fine: 1", f"oops {SECRET}".encode()))


@case("content_length_with_transfer_encoding", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    h: list[Header] = [("Authorization", f"Bearer {SECRET}"), ("Content-Length", "2"), ("Transfer-Encoding", "chunked")]
    return await c.raw(http("POST", "/v1/messages", h, b"2\r\n{}\r\n0\r\n\r\n", length=False))


@case("negative_content_length", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    h: list[Header] = [("Authorization", f"Bearer {SECRET}"), ("Content-Length", "-5")]
    return await c.raw(http("POST", "/v1/messages", h, b"{}", length=False))


@case("header_line_over_8k", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.raw(http("GET", "/v1/inbox", [("Authorization", "Bearer " + SECRET * 600)]))


@case("garbage_request_line", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.raw(f"HELLO {SECRET} WORLD\r\n\r\n".encode())


@case("crlf_injection_into_a_header", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.raw(http("GET", "/healthz", [("X-A", f"1\rX-B: {SECRET}")]))


@case("odd_bytes_in_a_message_id", 404, "not_found")
async def _(c: Ctx) -> list[Answer]:
    paths = [p + i for p in ("/v1/messages/", "/v1/audit/messages/") for i in ("%FF%00x", "%ED%A0%80", "x" * 4000)]
    return [await send_raw(c.gw, http("GET", p, [("Authorization", f"Bearer {c.client.auditor.mint()}")]))
            for p in paths]


@case("raw_non_utf8_byte_in_the_path", 400, "invalid_request")
async def _(c: Ctx) -> list[Answer]:
    return await c.raw(http("GET", b"/v1/messages/\xff\xfe", [("Authorization", c.bearer())]))


# --- routing -----------------------------------------------------------------------------------------------


@case("unknown_route", 404, "not_found")
async def _(c: Ctx) -> list[Answer]:
    return await c.raw(http("GET", "/v1/nowhere"))


@case("unknown_route_with_a_body_and_token", 404, "not_found")
async def _(c: Ctx) -> list[Answer]:
    return await c.post("/v2/messages", orjson.dumps(message()))


@case("wrong_method", 405, "method_not_allowed")
async def _(c: Ctx) -> list[Answer]:
    answers = await c.raw(http("DELETE", "/v1/messages", [("Authorization", c.bearer())]))
    assert "POST" in answers[0].headers["allow"]
    return answers


# --- the checks every case shares --------------------------------------------------------------------------


class LogWatch:
    """The bytes gateways append to their logs while a test runs."""

    def __init__(self, gateways: Sequence[GatewayProcess]) -> None:
        self._at = {g.log_path: g.log_path.stat().st_size for g in gateways}

    def new(self) -> bytes:
        out = b""
        for path, at in self._at.items():
            with path.open("rb") as f:
                f.seek(at)
                out += f.read()
        return out

    def assert_clean(self) -> None:
        assert_clean_log(self.new())


def assert_clean_log(text: bytes) -> None:
    """No traceback, no secret, no error line (except the Kafka client's own, e.g. a partition leader moving
    while topics are created: nothing an HTTP request causes)."""
    assert b"Traceback" not in text and SECRET.encode() not in text, text.decode(errors="replace")[-3000:]
    for line in text.splitlines():
        if line.startswith(b"{"):
            doc = orjson.loads(line)
            assert doc["level"] not in ("error", "critical") or doc["logger"].startswith("aiokafka"), doc


@contextlib.contextmanager
def clean_logs(ex: Exchange4) -> Iterator[LogWatch]:
    watch = LogWatch([ex.gateways[SENDER], ex.gateways[RECEIVER]])
    yield watch
    watch.assert_clean()


def check(answer: Answer, status: int, code: str) -> None:
    assert answer.status < 500, answer
    if status == 207:  # a batch: each message answered on its own
        assert answer.status == 207 and answer.headers["content-type"].startswith("application/json"), answer
        results = answer.doc()["results"]
        assert results and all(r["status"] == 400 and r["code"] == code for r in results), results
        return
    assert answer.headers["content-type"].startswith("application/problem+json"), answer
    doc = answer.doc()
    assert (answer.status, doc["code"], doc["status"]) == (status, code, status), doc
    assert SECRET not in doc["detail"]


@pytest.mark.parametrize("name", list(CASES))
async def test_bad_input_gets_its_documented_problem(exchange: Exchange4, name: str) -> None:
    fn, status, code = CASES[name]
    with clean_logs(exchange):
        answers = await fn(Ctx(exchange))
        await asyncio.sleep(0.05)  # a delayed failure (a receiver's delivery) would log by now
        for a in answers:
            check(a, status, code)


async def test_a_body_cut_off_by_the_client_leaves_no_traceback(exchange: Exchange4) -> None:
    ctx = Ctx(exchange)
    with clean_logs(exchange):
        reader, writer = await asyncio.open_connection("127.0.0.1", ctx.gw.port)
        writer.write(http("POST", "/v1/messages", [("Authorization", ctx.bearer()), ("Content-Length", "1000")],
                          b'{"type":', length=False))
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        await asyncio.sleep(0.3)
        status, _ = await exchange.clients[SENDER].get("/v1/inbox?max=1")
        assert status == 200


def count_pulled(got: list[dict[str, Any]], msg_id: str) -> int:
    return [m["id"] for m in got].count(msg_id)


async def test_a_closed_long_poll_leases_nothing(exchange: Exchange4) -> None:
    """A long poll whose client went away stops at once: it does not lease what arrives later (for 60 s, to
    nobody) and does not hold up a shutdown."""
    ctx = Ctx(exchange)
    reader, writer = await asyncio.open_connection("127.0.0.1", ctx.gw.port)
    writer.write(http("GET", "/v1/inbox?max=1000&wait=30", [("Authorization", ctx.bearer())]))
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    await asyncio.sleep(0.3)
    status, doc = await exchange.clients["ZJ"].send("license.verify.result", SENDER,
                                                    REGISTRY.examples("license.verify.result")[0])
    assert status == 202, doc
    deadline = time.monotonic() + 20
    got: list[dict[str, Any]] = []
    while count_pulled(got, doc["id"]) == 0:  # leased to the closed poll, it would not come back for 60 s
        assert time.monotonic() < deadline, "the message was leased to a long poll whose client had gone"
        got += await exchange.clients[SENDER].pull(wait=0.5)


async def test_slow_header_clients_are_cut_off(exchange: Exchange4) -> None:
    """200 connections that send a header byte a second are closed after HEADER_TIMEOUT_S, while the gateway
    keeps answering everyone else."""
    gw = exchange.gateways[SENDER]
    started = time.monotonic()

    async def dribble() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            while time.monotonic() - started < HEADER_TIMEOUT_S + 10:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await reader.read(1)  # b"" once the gateway closed the connection
                        return time.monotonic() - started
                writer.write(b"a")
                await writer.drain()
            return float("inf")
        except ConnectionError:
            return time.monotonic() - started
        finally:
            writer.close()

    with clean_logs(exchange):
        slow = [asyncio.create_task(dribble()) for _ in range(200)]
        await asyncio.sleep(2.0)
        status, _ = await exchange.clients[SENDER].get("/v1/inbox?max=1")
        assert status == 200
        closed_after = await asyncio.gather(*slow)
    assert max(closed_after) < HEADER_TIMEOUT_S + 3, sorted(closed_after)[-5:]
    assert min(closed_after) > HEADER_TIMEOUT_S - 1, sorted(closed_after)[:5]


async def upload_refused(gw: GatewayProcess, authorization: str, chunked: bool) -> tuple[Answer, float]:
    """Start a 20 MiB upload to /v1/messages and keep sending; return the answer and how long after it the
    gateway closed the connection."""
    size = 20 * 1024 * 1024
    framing: Header = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(size))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    block = b"x" * 65536
    chunk = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block

    async def keep_sending() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(size // len(block)):
                writer.write(chunk)
                await writer.drain()

    writer.write(http("POST", "/v1/messages", [("Authorization", authorization),
                                               ("Content-Type", "application/json"), framing], length=False))
    sending = asyncio.create_task(keep_sending())
    try:
        answer = await read_answer(reader)
        answered = time.monotonic()
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(15):
                while await reader.read(65536):
                    pass
        return answer, time.monotonic() - answered
    finally:
        sending.cancel()
        writer.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
async def test_a_refused_upload_closes_the_connection_at_once(exchange: Exchange4, chunked: bool) -> None:
    ctx = Ctx(exchange)
    with clean_logs(exchange):
        answer, closed_after = await upload_refused(ctx.gw, ctx.bearer(), chunked)
    check(answer, 413, "too_large")
    assert answer.headers["connection"].lower() == "close"
    assert closed_after < 2.0, f"the gateway drained the refused body for {closed_after:.1f} s"


async def test_a_valid_message_after_all_the_bad_inputs_is_delivered_once(exchange: Exchange4) -> None:
    client = exchange.clients[SENDER]
    with clean_logs(exchange):
        key = {"Idempotency-Key": f"after-bad-{uuid.uuid4()}"}
        status, doc = await client.send(MSG_TYPE, RECEIVER, example(), headers=key, correlation_id="会话-ok-1")
        assert status == 202, doc
        await exchange.sink.wait_for(RECEIVER, doc["id"])
        assert (await client.wait_status(doc["id"], "delivered"))["status"] == "delivered"
        await asyncio.sleep(0.5)
    delivered = [d for d in exchange.sink.received[RECEIVER] if d["id"] == doc["id"]]
    assert len(delivered) == 1
    assert delivered[0]["envelope"]["correlation_id"] == "会话-ok-1"


# --- shutdown: a gateway of its own, beside the session's exchange -----------------------------------------


@pytest_asyncio.fixture
async def own_gateway(kafka: Broker, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SideExchange]:
    root: Path = tmp_path_factory.mktemp("hardening")
    async with side_exchange(kafka.bootstrap_servers, root, f"hard-{uuid.uuid4().hex[:8]}", ["JS"]) as side:
        yield side


async def test_sigterm_is_prompt_after_a_refused_upload_and_during_a_long_poll(own_gateway: SideExchange) -> None:
    client = own_gateway.clients["JS"]
    gw = client.gateway
    answer, _ = await upload_refused(gw, f"Bearer {client.minter.mint()}", chunked=False)
    assert answer.status == 413
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(http("GET", "/v1/inbox?wait=30", [("Authorization", f"Bearer {client.minter.mint()}")]))
    await writer.drain()
    await asyncio.sleep(0.5)
    assert gw.proc is not None
    started = time.monotonic()
    gw.proc.terminate()
    poll = await read_answer(reader, timeout=10)  # the long poll answers (empty) instead of waiting 30 s
    assert poll.status == 200 and orjson.loads(poll.body) == {"messages": []}
    await asyncio.to_thread(gw.proc.wait, 20)
    writer.close()
    assert gw.proc.returncode == 0
    assert time.monotonic() - started < 6.0, "SIGTERM waited for a refused upload or a long poll"
    assert_clean_log(gw.log_path.read_bytes())
