"""Retention of the state on a real PostgreSQL server: the whole suite of tests/unit/test_state_retention.py on a
database of its own (two sweeps at once there are two replicas' sweeps on one database)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.test_state_postgres import PostgresDatabase
from tests.unit.test_state_retention import RetentionContract


@pytest.fixture
def db(postgres_db: str) -> Iterator[PostgresDatabase]:
    d = PostgresDatabase(postgres_db)
    yield d
    d.close()


class TestPostgres(RetentionContract):
    """The suite, on PostgreSQL (the `db` fixture above)."""
