"""`x-reply` in the schema registry (gateway/schemas/xreply.py, registry.py): the four request types carry it,
and a block naming unknown types, a bad deadline or a template that yields an invalid compensation stops the load.
The config's `requests:` overrides (gateway/relay/requests_table.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.config import RequestTiming
from gateway.relay.requests_table import ReplyTable, RequestTableError
from gateway.schemas.registry import SOURCE_ROOT, SchemaLoadError, SchemaRegistry

REGISTRY = SchemaRegistry.load()
SETTLEMENT = "medical.settlement.request"


@pytest.mark.parametrize(("request_type", "reply_type", "deadline_ms", "limit_ms", "compensation"), [
    ("identity.verify.request", "identity.verify.result", 2000, 10000, None),
    ("license.verify.request", "license.verify.result", 2000, 10000, None),
    ("medical.filing.request", "medical.filing.result", 5000, 30000, None),
    (SETTLEMENT, "medical.settlement.result", 5000, 30000, "medical.reversal"),
])
def test_the_request_types_carry_their_reply_and_deadlines(request_type: str, reply_type: str, deadline_ms: int,
                                                           limit_ms: int, compensation: str | None) -> None:
    spec = REGISTRY.x_reply(request_type)
    assert spec is not None and (spec.type, spec.deadline_ms, spec.limit_ms) == (reply_type, deadline_ms, limit_ms)
    assert (spec.compensation.type if spec.compensation else None) == compensation
    assert REGISTRY.x_reply(reply_type) is None and REGISTRY.x_reply("no.such.type") is None


def test_the_reversal_template_cites_the_request() -> None:
    spec = REGISTRY.x_reply(SETTLEMENT)
    assert spec is not None and spec.compensation is not None
    request = REGISTRY.examples(SETTLEMENT)[1]
    payload = spec.compensation.render(request, message_id="0190a0b1-7c3e-7d2a-9b4f-3e5d6c7b8a90",
                                       correlation_id="c", msg_type=SETTLEMENT)
    assert payload["omsgid"] == "0190a0b1-7c3e-7d2a-9b4f-3e5d6c7b8a90" and payload["oinfno"] == "2207"
    assert payload["psn_no"] == request["psn_no"] and payload["insuplc_admdvs"] == request["insuplc_admdvs"]
    assert REGISTRY.validate("medical.reversal", 1, payload) == []
    # A path the request lacks leaves the field out (the load-time check saw to it that none is required).
    assert "insuplc_admdvs" not in spec.compensation.render({"psn_no": "x"}, message_id="m", correlation_id="c",
                                                            msg_type=SETTLEMENT)


def _with_x_reply(tmp_path: Path, block: Any) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(SOURCE_ROOT, root)
    path = root / "medical" / f"{SETTLEMENT}.v1.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["x-reply"] = block
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return root


GOOD: dict[str, Any] = {"type": "medical.settlement.result", "deadline_ms": 5000, "limit_ms": 30000}


@pytest.mark.parametrize(("block", "message"), [
    ({**GOOD, "type": "medical.nothing.result"}, "x-reply.type 'medical.nothing.result' has no schema"),
    ({**GOOD, "deadline_ms": 40000}, "must not exceed"),
    ({**GOOD, "limit_ms": 0}, "limit_ms must be an integer"),
    ({**GOOD, "retries": 3}, "unknown key"),
    ({**GOOD, "compensation": {"type": "medical.undo", "payload": {}}}, "compensation.type 'medical.undo'"),
    ({**GOOD, "compensation": {"type": "medical.reversal", "payload": {"omsgid": "$message_id"}}},
     "is not a valid medical.reversal"),  # psn_no and oinfno missing
    ({**GOOD, "compensation": {"type": "medical.reversal",
                               "payload": {"omsgid": "$message_id", "oinfno": "2207", "psn_no": "$request.nope"}}},
     "is not a valid medical.reversal"),  # a path no example has
    ({**GOOD, "compensation": {"type": "medical.reversal", "payload": {"omsgid": "$whoever"}}},
     "unknown reference"),
])
def test_a_bad_x_reply_stops_the_load(tmp_path: Path, block: Any, message: str) -> None:
    with pytest.raises(SchemaLoadError, match=message):
        SchemaRegistry.load(_with_x_reply(tmp_path, block))


def test_the_config_overrides_deadlines_within_their_limit() -> None:
    table = ReplyTable(REGISTRY, {SETTLEMENT: RequestTiming(deadline_ms=7000, limit_ms=60000)})
    rule = table.rule(SETTLEMENT)
    assert rule is not None and (rule.deadline_ms, rule.limit_ms) == (7000, 60000)
    assert rule.wait_ms(None) == 7000 and rule.wait_ms(60000) == 60000
    assert not isinstance(rule.wait_ms(60001), int)
    assert "medical.settlement.result" in table.reply_types
    with pytest.raises(RequestTableError, match="not a request type"):
        ReplyTable(REGISTRY, {"medical.settlement.result": RequestTiming(deadline_ms=1)})
    with pytest.raises(RequestTableError, match="exceeds limit_ms"):
        ReplyTable(REGISTRY, {SETTLEMENT: RequestTiming(deadline_ms=40000)})


def test_the_config_reads_requests_and_a_platforms_facade(tmp_path: Path) -> None:
    import yaml

    from gateway.config import ConfigError, load_config
    from gateway.dev.exchange import init_exchange

    path = init_exchange(tmp_path / "ex", base_port=0).config_path("SH")
    doc = yaml.safe_load(path.read_text())
    doc["requests"] = {SETTLEMENT: {"deadline_ms": 7000, "limit_ms": 60000}}
    doc["platforms"][0]["facade"] = "nhsa"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    cfg = load_config(path)
    assert cfg.requests == {SETTLEMENT: RequestTiming(7000, 60000)}
    assert cfg.platforms[0].facade == "nhsa"
    doc["requests"] = {SETTLEMENT: {"deadline_ms": 0, "wait": 1}}
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert {line.split(":")[0] for line in e.value.errors} == {f"requests.{SETTLEMENT}.deadline_ms",
                                                               f"requests.{SETTLEMENT}.wait"}
