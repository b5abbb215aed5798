"""Message schemas: load and compile them once, then validate payloads cheaply (schemas/README.md).

``schemas/<family>/<type>.v<N>.json`` holds one JSON Schema 2020-12 per message type and version. At
start-up :meth:`SchemaRegistry.load` reads every file, checks it against the 2020-12 meta-schema (with the
``jsonschema`` package), checks its layout (``$id``, file name, one ``x-classification`` tag on every
property) and compiles it once with ``jsonschema_rs``, with format validation on and the custom formats of
:mod:`gateway.schemas.formats`.

Per message, :meth:`SchemaRegistry.validate` runs the compiled validator's ``is_valid`` and only walks the
errors when the payload is invalid. Error messages never quote payload values (the validator masks them),
because errors end up in logs, dead-letter headers and problem responses while payloads carry personal data.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, cast

import jsonschema
import jsonschema_rs

from gateway.schemas import xreply
from gateway.schemas.formats import FORMATS
from gateway.schemas.xreply import XReply

__all__ = [
    "CLASSIFICATIONS",
    "DIALECT",
    "SchemaError",
    "SchemaLoadError",
    "SchemaRegistry",
    "jsonschema_format_checker",
    "schema_id",
]

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
CLASSIFICATIONS: Final = frozenset(
    {"PUBLIC", "PERSONAL", "SENSITIVE_ID", "SENSITIVE_MEDICAL", "SENSITIVE_FINANCIAL"}
)
# The repo's top-level schemas/ folder: where a source checkout or an editable install finds them.
SOURCE_ROOT: Final = Path(__file__).resolve().parents[2] / "schemas"
# A wheel carries the same folder as the package data of `gateway._schemas` (pyproject.toml, package-dir).
PACKAGED: Final = "_schemas"


def default_root() -> Path:
    """Where :meth:`SchemaRegistry.load` looks without a ``schemas_dir``: the schemas installed with the package
    (a wheel), else the repo's ``schemas/`` (a source checkout or an editable install)."""
    packaged = importlib.resources.files("gateway").joinpath(PACKAGED)
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return SOURCE_ROOT


# Stands in for the offending value in validator messages: `value is not a "money"`.
_MASK: Final = "value"
_FILE_NAME: Final = re.compile(
    r"(?P<type>[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+)\.v(?P<version>[1-9][0-9]*)\.json"
)


def schema_id(type: str, version: int) -> str:
    """The ``$id`` a schema must carry, e.g. ``urn:yrdx:schema:medical.settlement.request:1``."""
    return f"urn:yrdx:schema:{type}:{version}"


@dataclass(frozen=True, slots=True)
class SchemaError:
    """One reason a payload was refused."""

    pointer: str  # JSON pointer into the payload, e.g. "/setldetail/0/fund_payamt" ("" for the root)
    message: str


class SchemaLoadError(Exception):
    """A schema file is unreadable, misplaced or not a valid schema; the message names the file."""


@dataclass(frozen=True, slots=True)
class _Compiled:
    schema: dict[str, Any]
    validator: jsonschema_rs.Validator
    classifications: Mapping[str, str]
    sensitive: frozenset[str]
    check: Callable[[Mapping[str, Any]], list[SchemaError]] | None
    x_reply: XReply | None  # a request type: the result that answers it (README "Request-reply")


