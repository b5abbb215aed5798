"""The counter's exchange: Shanghai (place of care) and Anhui (insured location), two gateway processes.

The Shanghai platform uses the NHSA facade (its config says ``facade: nhsa``), so the hospital's HIS talks
NHSA to its gateway; the Anhui platform is :class:`adapters.insured.InsuredMedicalPlatform` behind the webhook
server of :mod:`adapters.simulated`. The counter story, tests/e2e/test_nhsa_counter.py and bench/counter.py
all run on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import yaml

from adapters.answer_batch import AnswerBatcher
from adapters.demo import GatewayFleet, wait_gateways_ready
from adapters.his import HisClient, Poster
from adapters.insured import InsuredMedicalPlatform, Person
from adapters.simulated import Ledger, PlatformClient, SimulatedPlatforms
from gateway.crypto.trust import TrustStore
from gateway.dev.exchange import Exchange, init_exchange, platform_id
from gateway.http.auth import TokenMinter
from gateway.schemas.registry import SchemaRegistry
from gateway.wire.regions import REGIONS

__all__ = ["CARE", "INSURED", "PATIENT", "ClosingPoster", "CounterExchange", "counter_exchange", "use_facade"]

CARE, INSURED = "SH", "AH"
# The Anhui patient of the story (DOMAIN.md section 9 synthetic values): ID card and e-voucher.
PATIENT = Person("33050099000010000001689700", (("02", "34010420000229124X"), ("01", "E-VOUCHER-TOKEN-0001")))


class ClosingPoster(Poster, Protocol):
    """A :class:`adapters.his.Poster` that holds connections of its own, closed with the exchange."""

    async def close(self) -> None: ...


@dataclass
class CounterExchange:
    exchange: Exchange
    ports: dict[str, int]
    his: HisClient
    insured: InsuredMedicalPlatform
    sim: SimulatedPlatforms
    session: aiohttp.ClientSession
    pids: dict[str, int]  # region -> its gateway process (the benchmark reads their CPU time)

    def url(self, region: str) -> str:
        return f"http://127.0.0.1:{self.ports[region]}"


def use_facade(exchange: Exchange, region: str, facade: str = "nhsa", config: Mapping[str, Any] | None = None) -> None:
    """The region's platform speaks through `facade`; `config`: other top-level keys of its gateway config."""
    path = exchange.config_path(region)
    doc = yaml.safe_load(path.read_text())
    doc["platforms"][0]["facade"] = facade
    doc.update(config or {})
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


@contextlib.asynccontextmanager
async def counter_exchange(
    root: Path, bootstrap_servers: str, namespace: str = "", *, cwd: Path | None = None,
    requests: Mapping[str, Mapping[str, int]] | None = None, persons: tuple[Person, ...] = (PATIENT,),
    connections: int = 100, batch_answers: bool = True,
    his_poster: Callable[[str, int, int], ClosingPoster] | None = None, access_tokens: bool = False,
) -> AsyncIterator[CounterExchange]:
    """`yrdx init` in `root`, the two gateways started (from `cwd`, default the exchange folder), the insured
    platform answering; everything stopped on exit. `requests` overrides deadlines per type (gateway config);
    `connections` bounds the HTTP connections of the HIS and the insured platform; `batch_answers`: the insured
    platform posts its answers in batches (adapters/answer_batch.py), else one POST /v1/messages each.
    `his_poster(host, port, connections)`: what the HIS posts through (bench/counter.py's lean client) instead of
    the shared aiohttp session, with its own `connections`; closed on exit. `access_tokens`: the HIS trades its
    assertion for one access token (POST /v1/token) and reuses it, instead of an assertion per call."""
    registry = SchemaRegistry.load()
    sim = SimulatedPlatforms(Ledger(), registry)
    await sim.start()
    fleet = GatewayFleet(root / "logs", cwd=cwd)
    insured: InsuredMedicalPlatform | None = None
    poster: ClosingPoster | None = None
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                    timeout=aiohttp.ClientTimeout(total=120))
    try:
        exchange = init_exchange(root, base_port=0, bootstrap_servers=bootstrap_servers,
                                 webhook_urls={INSURED: sim.url(INSURED)}, force=True, namespace=namespace)
        use_facade(exchange, CARE, config={"requests": dict(requests)} if requests else None)
        fleet.start(exchange, (CARE, INSURED))
        ports = await fleet.wait_ready()
        await wait_gateways_ready(session, ports)
        trust = TrustStore.from_files([exchange.pki.ca_cert], [exchange.pki.gateway_cert(r) for r in REGIONS])
        minter = TokenMinter(platform_id(INSURED), exchange.pki.platform_key(INSURED), INSURED)
        insured_client = PlatformClient(session, f"http://127.0.0.1:{ports[INSURED]}", INSURED, minter, sim.ledger)
        sim.connect({INSURED: insured_client}, trust)
        if batch_answers:  # the answers that queue up while one batch is in flight leave in the next one
            sim.answer_via[INSURED] = AnswerBatcher(insured_client)
        insured = InsuredMedicalPlatform(INSURED, registry, root / "ah-ledger.sqlite", persons)
        insured.attach(sim)
        if his_poster is not None:
            poster = his_poster("127.0.0.1", ports[CARE], connections)
        his = HisClient(session if poster is None else poster, f"http://127.0.0.1:{ports[CARE]}",
                        TokenMinter(platform_id(CARE), exchange.pki.platform_key(CARE), CARE),
                        access_tokens=access_tokens)
        yield CounterExchange(exchange, ports, his, insured, sim, session,
                              {r: proc.pid for r, proc in fleet.procs.items()})
    finally:
        fleet.stop()
        await sim.stop()  # its answers in flight first: they post through the session
        await session.close()
        if poster is not None:
            await poster.close()
        if insured is not None:
            insured.close()
