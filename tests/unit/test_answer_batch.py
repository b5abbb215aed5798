"""adapters/answer_batch.py: answers that queue while a batch is in flight leave together, each with its own
result; an answer alone leaves at once; a failed request fails every answer in it, and the next ones still go."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, cast

import aiohttp
import pytest

from adapters.answer_batch import AnswerBatcher
from adapters.simulated import Attempt, PlatformClient


class FakeClient:
    """send_batch as the gateway answers it, held open until `release` is set; a message of type "boom"
    makes the whole request fail."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def send_batch(self, messages: Sequence[Mapping[str, Any]], *, story: str) -> list[Attempt]:
        self.batches.append([str(m["correlation_id"]) for m in messages])
        await self.release.wait()
        if any(m["type"] == "boom" for m in messages):
            raise aiohttp.ClientConnectionError("gone")
        return [Attempt(str(m["type"]), "AH", str(m["to"]), story, "delivered", 0.0, id=f"id-{m['correlation_id']}")
                for m in messages]


def batcher(client: FakeClient, **kw: int) -> AnswerBatcher:
    return AnswerBatcher(cast(PlatformClient, client), **kw)


async def test_an_answer_alone_leaves_at_once_and_queued_ones_share_the_next_request() -> None:
    client = FakeClient()
    b = batcher(client, in_flight=1)
    first = await b.send("medical.person.result", "SH", {}, story="s", correlation_id="c0")
    assert first.id == "id-c0" and client.batches == [["c0"]]
    client.release.clear()  # the next request stays in flight while more answers queue
    held = asyncio.ensure_future(b.send("medical.person.result", "SH", {}, story="s", correlation_id="c1"))
    await asyncio.sleep(0)
    queued = [asyncio.ensure_future(b.send("medical.person.result", "SH", {}, story="s", correlation_id=f"c{i}"))
              for i in range(2, 5)]
    await asyncio.sleep(0.01)
    assert client.batches == [["c0"], ["c1"]]
    client.release.set()
    results = await asyncio.gather(held, *queued)
    assert client.batches == [["c0"], ["c1"], ["c2", "c3", "c4"]]
    assert [a.id for a in results] == ["id-c1", "id-c2", "id-c3", "id-c4"]  # each its own result, in order


async def test_a_failed_request_fails_its_answers_and_the_next_ones_still_leave() -> None:
    client = FakeClient()
    b = batcher(client, in_flight=1, max_batch=2)
    client.release.clear()
    sends = [asyncio.ensure_future(b.send("boom" if i == 1 else "t", "SH", {}, story="s", correlation_id=f"c{i}"))
             for i in range(4)]
    await asyncio.sleep(0)
    client.release.set()
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert client.batches == [["c0", "c1"], ["c2", "c3"]]  # at most max_batch per request
    assert all(isinstance(r, aiohttp.ClientConnectionError) for r in results[:2])
    assert [cast(Attempt, r).id for r in results[2:]] == ["id-c2", "id-c3"]
    with pytest.raises(aiohttp.ClientConnectionError):
        await sends[0]
