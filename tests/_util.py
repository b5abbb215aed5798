"""Helpers shared by the integration and end-to-end tests: real gateway processes, real HTTP clients,
a real webhook receiver. Nothing here stands in for Kafka."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.audit.model import checkpoint_bytes, record_hash
from gateway.crypto.jws import Signer
from gateway.dev.exchange import Exchange, auditor_id, platform_id
from gateway.dev.pki import PkiLayout
from gateway.http.auth import AUDIT_SCOPE, TokenMinter
from gateway.relay.purposes import UsePolicy
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.envelope import Operator, utc_timestamp
from gateway.wire.regions import Topics

ROOT = Path(__file__).resolve().parents[1]

# Who asks in the tests, and why: the use context that the types reading personal data or licences must carry.
TEST_OPERATOR = {"id": "TEST-OP-0001", "role": "clerk", "department": "TEST-ZWFW"}
_USES = UsePolicy(SchemaRegistry.load(ROOT / "schemas"))
_MESSAGE_PATHS = ("/v1/messages", "/v1/requests")


def use_context(msg_type: object) -> dict[str, Any]:
    """`operator` and `use_cause` (the first purpose the schema allows) for a type that needs them; {} otherwise."""
    allowed = _USES.allowed(msg_type) if isinstance(msg_type, str) else frozenset()
    return {"operator": TEST_OPERATOR, "use_cause": min(allowed)} if allowed else {}


def envelope_use_context(msg_type: str) -> dict[str, Any]:
    """use_context() as keyword arguments of `envelope.build`, for a test that builds an envelope itself."""
    context = use_context(msg_type)
    return {"operator": Operator(**context["operator"]), "use_cause": context["use_cause"]} if context else {}


def with_use_context(message: Any) -> Any:
    """The message with the test's use context where its type needs one and the message names neither field: a
    test that names `operator` or `use_cause` sends exactly what it names (None: that field left out)."""
    if not isinstance(message, dict):
        return message
    if "operator" not in message and "use_cause" not in message:
        return {**message, **use_context(message.get("type"))}
    return {k: v for k, v in message.items() if not (k in ("operator", "use_cause") and v is None)}


def with_use_contexts(path: str, body: Any) -> Any:
    """A request body to the gateway's message routes, each message given its use context (with_use_context)."""
    if path.split("?")[0] == "/v1/messages/batch" and isinstance(body, dict) and isinstance(body.get("messages"), list):
        return {**body, "messages": [with_use_context(m) for m in body["messages"]]}
    return with_use_context(body) if path.split("?")[0] in _MESSAGE_PATHS else body


