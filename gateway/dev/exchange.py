"""A complete local exchange (`yrdx init`): the development PKI plus one gateway config per region, wired.

Layout under DIR:
    certs/...                   the PKI of `yrdx certs init` (private keys 0600, git-ignored)
    sh.yaml js.yaml zj.yaml ah.yaml
    secrets/metrics.token       the operators' bearer token for GET /metrics
    var/<r>/state.sqlite        created by the gateways
  with --secure (README "Locking Kafka down"):
    secrets/kafka/<user>.password   each region's SCRAM password (0600; user yrdx-<seg>)
    kafka/acls.json                 the exchange's ACLs (gateway/kafka/acls.py), applied by the secure broker
    kafka/ca.crt                    the broker's development CA, copied here by `yrdx kafka start --secure`
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.config import read_secret
from gateway.dev.kafka_security import SCRAM_MECHANISM, BrokerSecurity
from gateway.dev.pki import PkiLayout, init_pki
from gateway.kafka.acls import acls_json, exchange_acls, parse_acls_json, username
from gateway.wire.regions import REGIONS, check_namespace, region_slug

# The types of the NHSA counter transactions (adapters/nhsa) besides the settlement, filing and reversal types.
NHSA_TYPES = (
    "medical.person.request", "medical.person.result",
    "medical.visit.register", "medical.visit.register.result", "medical.visit.cancel", "medical.visit.cancel.result",
    "medical.fee.upload", "medical.fee.upload.result", "medical.fee.cancel", "medical.fee.cancel.result",
    "medical.settlement.pre.request", "medical.settlement.pre.result", "medical.settlement.cancel.result",
    "medical.reversal.result", "medical.filing.revoke", "medical.filing.revoke.result",
    "medical.reconcile.summary", "medical.reconcile.summary.result",
    "medical.reconcile.detail", "medical.reconcile.detail.result",
)

KAFKA_ACL_FILE = "kafka/acls.json"
KAFKA_CA_FILE = "kafka/ca.crt"

# The business types, one schema each under schemas/. `yrdx.receipt` is not among them: only gateways send receipts.
BUSINESS_TYPES = (
    "identity.verify.request", "identity.verify.result",
    "license.verify.request", "license.verify.result", "license.status.notice",
    "license.commitment.record", "license.commitment.verification",
    "medical.filing.request", "medical.filing.result",
    "medical.settlement.request", "medical.settlement.result", "medical.settlement.cancel", "medical.reversal",
    "medical.clearing.statement", "medical.clearing.confirm",
    # Government services across regions (README): licences used under the holder's grant, cases, supervision.
    "license.authorization.grant", "license.authorization.revoke", "license.fetch.request", "license.fetch.result",
    "case.submit", "case.accept", "case.progress", "case.result", "case.evaluation",
    "supervision.lead", "supervision.result", "credit.list.notice", "credit.repair.notice",
    # The NHSA counter transactions (issue 11, README "At the counter"): each request with its result type.
    *NHSA_TYPES,
)


# The business types whose schema tags a field SENSITIVE_* (ID numbers, medical and financial data): sealed by
# default. Types with only PERSONAL fields (pseudonyms, verdicts) travel signed in clear.
SEALED_BY_DEFAULT = (
    "identity.verify.request", "license.commitment.record", "medical.clearing.confirm", "medical.filing.request",
    "medical.reversal", "medical.settlement.cancel", "medical.settlement.request", "medical.settlement.result",
    "case.submit",
    "medical.fee.cancel", "medical.fee.cancel.result", "medical.fee.upload", "medical.fee.upload.result",
    "medical.filing.revoke", "medical.person.request", "medical.person.result", "medical.reconcile.detail",
    "medical.settlement.cancel.result", "medical.settlement.pre.request", "medical.settlement.pre.result",
    "medical.visit.cancel", "medical.visit.register", "medical.visit.register.result",
)


def platform_id(region: str) -> str:
    return f"{region_slug(region)}-platform"


def auditor_id(region: str) -> str:
    return f"{region_slug(region)}-auditor"


@dataclass(frozen=True, slots=True)
class Exchange:
    dir: Path
    pki: PkiLayout

    def config_path(self, region: str) -> Path:
        return self.dir / f"{region_slug(region)}.yaml"

    def kafka_password_file(self, user: str) -> Path:
        return self.dir / "secrets" / "kafka" / f"{user}.password"


def broker_security(dir: Path) -> BrokerSecurity:
    """What the secure broker serving the exchange in `dir` (`yrdx init --secure`) needs: the SCRAM users of its
    password files, its ACL file, and where its configs expect the broker's CA. FileNotFoundError or ValueError
    when `dir` holds no secure exchange."""
    dir = dir.resolve()
    acls = parse_acls_json((dir / KAFKA_ACL_FILE).read_text(encoding="utf-8"))
    users = {p.stem: read_secret(p) for p in sorted((dir / "secrets" / "kafka").glob("*.password"))}
    return BrokerSecurity(users, acls, dir / KAFKA_CA_FILE)


def gateway_config(
    region: str,
    pki: PkiLayout,
    dir: Path,
    port: int,
    bootstrap_servers: str,
    webhook_url: str | None,
    namespace: str = "",
    secure: bool = False,
) -> dict[str, Any]:
    def rel(p: Path) -> str:  # relative paths keep a generated exchange movable
        return str(p.relative_to(dir))

    delivery: dict[str, Any] = {"mode": "webhook", "url": webhook_url} if webhook_url else {"mode": "inbox"}
    kafka: dict[str, Any] = {"bootstrap_servers": bootstrap_servers}
    if namespace:  # topic and group prefix; absent = the unprefixed names (README "Namespaces")
        kafka["namespace"] = namespace
    if secure:  # the region's own principal on the SASL_SSL listener (README "Locking Kafka down")
        user = username(region, namespace)
        kafka.update(security_protocol="SASL_SSL", sasl_mechanism=SCRAM_MECHANISM, sasl_username=user,
                     sasl_password_file=rel(Exchange(dir, pki).kafka_password_file(user)), ssl_cafile=KAFKA_CA_FILE)
    return {
        "region": region,
        "listen": {"host": "127.0.0.1", "port": port},
        "kafka": kafka,
        "identity": {"certificate": rel(pki.gateway_cert(region)), "private_key": rel(pki.gateway_key(region)),
                     "encryption_key": rel(pki.encryption_key(region))},
        "trust": {"ca": [rel(pki.ca_cert)], "certificates": [rel(pki.gateway_cert(r)) for r in REGIONS],
                  "encryption_keys": {r: rel(pki.encryption_pub(r)) for r in REGIONS if r != region}},
        # Types whose payload travels sealed (JWE to the destination gateway); see README "Sealed payloads".
        "seal": list(SEALED_BY_DEFAULT),
        "state": {"path": f"var/{region_slug(region)}/state.sqlite"},
        "limits": {"max_body_bytes": 262144, "batch_max": 500, "publish_timeout_s": 10},
        # Every region may send every business type to every other: the regional agreements cover all three
        # families in both directions (each region is both insured location and place of care).
        "accept": {r: list(BUSINESS_TYPES) for r in REGIONS if r != region},
        "platforms": [{
            "id": platform_id(region),
            "public_key": rel(pki.platform_pub(region)),
            "may_send": list(BUSINESS_TYPES),
            "receives": list(BUSINESS_TYPES),
            "delivery": delivery,
        }],
        "auditors": [{"id": auditor_id(region), "public_key": rel(pki.auditor_pub)}],
        "metrics": {"bearer_token_file": "secrets/metrics.token"},
    }


def init_exchange(
    dir: Path,
    *,
    base_port: int = 8401,
    bootstrap_servers: str = "127.0.0.1:9092",
    webhook_urls: dict[str, str] | None = None,
    force: bool = False,
    namespace: str = "",
    alg: str = "ES256",
    secure: bool = False,
) -> Exchange:
    """`namespace` prefixes every Kafka topic and group of the exchange (README "Namespaces"): ValueError when it
    is not a valid `kafka.namespace`, before anything is written. `alg` picks the signing suite of the PKI
    (SM2SM3: the national suite, whose gateways then sign, seal and verify with SM2/SM3/SM4). `secure`: each
    region logs in to Kafka as its own SCRAM user (a fresh password each), with the ACL file for the broker."""
    check_namespace(namespace)
    dir = dir.resolve()
    pki = init_pki(dir / "certs", alg=alg, force=force)
    (dir / "secrets").mkdir(parents=True, exist_ok=True)
    token = dir / "secrets" / "metrics.token"
    token.write_text(secrets.token_urlsafe(32) + "\n")
    token.chmod(0o600)
    ex = Exchange(dir, pki)
    if secure:
        _write_kafka_access(ex, namespace)
    for i, region in enumerate(REGIONS):
        cfg = gateway_config(
            region, pki, dir, base_port + i if base_port else 0, bootstrap_servers,
            (webhook_urls or {}).get(region), namespace, secure,
        )
        ex.config_path(region).write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return ex


def _write_kafka_access(ex: Exchange, namespace: str) -> None:
    for region in REGIONS:
        path = ex.kafka_password_file(username(region, namespace))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)  # before the password is in it
        path.write_text(secrets.token_urlsafe(24) + "\n")
    acl_file = ex.dir / KAFKA_ACL_FILE
    acl_file.parent.mkdir(parents=True, exist_ok=True)
    acl_file.write_text(acls_json(exchange_acls(namespace)))


def edit_config(path: Path, **changes: Any) -> None:
    """Change top-level keys of a generated gateway config; `delivery=` replaces its platform's delivery."""
    doc = yaml.safe_load(path.read_text())
    delivery = changes.pop("delivery", None)
    if delivery is not None:
        doc["platforms"][0]["delivery"] = delivery
    doc.update(changes)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
