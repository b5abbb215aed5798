"""Gateway configuration: one YAML file per region, checked at start-up with errors that name the bad key.

The format is documented in README.md ("Configuration"). Relative paths are resolved against the folder of
the configuration file, so a generated exchange (`yrdx init`) can be moved as a whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from gateway.wire.envelope import MAX_USE_CAUSE, is_code
from gateway.wire.regions import REGIONS, Topics, check_namespace


class ConfigError(ValueError):
    """A configuration file is unreadable or wrong. `errors` lists every problem found in it, each starting with
    its dotted key; the message is those lines (the first as it is, the others indented below it)."""

    def __init__(self, *errors: str) -> None:
        super().__init__("\n  ".join(errors))
        self.errors: tuple[str, ...] = errors


DEFAULT_COMPRESSION: Final = "zstd"
# Partitions of each inbox topic a gateway creates: the most replicas of one region that can consume at once.
DEFAULT_INBOX_PARTITIONS: Final = 4
# Where `instance_id` comes from when the file has none: the Helm chart sets it to the pod's name.
INSTANCE_ID_ENV: Final = "YRDX_INSTANCE_ID"
_INSTANCE_ID = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")

@dataclass(frozen=True, slots=True)
class Retention:
    """How long the broker keeps what the gateway's topics hold (`kafka.retention`), applied when the topics are
    created. Inboxes and DLQs carry personal data (sealed or not): kept a week, long enough for a gateway that was
    down to catch up and for an operator to replay a dead letter. The audit trail and the checkpoints are kept
    at least six months (Cybersecurity Law art. 21: network logs kept no less than six months); the audit index
    (`yrdx audit index`) is the long-term store."""

    inbox_hours: int = 168
    dlq_hours: int = 168
    audit_days: int = 190


MIN_AUDIT_DAYS: Final = 183  # six months


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    # The SASL user: a plain value or a file (a Kubernetes Secret); the password only ever from a file.
    sasl_username: str | None = None
    sasl_username_file: Path | None = None
    sasl_password_file: Path | None = None
    # The broker answers a fetch as soon as data arrives; this only bounds idle polling (broker CPU).
    fetch_max_wait_ms: int = 200
    linger_ms: int = 2
    # Audit segments are repetitive JSON (4x the bytes of the messages): compression cuts what the broker stores
    # and copies. zstd, not lz4: aiokafka compresses lz4 at level 9 (HC, ~70 MB/s here) with no knob, while zstd
    # level 3 runs ~170 MB/s with half the output (bench: 4,031 vs 3,489 msg/s, every process cheaper).
    compression: str | None = DEFAULT_COMPRESSION
    # Prefix of every topic and consumer group name, so that two exchanges can share one cluster ("" = the default
    # names). `topics` holds the names, built once from it.
    namespace: str = ""
    inbox_partitions: int = DEFAULT_INBOX_PARTITIONS  # for the inbox topics this gateway creates
    retention: Retention = Retention()
    topics: Topics = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "topics", Topics(self.namespace))


@dataclass(frozen=True, slots=True)
class Delivery:
    mode: str  # "webhook" or "inbox"
    url: str | None = None
    timeout_s: float = 5.0
    max_attempts: int = 8
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    concurrency: int = 32


@dataclass(frozen=True, slots=True)
class Platform:
    id: str
    public_key: Path
    may_send: frozenset[str]
    receives: frozenset[str]
    delivery: Delivery
    facade: str | None = None  # the adapter facade (entry point of `yrdx.facades`) this platform may use


@dataclass(frozen=True, slots=True)
class RequestTiming:
    """`requests.<type>`: overrides the deadline and limit of the type's `x-reply` (milliseconds)."""

    deadline_ms: int | None = None
    limit_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Auditor:
    id: str
    public_key: Path


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 256 * 1024
    max_batch_body_bytes: int = 16 * 1024 * 1024
    batch_max: int = 500
    publish_timeout_s: float = 10.0
    jwt_max_lifetime_s: int = 300
    # Admission control: what one gateway holds at once; beyond it ingress answers 429 overloaded.
    max_in_flight_messages: int = 5000
    max_in_flight_bytes: int = 64 * 1024 * 1024
    # and how long a single-message request may wait for its group to leave (README "Errors", 429 overloaded)
    max_queue_wait_ms: int = 250


