"""Keys over time (README "Rotating keys"): under steady JS -> SH traffic, sealed types included, SH rotates its
encryption key and then JS rotates its signing certificate, each with a SIGHUP and no restart. Nothing is lost,
nothing is dead-lettered, nothing is delivered twice, the sealed payloads before and after the change open
intact, and `yrdx audit verify` holds across it (online and on an exported bundle); once the overlap is over SH
drops its old key; and a certificate rotated by a restart instead (never in `x5c`) is trusted from `yrdx.trust`
alone."""

from __future__ import annotations

import asyncio
import copy
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import yaml
from cryptography import x509

from gateway.config import KafkaConfig, load_config
from gateway.crypto.jws import b64url_decode, parse_detached, thumbprint_s256
from gateway.crypto.keyfiles import load_certificate, load_encryption_pub
from gateway.crypto.keyring import encryption_kid
from gateway.dev.pki import rotate_gateway_keys
from gateway.kafka.reader import read_topic
from gateway.relay.replay import read_dead_letters
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.envelope import utc_timestamp
from gateway.wire.headers import SIGNATURE
from tests._util import GatewayProcess, PlatformClient, SideExchange, side_exchange, yrdx
from tests.conftest import Broker

SEALED_TYPE = "medical.filing.request"   # sealed by default (SENSITIVE_* fields)
CLEAR_TYPE = "license.verify.request"    # travels signed in clear
EXAMPLES = {t: SchemaRegistry.load().examples(t)[0] for t in (SEALED_TYPE, CLEAR_TYPE)}


@pytest_asyncio.fixture(params=["ES256", "SM2SM3"])
async def pair(kafka: Broker, tmp_path_factory: pytest.TempPathFactory,
               request: pytest.FixtureRequest) -> AsyncIterator[SideExchange]:
    """JS and SH of an exchange of their own, in the default suite (X25519 keys) and the national one (SM2)."""
    namespace = f"rot-{uuid.uuid4().hex[:8]}"  # unique: a rerun on an external cluster starts clean
    async with side_exchange(kafka.bootstrap_servers, tmp_path_factory.mktemp("rotation"), namespace,
                             ("JS", "SH"), "--alg", request.param) as ex:
        yield ex


class Traffic:
    """JS's platform sends a message every few milliseconds (sealed and clear types in turn) until stopped;
    SH's platform pulls and acks its inbox all along."""

    def __init__(self, js: PlatformClient, sh: PlatformClient) -> None:
        self.js, self.sh = js, sh
        self.sent: dict[str, tuple[str, Any]] = {}  # id -> (type, payload)
        self.refused: list[tuple[int, dict[str, Any]]] = []
        self.pulled: Counter[str] = Counter()
        self.payloads: dict[str, Any] = {}
        self.stopping = asyncio.Event()  # the sender stops
        self.sent_all = False  # it has stopped: the puller drains what it sent, then stops too

    async def send(self) -> None:
        i = 0
        while not self.stopping.is_set():
            msg_type = SEALED_TYPE if i % 2 == 0 else CLEAR_TYPE
            payload = copy.deepcopy(EXAMPLES[msg_type])
            status, doc = await self.js.send(msg_type, "SH", payload)
            if status == 202:
                self.sent[doc["id"]] = (msg_type, payload)
            else:
                self.refused.append((status, doc))
            i += 1
            await asyncio.sleep(0.01)

    async def pull(self) -> None:
        while not self.sent_all or set(self.sent) - set(self.pulled):
            for m in await self.sh.pull(wait=0.5):
                self.pulled[m["id"]] += 1
                # A sealed payload comes opened beside its envelope; a clear one is in the envelope.
                self.payloads[m["id"]] = m["payload"] if "sealed" in m["envelope"] else m["envelope"]["payload"]

    async def until(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.sent) < count:
            assert time.monotonic() < deadline, f"only {len(self.sent)} of {count} messages accepted"
            await asyncio.sleep(0.05)


async def log_line(gateway: GatewayProcess, *needles: str, after: int = 0, timeout: float = 60.0) -> str:
    """The first line of the gateway's log after byte `after` holding every needle."""
    deadline = time.monotonic() + timeout
    while True:
        for line in gateway.log_path.read_bytes()[after:].decode(errors="replace").splitlines():
            if all(n in line for n in needles):
                return line
        assert time.monotonic() < deadline, f"no log line with {needles} in {gateway.log_path}"
        await asyncio.sleep(0.1)


def edit_identity(config: Path, **changes: Any) -> None:
    doc = yaml.safe_load(config.read_text())
    doc["identity"].update(changes)
    config.write_text(yaml.safe_dump(doc, sort_keys=False))


async def inbox_keys(kafka: KafkaConfig) -> list[tuple[str, str, str | None]]:
    """(id, signer thumbprint, kid sealed to or None) of every envelope on SH's inbox."""
    out = []
    for r in await read_topic(kafka, kafka.topics.inbox("SH"), 30.0):
        env = orjson.loads(r.value)
        sealed = env.get("sealed")
        kid = orjson.loads(b64url_decode(sealed.split(".")[0]))["kid"] if isinstance(sealed, str) else None
        out.append((env["id"], parse_detached(r.headers[SIGNATURE].decode()).thumbprint, kid))
    return out


