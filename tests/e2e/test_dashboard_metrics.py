"""Every metric the Grafana dashboard (helm/yrdx/files/yrdx-dashboard.json) and the Prometheus alert rules
(helm/yrdx/files/yrdx-alerts.rules.yaml) reference exists on the live gateways' /metrics (the session's exchange:
real `yrdx serve` processes on the real broker, scraped with the operator token), so neither can silently draw
or alert on nothing. A histogram is named by its _bucket, _sum or _count series; every label a selector matches
on is a label of that metric's series.

Labelled series exist only once something was counted, so it first sends one message that is delivered (JS to
ZJ, by webhook) and one that is dead-lettered (ZJ to AH, a type AH refuses from ZJ: not_permitted), as the relay
tests do (both have ids of their own, which no other test counts), and one request without a token (401).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.schemas.registry import SchemaRegistry
from tests._util import ROOT
from tests.conftest import REFUSED_TYPE, Exchange4

FILES = ROOT / "helm" / "yrdx" / "files"
DASHBOARD = FILES / "yrdx-dashboard.json"
RULES = FILES / "yrdx-alerts.rules.yaml"
REGISTRY = SchemaRegistry.load()
NAME = re.compile(r"\b(yrdx_[a-z0-9_]+)\b(?!:)")  # every metric of the gateway is yrdx_*; yrdx_x:y is a recording
SELECTOR = re.compile(r"\b(yrdx_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", []) if t.get("expr")]


def rule_expressions() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def referenced(exprs: list[str]) -> tuple[set[str], dict[str, set[str]]]:
    """The metric names the expressions select, and per name the labels their selectors match on."""
    names = {m for e in exprs for m in NAME.findall(e)}
    labels: dict[str, set[str]] = {}
    for e in exprs:
        for name, matchers in SELECTOR.findall(e):
            labels.setdefault(name, set()).update(MATCHER.findall(matchers))
    return names, labels


async def scrape(ex: Exchange4, region: str) -> dict[str, set[str]]:
    """Series name -> the label names seen on it, from one gateway's /metrics."""
    token = (ex.exchange.dir / "secrets" / "metrics.token").read_text().strip()
    client = ex.clients[region]
    async with client.session.get(client.gateway.url + "/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        text = await r.text()
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def example(msg_type: str) -> dict[str, Any]:
    return copy.deepcopy(REGISTRY.examples(msg_type)[0])


def test_the_dashboard_and_the_rules_reference_the_metrics_of_the_readme() -> None:
    names, _ = referenced(dashboard_expressions() + rule_expressions())
    wanted = {"yrdx_messages_total", "yrdx_dead_letters_total", "yrdx_end_to_end_seconds_bucket",
              "yrdx_stage_seconds_bucket", "yrdx_consumer_lag_messages", "yrdx_certificate_expiry_seconds",
              "yrdx_broker_up", "yrdx_build_info"}
    assert wanted <= names, wanted - names
    readme = (ROOT / "README.md").read_text()
    for name in names:  # each is a family of the README's Metrics table
        assert re.sub(r"_(bucket|sum|count)$", "", name) in readme, name


async def test_every_metric_the_dashboard_and_the_rules_reference_exists_on_live_gateways(
        exchange: Exchange4, capsys: pytest.CaptureFixture[str]) -> None:
    status, delivered = await exchange.clients["JS"].send("license.verify.request", "ZJ",
                                                          example("license.verify.request"))
    assert status == 202, delivered
    status, refused = await exchange.clients["ZJ"].send(REFUSED_TYPE, "AH", example(REFUSED_TYPE))
    assert status == 202, refused
    await exchange.sink.wait_for("ZJ", delivered["id"])
    assert (await exchange.clients["JS"].wait_status(delivered["id"], "delivered"))["status"] == "delivered"
    assert (await exchange.clients["ZJ"].wait_status(refused["id"], "rejected"))["status"] == "rejected"
    client = exchange.clients["JS"]
    async with client.session.get(client.gateway.url + "/v1/inbox") as r:  # yrdx_requests_refused_total
        assert r.status == 401

    names, labels = referenced(dashboard_expressions() + rule_expressions())
    deadline = time.monotonic() + 30  # gauges such as consumer lag and certificate expiry are set periodically
    while True:
        live: dict[str, set[str]] = {}
        for region in ("JS", "ZJ", "AH"):
            for name, seen in (await scrape(exchange, region)).items():
                live.setdefault(name, set()).update(seen)
        missing = sorted(names - set(live))
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert missing == [], f"referenced by the dashboard or the rules, absent from /metrics: {missing}"
    unlabelled = {name: sorted(wanted - live[name]) for name, wanted in labels.items() if wanted - live[name]}
    assert unlabelled == {}, f"selectors match on labels these series do not have: {unlabelled}"
    with capsys.disabled():
        print(f"\n{len(names)} metric names referenced by the dashboard and the alert rules, all on /metrics: "
              f"{', '.join(sorted(names))}")
