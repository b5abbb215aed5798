"""Kafka locked down: an exchange made by `yrdx init --secure` on the secure local broker (SASL_SSL, SCRAM-SHA-512,
a development CA, StandardAuthorizer with the ACLs of gateway/kafka/acls.py), one broker for this module.

Kafka refuses what ACLs can express (another region's inbox, group or dead-letter topic; a wrong password); an
audit segment written under another region's key passes Kafka (ACLs know no record keys) and is refused by the
audit verification. The forgery test comes last in the file: the relay test verifies the trail before it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, KafkaConnectionError, TopicAuthorizationFailedError

from gateway.audit.journey import read_audit_records
from gateway.config import KafkaConfig, load_config
from gateway.crypto.jws import Signer
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.dev.exchange import Exchange
from gateway.dev.local_kafka import LocalKafka, free_port
from gateway.dev.pki import PkiLayout
from gateway.kafka.transport import client_options
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.regions import DEFAULT_TOPICS, REGIONS
from tests._util import ROOT, GatewayProcess, PlatformClient, forged_segment, pull_until

T = DEFAULT_TOPICS
# Every family, every gateway sending and receiving once (sealed and clear types both).
ROUTES = (("SH", "JS", "identity.verify.request"), ("JS", "ZJ", "license.verify.request"),
          ("ZJ", "AH", "medical.filing.request"), ("AH", "SH", "license.status.notice"))


@dataclass
class SecureExchange:
    exchange: Exchange
    broker: LocalKafka
    clients: dict[str, PlatformClient]

    def kafka(self, region: str) -> KafkaConfig:
        """The region's own Kafka settings, as its gateway uses them."""
        return load_config(self.exchange.config_path(region)).kafka


