"""One region's gateway process: everything expensive is built once here, started and stopped in reverse order.

Start: state, schemas, trust, keys -> topics -> trust updates -> producer -> audit -> HTTP -> consumer loop.
SIGHUP: reload the identity (a key rotation without a restart, `reload_identity`).
Stop (SIGTERM): stop accepting HTTP, let the consumer finish and commit the batch in hand, flush the audit
trail and the producer, close the state store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import logging
import signal
from pathlib import Path

import aiohttp
from aiohttp import web
from aiokafka.errors import KafkaError

from gateway.audit.countersign import Countersigner
from gateway.audit.trail import AuditTrail
from gateway.config import DEFAULT_INBOX_PARTITIONS, ConfigError, GatewayConfig, load_config
from gateway.crypto.jws import Signer
from gateway.crypto.keyfiles import load_certificate, load_encryption_key, load_encryption_pub, load_private_key
from gateway.crypto.keyring import OpenerRing, PeerSealers, encryption_kid
from gateway.crypto.keys import EncryptionPrivateKey
from gateway.crypto.seal import Opener
from gateway.crypto.trust import TrustedSigner, TrustStore
from gateway.files.assembler import Assembler
from gateway.files.claims import ClaimChecks
from gateway.files.sender import FileSender
from gateway.files.store import FileStore
from gateway.gc_policy import freeze_startup, tune_collector
from gateway.http.access_tokens import AccessTokens
from gateway.http.api import make_runner
from gateway.http.auth import Authenticator, load_public_key
from gateway.http.facades import FacadeContext, FacadeError, mount
from gateway.kafka.port import BrokerUnavailable, OutRecord
from gateway.kafka.transport import (
    INBOX_COMMIT_INTERVAL_S,
    KafkaInboxConsumer,
    KafkaPublisher,
    ensure_topics,
    topic_configs,
)
from gateway.metrics import Metrics
from gateway.relay.checks import Checks
from gateway.relay.delivery import WebhookDeliverer
from gateway.relay.egress import Egress
from gateway.relay.health import EgressHealth
from gateway.relay.identity import IdentityWatch, identity_problem
from gateway.relay.ingress import Ingress
from gateway.relay.outcomes import Draining, Effects
from gateway.relay.requests import RequestReply
from gateway.relay.requests_replies import ReplyStep, Waiters
from gateway.relay.requests_table import ReplyTable, RequestTableError
from gateway.relay.trust_updates import (
    TrustUpdates,
    certificate_statement,
    encryption_key_statement,
    follow_updates,
    load_updates,
)
from gateway.schemas.registry import SchemaRegistry
from gateway.state import StateSchemaError, StateStore, StateUnavailable
from gateway.state.sweeper import run_checkpoints, run_sweeper
from gateway.wire.regions import REGIONS, gateway_audience

log = logging.getLogger(__name__)

INBOX_PARTITIONS = DEFAULT_INBOX_PARTITIONS  # the default of kafka.inbox_partitions (yrdx demo creates topics too)
FILES_PARTITIONS = 4
FILES_SWEEP_S = 3600.0  # how often received files past files.retention_days are deleted


class StartupError(RuntimeError):
    """The gateway cannot start with this configuration; the message says why."""


def load_signer(cfg: GatewayConfig, trust: TrustStore) -> tuple[Signer, TrustedSigner]:
    """The gateway's signer and its validated certificate. Fails closed: a certificate that is not trusted, of
    another region, revoked, expired or not yet valid stops the start (StartupError, one line saying why)."""
    cert = load_certificate(cfg.certificate)
    key = load_private_key(cfg.private_key)
    try:
        own = trust.add_certificate(cert)
    except Exception as e:
        raise StartupError(f"identity.certificate: not trusted by trust.ca: {e}") from e
    if trust.is_revoked(own.thumbprint):
        raise StartupError("identity.certificate: is listed in trust.revoked")
    if own.region != cfg.region:
        raise StartupError(f"identity.certificate: names region {own.region}, but region is {cfg.region}")
    refuse_invalid_identity(own, trust)
    try:
        return Signer(key, cert), own
    except Exception as e:
        raise StartupError(f"identity.private_key: does not match identity.certificate: {e}") from e


def load_encryption_keys(cfg: GatewayConfig) -> list[EncryptionPrivateKey]:
    """The keys this gateway opens sealed payloads with: identity.encryption_key (the current one) first, then
    identity.previous_encryption_keys (a rotation's overlap)."""
    if cfg.encryption_key is None:
        return []
    return [load_encryption_key(p) for p in (cfg.encryption_key, *cfg.previous_encryption_keys)]


def refuse_invalid_identity(own: TrustedSigner, trust: TrustStore) -> None:
    problem = identity_problem(own, trust, dt.datetime.now(dt.UTC))
    if problem is not None:
        raise StartupError(f"identity.certificate: {problem.detail}")


class Gateway:
    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.registry = SchemaRegistry.load(cfg.schemas_dir)
        self.trust = TrustStore.from_files(list(cfg.trust_ca), list(cfg.trust_certificates))
        for thumbprint in cfg.trust_revoked:
            self.trust.revoke(thumbprint)
        self.signer, own = load_signer(cfg, self.trust)
        # What an auditor checks checkpoints against (as `yrdx audit verify`): the roots and gateway certificates,
        # without today's revocations, since a segment signed before a revocation stays genuine.
        self.audit_trust = TrustStore.from_files(list(cfg.trust_ca), list(cfg.trust_certificates))
        try:
            self.state = StateStore.from_config(cfg)
        except (StateUnavailable, StateSchemaError) as e:  # one line and exit 2, like every start-up refusal
            raise StartupError(f"state: {e}") from e
        self.metrics = Metrics(cfg.region, importlib.metadata.version("yrdx"), self.signer.alg)
        self.identity = IdentityWatch(own, self.trust, self.metrics)
        self.auth = Authenticator(
            cfg.region,
            {p.id: load_public_key(p.public_key) for p in cfg.platforms},
            {a.id: load_public_key(a.public_key) for a in cfg.auditors},
            self.state,
            cfg.limits.jwt_max_lifetime_s,
            # The region's identity key file, which every replica of the region holds: their tokens are each other's.
            AccessTokens(cfg.region, cfg.private_key.read_bytes(), gateway_audience(cfg.region),
                         cfg.limits.jwt_max_lifetime_s),
        )
        self.metrics_token = cfg.metrics_token_file.read_text().strip() if cfg.metrics_token_file else None
        self.publisher = KafkaPublisher(cfg.kafka, cfg.limits.publish_timeout_s)
        self.audit = AuditTrail(cfg.region, self.signer, self.state, self.publisher, cfg.audit_enabled, cfg.topics,
                                cfg.instance_id, cfg.audit_batch_records)
        unknown = cfg.seal - self.registry.types()
        if unknown:
            raise StartupError(f"seal: unknown message type {sorted(unknown)[0]}")
        # Peers' keys from the config until yrdx.trust names newer ones; this gateway's keys, current one first.
        self.sealers = PeerSealers({r: load_encryption_pub(p) for r, p in cfg.encryption_keys.items()})
        keys = load_encryption_keys(cfg)
        self.keys = OpenerRing(cfg.region, keys) if keys else None
        self.opener: Opener | None = self.keys  # what the checks and the pull inbox open with
        self.updates = TrustUpdates(self.trust, audit_trust=self.audit_trust, sealers=self.sealers, region=cfg.region)
        self._reloading = asyncio.Lock()
        self.ingress = Ingress(cfg, self.registry, self.signer, self.publisher, self.state, self.audit, self.metrics,
                               self.sealers)
        try:
            self.reply_table = ReplyTable(self.registry, cfg.requests)
        except RequestTableError as e:
            raise StartupError(str(e)) from e
        self.waiters = Waiters()  # the request-reply calls of this process, woken by its egress
        # A SQLite store is this process's alone (no replica can take a reply for its calls): no watcher.
        self.request_reply = RequestReply(cfg, self.reply_table, self.ingress, self.state, self.audit, self.metrics,
                                          self.opener, self.waiters, watch_replicas=self.state.backend != "sqlite")
        self.files = FileStore(cfg.files.spool_dir, cfg.files.max_bytes)
        # Sealed chunks do not compress: their own producer sends them as they are (the broker would otherwise
        # decompress every batch to validate it, for nothing).
        self.files_publisher = KafkaPublisher(dataclasses.replace(cfg.kafka, compression=None),
                                              cfg.limits.publish_timeout_s)
        self.file_sender = FileSender(cfg.region, cfg.topics, self.signer, self.files_publisher, self.sealers,
                                      cfg.files.max_bytes, self.audit)
        self.broker_ok = False
        self.consumer_running = False
        self.egress_health = EgressHealth()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port: int = cfg.port

    async def start(self) -> None:
        names = self.cfg.topics  # kafka.namespace: every topic and group name of this exchange
        topics = {names.inbox(r): self.cfg.kafka.inbox_partitions for r in REGIONS}
        topics.update({names.files(r): FILES_PARTITIONS for r in REGIONS})
        topics.update({names.dlq(self.cfg.region): 1, names.audit: 1, names.checkpoints: 1, names.trust: 1})
        # Retention (kafka.retention) and the trust topic's compaction; existing topics are checked, not altered.
        try:
            await ensure_topics(self.cfg.kafka, topics, topic_configs(self.cfg.kafka, self.cfg.region))
        except KafkaError as e:  # unreachable, a refused login (the cause is logged above), a topic it may not create
            for producer in (self.publisher, self.files_publisher):  # built, never started: closed so that
                await producer.stop()                                   # they leave no warning behind
            self.state.close()
            raise StartupError(f"kafka {self.cfg.kafka.bootstrap_servers}: {e}") from e  # str(e) names the class
        # Revocations, certificates and peers' keys published before this start apply before the first inbox
        # record is checked (and the first payload sealed).
        await load_updates(self.cfg.kafka, self.updates)
        refuse_invalid_identity(self.identity.own, self.trust)  # revoked on yrdx.trust while it was down
        await self.publisher.start()
        await self.files_publisher.start()
        self.broker_ok = True
        # A certificate or encryption key the topic does not announce yet (a first start, or keys changed while
        # the gateway was down): peers learn it now.
        await self._announce(self.signer)
        self._session = aiohttp.ClientSession()
        checks = Checks(self.cfg, self.registry, self.trust, self.opener, self.metrics)
        self.egress = Egress(
            self.cfg,
            checks,
            Effects(self.cfg.region, self.cfg.topics, self.signer, self.publisher, self.state, self.audit,
                    self.metrics),
            WebhookDeliverer(self._session, self.metrics),
            self.egress_health,
            ReplyStep(self.cfg, self.reply_table, self.state, self.audit, self.metrics, self.waiters),
            claims := ClaimChecks(self.cfg, self.registry, self.files, self.state, self.audit),
        )
        self.assembler = Assembler(self.cfg.region, self.cfg.topics, checks, self.files, self.publisher, self.audit,
                                   claims.wake)
        try:
            facades = mount(self.cfg, self.facade_context)
        except FacadeError as e:
            raise StartupError(str(e)) from e
        self._runner = make_runner(self, facades)  # HTTP limits and malformed-request handling: gateway/api.py
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self._tasks = [
            asyncio.create_task(self._consume(), name="egress"),
            asyncio.create_task(self.audit.run_periodic_flush(), name="audit-flush"),
            asyncio.create_task(
                Countersigner(self.cfg.region, self.cfg.kafka, self.trust, self.audit).run(), name="countersign"
            ),
            asyncio.create_task(self._probe_broker(), name="broker-probe"),
            asyncio.create_task(follow_updates(self.cfg.kafka, self.updates), name="trust-updates"),
            asyncio.create_task(self.request_reply.run_sweeper(self._stopping), name="request-sweeper"),
            asyncio.create_task(self._assemble_files(), name="files"),
            asyncio.create_task(self._sweep_files(), name="files-sweep"),
            asyncio.create_task(run_sweeper(self.state, self.cfg.state_retention.sweep_interval_s, self.metrics),
                                name="state-sweep"),
            asyncio.create_task(run_checkpoints(self.state), name="state-checkpoints"),
        ]
        if not self.cfg.audit_enabled:
            log.warning("audit trail DISABLED (audit_enabled: false): for measurements only")
        log.info("gateway started", extra={"region": self.cfg.region, "port": self.port})

    def facade_context(self, name: str) -> FacadeContext:
        return FacadeContext(name, self.request_reply, self.registry, self.cfg.region, self.metrics, self.audit,
                             self.cfg)

    async def _announce(self, signer: Signer, *, encryption: bool = True) -> None:
        """Publish what yrdx.trust does not say yet (BrokerUnavailable if it is not acknowledged): `signer`'s
        certificate and, with `encryption`, this gateway's current encryption key, signed by `signer`."""
        topic = self.cfg.topics.trust
        records: list[OutRecord] = []
        if signer.thumbprint not in self.updates.certificates:
            records.append(certificate_statement(signer, topic))
        kid = self.keys.current_kid if self.keys is not None else None
        if encryption and self.keys is not None and self.updates.own_kid != kid:
            records.append(encryption_key_statement(signer, self.keys.current_public_key, topic))
        if records:
            await self.publisher.publish(records)
            self.updates.certificates.add(signer.thumbprint)
            if encryption:
                self.updates.own_kid = kid

    async def reload_identity(self) -> bool:
        """SIGHUP: read the config file's `identity` again (the files it names) and rotate without a restart.

        A new certificate is checked as at start-up (trusted by a root, this region, not revoked, valid now),
        announced on yrdx.trust (acknowledged) and only then signed with; until the next restart its signatures
        also carry it in `x5c`, so a peer whose follower has not read the announcement yet still checks it
        against the root. New encryption keys are held first (the old ones stay as long as
        identity.previous_encryption_keys lists them), then the current one is announced, so no peer seals to a
        key this gateway cannot open yet. Anything wrong leaves the identity as it was (logged); False then."""
        async with self._reloading:
            try:
                cfg = load_config(self.cfg.source) if self.cfg.source is not None else self.cfg
                signer, own = load_signer(cfg, self.trust)
                keys = load_encryption_keys(cfg)
                if keys and self.keys is None:
                    raise StartupError("identity.encryption_key: added while running: restart to open sealed payloads")
                if self.keys is not None:
                    # Peers seal to the key last announced (or, before any announcement, the config's) until they
                    # learn the next one: dropping it now would make what is on the way undecryptable.
                    sealed_to = self.updates.own_kid or self.keys.current_kid
                    if sealed_to not in {encryption_kid(cfg.region, k.public_key()) for k in keys}:
                        raise StartupError(f"identity.previous_encryption_keys: must keep {sealed_to}, the key peers "
                                           "seal to until they learn the new one")
            except (ConfigError, StartupError, OSError, TypeError, ValueError) as e:
                # What changed is in the message itself: the log collapses repeats of one message template.
                log.error(f"identity not reloaded: keeping the current keys: {e}")
                return False
            try:
                if own.thumbprint != self.signer.thumbprint:
                    rotated = signer.with_x5c()
                    self.audit_trust.add_certificate(rotated.certificate)
                    await self._announce(rotated, encryption=False)
                    self.signer.adopt(rotated)
                    self.identity.own = own
                    self.identity.check()
                if self.keys is not None and keys:
                    self.keys.replace(keys)
                    await self._announce(self.signer)
            except BrokerUnavailable as e:
                log.error(f"identity reload not announced on yrdx.trust ({e}): send SIGHUP again")
                return False
            kids = ", ".join(self.keys.kids()) if self.keys is not None else "no key"
            log.warning(f"identity reloaded: signing with {self.signer.thumbprint}, opening with {kids}")
            return True

    async def _consume(self) -> None:
        """The egress loop; after an unexpected error it rejoins the group and resumes from the last commit.
        Such an error is never one record's doing (egress decides every record); restarts are counted, and
        repeated ones turn /readyz red."""
        while not self._stopping.is_set():
            consumer = KafkaInboxConsumer(self.cfg.kafka, self.cfg.topics.inbox(self.cfg.region),
                                          self.cfg.topics.egress_group(self.cfg.region),
                                          commit_interval_s=INBOX_COMMIT_INTERVAL_S)
            try:
                await consumer.start()
                self.consumer_running = True
                await self.egress.run(consumer, self._stopping)
            except asyncio.CancelledError:
                raise
            except Draining as e:
                log.warning("stopping with the batch in hand not flushed; it is read again after the restart",
                            extra={"detail": str(e)})
                return
            except Exception:
                log.exception("egress loop failed; restarting from the last committed offset")
                self.egress_health.restarted()
                self.metrics.egress_restarts.inc()
                await asyncio.sleep(1.0)
            finally:
                self.consumer_running = False
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _assemble_files(self) -> None:
        """The files topic into the spool (gateway/files/assembler.py); restarts from the last commit after an
        error that is not one record's doing."""
        while not self._stopping.is_set():
            consumer = KafkaInboxConsumer(self.cfg.kafka, self.cfg.topics.files(self.cfg.region),
                                          self.cfg.topics.files_group(self.cfg.region),
                                          max_records=16)
            try:
                await consumer.start()
                await self.assembler.run(consumer, self._stopping)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("files loop failed; restarting from the last committed offset")
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _sweep_files(self) -> None:
        while True:
            removed = await asyncio.to_thread(self.files.sweep, self.cfg.files.retention_days * 86400)
            if removed:
                log.info("received files past their retention deleted", extra={"count": removed})
            await asyncio.sleep(FILES_SWEEP_S)

    async def _probe_broker(self) -> None:
        while True:
            self.broker_ok = await self.publisher.reachable()
            self.metrics.broker_up.set(1 if self.broker_ok else 0)
            self.identity.check()
            self.metrics.revoked.set(self.trust.revoked_count())
            self.state.purge_jti()
            await asyncio.sleep(2.0)

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Drain within `drain_timeout_s` in all, broker or not: what could not be flushed by then is logged
        (nothing of it was acknowledged to anyone, and the uncommitted batch is read again after a restart)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout_s
        self._stopping.set()
        if self._runner is not None:
            try:
                await asyncio.wait_for(self._runner.cleanup(), max(deadline - loop.time(), 0.1))
            except TimeoutError:
                log.warning("HTTP requests still in flight at the drain deadline were cut off")
        egress, *others = self._tasks
        for t in others:
            t.cancel()
        try:
            await asyncio.wait_for(egress, max(deadline - loop.time(), 0.1))
        except (TimeoutError, asyncio.CancelledError):
            log.warning("egress did not finish its batch before the drain deadline; it is read again after a restart")
        except Exception:
            log.exception("egress stopped with an error")
        self.audit.stop()
        try:
            await asyncio.wait_for(self.audit.durable(), max(deadline - loop.time(), 0.1))
        except Exception as e:  # the broker is down: these records were never acknowledged to anyone
            log.warning("audit records not flushed at stop", extra={"pending": self.audit.pending(),
                                                                    "error": type(e).__name__})
        for producer in (self.publisher, self.files_publisher):
            try:
                await asyncio.wait_for(producer.stop(), max(deadline - loop.time(), 1.0))
            except TimeoutError:
                log.warning("a producer did not close before the drain deadline")
        if self._session is not None:
            await self._session.close()
        self.state.close()
        log.info("gateway stopped", extra={"region": self.cfg.region})


async def serve(cfg: GatewayConfig, ready_file: Path | None = None) -> None:
    tune_collector()
    gw = Gateway(cfg)
    await gw.start()
    freeze_startup()
    if ready_file is not None:
        ready_file.write_text(str(gw.port))  # noqa: ASYNC240 (once, at start-up)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[bool]] = set()  # a reference to each, until it is done

    def reload() -> None:
        task = asyncio.create_task(gw.reload_identity(), name="reload-identity")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    await gw.stop()