class SchemaRegistry:
    """Every message type and version the gateway knows, with its compiled validator."""

    __slots__ = ("_entries", "_versions")

    def __init__(self, entries: Mapping[tuple[str, int], _Compiled]) -> None:
        self._entries: dict[tuple[str, int], _Compiled] = dict(entries)
        by_type: dict[str, list[int]] = {}
        for type_, version in self._entries:
            by_type.setdefault(type_, []).append(version)
        self._versions: dict[str, tuple[int, ...]] = {t: tuple(sorted(vs)) for t, vs in by_type.items()}

    @classmethod
    def load(cls, root: Path | None = None) -> SchemaRegistry:
        """Read, check and compile every ``<family>/<type>.v<N>.json`` under ``root`` (default: the schemas
        shipped with the package, see :func:`default_root`).

        Raises :class:`SchemaLoadError` naming the file if a file is misplaced, is not JSON, is not a valid
        2020-12 schema, carries the wrong ``$id`` or has a property without a valid ``x-classification``.
        """
        root = default_root() if root is None else root
        if not root.is_dir():
            raise SchemaLoadError(f"{root}: schema directory not found")
        entries: dict[tuple[str, int], _Compiled] = {}
        for path in sorted(root.rglob("*.json")):
            type_, version = _identify(root, path)
            entries[type_, version] = _compile(path, type_, version)
        if not entries:
            raise SchemaLoadError(f"{root}: no schema files (<family>/<type>.v<N>.json)")
        registry = cls(entries)
        registry._check_replies(root)
        return registry

    def _check_replies(self, root: Path) -> None:
        """Every `x-reply` names known types, and its compensation template yields a valid compensation for each
        of the request's examples."""
        for (type_, version), entry in self._entries.items():
            spec = entry.x_reply
            if spec is None:
                continue
            where = f"{root}/{type_.split('.', 1)[0]}/{type_}.v{version}.json"
            if spec.type not in self._versions:
                raise SchemaLoadError(f"{where}: x-reply.type {spec.type!r} has no schema")
            comp = spec.compensation
            if comp is None:
                continue
            if comp.type not in self._versions:
                raise SchemaLoadError(f"{where}: x-reply.compensation.type {comp.type!r} has no schema")
            for i, example in enumerate(entry.schema.get("examples", [])):
                payload = comp.render(example, message_id="0190a0b1-7c3e-7d2a-9b4f-3e5d6c7b8a90",
                                      correlation_id="0190a0b1-7c3e-7d2a-9b4f-3e5d6c7b8a90", msg_type=type_)
                errors = self.validate(comp.type, self._versions[comp.type][-1], payload)
                if errors:
                    raise SchemaLoadError(f"{where}: x-reply.compensation.payload of examples[{i}] is not a valid "
                                          f"{comp.type}: {errors[0].pointer or '/'} {errors[0].message}")

    def x_reply(self, type: str, version: int | None = None) -> XReply | None:
        """The `x-reply` of a request type (default: of its latest version); None for any other type."""
        try:
            return self._entry(type, version).x_reply
        except KeyError:
            return None

    def types(self) -> frozenset[str]:
        """All message types with at least one schema."""
        return frozenset(self._versions)

    def versions(self, type: str) -> tuple[int, ...]:
        """The schema versions of ``type`` in ascending order; ``()`` for an unknown type."""
        return self._versions.get(type, ())

    def latest_version(self, type: str) -> int | None:
        """The highest schema version of ``type``, or None for an unknown type."""
        versions = self._versions.get(type)
        return versions[-1] if versions else None

    def has(self, type: str, version: int) -> bool:
        """Whether a schema exists for this type and version."""
        return (type, version) in self._entries

    def validate(self, type: str, version: int, payload: object) -> list[SchemaError]:
        """All reasons ``payload`` does not match its schema, sorted by pointer; ``[]`` when it is valid.

        Checks the schema first and, only when it passes, the semantic checks of the type (for
        ``medical.settlement.result`` the exact-decimal sums of DOMAIN.md section 2.4). A missing required
        property is reported at its own pointer (``/psn_no``) and each unexpected property at its own pointer.
        Never raises: an unknown type or version (check :meth:`has` first) or a value that is not JSON data
        is reported as an error at the root.
        """
        entry = self._entries.get((type, version))
        if entry is None:
            return [SchemaError("", f"no schema for message type {type!r} version {version!r}")]
        try:
            if entry.validator.is_valid(payload):
                if entry.check is None:
                    return []
                return entry.check(cast(Mapping[str, Any], payload))  # the schema guarantees an object
            return _errors(entry.validator, payload)
        except ValueError:  # jsonschema_rs refuses values JSON cannot carry (sets, bytes, int keys ...)
            return [SchemaError("", "payload is not JSON data")]

    def examples(self, type: str, version: int | None = None) -> list[dict[str, object]]:
        """Copies of the schema's ``examples`` (default: of the latest version). KeyError if unknown."""
        examples: list[dict[str, object]] = self._entry(type, version).schema.get("examples", [])
        return copy.deepcopy(examples)

    def schema(self, type: str, version: int | None = None) -> dict[str, Any]:
        """A copy of the schema document (default: of the latest version). KeyError if unknown."""
        return copy.deepcopy(self._entry(type, version).schema)

    def classifications(self, type: str, version: int) -> Mapping[str, str]:
        """The ``x-classification`` of every property by path (``/setldetail/*/fund_payamt``).

        KeyError if the type or version is unknown.
        """
        return self._entry(type, version).classifications

    def sensitive_pointers(self, type: str, version: int) -> frozenset[str]:
        """Paths of every property classified other than PUBLIC, for log masking. KeyError if unknown.

        Paths are JSON pointers with ``*`` standing for any array index, e.g. ``/psn_no`` and
        ``/setldetail/*/fund_payamt``; a container's own path is included when the container is classified.
        """
        return self._entry(type, version).sensitive

    def _entry(self, type: str, version: int | None) -> _Compiled:
        if version is None:
            version = self.latest_version(type)
        entry = None if version is None else self._entries.get((type, version))
        if entry is None:
            raise KeyError(f"no schema for message type {type!r} version {version!r}")
        return entry


