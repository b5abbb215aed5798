"""Hostile records written straight to an inbox topic (no signature needed to write one): each ends in exactly
one decided outcome, a dead letter with the documented reason, and the valid messages interleaved with them on
the same partition are each delivered exactly once. No record restarts the egress loop or logs a traceback."""

from __future__ import annotations

import base64
import copy
import hashlib
import time
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.crypto.jws import Signer, b64url_encode
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.dev.pki import issue_gateway_cert
from gateway.schemas.registry import SchemaRegistry
from gateway.wire import envelope, headers
from gateway.wire.regions import dlq_topic, inbox_topic
from tests._util import envelope_use_context, produce_undecodable
from tests.conftest import Broker, Exchange4

REGISTRY = SchemaRegistry.load()
RECEIVER = "SH"  # webhook delivery: the receiving HTTP client is where a bad header used to crash egress
KEY = b"poison-partition"  # every record of this file on one partition, with the valid messages between them
TYPE = "license.verify.request"


def example() -> dict[str, Any]:
    return copy.deepcopy(REGISTRY.examples(TYPE)[0])


def signed_envelope(**over: Any) -> bytes:
    doc = orjson.loads(envelope.build(msg_type=TYPE, schema_version=1, sender="JS", recipient=RECEIVER,
                                      payload=example(), **envelope_use_context(TYPE))[1])
    doc.update(over)
    return orjson.dumps(doc)


def es256_jws(header: dict[str, Any], content: bytes, key: ec.EllipticCurvePrivateKey) -> str:
    """A detached ES256 JWS with exactly this protected header (for headers no honest signer writes)."""
    prefix = b64url_encode(orjson.dumps(header))
    signing_input = f"{prefix}.{b64url_encode(content)}".encode()
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return f"{prefix}..{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class Case:
    def __init__(self, name: str, reason: str, value: bytes | None, hdrs: list[tuple[str, bytes | None]]) -> None:
        self.name, self.reason, self.value, self.headers = name, reason, value, hdrs
        self.source = ""


def cases(ex: Exchange4) -> list[Case]:
    pki = ex.exchange.pki
    js = Signer(load_private_key(pki.gateway_key("JS")), load_certificate(pki.gateway_cert("JS")))
    js_key = load_private_key(pki.gateway_key("JS"))
    assert isinstance(js_key, ec.EllipticCurvePrivateKey)
    raw = signed_envelope()
    sig = js.sign(raw).encode()
    base = {"alg": "ES256", "kid": js.kid, "x5t#S256": js.thumbprint}

    def signed(value: bytes) -> list[tuple[str, bytes | None]]:
        return [(headers.SIGNATURE, js.sign(value).encode())]

    # A certificate of the real root whose subject no longer parses: a byte of its CN made invalid UTF-8.
    cert, key = issue_gateway_cert(load_certificate(pki.ca_cert), load_private_key(pki.ca_key), "JS")
    der = cert.public_bytes(serialization.Encoding.DER)
    cn = der.index(b"yrdx gateway JS")
    broken = der[:cn] + b"\xff\xfe" + der[cn + 2:]
    broken_thumb = b64url_encode(hashlib.sha256(broken).digest())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    x5c_header = {"alg": "ES256", "kid": "broken", "x5t#S256": broken_thumb,
                  "x5c": [base64.b64encode(broken).decode()]}
    tree_list = {**base, "yrdx-tree": {"hash": ["SHA-256"], "size": 2}}
    tree_ok = {**base, "yrdx-tree": {"hash": "SHA-256", "size": 2}}
    path = b64url_encode(b"\x00" * 32)
    deep = b"[" * 100_000 + b"]" * 100_000
    return [
        Case("a null value (tombstone)", "invalid_record", None, []),
        Case("a null signature header", "invalid_record", raw, [(headers.SIGNATURE, None)]),
        Case("a null yrdx-replay-of header", "invalid_record", raw, [(headers.SIGNATURE, sig),
                                                                    (headers.REPLAY_OF, None)]),
        Case("two signature headers", "invalid_record", raw, [(headers.SIGNATURE, sig), (headers.SIGNATURE, sig)]),
        # Their dead-letter copies would exceed the producer's request size: stored truncated, with size and hash.
        Case("a value of about 1 MB", "invalid_envelope", b'{"x": "' + b"a" * 1_040_000 + b'"}', []),
        Case("a signature header of about 1 MB", "bad_signature", raw, [(headers.SIGNATURE, b"e" * 1_040_000)]),
        Case("no signature header", "bad_signature", raw, []),
        Case("a signature header that is not ASCII", "bad_signature", raw, [(headers.SIGNATURE, b"\xff\xfe..\xff")]),
        Case("a JWS with alg none", "bad_signature", raw,
             [(headers.SIGNATURE, f"{b64url_encode(orjson.dumps({**base, 'alg': 'none'}))}..".encode())]),
        Case("a leaf index of 5,000 digits", "bad_signature", raw,
             [(headers.SIGNATURE, f"{es256_jws(tree_ok, b'r' * 32, js_key)}~{'7' * 5000}~{path}".encode())]),
        Case("a tree hash that is a list", "bad_signature", raw,
             [(headers.SIGNATURE, f"{es256_jws(tree_list, b'r' * 32, js_key)}~1~{path}".encode())]),
        Case("a JS signature over other bytes", "bad_signature", raw, signed(signed_envelope())),
        Case("an x5c certificate whose subject does not parse", "untrusted_signer", raw,
             [(headers.SIGNATURE, es256_jws(x5c_header, raw, key).encode())]),
        Case("an x5c that is not a certificate", "untrusted_signer", raw,
             [(headers.SIGNATURE, es256_jws({**base, "x5t#S256": "A" * 43, "x5c": ["bm90IGEgY2VydA=="]}, raw,
                                            js_key).encode())]),
        Case("bytes that are not JSON", "invalid_envelope", b"\x00\x01not json", signed(b"\x00\x01not json")),
        Case("JSON nested 100,000 deep", "invalid_envelope", deep, []),
        Case("a correlation_id with CR LF, signed by JS", "invalid_envelope",
             v := signed_envelope(correlation_id="a\r\nX-Injected: yes"), signed(v)),
        Case("a correlation_id with NUL, signed by JS", "invalid_envelope",
             v2 := signed_envelope(correlation_id="nul\x00byte"), signed(v2)),
        Case("a message id of 10,000 characters", "invalid_envelope",
             v3 := signed_envelope(id="i" * 10_000), signed(v3)),
        Case("schema_version as nested arrays", "invalid_envelope",
             v4 := signed_envelope(schema_version="@").replace(b'"@"', b"[" * 1000 + b"]" * 1000), signed(v4)),
        Case("sealed that is not a string", "invalid_envelope",
             v5 := orjson.dumps({**orjson.loads(signed_envelope()), "sealed": {"a": 1}}), signed(v5)),
    ]




