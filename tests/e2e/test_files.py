"""Files that travel (claim checks) on the real broker, between real gateway processes JS -> SH: a 100 MiB file
streamed in sealed chunks with both gateways' memory bounded and its digest checked at the receiver and by the
platform; a flipped byte in one chunk dead-letters the file and the message referencing it, with nothing
delivered; a message whose file is still arriving is parked while the rest of its partition is delivered, and
dead-lettered `file_incomplete` after files.wait_s when its file never completes; no byte of a file travels in
clear on any topic, and the file's audit trail says where it went; the routes' refusals; and a file in the
national suite (SM3 digest, SM4-GCM chunks)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import yaml
from aiokafka.partitioner import murmur2

from gateway.config import load_config
from gateway.crypto.jws import Signer
from gateway.crypto.keyfiles import load_certificate, load_encryption_pub, load_private_key
from gateway.crypto.seal import Sealer
from gateway.dev.exchange import Exchange
from gateway.files.chunks import new_digest
from gateway.files.sender import FileSender
from gateway.kafka.port import OutRecord
from gateway.kafka.reader import read_topic
from gateway.kafka.transport import KafkaPublisher
from gateway.schemas.registry import SchemaRegistry
from gateway.wire import headers
from tests._util import PlatformClient, SideExchange, pull_until, side_exchange
from tests.conftest import Broker

CLAIM_TYPE = "yrdx.claim_check"
ID_NUMBER = b"320506199007181520"  # DOMAIN.md section 9: the synthetic JS resident
MIB = 1024 * 1024
WAIT_S = 20  # files.wait_s of both gateways here
FILE_BYTES = 100 * MIB
# The documented bound (README "Files (claim checks)"): relaying a 100 MiB file raises neither gateway's peak
# RSS by more than this over its RSS before the upload, i.e. neither ever holds more than a fraction of the file.
RSS_GROWTH_BOUND = 64 * MIB


def accept_claim_checks(ex: Exchange) -> None:
    """JS's platform may send yrdx.claim_check, SH accepts it from JS and its platform receives it."""
    for region in ("JS", "SH"):
        path = ex.config_path(region)
        doc = yaml.safe_load(path.read_text())
        doc["platforms"][0]["may_send"].append(CLAIM_TYPE)
        doc["platforms"][0]["receives"].append(CLAIM_TYPE)
        doc["accept"]["JS" if region == "SH" else "SH"].append(CLAIM_TYPE)
        doc["files"] = {"wait_s": WAIT_S}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest_asyncio.fixture(scope="module")
async def files_exchange(kafka: Broker, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SideExchange]:
    async with side_exchange(kafka.bootstrap_servers, tmp_path_factory.mktemp("files-exchange"),
                             f"files-{uuid.uuid4().hex[:8]}", ("JS", "SH"), edit=accept_claim_checks) as ex:
        yield ex


