"""Platform JWTs: a hostile token is always an AuthError (a 401), never another exception (a 500)."""

from __future__ import annotations

import asyncio
import base64
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.http.auth import MAX_TOKEN_CHARS, Authenticator, AuthError, Principal, one_authorization
from gateway.state import StateStore

ISSUER = "js-platform"
AUDIENCE = "urn:yrdx:gateway:JS"
KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def auth(tmp_path: Path) -> Iterator[Authenticator]:
    state = StateStore(tmp_path / "state.sqlite")
    yield Authenticator("JS", {ISSUER: KEY.public_key()}, {}, state)
    state.close()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 60, "jti": str(uuid.uuid4()), **over}


def signed(**over: Any) -> str:
    return "Bearer " + jwt.encode(claims(**over), KEY, algorithm="ES256")


async def test_a_valid_token_authenticates_once(auth: Authenticator) -> None:
    token = signed(scope="audit:read other")
    principal = await auth.authenticate(token)
    assert (principal.id, principal.kind, principal.scopes) == (ISSUER, "platform", {"audit:read", "other"})
    with pytest.raises(AuthError, match="replay"):
        await auth.authenticate(token)


def test_one_authorization_header() -> None:
    assert one_authorization([]) is None
    assert one_authorization(["Bearer x"]) == "Bearer x"
    with pytest.raises(AuthError, match="more than one Authorization header"):
        one_authorization(["Bearer x", "Bearer y"])


@pytest.mark.parametrize("authorization", [
    None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "bearer abc",
    "Bearer \udcff\udcfe" + "a.b.c",  # a non-UTF-8 header byte, as aiohttp decodes it (surrogateescape)
    "Bearer é.é.é", "Bearer \x00.\x00.\x00", "Bearer " + "a" * (MAX_TOKEN_CHARS + 1),
    "Bearer a.b", "Bearer a.b.c", "Bearer ...", "Bearer " + b64(b"[]") + "." + b64(b"{}") + ".",
    "Bearer " + b64(b'{"alg":"ES256"}') + "." + b64(b"\xff\xfe") + ".sig",
    "Bearer " + b64(b'{"alg":"ES256"}') + "." + b64(b"[" * 5000) + ".sig",
    "Bearer " + b64(b'{"alg":"ES256"}') + "." + b64(b'{"iss": ["js-platform"]}') + ".sig",
])
async def test_malformed_tokens_are_auth_errors(auth: Authenticator, authorization: str | None) -> None:
    with pytest.raises(AuthError):
        await auth.authenticate(authorization)


@pytest.mark.parametrize("over", [
    {"iat": "1700000000", "exp": "1700000060"},  # numeric strings: pyjwt's int() takes them, arithmetic does not
    {"exp": [1]}, {"exp": None}, {"iat": {"a": 1}}, {"exp": True}, {"iat": False},
    {"exp": float("nan")}, {"exp": float("inf")}, {"iat": float("-inf")},
    {"exp": 10**400}, {"iat": -(10**400)}, {"iat": 10**400, "exp": 10**400},
    {"jti": "\ud800"}, {"jti": "a\nb"}, {"jti": ""}, {"jti": 7},
    {"scope": ["audit:read"]}, {"scope": {"a": [[[[1]]]]}},
    {"aud": ["urn:yrdx:gateway:SH"]}, {"iss": "js-platform\x00"},
])
async def test_signed_tokens_with_broken_claims_are_auth_errors(auth: Authenticator, over: dict[str, Any]) -> None:
    # jwt.encode serializes with json.dumps, which writes NaN and Infinity as such (and Python's json reads them).
    with pytest.raises(AuthError):
        await auth.authenticate(signed(**over))


async def test_float_times_are_numeric_dates(auth: Authenticator) -> None:
    now = time.time()
    assert (await auth.authenticate(signed(iat=now, exp=now + 60.5))).id == ISSUER


async def test_random_garbage_and_mutations_are_only_auth_errors(auth: Authenticator) -> None:
    """Anything but AuthError fails the test. A mutation may leave the token valid (base64's last character
    carries spare bits), but its jti lets it through once at most."""
    rng = random.Random(7)
    good = signed()[7:]
    accepted = 0
    alphabet = "abcXYZ019-_.=+/ \t\"{}[]:,\\\x00\x7f\x85é\udcff"
    for _ in range(3000):
        if rng.random() < 0.5:
            token = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        else:
            chars = list(good)
            for _ in range(rng.randrange(1, 4)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            token = "".join(chars)
        try:
            await auth.authenticate("Bearer " + token)
            accepted += 1
        except AuthError:
            pass
    assert accepted <= 1


async def test_signed_tokens_whose_payload_is_not_a_claims_object(auth: Authenticator) -> None:
    """Validly signed, but the payload a JSON array, a string, a deep nest, an infinite exp."""
    for payload in (b"[]", b'"x"', b"1", b"[" * 900 + b"]" * 900, b'{"iss": "js-platform", "exp": 1e999}'):
        token = jwt.api_jws.PyJWS().encode(payload, KEY, algorithm="ES256")
        with pytest.raises(AuthError):
            await auth.authenticate(f"Bearer {token}")


async def test_tokens_presented_together_spend_their_jtis_in_one_group(auth: Authenticator) -> None:
    """Concurrent requests share one jti transaction; the same token twice in one group passes once."""
    tokens = [signed() for _ in range(20)]
    replayed = tokens[3]
    results = await asyncio.gather(*(auth.authenticate(t) for t in [*tokens, replayed]), return_exceptions=True)
    refused = [r for r in results if isinstance(r, AuthError)]
    assert len(refused) == 1 and "replay" in str(refused[0])
    assert sum(isinstance(r, Principal) for r in results) == 20


async def test_a_token_that_fails_verification_spends_no_jti(auth: Authenticator) -> None:
    token = jwt.encode(claims(jti="kept"), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    with pytest.raises(AuthError, match="invalid token"):
        await auth.authenticate(f"Bearer {token}")
    assert (await auth.authenticate(signed(jti="kept"))).id == ISSUER  # the forged one did not use it up
