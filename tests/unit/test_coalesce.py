"""Coalescer: what the tasks submit in one turn of the event loop is processed in one call, each task getting its
own result; a task alone is processed at once; failures reach every task of the group. With a real Signer: the
single-message requests in flight share one batch signature, and each signature verifies over its own content."""

from __future__ import annotations

import asyncio

import pytest

from gateway.crypto.jws import Signer, parse_detached, verify_detached
from gateway.crypto.keys import public_key_of
from gateway.dev.pki import issue_gateway_cert, make_ca
from gateway.relay.coalesce import MAX_GROUP, Coalescer


@pytest.fixture(scope="module", params=["ES256", "SM2SM3"])
def signer(request: pytest.FixtureRequest) -> Signer:
    ca_cert, ca_key = make_ca("coalescer test root", alg=request.param)
    cert, key = issue_gateway_cert(ca_cert, ca_key, "JS", alg=request.param)
    return Signer(key, cert)


def signing(signer: Signer) -> Coalescer[bytes, str]:
    async def sign_group(contents: list[bytes]) -> list[str]:
        return signer.sign_batch(contents)

    return Coalescer(sign_group)


async def test_concurrent_requests_share_one_batch_signature(signer: Signer) -> None:
    coalescer = signing(signer)
    contents = [f"envelope {i}".encode() for i in range(12)]
    signatures = await asyncio.gather(*(coalescer.submit(c) for c in contents))
    assert len({s.split("~")[0] for s in signatures}) == 1  # one signature for the twelve
    key = public_key_of(signer.certificate)
    for content, signature in zip(contents, signatures, strict=True):
        parsed = parse_detached(signature)
        assert parsed.proof is not None and parsed.proof.size == 12
        assert verify_detached(parsed, content, key)
        assert not verify_detached(parsed, content + b"!", key)


async def test_a_request_alone_gets_a_plain_signature(signer: Signer) -> None:
    coalescer = signing(signer)
    first = await coalescer.submit(b"alone")
    second = await coalescer.submit(b"alone again")  # the first group is done: nothing waits for a timer
    for content, signature in ((b"alone", first), (b"alone again", second)):
        assert "~" not in signature
        assert verify_detached(parse_detached(signature), content, public_key_of(signer.certificate))


async def test_more_than_a_group_is_split() -> None:
    sizes: list[int] = []

    async def record(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return [i * 2 for i in items]

    coalescer: Coalescer[int, int] = Coalescer(record)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(MAX_GROUP + 3)))
    assert results == [i * 2 for i in range(MAX_GROUP + 3)]  # each task its own result, in its place
    assert sorted(sizes) == [3, MAX_GROUP]


async def test_a_failure_reaches_every_task_of_its_group_only() -> None:
    async def fail_on_boom(items: list[str]) -> list[str]:
        if "boom" in items:
            raise RuntimeError("broker gone")
        return items

    coalescer: Coalescer[str, str] = Coalescer(fail_on_boom)
    group = await asyncio.gather(coalescer.submit("a"), coalescer.submit("boom"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in group)
    assert await coalescer.submit("later") == "later"  # the next group is not affected


async def test_a_slow_group_does_not_hold_back_the_next() -> None:
    release = asyncio.Event()

    async def slow_first(items: list[str]) -> list[str]:
        if items == ["slow"]:
            await release.wait()
        return items

    coalescer: Coalescer[str, str] = Coalescer(slow_first)
    slow = asyncio.ensure_future(coalescer.submit("slow"))
    await asyncio.sleep(0.01)
    assert await asyncio.wait_for(coalescer.submit("fast"), timeout=1.0) == "fast"
    assert not slow.done()
    release.set()
    assert await slow == "slow"


async def test_a_cancelled_task_does_not_stop_the_others(signer: Signer) -> None:
    coalescer = signing(signer)
    doomed = asyncio.ensure_future(coalescer.submit(b"client went away"))
    kept = asyncio.ensure_future(coalescer.submit(b"still here"))
    await asyncio.sleep(0)  # both are queued
    doomed.cancel()
    signature = await kept
    assert verify_detached(parse_detached(signature), b"still here", public_key_of(signer.certificate))
    assert doomed.cancelled()


async def test_with_one_group_in_flight_what_arrives_meanwhile_leaves_together() -> None:
    """max_running=1 (a group commit): a first request alone goes at once; the ones that arrive one by one
    while it is in flight wait and leave as one group, then the next alone goes at once again."""
    groups: list[list[int]] = []
    release = asyncio.Event()

    async def process(items: list[int]) -> list[int]:
        groups.append(items)
        if len(groups) == 1:
            await release.wait()  # the first group's round trip
        return [i + 100 for i in items]

    coalescer: Coalescer[int, int] = Coalescer(process, max_running=1)
    first = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0.01)
    later = []
    for i in range(1, 6):  # one per turn of the loop: without the bound each would be a group of its own
        later.append(asyncio.create_task(coalescer.submit(i)))
        await asyncio.sleep(0.001)
    assert groups == [[0]]
    release.set()
    assert await first == 100 and await asyncio.gather(*later) == [101, 102, 103, 104, 105]
    assert groups == [[0], [1, 2, 3, 4, 5]]
    assert await coalescer.submit(6) == 106 and groups[-1] == [6]


async def test_a_failed_group_does_not_strand_the_ones_waiting_behind_it() -> None:
    calls: list[list[int]] = []

    async def process(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.01)
        if 0 in items:
            raise RuntimeError("broker gone")
        return items

    coalescer: Coalescer[int, int] = Coalescer(process, max_running=1)
    failing = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(coalescer.submit(i)) for i in (1, 2)]
    with pytest.raises(RuntimeError):
        await failing
    assert await asyncio.gather(*waiting) == [1, 2] and calls == [[0], [1, 2]]


async def test_oldest_wait_is_how_long_the_head_of_the_queue_has_waited_for_its_group() -> None:
    """What admission control bounds: 0 while nothing waits (a group in flight is not waiting), then the age of
    the first item queued behind the group in flight (not the newest), and 0 again once they have left."""
    release = asyncio.Event()

    async def process(items: list[int]) -> list[int]:
        await release.wait()
        return items

    coalescer: Coalescer[int, int] = Coalescer(process, max_running=1)
    assert coalescer.oldest_wait() == 0.0
    first = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0.05)
    assert coalescer.oldest_wait() == 0.0  # in flight, not waiting
    queued = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0.1)
    newer = asyncio.create_task(coalescer.submit(2))
    await asyncio.sleep(0)
    assert 0.1 <= coalescer.oldest_wait() < 1.0
    release.set()
    assert await asyncio.gather(first, queued, newer) == [0, 1, 2]
    assert coalescer.oldest_wait() == 0.0
