"""`yrdx audit verify`, `export` and `prove` on the session exchange's real trail: the online trail verifies, a
message's bundle verifies on a machine with no Kafka and no gateway, and each fault put into a copy of the bundle
is named by region, sequence number and kind. The gateways write trail format 3: a message's records are entries
of batch records (gateway.audit.model.entries), which the bundle carries whole. (A forgery on the shared topic is
tests/e2e/test_audit_forgery.py: it must run after every test that expects the online trail to verify.)"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from gateway.audit.journey import read_audit_records
from gateway.audit.model import all_entries, entries
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.envelope import utc_timestamp
from tests._util import ROOT
from tests.conftest import Broker, Exchange4

REGISTRY = SchemaRegistry.load()
ORIGIN, DEST = "JS", "SH"  # SH takes webhooks: the sink keeps the exact envelope bytes it was given

Bundle = dict[str, Any]


def yrdx(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "gateway.cli", "audit", *args],
        capture_output=True, text=True, cwd=cwd, env=env or dict(os.environ), timeout=180,
    )


def offline_env() -> dict[str, str]:
    """No broker anywhere: a closed port, and no config."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("KAFKA")},
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}


@dataclass
class Traffic:
    ids: list[str]
    envelope: bytes  # what the destination platform received for ids[0], byte for byte
    bundle: Path  # `yrdx audit export --message ids[0]`
    window: tuple[str, str]  # from before the first message was sent to after the last receipt was recorded


