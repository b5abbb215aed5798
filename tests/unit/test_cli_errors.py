"""The command line answers a user's mistake with one clear line and an exit code, never a traceback; and
`yrdx kafka status` reports the port the broker of a data dir really runs on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.dev.exchange import Exchange, init_exchange
from gateway.dev.local_kafka import LocalKafka, recorded_ports


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Exchange:
    return init_exchange(tmp_path_factory.mktemp("ex"), base_port=0)


def send(exchange: Exchange, *extra: str) -> list[str]:
    return ["send", "--config", str(exchange.config_path("SH")), "--as", "sh-platform", "--to", "JS", "--type",
            "license.verify.request", *extra]


def test_send_with_a_missing_payload_file_says_so_and_exits_2(exchange: Exchange, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.json"
    assert main(send(exchange, "--payload", str(missing))) == 2
    err = capsys.readouterr().err
    assert err == f"yrdx: cannot read the payload file {missing}: No such file or directory\n"


@pytest.mark.parametrize("content,why", [(b"{not json", "is not JSON"), (b"\xff\xfe{}", "is not JSON")])
def test_send_with_a_payload_that_is_not_json_says_so_and_exits_2(exchange: Exchange, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  content: bytes, why: str) -> None:
    payload = tmp_path / "payload.json"
    payload.write_bytes(content)
    assert main(send(exchange, "--payload", str(payload))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"yrdx: the payload file {payload} {why}: ") and "Traceback" not in err


def test_send_and_token_with_a_missing_private_key_say_so_and_exit_2(exchange: Exchange, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text("{}")
    key = tmp_path / "nokey.pem"
    assert main(send(exchange, "--payload", str(payload), "--key", str(key))) == 2
    assert capsys.readouterr().err == (f"yrdx: cannot read the private key of 'sh-platform' ({key}): "
                                       "No such file or directory\n")
    assert main(["token", "--config", str(exchange.config_path("SH")), "--as", "sh-platform", "--key",
                 str(key)]) == 2
    assert "cannot read the private key" in capsys.readouterr().err


def test_send_to_a_gateway_that_is_not_running_says_so_and_exits_1(exchange: Exchange, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # base_port=0 in the config: nothing ever listens on port 0.
    payload = tmp_path / "payload.json"
    payload.write_text("{}")
    assert main(send(exchange, "--payload", str(payload))) == 1
    err = capsys.readouterr().err
    assert err.startswith("yrdx: cannot reach the gateway at http://127.0.0.1:0/v1/messages: ")
    assert "Traceback" not in err


@pytest.mark.parametrize("extra", [("--operator", "SH-OP-0001"), ("--operator-role", "clerk"),
                                   ("--operator-department", "SH-ZWFW", "--use-cause", "gov_service")])
def test_send_with_half_an_operator_says_so_and_exits_2(exchange: Exchange, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str], extra: tuple[str, ...]
                                                        ) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text("{}")
    assert main(send(exchange, "--payload", str(payload), *extra)) == 2
    assert capsys.readouterr().err == ("yrdx: --operator and --operator-role go together "
                                       "(--operator-department with them)\n")


# --- yrdx kafka status --dir D ---------------------------------------------------------------------------------


def status(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["kafka", "status", *args]) == 3  # nothing runs here
    doc: dict[str, object] = json.loads(capsys.readouterr().out)
    return doc


def test_status_reports_the_port_the_broker_dir_was_started_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    LocalKafka(tmp_path / "broker", port=19092, controller_port=19093)._write_config()  # what start() writes
    assert recorded_ports(tmp_path / "broker") == {"PLAINTEXT": 19092, "CONTROLLER": 19093}

    doc = status(capsys, "--dir", str(tmp_path / "broker"))
    assert doc["bootstrap_servers"] == "127.0.0.1:19092" and doc["controller_port"] == 19093
    assert doc["running"] is False and doc["external"] is False
    # A port given explicitly still wins; a dir never started is on the defaults.
    assert status(capsys, "--dir", str(tmp_path / "broker"), "--port", "29092")["bootstrap_servers"] == \
        "127.0.0.1:29092"
    fresh = status(capsys, "--dir", str(tmp_path / "never-started"))
    assert fresh["bootstrap_servers"] == "127.0.0.1:9092" and fresh["controller_port"] == 9093


def test_recorded_ports_of_an_unreadable_or_odd_properties_file_are_none(tmp_path: Path) -> None:
    assert recorded_ports(tmp_path) == {}
    (tmp_path / "server.properties").write_text("listeners=PLAINTEXT://127.0.0.1:x,garbage\n")
    assert recorded_ports(tmp_path) == {}
