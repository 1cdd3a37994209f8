"""Identity settings from the environment (shared server settings come from the runtime).

Secrets have development defaults so `python -m services.identity` works out of the box; every
default secret is public (it is in this file), so production deployments must set:

- `SUUUPRA_IDENTITY_KEY_ENCRYPTION_KEY`: base64 of 32 random bytes; seals signing keys and TOTP
  secrets at rest. Changing it makes stored keys unreadable (rotate signing keys first).
- `SUUUPRA_IDENTITY_DELIVERY_KEY`: base64 of 32 random bytes shared with the notifications
  service only; seals reset/verification tokens inside events.
  Generate either with:
  `python -c "import base64,os;print(base64.b64encode(os.urandom(32)).decode())"`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta

from services.identity import domain

log = logging.getLogger(__name__)

# Public development defaults: derived from fixed strings so every dev process agrees on them.
_DEV_KEK = base64.b64encode(hashlib.sha256(b"suuupra-dev-key-encryption-key").digest()).decode()
_DEV_DELIVERY = base64.b64encode(hashlib.sha256(b"suuupra-dev-delivery-key").digest()).decode()


def _key(env: Mapping[str, str], name: str, default: str) -> bytes:
    raw = env.get(name)
    if not raw:
        log.warning("%s not set: using the public development default (never in production)", name)
        raw = default
    key = base64.b64decode(raw)
    if len(key) != 32:
        raise ValueError(f"{name} must be base64 of exactly 32 bytes")
    return key


def _seconds(env: Mapping[str, str], name: str, default: float) -> timedelta:
    return timedelta(seconds=float(env.get(name, default)))


@dataclass(frozen=True)
class IdentityConfig:
    issuer: str = "suuupra-identity"
    audience: str = "suuupra"
    public_url: str = "http://127.0.0.1:8081"
    access_token_ttl: timedelta = timedelta(minutes=10)
    key_encryption_key: bytes = field(default=b"\0" * 32, repr=False)
    delivery_key_id: str = "dev"
    delivery_key: bytes = field(default=b"\1" * 32, repr=False)
    hash_concurrency: int = 2
    reset_token_ttl: timedelta = timedelta(minutes=30)
    verification_token_ttl: timedelta = timedelta(hours=24)
    mfa_challenge_ttl: timedelta = timedelta(minutes=5)
    account_throttle: domain.ThrottlePolicy = domain.ACCOUNT_THROTTLE
    address_throttle: domain.ThrottlePolicy = domain.ADDRESS_THROTTLE
    totp_issuer: str = "Suuupra"

    @property
    def key_overlap(self) -> timedelta:
        """How long a retired signing key stays in the JWKS: every token it signed has expired."""
        return self.access_token_ttl * 2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IdentityConfig:
        e = os.environ if env is None else env
        issuer = e.get("SUUUPRA_JWT_ISSUER", cls.issuer)
        config = cls(
            issuer=issuer,
            audience=e.get("SUUUPRA_JWT_AUDIENCE", cls.audience),
            # Where clients reach /.well-known/ (the edge when deployed, the app HTTP port in dev).
            public_url=e.get(
                "SUUUPRA_IDENTITY_PUBLIC_URL",
                "http://" + (e.get("SUUUPRA_HTTP_ADDR") or "127.0.0.1:8081"),
            ).rstrip("/"),
            access_token_ttl=_seconds(e, "SUUUPRA_IDENTITY_ACCESS_TOKEN_TTL_SECONDS", 600),
            key_encryption_key=_key(e, "SUUUPRA_IDENTITY_KEY_ENCRYPTION_KEY", _DEV_KEK),
            delivery_key_id=e.get("SUUUPRA_IDENTITY_DELIVERY_KEY_ID", "dev"),
            delivery_key=_key(e, "SUUUPRA_IDENTITY_DELIVERY_KEY", _DEV_DELIVERY),
            hash_concurrency=int(e.get("SUUUPRA_IDENTITY_HASH_CONCURRENCY", 2)),
        )
        # Throttle thresholds are tunable for load tests; delays and caps stay as designed.
        if "SUUUPRA_IDENTITY_ACCOUNT_FREE_FAILURES" in e:
            config = replace(
                config,
                account_throttle=replace(
                    config.account_throttle,
                    free_failures=int(e["SUUUPRA_IDENTITY_ACCOUNT_FREE_FAILURES"]),
                ),
            )
        if "SUUUPRA_IDENTITY_ADDRESS_FREE_FAILURES" in e:
            config = replace(
                config,
                address_throttle=replace(
                    config.address_throttle,
                    free_failures=int(e["SUUUPRA_IDENTITY_ADDRESS_FREE_FAILURES"]),
                ),
            )
        return config
