#!/usr/bin/env python3
"""Files benchmark: one large file JS -> SH as a claim check, through two gateway processes over a real Kafka.

Prints (and with ``--json`` writes): the upload time (streamed, sealed, published and acknowledged: the 201),
the time until the message referencing the file reached SH's pull inbox (the file assembled and its digest
checked first), the download time, the throughput of each, each gateway's RSS before and its peak (VmHWM) after,
and the CPU seconds each gateway and the Kafka JVM used. The downloaded bytes must have the uploaded digest
(exit 1 otherwise).

    .venv/bin/python bench/files.py [--mib 100] [--alg ES256|SM2SM3] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from broker_warmup import describe, warm_broker  # bench/broker_warmup.py, beside this file
from relay import CpuWindow, GatewayProcess, loadavg  # bench/relay.py, beside this file

from gateway.dev.exchange import Exchange, edit_config, init_exchange, platform_id
from gateway.dev.local_kafka import LocalKafka, env_bootstrap_servers, free_port
from gateway.files.chunks import DIGEST_ALGS, new_digest
from gateway.http.auth import TokenMinter

SENDER, RECEIVER = "JS", "SH"
CLAIM_TYPE = "yrdx.claim_check"
MIB = 1024 * 1024


def memory(pid: int | None) -> dict[str, float]:
    """Current and peak resident set of a process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def accept_claim_checks(ex: Exchange) -> None:
    for region, peer in ((SENDER, RECEIVER), (RECEIVER, SENDER)):
        doc = yaml.safe_load(ex.config_path(region).read_text())
        platform = doc["platforms"][0]
        edit_config(ex.config_path(region),
                    platforms=[{**platform, "may_send": [*platform["may_send"], CLAIM_TYPE],
                                "receives": [*platform["receives"], CLAIM_TYPE]}],
                    accept={**doc["accept"], peer: [*doc["accept"][peer], CLAIM_TYPE]})
    edit_config(ex.config_path(RECEIVER), delivery={"mode": "inbox"})


def write_file(path: Path, mib: int) -> dict[str, str]:
    """Random bytes; their digest in each algorithm a claim check may name."""
    digests = {alg: new_digest(alg) for alg in DIGEST_ALGS}
    with path.open("wb") as f:
        for _ in range(mib):
            block = os.urandom(MIB)
            for d in digests.values():
                d.update(block)
            f.write(block)
    return {alg: d.hexdigest() for alg, d in digests.items()}


async def relay_file(session: aiohttp.ClientSession, ex: Exchange, js: GatewayProcess, sh: GatewayProcess,
                     path: Path, digests: dict[str, str]) -> dict[str, Any]:
    sender = TokenMinter(platform_id(SENDER), ex.pki.platform_key(SENDER), SENDER)
    receiver = TokenMinter(platform_id(RECEIVER), ex.pki.platform_key(RECEIVER), RECEIVER)
    started = time.monotonic()
    with path.open("rb") as f:
        async with session.post(f"{js.url}/v1/files?to={RECEIVER}", data=f,
                                headers={"Content-Type": "application/pdf", **sender.header()}) as r:
            claim = orjson.loads(await r.read())
            assert r.status == 201, claim
    uploaded = time.monotonic()
    body = {"type": CLAIM_TYPE, "to": RECEIVER, "payload": claim}
    async with session.post(f"{js.url}/v1/messages", json=body, headers=sender.header()) as r:
        sent = orjson.loads(await r.read())
        assert r.status == 202, sent
    while True:
        async with session.get(f"{sh.url}/v1/inbox?max=10&wait=1", headers=receiver.header()) as r:
            if any(m["id"] == sent["id"] for m in orjson.loads(await r.read())["messages"]):
                break
        assert time.monotonic() - started < 900, "the message never reached SH"
    delivered = time.monotonic()
    digest, size = hashlib.sha256(), 0
    async with session.get(f"{sh.url}/v1/files/{claim['file_id']}", headers=receiver.header()) as r:
        assert r.status == 200, await r.read()
        async for part in r.content.iter_chunked(MIB):
            digest.update(part)
            size += len(part)
    downloaded = time.monotonic()
    return {"upload_s": uploaded - started, "delivered_after_upload_s": delivered - uploaded,
            "download_s": downloaded - delivered, "size": size, "digest_alg": claim["digest"]["alg"],
            "digest_ok": digest.hexdigest() == digests["SHA-256"]
            and claim["digest"]["value"] == digests[claim["digest"]["alg"]]}


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    broker: LocalKafka | None = None
    gateways: list[GatewayProcess] = []
    try:
        bootstrap = env_bootstrap_servers()
        if bootstrap is None:
            broker = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port())
            broker.start()
            bootstrap = broker.bootstrap_servers
            print(describe(await warm_broker(bootstrap, broker.pid())))  # bench/README.md "Broker warm-up"
        ex = init_exchange(work / "exchange", base_port=0, bootstrap_servers=bootstrap, alg=args.alg)
        accept_claim_checks(ex)
        gateways = [GatewayProcess(r, ex.config_path(r), work) for r in (SENDER, RECEIVER)]
        for g in gateways:
            g.launch()
        for g in gateways:
            g.wait_ready()
        js, sh = gateways
        path = work / "file.bin"
        digests = write_file(path, args.mib)
        before = {g.region: memory(g.pid) for g in gateways}
        cpu = CpuWindow({"js_gateway": js.pid, "sh_gateway": sh.pid,
                         "kafka_jvm": broker.pid() if broker else None})
        cpu.start()
        async with aiohttp.ClientSession() as session:
            timings = await relay_file(session, ex, js, sh, path, digests)
        cpu.stop()
        after = {g.region: memory(g.pid) for g in gateways}
        return {"mib": args.mib, "alg": args.alg, "loadavg": loadavg(), **timings,
                "rss_mib": {r: {"before": before[r]["VmRSS"], "peak": after[r]["VmHWM"]} for r in before},
                "cpu_s": cpu.used}
    finally:
        for g in gateways:
            g.stop()
        if broker is not None:
            broker.stop()


def report(f: dict[str, Any]) -> None:
    mib = f["mib"]
    print(f"file of {mib} MiB {SENDER} -> {RECEIVER} ({f['alg']}, load {f['loadavg']}):")
    print(f"  upload (streamed, sealed, acknowledged)  {f['upload_s']:6.1f} s  {mib / f['upload_s']:6.1f} MiB/s")
    print(f"  then delivered (assembled, digest check)  {f['delivered_after_upload_s']:6.1f} s")
    print(f"  download (opened on the way out)          {f['download_s']:6.1f} s  {mib / f['download_s']:6.1f} MiB/s")
    for region, m in f["rss_mib"].items():
        print(f"  {region} gateway RSS {m['before']:.0f} MiB before, peak {m['peak']:.0f} MiB "
              f"(+{m['peak'] - m['before']:.0f} MiB)")
    print("  CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in f["cpu_s"].items() if v is not None))
    ok = f["digest_ok"] and f["size"] == mib * MIB
    print(f"  digest checked ({f['digest_alg']} in the claim check, SHA-256 of the download): "
          f"{'ok' if ok else 'MISMATCH'}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=100, help="file size in MiB (default 100)")
    p.add_argument("--alg", choices=["ES256", "SM2SM3"], default="ES256", help="the exchange's suite")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="yrdx-bench-files-"))
    try:
        figures = asyncio.run(run(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(figures)
    if args.json:
        args.json.write_text(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if figures["digest_ok"] and figures["size"] == args.mib * MIB else 1


if __name__ == "__main__":
    sys.exit(main())
