"""Operator sign-in for the console: the exchange's operator token checked in constant time, server-side sessions
behind a random cookie, a CSRF token per session, a brake on repeated failed sign-ins, and safe redirects.

The cookie carries only a random session id (32 bytes from `secrets`); the server keeps a SHA-256 of it, so the
table of sessions holds nothing a visitor could present. A session ends at sign-out, after `idle_s` without a
request (an open overview's event stream counts: a wall display stays signed in), or `max_age_s` after sign-in,
whichever comes first. Tokens are never logged or kept, only compared.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

COOKIE = "yrdx_console_session"
CSRF_HEADER = "X-CSRF-Token"
MAX_TOKEN_CHARS = 4096


def token_matches(given: str, expected: str | None) -> bool:
    """The operator token typed in equals the exchange's, compared in constant time; never with no token set or an
    empty or oversized one given."""
    if not expected or not given or len(given) > MAX_TOKEN_CHARS:
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class Session:
    csrf: str
    created: float
    seen: float
    label: str  # a short, non-secret name for the logs: the first characters of the id's digest

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                         self.csrf.encode())


class Sessions:
    """The signed-in operators, by the digest of their session id. At most `limit`: the least recently used goes
    first when a new one would pass it."""

    def __init__(self, *, idle_s: float = 1800.0, max_age_s: float = 12 * 3600.0, limit: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self.limit = limit
        self._clock = clock
        self._by_digest: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_digest)

    def create(self) -> tuple[str, Session]:
        """A new session: (the id for the cookie, the session). Always a fresh id, so a sign-in never takes over an
        id a visitor brought along."""
        self._expire()
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        digest = _digest(session_id)
        session = Session(csrf=secrets.token_urlsafe(32), created=now, seen=now, label=digest[:8])
        self._by_digest[digest] = session
        while len(self._by_digest) > self.limit:
            self._by_digest.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of that id (its idle clock restarted), or None."""
        if not session_id or len(session_id) > 128:
            return None
        digest = _digest(session_id)
        session = self._by_digest.get(digest)
        if session is None:
            return None
        now = self._clock()
        if not self._alive(session, now):
            del self._by_digest[digest]
            return None
        session.seen = now
        self._by_digest.move_to_end(digest)
        return session

    def alive(self, session: Session) -> bool:
        """Whether a session held by a long-lived request (the event stream) is still signed in, without counting
        as activity."""
        return any(s is session for s in self._by_digest.values()) and self._alive(session, self._clock())

    def touch(self, session: Session) -> bool:
        """A long-lived request of a signed-in page (the event stream) counts as activity: restarts the idle
        clock of a live session (never past `max_age_s`). False when the session has ended."""
        if not self.alive(session):
            return False
        session.seen = self._clock()
        return True

    def drop(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        return self._by_digest.pop(_digest(session_id), None)

    def _alive(self, session: Session, now: float) -> bool:
        return now - session.seen <= self.idle_s and now - session.created <= self.max_age_s

    def _expire(self) -> None:
        now = self._clock()
        for digest in [d for d, s in self._by_digest.items() if not self._alive(s, now)]:
            del self._by_digest[digest]


class LoginThrottle:
    """At most `max_failures` failed sign-ins per client address within `window_s`; then that address is refused
    until its oldest failure leaves the window. A brake on guessing, not a lock-out of the operator (a success
    clears the address)."""

    def __init__(self, *, max_failures: int = 5, window_s: float = 60.0, max_clients: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str) -> deque[float]:
        now = self._clock()
        times = self._failures.get(client)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[client]
        return times

    def retry_after(self, client: str) -> float:
        """0 when the client may try; otherwise the seconds until it may."""
        times = self._recent(client)
        if len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[0] + self.window_s - self._clock())

    def failed(self, client: str) -> None:
        times = self._failures.setdefault(client, deque())
        times.append(self._clock())
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


def safe_next(target: str | None, default: str = "/") -> str:
    """Where to go after signing in: a path of this console only (no scheme, host, `//host` or backslash tricks),
    else `default`."""
    if not target or len(target) > 2048 or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(c in target for c in "\\\r\n\t") or any(ord(c) < 0x20 for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("/login"):
        return default
    return target


def same_origin(origin: str | None, fetch_site: str | None, scheme: str, host: str) -> bool:
    """A state-changing request comes from this console's own pages. A browser that sends `Sec-Fetch-Site` says
    so itself (same-origin, or none: typed in by the user); otherwise `Origin`, when sent, must be this
    console's (`null`, an opaque origin, is not)."""
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    return origin is None or origin == f"{scheme}://{host}"
