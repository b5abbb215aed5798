"""One real Apache Kafka broker for the whole test run (or KAFKA_BOOTSTRAP_SERVERS), and one local
exchange of four gateway processes shared by the end-to-end tests. Tests marked `disruptive` (they stop the
broker or kill gateways) run last."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import yaml

from gateway.crypto.jws import thumbprint_s256
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.dev.exchange import Exchange, edit_config, init_exchange
from gateway.dev.local_kafka import LocalKafka, env_bootstrap_servers, free_port
from gateway.dev.pki import issue_gateway_cert, write_certificate, write_private_key
from gateway.wire.regions import REGIONS
from tests._postgres import postgres, postgres_db  # noqa: F401 (fixtures for integration and e2e tests)
from tests._util import GatewayProcess, PlatformClient, WebhookSink


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "disruptive: stops the broker or kills processes; runs after the others")
    config.addinivalue_line("markers", "forges_audit: leaves forged records on the shared yrdx.audit; runs last, "
                                       "after every test that expects the online trail to verify")


def run_order(item: pytest.Item) -> int:
    """0: ordinary tests; 1: disruptive ones; 2: those that leave the shared audit trail forged."""
    if item.get_closest_marker("forges_audit") is not None:
        return 2
    return 1 if item.get_closest_marker("disruptive") is not None else 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=run_order)  # stable: file order within each group


@dataclass
class Broker:
    bootstrap_servers: str
    local: LocalKafka | None  # None when KAFKA_BOOTSTRAP_SERVERS points at an external cluster


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    external = env_bootstrap_servers()
    if external:
        yield Broker(external, None)
        return
    local = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port())
    local.start()
    try:
        yield Broker(local.bootstrap_servers, local)
    finally:
        local.stop()


# SH and ZJ platforms take webhooks, JS and AH use the pull inbox: both delivery modes in every run.
WEBHOOK_REGIONS = ("SH", "ZJ")
REFUSED_TYPE = "identity.verify.request"  # AH refuses it from ZJ
SEALED_TYPE = "identity.verify.request"  # sealed by default (it carries ID numbers)


@dataclass
class Exchange4:
    exchange: Exchange
    gateways: dict[str, GatewayProcess]
    clients: dict[str, PlatformClient]
    sink: WebhookSink
    log_dir: Path


@pytest_asyncio.fixture(scope="session")
async def sink() -> AsyncIterator[WebhookSink]:
    s = WebhookSink()
    await s.start()
    yield s
    await s.stop()


@pytest_asyncio.fixture(scope="session")
async def exchange(
    kafka: Broker, sink: WebhookSink, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Exchange4]:
    root = tmp_path_factory.mktemp("exchange")
    ex = init_exchange(root, base_port=0, bootstrap_servers=kafka.bootstrap_servers)
    for r in REGIONS:  # a stopped broker answers 503 after 3 s instead of 10
        edit_config(ex.config_path(r), limits={"max_body_bytes": 262144, "batch_max": 500, "publish_timeout_s": 3})
    # Anhui does not take identity verification requests from Zhejiang: the egress authorization test.
    ah = yaml.safe_load(ex.config_path("AH").read_text())
    ah["accept"]["ZJ"].remove(REFUSED_TYPE)
    edit_config(ex.config_path("AH"), accept=ah["accept"])
    # A JS certificate of the real root that Shanghai lists as revoked: the revocation test signs with it.
    cert, key = issue_gateway_cert(load_certificate(ex.pki.ca_cert), load_private_key(ex.pki.ca_key), "JS")
    write_certificate(root / "revoked-js.crt", cert)
    write_private_key(root / "revoked-js.key", key)
    sh = yaml.safe_load(ex.config_path("SH").read_text())
    edit_config(ex.config_path("SH"), trust={**sh["trust"], "revoked": [thumbprint_s256(cert)]})
    for r in WEBHOOK_REGIONS:
        edit_config(ex.config_path(r), delivery={"mode": "webhook", "url": sink.url(r), "max_attempts": 40,
                                                 "backoff_initial_s": 0.1, "backoff_max_s": 0.5})
    gateways = {r: GatewayProcess(ex.config_path(r), root) for r in REGIONS}
    for g in gateways.values():
        g.start()
    session = aiohttp.ClientSession()
    try:
        yield Exchange4(ex, gateways, {r: PlatformClient(session, gateways[r], ex, r) for r in REGIONS}, sink, root)
    finally:
        await session.close()
        for g in gateways.values():
            g.stop()