# --- loading ---------------------------------------------------------------------------------------------


def _identify(root: Path, path: Path) -> tuple[str, int]:
    rel = path.relative_to(root)
    match = _FILE_NAME.fullmatch(rel.name)
    if len(rel.parts) != 2 or match is None:
        raise SchemaLoadError(f"{path}: schema files are named <family>/<type>.v<N>.json")
    type_ = match["type"]
    if rel.parts[0] != type_.split(".", 1)[0]:
        raise SchemaLoadError(f"{path}: type {type_!r} belongs in the folder {type_.split('.', 1)[0]!r}")
    return type_, int(match["version"])


def _compile(path: Path, type_: str, version: int) -> _Compiled:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaLoadError(f"{path}: cannot read JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise SchemaLoadError(f"{path}: a schema file holds a JSON object")
    if schema.get("$schema") != DIALECT:
        raise SchemaLoadError(f"{path}: $schema must be {DIALECT!r}")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise SchemaLoadError(
            f"{path}: not valid against the 2020-12 meta-schema at {exc.json_path}: {exc.message}"
        ) from exc
    if schema.get("$id") != schema_id(type_, version):
        raise SchemaLoadError(f"{path}: $id must be {schema_id(type_, version)!r}")
    examples = schema.get("examples", [])
    if not isinstance(examples, list) or not all(isinstance(e, dict) for e in examples):
        raise SchemaLoadError(f"{path}: examples must be a list of payload objects")
    classifications: dict[str, str] = {}
    _classify(schema, "", classifications, path)
    try:
        x_reply = xreply.parse(schema["x-reply"]) if "x-reply" in schema else None
    except xreply.XReplyError as exc:
        raise SchemaLoadError(f"{path}: {exc}") from exc
    try:
        validator = jsonschema_rs.Draft202012Validator(
            schema,
            formats=FORMATS,
            validate_formats=True,
            ignore_unknown_formats=False,
            mask=_MASK,
            offline=True,
        )
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        raise SchemaLoadError(f"{path}: does not compile: {exc}") from exc
    return _Compiled(
        schema=schema,
        validator=validator,
        classifications=classifications,
        sensitive=frozenset(p for p, tag in classifications.items() if tag != "PUBLIC"),
        check=_SEMANTIC_CHECKS.get(type_),
        x_reply=x_reply,
    )


def _classify(node: Mapping[str, Any], pointer: str, out: dict[str, str], path: Path) -> None:
    """Collect the tag of every property of ``node`` (an object schema), of nested objects and array items."""
    properties = node.get("properties", {})
    for name, sub in properties.items():
        here = f"{pointer}/{_escape(name)}"
        tag = sub.get("x-classification") if isinstance(sub, dict) else None
        if tag not in CLASSIFICATIONS:
            allowed = ", ".join(sorted(CLASSIFICATIONS))
            raise SchemaLoadError(f"{path}: property {here} needs an x-classification, one of {allowed}")
        out[here] = tag
        if isinstance(sub, dict):
            _classify_value(sub, here, out, path)


def _classify_value(node: Mapping[str, Any], pointer: str, out: dict[str, str], path: Path) -> None:
    _classify(node, pointer, out, path)
    items = node.get("items")
    if isinstance(items, dict):
        _classify_value(items, f"{pointer}/*", out, path)


# --- errors ----------------------------------------------------------------------------------------------


def _escape(token: str | int) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def _pointer(path: Iterable[str | int]) -> str:
    return "".join(f"/{_escape(token)}" for token in path)


def _errors(validator: jsonschema_rs.Validator, payload: object) -> list[SchemaError]:
    found: set[SchemaError] = set()
    for error in validator.iter_errors(payload):
        at = _pointer(error.instance_path)
        kind = error.kind
        if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
            found.add(SchemaError(f"{at}/{_escape(kind.property)}", "is a required property"))
        elif isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties):
            found.update(SchemaError(f"{at}/{_escape(name)}", "is not allowed") for name in kind.unexpected)
        else:
            found.add(SchemaError(at, error.message))
    return sorted(found, key=lambda e: (e.pointer, e.message))


