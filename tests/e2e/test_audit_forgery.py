"""A segment for JS produced straight to `yrdx.audit`, chained onto JS's real head but signed with a key that is
not JS's: `yrdx audit verify` names JS, that seq and `forged`.

The forged segment stays on the shared topic for the rest of the session, so this module is marked
`forges_audit` and runs after every other test (tests/conftest.py orders by marker, never by file name): every
test that expects the online trail to verify runs before it. Earlier disruptive tests (the demo's gateways of
another PKI, killed gateways) may leave faults of their own, so this test looks only for the one it made.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from gateway.audit.journey import read_audit_records
from gateway.crypto.jws import Signer
from gateway.dev.pki import issue_gateway_cert, make_ca
from gateway.wire.regions import AUDIT_TOPIC
from tests._util import ROOT, forged_segment
from tests.conftest import Broker, Exchange4

pytestmark = pytest.mark.forges_audit


async def test_a_segment_signed_with_a_key_that_is_not_the_regions_is_named_forged(exchange: Exchange4,
                                                                                  kafka: Broker) -> None:
    records = await read_audit_records(kafka.bootstrap_servers, timeout_s=30)
    js = [r for r in records if r["region"] == "JS"]
    assert js, "JS has written nothing yet"
    rogue_ca, rogue_key = make_ca("not the exchange's root")
    cert, key = issue_gateway_cert(rogue_ca, rogue_key, "JS")
    seq, value = forged_segment("JS", max(js, key=lambda r: r["seq"]), Signer(key, cert, include_x5c=True))
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(AUDIT_TOPIC, value, key=b"JS")
    finally:
        await producer.stop()

    r = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", "audit", "verify", "--config", str(exchange.exchange.config_path("SH")),
         "--json"],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=180,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    report = orjson.loads(r.stdout)
    forged = [f for f in report["faults"] if (f["region"], f["seq"], f["kind"]) == ("JS", seq, "forged")]
    assert forged, report["faults"]
    assert any("untrusted_signer" in f["detail"] for f in forged)
