"""`yrdx audit index|trace|verify|export|prove` (gateway.cli.audit) and the config helpers of gateway.cli.common,
with the topic read replaced by a hand-made trail (tests/unit/test_audit_verify.World, in trail formats 1 and 3):
options, output, exit codes and the one-line errors. The same commands run against the real exchange in
tests/e2e/test_audit_*.py."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.audit.index import IndexRun, default_index_path
from gateway.audit.model import all_entries
from gateway.cli import audit as cli_audit
from gateway.cli import main
from gateway.cli.common import load_config_or_error, load_trust_or_error
from gateway.dev.exchange import Exchange, init_exchange
from gateway.kafka.reader import KafkaError, TopicRecord
from tests.unit.test_audit_verify import ENVELOPE, MSG, World, batch, make_world

__all__ = ["batch"]  # the fixture of test_audit_verify: format 1 or 3

A = "0190a0b1-0000-7000-8000-00000000000a"


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Exchange:
    return init_exchange(tmp_path_factory.mktemp("exchange"), base_port=0)


@pytest.fixture(autouse=True)
def no_announced_certificates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing on yrdx.trust: the commands' trust is the config's (tests/e2e/test_key_rotation.py reads the topic)."""

    async def learn_certificates(kafka: object, trust: object, timeout_s: float = 30.0) -> None:
        return None

    monkeypatch.setattr(cli_audit, "learn_certificates", learn_certificates)


@pytest.fixture()
def config(exchange: Exchange) -> str:
    return str(exchange.config_path("SH"))


@pytest.fixture()
def world(exchange: Exchange, batch: bool) -> World:
    return make_world(exchange.pki, batch)


def on_topic(w: World, extra: tuple[bytes, ...] = ()) -> list[TopicRecord]:
    records = [TopicRecord("yrdx.audit", 0, i, s.region.encode(), orjson.dumps(s.to_json()), {})
               for i, s in enumerate(w.topic)]
    return records + [TopicRecord("yrdx.audit", 0, len(records) + i, b"JS", v, {}) for i, v in enumerate(extra)]


@pytest.fixture()
def trail(monkeypatch: pytest.MonkeyPatch, world: World) -> list[TopicRecord]:
    """What the commands read from yrdx.audit: the world's segments (tests may add to the list)."""
    records = on_topic(world)

    async def read_trail(kafka: object, timeout_s: float = 5.0) -> list[TopicRecord]:
        return records

    monkeypatch.setattr(cli_audit, "read_trail", read_trail)
    return records


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["audit", *args])
    out, err = capsys.readouterr()
    return code, out, err


# --- parsing ------------------------------------------------------------------------------------------------


