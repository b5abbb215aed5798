"""Platform JWTs: a hostile token is always an AuthError (a 401), never another exception (a 500)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

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


def forged(header: dict[str, Any], payload: dict[str, Any]) -> str:
    """A token with exactly this header, ES256-signed by KEY (pyjwt would set alg and add typ)."""
    body = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    r, s = decode_dss_signature(KEY.sign(body.encode(), ec.ECDSA(hashes.SHA256())))
    return f"Bearer {body}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@dataclass(frozen=True)
class FromNow:
    """A NumericDate this many seconds from the moment the test runs (not from collection: the whole suite may
    run for minutes between the two)."""

    seconds: int


@pytest.mark.parametrize("over", [
    {"exp": FromNow(-6), "iat": FromNow(-60)},  # expired beyond the 5 s leeway
    {"iat": FromNow(30), "exp": FromNow(60)},  # issued in the future
    {"nbf": FromNow(30)}, {"nbf": None}, {"nbf": "0"},
    {"iat": FromNow(-400), "exp": FromNow(10)},  # a lifetime over five minutes
    {"aud": []}, {"aud": ""}, {"aud": ["urn:yrdx:gateway:JS", 7]}, {"aud": {"urn:yrdx:gateway:JS": 1}},
    {"sub": 7}, {"exp": None}, {"jti": None}, {"aud": None},
])
async def test_claims_are_checked_as_pyjwt_checked_them(auth: Authenticator, over: dict[str, Any]) -> None:
    now = int(time.time())
    claims_now = {k: now + v.seconds if isinstance(v, FromNow) else v for k, v in over.items()}
    with pytest.raises(AuthError, match="invalid token|lifetime"):
        await auth.authenticate(signed(**claims_now))


async def test_leeway_and_audience_lists_accept(auth: Authenticator) -> None:
    now = int(time.time())
    for over in ({"exp": now - 3, "iat": now - 60}, {"iat": now + 3, "exp": now + 60}, {"nbf": now + 3},
                 {"aud": ["urn:yrdx:gateway:SH", AUDIENCE]}, {"sub": ISSUER}):
        assert (await auth.authenticate(signed(**over))).id == ISSUER


@pytest.mark.parametrize("header", [
    {"alg": "HS256"}, {"alg": "none"}, {"alg": "ES384"}, {"alg": "es256"}, {}, {"alg": ["ES256"]},
    {"alg": "ES256", "typ": "JOSE"}, {"alg": "ES256", "typ": 1}, {"alg": "ES256", "kid": 1},
    {"alg": "ES256", "crit": ["exp"], "exp": 1}, {"alg": "ES256", "b64": False, "crit": ["b64"]},
])
async def test_headers_other_than_es256_are_refused(auth: Authenticator, header: dict[str, Any]) -> None:
    with pytest.raises(AuthError, match="invalid token"):
        await auth.authenticate(forged(header, claims()))


async def test_typ_and_kid_are_optional(auth: Authenticator) -> None:
    for header in ({"alg": "ES256"}, {"alg": "ES256", "typ": "jwt"}, {"alg": "ES256", "kid": "k1"}):
        assert (await auth.authenticate(forged(header, claims()))).id == ISSUER


def test_an_hs256_token_keyed_with_the_public_key_fails(auth: Authenticator) -> None:
    pem = KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    body = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims()).encode())
    token = body + "." + b64(hmac.new(pem, body.encode(), hashlib.sha256).digest())
    with pytest.raises(AuthError, match="invalid token"):
        auth.verify(f"Bearer {token}")


def test_a_signature_spelled_otherwise_is_refused(auth: Authenticator) -> None:
    """Padding, the standard alphabet, another length: the one canonical base64url of 64 bytes only."""
    token = signed()[7:]
    head, sig = token.rsplit(".", 1)
    raw = base64.urlsafe_b64decode(sig + "==")
    for other in (sig + "=", base64.b64encode(raw).decode().rstrip("="), b64(raw + b"\0"), b64(raw[:63]),
                  b64(raw[:32]), ""):
        if other == sig:
            continue
        with pytest.raises(AuthError):
            auth.verify(f"Bearer {head}.{other}")
    assert auth.verify(f"Bearer {token}")[0].id == ISSUER
