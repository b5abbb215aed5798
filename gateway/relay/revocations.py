"""Trust updates: revocations signed by a trust root, published on `yrdx.trust` and applied by every gateway.

The topic is compacted, key = the revoked certificate's thumbprint. A revocation is a small JSON statement signed
by a trust root's key (a detached JWS naming the root by `x5t#S256`), so no gateway and no Kafka client can
revoke, or un-revoke, anybody: only the exchange's CA can. Every gateway reads the whole topic before it starts
consuming its inbox (`load_updates`), then follows it (`follow_updates`), and a revoked signer's messages are
dead-lettered as `certificate_revoked` from then on. `trust.revoked` in the config stays as the offline
fallback. `yrdx trust revoke` (gateway.cli.trust) publishes a statement made by `revocation`.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from pathlib import Path

import orjson

from gateway.config import KafkaConfig
from gateway.crypto.jws import JwsError, Signer, parse_detached, thumbprint_s256, verify_detached
from gateway.crypto.keyfiles import load_certificate, load_private_key
from gateway.crypto.keys import public_key_of
from gateway.crypto.trust import TrustStore
from gateway.kafka.port import OutRecord
from gateway.kafka.reader import follow_topic, read_topic
from gateway.kafka.transport import KafkaPublisher
from gateway.wire import headers
from gateway.wire.envelope import utc_timestamp
from gateway.wire.regions import DEFAULT_TOPICS

log = logging.getLogger(__name__)


def revocation(ca: Signer, thumbprint: str, reason: str, topic: str = DEFAULT_TOPICS.trust) -> OutRecord:
    """The trust update revoking `thumbprint` (x5t#S256), signed by the trust root `ca`."""
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
    """Apply everything on the topic now: called before the gateway consumes its inbox. A record the client
    library cannot decode is ignored with a log line, so that one hostile record cannot keep a gateway from
    starting."""
    applied = 0
    for r in await read_topic(kafka, kafka.topics.trust, timeout_s, step_over=True):
        if r.flaw is not None:
            log.warning("ignoring a trust update the client library cannot decode",
                        extra={"offset": r.offset, "detail": r.flaw})
        elif apply_update(trust, r.value, r.headers.get(headers.SIGNATURE)):
            applied += 1
    return applied


async def follow_updates(kafka: KafkaConfig, trust: TrustStore) -> None:
    """Apply every update published from now on, until cancelled. It never stops on its own, since a follower
    that stopped would let a revoked signer through unnoticed: a record the client library cannot decode, or any
    record that cannot be applied, is ignored with a log line, and a client that fails is started again where it
    stopped (gateway.kafka.reader.follow_topic)."""
    # From the beginning, not from the end: a revocation published after load_updates read the topic and before
    # this follower started would otherwise be missed (applying one twice changes nothing; the topic is compacted).
    batches = follow_topic(kafka, kafka.topics.trust, from_beginning=True)
    async with aclosing(batches):
        async for batch in batches:
            for r in batch:
                if r.flaw is not None:
                    log.warning("ignoring a trust update the client library cannot decode",
                                extra={"offset": r.offset, "detail": r.flaw})
                    continue
                try:
                    apply_update(trust, r.value, r.headers.get(headers.SIGNATURE))
                except Exception as e:
                    log.warning("ignoring a trust update that cannot be applied",
                                extra={"offset": r.offset, "error": f"{type(e).__name__}: {e}"})


def ca_signer(ca_cert: Path, ca_key: Path | None = None) -> Signer:
    """The trust root's signer: its certificate and private key (default: beside the certificate, `.key` for
    `.crt`, as the development PKI keeps them). Raises OSError or ValueError when either cannot be loaded."""
    key = ca_key if ca_key is not None else ca_cert.with_suffix(".key")
    return Signer(load_private_key(key), load_certificate(ca_cert))


async def publish_revocation(kafka: KafkaConfig, record: OutRecord, timeout_s: float = 30.0) -> None:
    """Publish one trust update and wait for the broker's acknowledgement."""
    publisher = KafkaPublisher(kafka, timeout_s)
    await publisher.start()
    try:
        await publisher.publish([record])
    finally:
        await publisher.stop()
