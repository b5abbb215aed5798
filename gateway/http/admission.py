"""Admission control: the messages and request bytes a gateway holds at once are bounded, and what does not fit
is refused at once (429 `overloaded` with Retry-After) instead of queueing without end. Under overload the
gateway keeps answering, stays within a known memory bound, and delivers everything it did accept."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.wire.problems import Problem

RETRY_AFTER_S = 1


class Overloaded(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


@dataclass
class Admission:
    max_messages: int
    max_bytes: int
    messages: int = 0
    bytes: int = 0

    def refuses(self, messages: int = 0, nbytes: int = 0) -> bool:
        """Whether `admit` would refuse this now. A single request larger than the whole budget still fits when
        nothing else is held, so it can never be refused for ever."""
        busy = self.messages or self.bytes
        return bool(busy) and (self.messages + messages > self.max_messages or self.bytes + nbytes > self.max_bytes)

    def problem(self) -> Problem:
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
