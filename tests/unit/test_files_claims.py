"""The claim-check step (gateway/files/claims.py): a message referencing a file is delivered only once the file
arrived whole from its sender with the claimed digest; otherwise it is dead-lettered with the file's reason."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.files.claims import MARK, claim_paths, claims_in
from gateway.files.manifest import Manifest
from gateway.kafka.port import OutRecord
from tests.unit._files import CLAIM_TYPE, FileBench, file_bench
from tests.unit._relay import REGISTRY

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
CANONICAL = json.loads((SCHEMAS / "yrdx" / "yrdx.claim_check.v1.json").read_text())
_SHAPE = ("type", "additionalProperties", "required", "properties")


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[FileBench]:
    b = await file_bench(tmp_path)
    yield b
    await b.h.session.close()


def marked(node: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(node, dict):
        if MARK in node:
            yield node
        for v in node.values():
            yield from marked(v)
    elif isinstance(node, list):
        for v in node:
            yield from marked(v)


def test_every_embedded_claim_check_is_the_canonical_one() -> None:
    copies = [(p, node) for p in SCHEMAS.rglob("*.json") for node in marked(json.loads(p.read_text()))]
    assert copies, "the canonical schema itself is marked"
    for path, node in copies:
        assert node[MARK] == "yrdx.claim_check:1", path
        assert {k: node[k] for k in _SHAPE} == {k: CANONICAL[k] for k in _SHAPE}, path


def test_claim_paths_follow_properties_and_items() -> None:
    assert claim_paths(REGISTRY.schema(CLAIM_TYPE, 1)) == [()]
    schema = {"properties": {"case": {"properties": {"materials": {"items": {MARK: "yrdx.claim_check:1"}}}},
                             "licence": {MARK: "yrdx.claim_check:1"}}}
    paths = claim_paths(schema)
    assert paths == [("case", "materials", "*"), ("licence",)]
    payload = {"case": {"materials": [{"file_id": "a"}, {"file_id": "b"}]}, "licence": {"file_id": "c"}}
    assert [c["file_id"] for p in paths for c in claims_in(payload, p)] == ["a", "b", "c"]
    assert list(claims_in({"case": {}}, paths[0])) == []


async def send_claim(bench: FileBench, claim: dict[str, Any]) -> str:
    msg_id, _ = bench.h.send("JS", CLAIM_TYPE, payload=claim)
    return msg_id


async def drain(bench: FileBench) -> None:
    from gateway.kafka.memory import MemoryInboxConsumer
    consumer = MemoryInboxConsumer(bench.h.broker, bench.h.inbox, bench.h.cfg.topics.egress_group("SH"))
    batch = await consumer.poll()
    await bench.egress().handle(batch)
    await consumer.commit(batch)


async def test_a_message_is_delivered_once_its_file_is_whole_and_its_platform_may_download_it(
        bench: FileBench) -> None:
    manifest = await bench.send(b"%PDF-1.7 licence" * 1000)
    await bench.assemble()
    msg_id = await send_claim(bench, manifest.claim_check())
    await drain(bench)
    assert bench.h.delivered_ids() == [msg_id]
    assert bench.store.granted(manifest.file_id, bench.h.cfg.platforms[0].id)
    assert not bench.store.granted(manifest.file_id, "zj-platform")


async def test_a_message_whose_file_never_arrives_is_dead_lettered_incomplete(bench: FileBench) -> None:
    manifest = await bench.send(b"case materials")
    bench.h.broker.topics.pop(bench.files_topic)  # the file's records never reach SH
    msg_id = await send_claim(bench, manifest.claim_check())
    await drain(bench)  # waits files.wait_s (0.3 s here), then decides
    assert bench.h.delivered_ids() == []
    assert bench.h.dead_letters()[msg_id] == "file_incomplete"
    assert not bench.store.granted(manifest.file_id, bench.h.cfg.platforms[0].id)


async def test_a_message_waits_for_a_file_still_on_its_way(bench: FileBench) -> None:
    import asyncio
    bench.h.cfg = replace(bench.h.cfg, files=replace(bench.h.cfg.files, wait_s=5.0))
    manifest = await bench.send(b"x" * 600_000)
    msg_id = await send_claim(bench, manifest.claim_check())
    delivering = asyncio.create_task(drain(bench))
    await asyncio.sleep(0.3)
    assert not delivering.done() and bench.h.delivered_ids() == []
    await bench.assemble()
    await asyncio.wait_for(delivering, 5)
    assert bench.h.delivered_ids() == [msg_id]


async def test_a_message_whose_file_was_corrupt_is_dead_lettered_with_that_reason(bench: FileBench) -> None:
    manifest = await bench.send(b"y" * 600_000)
    records = bench.records(manifest.file_id)
    bench.h.broker.topics.pop(bench.files_topic)
    for i, r in enumerate(records):
        value = bytes([r.value[0] ^ 1]) + r.value[1:] if i == 0 else r.value
        bench.h.broker.append(OutRecord(r.topic, value, r.key, list(r.headers.items())))
    await bench.assemble()
    msg_id = await send_claim(bench, manifest.claim_check())
    await drain(bench)
    assert bench.h.delivered_ids() == []
    assert bench.h.dead_letters()[msg_id] == "file_corrupt"


@pytest.mark.parametrize("change", [
    {"digest": {"alg": "SHA-256", "value": "0" * 64}}, {"size": 1}, {"media_type": "text/plain"},
])
async def test_a_claim_that_does_not_match_the_file_is_a_digest_mismatch(bench: FileBench,
                                                                          change: dict[str, Any]) -> None:
    manifest = await bench.send(b"z" * 1000)
    await bench.assemble()
    msg_id = await send_claim(bench, {**manifest.claim_check(), **change})
    await drain(bench)
    assert bench.h.dead_letters()[msg_id] == "file_digest_mismatch"


async def test_a_file_from_another_region_cannot_be_claimed(bench: FileBench) -> None:
    manifest: Manifest = await bench.send(b"w" * 1000)  # sent by JS
    await bench.assemble()
    msg_id, _ = bench.h.send("ZJ", CLAIM_TYPE, payload=manifest.claim_check())
    await drain(bench)
    assert bench.h.dead_letters()[msg_id] == "file_incomplete"
