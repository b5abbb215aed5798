"""A real PostgreSQL server for the integration and end-to-end tests (fixtures `postgres`, `postgres_db`, imported
by tests/conftest.py): Debian's package, started by scripts/postgres.sh on a free
loopback port for the session (installed first if the machine lacks it), stopped and removed at the end."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from gateway.dev.local_kafka import free_port
from tests._util import ROOT

SCRIPT = ROOT / "scripts" / "postgres.sh"


def _script(*args: str) -> None:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=900)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"scripts/postgres.sh {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The DSN of a database on a PostgreSQL server of its own (127.0.0.1, a free port, trust auth)."""
    # Under /tmp, not pytest's tmp_path: the server runs as the postgres user, which root's 0700 folders shut out.
    home = Path(tempfile.mkdtemp(prefix="yrdx-pg-"))
    port = free_port()
    try:
        _script("start", str(home), str(port))
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as db:
            db.execute("CREATE DATABASE yrdx_test")
        yield f"postgresql://postgres@127.0.0.1:{port}/yrdx_test"
    finally:
        _script("stop", str(home))
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres: str) -> Iterator[str]:
    """A fresh, empty database on that server for one test, dropped afterwards."""
    admin = postgres.rsplit("/", 1)[0] + "/postgres"
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield postgres.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