def memory_of(client: PlatformClient) -> dict[str, int]:
    """The gateway process's current and peak resident set (bytes), from /proc."""
    assert client.gateway.proc is not None
    status = Path(f"/proc/{client.gateway.proc.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


def write_material(path: Path, size: int) -> str:
    """A file holding the synthetic ID number in clear, every MiB, with random bytes between; its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // MIB):
            block = ID_NUMBER + os.urandom(MIB - len(ID_NUMBER))
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


async def upload(client: PlatformClient, file: Path | bytes, to: str = "SH",
                 media_type: str = "application/pdf") -> tuple[int, dict[str, Any]]:
    """POST /v1/files of a file on disk (streamed: the test holds none of it either) or of a few bytes."""
    with contextlib.ExitStack() as stack:
        data = file if isinstance(file, bytes) else stack.enter_context(file.open("rb"))
        async with client.session.post(f"{client.gateway.url}/v1/files?to={to}", data=data,
                                       headers={"Content-Type": media_type, **client.minter.header()}) as r:
            return r.status, orjson.loads(await r.read())


async def download(client: PlatformClient, file_id: str) -> tuple[int, dict[str, str], str, int]:
    """Status, headers, SHA-256 and size of the file as the platform downloads it (streamed)."""
    digest, size = hashlib.sha256(), 0
    async with client.session.get(f"{client.gateway.url}/v1/files/{file_id}", headers=client.minter.header()) as r:
        async for part in r.content.iter_chunked(MIB):
            digest.update(part)
            size += len(part)
        return r.status, dict(r.headers), digest.hexdigest(), size


async def dead_letters(kafka: Broker, topic: str) -> dict[str, str]:
    return {r.key.decode(): r.headers[headers.DLQ_REASON].decode()
            for r in await read_topic(kafka.bootstrap_servers, topic, 60.0) if r.key}


async def wait_dead_letter(kafka: Broker, topic: str, key: str, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while key not in (found := await dead_letters(kafka, topic)):
        assert time.monotonic() < deadline, f"{key} never dead-lettered on {topic}"
        await asyncio.sleep(0.5)
    return found[key]


@pytest.mark.timeout(900)
async def test_a_100_mib_file_is_relayed_with_bounded_memory_and_its_digest_checked(
        files_exchange: SideExchange, tmp_path: Path) -> None:
    js, sh = files_exchange.clients["JS"], files_exchange.clients["SH"]
    path = tmp_path / "licence.pdf"
    sha256 = await asyncio.to_thread(write_material, path, FILE_BYTES)
    before = {"JS": memory_of(js), "SH": memory_of(sh)}
    started = time.monotonic()
    status, claim = await upload(js, path)
    uploaded_s = time.monotonic() - started
    assert status == 201, claim
    assert claim["digest"] == {"alg": "SHA-256", "value": sha256} and claim["size"] == FILE_BYTES
    assert claim["media_type"] == "application/pdf"
    status, sent = await js.send(CLAIM_TYPE, "SH", claim)
    assert status == 202, sent
    pulled = [m for m in await pull_until(sh, sent["id"], timeout=300) if m["id"] == sent["id"]]
    delivered_s = time.monotonic() - started
    assert pulled[0]["envelope"]["payload"] == claim
    status, got_headers, got_sha256, got_size = await download(sh, claim["file_id"])
    assert status == 200 and got_size == FILE_BYTES and got_sha256 == sha256
    assert got_headers[headers.FILE_DIGEST] == f"SHA-256={sha256}"
    after = {"JS": memory_of(js), "SH": memory_of(sh)}
    growth = {r: after[r]["VmHWM"] - before[r]["VmRSS"] for r in before}
    print(f"\n100 MiB JS -> SH: upload (sealed, published, acknowledged) {uploaded_s:.1f} s "
          f"({FILE_BYTES / MIB / uploaded_s:.0f} MiB/s), referencing message delivered after {delivered_s:.1f} s; "
          + "; ".join(f"{r} RSS {before[r]['VmRSS'] / MIB:.0f} MiB before, peak {after[r]['VmHWM'] / MIB:.0f} MiB "
                      f"(+{growth[r] / MIB:.0f} MiB)" for r in before))
    assert all(g < RSS_GROWTH_BOUND for g in growth.values()), growth
    assert (await js.wait_status(sent["id"], "delivered"))["status"] == "delivered"


def body_reader(data: bytes) -> Callable[[int], Awaitable[bytes]]:
    """`data` read as the HTTP body is: at most n bytes a call, b"" at the end."""
    offset = 0

    async def read(n: int) -> bytes:
        nonlocal offset
        piece = data[offset:offset + n]
        offset += len(piece)
        return piece

    return read


class FlipOneChunk:
    """A publisher that flips one byte of chunk 1 on its way to Kafka, as damage (or tampering) on the path."""

    def __init__(self, publisher: KafkaPublisher) -> None:
        self._publisher = publisher

    async def publish(self, records: Sequence[OutRecord]) -> None:
        out = []
        for r in records:
            if dict(r.headers).get(headers.FILE_CHUNK) == b"1":
                damaged = bytearray(r.value)
                damaged[4242] ^= 0x01
                r = OutRecord(r.topic, bytes(damaged), r.key, r.headers)
            out.append(r)
        await self._publisher.publish(out)


async def test_a_flipped_byte_in_one_chunk_dead_letters_the_file_and_its_message(
        files_exchange: SideExchange, kafka: Broker) -> None:
    ex, topics = files_exchange.exchange, files_exchange.topics
    js_cfg = load_config(ex.config_path("JS"))
    signer = Signer(load_private_key(ex.pki.gateway_key("JS")), load_certificate(ex.pki.gateway_cert("JS")))
    sealer = Sealer.for_key(load_encryption_pub(js_cfg.encryption_keys["SH"]), kid="SH")
    publisher = KafkaPublisher(js_cfg.kafka, 30.0)
    await publisher.start()
    try:  # JS's own sender code and keys, with the damage between it and the broker
        sender = FileSender("JS", topics, signer, FlipOneChunk(publisher), {"SH": sealer}, 8 * MIB)
        manifest = await sender.send("SH", "application/ofd", body_reader((ID_NUMBER + os.urandom(3 * MIB))[:3 * MIB]))
    finally:
        await publisher.stop()
    js, sh = files_exchange.clients["JS"], files_exchange.clients["SH"]
    status, sent = await js.send(CLAIM_TYPE, "SH", manifest.claim_check())
    assert status == 202, sent
    dlq = topics.dlq("SH")
    assert await wait_dead_letter(kafka, dlq, manifest.file_id) == "file_corrupt"
    assert await wait_dead_letter(kafka, dlq, sent["id"]) == "file_corrupt"
    final = await js.wait_status(sent["id"], "rejected", timeout=60)
    assert final["status"] == "rejected" and final["receipt"]["reason"] == "file_corrupt"
    assert sent["id"] not in {m["id"] for m in await sh.pull(wait=1.0)}
    status, got_headers, _, _ = await download(sh, manifest.file_id)
    assert status == 404


class HoldManifests:
    """A publisher that sends a file's chunks but keeps its manifest back until `release`: a file still arriving."""

    def __init__(self, publisher: KafkaPublisher) -> None:
        self._publisher = publisher
        self.held: dict[bytes, list[OutRecord]] = {}

    async def publish(self, records: Sequence[OutRecord]) -> None:
        chunks = [r for r in records if headers.FILE_CHUNK in dict(r.headers)]
        for r in records:
            if headers.FILE_CHUNK not in dict(r.headers):
                self.held.setdefault(r.key or b"", []).append(r)
        await self._publisher.publish(chunks)

    async def release(self, file_id: str) -> None:
        await self._publisher.publish(self.held.pop(file_id.encode()))


def keys_on_one_partition(partitions: int, n: int) -> list[str]:
    """n correlation ids (the inbox records' keys) that Kafka's default partitioner puts on one partition."""
    def partition(key: str) -> int:
        return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions

    run = uuid.uuid4().hex[:8]
    candidates = (f"park-{run}-{i}" for i in range(10_000))
    first = next(candidates)
    return [first, *[k for k in candidates if partition(k) == partition(first)][:n - 1]]


async def stages_at(client: PlatformClient, msg_id: str, region: str, wanted: str) -> list[dict[str, Any]]:
    """The region's audit records of the message once `wanted` is among them."""
    deadline = time.monotonic() + 60
    while True:
        status, trace = await client.get(f"/v1/audit/messages/{msg_id}", auditor=True)
        records = [r for r in trace.get("records", []) if r["region"] == region]
        if wanted in {r["stage"] for r in records} or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.5)


