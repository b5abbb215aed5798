"""The locked-down local broker (`yrdx kafka start --secure`): its development TLS, its users, its listeners and
the ACLs applied at start.

- TLS: a development CA and a broker certificate (SAN 127.0.0.1 and localhost) generated into the broker's
  directory (``tls/``, keys 0600, never in git), served as a PEM keystore (``ssl.keystore.type=PEM``).
- Clients: one SASL_SSL listener, SCRAM-SHA-512 only. The users are created when the storage is formatted
  (``kafka-storage format --add-scram``, KIP-900): the admin ``yrdx-admin`` (the only super user; its password
  is generated into ``admin.password``) and the users of the exchange served (`yrdx init --secure`).
- Controller: a SASL_PLAINTEXT listener with PLAIN and a static JAAS user (SCRAM cannot serve the KRaft
  controller: its credentials live in the metadata the controller serves), the same admin.
- StandardAuthorizer, deny by default; the exchange's ACLs (gateway/kafka/acls.py) applied after start.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.config import KafkaConfig
from gateway.dev.pki import make_ca, write_certificate, write_private_key
from gateway.kafka.acls import ADMIN_USER, AclBinding, principal

SCRAM_MECHANISM = "SCRAM-SHA-512"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
LISTENER = "SASL_SSL"


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """What an exchange asks of the secure broker: its SCRAM users (name -> password), its ACLs, and where to
    put the broker's CA certificate for its configs (`ssl_cafile`)."""

    users: Mapping[str, str] = field(default_factory=dict)
    acls: Sequence[AclBinding] = ()
    publish_ca_to: Path | None = None


class BrokerTls:
    """The broker directory's security files."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "tls"
        self.ca_cert = self.dir / "ca.crt"
        self.ca_key = self.dir / "ca.key"
        self.keystore = self.dir / "broker.pem"  # the broker's key and certificate, PEM
        self.admin_password_file = data_dir / "admin.password"
        self.users_file = data_dir / "scram-users.json"  # who was created at format time

    def ensure(self, host: str) -> None:
        """Generate the CA, the broker certificate and the admin password once; later starts reuse them."""
        if not self.admin_password_file.exists():
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            self.admin_password_file.write_text(secrets.token_urlsafe(24) + "\n")
            self.admin_password_file.chmod(0o600)
        if self.keystore.exists() and self.ca_cert.exists():
            return
        ca, ca_key = make_ca("yrdx development Kafka CA")  # P-256, as Java's TLS stack takes it
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "yrdx local kafka")]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        write_certificate(self.ca_cert, ca)
        write_private_key(self.ca_key, ca_key)
        write_private_key(self.keystore, key)  # PKCS8 PEM, 0600; the certificate follows the key in one file
        with self.keystore.open("ab") as fh:
            fh.write(cert.public_bytes(Encoding.PEM))

    @property
    def admin_password(self) -> str:
        return self.admin_password_file.read_text(encoding="utf-8").strip()

    def admin_config(self, bootstrap_servers: str) -> KafkaConfig:
        """The admin's client settings (the super user): for readiness probes, ACLs and tests."""
        return KafkaConfig(bootstrap_servers=bootstrap_servers, security_protocol="SASL_SSL",
                           sasl_mechanism=SCRAM_MECHANISM, sasl_username=ADMIN_USER,
                           sasl_password_file=self.admin_password_file, ssl_cafile=self.ca_cert)

    def scram_arguments(self, users: Mapping[str, str]) -> list[str]:
        """`--add-scram` arguments of `kafka-storage format`: the admin and every user. (The passwords are in this
        short-lived process's argv: acceptable for a development broker on one's own machine.)"""
        every = {ADMIN_USER: self.admin_password, **users}
        return [a for name, pw in every.items() for a in ("-S", f"{SCRAM_MECHANISM}=[name={name},password={pw}]")]

    def record_users(self, users: Mapping[str, str]) -> None:
        self.users_file.write_text(json.dumps(_fingerprints(users), indent=2, sort_keys=True) + "\n")

    def users_differ(self, users: Mapping[str, str]) -> bool:
        """Whether a formatted storage cannot serve `users`: formatted without SCRAM (not by a secure start), or
        with other users or passwords than `users` (empty: whatever it was formatted with)."""
        try:
            recorded = json.loads(self.users_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return True
        return bool(users) and recorded != _fingerprints(users)


def _fingerprints(users: Mapping[str, str]) -> dict[str, str]:
    # a changed password is detected without keeping the password itself
    return {name: hashlib.sha256(pw.encode()).hexdigest()[:16] for name, pw in users.items()}


def secure_properties(tls: BrokerTls, host: str, port: int, controller_port: int) -> dict[str, str]:
    """The server.properties keys that lock the broker down (they replace the PLAINTEXT listener's)."""
    pw = tls.admin_password
    scram = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN_USER}" password="{pw}";'
    plain = (f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{ADMIN_USER}" '
             f'password="{pw}" user_{ADMIN_USER}="{pw}";')
    return {
        "listeners": f"{LISTENER}://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"{LISTENER}://{host}:{port}",
        "inter.broker.listener.name": LISTENER,
        "listener.security.protocol.map": f"{LISTENER}:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls.keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.ca_cert),
        "authorizer.class.name": AUTHORIZER,
        "allow.everyone.if.no.acl.found": "false",
        "super.users": principal(ADMIN_USER),
        # The gateways create the topics they ensure, each under its literal CREATE grant; nothing appears by a read.
        "auto.create.topics.enable": "false",
    }


async def apply_acls(admin: KafkaConfig, bindings: Sequence[AclBinding]) -> None:
    """Create the bindings as the admin (CreateAcls; an existing binding is no error). Raises the broker's error
    for a binding it refuses."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import for_code
    from aiokafka.protocol.admin import CreateAclsRequest

    from gateway.kafka.acls import OPERATIONS, PATTERN_LITERAL, PERMISSION_ALLOW, RESOURCE_TYPES
    from gateway.kafka.transport import client_options

    client = AIOKafkaClient(**client_options(admin))
    try:
        await client.bootstrap()
        node = client.get_random_node()
        for b in bindings:
            request = CreateAclsRequest(RESOURCE_TYPES[b.resource_type], b.resource_name, PATTERN_LITERAL,
                                        b.principal, "*", OPERATIONS[b.operation], PERMISSION_ALLOW)
            response = await client.send(node, request)
            for code, message in response.creation_responses:
                if code:
                    raise for_code(code)(f"ACL {b}: {message}")
    finally:
        await client.close()