async def checkpoint_signers(kafka: KafkaConfig, region: str) -> set[str]:
    """The thumbprints that signed the region's audit checkpoints on the trail."""
    return {parse_detached(orjson.loads(r.value)["checkpoint"]["jws"]).thumbprint
            for r in await read_topic(kafka, kafka.topics.audit, 30.0) if r.key == region.encode()}


async def test_key_rotation_under_steady_traffic_loses_nothing(kafka: Broker, pair: SideExchange) -> None:
    ex = pair.exchange
    js, sh = pair.clients["JS"], pair.clients["SH"]
    sh_config, js_config = ex.config_path("SH"), ex.config_path("JS")
    kcfg = load_config(sh_config).kafka
    old_kid = encryption_kid("SH", load_encryption_pub(ex.pki.encryption_pub("SH")))
    old_thumbprint = thumbprint_s256(load_certificate(ex.pki.gateway_cert("JS")))
    sh_next = rotate_gateway_keys(ex.pki, "SH", "2")
    js_next = rotate_gateway_keys(ex.pki, "JS", "2")
    new_kid = encryption_kid("SH", load_encryption_pub(sh_next.encryption_pub))
    new_thumbprint = thumbprint_s256(load_certificate(js_next.certificate))

    started = utc_timestamp()
    traffic = Traffic(js, sh)
    sender, puller = asyncio.create_task(traffic.send()), asyncio.create_task(traffic.pull())
    try:
        await traffic.until(60)

        # 1. SH's encryption key: the new key current, the old one kept for the overlap; SIGHUP, no restart.
        # Without the old key the reload is refused: what JS sealed to it is still on the way.
        assert sh.gateway.proc is not None and js.gateway.proc is not None
        edit_identity(sh_config, encryption_key=str(sh_next.encryption_key))
        sh_log = sh.gateway.log_path.stat().st_size
        sh.gateway.proc.send_signal(signal.SIGHUP)
        await log_line(sh.gateway, "identity not reloaded", f"must keep {old_kid}", after=sh_log)
        edit_identity(sh_config, previous_encryption_keys=[str(ex.pki.encryption_key("SH"))])
        sh_log, js_log = sh.gateway.log_path.stat().st_size, js.gateway.log_path.stat().st_size
        sh.gateway.proc.send_signal(signal.SIGHUP)
        await log_line(sh.gateway, "identity reloaded", new_kid, old_kid, after=sh_log)
        await log_line(js.gateway, "sealing to a new encryption key", new_kid, after=js_log)  # from yrdx.trust
        await traffic.until(len(traffic.sent) + 60)

        # 2. JS's signing certificate: announced with `yrdx trust publish`, then SIGHUP, no restart.
        done = await asyncio.to_thread(yrdx, "trust", "publish", "--config", str(js_config), "--certificate",
                                       str(js_next.certificate), "--key", str(js_next.private_key))
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"published certificate {new_thumbprint} of JS on {kcfg.topics.trust}\n"
        # A reload that cannot work (the new certificate with the old key) changes nothing, and says why.
        edit_identity(js_config, certificate=str(js_next.certificate))
        js_log = js.gateway.log_path.stat().st_size
        js.gateway.proc.send_signal(signal.SIGHUP)
        await log_line(js.gateway, "identity not reloaded", "does not match", after=js_log)
        edit_identity(js_config, private_key=str(js_next.private_key))
        js_log = js.gateway.log_path.stat().st_size
        js.gateway.proc.send_signal(signal.SIGHUP)
        await log_line(js.gateway, "identity reloaded", new_thumbprint, after=js_log)
        await traffic.until(len(traffic.sent) + 60)
    finally:
        traffic.stopping.set()
        await asyncio.wait_for(sender, 60)  # a request in flight still gets its answer
        traffic.sent_all = True
        await asyncio.wait_for(puller, 180)

    # Nothing refused, lost or delivered twice; every sealed payload opened intact at SH's platform.
    assert traffic.refused == []
    assert set(traffic.pulled) == set(traffic.sent)
    assert [i for i, n in traffic.pulled.items() if n > 1] == []
    assert all(traffic.payloads[i] == payload for i, (_, payload) in traffic.sent.items())
    for msg_id in traffic.sent:  # SH's signed receipt verified at JS, for every message
        assert (await js.wait_status(msg_id, "delivered", timeout=60))["status"] == "delivered", msg_id
    assert await read_dead_letters(kcfg, "SH") == [] and await read_dead_letters(kcfg, "JS") == []

    # Both keys and both certificates were in use, the old ones first, and only the new ones at the end.
    order = {msg_id: i for i, msg_id in enumerate(traffic.sent)}  # sent one at a time: the order they were sealed
    on_inbox = sorted((k for k in await inbox_keys(kcfg) if k[0] in order), key=lambda k: order[k[0]])
    assert len(on_inbox) == len(order)
    kids = [kid for _, _, kid in on_inbox if kid is not None]
    thumbprints = [t for _, t, _ in on_inbox]
    assert kids[0] == old_kid and kids[-1] == new_kid and set(kids) == {old_kid, new_kid}
    assert kids == sorted(kids, key=lambda k: k == new_kid)  # one switch, never back
    assert thumbprints[0] == old_thumbprint and thumbprints[-1] == new_thumbprint
    assert thumbprints == sorted(thumbprints, key=lambda t: t == new_thumbprint)
    print(f"rotation under traffic: {len(order)} messages ({len(kids)} sealed: {kids.count(old_kid)} to the old key, "
          f"{kids.count(new_kid)} to the new; {thumbprints.count(old_thumbprint)} signed by the old certificate, "
          f"{thumbprints.count(new_thumbprint)} by the new), none lost, none twice, none dead-lettered")

    # The audit trail holds across the change: JS's checkpoints are signed by both certificates, and verify,
    # which learns the announced certificate from yrdx.trust, accepts them all.
    signers = await checkpoint_signers(kcfg, "JS")
    assert {old_thumbprint, new_thumbprint} <= signers, (old_thumbprint, new_thumbprint, sorted(signers))
    verified = await asyncio.to_thread(yrdx, "audit", "verify", "--config", str(sh_config), "--json")
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr
    # Offline too: an exported bundle of the whole window carries both certificates and verifies with the root.
    bundle = ex.dir / "rotation-bundle.json"
    exported = await asyncio.to_thread(yrdx, "audit", "export", "--config", str(sh_config), "--from", started,
                                       "--to", utc_timestamp(), "--out", str(bundle))
    assert exported.returncode == 0, exported.stderr
    gateways = orjson.loads(bundle.read_bytes())["certificates"]["gateways"]
    in_bundle = {thumbprint_s256(x509.load_pem_x509_certificate(pem.encode())) for pem in gateways}
    assert {old_thumbprint, new_thumbprint} <= in_bundle
    offline = await asyncio.to_thread(yrdx, "audit", "verify", "--bundle", str(bundle), "--ca", str(ex.pki.ca_cert))
    assert offline.returncode == 0, offline.stdout[-3000:] + offline.stderr

    # 3. After the overlap SH drops the old key (SIGHUP again); what is sealed now opens with the new one.
    edit_identity(sh_config, previous_encryption_keys=[])
    sh_log = sh.gateway.log_path.stat().st_size
    sh.gateway.proc.send_signal(signal.SIGHUP)
    line = await log_line(sh.gateway, "identity reloaded", new_kid, after=sh_log)
    assert old_kid not in line
    status, doc = await js.send(SEALED_TYPE, "SH", copy.deepcopy(EXAMPLES[SEALED_TYPE]))
    assert status == 202, doc
    deadline = time.monotonic() + 30
    pulled: list[dict[str, Any]] = []
    while doc["id"] not in {m["id"] for m in pulled}:
        assert time.monotonic() < deadline, "the message sealed after the overlap never reached SH's inbox"
        pulled += await sh.pull(wait=0.5)
    assert next(m for m in pulled if m["id"] == doc["id"])["payload"] == EXAMPLES[SEALED_TYPE]
    assert set(traffic.sent) & {m["id"] for m in pulled} == set()  # nothing of before offered again

    # 4. A rotation by restart instead: JS's third certificate, announced, and JS restarted on it. Its signatures
    # never carry it (x5c is for a reload only): SH and the auditor know it from yrdx.trust alone.
    js_third = rotate_gateway_keys(ex.pki, "JS", "3")
    third_thumbprint = thumbprint_s256(load_certificate(js_third.certificate))
    done = await asyncio.to_thread(yrdx, "trust", "publish", "--config", str(js_config), "--certificate",
                                   str(js_third.certificate), "--key", str(js_third.private_key))
    assert done.returncode == 0, done.stderr
    edit_identity(js_config, certificate=str(js_third.certificate), private_key=str(js_third.private_key))
    await asyncio.to_thread(js.gateway.stop)
    await asyncio.to_thread(js.gateway.start)
    status, doc = await js.send(CLEAR_TYPE, "SH", copy.deepcopy(EXAMPLES[CLEAR_TYPE]))
    assert status == 202, doc
    assert (await js.wait_status(doc["id"], "delivered", timeout=60))["status"] == "delivered"
    [(_, signer, _)] = [k for k in await inbox_keys(kcfg) if k[0] == doc["id"]]
    assert signer == third_thumbprint
    deadline = time.monotonic() + 60  # JS's next checkpoint, signed by the third certificate, on the trail
    while third_thumbprint not in await checkpoint_signers(kcfg, "JS"):
        assert time.monotonic() < deadline, "no checkpoint of JS under its third certificate"
        await asyncio.sleep(0.5)
    verified = await asyncio.to_thread(yrdx, "audit", "verify", "--config", str(sh_config))
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr
    assert await read_dead_letters(kcfg, "SH") == [] and await read_dead_letters(kcfg, "JS") == []
