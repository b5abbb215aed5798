"""`yrdx console` (gateway/cli/console.py): what it refuses before it serves anything, one line on stderr and exit
code 2: no exchange, a config that listens on port 0 with no --gateway, a malformed --gateway, no operator token."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.console.exchange import load_exchange, parse_gateway_url
from gateway.dev.exchange import init_exchange


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["console", *args])
    return code, capsys.readouterr().err


def test_not_an_exchange(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "--dir", str(tmp_path / "nowhere"))
    assert code == 2 and "is not a folder" in err
    code, err = run(capsys, "--dir", str(tmp_path))
    assert code == 2 and "no gateway config" in err and "no operator token" in err


def test_a_gateway_on_port_0_needs_its_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init_exchange(tmp_path, base_port=0)
    code, err = run(capsys, "--dir", str(tmp_path))
    assert code == 2 and "SH listens on port 0" in err and "--gateway SH=http://HOST:PORT" in err
    code, err = run(capsys, "--dir", str(tmp_path), "--gateway", "XX=http://127.0.0.1:1")
    assert code == 2 and "REGION=URL" in err
    code, err = run(capsys, "--dir", str(tmp_path), "--gateway", "SH=ftp://host")
    assert code == 2 and "http(s)://host:port" in err
    urls = {r: f"http://127.0.0.1:{8500 + i}" for i, r in enumerate(("SH", "JS", "ZJ", "AH"))}
    ex = load_exchange(tmp_path, urls)
    assert ex.gateways["ZJ"].base_url == "http://127.0.0.1:8502"


def test_the_configs_listen_addresses_and_the_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init_exchange(tmp_path, base_port=8401)
    ex = load_exchange(tmp_path)
    assert [g.base_url for g in ex.gateways.values()] == [f"http://127.0.0.1:{p}" for p in range(8401, 8405)]
    assert ex.operator_token() == (tmp_path / "secrets" / "metrics.token").read_text().strip()
    assert ex.metrics_token("SH") == ex.operator_token()
    assert parse_gateway_url("zj=http://10.0.0.3:8403/") == ("ZJ", "http://10.0.0.3:8403")
    (tmp_path / "secrets" / "metrics.token").write_text("\n")
    code, err = run(capsys, "--dir", str(tmp_path))
    assert code == 2 and "no operator token" in err


def test_options_out_of_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init_exchange(tmp_path, base_port=8401)
    code, err = run(capsys, "--dir", str(tmp_path), "--interval", "0")
    assert code == 2 and "--interval" in err
    code, err = run(capsys, "--dir", str(tmp_path), "--interval", "5", "--window", "2")
    assert code == 2
