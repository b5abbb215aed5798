"""The secure local broker's set-up (gateway/dev/kafka_security.py), without starting it: its development TLS in
the broker's directory, its listeners and authorizer, and the refusal of a storage formatted for other users."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509

from gateway.dev.kafka_security import BrokerTls, secure_properties
from gateway.dev.local_kafka import LocalKafka


def test_the_broker_certificate_is_issued_by_a_dev_ca_into_the_broker_dir(tmp_path: Path) -> None:
    tls = BrokerTls(tmp_path)
    tls.ensure("127.0.0.1")
    for secret in (tls.ca_key, tls.keystore, tls.admin_password_file):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    pem = tls.keystore.read_bytes()
    assert pem.index(b"BEGIN PRIVATE KEY") < pem.index(b"BEGIN CERTIFICATE")  # Kafka's PEM keystore: key, chain
    cert = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE"):])
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    before = tls.keystore.read_bytes(), tls.admin_password
    tls.ensure("127.0.0.1")  # a restart keeps them
    assert (tls.keystore.read_bytes(), tls.admin_password) == before


def test_the_broker_has_one_sasl_ssl_listener_an_authorizer_and_one_super_user(tmp_path: Path) -> None:
    tls = BrokerTls(tmp_path)
    tls.ensure("127.0.0.1")
    props = secure_properties(tls, "127.0.0.1", 19094, 19095)
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert (props["super.users"], props["allow.everyone.if.no.acl.found"]) == ("User:yrdx-admin", "false")
    assert tls.admin_password in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]


def test_a_locked_down_dir_keeps_its_users_and_refuses_others(tmp_path: Path) -> None:
    tls = BrokerTls(tmp_path)
    users = {"yrdx-sh": "one", "yrdx-js": "two"}
    assert tls.users_differ({})  # formatted without SCRAM: no secure start on it
    tls.record_users(users)
    assert not tls.users_differ(users) and not tls.users_differ({})
    assert tls.users_differ({**users, "yrdx-js": "changed"})
    assert "two" not in tls.users_file.read_text()  # fingerprints, not passwords


def test_a_dir_that_ran_locked_down_stays_so(tmp_path: Path) -> None:
    (tmp_path / "server.properties").write_text("listeners=SASL_SSL://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095\n")
    broker = LocalKafka.of_dir(tmp_path)
    assert broker.secure and broker.port == 19094 and broker.controller_port == 19095
    assert broker.client_config().sasl_username == "yrdx-admin"
    assert not LocalKafka(tmp_path / "other", port=1, controller_port=2).secure
