"""The use context of a message (issue 12): who asks (`operator`) and why (`use_cause`, a purpose code).

Built once from the schemas and the config: a type whose schema lists `x-use-causes` reads personal data or
licences, so its messages must carry both an operator and a use_cause among the purposes this region allows for it
(the schema's list, or the config's `purposes:` entry for the type, which overrides it). Ingress checks with the
sender's view (HTTP 400 `purpose_required` / 403 `not_permitted_purpose`); egress checks again with the receiver's
(a dead letter with the same code), since each region decides what its data may be used for.

The same rules name what goes into the audit records: the operator's id, role and department codes, the purpose
code, the holder's pseudonym (`x-subject`: a JSON pointer to a lowercase-hex keyed hash, never an ID number) that
`GET /v1/usage` finds the records by, and the business stage of a case (`x-stage`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.schemas.registry import SchemaRegistry
from gateway.wire.envelope import Operator

_PSEUDONYM = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class UseRule:
    causes: frozenset[str]  # empty: the type reads no personal data, no use context is required
    subject: tuple[str, ...] = ()  # the path of the holder's pseudonym in the payload
    stage: str | None = None


def _pointer(value: object) -> tuple[str, ...]:
    if not isinstance(value, str) or not value.startswith("/"):
        return ()
    return tuple(value[1:].split("/"))


class UsePolicy:
    def __init__(self, registry: SchemaRegistry, overrides: Mapping[str, frozenset[str]] | None = None) -> None:
        rules: dict[str, UseRule] = {}
        for msg_type in registry.types():
            schema = registry.schema(msg_type)
            causes = frozenset(schema.get("x-use-causes", ()))
            stage = schema.get("x-stage")
            rules[msg_type] = UseRule(causes, _pointer(schema.get("x-subject")),
                                      stage if isinstance(stage, str) else None)
        for msg_type, causes in (overrides or {}).items():
            rule = rules.get(msg_type, UseRule(frozenset()))
            rules[msg_type] = UseRule(causes, rule.subject, rule.stage)
        self._rules = rules

    def allowed(self, msg_type: str) -> frozenset[str]:
        """The purpose codes this region allows for the type; empty when the type needs no use context."""
        rule = self._rules.get(msg_type)
        return rule.causes if rule is not None else frozenset()

    def refusal(self, msg_type: str, operator: Operator | None, use_cause: str | None) -> tuple[str, str] | None:
        """(code, detail) when the use context does not permit this message; None when it does."""
        allowed = self.allowed(msg_type)
        if not allowed:
            return None
        if operator is None or use_cause is None:
            return "purpose_required", f"{msg_type} reads personal data or licences: operator and use_cause required"
        if use_cause not in allowed:
            return "not_permitted_purpose", f"use_cause {use_cause} is not allowed for {msg_type} here " \
                f"(allowed: {', '.join(sorted(allowed))})"
        return None

    def audit_detail(self, msg_type: str, operator: Operator | None, use_cause: str | None,
                     payload: object) -> dict[str, str]:
        """What the audit records of this message say about its use: codes and a pseudonym, never a name."""
        detail: dict[str, str] = {}
        if operator is not None:
            detail["operator_id"] = operator.id
            detail["operator_role"] = operator.role
            if operator.department:
                detail["operator_department"] = operator.department
        if use_cause is not None:
            detail["use_cause"] = use_cause
        rule = self._rules.get(msg_type)
        if rule is None:
            return detail
        if rule.stage is not None:
            detail["business_stage"] = rule.stage
        subject = _at(payload, rule.subject) if rule.subject else None
        if isinstance(subject, str) and _PSEUDONYM.fullmatch(subject):
            detail["subject"] = subject
        return detail


def _at(doc: object, path: tuple[str, ...]) -> object:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc
