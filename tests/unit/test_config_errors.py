"""A configuration file with several mistakes reports all of them at once, each naming its key, so an operator
fixes the file in one pass instead of one start-up per mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, load_config
from gateway.dev.exchange import init_exchange


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    ex = init_exchange(tmp_path_factory.mktemp("cfg"), base_port=0)
    path = ex.config_path("SH")
    return path, yaml.safe_load(path.read_text())


def load(base: tuple[Path, dict[str, Any]], tmp_path: Path, **changes: Any) -> ConfigError:
    path, doc = base
    out = path.parent / f"broken-{tmp_path.name}.yaml"
    out.write_text(yaml.safe_dump({**doc, **changes}))
    with pytest.raises(ConfigError) as e:
        load_config(out)
    return e.value


def test_every_error_of_a_file_is_reported_each_with_its_key(doc: tuple[Path, dict[str, Any]],
                                                             tmp_path: Path) -> None:
    _, good = doc
    platform = {**good["platforms"][0], "delivery": {"mode": "webhook"}, "may_send": "all"}
    e = load(doc, tmp_path,
             region="BJ",
             regoin="SH",
             kafka={**good["kafka"], "linger_ms": -1, "compression": "brotli"},
             identity={**good["identity"], "certificate": "nope.crt"},
             limits={"batch_max": 10_000},
             accept={**good["accept"], "XX": ["a"]},
             platforms=[platform],
             audit_enabled="yes")
    keys = [line.split(":", 1)[0] for line in e.errors]
    assert keys == [
        "regoin", "region", "kafka.linger_ms", "kafka.compression", "identity.certificate", "limits.batch_max",
        "accept.XX", "platforms[0].may_send", "platforms[0].delivery.url", "audit_enabled",
    ]
    assert "unknown region 'BJ'" in e.errors[1] and "file not found" in e.errors[4]
    # The message: the first error as it is (it starts with its key), then one indented line per other error.
    lines = str(e).splitlines()
    assert lines[0] == e.errors[0] and lines[1:] == [f"  {m}" for m in e.errors[1:]]


def test_one_error_is_reported_as_before(doc: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    e = load(doc, tmp_path, listen={"host": "127.0.0.1", "port": 70_000})
    assert e.errors == ("listen.port: expected an integer >= 0 <= 65535",)
    assert str(e) == e.errors[0]


def test_a_missing_required_section_is_one_error_not_one_per_key_inside(doc: tuple[Path, dict[str, Any]],
                                                                         tmp_path: Path) -> None:
    _, good = doc
    e = load(doc, tmp_path, **{k: v for k, v in good.items() if k not in ("trust", "identity")} | {"seal": ["x"]},
             trust=None, identity=None)
    assert e.errors == ("identity: required", "trust: required")


def test_every_missing_encryption_key_is_named(doc: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    _, good = doc
    e = load(doc, tmp_path, seal=["identity.verify.request"], trust={**good["trust"], "encryption_keys": {}})
    assert e.errors == tuple(f"trust.encryption_keys.{r}: required when seal lists types (to seal for it)"
                             for r in ("JS", "ZJ", "AH"))


def test_a_file_that_is_not_a_mapping_says_so(doc: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, _ = doc
    out = tmp_path / "list.yaml"
    out.write_text("- a\n- b\n")
    with pytest.raises(ConfigError) as e:
        load_config(out)
    assert str(e.value).startswith("<root>: expected a mapping, got list")


def test_the_cli_prints_every_error_and_exits_2(doc: tuple[Path, dict[str, Any]], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    path, good = doc
    out = path.parent / f"cli-{tmp_path.name}.yaml"
    out.write_text(yaml.safe_dump({**good, "region": "BJ", "audit_enabled": "yes"}))
    assert main(["token", "--config", str(out), "--as", "sh-platform"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"yrdx: bad config {out}: region: unknown region 'BJ'")
    assert "\n  audit_enabled: expected true or false" in err
