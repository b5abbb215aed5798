"""Kafka client security: `yrdx init --secure` writes per-region SCRAM credentials and the ACL file, the `kafka`
keys are checked at load (each error naming its key; passwords from files only), and one function turns the
settings into the keyword arguments of every aiokafka client."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, load_config
from gateway.dev.exchange import KAFKA_ACL_FILE, KAFKA_CA_FILE, Exchange, broker_security, init_exchange
from gateway.dev.kafka_security import BrokerTls
from gateway.kafka.acls import exchange_acls, parse_acls_json
from gateway.kafka.transport import client_options
from gateway.wire.regions import REGIONS


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Exchange:
    ex = init_exchange(tmp_path_factory.mktemp("secure"), base_port=0, secure=True, namespace="sec")
    tls = BrokerTls(tmp_path_factory.mktemp("broker"))
    tls.ensure("127.0.0.1")  # what `yrdx kafka start --secure --exchange` does: the broker's CA for the configs
    (ex.dir / KAFKA_CA_FILE).write_bytes(tls.ca_cert.read_bytes())
    return ex


def kafka_errors(ex: Exchange, tmp_path: Path, **kafka: Any) -> list[str]:
    doc = yaml.safe_load(ex.config_path("SH").read_text())
    doc["kafka"] = {k: v for k, v in {**doc["kafka"], **kafka}.items() if v is not ...}
    out = ex.dir / f"edited-{tmp_path.name}.yaml"
    out.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as e:
        load_config(out)
    return list(e.value.errors)


def test_init_secure_writes_one_private_password_per_region_and_the_acl_file(secure: Exchange) -> None:
    files = [secure.kafka_password_file(f"sec.yrdx-{r.lower()}") for r in REGIONS]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    passwords = {f.read_text().strip() for f in files}
    assert len(passwords) == 4 and all(len(p) >= 24 for p in passwords)
    assert parse_acls_json((secure.dir / KAFKA_ACL_FILE).read_text()) == exchange_acls("sec")
    access = broker_security(secure.dir)
    assert set(access.users) == {f"sec.yrdx-{r.lower()}" for r in REGIONS}
    assert set(access.users.values()) == passwords
    assert access.publish_ca_to == secure.dir / KAFKA_CA_FILE


def test_a_secure_config_gives_every_client_tls_and_the_regions_own_login(secure: Exchange) -> None:
    kafka = load_config(secure.config_path("JS")).kafka
    assert (kafka.security_protocol, kafka.sasl_mechanism, kafka.sasl_username) == (
        "SASL_SSL", "SCRAM-SHA-512", "sec.yrdx-js")
    password = secure.kafka_password_file("sec.yrdx-js").read_text().strip()
    assert password not in repr(kafka)  # read when a client is built, never kept in the settings
    opts = client_options(kafka)
    assert opts["sasl_plain_username"] == "sec.yrdx-js"
    assert opts["sasl_plain_password"] == password
    ctx = opts["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.get_ca_certs(), "the broker's CA is loaded"


def test_a_plaintext_config_has_no_security_options(tmp_path: Path) -> None:
    ex = init_exchange(tmp_path, base_port=0)
    opts = client_options(load_config(ex.config_path("SH")).kafka)
    assert opts == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}


def test_sasl_without_a_password_file_is_refused(secure: Exchange, tmp_path: Path) -> None:
    errors = kafka_errors(secure, tmp_path, sasl_password_file=...)
    assert any(e.startswith("kafka.sasl_password_file: required with SASL_SSL") for e in errors), errors


def test_a_user_given_twice_or_not_at_all_is_refused(secure: Exchange, tmp_path: Path) -> None:
    both = kafka_errors(secure, tmp_path, sasl_username_file=str(secure.kafka_password_file("sec.yrdx-sh")))
    neither = kafka_errors(secure, tmp_path, sasl_username=...)
    for errors in (both, neither):
        assert any(e.startswith("kafka.sasl_username: SASL_SSL needs exactly one of") for e in errors), errors


def test_an_empty_password_file_and_an_unknown_mechanism_are_refused(secure: Exchange, tmp_path: Path) -> None:
    empty = tmp_path / "empty.password"
    empty.write_text("\n")
    errors = kafka_errors(secure, tmp_path, sasl_password_file=str(empty), sasl_mechanism="GSSAPI")
    assert any(e.startswith("kafka.sasl_password_file:") and "empty" in e for e in errors), errors
    assert any(e.startswith("kafka.sasl_mechanism: unsupported 'GSSAPI'") for e in errors), errors


def test_settings_of_another_protocol_are_refused(secure: Exchange, tmp_path: Path) -> None:
    errors = kafka_errors(secure, tmp_path, security_protocol="PLAINTEXT")
    for key in ("ssl_cafile", "sasl_mechanism", "sasl_username", "sasl_password_file"):
        assert f"kafka.{key}: does not apply to security_protocol PLAINTEXT" in errors, errors
    errors = kafka_errors(secure, tmp_path, security_protocol="SASL_PLAINTEXT")
    assert errors == ["kafka.ssl_cafile: does not apply to security_protocol SASL_PLAINTEXT"]


def test_nulls_rendered_by_the_chart_count_as_absent(tmp_path: Path) -> None:
    ex = init_exchange(tmp_path, base_port=0)
    doc = yaml.safe_load(ex.config_path("SH").read_text())
    doc["kafka"].update(dict.fromkeys(("sasl_mechanism", "ssl_cafile", "sasl_username_file", "sasl_password_file")))
    ex.config_path("SH").write_text(yaml.safe_dump(doc))
    assert load_config(ex.config_path("SH")).kafka.security_protocol == "PLAINTEXT"
