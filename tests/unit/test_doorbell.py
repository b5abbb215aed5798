"""The inbox doorbell: a ring sets the event armed before it, once; the next waiter arms a fresh one."""

from __future__ import annotations

from gateway.state.doorbell import Doorbell


async def test_a_ring_wakes_what_was_armed_before_it_and_only_that() -> None:
    bell = Doorbell()
    bell.ring()  # nobody armed: nothing to keep
    first = bell.armed()
    assert bell.armed() is first and not first.is_set()  # waiters of one round share the event
    bell.ring()
    assert first.is_set()
    second = bell.armed()
    assert second is not first and not second.is_set()  # a later waiter waits for the next delivery
