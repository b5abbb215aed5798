"""A file streamed JS -> SH as sealed chunks and assembled from the files topic (in-memory Kafka twin): what
arrives is exactly what was sent, and a damaged, missing or misplaced chunk refuses the whole file."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import hashes

from gateway.config import load_config
from gateway.crypto.keyfiles import load_encryption_pub
from gateway.crypto.seal import Sealer, SmOpener, SmSealer
from gateway.crypto.sm2 import generate_sm2_key
from gateway.files.manifest import FILE_TYPE, Manifest
from gateway.files.sender import FileSender, TooLarge
from gateway.files.store import FileStore
from gateway.kafka.memory import MemoryBroker, MemoryPublisher
from gateway.kafka.port import OutRecord
from gateway.wire import envelope, headers
from gateway.wire.regions import Topics
from tests.unit._files import FileBench, file_bench, reader
from tests.unit._relay import make_exchange, signer_of

ID_NUMBER = b"320506199007181520"  # DOMAIN.md section 9: the synthetic JS resident


@pytest.fixture
async def bench(tmp_path: Path) -> FileBench:
    b = await file_bench(tmp_path)
    yield b
    await b.h.session.close()


def material(size: int) -> bytes:
    """A file holding the synthetic ID number in clear, then random bytes."""
    return (ID_NUMBER + os.urandom(size))[:size]


def republish(bench: FileBench, records: list[OutRecord]) -> None:
    """The files topic replaced by ``records`` (as an attacker with write access, or a lossy path, leaves it)."""
    bench.h.broker.topics.pop(bench.files_topic, None)
    for r in records:
        bench.h.broker.append(r)


def as_out(r) -> OutRecord:  # type: ignore[no-untyped-def]
    return OutRecord(r.topic, r.value, r.key, list(r.headers.items()))


async def test_a_file_arrives_whole_with_its_digest_checked(bench: FileBench) -> None:
    data = material(3 * 512 * 1024 + 12_345)
    manifest = await bench.send(data)
    assert manifest.size == len(data) and manifest.chunks == 4
    assert manifest.digest_alg == "SHA-256" and manifest.digest == hashlib.sha256(data).hexdigest()
    assert len(bench.chunk_records(manifest.file_id)) == 4
    await bench.assemble()
    assert bench.received(manifest.file_id) == data
    stored = bench.store.status(manifest.file_id)
    assert stored is not None and stored.sender == "JS" and stored.claim == manifest.claim_check()
    assert bench.file_dead_letters() == {}
    assert bench.audit_records(manifest.file_id) == [("file_received", {"sender": "JS", "size": len(data)})]


async def test_nothing_of_the_file_travels_or_rests_in_clear(bench: FileBench, tmp_path: Path) -> None:
    manifest = await bench.send(material(600_000))
    for r in bench.records(manifest.file_id):
        assert ID_NUMBER not in r.value and manifest.key not in r.value
        if headers.FILE_CHUNK not in r.headers:  # the manifest: signed, its payload (and the file key) sealed
            assert "payload" not in orjson.loads(r.value) and r.headers[headers.SIGNATURE]
    await bench.assemble()
    for f in (tmp_path / "spool").rglob("*"):
        if f.is_file():
            assert ID_NUMBER not in f.read_bytes() and manifest.key not in f.read_bytes()


async def test_a_flipped_byte_in_one_chunk_refuses_the_file_as_corrupt(bench: FileBench) -> None:
    manifest = await bench.send(material(1_200_000))
    records = [as_out(r) for r in bench.records(manifest.file_id)]
    damaged = bytearray(records[1].value)
    damaged[1000] ^= 0x40
    records[1] = replace(records[1], value=bytes(damaged))
    republish(bench, records)
    await bench.assemble()
    stored = bench.store.status(manifest.file_id)
    assert stored is not None and stored.status == "failed" and stored.reason == "file_corrupt"
    assert "chunk 1" in stored.detail
    assert bench.file_dead_letters() == {manifest.file_id: "file_corrupt"}
    assert not list((bench.store.root / manifest.file_id).glob("chunk-*"))  # nothing half-kept
    assert bench.audit_records(manifest.file_id) == [("file_refused", {"sender": "JS", "reason": "file_corrupt"})]


async def test_a_missing_chunk_refuses_the_file_as_incomplete(bench: FileBench) -> None:
    manifest = await bench.send(material(1_200_000))
    records = [as_out(r) for r in bench.records(manifest.file_id)]
    republish(bench, records[:1] + records[2:])
    await bench.assemble()
    stored = bench.store.status(manifest.file_id)
    assert stored is not None and stored.reason == "file_incomplete" and "the first 1" in stored.detail
    assert bench.file_dead_letters() == {manifest.file_id: "file_incomplete"}


async def test_chunks_out_of_order_or_repeated_still_make_the_file(bench: FileBench) -> None:
    data = material(1_600_000)
    manifest = await bench.send(data)
    records = [as_out(r) for r in bench.records(manifest.file_id)]
    chunks, last = records[:-1], records[-1]
    republish(bench, [chunks[2], chunks[0], chunks[3], chunks[0], chunks[1], chunks[2], last])
    await bench.assemble()
    assert bench.received(manifest.file_id) == data


async def test_chunks_swapped_between_indexes_do_not_open(bench: FileBench) -> None:
    manifest = await bench.send(material(1_200_000))
    records = [as_out(r) for r in bench.records(manifest.file_id)]
    a, b = records[0], records[1]
    records[0] = replace(a, headers=[(k, v) for k, v in b.headers])
    records[1] = replace(b, headers=[(k, v) for k, v in a.headers])
    republish(bench, records)
    await bench.assemble()
    stored = bench.store.status(manifest.file_id)
    assert stored is not None and stored.reason == "file_corrupt"


async def test_a_manifest_that_does_not_verify_leaves_no_verdict(bench: FileBench) -> None:
    manifest = await bench.send(material(100_000))
    records = [as_out(r) for r in bench.records(manifest.file_id)]
    forged = records[-1]
    records[-1] = replace(forged, headers=[(k, v if k != headers.SIGNATURE else bench.h.signer("ZJ").sign(
        forged.value).encode()) for k, v in forged.headers])
    republish(bench, records)
    await bench.assemble()
    assert bench.store.status(manifest.file_id) is None  # the real file may still come; the forgery spoils nothing
    assert bench.file_dead_letters() == {manifest.file_id: "untrusted_signer"}
    assert bench.audit_records(manifest.file_id) == [("file_refused", {"sender": "JS", "reason": "untrusted_signer"})]


async def test_a_record_that_is_no_chunk_or_manifest_is_dead_lettered(bench: FileBench) -> None:
    bench.h.broker.append(OutRecord(bench.files_topic, b"junk", b"not-a-file-id", [(headers.FILE_ID, b"x")]))
    await bench.assemble()
    dead = bench.h.broker.records(bench.h.cfg.topics.dlq("SH"))
    assert [r.headers[headers.DLQ_REASON] for r in dead] == [b"invalid_record"]


async def test_a_file_read_again_after_a_restart_keeps_its_verdict(bench: FileBench) -> None:
    data = material(700_000)
    manifest = await bench.send(data)
    await bench.assemble()
    bench.h.broker.committed.clear()  # the offsets were lost: everything is read again
    await bench.assemble()
    assert bench.received(manifest.file_id) == data and bench.file_dead_letters() == {}


async def test_an_upload_over_the_limit_is_refused_and_never_completed(tmp_path: Path) -> None:
    bench = await file_bench(tmp_path, max_bytes=1_000_000)
    try:
        with pytest.raises(TooLarge):
            await bench.send(material(1_000_001))
        assert all(headers.FILE_CHUNK in r.headers for r in bench.h.broker.records(bench.files_topic))  # no manifest
    finally:
        await bench.h.session.close()


async def test_an_empty_file_travels_too(bench: FileBench) -> None:
    manifest = await bench.send(b"", "text/plain")
    assert manifest.chunks == 0 and manifest.digest == hashlib.sha256(b"").hexdigest()
    await bench.assemble()
    assert bench.received(manifest.file_id) == b""


async def test_the_spool_sweep_deletes_old_files(bench: FileBench) -> None:
    manifest = await bench.send(material(1000))
    await bench.assemble()
    assert bench.store.sweep(3600) == 0
    old = bench.store.root / manifest.file_id
    os.utime(old, (1, 1))
    assert bench.store.sweep(3600) == 1 and not old.exists()


async def test_a_file_for_a_national_suite_gateway_is_digested_with_sm3_and_sealed_with_sm4(tmp_path: Path) -> None:
    key = generate_sm2_key()
    broker = MemoryBroker()
    sender = FileSender("JS", Topics(), signer_of(make_exchange(tmp_path / "ex"), "JS"), MemoryPublisher(broker),
                        {"SH": SmSealer(key.public_key(), "SH")}, 4 * 1024 * 1024)
    data = material(1_100_000)
    manifest = await sender.send("SH", "application/ofd", reader(data))  # type: ignore[arg-type]
    sm3 = hashes.Hash(hashes.SM3())
    sm3.update(data)
    assert manifest.digest_alg == "SM3" and manifest.digest == sm3.finalize().hex() and len(manifest.key) == 16
    records = broker.records(Topics().files("SH"))
    env = envelope.parse(records[-1].value)
    assert env.sealed is not None and env.sealed.split(".")[0]  # SM2 / SM4GCM JWE
    opened = Manifest.read(orjson.loads(SmOpener(key).open(env.sealed)))
    assert opened == manifest
    store = FileStore(tmp_path / "spool", 4 * 1024 * 1024)
    for r in records[:-1]:
        assert ID_NUMBER not in r.value
        assert store.put_chunk(manifest.file_id, int(r.headers[headers.FILE_CHUNK]), r.value) is None
    stored = store.settle(opened, "JS", env.sealed)
    assert stored.status == "complete"
    assert b"".join(store.chunks(stored, SmOpener(key))) == data


@pytest.mark.parametrize("lie", [{"digest": "0" * 64}, {"size": 600_001, "chunks": 2}])
async def test_a_manifest_naming_other_bytes_refuses_the_file_as_a_digest_mismatch(
        bench: FileBench, lie: dict[str, object]) -> None:
    manifest = await bench.send(material(600_000))
    records = [as_out(r) for r in bench.records(manifest.file_id)]
    js = load_config(bench.h.ex.config_path("JS"))
    sealer = Sealer.for_key(load_encryption_pub(js.encryption_keys["SH"]), kid="SH")
    told = replace(manifest, **lie)  # signed by JS itself: the chunks open, but do not add up to what it says
    _, env = envelope.build(msg_type=FILE_TYPE, schema_version=1, sender="JS", recipient="SH", payload=None,
                            msg_id=manifest.file_id, sealed=sealer.seal(orjson.dumps(told.payload())))
    records[-1] = replace(records[-1], value=env, headers=[
        (headers.SIGNATURE, bench.h.signer("JS").sign(env).encode()), (headers.FILE_ID, manifest.file_id.encode())])
    republish(bench, records)
    await bench.assemble()
    stored = bench.store.status(manifest.file_id)
    assert stored is not None and stored.reason == "file_digest_mismatch", stored
    assert bench.file_dead_letters() == {manifest.file_id: "file_digest_mismatch"}
