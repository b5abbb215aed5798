"""Revocations travel on `yrdx.trust` (compacted, key = the revoked certificate's thumbprint).

A revocation is a small JSON statement signed by a trust root's key (a detached JWS naming the root by
`x5t#S256`), so no gateway and no Kafka client can revoke, or un-revoke, anybody: only the exchange's CA can.
Every gateway reads the whole topic before it starts consuming its inbox, then follows it, and a revoked
signer's messages are dead-lettered as `certificate_revoked` from then on. `trust.revoked` in the config
stays as the offline fallback.

    yrdx trust revoke --config FILE --thumbprint X5T [--reason TEXT] [--ca-key PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from gateway.audit.journey import read_topic
from gateway.config import ConfigError, KafkaConfig, load_config
from gateway.crypto.jws import JwsError, Signer, parse_detached, thumbprint_s256, verify_detached
from gateway.crypto.keys import public_key_of
from gateway.crypto.pki import load_certificate, load_private_key
from gateway.crypto.trust import TrustStore
from gateway.kafka.port import OutRecord
from gateway.kafka.transport import KafkaPublisher, client_options
from gateway.wire import headers
from gateway.wire.envelope import utc_timestamp
from gateway.wire.regions import DEFAULT_TOPICS

log = logging.getLogger(__name__)



def revocation(ca: Signer, thumbprint: str, reason: str, topic: str = DEFAULT_TOPICS.trust) -> OutRecord:
    statement = orjson.dumps({"kind": "revocation", "thumbprint": thumbprint, "reason": reason,
                              "revoked_at": utc_timestamp()}, option=orjson.OPT_SORT_KEYS)
    return OutRecord(topic, statement, thumbprint.encode(), [(headers.SIGNATURE, ca.sign(statement).encode())])


def apply_update(trust: TrustStore, value: bytes | None, signature: bytes | None) -> str | None:
    """Revoke what a correctly signed statement names; return the thumbprint, or None (ignored, with a log line)
    when the statement is malformed or not signed by one of the trust roots."""
    if value is None or signature is None:
        return None
    try:
        jws = parse_detached(signature.decode("ascii"))
        doc = orjson.loads(value)
    except (JwsError, UnicodeDecodeError, orjson.JSONDecodeError):
        log.warning("ignoring a malformed trust update")
        return None
    root = next((r for r in trust.roots if thumbprint_s256(r) == jws.thumbprint), None)
    if root is None or not verify_detached(jws, value, public_key_of(root)):
        log.warning("ignoring a trust update not signed by a trust root")
        return None
    if not isinstance(doc, dict) or doc.get("kind") != "revocation" or not isinstance(doc.get("thumbprint"), str):
        return None
    trust.revoke(doc["thumbprint"])
    log.warning("certificate revoked", extra={"thumbprint": doc["thumbprint"], "reason": str(doc.get("reason"))})
    return str(doc["thumbprint"])


async def load_updates(kafka: KafkaConfig, trust: TrustStore, timeout_s: float = 30.0) -> int:
    """Apply everything on the topic now: called before the gateway consumes its inbox."""
    records = await read_topic(kafka, kafka.topics.trust, timeout_s)
    return sum(1 for r in records if apply_update(trust, r.value, r.headers.get(headers.SIGNATURE)))


async def follow_updates(kafka: KafkaConfig, trust: TrustStore) -> None:
    consumer = AIOKafkaConsumer(kafka.topics.trust, **client_options(kafka), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="latest", fetch_max_wait_ms=500)
    await consumer.start()
    try:
        while True:
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                for m in msgs:
                    apply_update(trust, m.value, dict(m.headers or ()).get(headers.SIGNATURE))
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


async def _publish(kafka: KafkaConfig, record: OutRecord) -> None:
    publisher = KafkaPublisher(kafka, 30.0)
    await publisher.start()
    try:
        await publisher.publish([record])
    finally:
        await publisher.stop()


def cmd_revoke(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(Path(args.config))
    except ConfigError as e:
        print(f"yrdx: bad config {args.config}: {e}", file=sys.stderr)
        return 2
    ca_cert_path = Path(args.ca_cert) if args.ca_cert else cfg.trust_ca[0]
    ca_key_path = Path(args.ca_key) if args.ca_key else ca_cert_path.with_suffix(".key")  # the dev PKI layout
    try:
        ca = Signer(load_private_key(ca_key_path), load_certificate(ca_cert_path))
    except (OSError, ValueError) as e:
        print(f"yrdx: cannot load the CA key and certificate: {e}", file=sys.stderr)
        return 2
    asyncio.run(_publish(cfg.kafka, revocation(ca, args.thumbprint, args.reason, cfg.topics.trust)))
    print(f"revoked {args.thumbprint} on {cfg.topics.trust}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trust = subparsers.add_parser("trust", help="distribute trust updates (revocations) to every gateway")
    sub = trust.add_subparsers(dest="trust_command", required=True)
    revoke = sub.add_parser("revoke", help="revoke a gateway certificate everywhere, signed by the root CA key")
    revoke.add_argument("--config", required=True, help="a gateway config (Kafka settings, trust roots)")
    revoke.add_argument("--thumbprint", required=True, help="x5t#S256 of the certificate to revoke")
    revoke.add_argument("--reason", default="unspecified")
    revoke.add_argument("--ca-key", help="the root CA private key (default: beside trust.ca[0] in the dev PKI)")
    revoke.add_argument("--ca-cert", help="the root CA certificate (default: trust.ca[0])")
    revoke.set_defaults(func=cmd_revoke)