# --- semantic checks: run only on schema-valid payloads ---------------------------------------------------


def _settlement_sums(payload: Mapping[str, Any]) -> list[SchemaError]:
    """The sanity invariants of a settlement result (DOMAIN.md section 2.4), in exact decimal.

    Each violation points at the total that disagrees with its parts.
    """
    try:
        medfee = Decimal(payload["medfee_sumamt"])
        fund = Decimal(payload["fund_pay_sumamt"])
        psn_part = Decimal(payload["psn_part_amt"])
        acct = Decimal(payload["acct_pay"])
        cash = Decimal(payload["psn_cash_pay"])
        hosp = Decimal(payload.get("hosp_part_amt", "0"))
        detail = sum((Decimal(line["fund_payamt"]) for line in payload["setldetail"]), Decimal(0))
    except (KeyError, TypeError, ArithmeticError):  # a later version without these fields: nothing to check
        return []
    errors = []
    if fund + psn_part + hosp != medfee:
        errors.append(
            SchemaError("/medfee_sumamt", "must equal fund_pay_sumamt + psn_part_amt (+ hosp_part_amt)")
        )
    if acct + cash != psn_part:
        errors.append(SchemaError("/psn_part_amt", "must equal acct_pay + psn_cash_pay"))
    if detail != fund:
        errors.append(SchemaError("/fund_pay_sumamt", "must equal the sum of setldetail[].fund_payamt"))
    return errors


# Checks a schema cannot express, by message type (every version); they run after the schema passed.
_SEMANTIC_CHECKS: Final[dict[str, Callable[[Mapping[str, Any]], list[SchemaError]]]] = {
    "medical.settlement.result": _settlement_sums,
    "medical.settlement.pre.result": _settlement_sums,  # the same split, not yet committed (NHSA 2206)
    "medical.settlement.cancel.result": _settlement_sums,  # the cancelled split, negated (NHSA 2208)
}


# --- the reference validator -------------------------------------------------------------------------------

_DATE_TIME: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)


def _is_date_time(s: str) -> bool:
    """RFC 3339 ``date-time`` (the ``jsonschema`` package checks it only with an optional dependency)."""
    m = _DATE_TIME.fullmatch(s)
    if m is None:
        return False
    try:
        date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return False
    hour, minute, second = int(m[4]), int(m[5]), int(m[6])
    if hour > 23 or minute > 59 or second > 60:
        return False
    return m[8] is None or (int(m[8]) <= 23 and int(m[9]) <= 59)


def jsonschema_format_checker() -> Any:
    """A ``jsonschema.FormatChecker`` that checks the same formats as the compiled validators.

    For the ``jsonschema`` package as a reference implementation (differential tests, benchmarks); the gateway
    itself validates with ``jsonschema_rs``.
    """
    checker = jsonschema.FormatChecker()
    for name, check in {**FORMATS, "date-time": _is_date_time}.items():
        checker.checks(name)(_strings_only(check))
    return checker


def _strings_only(check: Callable[[str], bool]) -> Callable[[object], bool]:
    def format_check(instance: object) -> bool:
        return not isinstance(instance, str) or check(instance)

    return format_check