class GatewayProcess:
    """`yrdx serve` as a separate process, as operators run it."""

    def __init__(self, config: Path, log_dir: Path) -> None:
        self.config = config
        self.log_path = log_dir / f"{config.stem}.log"
        self.ready = log_dir / f"{config.stem}.port"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.ready.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config), "--ready-file",
                 str(self.ready), "--log-level", "WARNING"],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while not self.ready.exists() or not self.ready.read_text().strip():
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway {self.config.stem} exited: {self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway {self.config.stem} did not start: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        self.port = int(self.ready.read_text())

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.kill()


class PlatformClient:
    """A local platform talking to its gateway: a fresh single-use JWT per request."""

    def __init__(self, session: aiohttp.ClientSession, gateway: GatewayProcess, exchange: Exchange,
                 region: str) -> None:
        self.session = session
        self.gateway = gateway
        self.region = region
        self.minter = TokenMinter(platform_id(region), exchange.pki.platform_key(region), region)
        self.auditor = TokenMinter(auditor_id(region), exchange.pki.auditor_key, region, scope=AUDIT_SCOPE)

    async def send(self, msg_type: str, to: str, payload: Any, *, headers: dict[str, str] | None = None,
                   **extra: Any) -> tuple[int, dict[str, Any]]:
        body = {"type": msg_type, "to": to, "payload": payload, **extra}
        return await self.post("/v1/messages", body, headers)

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None,
                   raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
        h = {"Content-Type": "application/json", **self.minter.header(), **(headers or {})}
        data = raw if raw is not None else orjson.dumps(with_use_contexts(path, body))
        async with self.session.post(self.gateway.url + path, data=data, headers=h) as r:
            return r.status, orjson.loads(await r.read())

    async def get(self, path: str, auditor: bool = False) -> tuple[int, dict[str, Any]]:
        h = (self.auditor if auditor else self.minter).header()
        async with self.session.get(self.gateway.url + path, headers=h) as r:
            return r.status, orjson.loads(await r.read())

    async def status_of(self, msg_id: str) -> dict[str, Any]:
        status, doc = await self.get(f"/v1/messages/{msg_id}")
        assert status == 200, doc
        return doc

    async def wait_status(self, msg_id: str, wanted: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            doc = await self.status_of(msg_id)
            if doc["status"] == wanted or time.monotonic() > deadline:
                return doc
            await asyncio.sleep(0.1)

    async def pull(self, max_n: int = 500, wait: float = 1.0) -> list[dict[str, Any]]:
        status, doc = await self.get(f"/v1/inbox?max={max_n}&wait={wait}")
        assert status == 200, doc
        msgs: list[dict[str, Any]] = doc["messages"]
        if msgs:
            s, _ = await self.post("/v1/inbox/ack", {"ids": [m["id"] for m in msgs]})
            assert s == 200
        return msgs


@dataclass
class WebhookSink:
    """The platform's webhook endpoint: records every delivery (with the signature header) per path."""

    received: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    failing: bool = False   # 503: the platform is down, the gateway retries
    refusing: bool = False  # 422: the platform refuses, the gateway dead-letters at once (delivery_failed)
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, region: str) -> str:
        return f"http://127.0.0.1:{self.port}/{region}"

    async def _handle(self, request: web.Request) -> web.Response:
        if self.failing:
            return web.Response(status=503)
        if self.refusing:
            return web.Response(status=422)
        body = await request.read()
        doc = orjson.loads(body)
        sealed = request.headers.get("Yrdx-Sealed") == "true"
        self.received[request.match_info["region"]].append({
            "id": request.headers["Yrdx-Message-Id"], "signature": request.headers["Yrdx-Signature"],
            "body": body, "envelope": doc, "sealed": sealed,
            # The bytes the sender signed: the body, or for a sealed type the evidence inside the opened document.
            "signed": base64.b64decode(doc["envelope"]) if sealed else body,
        })
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{region}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def ids(self, region: str) -> list[str]:
        return [d["id"] for d in self.received[region]]

    async def wait_for(self, region: str, msg_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for d in self.received[region]:
                if d["id"] == msg_id:
                    return d
            await asyncio.sleep(0.05)
        raise AssertionError(f"{msg_id} was not delivered to {region} within {timeout} s")


def yrdx(*args: str) -> subprocess.CompletedProcess[str]:
    """The `yrdx` command line, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


@dataclass
class SideExchange:
    """A second exchange on the session's broker, in its own namespace (made by `yrdx init`)."""

    exchange: Exchange
    topics: Topics
    clients: dict[str, PlatformClient]


@contextlib.asynccontextmanager
async def side_exchange(bootstrap_servers: str, root: Path, namespace: str, regions: Sequence[str],
                        *init_args: str, edit: Callable[[Exchange], None] | None = None,
                        ) -> AsyncIterator[SideExchange]:
    """`yrdx init --namespace NS [init_args]` in `root`, then (after `edit` changed the configs, if given) the
    gateways of `regions` as processes (the generated configs deliver by pull inbox); stopped on exit."""
    done = await asyncio.to_thread(yrdx, "init", "--dir", str(root), "--base-port", "0", "--bootstrap-servers",
                                   bootstrap_servers, "--namespace", namespace, *init_args)
    assert done.returncode == 0, done.stderr
    ex = Exchange(root.resolve(), PkiLayout(root.resolve() / "certs"))  # what `yrdx init` wrote
    if edit is not None:
        edit(ex)
    gateways = {r: GatewayProcess(ex.config_path(r), root) for r in regions}
    try:
        for g in gateways.values():
            await asyncio.to_thread(g.start)
        async with aiohttp.ClientSession() as session:
            clients = {r: PlatformClient(session, gateways[r], ex, r) for r in gateways}
            yield SideExchange(ex, Topics(namespace), clients)
    finally:
        for g in gateways.values():
            await asyncio.to_thread(g.stop)


async def pull_until(client: PlatformClient, msg_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every message pulled (and acked) from the client's inbox until `msg_id` is among them."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while msg_id not in {m["id"] for m in seen}:
        assert time.monotonic() < deadline, f"{msg_id} never reached the {client.region} inbox (got {seen})"
        seen += await client.pull(wait=0.5)
    return seen


# aiokafka's pure-Python record builder encodes header keys with str.encode: this key encodes to bytes that are
# not UTF-8, as a client in another language could write them; aiokafka's C extension then raises on reading it.
_UNDECODABLE_PRODUCER = """
import asyncio, sys
from aiokafka import AIOKafkaProducer

class NotUtf8(str):
    def encode(self, *args, **kwargs):
        return b"\\xff\\xfeyrdx"

async def main():
    p = AIOKafkaProducer(bootstrap_servers=sys.argv[1], compression_type=None)
    await p.start()
    meta = await p.send_and_wait(sys.argv[2], b"{}", key=sys.argv[3].encode(), headers=[(NotUtf8("k"), b"v")])
    await p.stop()
    print(meta.partition, meta.offset)

asyncio.run(main())
"""


async def produce_undecodable(bootstrap_servers: str, topic: str, key: bytes) -> tuple[int, int]:
    """Write one record whose header key is not UTF-8 to `topic`; its (partition, offset)."""
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", _UNDECODABLE_PRODUCER, bootstrap_servers, topic, key.decode()],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"AIOKAFKA_NO_EXTENSIONS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    partition, offset = done.stdout.split()
    return int(partition), int(offset)


def forged_segment(region: str, head: dict[str, Any], signer: Signer) -> tuple[int, bytes]:
    """An audit segment for `region` chained onto its real `head` record, its checkpoint signed by `signer`
    (a key that is not the region's): the seq it claims and the value to produce under the key `region`."""
    seq = head["seq"] + 1
    body = {"seq": seq, "region": region, "message_id": "01a20000-0000-7000-8000-00000000f0r9", "correlation_id": "",
            "stage": "accepted", "at": utc_timestamp(), "envelope_sha256": "f" * 64, "detail": {},
            "prev_hash": head["hash"]}
    body["hash"] = record_hash(head["hash"], body)
    jws = signer.sign(checkpoint_bytes(region, seq, body["hash"]))
    return seq, orjson.dumps({"region": region, "records": [body],
                              "checkpoint": {"seq": seq, "hash": body["hash"], "jws": jws}})
