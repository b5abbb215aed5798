"""The request-reply table of one gateway, built once at start-up: for each request type (a schema with
`x-reply`), the result type that answers it, the default wait and the longest one a caller may ask for (the
schema's, or the config's `requests.<type>` override), and its compensation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config import RequestTiming
from gateway.schemas.registry import SchemaRegistry
from gateway.schemas.xreply import Compensation
from gateway.wire.problems import Problem


class RequestTableError(ValueError):
    """`requests:` of the config names a type without `x-reply`, or a deadline above its limit."""


@dataclass(frozen=True, slots=True)
class ReplyRule:
    request_type: str
    reply_type: str
    deadline_ms: int
    limit_ms: int
    compensation: Compensation | None

    def wait_ms(self, asked: object) -> int | Problem:
        """How long this call waits: the default, or what the caller asked for, which must be an integer of
        milliseconds from 1 to the limit (refused, never clamped, like the inbox's `wait`)."""
        if asked is None:
            return self.deadline_ms
        if isinstance(asked, bool) or not isinstance(asked, int) or not 1 <= asked <= self.limit_ms:
            return Problem("invalid_request", f"deadline_ms must be an integer from 1 to {self.limit_ms} for "
                                              f"{self.request_type}")
        return asked


class ReplyTable:
    def __init__(self, registry: SchemaRegistry, overrides: Mapping[str, RequestTiming]) -> None:
        rules: dict[str, ReplyRule] = {}
        for msg_type in sorted(registry.types()):
            spec = registry.x_reply(msg_type)
            if spec is None:
                continue
            timing = overrides.get(msg_type, RequestTiming())
            rule = ReplyRule(msg_type, spec.type, timing.deadline_ms or spec.deadline_ms,
                             timing.limit_ms or spec.limit_ms, spec.compensation)
            if rule.deadline_ms > rule.limit_ms:
                raise RequestTableError(f"requests.{msg_type}: deadline_ms {rule.deadline_ms} exceeds limit_ms "
                                        f"{rule.limit_ms}")
            rules[msg_type] = rule
        unknown = sorted(set(overrides) - set(rules))
        if unknown:
            raise RequestTableError(f"requests.{unknown[0]}: not a request type (its schema has no x-reply)")
        self._rules = rules
        self.reply_types = frozenset(r.reply_type for r in rules.values())

    def rule(self, msg_type: str) -> ReplyRule | None:
        return self._rules.get(msg_type)

    def rules(self) -> list[ReplyRule]:
        return list(self._rules.values())
