"""Trust updates: signed statements on `yrdx.trust` that every gateway applies without a restart.

Three kinds, each a small JSON statement with a detached JWS in the `yrdx-sig` header (README "Rotating keys",
"Revoking a certificate"):

- `revocation` (key = the thumbprint): signed by a trust root, so no gateway and no Kafka client can revoke, or
  un-revoke, anybody; only the exchange's CA can. A revoked signer's messages are dead-lettered as
  `certificate_revoked` from then on.
- `certificate` (key = `certificate:<thumbprint>`): a region's new signing certificate, carried in the JWS's
  `x5c` and signed by its own key (proof of possession). It counts only if it passes the trust store's checks
  against the roots (issued by a root, one known region, may sign), so publishing one needs the CA's issuance,
  not the CA's key. Applied to the live trust store and to the trust an auditor checks checkpoints against.
- `encryption_key` (key = `encryption-key:<REGION>`): a region's new encryption public key (PEM) and its kid,
  signed by a certificate of that region that is trusted, valid and not revoked now. Peers seal to it from the
  next message; a statement published before the key already held is ignored (a replayed old statement).

Every gateway reads the whole topic before it consumes its inbox (`load_updates`), then follows it
(`follow_updates`). `yrdx trust revoke` and `yrdx trust publish` (gateway.cli.trust) publish statements made
here; a gateway publishes its own `certificate` and `encryption_key` statements when it reloads its identity
(gateway.runtime).
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import aclosing
from pathlib import Path
from typing import Final

import orjson
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.config import KafkaConfig
from gateway.crypto.jws import DetachedJws, JwsError, Signer, parse_detached, thumbprint_s256, verify_detached
from gateway.crypto.keyfiles import load_certificate, load_private_key, parse_encryption_pub
from gateway.crypto.keyring import PeerSealers, encryption_kid
from gateway.crypto.keys import EncryptionPublicKey, public_key_of
from gateway.crypto.trust import TrustedSigner, TrustError, TrustStore
from gateway.kafka.port import OutRecord
from gateway.kafka.reader import TopicRecord, follow_topic, read_topic
from gateway.kafka.transport import KafkaPublisher
from gateway.wire import headers
from gateway.wire.envelope import utc_timestamp
from gateway.wire.regions import DEFAULT_TOPICS

log = logging.getLogger(__name__)


def _statement(doc: dict[str, str]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def revocation(ca: Signer, thumbprint: str, reason: str, topic: str = DEFAULT_TOPICS.trust) -> OutRecord:
    """The trust update revoking `thumbprint` (x5t#S256), signed by the trust root `ca`."""
    statement = _statement({"kind": "revocation", "thumbprint": thumbprint, "reason": reason,
                            "revoked_at": utc_timestamp()})
    return OutRecord(topic, statement, thumbprint.encode(), [(headers.SIGNATURE, ca.sign(statement).encode())])


def certificate_statement(signer: Signer, topic: str = DEFAULT_TOPICS.trust) -> OutRecord:
    """The trust update announcing `signer`'s certificate, signed by its own key with the certificate in `x5c`."""
    if signer.region is None:
        raise ValueError("the certificate names no single region")
    statement = _statement({"kind": "certificate", "region": signer.region, "thumbprint": signer.thumbprint,
                            "published_at": utc_timestamp()})
    sig = signer.with_x5c().sign(statement)
    return OutRecord(topic, statement, f"certificate:{signer.thumbprint}".encode(), [(headers.SIGNATURE, sig.encode())])


def encryption_key_statement(signer: Signer, key: EncryptionPublicKey, topic: str = DEFAULT_TOPICS.trust) -> OutRecord:
    """The trust update telling peers to seal to `key` from now on, signed by the region's certificate `signer`
    (with the certificate in `x5c`, so a peer that has not learned it yet can still check it)."""
    if signer.region is None:
        raise ValueError("the certificate names no single region")
    pem = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")
    statement = _statement({"kind": "encryption_key", "region": signer.region,
                            "kid": encryption_kid(signer.region, key), "key": pem, "published_at": utc_timestamp()})
    sig = signer.with_x5c().sign(statement)
    return OutRecord(topic, statement, f"encryption-key:{signer.region}".encode(), [(headers.SIGNATURE, sig.encode())])


KINDS: Final = frozenset({"revocation", "certificate", "encryption_key"})


class TrustUpdates:
    """What the statements change: `trust` (the live store: revocations and certificates), `audit_trust` (what
    checkpoints are checked against: certificates only, since a segment signed before a revocation stays
    genuine) and `sealers` (the peers' encryption keys; a gateway's own statements are not for it). Statements of
    a kind outside `kinds` are passed over."""

    def __init__(self, trust: TrustStore, *, audit_trust: TrustStore | None = None,
                 sealers: PeerSealers | None = None, region: str | None = None, kinds: frozenset[str] = KINDS) -> None:
        self.trust = trust
        self.kinds = kinds
        self.audit_trust = audit_trust
        self.sealers = sealers
        self.region = region
        self.certificates: set[str] = set()  # thumbprints announced by a `certificate` statement
        self.own_kid: str | None = None  # the newest `encryption_key` statement of `region` names this kid
        self._own_published: dt.datetime | None = None

    def apply(self, value: bytes | None, signature: bytes | None) -> str | None:
        """Apply one statement; return what it names (a thumbprint, or a kid), or None when it is ignored (with a
        log line): malformed, not signed as its kind requires, or of no known kind."""
        if value is None or signature is None:
            return None
        try:
            jws = parse_detached(signature.decode("ascii"))
            doc = orjson.loads(value)
        except (JwsError, UnicodeDecodeError, orjson.JSONDecodeError):
            log.warning("ignoring a malformed trust update")
            return None
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind in KINDS and kind not in self.kinds:
            return None
        if kind == "revocation":
            return self._revocation(jws, value, doc)
        if kind == "certificate":
            return self._certificate(jws, value, doc)
        if kind == "encryption_key":
            return self._encryption_key(jws, value, doc)
        log.warning("ignoring a trust update of no known kind")
        return None

    def _revocation(self, jws: DetachedJws, value: bytes, doc: dict[str, object]) -> str | None:
        root = next((r for r in self.trust.roots if thumbprint_s256(r) == jws.thumbprint), None)
        if root is None or not verify_detached(jws, value, public_key_of(root)):
            log.warning("ignoring a trust update not signed by a trust root")
            return None
        thumbprint = doc.get("thumbprint")
        if not isinstance(thumbprint, str):
            log.warning("ignoring a revocation that names no thumbprint")
            return None
        self.trust.revoke(thumbprint)
        log.warning("certificate revoked", extra={"thumbprint": thumbprint, "reason": str(doc.get("reason"))})
        return thumbprint

    def _signed_by_region(self, jws: DetachedJws, value: bytes, doc: dict[str, object],
                          now: dt.datetime | None) -> TrustedSigner | None:
        """The certificate that signed a region's statement, if it is trusted (and, with `now`, valid and not
        revoked then), the signature holds and it is of the region the statement names; else None, logged."""
        try:
            signer = self.trust.learn(jws.header) if now is None else self.trust.signer(jws.header, now)
        except TrustError as e:
            log.warning("ignoring a trust update by an untrusted signer", extra={"detail": e.detail})
            return None
        if not verify_detached(jws, value, signer.public_key) or doc.get("region") != signer.region:
            log.warning("ignoring a trust update whose signature does not hold for its region",
                        extra={"thumbprint": signer.thumbprint})
            return None
        return signer

    def _certificate(self, jws: DetachedJws, value: bytes, doc: dict[str, object]) -> str | None:
        # The statement is signed by the certificate it announces: trust.learn validates it against the roots.
        signer = self._signed_by_region(jws, value, doc, None)
        if signer is None:
            return None
        if doc.get("thumbprint") != signer.thumbprint:
            log.warning("ignoring a certificate statement not signed by the certificate it names")
            return None
        if self.audit_trust is not None:
            cert = self.trust.certificate(signer.thumbprint)
            if cert is not None:
                self.audit_trust.add_certificate(cert)
        self.certificates.add(signer.thumbprint)
        log.info("certificate learned", extra={"region": signer.region, "thumbprint": signer.thumbprint})
        return signer.thumbprint

    def _encryption_key(self, jws: DetachedJws, value: bytes, doc: dict[str, object]) -> str | None:
        signer = self._signed_by_region(jws, value, doc, dt.datetime.now(dt.UTC))
        if signer is None:
            return None
        pem, kid, published = doc.get("key"), doc.get("kid"), doc.get("published_at")
        try:
            if not isinstance(pem, str) or not isinstance(published, str):
                raise ValueError("key and published_at must be strings")
            key = parse_encryption_pub(pem.encode("ascii"), "an encryption_key statement")
            published_at = dt.datetime.fromisoformat(published)
        except (ValueError, TypeError, UnicodeEncodeError) as e:
            log.warning("ignoring a malformed encryption_key statement", extra={"detail": str(e)})
            return None
        if kid != encryption_kid(signer.region, key) or published_at.tzinfo is None:
            log.warning("ignoring an encryption_key statement whose kid or time does not fit its key")
            return None
        if signer.region == self.region:  # this gateway's own key: what peers were told to seal to
            if self._own_published is None or published_at > self._own_published:
                self._own_published, self.own_kid = published_at, kid
        elif self.sealers is not None and self.sealers.learn(signer.region, key, published_at):
            log.warning(f"sealing to a new encryption key of {signer.region}: {kid}")  # one line per key
        return kid


def apply_update(updates: TrustUpdates, value: bytes | None, signature: bytes | None) -> str | None:
    """`updates.apply`: one statement of the topic (the loader and the follower call it through this name)."""
    return updates.apply(value, signature)


def _apply_record(updates: TrustUpdates, r: TopicRecord) -> bool:
    """Apply one record of the topic; never raises, so that one hostile record can neither keep a gateway from
    starting nor stop its follower: a record the client library cannot decode, or one that cannot be applied,
    is ignored with a log line."""
    if r.flaw is not None:
        log.warning("ignoring a trust update the client library cannot decode",
                    extra={"offset": r.offset, "detail": r.flaw})
        return False
    try:
        return apply_update(updates, r.value, r.headers.get(headers.SIGNATURE)) is not None
    except Exception as e:
        log.warning("ignoring a trust update that cannot be applied",
                    extra={"offset": r.offset, "error": f"{type(e).__name__}: {e}"})
        return False


async def load_updates(kafka: KafkaConfig, updates: TrustUpdates, timeout_s: float = 30.0) -> int:
    """Apply everything on the topic now (called before the gateway consumes its inbox); the number applied."""
    return sum(_apply_record(updates, r) for r in await read_topic(kafka, kafka.topics.trust, timeout_s,
                                                                   step_over=True))


async def learn_certificates(kafka: KafkaConfig, trust: TrustStore, timeout_s: float = 30.0) -> None:
    """Add to `trust` every certificate announced on the topic, and nothing else: what an auditor checks
    checkpoints against (a region that rotated signs with a certificate no config lists; revocations stay out,
    since a segment signed before a revocation stays genuine)."""
    updates = TrustUpdates(TrustStore(trust.roots), audit_trust=trust, kinds=frozenset({"certificate"}))
    await load_updates(kafka, updates, timeout_s)


async def follow_updates(kafka: KafkaConfig, updates: TrustUpdates) -> None:
    """Apply every update published from now on, until cancelled. It never stops on its own, since a follower
    that stopped would let a revoked signer through unnoticed: a record that cannot be applied is ignored
    (`_apply_record`), and a client that fails is started again where it stopped
    (gateway.kafka.reader.follow_topic)."""
    # From the beginning, not from the end: a revocation published after load_updates read the topic and before
    # this follower started would otherwise be missed (applying one twice changes nothing; the topic is compacted).
    batches = follow_topic(kafka, kafka.topics.trust, from_beginning=True)
    async with aclosing(batches):
        async for batch in batches:
            for r in batch:
                _apply_record(updates, r)


def ca_signer(ca_cert: Path, ca_key: Path | None = None) -> Signer:
    """The trust root's signer: its certificate and private key (default: beside the certificate, `.key` for
    `.crt`, as the development PKI keeps them). Raises OSError or ValueError when either cannot be loaded."""
    key = ca_key if ca_key is not None else ca_cert.with_suffix(".key")
    return Signer(load_private_key(key), load_certificate(ca_cert))


async def publish_update(kafka: KafkaConfig, record: OutRecord, timeout_s: float = 30.0) -> None:
    """Publish one trust update and wait for the broker's acknowledgement."""
    publisher = KafkaPublisher(kafka, timeout_s)
    await publisher.start()
    try:
        await publisher.publish([record])
    finally:
        await publisher.stop()
