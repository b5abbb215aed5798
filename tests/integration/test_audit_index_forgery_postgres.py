"""The forgery behaviours of the audit index (tests/unit/test_audit_index_forgery.py) against a real PostgreSQL
server (tests/integration/conftest.py) as well as SQLite: the same functions, collected here again through the
parametrized `index` fixture below, as tests/integration/test_audit_index_postgres.py does for the others."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.audit.index import AuditIndex, open_index
from tests.unit.test_audit_index_forgery import (  # the fixtures they take, and the behaviours
    pki,
    test_a_forged_chain_published_first_does_not_hide_the_genuine_one,
    test_a_genuine_segment_whose_records_were_changed_is_kept_apart_as_edited,
    test_a_message_only_forged_records_name_is_traced_with_its_conflicts_alone,
    test_a_record_of_another_region_inside_a_signed_segment_is_not_indexed_as_that_regions,
    test_reading_the_same_forged_segments_again_reports_them_once,
    test_two_validly_signed_records_under_one_seq_keep_the_first_and_report_the_other,
    test_without_a_trust_store_the_first_chain_stays_and_the_other_is_still_reported,
    trust,
    world,
)

__all__ = [
    "pki",
    "test_a_forged_chain_published_first_does_not_hide_the_genuine_one",
    "test_a_genuine_segment_whose_records_were_changed_is_kept_apart_as_edited",
    "test_a_message_only_forged_records_name_is_traced_with_its_conflicts_alone",
    "test_a_record_of_another_region_inside_a_signed_segment_is_not_indexed_as_that_regions",
    "test_reading_the_same_forged_segments_again_reports_them_once",
    "test_two_validly_signed_records_under_one_seq_keep_the_first_and_report_the_other",
    "test_without_a_trust_store_the_first_chain_stays_and_the_other_is_still_reported",
    "trust",
    "world",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditIndex]:
    target = str(tmp_path / "audit-index.sqlite") if request.param == "sqlite" else request.getfixturevalue(
        "postgres_db")
    with open_index(target) as ix:
        assert ix.where.startswith(request.param)
        yield ix


def test_an_index_of_the_old_layout_is_rebuilt_in_postgresql(postgres_db: str) -> None:
    import psycopg

    with psycopg.connect(postgres_db, autocommit=True) as db:  # the layout before conflicts kept their record
        db.execute("CREATE TABLE audit_conflicts (region TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL, "
                   "topic_partition INTEGER NOT NULL, topic_offset BIGINT NOT NULL, PRIMARY KEY (region, seq, hash))")
    with open_index(postgres_db) as ix:
        assert ix.counts() == {"records": 0, "segments": 0, "conflicts": 0}
        assert ix.conflicts_with("message_id", ["x"]) == []  # the new columns are there