@pytest.mark.timeout(300)
async def test_a_message_waiting_for_its_file_holds_up_nothing_and_one_whose_file_never_completes_is_dead_lettered(
        files_exchange: SideExchange, kafka: Broker) -> None:
    ex, topics = files_exchange.exchange, files_exchange.topics
    js, sh = files_exchange.clients["JS"], files_exchange.clients["SH"]
    js_cfg = load_config(ex.config_path("JS"))
    signer = Signer(load_private_key(ex.pki.gateway_key("JS")), load_certificate(ex.pki.gateway_cert("JS")))
    sealer = Sealer.for_key(load_encryption_pub(js_cfg.encryption_keys["SH"]), kid="SH")
    publisher = KafkaPublisher(js_cfg.kafka, 30.0)
    await publisher.start()
    held = HoldManifests(publisher)
    try:  # JS's own sender code and keys; the manifests wait in the test
        sender = FileSender("JS", topics, signer, held, {"SH": sealer}, 8 * MIB)
        arriving = await sender.send("SH", "application/pdf", body_reader(b"%PDF-1.7 licence " * 40_000))
        never = await sender.send("SH", "application/pdf", body_reader(b"%PDF-1.7 materials " * 1000))
        keys = keys_on_one_partition(load_config(ex.config_path("SH")).kafka.inbox_partitions, 6)
        started = time.monotonic()
        sent = []
        for claim, key in ((arriving.claim_check(), keys[0]), (never.claim_check(), keys[1])):
            status, doc = await js.send(CLAIM_TYPE, "SH", claim, correlation_id=key)
            assert status == 202, doc
            sent.append(doc["id"])
        waiting, lost = sent
        example = SchemaRegistry.load().examples("identity.verify.request")[0]
        others = []
        for key in keys[2:]:  # after the two on the same partition, each a conversation of its own
            status, doc = await js.send("identity.verify.request", "SH", example, correlation_id=key)
            assert status == 202, doc
            others.append(doc["id"])
        pulled = set()
        while not set(others) <= pulled:
            pulled |= {m["id"] for m in await pull_until(sh, others[-1], timeout=60)}
        assert not {waiting, lost} & pulled
        others_s = time.monotonic() - started
        await held.release(arriving.file_id)  # its file completes: the parked message is delivered
        pulled_later = await pull_until(sh, waiting, timeout=60)
        delivered_s = time.monotonic() - started
        assert [m["envelope"]["payload"] for m in pulled_later if m["id"] == waiting] == [arriving.claim_check()]
        assert lost not in {m["id"] for m in pulled_later}
        assert (await download(sh, arriving.file_id))[0] == 200
        while time.monotonic() - started < 12:  # past 10 s of waiting, the consumer is not held: ready
            await asyncio.sleep(0.5)
        async with sh.session.get(sh.gateway.url + "/readyz") as r:
            assert r.status == 200, await r.text()
        assert await wait_dead_letter(kafka, topics.dlq("SH"), lost) == "file_incomplete"
        dead_s = time.monotonic() - started
        assert dead_s >= WAIT_S
        final = await js.wait_status(lost, "rejected", timeout=60)
        assert final["status"] == "rejected" and final["receipt"]["reason"] == "file_incomplete"
        assert lost not in {m["id"] for m in await sh.pull(wait=1.0)}
        assert (await download(sh, never.file_id))[0] == 404
    finally:
        await publisher.stop()
    trail = [(r["stage"], r["detail"].get("reason")) for r in await stages_at(sh, waiting, "SH", "delivered")]
    assert trail[:2] == [("received", None), ("parked", "awaiting_file")], trail
    assert ("unparked", "files_decided") in trail and trail[-1][0] in ("delivered", "receipt_sent"), trail
    trail = [(r["stage"], r["detail"].get("reason")) for r in await stages_at(sh, lost, "SH", "dead_lettered")]
    assert ("unparked", "wait_s_passed") in trail and ("rejected", "file_incomplete") in trail, trail
    print(f"\nparked JS -> SH: 4 later messages of the partition delivered after {others_s:.1f} s, the parked one "
          f"{delivered_s:.1f} s after sending (its file released at {others_s:.1f} s), the one whose file never "
          f"completed dead-lettered after {dead_s:.1f} s (files.wait_s {WAIT_S})")


