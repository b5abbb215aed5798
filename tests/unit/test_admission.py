"""Admission control's decision (gateway/http/admission.py): the in-flight budget and the bound in time."""

from __future__ import annotations

import pytest

from gateway.http.admission import Admission, Overloaded


def test_refuses_beyond_the_message_or_byte_budget_but_never_an_idle_gateway() -> None:
    a = Admission(max_messages=2, max_bytes=1000)
    assert not a.refuses(5, 10_000)  # larger than the whole budget, but nothing else is held
    with a.admit(2, 100):
        assert a.refuses(1, 0) and a.refuses(0, 901)
        assert "holds 2 messages and 100 request bytes" in a.problem().detail
    assert (a.messages, a.bytes) == (0, 0)


def test_refuses_while_the_oldest_request_has_waited_beyond_the_bound() -> None:
    wait = [0.0]
    a = Admission(max_messages=100, max_bytes=10**9, max_wait_s=0.25, queue_wait=lambda: wait[0])
    with a.admit(1, 10):
        assert not a.refuses(1, 10)
        wait[0] = 0.3
        assert a.refuses(1, 10)
        problem = a.problem()
        assert problem.code == "overloaded" and problem.status == 429
        assert "waited 300 ms" in problem.detail and "limit 250 ms" in problem.detail
        with pytest.raises(Overloaded):
            with a.admit(1, 10):
                pass
    assert not a.refuses(1, 10)  # nothing held: nothing can be waiting for this gateway's own work