def yrdx_long(*args: str) -> subprocess.CompletedProcess[str]:
    """The `yrdx` command line with room for a broker start on a loaded machine."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Exchange, LocalKafka]]:
    """`yrdx init --secure`, then `yrdx kafka start --secure --exchange`, as an operator runs them."""
    root, broker_dir = tmp_path_factory.mktemp("secure-exchange"), tmp_path_factory.mktemp("secure-kafka")
    port = free_port()
    made = yrdx_long("init", "--dir", str(root), "--base-port", "0", "--bootstrap-servers", f"127.0.0.1:{port}",
                     "--secure")
    assert made.returncode == 0, made.stderr
    started = yrdx_long("kafka", "start", "--secure", "--exchange", str(root), "--dir", str(broker_dir), "--port",
                        str(port), "--controller-port", str(free_port()), "--timeout", "240")
    broker = LocalKafka.of_dir(broker_dir)
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"127.0.0.1:{port}" and broker.secure
        yield Exchange(root.resolve(), PkiLayout(root.resolve() / "certs")), broker
    finally:
        broker.stop()


@pytest_asyncio.fixture(scope="module")
async def secure(secure_broker: tuple[Exchange, LocalKafka]) -> AsyncIterator[SecureExchange]:
    ex, broker = secure_broker
    gateways = {r: GatewayProcess(ex.config_path(r), ex.dir) for r in REGIONS}
    try:
        for g in gateways.values():
            await asyncio.to_thread(g.start, 120.0)
        async with aiohttp.ClientSession() as session:
            yield SecureExchange(ex, broker, {r: PlatformClient(session, gateways[r], ex, r) for r in REGIONS})
    finally:
        for g in gateways.values():
            await asyncio.to_thread(g.stop)


def yrdx_json(*args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ), timeout=180, check=False)
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


async def read_first(kafka: KafkaConfig, topic: str, timeout_s: float = 30.0) -> list[bytes]:
    """The values of partition 0 of `topic` from its beginning, read outside any group, as a client would."""
    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        batches = await asyncio.wait_for(consumer.getmany(timeout_ms=int(timeout_s * 1000) // 2), timeout_s)
        return [m.value for ms in batches.values() for m in ms if m.value is not None]
    finally:
        await consumer.stop()


async def test_the_whole_exchange_relays_every_family_on_the_secure_broker(secure: SecureExchange) -> None:
    registry = SchemaRegistry.load()
    sent = {}
    for origin, dest, msg_type in ROUTES:
        status, doc = await secure.clients[origin].send(msg_type, dest, copy.deepcopy(registry.examples(msg_type)[0]))
        assert status == 202, doc
        sent[doc["id"]] = (origin, dest)
    for msg_id, (origin, dest) in sent.items():
        await pull_until(secure.clients[dest], msg_id, timeout=90)
        assert (await secure.clients[origin].wait_status(msg_id, "delivered", timeout=90))["status"] == "delivered"
    # Every gateway's chain (read with SH's credentials) verifies: the audit and checkpoint grants suffice.
    code, report = await asyncio.to_thread(yrdx_json, "audit", "verify", "--config",
                                           str(secure.exchange.config_path("SH")), "--json")
    assert code == 0, report
    assert set(report["regions"]) == set(REGIONS)  # type: ignore[arg-type]


async def test_js_cannot_read_the_shanghai_inbox(secure: SecureExchange) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await read_first(secure.kafka("JS"), T.inbox("SH"))
    # The same read with SH's own credentials goes through: the refusal is the ACL, not the client.
    await read_first(secure.kafka("SH"), T.inbox("SH"), timeout_s=10)


async def test_js_cannot_join_the_shanghai_consumer_group(secure: SecureExchange) -> None:
    consumer = AIOKafkaConsumer(T.inbox("JS"), **client_options(secure.kafka("JS")), group_id=T.egress_group("SH"),
                                enable_auto_commit=False)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.start()
            await asyncio.wait_for(consumer.getmany(timeout_ms=5000), 30)
    finally:
        await consumer.stop()


async def test_js_cannot_write_the_shanghai_dead_letter_topic(secure: SecureExchange) -> None:
    producer = AIOKafkaProducer(**client_options(secure.kafka("JS")), enable_idempotence=True)
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(producer.send_and_wait(T.dlq("SH"), b"{}"), 30)
    finally:
        await producer.stop()


async def test_a_wrong_password_is_refused(secure: SecureExchange, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    cfg = replace(secure.kafka("JS"), sasl_password_file=wrong)
    consumer = AIOKafkaConsumer(**client_options(cfg), group_id=None, request_timeout_ms=10000)
    try:
        with pytest.raises(KafkaConnectionError):  # aiokafka reports the refusal as "Unable to bootstrap"
            await consumer.start()
    finally:
        await consumer.stop()
    assert "SaslAuthenticationFailed" in caplog.text and "invalid credentials" in caplog.text, caplog.text

    # A gateway with that password refuses to start: one line, exit code 2, the broker's reason in its log.
    doc = yaml.safe_load(secure.exchange.config_path("JS").read_text())
    doc["kafka"]["sasl_password_file"] = str(wrong)
    doc["state"] = {"path": str(tmp_path / "state.sqlite")}
    config = secure.exchange.dir / f"wrong-{tmp_path.name}.yaml"  # beside the others: relative paths resolve
    config.write_text(yaml.safe_dump(doc))
    done = await asyncio.to_thread(yrdx_long, "serve", "--config", str(config))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "SaslAuthenticationFailed" in done.stdout + done.stderr
    refusal = f"kafka {cfg.bootstrap_servers}: KafkaConnectionError: Unable to bootstrap from"
    assert [line for line in done.stderr.splitlines() if refusal in line], done.stderr
    assert "Unclosed" not in done.stdout + done.stderr, done.stdout + done.stderr


async def test_an_sh_segment_written_by_js_passes_kafka_and_is_refused_by_verification(
        secure: SecureExchange) -> None:
    js = secure.kafka("JS")
    sh_records = [r for r in await read_audit_records(js, timeout_s=30) if r["region"] == "SH"]
    assert sh_records, "SH has written nothing yet"
    # JS signs with its own, trusted key: all it has; SH's key never leaves SH.
    pki = secure.exchange.pki
    signer = Signer(load_private_key(pki.gateway_key("JS")), load_certificate(pki.gateway_cert("JS")), include_x5c=True)
    seq, value = forged_segment("SH", max(sh_records, key=lambda r: r["seq"]), signer)
    producer = AIOKafkaProducer(**client_options(js), enable_idempotence=True)
    await producer.start()
    try:  # Kafka's ACLs cannot look at record keys: JS may write yrdx.audit, so this is accepted ...
        await asyncio.wait_for(producer.send_and_wait(T.audit, value, key=b"SH"), 30)
    finally:
        await producer.stop()
    # ... and the verification, with SH's credentials, names it forged.
    code, report = await asyncio.to_thread(yrdx_json, "audit", "verify", "--config",
                                           str(secure.exchange.config_path("SH")), "--json")
    assert code == 1, report
    faults = report["faults"]
    assert isinstance(faults, list)
    forged = [f for f in faults if (f["region"], f["seq"], f["kind"]) == ("SH", seq, "forged")]
    assert forged, faults
