"""Access tokens (gateway/http/access_tokens.py): a caller's single-use assertion traded for a reusable token that
only this region's gateway can have issued, that dies at its expiry, with its caller's key, and never renews
itself."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.crypto.jws import b64url_decode, b64url_encode
from gateway.http.access_tokens import PREFIX, REFRESH_MARGIN_S, AccessTokenHolder, AccessTokens, InvalidAccessToken
from gateway.http.auth import AUDIT_SCOPE, Authenticator, AuthError, Principal
from gateway.state import StateStore

REGION = "JS"
AUDIENCE = "urn:yrdx:gateway:JS"
PLATFORM, AUDITOR = "js-platform", "js-auditor"
PLATFORM_KEY, AUDITOR_KEY = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
IDENTITY = b"-----BEGIN PRIVATE KEY-----\nthe region's identity key file\n-----END PRIVATE KEY-----\n"


def access(region: str = REGION, identity: bytes = IDENTITY) -> AccessTokens:
    return AccessTokens(region, identity, f"urn:yrdx:gateway:{region}")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    store = StateStore(tmp_path / "state.sqlite")
    yield store
    store.close()


def authenticator(state: StateStore, tokens: AccessTokens | None = None,
                  platform_key: ec.EllipticCurvePrivateKey = PLATFORM_KEY) -> Authenticator:
    return Authenticator(REGION, {PLATFORM: platform_key.public_key()}, {AUDITOR: AUDITOR_KEY.public_key()}, state,
                         access=access() if tokens is None else tokens)


def assertion(key: ec.EllipticCurvePrivateKey = PLATFORM_KEY, issuer: str = PLATFORM, scope: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": issuer, "aud": AUDIENCE, "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}
    if scope:
        claims["scope"] = scope
    return "Bearer " + jwt.encode(claims, key, algorithm="ES256")


async def traded(auth: Authenticator, bearer: str | None = None) -> str:
    principal = await auth.authenticate(bearer or assertion())
    token, lifetime = auth.issue(principal)
    assert token.startswith(PREFIX) and lifetime == 300
    return "Bearer " + token


async def test_an_access_token_names_its_caller_and_is_reused_without_a_jti(state: StateStore) -> None:
    auth = authenticator(state)
    bearer = await traded(auth)
    for _ in range(3):  # an assertion is single use; the token is not
        assert await auth.authenticate(bearer) == Principal(PLATFORM, "platform", frozenset(), by_access_token=True)


async def test_an_auditors_token_keeps_its_scope(state: StateStore) -> None:
    auth = authenticator(state)
    bearer = await traded(auth, assertion(AUDITOR_KEY, AUDITOR, AUDIT_SCOPE))
    principal = await auth.authenticate(bearer)
    assert (principal.id, principal.kind, principal.scopes) == (AUDITOR, "auditor", frozenset({AUDIT_SCOPE}))


async def test_an_access_token_is_never_traded_for_another(state: StateStore) -> None:
    auth = authenticator(state)
    principal = await auth.authenticate(await traded(auth))
    with pytest.raises(AuthError, match="assertion only"):
        auth.issue(principal)


@pytest.mark.parametrize("part", ["claims", "mac"])
async def test_a_changed_byte_is_refused(state: StateStore, part: str) -> None:
    auth = authenticator(state)
    token = (await traded(auth)).removeprefix("Bearer ")
    signed, mac = token.rsplit(".", 1)
    if part == "mac":
        raw = bytearray(b64url_decode(mac))
        raw[0] ^= 1
        token = f"{signed}.{b64url_encode(bytes(raw))}"
    else:  # the claims re-encoded with another caller: the MAC no longer holds
        claims = b64url_decode(signed.removeprefix(PREFIX)).replace(PLATFORM.encode(), b"js-platfora")
        token = f"{PREFIX}{b64url_encode(claims)}.{mac}"
    with pytest.raises(AuthError, match="invalid access token: not issued by this region's gateway"):
        await auth.authenticate("Bearer " + token)


async def test_only_this_regions_gateways_tokens_count(state: StateStore) -> None:
    """Another region's gateway (same key bytes even), or this region's under another identity key, issued it."""
    auth = authenticator(state)
    for other in (access("SH"), access(REGION, IDENTITY + b"\n")):
        token, _ = other.issue(PLATFORM, "platform", "", auth._key_tags[PLATFORM])
        with pytest.raises(AuthError, match="not issued by this region's gateway"):
            await auth.authenticate("Bearer " + token)


async def test_a_replica_with_the_same_identity_key_accepts_the_token(state: StateStore) -> None:
    bearer = await traded(authenticator(state))
    replica = authenticator(state, access())  # another process: the same key file, a key derived afresh
    assert (await replica.authenticate(bearer)).id == PLATFORM


async def test_an_expired_token_is_refused(state: StateStore) -> None:
    auth = authenticator(state)
    token, _ = access().issue(PLATFORM, "platform", "", auth._key_tags[PLATFORM], now=time.time() - 310)
    with pytest.raises(AuthError, match="expired"):
        await auth.authenticate("Bearer " + token)


async def test_a_token_dies_with_its_callers_key(state: StateStore) -> None:
    bearer = await traded(authenticator(state))
    rekeyed = authenticator(state, platform_key=ec.generate_private_key(ec.SECP256R1()))  # the config's new key
    with pytest.raises(AuthError, match="key changed"):
        await rekeyed.authenticate(bearer)


@pytest.mark.parametrize("token", ["yat1.", "yat1.a.b.c", "yat1.e30", "yat1.e30.!!", "yat1.é.x", "yat1." + "a" * 5000])
async def test_a_malformed_access_token_is_a_401_not_a_crash(state: StateStore, token: str) -> None:
    with pytest.raises(AuthError):
        await authenticator(state).authenticate("Bearer " + token)


async def test_without_access_tokens_none_is_issued_or_taken(state: StateStore) -> None:
    auth = Authenticator(REGION, {PLATFORM: PLATFORM_KEY.public_key()}, {}, state)
    principal = await auth.authenticate(assertion())
    with pytest.raises(AuthError, match="not issued"):
        auth.issue(principal)
    token, _ = access().issue(PLATFORM, "platform", "", authenticator(state)._key_tags[PLATFORM])
    with pytest.raises(AuthError, match="not accepted"):
        await auth.authenticate("Bearer " + token)


# --- the caller's side: AccessTokenHolder --------------------------------------------------------------------


async def test_a_holder_trades_once_for_concurrent_callers_and_again_near_expiry(state: StateStore) -> None:
    """Real assertions traded with a real Authenticator: one trade serves every caller until the token is within
    the refresh margin of its expiry."""
    auth = authenticator(state)
    trades = 0
    expires_in = 300

    async def trade(headers: dict[str, str]) -> tuple[int, bytes]:
        nonlocal trades
        trades += 1
        await asyncio.sleep(0.01)  # the other callers arrive while the trade is in flight
        token, _ = auth.issue(await auth.authenticate(headers["Authorization"]))
        return 200, orjson.dumps({"access_token": token, "token_type": "Bearer", "expires_in": expires_in})

    holder = AccessTokenHolder(lambda: {"Authorization": assertion()}, trade)
    headers = await asyncio.gather(*(holder.header() for _ in range(20)))
    assert trades == 1 and len({h["Authorization"] for h in headers}) == 1
    assert (await auth.authenticate(headers[0]["Authorization"])).id == PLATFORM
    expires_in = REFRESH_MARGIN_S  # the next token is already due for renewal when it arrives
    holder._refresh_at = 0.0  # the first one reached its margin
    await holder.header()
    await holder.header()
    assert trades == 3


async def test_a_refused_trade_raises_with_the_status() -> None:
    async def trade(headers: dict[str, str]) -> tuple[int, bytes]:
        return 401, b'{"code": "unauthenticated"}'

    with pytest.raises(InvalidAccessToken, match="answered 401"):
        await AccessTokenHolder(lambda: {"Authorization": "Bearer x"}, trade).header()