@dataclass(frozen=True, slots=True)
class FilesConfig:
    """`files:` (README "Files (claim checks)"): where received files are kept, and for how long."""

    spool_dir: Path = Path("files")
    max_bytes: int = 200 * 1024 * 1024  # POST /v1/files answers 413 beyond it
    wait_s: float = 60.0  # how long a message waits for the file it references before `file_incomplete`
    retention_days: float = 7.0  # received files (and partial ones) are deleted after this


@dataclass(frozen=True, slots=True)
class StateRetention:
    """`state.retention` (README "Retention of the state"): how long the state keeps rows it no longer needs. The
    dedupe marks are not set here: they are kept as long as a copy of a message can still arrive
    (gateway/state/retention.py derives it from `kafka.retention`)."""

    days: int = 30  # sent messages and their history, idempotency keys, settled requests
    acked_inbox_hours: int = 24  # acked pull-inbox rows: their envelopes are personal data
    sweep_interval_s: int = 300


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    region: str
    host: str
    port: int
    kafka: KafkaConfig
    certificate: Path
    private_key: Path
    encryption_key: Path | None
    trust_ca: tuple[Path, ...]
    trust_certificates: tuple[Path, ...]
    trust_revoked: frozenset[str]
    encryption_keys: Mapping[str, Path]
    seal: frozenset[str]
    state_path: Path  # the SQLite state file; not opened when state_dsn is set
    limits: Limits
    accept: Mapping[str, frozenset[str]]
    platforms: tuple[Platform, ...]
    # Purpose codes this region allows per type, overriding the schema's `x-use-causes` (gateway/relay/purposes.py).
    purposes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    auditors: tuple[Auditor, ...] = ()
    metrics_token_file: Path | None = None
    schemas_dir: Path | None = None
    # Where GET /v1/audit/messages/{id} keeps its index of yrdx.audit: a SQLite file or a postgresql:// DSN.
    audit_index: str = ""
    audit_enabled: bool = True
    # false: one audit record per message (trail formats 1 and 2) instead of batch records (format 3), for an
    # exchange whose auditors' tools do not read format 3 yet, and for the bench to measure both.
    audit_batch_records: bool = True
    # One replica of several of the region (a pod name): its own audit chain (gateway.audit.model.chain_id).
    instance_id: str | None = None
    # `identity.previous_encryption_keys`: keys still opened during a rotation's overlap (encryption_key is current).
    previous_encryption_keys: tuple[Path, ...] = ()
    # `state.dsn` (or the content of `state.dsn_file`): the state in PostgreSQL; repr=False, it may hold a password.
    state_dsn: str | None = field(default=None, repr=False)
    state_timeout_s: float = 2.0  # bounds each PostgreSQL call (connect, statement, lock wait, client wait)
    state_retention: StateRetention = StateRetention()
    files: FilesConfig = field(default_factory=FilesConfig)
    source: Path | None = field(default=None, compare=False)
    recipients: Mapping[str, Platform] = field(default_factory=dict, compare=False, repr=False)
    _platforms_by_id: Mapping[str, Platform] = field(default_factory=dict, compare=False, repr=False)
    requests: Mapping[str, RequestTiming] = field(default_factory=dict)  # request-reply deadlines per type

    @property
    def topics(self) -> Topics:
        """The Kafka topic and consumer group names of this gateway's exchange (`kafka.namespace`)."""
        return self.kafka.topics

    def platform(self, platform_id: str) -> Platform | None:
        return self._platforms_by_id.get(platform_id)  # per request: a lookup, not a scan

    def recipient_of(self, msg_type: str) -> Platform | None:
        """The local platform that receives messages of this type (first match in config order)."""
        return self.recipients.get(msg_type)

    def __post_init__(self) -> None:
        recipients: dict[str, Platform] = {}
        for p in reversed(self.platforms):  # the first platform in config order wins
            recipients.update(dict.fromkeys(p.receives, p))
        object.__setattr__(self, "recipients", recipients)
        object.__setattr__(self, "_platforms_by_id", {p.id: p for p in reversed(self.platforms)})


