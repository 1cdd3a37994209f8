"""JWT access-token verification against a JWKS (Ed25519 keys generated here)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from suuupra_runtime.auth import JwtVerifier, bearer_token
from suuupra_runtime.errors import Unauthenticated

ISSUER = "https://identity.suuupra.local"
AUDIENCE = "suuupra"


class FakeJwks:
    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0

    def add(self, kid: str, public_key: Any, *, ec: bool = False) -> None:
        algo = ECAlgorithm if ec else OKPAlgorithm
        jwk = json.loads(algo.to_jwk(public_key))
        jwk["kid"] = kid
        self.keys.append(jwk)

    async def fetch(self) -> Mapping[str, Any]:
        self.fetches += 1
        return {"keys": list(self.keys)}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "tenant": "tenant-1",
        "roles": ["student"],
        "perms": ["testing.echo.call"],
        "sid": "session-1",
        "jti": "token-1",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return claims


@pytest.fixture
def setup() -> tuple[FakeJwks, Ed25519PrivateKey, JwtVerifier, Clock]:
    jwks = FakeJwks()
    key = Ed25519PrivateKey.generate()
    jwks.add("k1", key.public_key())
    clock = Clock()
    verifier = JwtVerifier(jwks, ISSUER, AUDIENCE, clock=clock)
    return jwks, key, verifier, clock


def _sign(key: Any, claims: dict[str, Any], kid: str = "k1", alg: str = "EdDSA") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


async def test_valid_token_becomes_a_caller(setup: Any) -> None:
    jwks, key, verifier, _ = setup
    token = _sign(key, _claims())
    caller = await verifier.verify(token)
    assert caller.subject == "user-1"
    assert caller.tenant_id == "tenant-1"
    assert caller.roles == frozenset({"student"})
    assert caller.permissions == frozenset({"testing.echo.call"})
    assert (caller.session_id, caller.token_id, caller.raw_token) == ("session-1", "token-1", token)
    assert caller.is_authenticated and not caller.is_service
    assert "raw_token" not in repr(caller) or token not in repr(caller)
    await verifier.verify(token)
    assert jwks.fetches == 1  # keys are cached


async def test_es256_keys_are_accepted(setup: Any) -> None:
    jwks, _, verifier, _ = setup
    ec_key = generate_private_key(SECP256R1())
    jwks.add("ec1", ec_key.public_key(), ec=True)
    caller = await verifier.verify(_sign(ec_key, _claims(), kid="ec1", alg="ES256"))
    assert caller.subject == "user-1"


async def test_alg_none_is_rejected(setup: Any) -> None:
    _, _, verifier, _ = setup

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    token = f"{b64({'alg': 'none', 'kid': 'k1', 'typ': 'JWT'})}.{b64(_claims())}."
    with pytest.raises(Unauthenticated):
        await verifier.verify(token)


async def test_hs256_signed_with_the_public_key_is_rejected(setup: Any) -> None:
    _, _, verifier, _ = setup
    token = jwt.encode(_claims(), "k" * 32, algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(Unauthenticated):
        await verifier.verify(token)


async def test_wrong_audience_and_issuer_are_rejected(setup: Any) -> None:
    _, key, verifier, _ = setup
    with pytest.raises(Unauthenticated):
        await verifier.verify(_sign(key, _claims(aud="other-service")))
    with pytest.raises(Unauthenticated):
        await verifier.verify(_sign(key, _claims(iss="https://evil.example")))


async def test_expired_token_is_rejected(setup: Any) -> None:
    _, key, verifier, _ = setup
    now = int(time.time())
    with pytest.raises(Unauthenticated) as err:
        await verifier.verify(_sign(key, _claims(iat=now - 600, exp=now - 60)))
    assert err.value.reason == "TOKEN_EXPIRED"


async def test_missing_required_claim_is_rejected(setup: Any) -> None:
    _, key, verifier, _ = setup
    claims = _claims()
    del claims["exp"]
    with pytest.raises(Unauthenticated):
        await verifier.verify(_sign(key, claims))


async def test_bad_signature_is_rejected(setup: Any) -> None:
    _, _, verifier, _ = setup
    forged = _sign(Ed25519PrivateKey.generate(), _claims())  # right kid, wrong key
    with pytest.raises(Unauthenticated):
        await verifier.verify(forged)
    header, _payload, signature = _sign(setup[1], _claims()).split(".")
    tampered_payload = (
        base64.urlsafe_b64encode(json.dumps(_claims(perms=["admin.everything"])).encode())
        .rstrip(b"=")
        .decode()
    )
    with pytest.raises(Unauthenticated):
        await verifier.verify(f"{header}.{tampered_payload}.{signature}")


async def test_unknown_kid_refetches_once_then_rejects_and_picks_up_rotation(setup: Any) -> None:
    jwks, key, verifier, clock = setup
    await verifier.verify(_sign(key, _claims()))
    assert jwks.fetches == 1

    new_key = Ed25519PrivateKey.generate()
    clock.now += 11  # past the refetch rate limit
    with pytest.raises(Unauthenticated) as err:
        await verifier.verify(_sign(new_key, _claims(), kid="k2"))
    assert err.value.reason == "TOKEN_UNKNOWN_KEY"
    assert jwks.fetches == 2

    # Another bogus kid right away: rate limited, no fetch.
    with pytest.raises(Unauthenticated):
        await verifier.verify(_sign(new_key, _claims(), kid="k3"))
    assert jwks.fetches == 2

    # Identity rotates in k2; once the rate limit passes the new key is found.
    jwks.add("k2", new_key.public_key())
    clock.now += 11
    caller = await verifier.verify(_sign(new_key, _claims(), kid="k2"))
    assert caller.subject == "user-1"
    assert jwks.fetches == 3


async def test_bad_claim_types_are_rejected(setup: Any) -> None:
    _, key, verifier, _ = setup
    with pytest.raises(Unauthenticated):
        await verifier.verify(_sign(key, _claims(perms="admin")))


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer  abc") == "abc"
    for bad in ("Basic dXNlcg==", "Bearer", "abc"):
        with pytest.raises(Unauthenticated):
            bearer_token(bad)
