"""The exchange's Kafka ACLs (gateway/kafka/acls.py): each region gets what its gateway needs and nothing that
would let it read another region's messages; the chart README's table is the generated one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.kafka.acls import (
    AclBinding,
    acls_commands,
    acls_json,
    acls_markdown,
    exchange_acls,
    parse_acls_json,
    region_acls,
    username,
)
from gateway.wire.regions import REGIONS, Topics

CHART_README = Path(__file__).resolve().parents[2] / "helm" / "yrdx" / "README.md"
BEGIN, END = "<!-- BEGIN generated: yrdx kafka acls --format markdown -->", "<!-- END generated -->"


def grants(bindings: list[AclBinding]) -> set[tuple[str, str, str]]:
    return {(b.resource_type, b.resource_name, b.operation) for b in bindings}


def test_a_region_reads_only_its_own_inbox_group_and_dead_letters() -> None:
    js = grants(region_acls("JS"))
    reads = {(kind, name) for kind, name, op in js if op == "READ"}
    assert reads == {("TOPIC", "yrdx.js.inbox"), ("GROUP", "yrdx-js"), ("TOPIC", "yrdx.js.dlq"),
                     ("TOPIC", "yrdx.js.files"), ("GROUP", "yrdx-files-js"),
                     ("TOPIC", "yrdx.audit"), ("TOPIC", "yrdx.checkpoints"), ("TOPIC", "yrdx.trust")}
    for other in ("SH", "ZJ", "AH"):
        t = Topics()
        assert ("TOPIC", t.inbox(other), "READ") not in js
        assert ("TOPIC", t.files(other), "READ") not in js
        assert not {g for g in js if g[1] in (t.dlq(other), t.egress_group(other), t.files_group(other))}


def test_a_region_writes_every_inbox_its_dead_letters_and_the_shared_trail() -> None:
    writes = {name for kind, name, op in grants(region_acls("SH")) if op == "WRITE"}
    assert writes == {"yrdx.sh.inbox", "yrdx.js.inbox", "yrdx.zj.inbox", "yrdx.ah.inbox", "yrdx.sh.dlq",
                      "yrdx.sh.files", "yrdx.js.files", "yrdx.zj.files", "yrdx.ah.files",
                      "yrdx.audit", "yrdx.checkpoints", "yrdx.trust"}


def test_create_is_on_the_literal_topics_the_gateway_ensures_and_can_be_left_out() -> None:
    created = {name for _, name, op in grants(region_acls("ZJ")) if op == "CREATE"}
    assert created == {"yrdx.sh.inbox", "yrdx.js.inbox", "yrdx.zj.inbox", "yrdx.ah.inbox", "yrdx.zj.dlq",
                       "yrdx.sh.files", "yrdx.js.files", "yrdx.zj.files", "yrdx.ah.files",
                       "yrdx.audit", "yrdx.checkpoints", "yrdx.trust"}
    assert not [b for b in region_acls("ZJ", create=False) if b.operation == "CREATE"]


def test_no_grant_is_on_the_cluster_a_prefix_or_another_principal() -> None:
    for region in REGIONS:
        bindings = region_acls(region)
        assert {b.principal for b in bindings} == {f"User:yrdx-{region.lower()}"}
        assert {b.resource_type for b in bindings} == {"TOPIC", "GROUP"}
        assert len(bindings) == len(set(bindings))
    assert len(exchange_acls()) == sum(len(region_acls(r)) for r in REGIONS)


def test_a_namespace_prefixes_every_name_and_the_users() -> None:
    bindings = exchange_acls("staging")
    assert username("SH", "staging") == "staging.yrdx-sh"
    assert all(b.resource_name.startswith("staging.yrdx") for b in bindings)
    assert {b.principal for b in bindings} == {f"User:staging.yrdx-{r.lower()}" for r in REGIONS}


def test_json_round_trips_and_refuses_what_kafka_would_not_take() -> None:
    bindings = exchange_acls()
    assert parse_acls_json(acls_json(bindings)) == bindings
    bad = json.loads(acls_json(bindings[:1]))
    bad[0]["operation"] = "ALL"
    with pytest.raises(ValueError, match="binding 0"):
        parse_acls_json(json.dumps(bad))
    with pytest.raises(ValueError, match="binding 0"):
        parse_acls_json(json.dumps([{"principal": "User:x"}]))


def test_the_commands_are_one_kafka_acls_call_per_binding() -> None:
    lines = acls_commands(region_acls("AH")).splitlines()
    assert len(lines) == len(region_acls("AH"))
    assert "kafka-acls.sh $B --add --allow-principal User:yrdx-ah --operation Read --topic yrdx.ah.inbox" in lines
    assert "kafka-acls.sh $B --add --allow-principal User:yrdx-ah --operation Read --group yrdx-ah" in lines


def test_the_table_has_a_cell_for_every_binding() -> None:
    table = acls_markdown()
    for b in exchange_acls():
        region = b.principal.removeprefix("User:yrdx-").upper()
        column = 3 + REGIONS.index(region)
        rows = [r.split(" | ") for r in table.splitlines()[2:]]
        assert any(b.operation in row[2] and f"`{b.resource_name}`" in row[column] for row in rows), b


def test_the_chart_readme_holds_the_generated_table() -> None:
    text = CHART_README.read_text()
    found = re.search(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), text, re.S)
    assert found, f"{CHART_README} has no generated ACL block"
    assert found.group(1) == acls_markdown(), "regenerate it with `yrdx kafka acls --format markdown`"


def test_yrdx_kafka_acls_prints_one_region_or_the_whole_exchange(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kafka", "acls", "--format", "json", "--region", "SH", "--namespace", "ns"]) == 0
    assert parse_acls_json(capsys.readouterr().out) == region_acls("SH", "ns")
    assert main(["kafka", "acls", "--no-create"]) == 0
    assert capsys.readouterr().out == acls_commands(exchange_acls(create=False))
    assert main(["kafka", "acls", "--format", "markdown"]) == 0
    assert capsys.readouterr().out == acls_markdown()
