"""The verified-token cache of `JwtVerifier`: one signature check per token, never past `exp`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from suuupra_runtime.auth import JwtVerifier
from suuupra_runtime.errors import Unauthenticated

ISSUER = "https://identity.suuupra.local"
AUDIENCE = "suuupra"


class Jwks:
    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}

    def add(self, kid: str, key: Ed25519PrivateKey) -> None:
        jwk = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
        jwk["kid"] = kid
        self.keys[kid] = jwk

    async def fetch(self) -> Mapping[str, Any]:
        return {"keys": list(self.keys.values())}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sign(key: Ed25519PrivateKey, *, exp_in: int = 300, sub: str = "user-1", kid: str = "k1") -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + exp_in}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every full (signature-checking) decode, by token."""
    seen: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return seen


async def test_a_reused_token_is_verified_once(decodes: list[str]) -> None:
    jwks, key = Jwks(), Ed25519PrivateKey.generate()
    jwks.add("k1", key)
    verifier = JwtVerifier(jwks, ISSUER, AUDIENCE)
    token = sign(key)
    first = await verifier.verify(token)
    for _ in range(5):
        assert await verifier.verify(token) == first
    assert decodes == [token]
    assert first.subject == "user-1" and first.raw_token == token


async def test_a_cached_token_is_rejected_once_its_exp_passes(decodes: list[str]) -> None:
    jwks, key = Jwks(), Ed25519PrivateKey.generate()
    jwks.add("k1", key)
    wall = Clock(time.time())
    verifier = JwtVerifier(jwks, ISSUER, AUDIENCE, wall_clock=wall)
    token = sign(key, exp_in=60)
    await verifier.verify(token)
    wall.now += 61  # the cache must not serve it now: the full check runs again
    await verifier.verify(token)  # (really still valid by the real clock)
    assert decodes == [token, token]


async def test_an_expired_token_is_rejected_on_time_after_being_cached() -> None:
    jwks, key = Jwks(), Ed25519PrivateKey.generate()
    jwks.add("k1", key)
    verifier = JwtVerifier(jwks, ISSUER, AUDIENCE)
    token = sign(key, exp_in=1)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    await verifier.verify(token)
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)  # real time is now past exp
    with pytest.raises(Unauthenticated) as err:
        await verifier.verify(token)
    assert err.value.reason == "TOKEN_EXPIRED"


async def test_a_withdrawn_signing_key_stops_cached_tokens_at_the_next_refresh() -> None:
    jwks, key = Jwks(), Ed25519PrivateKey.generate()
    jwks.add("k1", key)
    clock = Clock(1000.0)
    verifier = JwtVerifier(jwks, ISSUER, AUDIENCE, clock=clock, max_key_age_seconds=300)
    token = sign(key)
    await verifier.verify(token)
    del jwks.keys["k1"]  # identity withdraws the (say, compromised) key
    clock.now += 301  # the key set is due for a refresh
    with pytest.raises(Unauthenticated) as err:
        await verifier.verify(token)
    assert err.value.reason == "TOKEN_UNKNOWN_KEY"


async def test_rejections_are_not_cached_and_the_cache_is_bounded(decodes: list[str]) -> None:
    jwks, key = Jwks(), Ed25519PrivateKey.generate()
    jwks.add("k1", key)
    verifier = JwtVerifier(jwks, ISSUER, AUDIENCE, verified_cache_size=2)
    forged = sign(Ed25519PrivateKey.generate())  # right kid, wrong key
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await verifier.verify(forged)
    assert decodes == [forged, forged]

    decodes.clear()
    a, b, c = (sign(key, sub=f"user-{n}") for n in "abc")
    for token in (a, b, c, c, b):  # c evicts a (least recently used); b and c stay cached
        await verifier.verify(token)
    assert decodes == [a, b, c]
    await verifier.verify(a)
    assert decodes == [a, b, c, a]
