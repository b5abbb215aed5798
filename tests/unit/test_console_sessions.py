"""Operator sign-in for the console (gateway/console/sessions.py): the token compared in constant time, sessions
kept server-side by the digest of a random id and ended by sign-out, idleness or age, the brake on guessing, and
the checks that keep a state-changing request and a redirect on the console's own origin."""

from __future__ import annotations

import hashlib

import pytest

from gateway.console import sessions as sessions_module
from gateway.console.sessions import LoginThrottle, Sessions, safe_next, same_origin, token_matches


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_token_matches_only_itself() -> None:
    assert token_matches("s3cret-token", "s3cret-token")
    assert token_matches("s3cret-token\n", "s3cret-token")  # pasted with its newline
    assert not token_matches("s3cret-tokeN", "s3cret-token")
    assert not token_matches("s3cret", "s3cret-token")
    assert not token_matches("", "s3cret-token")
    assert not token_matches("anything", None)  # no token configured: nobody signs in
    assert not token_matches("", "")
    assert not token_matches("x" * 5000, "x" * 5000)
    assert not token_matches("caf\udce9", "café")  # a byte that is not UTF-8 compares, and fails


def test_the_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []

    def compare(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return a == b

    monkeypatch.setattr(sessions_module.hmac, "compare_digest", compare)
    assert token_matches("abc", "abc")
    assert calls == [(b"abc", b"abc")]


def test_a_session_is_a_fresh_random_id_and_the_server_keeps_only_its_digest() -> None:
    s = Sessions()
    one, session = s.create()
    two, _ = s.create()
    assert one != two and len(one) >= 43  # 32 random bytes, base64url
    assert s.get(one) is session and session.csrf and session.csrf != one
    assert one not in repr(s._by_digest) and hashlib.sha256(one.encode()).hexdigest() in s._by_digest
    assert session.label == hashlib.sha256(one.encode()).hexdigest()[:8]
    assert s.get("made-up") is None and s.get(None) is None and s.get("x" * 500) is None


def test_a_session_ends_at_sign_out_when_idle_and_when_old() -> None:
    clock = Clock()
    s = Sessions(idle_s=60, max_age_s=300, clock=clock)
    sid, session = s.create()
    assert s.drop(sid) is session and s.get(sid) is None and not s.alive(session)

    sid, session = s.create()
    clock.now += 59
    assert s.get(sid) is session  # a request restarts the idle clock
    clock.now += 59
    assert s.alive(session)
    clock.now += 2
    assert not s.alive(session)  # alive() does not count as activity
    assert s.get(sid) is None

    sid, session = s.create()
    clock.now += 50
    assert s.touch(session)  # the event stream of an open page
    clock.now += 50
    assert s.get(sid) is session
    s.drop(sid)
    assert not s.touch(session)

    sid, session = s.create()
    for _ in range(6):
        clock.now += 50
        assert s.get(sid) is session
    clock.now += 1
    assert s.get(sid) is None  # past 300 s after sign-in, however active


def test_the_oldest_unused_session_goes_when_the_table_is_full() -> None:
    s = Sessions(limit=2)
    a, _ = s.create()
    b, _ = s.create()
    s.get(a)
    c, _ = s.create()
    assert s.get(b) is None and s.get(a) is not None and s.get(c) is not None and len(s) == 2


def test_csrf_token_of_the_session_only() -> None:
    _, session = Sessions().create()
    _, other = Sessions().create()
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(other.csrf)
    assert not session.csrf_matches(None) and not session.csrf_matches("")


def test_failed_sign_ins_brake_that_address_for_the_window() -> None:
    clock = Clock()
    t = LoginThrottle(max_failures=3, window_s=60, clock=clock)
    for _ in range(3):
        assert t.retry_after("10.0.0.1") == 0
        t.failed("10.0.0.1")
        clock.now += 1
    assert t.retry_after("10.0.0.1") == pytest.approx(57)
    assert t.retry_after("10.0.0.2") == 0  # another address is not held up
    clock.now += 57
    assert t.retry_after("10.0.0.1") == 0
    t.failed("10.0.0.1")
    t.succeeded("10.0.0.1")
    assert t.retry_after("10.0.0.1") == 0


def test_the_table_of_failures_is_bounded() -> None:
    t = LoginThrottle(max_clients=10)
    for i in range(100):
        t.failed(f"10.0.0.{i}")
    assert len(t._failures) == 10


@pytest.mark.parametrize(("target", "want"), [
    ("/dlq?region=ZJ", "/dlq?region=ZJ"),
    ("/messages/0190a1b2", "/messages/0190a1b2"),
    (None, "/"), ("", "/"),
    ("https://evil.example/", "/"), ("//evil.example/x", "/"), ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"), ("/ok\r\nSet-Cookie: x=y", "/"), ("/login?next=/", "/"), ("dlq", "/"),
])
def test_after_sign_in_only_a_path_of_the_console(target: str | None, want: str) -> None:
    assert safe_next(target) == want


def test_state_changing_requests_come_from_the_console_itself() -> None:
    here = ("http", "127.0.0.1:8400")
    assert same_origin("http://127.0.0.1:8400", "same-origin", *here)
    assert same_origin("null", "same-origin", *here)  # a form post under Referrer-Policy: the browser vouches
    assert same_origin(None, None, *here)  # a client that is not a browser (curl): the CSRF token still counts
    assert same_origin("http://127.0.0.1:8400", None, *here)
    assert not same_origin("http://evil.example", "cross-site", *here)
    assert not same_origin("http://127.0.0.1:9999", "same-site", *here)
    assert not same_origin("http://evil.example", None, *here)
    assert not same_origin("null", None, *here)
