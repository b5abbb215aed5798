"""A hospital's HIS at the counter: NHSA transaction envelopes posted to its gateway's facade.

It speaks only what a HIS speaks (DOMAIN.md section 2.2): ``infno``, ``msgid``, the divisions, the operator,
``input``; the answer is ``OutCommon``. Used by the counter story, the end-to-end tests and bench/counter.py.
It posts through an aiohttp session or through any :class:`Poster` (bench/counter.py's lean client: the
benchmark's driver shares the cores with the gateways it measures).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson

from adapters.nhsa.envelope import CST
from gateway.http.access_tokens import AccessTokenHolder
from gateway.http.auth import TokenMinter

__all__ = ["FACADE_PATH", "AiohttpPoster", "HisAnswer", "HisClient", "Poster"]

FACADE_PATH = "/v1/facades/nhsa/transactions"
TOKEN_PATH = "/v1/token"  # noqa: S105 (a route, not a secret): an assertion traded for an access token (gateway/http/access_tokens.py)


@dataclass(frozen=True, slots=True)
class HisAnswer:
    msgid: str
    status: int  # HTTP status (200 for every answer in the NHSA envelope)
    doc: dict[str, Any]
    latency_s: float

    @property
    def infcode(self) -> int | None:
        code = self.doc.get("infcode")
        return code if isinstance(code, int) else None

    @property
    def output(self) -> dict[str, Any]:
        out: dict[str, Any] = self.doc.get("output") or {}
        return out


class Poster(Protocol):
    """POSTs to the gateway the HIS talks to: (HTTP status, response body)."""

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]: ...


class AiohttpPoster:
    """A :class:`Poster` over an aiohttp session, to `origin` (scheme://host:port)."""

    def __init__(self, session: aiohttp.ClientSession, origin: str) -> None:
        self.session = session
        self.origin = origin

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        async with self.session.post(self.origin + path, data=body, headers=headers) as r:
            return r.status, await r.read()


class HisClient:
    """One hospital's HIS: a fresh platform JWT per call (or, `access_tokens`, one access token reused), a fresh
    msgid per transaction unless it retries.

    `session`: an aiohttp session, or a :class:`Poster` already bound to the gateway at `gateway_url`."""

    def __init__(
        self, session: aiohttp.ClientSession | Poster, gateway_url: str, minter: TokenMinter, *,
        fixmedins_code: str = "H31011500001", mdtrtarea_admvs: str = "310000", insuplc_admdvs: str = "340100",
        opter: str = "OP0001", access_tokens: bool = False,
    ) -> None:
        self.url = gateway_url.rstrip("/") + FACADE_PATH
        url = urlsplit(self.url)
        self._path = url.path
        if isinstance(session, aiohttp.ClientSession):
            session = AiohttpPoster(session, f"{url.scheme}://{url.netloc}")
        self.poster: Poster = session
        self.fixmedins_code = fixmedins_code
        self.mdtrtarea_admvs = mdtrtarea_admvs
        self.insuplc_admdvs = insuplc_admdvs
        self.opter = opter
        self._minter = minter
        self._tokens: list[str] = []  # minted ahead (premint), used before fresh ones
        # access_tokens: one access token (POST /v1/token) reused until it nears its expiry, as an OAuth client
        # does, instead of an assertion per call
        self._access = AccessTokenHolder(minter.header, self._trade) if access_tokens else None
        self._serial = itertools.count(1)

    async def _trade(self, headers: dict[str, str]) -> tuple[int, bytes]:
        return await self.poster.post(TOKEN_PATH, b"", headers)

    def premint(self, count: int) -> None:
        """Mint `count` single-use tokens now (each lives 300 s), to be used before fresh ones: bench/counter.py's
        driver shares the machine with the gateways, so it mints a window's tokens before the window opens."""
        if self._access is None:
            self._tokens = [self._minter.mint() for _ in range(count)]

    def msgid(self) -> str:
        """fixmedins_code (12) + yyyyMMddHHmmss (14) + a 4-digit sequence (30 characters)."""
        return f"{self.fixmedins_code}{datetime.now(CST):%Y%m%d%H%M%S}{next(self._serial) % 10000:04d}"

    def envelope(self, infno: str, input: Mapping[str, Any], *, msgid: str | None = None) -> dict[str, Any]:
        now = datetime.now(CST)
        return {
            "infno": infno, "msgid": msgid or self.msgid(), "mdtrtarea_admvs": self.mdtrtarea_admvs,
            "insuplc_admdvs": self.insuplc_admdvs, "recer_sys_code": "YRDX", "infver": "V1.0",
            "opter_type": "1", "opter": self.opter, "opter_name": "收费员", "inf_time": f"{now:%Y-%m-%d %H:%M:%S}",
            "fixmedins_code": self.fixmedins_code, "fixmedins_name": "上海示例医院", "signtype": "SM3",
            "input": dict(input),
        }

    async def post(self, envelope: Mapping[str, Any] | bytes) -> HisAnswer:
        body = envelope if isinstance(envelope, bytes) else orjson.dumps(envelope)
        msgid = "" if isinstance(envelope, bytes) else str(envelope.get("msgid", ""))
        if self._access is not None:
            headers = {"Content-Type": "application/json", **await self._access.header()}
        else:
            token = self._tokens.pop() if self._tokens else self._minter.mint()
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        started = time.monotonic()
        status, raw = await self.poster.post(self._path, body, headers)
        latency = time.monotonic() - started
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = {"unreadable": len(raw)}
        return HisAnswer(msgid, status, doc if isinstance(doc, dict) else {}, latency)

    async def transact(self, infno: str, input: Mapping[str, Any], *, msgid: str | None = None) -> HisAnswer:
        return await self.post(self.envelope(infno, input, msgid=msgid))
