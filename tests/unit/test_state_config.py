"""The `state:` section of a gateway's configuration (gateway/config.py): a SQLite `path` (the default) or a
PostgreSQL `dsn` / `dsn_file`, exactly one, `timeout_s` for PostgreSQL and `retention`; each mistake names its key,
and a password in a DSN is never echoed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, GatewayConfig, StateRetention, parse_config
from gateway.dev.exchange import init_exchange

DSN = "postgresql://yrdx:s3cret@db.example:5432/yrdx_sh?sslmode=verify-full"


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    ex = init_exchange(tmp_path_factory.mktemp("cfg"), base_port=0)
    path = ex.config_path("SH")
    return path.parent, yaml.safe_load(path.read_text())


def parse(doc: tuple[Path, dict[str, Any]], state: object) -> GatewayConfig:
    base, good = doc
    return parse_config({**good, "state": state}, base)


def errors(doc: tuple[Path, dict[str, Any]], state: object) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as e:
        parse(doc, state)
    assert "s3cret" not in str(e.value)
    return e.value.errors


def test_without_a_state_section_the_state_is_sqlite_beside_the_config(doc: tuple[Path, dict[str, Any]]) -> None:
    base, good = doc
    cfg = parse_config({k: v for k, v in good.items() if k != "state"}, base)
    assert cfg.state_path == base / "var/sh/state.sqlite" and cfg.state_dsn is None


def test_a_path_is_a_sqlite_file(doc: tuple[Path, dict[str, Any]]) -> None:
    cfg = parse(doc, {"path": "elsewhere/s.sqlite"})
    assert cfg.state_path == (doc[0] / "elsewhere/s.sqlite").resolve() and cfg.state_dsn is None


def test_a_dsn_is_postgresql_and_never_printed(doc: tuple[Path, dict[str, Any]]) -> None:
    cfg = parse(doc, {"dsn": DSN, "timeout_s": 0.5})
    assert (cfg.state_dsn, cfg.state_timeout_s) == (DSN, 0.5)
    assert "s3cret" not in repr(cfg)
    assert parse(doc, {"dsn": DSN}).state_timeout_s == 2.0


def test_a_dsn_file_holds_the_dsn(doc: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    secret = tmp_path / "state.dsn"
    secret.write_text(f"  {DSN}\n")
    assert parse(doc, {"dsn_file": str(secret)}).state_dsn == DSN


def test_exactly_one_store(doc: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    secret = tmp_path / "state.dsn"
    secret.write_text(DSN)
    assert errors(doc, {"path": "s.sqlite", "dsn": DSN, "dsn_file": str(secret)}) == (
        "state.dsn: cannot be given with state.path (one store: a SQLite path or a PostgreSQL DSN)",
        "state.dsn_file: cannot be given with state.path (one store: a SQLite path or a PostgreSQL DSN)",
    )


@pytest.mark.parametrize(("state", "expected"), [
    ({"dsn": "mysql://u:s3cret@h/db"}, "state.dsn: expected a postgresql:// DSN (the SQLite file is state.path)"),
    ({"dsn": ""}, "state.dsn: expected a postgresql:// DSN"),
    ({"dsn": 5432}, "state.dsn: expected a postgresql:// DSN"),
    ({"dsn": "postgresql://u:s3cret pw@h/db"},
     "state.dsn: not a valid PostgreSQL connection URI (percent-encode reserved characters of the password)"),
    ({"dsn": DSN, "timeout_s": 0}, "state.timeout_s: expected a positive number"),
    ({"dsn": DSN, "timeout_s": 600}, "state.timeout_s: expected at most 60 seconds (the event loop waits that long)"),
    ({"path": "s.sqlite", "timeout_s": 1}, "state.timeout_s: applies to PostgreSQL only (state.dsn or state.dsn_file)"),
    ({"dsn_file": "no/such/file"}, "state.dsn_file: file not found"),
    ({"path": "s.sqlite", "pool": 4}, "state.pool: unknown key (allowed: dsn, dsn_file, path, retention, timeout_s)"),
    ({"retention": {"days": 0}}, "state.retention.days: expected an integer >= 1 <= 3650"),
    ({"retention": {"days": 30.5}}, "state.retention.days: expected an integer >= 1 <= 3650"),
    ({"retention": {"acked_inbox_hours": 0}}, "state.retention.acked_inbox_hours: expected an integer >= 1 <= 8760"),
    ({"retention": {"acked_inbox_hours": "24"}},
     "state.retention.acked_inbox_hours: expected an integer >= 1 <= 8760"),
    ({"retention": {"sweep_interval_s": 5}}, "state.retention.sweep_interval_s: expected an integer >= 10 <= 86400"),
    ({"retention": {"sweep_interval_s": True}},
     "state.retention.sweep_interval_s: expected an integer >= 10 <= 86400"),
    ({"retention": {"seen_hours": 1}},
     "state.retention.seen_hours: unknown key (allowed: acked_inbox_hours, days, sweep_interval_s)"),
    ({"retention": 30}, "state.retention: expected a mapping, got int"),
    ("s.sqlite", "state: expected a mapping, got str"),
])
def test_each_mistake_names_its_key(doc: tuple[Path, dict[str, Any]], state: object, expected: str) -> None:
    (error,) = errors(doc, state)
    assert error.startswith(expected)


def test_a_dsn_file_with_something_else_in_it(doc: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    secret = tmp_path / "state.dsn"
    secret.write_text("host=db password=s3cret\n")
    assert errors(doc, {"dsn_file": str(secret)}) == (
        "state.dsn_file: expected a postgresql:// DSN (the SQLite file is state.path)",)
    secret.write_bytes(b"\xff\xfe")
    (error,) = errors(doc, {"dsn_file": str(secret)})
    assert error.startswith(f"state.dsn_file: cannot read {secret}")


def test_retention_has_its_defaults_and_takes_values(doc: tuple[Path, dict[str, Any]]) -> None:
    assert parse(doc, {"path": "s.sqlite"}).state_retention == StateRetention(30, 24, 300)
    cfg = parse(doc, {"dsn": DSN, "retention": {"days": 90, "acked_inbox_hours": 1, "sweep_interval_s": 60}})
    assert cfg.state_retention == StateRetention(days=90, acked_inbox_hours=1, sweep_interval_s=60)
