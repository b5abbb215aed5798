"""Fail closed: whether this gateway's own certificate may sign right now (not expired, already valid, not
revoked), and how long every certificate it relies on has left. A gateway whose identity is not valid refuses
new messages (503) and says so on /readyz, while it goes on delivering what it has already consumed."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator

from gateway.crypto.trust import TrustedSigner, TrustStore
from gateway.metrics import Metrics
from gateway.wire.problems import Problem

log = logging.getLogger(__name__)

WARN_BEFORE = dt.timedelta(days=30)  # expiry warnings in the log this long ahead (once a day per certificate)


def identity_problem(own: TrustedSigner, trust: TrustStore, now: dt.datetime) -> Problem | None:
    if trust.is_revoked(own.thumbprint):
        return Problem("identity_revoked", f"this gateway's certificate {own.thumbprint} is revoked")
    if now < own.not_before:
        return Problem("identity_expired", f"this gateway's certificate is valid from {own.not_before.isoformat()}")
    if now > own.not_after:
        return Problem("identity_expired", f"this gateway's certificate expired at {own.not_after.isoformat()}")
    return None


class IdentityWatch:
    def __init__(self, own: TrustedSigner, trust: TrustStore, metrics: Metrics) -> None:
        self.own = own
        self._trust = trust
        self._metrics = metrics
        self._warned: dict[str, float] = {}  # thumbprint -> when it was last warned about
        self.problem: Problem | None = identity_problem(own, trust, dt.datetime.now(dt.UTC))

    def check(self) -> Problem | None:
        """Called every few seconds: the identity verdict, certificate expiry gauges and warnings."""
        now = dt.datetime.now(dt.UTC)
        before, self.problem = self.problem, identity_problem(self.own, self._trust, now)
        if self.problem is not None and before is None:
            log.error("this gateway's identity is no longer valid: refusing new messages",
                      extra={"code": self.problem.code, "detail": self.problem.detail})
        soonest: dict[tuple[str, str], float] = {}  # two certificates of one region (a rotation): the sooner
        for role, name, thumbprint, not_after in self._certificates():
            left = (not_after - now).total_seconds()
            soonest[(role, name)] = min(left, soonest.get((role, name), left))
            if left < WARN_BEFORE.total_seconds() and time.monotonic() - self._warned.get(thumbprint, -1e9) > 86400:
                self._warned[thumbprint] = time.monotonic()
                log.warning("certificate expires soon", extra={"role": role, "name": name, "thumbprint": thumbprint,
                                                               "expires_at": not_after.isoformat()})
        for (role, name), left in soonest.items():
            self._metrics.certificate_expiry.labels(role, name).set(left)
        return self.problem

    def _certificates(self) -> Iterator[tuple[str, str, str, dt.datetime]]:
        yield "own", self.own.region, self.own.thumbprint, self.own.not_after
        for signer in self._trust.known():
            if signer.thumbprint != self.own.thumbprint:
                yield "peer", signer.region, signer.thumbprint, signer.not_after
        for root in self._trust.roots:
            cn = root.subject.rfc4514_string()[:64]
            yield "root", cn, cn, root.not_valid_after_utc
