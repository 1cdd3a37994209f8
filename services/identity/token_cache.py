"""A JwtVerifier that remembers tokens it has verified until they expire.

Verifying an EdDSA JWT (header parse, key lookup, signature, claims) costs more than the rest
of a cheap authenticated RPC; clients send the same access token for minutes. A hit still checks
expiry against the wall clock, so nothing is accepted longer than its `exp` allows. Tokens
signed by a key later dropped from the JWKS stay accepted until they expire, which is no longer
than the verifier's own key cache would allow anyway. Candidate for the shared runtime.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import jwt

from suuupra_runtime.auth import Caller, JwksProvider, JwtVerifier


class CachingJwtVerifier(JwtVerifier):
    max_entries = 10_000

    def __init__(self, jwks: JwksProvider, issuer: str, audience: str, **options: Any) -> None:
        super().__init__(jwks, issuer, audience, **options)
        self._verified: OrderedDict[str, tuple[Caller, float]] = OrderedDict()

    async def verify(self, token: str) -> Caller:
        hit = self._verified.get(token)
        now = time.time()
        if hit is not None:
            caller, expires = hit
            if now < expires:
                return caller
            del self._verified[token]
        caller = await super().verify(token)  # raises Unauthenticated for anything bad
        expires = float(jwt.decode(token, options={"verify_signature": False})["exp"])
        self._verified[token] = (caller, expires)
        if len(self._verified) > self.max_entries:
            self._verified.popitem(last=False)
        return caller
