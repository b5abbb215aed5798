"""Whether egress is making progress, for `/readyz` and the metrics: a loop that keeps restarting, or a partition
whose committed offset stands still while records wait, is not healthy however alive the process is."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

RESTARTS_WINDOW_S = 60.0
RESTARTS_UNHEALTHY = 3  # restarts within the window
STALL_S = 120.0  # records waiting and the committed offset still for this long (longer than a webhook retry run)


@dataclass
class EgressHealth:
    stall_s: float = STALL_S
    restarts: deque[float] = field(default_factory=deque)
    lag: dict[int, int] = field(default_factory=dict)  # partition -> records waiting, as last seen
    _moved: dict[int, tuple[int, float]] = field(default_factory=dict)  # partition -> (committed, since when)
    last_poll: float = 0.0  # monotonic time the loop last came back from a poll

    def polled(self) -> None:
        self.last_poll = time.monotonic()

    def polled_recently(self, within_s: float = 10.0) -> bool:
        """The loop is alive and fetching: a poll returns within its timeout (0.2 s) unless a batch is in hand,
        so only a long delivery (a webhook retrying) or a stuck loop leaves it older than this."""
        return time.monotonic() - self.last_poll < within_s

    def restarted(self) -> None:
        self.restarts.append(time.monotonic())
        self._forget_old_restarts()

    def progress(self, offsets: dict[int, tuple[int, int]]) -> None:
        """Called after each poll (and commit) with each partition's (committed, log end)."""
        now = time.monotonic()
        for partition, (committed, end) in offsets.items():
            self.lag[partition] = max(end - committed, 0)
            before = self._moved.get(partition)
            if before is None or before[0] != committed or end <= committed:
                self._moved[partition] = (committed, now)

    def stalled_partitions(self) -> list[int]:
        now = time.monotonic()
        return sorted(p for p, (_, since) in self._moved.items() if self.lag.get(p) and now - since > self.stall_s)

    def restarting(self) -> bool:
        self._forget_old_restarts()
        return len(self.restarts) >= RESTARTS_UNHEALTHY

    def healthy(self) -> bool:
        return not self.restarting() and not self.stalled_partitions()

    def _forget_old_restarts(self) -> None:
        while self.restarts and self.restarts[0] < time.monotonic() - RESTARTS_WINDOW_S:
            self.restarts.popleft()
