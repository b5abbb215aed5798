"""/readyz's egress check: repeated loop restarts, or a partition whose committed offset stands still while
records wait, make egress unhealthy; steady progress and an idle inbox do not (real time, short windows)."""

from __future__ import annotations

import time

from gateway.relay.health import EgressHealth


def test_a_fresh_gateway_is_healthy() -> None:
    assert EgressHealth().healthy()


def test_three_restarts_within_a_minute_are_unhealthy() -> None:
    h = EgressHealth()
    h.restarted()
    h.restarted()
    assert h.healthy()
    h.restarted()
    assert h.restarting() and not h.healthy()


def test_waiting_records_with_a_committed_offset_that_stands_still_are_a_stall() -> None:
    h = EgressHealth(stall_s=0.2)
    h.progress({0: (10, 15), 1: (3, 3)})
    assert h.healthy()
    time.sleep(0.3)
    h.progress({0: (10, 16), 1: (3, 3)})  # partition 0 waits and does not move; partition 1 is idle
    assert h.stalled_partitions() == [0] and not h.healthy()
    assert h.lag == {0: 6, 1: 0}
    h.progress({0: (16, 16), 1: (3, 3)})
    assert h.healthy()


def test_a_partition_that_keeps_committing_is_not_stalled_however_long_its_backlog() -> None:
    h = EgressHealth(stall_s=0.2)
    for committed in range(0, 500, 100):
        h.progress({0: (committed, 10_000)})
        time.sleep(0.06)
    assert h.stalled_partitions() == []
