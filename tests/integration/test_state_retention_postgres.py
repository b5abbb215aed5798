"""Retention of the state on a real PostgreSQL server: the whole suite of tests/unit/test_state_retention.py on a
database of its own (two sweeps at once there are two replicas' sweeps on one database)."""

from __future__ import annotations

from tests.integration.test_state_postgres import db
from tests.unit.test_state_retention import RetentionContract

__all__ = ["db"]  # the fixture: a PostgresDatabase of its own per test


class TestPostgres(RetentionContract):
    """The suite, on PostgreSQL (the `db` fixture of test_state_postgres)."""