def test_the_audit_group_has_its_commands_and_the_index_takes_a_sqlite_path_or_a_postgresql_dsn(
        tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli_audit.register(parser.add_subparsers(dest="cmd"))
    cfg = tmp_path / "ah.yaml"
    args = parser.parse_args(["audit", "index", "--config", str(cfg)])
    assert args.func is cli_audit.cmd_index and not args.follow
    assert cli_audit.index_target(args) == str(default_index_path(cfg)) == str(tmp_path / "var" / "audit-index.sqlite")
    args = parser.parse_args(["audit", "trace", A, "--config", str(cfg), "--dsn", "postgresql://u@127.0.0.1:5/db",
                              "--json"])
    assert cli_audit.index_target(args) == "postgresql://u@127.0.0.1:5/db" and args.json and not args.no_update
    assert cli_audit.index_target(parser.parse_args(["audit", "index", "--config", str(cfg), "--db", "x.sqlite"])
                                  ) == str(Path("x.sqlite").resolve())
    with pytest.raises(SystemExit):
        parser.parse_args(["audit", "index", "--config", str(cfg), "--db", "x", "--dsn", "postgresql://h/d"])
    for command, func in (("verify", cli_audit.cmd_verify), ("prove", cli_audit.cmd_prove),
                          ("export", cli_audit.cmd_export)):
        extra = ["--bundle", "b", "--envelope", "e"] if command == "prove" else ["--config", "c"]
        assert parser.parse_args(["audit", command, *extra]).func is func


# --- the config helpers -------------------------------------------------------------------------------------


def test_a_bad_config_is_one_line_on_stderr(tmp_path: Path, config: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("region: BJ\n")
    assert load_config_or_error(str(bad)) is None
    assert capsys.readouterr().err.startswith(f"yrdx: bad config {bad}: region: unknown region 'BJ'")
    assert load_trust_or_error(str(bad)) is None  # the auditors' commands name the file only
    assert capsys.readouterr().err.startswith(f"yrdx: {bad}: region: unknown region 'BJ'")
    loaded = load_trust_or_error(config)
    assert loaded is not None and loaded[0].region == "SH" and loaded[1].roots
    assert load_config_or_error(config) is not None and capsys.readouterr().err == ""


# --- verify -------------------------------------------------------------------------------------------------


def test_verify_reads_the_trail_and_exits_0_only_when_it_holds(
        config: str, trail: list[TopicRecord], batch: bool, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", "--config", config)
    assert code == 0 and out.splitlines()[0].split() == ["chain", "records", "first", "head", "checkpoint", "faults"]
    records = [r for t in trail for r in orjson.loads(t.value)["records"]]
    held = f" ({len(all_entries(records))} entries)" if batch else ""  # batch records name more messages
    assert out.endswith(f"4 chains, {len(records)} records{held} in {len(trail)} segments: OK\n")
    trail.append(TopicRecord("yrdx.audit", 0, len(trail), b"JS", b"not a segment", {}))
    code, out, _ = run(capsys, "verify", "--config", config, "--json")
    report = orjson.loads(out)
    assert code == 1 and not report["ok"] and report["counts"]["forged"] == 1
    assert report["faults"][0]["detail"].startswith(f"the value at offset {len(trail) - 1} is not an audit segment")
    assert report["faults"][0]["entry"] is None  # a fault of no message: no entry position
    assert report["entries"] == len(all_entries(records)) >= report["records"] == len(records)


def test_verify_says_why_it_cannot_read_the_trail(config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "verify") == (2, "", "yrdx: audit verify (or --bundle FILE) needs --config FILE (Kafka and "
                                            "trust)\n")
    code, _, err = run(capsys, "verify", "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and err.startswith(f"yrdx: {tmp_path / 'missing.yaml'}: cannot read ")

    async def timed_out(kafka: object, timeout_s: float = 5.0) -> list[TopicRecord]:
        raise TimeoutError

    monkeypatch.setattr(cli_audit, "read_trail", timed_out)
    code, out, err = run(capsys, "verify", "--config", config)
    assert (code, out) == (2, "") and err.startswith("yrdx: cannot read yrdx.audit from 127.0.0.1:9092:")


# --- export, verify --bundle, prove -------------------------------------------------------------------------


def test_export_then_verify_the_bundle_offline_then_prove_the_envelope(
        config: str, exchange: Exchange, trail: list[TopicRecord], tmp_path: Path, batch: bool,
        capsys: pytest.CaptureFixture[str]) -> None:
    trail.append(TopicRecord("yrdx.audit", 0, len(trail), b"JS", b"not a segment", {}))
    bundle = tmp_path / "bundle.json"
    code, out, err = run(capsys, "export", "--config", config, "--message", MSG, "--out", str(bundle))
    assert code == 0 and out == ""
    warning, done = err.splitlines()
    assert warning.startswith(f"warning: offset {len(trail) - 1} of yrdx.audit is not a segment (segment is not JSON: ")
    assert warning.endswith("); not exported")
    assert done.startswith("exported ") and done.endswith(f"from SH, ZJ to {bundle}")
    assert orjson.loads(bundle.read_bytes())["format"] == f"yrdx-audit-bundle/{2 if batch else 1}"

    code, out, err = run(capsys, "verify", "--bundle", str(bundle), "--ca", str(exchange.pki.ca_cert))
    assert code == 0 and out.endswith(": OK\n") and err == ""
    code, out, err = run(capsys, "verify", "--bundle", str(bundle), "--json")
    assert code == 0 and orjson.loads(out)["ok"]
    assert err.startswith("WARNING: trusting the root certificates inside the bundle")

    envelope = tmp_path / "envelope.json"
    envelope.write_bytes(ENVELOPE)
    code, out, _ = run(capsys, "prove", "--bundle", str(bundle), "--envelope", str(envelope), "--ca",
                       str(exchange.pki.ca_cert))
    assert code == 0 and out.splitlines()[0].startswith(f"envelope: message {MSG} (license.verify.request) SH -> ZJ")
    assert out.splitlines()[1] == "evidence:" and out.endswith(f"as {MSG} from SH to ZJ\n")
    envelope.write_bytes(ENVELOPE.replace(b"audit test", b"audit tesT"))
    code, out, _ = run(capsys, "prove", "--bundle", str(bundle), "--envelope", str(envelope))
    assert code == 1 and "DIFFERS" in out and out.splitlines()[-1].startswith("NOT PROVED: ")
    envelope.write_bytes(b"[]")
    code, out, _ = run(capsys, "prove", "--bundle", str(bundle), "--envelope", str(envelope))
    assert code == 1 and out.endswith("not an envelope (no message id)\nNOT PROVED\n")


def test_export_writes_to_stdout_and_refuses_what_it_cannot_select(
        config: str, trail: list[TopicRecord], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "export", "--config", config, "--conversation", "conv-1")
    assert code == 0 and orjson.loads(out)["selection"]["conversation"] == "conv-1"
    assert run(capsys, "export", "--config", config, "--from", "yesterday") == (
        2, "", "yrdx: --from and --to take RFC 3339 times with a zone, e.g. 2026-11-23T15:00:00Z\n")
    assert run(capsys, "export", "--config", config, "--message", MSG, "--to", "2026-11-23T15:00:00Z") == (
        2, "", "yrdx: audit export takes one of --message ID, --conversation ID or --from T/--to T\n")
    assert run(capsys, "export", "--config", config, "--message", "no-such-message") == (
        1, "", "yrdx: no audit record matches the selection\n")


def test_a_bundle_or_envelope_that_cannot_be_read_is_exit_2(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    not_a_bundle = tmp_path / "b.json"
    not_a_bundle.write_text("{}")
    code, _, err = run(capsys, "verify", "--bundle", str(not_a_bundle))
    expected = "not a bundle (format 'yrdx-audit-bundle/1' or 'yrdx-audit-bundle/2' expected)"
    assert code == 2 and err == f"yrdx: {not_a_bundle}: {expected}\n"
    code, _, err = run(capsys, "prove", "--bundle", str(not_a_bundle), "--envelope", "e")
    assert code == 2 and err == f"yrdx: {expected}\n"


# --- index, trace -------------------------------------------------------------------------------------------


def test_index_reports_where_it_resumes_and_what_it_did(config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[dict[str, Any]] = []

    async def update_index(kafka: object, index: object, **kw: Any) -> IndexRun:
        calls.append(kw)
        return IndexRun("yrdx.audit", positions={0: 7}, read=5, new=5, segments=2)

    monkeypatch.setattr(cli_audit, "update_index", update_index)
    db = tmp_path / "index.sqlite"
    code, out, _ = run(capsys, "index", "--config", config, "--db", str(db))
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"yrdx.audit: nothing indexed yet, reading from the beginning (sqlite:{db})"
    assert lines[1].startswith("yrdx.audit: 5 new records indexed (5 read in 2 segments, 0 skipped, 0 conflicting); "
                               "next offsets 0=7 in ")
    assert lines[2] == "index: 0 records, 0 segments, 0 conflicts"
    assert calls[0]["trust"].roots and "follow" not in calls[0]

    async def unreachable(kafka: object, index: object, **kw: Any) -> IndexRun:
        raise KafkaError("no broker")

    monkeypatch.setattr(cli_audit, "update_index", unreachable)
    code, _, err = run(capsys, "index", "--config", config, "--db", str(db))
    assert code == 1 and err.startswith("yrdx: cannot read yrdx.audit from 127.0.0.1:9092: KafkaError")
    code, _, err = run(capsys, "trace", A, "--config", config, "--db", str(db))
    assert code == 3 and err.splitlines() == [
        "yrdx: index not updated (KafkaError('no broker')); tracing what it holds", f"yrdx: no audit record names {A}"]
    (tmp_path / "a-file").write_text("")
    code, _, err = run(capsys, "trace", A, "--config", config, "--db", str(tmp_path / "a-file" / "x"), "--no-update")
    assert code == 2 and err.startswith("yrdx: cannot open the audit index at ")
