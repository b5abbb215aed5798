"""A bad configuration stops the gateway at start-up with a message that names the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, load_config
from gateway.dev.exchange import init_exchange


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ex = init_exchange(tmp_path_factory.mktemp("cfg"), base_port=0)
    return ex.config_path("SH")


def broken(good: Path, tmp: Path, change: Any) -> Path:
    doc = yaml.safe_load(good.read_text())
    change(doc)
    out = good.parent / f"broken-{tmp.name}.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


def test_generated_config_loads(good: Path) -> None:
    cfg = load_config(good)
    assert cfg.region == "SH" and cfg.platform("sh-platform") is not None
    assert cfg.recipient_of("medical.filing.request") is not None
    assert "JS" in cfg.accept and "SH" not in cfg.accept


@pytest.mark.parametrize("change,key", [
    (lambda d: d.update(regoin="SH"), "regoin"),
    (lambda d: d.update(region="BJ"), "region"),
    (lambda d: d["kafka"].update(bootstrap="x"), "kafka.bootstrap"),
    (lambda d: d["identity"].update(certificate="nope.crt"), "identity.certificate"),
    (lambda d: d["platforms"][0].update(delivery={"mode": "webhook"}), "platforms[0].delivery.url"),
    (lambda d: d["platforms"][0]["delivery"].update(mode="carrier-pigeon"), "platforms[0].delivery.mode"),
    (lambda d: d["limits"].update(batch_max=10_000), "limits.batch_max"),
    (lambda d: d["limits"].update(max_queue_wait_ms=0), "limits.max_queue_wait_ms"),
    (lambda d: d["accept"].update(XX=["a"]), "accept.XX"),
    (lambda d: d["platforms"][0].update(may_send="all"), "platforms[0].may_send"),
    (lambda d: d.pop("trust"), "trust"),
])
def test_bad_config_names_the_key(good: Path, tmp_path: Path, change: Any, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(broken(good, tmp_path, change))
    assert str(e.value).startswith(key), str(e.value)


def test_environment_overrides_bootstrap_servers(good: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "10.0.0.1:9999")
    assert load_config(good).kafka.bootstrap_servers == "10.0.0.1:9999"


@pytest.mark.parametrize("namespace", [
    "Staging", "-staging", "stag ing", "stag.ing", "stag_ing", "a" * 33, "staging.", "ständig", 7, ["x"], True,
])
def test_bad_kafka_namespace_names_the_key(good: Path, tmp_path: Path, namespace: Any) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(broken(good, tmp_path, lambda d: d["kafka"].update(namespace=namespace)))
    assert str(e.value).startswith("kafka.namespace: "), str(e.value)


@pytest.mark.parametrize("namespace", ["staging", "a", "0", "gm-suite-2", "x" * 32])
def test_kafka_namespace_prefixes_the_names(good: Path, tmp_path: Path, namespace: str) -> None:
    cfg = load_config(broken(good, tmp_path, lambda d: d["kafka"].update(namespace=namespace)))
    assert cfg.kafka.namespace == namespace
    assert cfg.topics.inbox("SH") == f"{namespace}.yrdx.sh.inbox"
    assert cfg.topics.egress_group("SH") == f"{namespace}.yrdx-sh"


@pytest.mark.parametrize("namespace", [None, ""])
def test_no_kafka_namespace_keeps_the_design_names(good: Path, tmp_path: Path, namespace: str | None) -> None:
    cfg = load_config(broken(good, tmp_path, lambda d: d["kafka"].update(namespace=namespace)))
    assert cfg.kafka.namespace == "" and cfg.topics.inbox("SH") == "yrdx.sh.inbox" and cfg.topics.audit == "yrdx.audit"
    assert "namespace" not in yaml.safe_load(good.read_text())["kafka"]  # yrdx init writes none by default


def test_init_writes_the_namespace(tmp_path: Path) -> None:
    ex = init_exchange(tmp_path / "alt", base_port=0, namespace="alt")
    for region in ("SH", "JS", "ZJ", "AH"):
        cfg = load_config(ex.config_path(region))
        assert cfg.kafka.namespace == "alt" and cfg.topics.inbox(region) == f"alt.yrdx.{region.lower()}.inbox"
    with pytest.raises(ValueError, match="lowercase"):
        init_exchange(tmp_path / "bad", base_port=0, namespace="Alt")
    assert not (tmp_path / "bad").exists()  # refused before anything is written


@pytest.mark.parametrize("command", ["init", "demo"])
def test_the_cli_refuses_a_bad_namespace_before_doing_anything(tmp_path: Path, command: str) -> None:
    from gateway.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--dir", str(tmp_path / "x"), "--namespace", "Bad_NS"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "x").exists()


def test_instance_id_comes_from_the_file_else_from_the_environment(good: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("YRDX_INSTANCE_ID", raising=False)
    assert load_config(good).instance_id is None  # one gateway: the region's one chain, as always
    monkeypatch.setenv("YRDX_INSTANCE_ID", "yrdx-sh-7d9f8-x2k4q")  # what the chart sets: the pod's name
    assert load_config(good).instance_id == "yrdx-sh-7d9f8-x2k4q"
    own = broken(good, tmp_path, lambda d: d.update(instance_id="sh-a"))
    assert load_config(own).instance_id == "sh-a"


@pytest.mark.parametrize("value", ["SH/a", "Sh-A", "", "-a", "a" * 64, 7])
def test_a_bad_instance_id_names_the_key(good: Path, tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError, match=r"^instance_id: expected a lower-case DNS label"):
        load_config(broken(good, tmp_path, lambda d: d.update(instance_id=value)))


def test_inbox_partitions_is_configurable_and_checked(good: Path, tmp_path: Path) -> None:
    assert load_config(good).kafka.inbox_partitions == 4
    twelve = broken(good, tmp_path, lambda d: d["kafka"].update(inbox_partitions=12))
    assert load_config(twelve).kafka.inbox_partitions == 12
    with pytest.raises(ConfigError, match=r"^kafka.inbox_partitions: expected an integer >= 1"):
        load_config(broken(good, tmp_path, lambda d: d["kafka"].update(inbox_partitions=0)))


def test_previous_encryption_keys_are_the_overlap_of_a_rotation(good: Path, tmp_path: Path) -> None:
    """identity.previous_encryption_keys: paths resolved like the others; they need a current key."""
    old = str(good.parent / "certs" / "gateways" / "sh.enc.key")
    cfg = load_config(broken(good, tmp_path / "prev", lambda d: d["identity"].update(previous_encryption_keys=[old])))
    assert cfg.previous_encryption_keys == (Path(old),) and cfg.encryption_key is not None
    assert load_config(good).previous_encryption_keys == ()
    with pytest.raises(ConfigError) as e:
        load_config(broken(good, tmp_path / "alone", lambda d: d["identity"].update(
            previous_encryption_keys=[old, "missing.key"], encryption_key=None)))
    assert e.value.errors[0].startswith("identity.previous_encryption_keys[1]: file not found")
    assert "identity.previous_encryption_keys: needs identity.encryption_key (the current key)" in e.value.errors


def test_queue_wait_bound_defaults_to_250_ms_and_can_be_set(good: Path, tmp_path: Path) -> None:
    assert load_config(good).limits.max_queue_wait_ms == 250
    cfg = load_config(broken(good, tmp_path, lambda d: d["limits"].update(max_queue_wait_ms=1000)))
    assert cfg.limits.max_queue_wait_ms == 1000