async def test_no_byte_of_a_file_travels_in_clear_on_any_topic(files_exchange: SideExchange, kafka: Broker,
                                                               tmp_path: Path) -> None:
    js, sh = files_exchange.clients["JS"], files_exchange.clients["SH"]
    path = tmp_path / "materials.pdf"
    await asyncio.to_thread(write_material, path, 2 * MIB)
    status, claim = await upload(js, path)
    assert status == 201, claim
    status, sent = await js.send(CLAIM_TYPE, "SH", claim)
    assert status == 202, sent
    await pull_until(sh, sent["id"], timeout=120)
    # The file's own trail, under its id: sent at JS, received whole at SH (ids and codes only).
    deadline = time.monotonic() + 60
    while True:
        status, trace = await sh.get(f"/v1/audit/messages/{claim['file_id']}", auditor=True)
        stages = {(r["region"], r["stage"]) for r in trace.get("records", [])}
        if {("JS", "file_sent"), ("SH", "file_received")} <= stages or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert status == 200 and {("JS", "file_sent"), ("SH", "file_received")} <= stages, trace
    topics = files_exchange.topics
    scanned = 0
    for topic in (topics.files("SH"), topics.inbox("SH"), topics.inbox("JS"), topics.dlq("SH"), topics.audit):
        for r in await read_topic(kafka.bootstrap_servers, topic, 120.0):
            assert ID_NUMBER not in r.value, topic
            assert all(ID_NUMBER not in v for v in r.headers.values()), topic
            scanned += 1
    assert scanned > 8  # the 2 MiB file's chunks and manifest at least


