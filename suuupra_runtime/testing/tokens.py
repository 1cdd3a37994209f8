"""Access tokens for service tests without running identity: a throwaway Ed25519 issuer.

    issuer = TestIssuer()
    definition.jwt_verifier = issuer.verifier()          # or pass issuer.verifier() to the harness
    token = issuer.token(user_id, tenant_id, roles=["student"], perms=["courses.courses.read"])
    await stub.GetCourse(req, metadata=bearer(token))

Claims follow identity's access tokens (iss, aud, sub, tenant, roles, perms, sid, jti, iat, exp),
so a service tested this way accepts real identity tokens too. Use the permissions identity
really grants (`services.identity.domain.role_permissions(["student"])`) rather than hand-picked
ones, so a test breaks when a role loses a permission the feature needs.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from suuupra_runtime.auth import JwtVerifier

ISSUER = "https://identity.suuupra.local"
AUDIENCE = "suuupra"

__all__ = ["AUDIENCE", "ISSUER", "TestIssuer", "bearer"]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying an access token."""
    return (("authorization", f"Bearer {token}"),)


class _StaticJwks:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    async def fetch(self) -> Mapping[str, Any]:
        return self.document


class TestIssuer:
    __test__ = False  # not a pytest test class

    def __init__(self, issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        self.issuer = issuer
        self.audience = audience
        self.kid = uuid.uuid4().hex[:12]
        self._key = Ed25519PrivateKey.generate()
        jwk = json.loads(OKPAlgorithm.to_jwk(self._key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="EdDSA")
        self.jwks: dict[str, Any] = {"keys": [jwk]}

    def verifier(self) -> JwtVerifier:
        return JwtVerifier(_StaticJwks(self.jwks), self.issuer, self.audience)

    def token(
        self,
        subject: str,
        tenant_id: str,
        *,
        roles: Iterable[str] = (),
        perms: Iterable[str] = (),
        ttl_seconds: int = 600,
        **claims: Any,
    ) -> str:
        """A signed access token with exactly these roles and permissions."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "tenant": tenant_id,
            "roles": sorted(roles),
            "perms": sorted(perms),
            "sid": uuid.uuid4().hex,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + ttl_seconds,
        }
        body.update(claims)
        return jwt.encode(body, self._key, algorithm="EdDSA", headers={"kid": self.kid})
