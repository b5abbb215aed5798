"""The claim-check step (gateway/files/claims.py): a message referencing a file is delivered only once the file
arrived whole from its sender with the claimed digest; otherwise it is dead-lettered with the file's reason. A
message whose file is still on its way is parked (gateway/files/parking.py) and the partition goes on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.files.claims import MARK, claim_paths, claims_in
from gateway.files.manifest import Manifest
from gateway.kafka.port import OutRecord
from gateway.relay.outcomes import Draining
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
    await bench.egress().resume_parked()  # a look at the parked messages is due at once after this one
    await bench.drain()


def stages(bench: FileBench, msg_id: str) -> list[tuple[str, dict[str, object]]]:
    return bench.audit_records(msg_id)


async def until_parked_ones_are_decided(bench: FileBench, deadline_s: float = 10.0) -> None:
    """Turns of the egress loop until nothing is parked (the loop looks at least every second)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while bench.h.state.parked_count():
        assert loop.time() < end, "a parked message was never decided"
        await bench.drain()
        await asyncio.sleep(0.05)


async def test_a_message_is_delivered_once_its_file_is_whole_and_its_platform_may_download_it(
        bench: FileBench) -> None:
    manifest = await bench.send(b"%PDF-1.7 licence" * 1000)
    await bench.assemble()
    msg_id = await send_claim(bench, manifest.claim_check())
    await drain(bench)
    assert bench.h.delivered_ids() == [msg_id]
    assert bench.store.granted(manifest.file_id, bench.h.cfg.platforms[0].id)
    assert not bench.store.granted(manifest.file_id, "zj-platform")
    assert bench.h.state.parked_count() == 0
    assert "parked" not in [s for s, _ in stages(bench, msg_id)]


async def test_a_message_whose_file_never_arrives_is_parked_then_dead_lettered_incomplete(bench: FileBench) -> None:
    manifest = await bench.send(b"case materials")
    bench.h.broker.topics.pop(bench.files_topic)  # the file's records never reach SH
    msg_id = await send_claim(bench, manifest.claim_check())
    after_id, _ = bench.h.send("JS")  # the next record of the same partition, another conversation
    started = time.monotonic()
    await drain(bench)
    assert bench.h.delivered_ids() == [after_id]  # not held up by the parked one
    assert msg_id not in bench.h.dead_letters()
    assert bench.h.state.parked_count() == 1
    await until_parked_ones_are_decided(bench)
    assert time.monotonic() - started >= 0.3  # files.wait_s here
    assert bench.h.delivered_ids() == [after_id]
    assert bench.h.dead_letters()[msg_id] == "file_incomplete"
    assert not bench.store.granted(manifest.file_id, bench.h.cfg.platforms[0].id)
    trail = stages(bench, msg_id)
    names = [s for s, _ in trail]
    assert names[:2] == ["received", "parked"] and names.index("unparked") < names.index("rejected")
    assert dict(trail)["parked"]["files"] == manifest.file_id
    assert dict(trail)["unparked"]["reason"] == "wait_s_passed"
    receipt = [i for r in bench.h.receipts_to("JS") for i in r["payload"]["items"] if i["message_id"] == msg_id]
    assert [(i["outcome"], i["reason"]) for i in receipt] == [("rejected", "file_incomplete")]


async def test_a_message_waits_parked_for_a_file_still_on_its_way_while_the_partition_goes_on(
        bench: FileBench) -> None:
    manifest = await bench.send(b"x" * 600_000)  # two chunks, not assembled yet
    msg_id = await send_claim(bench, manifest.claim_check())
    others = [bench.h.send("JS")[0] for _ in range(3)]
    await drain(bench)
    assert bench.h.delivered_ids() == others and bench.h.state.parked_count() == 1
    await bench.assemble()  # the file is decided: the assembler wakes the claim-check step
    assert bench.claims.wake.is_set()
    await bench.drain()
    assert bench.h.delivered_ids() == [*others, msg_id]
    assert bench.h.state.parked_count() == 0
    assert bench.store.granted(manifest.file_id, bench.h.cfg.platforms[0].id)
    assert dict(stages(bench, msg_id))["unparked"]["reason"] == "files_decided"
    await until_parked_ones_are_decided(bench)
    assert bench.h.delivered_ids().count(msg_id) == 1


async def test_a_conversation_behind_a_parked_message_waits_behind_it_in_order(bench: FileBench) -> None:
    manifest = await bench.send(b"x" * 1000)
    first = bench.h.send("JS", CLAIM_TYPE, payload=manifest.claim_check(), correlation_id="case-1")[0]
    second = bench.h.send("JS", correlation_id="case-1")[0]  # no file of its own, but after the first
    other = bench.h.send("JS", correlation_id="case-2")[0]
    await drain(bench)
    assert bench.h.delivered_ids() == [other]
    assert dict(stages(bench, second))["parked"]["reason"] == "behind_parked"
    await bench.assemble()
    await bench.drain()
    assert bench.h.delivered_ids() == [other, first, second]


async def test_a_parked_record_read_again_or_taken_back_twice_is_delivered_once(bench: FileBench) -> None:
    manifest = await bench.send(b"x" * 1000)
    msg_id, record = bench.h.send("JS", CLAIM_TYPE, payload=manifest.claim_check())
    egress = bench.egress()
    await egress.handle([record])
    await egress.handle([record])  # a crash before the commit: the record is read again, and parked once
    assert bench.h.state.parked_count() == 1
    parked = bench.h.state.parked(10)
    await bench.assemble()
    await bench.drain()
    assert bench.h.delivered_ids() == [msg_id]
    # A replica that died after delivering, before forgetting the parked message: it is taken back once more.
    bench.h.state.park(parked)
    await until_parked_ones_are_decided(bench)
    assert bench.h.delivered_ids() == [msg_id]
    assert msg_id not in bench.h.dead_letters()


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


async def test_a_parked_message_whose_run_fails_stays_parked_and_free_for_the_next_look(bench: FileBench) -> None:
    manifest = await bench.send(b"x" * 1000)
    msg_id = await send_claim(bench, manifest.claim_check())
    await drain(bench)
    await bench.assemble()
    bench.h.broker.down = True  # its run cannot flush: egress stops with the gateway (Draining)
    stopping = asyncio.Event()
    stopping.set()
    with pytest.raises(Draining):
        await bench.egress().resume_parked(stopping)
    bench.h.broker.down = False
    assert bench.h.state.parked_count() == 1
    assert [m.message_id for m in bench.h.state.parked(10)] == [msg_id]  # not leased: listed again at once
    await until_parked_ones_are_decided(bench)
    assert bench.h.delivered_ids() == [msg_id]