async def test_the_files_routes_refuse_with_their_codes(files_exchange: SideExchange, tmp_path: Path) -> None:
    js, sh = files_exchange.clients["JS"], files_exchange.clients["SH"]
    small = tmp_path / "small.pdf"
    small.write_bytes(b"%PDF-1.7 small")
    assert (await upload(js, small, to="JS"))[1]["code"] == "unknown_region"  # its own region
    assert (await upload(js, small, to="XX"))[1]["code"] == "unknown_region"
    status, doc = await upload(js, small, media_type="pdf")
    assert (status, doc["code"]) == (400, "invalid_request")
    big = 200 * MIB + 1  # over files.max_bytes, refused on Content-Length before a byte is read
    async with js.session.post(f"{js.gateway.url}/v1/files?to=SH", data=b"x" * 1024,
                               headers={"Content-Type": "application/pdf", "Content-Length": str(big),
                                        **js.minter.header()}) as r:
        assert r.status == 413 and (await r.json(content_type=None))["code"] == "too_large"
    async with js.session.post(f"{js.gateway.url}/v1/files?to=SH", data=b"x") as r:
        assert r.status == 401
    status, claim = await upload(js, small)
    assert status == 201
    # Not delivered to SH's platform in a message yet: not downloadable, nor by anyone at the sending gateway.
    assert (await download(sh, claim["file_id"]))[0] == 404
    assert (await download(js, claim["file_id"]))[0] == 404
    assert (await download(sh, "not-a-file-id"))[0] == 404


@pytest_asyncio.fixture(scope="module")
async def gm_files_exchange(kafka: Broker,
                            tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SideExchange]:
    async with side_exchange(kafka.bootstrap_servers, tmp_path_factory.mktemp("gm-files-exchange"),
                             f"gm-files-{uuid.uuid4().hex[:8]}", ("JS", "SH"), "--alg", "SM2SM3",
                             edit=accept_claim_checks) as ex:
        yield ex


async def test_in_the_national_suite_a_file_is_digested_with_sm3_and_arrives_whole(
        gm_files_exchange: SideExchange, tmp_path: Path) -> None:
    js, sh = gm_files_exchange.clients["JS"], gm_files_exchange.clients["SH"]
    path = tmp_path / "licence.ofd"
    sha256 = await asyncio.to_thread(write_material, path, 8 * MIB)
    sm3 = new_digest("SM3")
    sm3.update(path.read_bytes())
    status, claim = await upload(js, path, media_type="application/ofd")
    assert status == 201, claim
    assert claim["digest"] == {"alg": "SM3", "value": sm3.hexdigest()}
    status, sent = await js.send(CLAIM_TYPE, "SH", claim)
    assert status == 202, sent
    await pull_until(sh, sent["id"], timeout=120)
    status, got_headers, got_sha256, got_size = await download(sh, claim["file_id"])
    assert (status, got_size, got_sha256) == (200, 8 * MIB, sha256)
    assert got_headers[headers.FILE_DIGEST] == f"SM3={sm3.hexdigest()}"
