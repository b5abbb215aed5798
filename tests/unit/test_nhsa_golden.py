"""Golden files of the NHSA facade, one folder per transaction (tests/golden/nhsa/<infno>/): the HIS request,
the canonical message the facade hands to request-reply, the canonical result, and the HIS answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.nhsa.transactions import TRANSACTIONS
from gateway.schemas.registry import SchemaRegistry
from tests.unit._nhsa import facade, replied

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "nhsa"
INFNOS = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load()


def _read(infno: str, name: str) -> Any:
    return json.loads((GOLDEN / infno / name).read_text(encoding="utf-8"))


def test_every_transaction_has_its_golden_files() -> None:
    assert INFNOS == sorted(TRANSACTIONS)
    for infno in INFNOS:
        assert {p.name for p in (GOLDEN / infno).iterdir()} == {
            "request.json", "canonical.json", "reply.json", "answer.json"}


@pytest.mark.parametrize("infno", INFNOS)
async def test_his_request_becomes_the_golden_canonical_message_and_answer(
    registry: SchemaRegistry, infno: str
) -> None:
    reply = _read(infno, "reply.json")
    replies = replied(reply["type"], reply["payload"])
    answer = await facade(registry, replies).transact("sh-platform", (GOLDEN / infno / "request.json").read_bytes())
    assert answer == _read(infno, "answer.json")
    [call] = replies.calls
    assert call == _read(infno, "canonical.json")
    message = call["message"]
    assert registry.validate(message["type"], 1, message["payload"]) == []
    assert registry.schema(message["type"])["x-reply"]["type"] == reply["type"]
    assert registry.validate(reply["type"], 1, reply["payload"]) == []


def test_money_in_the_golden_files_is_never_a_json_number() -> None:
    def numbers(v: Any, key: str = "") -> list[str]:
        if isinstance(v, dict):
            return [k for kk, vv in v.items() for k in numbers(vv, kk)]
        if isinstance(v, list):
            return [k for vv in v for k in numbers(vv, key)]
        return [key] if isinstance(v, float) else []

    for infno in INFNOS:
        for name in ("canonical.json", "reply.json", "answer.json"):
            assert numbers(_read(infno, name)) == [], (infno, name)
