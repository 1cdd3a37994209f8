# mypy: disable-error-code="import-untyped"
"""The verified-token cache: hits skip verification, misses and bad tokens do not get cached,
and a cached token stops working at its `exp`."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from services.identity.token_cache import CachingJwtVerifier
from suuupra_runtime.auth import JwtVerifier
from suuupra_runtime.errors import Unauthenticated

KEY = Ed25519PrivateKey.generate()


class StaticJwks:
    async def fetch(self) -> Mapping[str, Any]:
        jwk = json.loads(OKPAlgorithm.to_jwk(KEY.public_key()))
        jwk["kid"] = "k1"
        return {"keys": [jwk]}


def _token(exp_in: int = 300, key: Ed25519PrivateKey = KEY) -> str:
    now = int(time.time())
    claims = {"iss": "i", "aud": "a", "sub": "u1", "iat": now, "exp": now + exp_in}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "k1"})


async def test_hits_skip_verification_and_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = JwtVerifier.verify

    async def counting(self: JwtVerifier, token: str) -> Any:
        calls.append(token)
        return await real(self, token)

    monkeypatch.setattr(JwtVerifier, "verify", counting)
    verifier = CachingJwtVerifier(StaticJwks(), "i", "a")
    token = _token()
    assert (await verifier.verify(token)).subject == "u1"
    assert (await verifier.verify(token)).subject == "u1"
    assert len(calls) == 1
    # Past its exp the cached entry is not used: the token is verified again.
    later = time.time() + 301
    monkeypatch.setattr(time, "time", lambda: later)
    await verifier.verify(token)  # PyJWT's own clock is real, so it still verifies
    assert len(calls) == 2


async def test_bad_tokens_are_never_cached() -> None:
    verifier = CachingJwtVerifier(StaticJwks(), "i", "a")
    forged = _token(key=Ed25519PrivateKey.generate())
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await verifier.verify(forged)
    with pytest.raises(Unauthenticated):
        await verifier.verify(_token(exp_in=-10))
    assert not verifier._verified
