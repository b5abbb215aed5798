"""The issuing region's grant book (adapters/grants.py): each refusal has its code, and a grant's count drops
exactly once per fetch, also when fetches race from several connections."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.grants import Fetch, GrantBook
from gateway.schemas.registry import SchemaRegistry

REGISTRY = SchemaRegistry.load()
GRANT: dict[str, Any] = REGISTRY.examples("license.authorization.grant")[0]  # JS may fetch twice, for gov_service
INSIDE = datetime.fromisoformat("2024-03-16T10:00:00+08:00")


def fetch(message_id: str, **over: Any) -> Fetch:
    base = Fetch(message_id, GRANT["grant_id"], GRANT["license_id"], GRANT["holder_id_hash"], "JS",
                 GRANT["grantee_org_code"], "gov_service", INSIDE)
    return dataclasses.replace(base, **over)


@pytest.fixture
def book(tmp_path: Path) -> GrantBook:
    b = GrantBook(tmp_path / "grants.sqlite")
    b.grant(GRANT)
    return b


def test_a_fetch_under_a_valid_grant_is_delivered_and_counted(book: GrantBook) -> None:
    assert (book.decide(fetch("m1")).outcome, book.decide(fetch("m2")).outcome) == ("DELIVERED", "DELIVERED")
    assert book.decide(fetch("m2")).uses_left == 0
    assert book.decide(fetch("m3")).outcome == "GRANT_EXHAUSTED"


def test_the_same_fetch_delivered_twice_counts_once(book: GrantBook) -> None:
    first = book.decide(fetch("m1"))
    assert book.decide(fetch("m1")) == first  # the stored answer, not a second use
    assert book.decide(fetch("m2")).outcome == "DELIVERED"  # the second use is still there


@pytest.mark.parametrize("over,code", [
    ({"grant_id": "GR-UNKNOWN"}, "NO_GRANT"),
    ({"holder_id_hash": "0" * 64}, "NO_GRANT"),
    ({"region": "ZJ"}, "GRANTEE_MISMATCH"),
    ({"org_code": "11310000002420113A"}, "GRANTEE_MISMATCH"),
    ({"at": datetime.fromisoformat("2024-03-23T09:00:00+08:00")}, "GRANT_EXPIRED"),
    ({"at": datetime.fromisoformat("2024-03-15T08:59:00+08:00")}, "GRANT_EXPIRED"),
    ({"use_cause": "supervision"}, "PURPOSE_NOT_GRANTED"),
    ({"use_cause": None}, "PURPOSE_NOT_GRANTED"),
])
def test_each_refusal_has_its_code_and_uses_nothing(book: GrantBook, over: dict[str, Any], code: str) -> None:
    assert book.decide(fetch("bad", **over)).outcome == code
    assert book.decide(fetch("m1")).uses_left == 1  # both uses were still there


def test_a_revoked_grant_refuses_every_later_fetch(book: GrantBook) -> None:
    assert book.decide(fetch("m1")).outcome == "DELIVERED"
    revoke = REGISTRY.examples("license.authorization.revoke")[0]
    assert book.revoke(revoke)
    assert book.decide(fetch("m2")).outcome == "GRANT_REVOKED"
    assert not book.revoke({**revoke, "holder_id_hash": "0" * 64})  # only the holder's own grant


def test_fetches_racing_on_several_connections_use_the_grant_exactly_max_uses_times(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    books = [GrantBook(path) for _ in range(4)]  # as four processes sharing the library's book
    books[0].grant({**GRANT, "max_uses": 5})
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: books[i % 4].decide(fetch(f"m{i}")).outcome, range(40)))
    assert outcomes.count("DELIVERED") == 5
    assert outcomes.count("GRANT_EXHAUSTED") == 35