_TOP_KEYS = {
    "region", "listen", "kafka", "identity", "trust", "state", "limits", "accept", "platforms", "auditors",
    "metrics", "schemas_dir", "audit_index", "audit_enabled", "audit_batch_records", "seal", "purposes", "requests",
    "files", "instance_id",
}


class _Reader:
    """Reads one mapping of the file, remembers its dotted path and notes every error in the list it shares with
    the other readers of the file, so that one load reports them all. A bad value reads as its default (or an
    empty one): the checks go on, and nothing is built from a file with errors. A `quiet` reader stands for a
    required section that is missing: that one error says it all, the keys inside it add none."""

    def __init__(self, data: object, path: str, base: Path, errors: list[str], quiet: bool = False) -> None:
        self.path = path
        self.base = base
        self.errors = errors
        self.quiet = quiet
        if not isinstance(data, dict):
            self.error(None, f"expected a mapping, got {type(data).__name__}")
            data = {}
        self.data: dict[str, Any] = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str | None, message: str) -> None:
        """Note `key: message` (`name` None: about this mapping itself)."""
        if not self.quiet:
            self.errors.append(f"{self.key(name) if name is not None else self.path or '<root>'}: {message}")

    def reader(self, data: object, path: str) -> _Reader:
        """A reader of another mapping of the same file (a list item), sharing the error list."""
        return _Reader(data, path, self.base, self.errors, self.quiet)

    def only(self, allowed: set[str]) -> None:
        for k in self.data:
            if k not in allowed:
                self.error(str(k), f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def sub(self, name: str, required: bool = False) -> _Reader:
        if name not in self.data or self.data[name] is None:
            if required:
                self.error(name, "required")
            return _Reader({}, self.key(name), self.base, self.errors, quiet=self.quiet or required)
        return self.reader(self.data[name], self.key(name))

    def str_(self, name: str, default: str | None = None, required: bool = False) -> str:
        v = self.data.get(name, default)
        if v is None and (required or default is None):
            self.error(name, "required")
            return ""
        if not isinstance(v, str) or not v:
            self.error(name, "expected a non-empty string")
            return default or ""
        return v

    def opt_str(self, name: str) -> str | None:
        v = self.data.get(name)
        if v is not None and not isinstance(v, str):
            self.error(name, "expected a string")
            return None
        return v

    def int_(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        v = self.data.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or (maximum is not None and v > maximum):
            bound = f" <= {maximum}" if maximum is not None else ""
            self.error(name, f"expected an integer >= {minimum}{bound}")
            return default
        return v

    def float_(self, name: str, default: float) -> float:
        v = self.data.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            self.error(name, "expected a positive number")
            return default
        return float(v)

    def _resolve(self, key: str, v: str, must_exist: bool) -> Path | None:
        p = (self.base / v).resolve() if not os.path.isabs(v) else Path(v)
        if must_exist and not p.exists():
            self.error(key, f"file not found: {p}")
            return None
        return p

    def path_(self, name: str, required: bool = True, must_exist: bool = True) -> Path | None:
        v = self.data.get(name)
        if v is None:
            if required:
                self.error(name, "required")
            return None
        if not isinstance(v, str):
            self.error(name, "expected a path")
            return None
        return self._resolve(name, v, must_exist)

    def paths(self, name: str) -> tuple[Path, ...]:
        v = self.data.get(name, [])
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.error(name, "expected a list of paths")
            return ()
        return tuple(p for i, x in enumerate(v) if (p := self._resolve(f"{name}[{i}]", x, True)) is not None)

    def types(self, name: str) -> frozenset[str]:
        v = self.data.get(name, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            self.error(name, "expected a list of message types")
            return frozenset()
        return frozenset(v)


def _delivery(r: _Reader) -> Delivery:
    r.only({"mode", "url", "timeout_s", "max_attempts", "backoff_initial_s", "backoff_max_s", "concurrency"})
    mode = r.str_("mode", "inbox")
    if mode not in ("webhook", "inbox"):
        r.error("mode", f"expected 'webhook' or 'inbox', got {mode!r}")
    url = r.opt_str("url")
    if mode == "webhook" and not (url and url.startswith(("http://", "https://"))):
        r.error("url", "required (an http(s) URL) when mode is webhook")
    return Delivery(
        mode=mode,
        url=url,
        timeout_s=r.float_("timeout_s", 5.0),
        max_attempts=r.int_("max_attempts", 8, minimum=1),
        backoff_initial_s=r.float_("backoff_initial_s", 0.2),
        backoff_max_s=r.float_("backoff_max_s", 5.0),
        concurrency=r.int_("concurrency", 32, minimum=1),
    )


def _purposes(r: _Reader) -> dict[str, frozenset[str]]:
    """`purposes: {<type>: [<purpose code>, ...]}`: a non-empty list per type."""
    out: dict[str, frozenset[str]] = {}
    for msg_type, codes in r.data.items():
        if not isinstance(codes, list) or not codes or not all(is_code(c, MAX_USE_CAUSE) for c in codes):
            r.error(str(msg_type), f"expected a non-empty list of purpose codes (1 to {MAX_USE_CAUSE} characters: "
                    "letters, digits, . _ : -)")
            continue
        out[str(msg_type)] = frozenset(codes)
    return out


def _thumbprints(r: _Reader, name: str) -> frozenset[str]:
    """Certificate thumbprints (x5t#S256: 43 base64url characters) that are no longer trusted."""
    v = r.data.get(name, [])
    if not isinstance(v, list) or not all(isinstance(x, str) and len(x) == 43 for x in v):
        r.error(name, "expected a list of x5t#S256 certificate thumbprints")
        return frozenset()
    return frozenset(v)


def _region(r: _Reader, name: str, value: object) -> str:
    """`value` as a region, noting an error at `name` of `r` when it is none ("" then)."""
    if value not in REGIONS:
        r.error(name, f"unknown region {value!r} (expected one of {', '.join(REGIONS)})")
        return ""
    return str(value)


def _compression(k: _Reader) -> str | None:
    value = k.data.get("compression", DEFAULT_COMPRESSION)
    if value in (None, "none"):
        return None
    if value not in ("gzip", "lz4", "zstd", "snappy"):
        k.error("compression", "expected none, gzip, lz4, zstd or snappy")
        return DEFAULT_COMPRESSION
    return str(value)


def _namespace(k: _Reader) -> str:
    value = k.data.get("namespace")
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        k.error("namespace", "expected a string")
        return ""
    try:
        return check_namespace(value)
    except ValueError as e:
        k.error("namespace", str(e))
        return ""


def _retention(r: _Reader) -> Retention:
    r.only({"inbox_hours", "dlq_hours", "audit_days"})
    default = Retention()
    return Retention(
        inbox_hours=r.int_("inbox_hours", default.inbox_hours, minimum=1),
        dlq_hours=r.int_("dlq_hours", default.dlq_hours, minimum=1),
        audit_days=r.int_("audit_days", default.audit_days, minimum=MIN_AUDIT_DAYS),
    )


def _flag(r: _Reader, name: str, default: bool) -> bool:
    v = r.data.get(name, default)
    if not isinstance(v, bool):
        r.error(name, "expected true or false")
        return default
    return v


def _audit_index(root: _Reader, region: str) -> str:
    """A postgresql:// DSN as given, or a SQLite path resolved against the config's folder."""
    value = root.data.get("audit_index")
    if value is None:
        return str(root.base / f"var/{region.lower()}/audit-index.sqlite")
    if not isinstance(value, str) or not value.strip():
        root.error("audit_index", "expected a SQLite file path or a postgresql:// DSN")
        return ""
    if value.startswith(("postgresql://", "postgres://")):
        return value
    if "://" in value:
        root.error("audit_index", f"unsupported URL {value.split('://', 1)[0]}:// (SQLite path or postgresql://)")
        return ""
    return str(root.path_("audit_index", must_exist=False))


STATE_STORES = ("path", "dsn", "dsn_file")
MAX_STATE_TIMEOUT_S = 60.0


def _dsn(s: _Reader, name: str, value: object) -> str | None:
    """A postgresql:// connection URI, checked without echoing it (it may carry a password)."""
    if not isinstance(value, str) or not value.strip():
        s.error(name, "expected a postgresql:// DSN")
        return None
    dsn = value.strip()
    if not dsn.startswith(("postgresql://", "postgres://")):
        s.error(name, "expected a postgresql:// DSN (the SQLite file is state.path)")
        return None
    from psycopg import Error, conninfo  # only configurations with a DSN load the driver

    try:
        conninfo.conninfo_to_dict(dsn)
    except Error:
        s.error(name, "not a valid PostgreSQL connection URI (percent-encode reserved characters of the password)")
        return None
    return dsn


def _state(s: _Reader, default_path: Path) -> tuple[Path, str | None, float, StateRetention]:
    """`state:`: a SQLite `path` (the default), or PostgreSQL through `dsn` or `dsn_file` (a file holding the DSN,
    e.g. a mounted secret): exactly one of the three. `timeout_s` bounds every PostgreSQL call; `retention` says
    how long rows are kept."""
    s.only({*STATE_STORES, "timeout_s", "retention"})
    given = [k for k in STATE_STORES if s.data.get(k) is not None]
    for other in given[1:]:
        s.error(other, f"cannot be given with {s.key(given[0])} (one store: a SQLite path or a PostgreSQL DSN)")
    path = s.path_("path", required=False, must_exist=False) or default_path
    dsn = None
    if given[:1] == ["dsn"]:
        dsn = _dsn(s, "dsn", s.data["dsn"])
    elif given[:1] == ["dsn_file"]:
        dsn_file = s.path_("dsn_file")
        if dsn_file is not None:
            try:
                dsn = _dsn(s, "dsn_file", dsn_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as e:
                s.error("dsn_file", f"cannot read {dsn_file}: {getattr(e, 'strerror', None) or e}")
    timeout_s = s.float_("timeout_s", 2.0)
    if timeout_s > MAX_STATE_TIMEOUT_S:
        s.error("timeout_s", f"expected at most {MAX_STATE_TIMEOUT_S:g} seconds (the event loop waits that long)")
        timeout_s = 2.0
    if "timeout_s" in s.data and given[:1] not in (["dsn"], ["dsn_file"]):
        s.error("timeout_s", "applies to PostgreSQL only (state.dsn or state.dsn_file)")
    return path, dsn, timeout_s, _state_retention(s.sub("retention"))


def _state_retention(r: _Reader) -> StateRetention:
    r.only({"days", "acked_inbox_hours", "sweep_interval_s"})
    default = StateRetention()
    return StateRetention(
        days=r.int_("days", default.days, minimum=1, maximum=3650),
        acked_inbox_hours=r.int_("acked_inbox_hours", default.acked_inbox_hours, minimum=1, maximum=8760),
        sweep_interval_s=r.int_("sweep_interval_s", default.sweep_interval_s, minimum=10, maximum=86400),
    )


def _requests(r: _Reader) -> dict[str, RequestTiming]:
    """`requests: {<request type>: {deadline_ms, limit_ms}}`; whether the type has an `x-reply` is checked at
    start-up against the schemas."""
    out: dict[str, RequestTiming] = {}
    for name in r.data:
        t = r.sub(str(name))
        t.only({"deadline_ms", "limit_ms"})
        timing = RequestTiming(
            t.int_("deadline_ms", 0, minimum=1, maximum=600_000) if "deadline_ms" in t.data else None,
            t.int_("limit_ms", 0, minimum=1, maximum=600_000) if "limit_ms" in t.data else None,
        )
        out[str(name)] = timing
    return out


def _files(f: _Reader, default_spool: Path) -> FilesConfig:
    f.only({"spool_dir", "max_bytes", "wait_s", "retention_days"})
    return FilesConfig(
        spool_dir=f.path_("spool_dir", required=False, must_exist=False) or default_spool,
        max_bytes=f.int_("max_bytes", 200 * 1024 * 1024, minimum=1),
        wait_s=f.float_("wait_s", 60.0),
        retention_days=f.float_("retention_days", 7.0),
    )


KAFKA_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def _kafka_security(k: _Reader, protocol: str) -> dict[str, Any]:
    """The TLS and SASL settings of `kafka`, each only where the protocol uses it; files are checked readable
    here, so a gateway with a missing password file refuses to start instead of failing its first connection."""
    tls, sasl = protocol in ("SSL", "SASL_SSL"), protocol.startswith("SASL_")
    given = {name for name, v in k.data.items() if v is not None}  # the chart renders unused keys as null
    unused = set() if tls else {"ssl_cafile", "ssl_certfile", "ssl_keyfile"}
    if not sasl:
        unused |= {"sasl_mechanism", "sasl_username", "sasl_username_file", "sasl_password_file"}
    for name in sorted(given & unused):
        k.error(name, f"does not apply to security_protocol {protocol}")
    out: dict[str, Any] = {n: k.path_(n, required=False) for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")}
    if out["ssl_keyfile"] and not out["ssl_certfile"]:
        k.error("ssl_keyfile", "needs ssl_certfile (the client certificate of the key)")
    out["sasl_mechanism"] = k.opt_str("sasl_mechanism")
    out["sasl_username"] = k.opt_str("sasl_username")
    out["sasl_username_file"] = k.path_("sasl_username_file", required=False)
    out["sasl_password_file"] = k.path_("sasl_password_file", required=False)
    if not sasl:
        return out
    if out["sasl_mechanism"] is None:
        out["sasl_mechanism"] = "SCRAM-SHA-512"
    elif out["sasl_mechanism"] not in SASL_MECHANISMS:
        k.error("sasl_mechanism", f"unsupported {out['sasl_mechanism']!r} (one of {', '.join(SASL_MECHANISMS)})")
    if ("sasl_username" in given) == ("sasl_username_file" in given):
        k.error("sasl_username", f"{protocol} needs exactly one of sasl_username and sasl_username_file")
    if "sasl_password_file" not in given:
        k.error("sasl_password_file", f"required with {protocol} (passwords are read from files only)")
    for name in ("sasl_username_file", "sasl_password_file"):
        path = out[name]
        if path is not None and path.exists() and not read_secret(path):
            k.error(name, f"{path} is empty or unreadable")
    return out


def read_secret(path: Path) -> str:
    """The first line of a secret file (a password, a token), stripped; '' when it is unreadable or empty."""
    try:
        return path.read_text(encoding="utf-8").strip().partition("\n")[0].strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _instance_id(root: _Reader) -> str | None:
    """`instance_id`, else $YRDX_INSTANCE_ID, else none: a lower-case DNS label (a pod name), 1 to 63 characters,
    since it becomes part of the chain id that every audit record and checkpoint of this replica names."""
    value = root.data.get("instance_id", os.environ.get(INSTANCE_ID_ENV) or None)
    if value is None:
        return None
    if not isinstance(value, str) or not _INSTANCE_ID.fullmatch(value):
        root.error("instance_id", "expected a lower-case DNS label of 1 to 63 characters (a-z, 0-9, '-', '.'), "
                                  f"e.g. a pod name (from ${INSTANCE_ID_ENV} when the file has none)")
        return None
    return value


def parse_config(data: object, base: Path, source: Path | None = None) -> GatewayConfig:
    """The configuration in `data` (the parsed YAML); ConfigError listing every error found in it."""
    errors: list[str] = []
    root = _Reader(data, "", base, errors)
    root.only(_TOP_KEYS)
    region = _region(root, "region", root.data.get("region"))

    listen = root.sub("listen")
    listen.only({"host", "port"})
    k = root.sub("kafka")
    k.only({
        "bootstrap_servers", "security_protocol", "sasl_mechanism", "ssl_cafile", "ssl_certfile", "ssl_keyfile",
        "sasl_username", "sasl_username_file", "sasl_password_file", "fetch_max_wait_ms", "linger_ms", "compression",
        "namespace", "inbox_partitions", "retention",
    })
    protocol = k.str_("security_protocol", "PLAINTEXT")
    if protocol not in KAFKA_PROTOCOLS:
        k.error("security_protocol", f"unsupported {protocol!r} (one of {', '.join(KAFKA_PROTOCOLS)})")
    kafka = KafkaConfig(
        # KAFKA_BOOTSTRAP_SERVERS points every gateway at an existing cluster without editing files.
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or k.str_("bootstrap_servers", "127.0.0.1:9092"),
        security_protocol=protocol,
        **_kafka_security(k, protocol),
        fetch_max_wait_ms=k.int_("fetch_max_wait_ms", 200, minimum=1, maximum=5000),
        linger_ms=k.int_("linger_ms", 2, minimum=0, maximum=1000),
        compression=_compression(k),
        namespace=_namespace(k),
        inbox_partitions=k.int_("inbox_partitions", DEFAULT_INBOX_PARTITIONS, minimum=1, maximum=1000),
        retention=_retention(k.sub("retention")),
    )

    ident = root.sub("identity", required=True)
    ident.only({"certificate", "private_key", "encryption_key", "previous_encryption_keys"})
    certificate = ident.path_("certificate")
    private_key = ident.path_("private_key")
    encryption_key = ident.path_("encryption_key", required=False)
    previous_encryption_keys = ident.paths("previous_encryption_keys")
    if previous_encryption_keys and encryption_key is None:
        ident.error("previous_encryption_keys", "needs identity.encryption_key (the current key)")
    trust = root.sub("trust", required=True)
    trust.only({"ca", "certificates", "revoked", "encryption_keys"})
    enc = trust.sub("encryption_keys")
    encryption_keys: dict[str, Path] = {}
    for peer in enc.data:
        if _region(enc, str(peer), peer):
            encryption_keys[str(peer)] = enc.path_(str(peer)) or Path()
    seal = root.types("seal")
    if seal and region:
        for r in REGIONS:
            if r != region and r not in enc.data:
                enc.error(r, "required when seal lists types (to seal for it)")
    trust_ca = trust.paths("ca")
    if not trust.data.get("ca"):  # absent or empty (a bad entry has its own error)
        trust.error("ca", "at least one root certificate is required")
    trust_certificates = trust.paths("certificates")
    trust_revoked = _thumbprints(trust, "revoked")
    state_path, state_dsn, state_timeout_s, state_retention = _state(root.sub("state"),
                                                                     base / f"var/{region.lower()}/state.sqlite")

    lim = root.sub("limits")
    lim.only({"max_body_bytes", "max_batch_body_bytes", "batch_max", "publish_timeout_s", "jwt_max_lifetime_s",
              "max_in_flight_messages", "max_in_flight_bytes", "max_queue_wait_ms"})
    limits = Limits(
        max_body_bytes=lim.int_("max_body_bytes", 256 * 1024, minimum=1024),
        max_batch_body_bytes=lim.int_("max_batch_body_bytes", 16 * 1024 * 1024, minimum=1024),
        batch_max=lim.int_("batch_max", 500, minimum=1, maximum=500),
        publish_timeout_s=lim.float_("publish_timeout_s", 10.0),
        jwt_max_lifetime_s=lim.int_("jwt_max_lifetime_s", 300, minimum=10, maximum=300),
        max_in_flight_messages=lim.int_("max_in_flight_messages", 5000, minimum=1),
        max_in_flight_bytes=lim.int_("max_in_flight_bytes", 64 * 1024 * 1024, minimum=64 * 1024),
        max_queue_wait_ms=lim.int_("max_queue_wait_ms", 250, minimum=1),
    )

    acc = root.sub("accept")
    accept = {}
    for sender in acc.data:
        if _region(acc, str(sender), sender):
            accept[str(sender)] = acc.types(str(sender))

    purposes = _purposes(root.sub("purposes"))

    raw_platforms = root.data.get("platforms") or []
    if not isinstance(raw_platforms, list):
        root.error("platforms", "expected a list")
        raw_platforms = []
    platforms = []
    for i, item in enumerate(raw_platforms):
        p = root.reader(item, f"platforms[{i}]")
        p.only({"id", "public_key", "may_send", "receives", "delivery", "facade"})
        platforms.append(Platform(
            id=p.str_("id", required=True),
            public_key=p.path_("public_key") or Path(),
            may_send=p.types("may_send"),
            receives=p.types("receives"),
            delivery=_delivery(p.sub("delivery")),
            facade=p.opt_str("facade") or None,
        ))
    ids = [p.id for p in platforms if p.id]
    if len(set(ids)) != len(ids):
        root.error("platforms", "duplicate platform id")

    raw_auditors = root.data.get("auditors") or []
    if not isinstance(raw_auditors, list):
        root.error("auditors", "expected a list")
        raw_auditors = []
    auditors = []
    for i, item in enumerate(raw_auditors):
        a = root.reader(item, f"auditors[{i}]")
        a.only({"id", "public_key"})
        auditors.append(Auditor(id=a.str_("id", required=True), public_key=a.path_("public_key") or Path()))

    metrics = root.sub("metrics")
    metrics.only({"bearer_token_file"})
    host = listen.str_("host", "127.0.0.1")
    port = listen.int_("port", 8080, minimum=0, maximum=65535)
    metrics_token_file = metrics.path_("bearer_token_file", required=False)
    schemas_dir = root.path_("schemas_dir", required=False)
    audit_index = _audit_index(root, region)
    audit_enabled = _flag(root, "audit_enabled", True)
    audit_batch_records = _flag(root, "audit_batch_records", True)
    requests = _requests(root.sub("requests"))
    files = _files(root.sub("files"), state_path.with_name("files"))
    instance_id = _instance_id(root)
    if errors:
        raise ConfigError(*errors)
    return GatewayConfig(
        region=region,
        host=host,
        port=port,
        kafka=kafka,
        certificate=certificate or Path(),
        private_key=private_key or Path(),
        encryption_key=encryption_key,
        trust_ca=trust_ca,
        trust_certificates=trust_certificates,
        trust_revoked=trust_revoked,
        encryption_keys=encryption_keys,
        seal=seal,
        state_path=state_path,
        limits=limits,
        accept=accept,
        platforms=tuple(platforms),
        purposes=purposes,
        auditors=tuple(auditors),
        metrics_token_file=metrics_token_file,
        schemas_dir=schemas_dir,
        audit_index=audit_index,
        audit_enabled=audit_enabled,
        audit_batch_records=audit_batch_records,
        instance_id=instance_id,
        previous_encryption_keys=previous_encryption_keys,
        state_dsn=state_dsn,
        state_timeout_s=state_timeout_s,
        state_retention=state_retention,
        files=files,
        source=source,
        requests=requests,
    )


def load_config(path: Path) -> GatewayConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return parse_config(data, path.resolve().parent, source=path)