@pytest_asyncio.fixture(scope="module")
async def producer(kafka: Broker) -> Any:
    p = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, max_request_size=4 * 1024 * 1024)
    await p.start()
    yield p
    await p.stop()


async def dead_letters_by_source(kafka: Broker, sources: set[str], timeout: float = 60.0) -> dict[str, dict[str, str]]:
    consumer = AIOKafkaConsumer(dlq_topic(RECEIVER), bootstrap_servers=kafka.bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_bytes=8 << 20)
    await consumer.start()
    found: dict[str, dict[str, str]] = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not sources <= set(found):
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    h = {k: v.decode(errors="replace") for k, v in m.headers}
                    if h.get(headers.DLQ_SOURCE) in sources:
                        found[h[headers.DLQ_SOURCE]] = h
        return found
    finally:
        await consumer.stop()


async def metric(ex: Exchange4, region: str, name: str) -> float:
    token = (ex.exchange.dir / "secrets" / "metrics.token").read_text().strip()
    client = ex.clients[region]
    async with client.session.get(client.gateway.url + "/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
        text = await r.text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture(scope="module")
def log_start(exchange: Exchange4) -> int:
    return exchange.gateways[RECEIVER].log_path.stat().st_size


async def test_hostile_inbox_records_are_dead_lettered_and_valid_traffic_is_delivered_once(
        exchange: Exchange4, kafka: Broker, producer: AIOKafkaProducer, log_start: int) -> None:
    restarts_before = await metric(exchange, RECEIVER, "yrdx_egress_restarts_total")
    client = exchange.clients["JS"]
    topic = inbox_topic(RECEIVER)
    valid: list[str] = []

    async def send_valid() -> None:
        status, doc = await client.send(TYPE, RECEIVER, example(), correlation_id=KEY.decode())
        assert status == 202, doc
        valid.append(doc["id"])

    all_cases = cases(exchange)
    await send_valid()
    for case in all_cases:
        meta = await producer.send_and_wait(topic, case.value, key=KEY, headers=case.headers)  # type: ignore[arg-type]
        case.source = f"{topic}:{meta.partition}:{meta.offset}"
        await send_valid()
    # A header key that is not UTF-8: aiokafka (ours, with its C extension) raises inside its fetch for it.
    partition, offset = await produce_undecodable(kafka.bootstrap_servers, topic, KEY)
    undecodable = Case("a header key that is not UTF-8", "invalid_record", b"{}", [])
    undecodable.source = f"{topic}:{partition}:{offset}"
    all_cases.append(undecodable)
    await send_valid()

    letters = await dead_letters_by_source(kafka, {c.source for c in all_cases})
    outcome = {c.name: letters.get(c.source, {}).get(headers.DLQ_REASON) for c in all_cases}
    assert outcome == {c.name: c.reason for c in all_cases}
    assert len({c.source for c in all_cases}) == len(all_cases) >= 20
    for msg_id in valid:  # each valid message: delivered once, and its receipt reached the origin
        await exchange.sink.wait_for(RECEIVER, msg_id)
        assert (await client.wait_status(msg_id, "delivered"))["status"] == "delivered"
    delivered = exchange.sink.ids(RECEIVER)
    assert all(delivered.count(i) == 1 for i in valid)
    for big in all_cases[4:6]:
        letter = letters[big.source]
        assert letter[headers.DLQ_TRUNCATED] == "true" and int(letter[headers.DLQ_ORIGINAL_SIZE]) > 1_000_000
    assert await metric(exchange, RECEIVER, "yrdx_egress_restarts_total") == restarts_before
    log = exchange.gateways[RECEIVER].log_path.read_bytes()[log_start:]
    assert b"Traceback" not in log and b'"level":"error"' not in log
    status, ready = await readyz(exchange)
    assert status == 200 and ready["checks"]["egress_progress"] is True


async def readyz(ex: Exchange4) -> tuple[int, dict[str, Any]]:
    client = ex.clients[RECEIVER]
    async with client.session.get(client.gateway.url + "/readyz") as r:
        return r.status, orjson.loads(await r.read())