async def wait_for_receipts(kafka: Broker, ids: list[str], timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records = await read_audit_records(kafka.bootstrap_servers, timeout_s=20)
        done = {r["message_id"] for r in records if r["stage"] == "receipt_received" and r["region"] == ORIGIN}
        if set(ids) <= done:
            return records
        assert time.monotonic() < deadline, f"no receipt_received on yrdx.audit for {set(ids) - done}"
        await asyncio.sleep(0.5)


@pytest_asyncio.fixture(scope="module")
async def traffic(exchange: Exchange4, kafka: Broker, tmp_path_factory: pytest.TempPathFactory) -> Traffic:
    payload = copy.deepcopy(REGISTRY.examples("license.verify.request")[0])
    start = utc_timestamp()
    ids = []
    for _ in range(3):
        status, doc = await exchange.clients[ORIGIN].send("license.verify.request", DEST, payload)
        assert status == 202, doc
        ids.append(doc["id"])
    delivered = await exchange.sink.wait_for(DEST, ids[0])
    await wait_for_receipts(kafka, ids)
    end = utc_timestamp()
    out = tmp_path_factory.mktemp("bundle") / "bundle.json"
    r = yrdx("export", "--config", str(exchange.exchange.config_path("SH")), "--message", ids[0], "--out", str(out))
    assert r.returncode == 0, r.stderr
    return Traffic(ids, delivered["signed"], out, (start, end))


def verify_bundle(path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    r = yrdx("verify", "--bundle", str(path), "--json", *extra, env=offline_env(), cwd=path.parent)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, orjson.loads(r.stdout), r.stderr


def faults(report: dict[str, Any]) -> set[tuple[str, int, str]]:
    return {(f["region"], f["seq"], f["kind"]) for f in report["faults"]}


def tampered(traffic: Traffic, name: str, change: Callable[[Bundle], tuple[str, int]]) -> tuple[Path, str, int]:
    """A copy of the bundle with `change` applied; returns the copy and the (region, seq) it damaged."""
    doc = orjson.loads(traffic.bundle.read_bytes())
    region, seq = change(doc)
    path = traffic.bundle.with_name(f"{name}.json")
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return path, region, seq


def record_of(doc: Bundle, region: str, stage: str, message_id: str) -> tuple[dict[str, Any], int]:
    """The segment and position of the record holding the message's `stage` (a batch record's entry, or itself)."""
    for seg in doc["segments"]:
        for i, r in enumerate(seg["records"]):
            if seg["region"] == region and any(e["stage"] == stage and e["message_id"] == message_id
                                               for e in entries(r)):
                return seg, i
    raise AssertionError(f"no {stage} record of {message_id} at {region} in the bundle")


def run_of(doc: Bundle, region: str) -> list[dict[str, Any]]:
    return [r for seg in doc["segments"] if seg["region"] == region for r in seg["records"]]


# --- the online trail and the exported bundle, intact ---------------------------------------------------------


async def test_the_real_trail_verifies_online(exchange: Exchange4, traffic: Traffic) -> None:
    r = await asyncio.to_thread(yrdx, "verify", "--config", str(exchange.exchange.config_path("SH")), "--json")
    report = orjson.loads(r.stdout)
    assert r.returncode == 0, report["faults"]
    assert report["ok"] and report["faults"] == []
    assert {ORIGIN, DEST} <= set(report["regions"])
    assert all(s["last_checkpoint"] == s["head_seq"] for s in report["regions"].values())
    table = await asyncio.to_thread(yrdx, "verify", "--config", str(exchange.exchange.config_path("JS")))
    assert table.returncode == 0, table.stdout
    assert table.stdout.splitlines()[0].split() == ["chain", "records", "first", "head", "checkpoint", "faults"]
    assert table.stdout.rstrip().endswith(": OK")


def test_a_message_bundle_verifies_with_no_kafka_and_no_config(traffic: Traffic, exchange: Exchange4) -> None:
    doc = orjson.loads(traffic.bundle.read_bytes())
    assert doc["format"] == "yrdx-audit-bundle/2"  # the gateways write batch records (trail format 3)
    assert traffic.ids[0] in doc["selection"]["messages"]
    assert {s["region"] for s in doc["segments"]} == {ORIGIN, DEST}
    stages = {(s["region"], r["stage"]) for s in doc["segments"] for r in all_entries(s["records"])
              if r["message_id"] == traffic.ids[0]}
    assert {(ORIGIN, "accepted"), (ORIGIN, "published"), (DEST, "received"), (DEST, "verified"),
            (DEST, "delivered"), (ORIGIN, "receipt_received")} <= stages

    code, report, stderr = verify_bundle(traffic.bundle)
    assert code == 0, report["faults"]
    assert "WARNING: trusting the root certificates inside the bundle" in stderr
    code, report, stderr = verify_bundle(traffic.bundle, "--ca", str(exchange.exchange.pki.ca_cert))
    assert code == 0, report["faults"]
    assert "WARNING" not in stderr


def test_a_time_window_bundle_holds_every_message_of_the_window_and_verifies(traffic: Traffic,
                                                                            exchange: Exchange4) -> None:
    out = traffic.bundle.with_name("window.json")
    start, end = traffic.window
    r = yrdx("export", "--config", str(exchange.exchange.config_path("ZJ")), "--from", start, "--to", end,
             "--out", str(out))
    assert r.returncode == 0, r.stderr
    doc = orjson.loads(out.read_bytes())
    assert set(traffic.ids) <= set(doc["selection"]["messages"])
    assert (doc["selection"]["from"], doc["selection"]["to"]) == (start, end)
    code, report, _ = verify_bundle(out, "--ca", str(exchange.exchange.pki.ca_cert))
    assert code == 0, report["faults"]


# --- each fault, in a copy of the bundle ----------------------------------------------------------------------


def test_an_edited_record_in_the_bundle_is_named(traffic: Traffic) -> None:
    def change(doc: Bundle) -> tuple[str, int]:
        seg, i = record_of(doc, DEST, "delivered", traffic.ids[0])
        seg["records"][i]["at"] = "2020-01-01T00:00:00.000Z"  # claim it was delivered long ago
        return DEST, seg["records"][i]["seq"]

    path, region, seq = tampered(traffic, "edited", change)
    code, report, _ = verify_bundle(path)
    assert code == 1 and (region, seq, "edited") in faults(report), report["faults"]


def test_an_entry_changed_inside_a_batch_record_of_the_bundle_is_named(traffic: Traffic) -> None:
    def change(doc: Bundle) -> tuple[str, int]:
        seg, i = record_of(doc, DEST, "delivered", traffic.ids[0])
        record = seg["records"][i]
        entry = next(e for e in record["entries"] if e[0] == traffic.ids[0])  # a batch record: trail format 3
        entry[2] = "0" * 64  # claim another envelope was delivered
        return DEST, record["seq"]

    path, region, seq = tampered(traffic, "entry", change)
    code, report, _ = verify_bundle(path)
    assert code == 1 and (region, seq, "edited") in faults(report), report["faults"]


def test_a_deleted_record_in_the_bundle_is_named(traffic: Traffic) -> None:
    def change(doc: Bundle) -> tuple[str, int]:
        seg, i = record_of(doc, DEST, "verified", traffic.ids[0])  # after `received`, before `delivered`
        return DEST, seg["records"].pop(i)["seq"]

    path, region, seq = tampered(traffic, "deleted", change)
    code, report, _ = verify_bundle(path)
    assert code == 1 and (region, seq, "deleted") in faults(report), report["faults"]


def test_two_swapped_records_in_the_bundle_are_named(traffic: Traffic) -> None:
    def change(doc: Bundle) -> tuple[str, int]:
        seg, i = record_of(doc, DEST, "received", traffic.ids[0])
        first = seg["records"][i]
        slots = [(s, j) for s in doc["segments"] if s["region"] == DEST for j, r in enumerate(s["records"])
                 if r["seq"] == first["seq"] + 1]
        (other_seg, j), = slots
        seg["records"][i], other_seg["records"][j] = other_seg["records"][j], seg["records"][i]
        return DEST, first["seq"]

    path, region, seq = tampered(traffic, "swapped", change)
    code, report, _ = verify_bundle(path)
    assert code == 1
    assert {(region, seq, "reordered"), (region, seq + 1, "reordered")} <= faults(report), report["faults"]


def test_a_truncated_tail_in_the_bundle_is_named(traffic: Traffic) -> None:
    def change(doc: Bundle) -> tuple[str, int]:
        for region in (DEST, ORIGIN):
            segs = [s for s in doc["segments"] if s["region"] == region]
            cut = next((s for s in reversed(segs) if len(s["records"]) >= 2), None)
            if cut is None:
                continue
            gone = cut["records"].pop()  # its checkpoint still names it
            doc["segments"] = [s for s in doc["segments"] if s["region"] != region or s["offset"] <= cut["offset"]]
            return region, gone["seq"]
        raise AssertionError("no segment with two records to cut")

    path, region, seq = tampered(traffic, "truncated", change)
    code, report, _ = verify_bundle(path)
    assert code == 1 and (region, seq, "truncated") in faults(report), report["faults"]
    assert report["regions"][region]["head_seq"] == seq - 1


# --- prove ------------------------------------------------------------------------------------------------------


def test_prove_shows_the_kept_envelope_is_the_one_that_travelled(traffic: Traffic, tmp_path: Path) -> None:
    kept = tmp_path / "envelope.json"
    kept.write_bytes(traffic.envelope)
    r = yrdx("prove", "--bundle", str(traffic.bundle), "--envelope", str(kept), env=offline_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"PROVED: this envelope is exactly the one that travelled as {traffic.ids[0]}" in r.stdout
    for stage in ("accepted", "published", "received", "verified", "delivered"):
        assert stage in r.stdout

    i = traffic.envelope.index(b'"payload"') + 12
    changed = tmp_path / "changed.json"
    changed.write_bytes(traffic.envelope[:i] + bytes([traffic.envelope[i] ^ 0x01]) + traffic.envelope[i + 1:])
    r = yrdx("prove", "--bundle", str(traffic.bundle), "--envelope", str(changed), env=offline_env(), cwd=tmp_path)
    assert r.returncode == 1, r.stdout
    assert "NOT PROVED" in r.stdout and "DIFFERS" in r.stdout
