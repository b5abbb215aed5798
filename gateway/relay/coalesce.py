"""Group commit for single-message requests: what the requests in flight hand in together is done together.

A batch request is signed once (a hash tree), recorded in one transaction, published in one produce and made
durable with one audit flush. Platforms mostly send one message per request, though, and many requests at
once: done one by one, each would pay a whole signature at the sender and a whole verification at the receiver
(~350 us each for SM2), two SQLite transactions, its own produce round trip and its own audit flush. A
:class:`Coalescer` collects what the tasks submit until the event loop comes round to it, then processes them
in one call and gives each task its own result. Nothing waits on a timer: a request alone is processed at once,
in a group of one; and groups run side by side, so a slow group does not hold back the next.

`max_running` bounds the groups in flight (a group commit proper): what arrives while they are full waits and
leaves together with the next group. For steps that end in one serialized round trip anyway (ingress's publish
waits for the audit trail's one flush in flight), this costs no latency and makes the groups of requests that
arrive one by one (an open-loop load) several times larger, and their per-group work (signature, SQLite
transactions) that much cheaper per message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar

__all__ = ["MAX_GROUP", "Coalescer"]

T = TypeVar("T")
R = TypeVar("R")

# As many as one batch request may carry: more waiting items start another group.
MAX_GROUP: Final = 500


class Coalescer(Generic[T, R]):
    def __init__(self, process: Callable[[list[T]], Awaitable[Sequence[R]]], max_group: int = MAX_GROUP,
                 max_running: int | None = None) -> None:
        self._process = process
        self._max_group = max_group
        self._max_running = max_running
        self._waiting: list[tuple[T, asyncio.Future[R], float]] = []  # with when each arrived (the loop's clock)
        self._running: set[asyncio.Task[None]] = set()

    def oldest_wait(self) -> float:
        """Seconds the longest-waiting item has waited for its group to start (0 when none waits): this queue's
        length in time, which admission control bounds (gateway/http/admission.py)."""
        if not self._waiting:
            return 0.0
        return asyncio.get_running_loop().time() - self._waiting[0][2]

    async def submit(self, item: T) -> R:
        """The result of ``item``, processed with whatever the other tasks submit in this turn of the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._start)  # after the callbacks already due: the other requests of this turn
        self._waiting.append((item, future, loop.time()))
        return await future

    def _start(self) -> None:
        while self._waiting and (self._max_running is None or len(self._running) < self._max_running):
            group, self._waiting = self._waiting[:self._max_group], self._waiting[self._max_group:]
            task = asyncio.ensure_future(self._run(group))
            self._running.add(task)  # a reference, so the group is not collected half way
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._waiting:  # what arrived while the groups in flight were full leaves now, together
            self._start()

    async def _run(self, group: list[tuple[T, asyncio.Future[R], float]]) -> None:
        try:
            results = await self._process([item for item, _, _ in group])
        except Exception as e:  # noqa: BLE001 (every task of the group gets it, as if it had failed alone)
            for _, future, _ in group:
                if not future.done():
                    future.set_exception(e)
            return
        for (_, future, _), result in zip(group, results, strict=True):
            if not future.done():  # a task cancelled meanwhile (its client went away) just does not get it
                future.set_result(result)
