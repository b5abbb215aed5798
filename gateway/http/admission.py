"""Admission control: the messages and request bytes a gateway holds at once are bounded, and so is the time its
single-message requests wait to be sent; what does not fit is refused at once (429 `overloaded` with
Retry-After) instead of queueing without end. Under overload the gateway keeps answering, stays within a known
memory bound, delivers everything it did accept, and answers what it accepts in bounded time.

The bound in time is what a platform feels. Under twice its capacity a gateway holding its 5,000 messages took
3-4 s to answer each accepted one (the held messages over the rate it sends them at): memory was bounded, the
wait was not. Refusing while the oldest request waiting for its group has waited longer than
`limits.max_queue_wait_ms` keeps the queue as long as that in time, whatever a message costs (a batch's member,
a sealed type, the national suite): the queue is measured where it forms, not estimated from a count."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.wire.problems import Problem

RETRY_AFTER_S = 1


class Overloaded(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


def _no_queue() -> float:
    return 0.0


@dataclass
class Admission:
    max_messages: int
    max_bytes: int
    max_wait_s: float = math.inf
    queue_wait: Callable[[], float] = _no_queue  # seconds the oldest request has waited to be sent (Ingress)
    messages: int = 0
    bytes: int = 0

    def refuses(self, messages: int = 0, nbytes: int = 0) -> bool:
        """Whether `admit` would refuse this now. A single request larger than the whole budget still fits when
        nothing else is held, so it can never be refused for ever; and nothing waits when nothing is held."""
        busy = self.messages or self.bytes
        return bool(busy) and (self.messages + messages > self.max_messages or self.bytes + nbytes > self.max_bytes
                               or self.queue_wait() > self.max_wait_s)

    def problem(self) -> Problem:
        waited = self.queue_wait()
        if waited > self.max_wait_s:
            return Problem(
                "overloaded", f"requests have waited {waited * 1000:.0f} ms to be sent by this gateway (limit "
                f"{self.max_wait_s * 1000:.0f} ms); retry after {RETRY_AFTER_S} s",
            )
        return Problem(
            "overloaded", f"this gateway holds {self.messages} messages and {self.bytes} request bytes in "
            f"flight (limits {self.max_messages} and {self.max_bytes}); retry after {RETRY_AFTER_S} s",
        )

    @contextmanager
    def admit(self, messages: int = 0, nbytes: int = 0) -> Iterator[None]:
        """Hold `messages` and `nbytes` for the duration, or raise Overloaded when they do not fit (`refuses`)."""
        if self.refuses(messages, nbytes):
            raise Overloaded(self.problem())
        self.messages += messages
        self.bytes += nbytes
        try:
            yield
        finally:
            self.messages -= messages
            self.bytes -= nbytes
