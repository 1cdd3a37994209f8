"""Token signing keys (Ed25519), JWT issuing, JWKS/OIDC documents and at-rest sealing.

No I/O here: the store persists `StoredKey` rows; this module turns them into signing material.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Sealer:
    """AES-256-GCM with a named key: 12-byte random nonce || ciphertext || tag."""

    def __init__(self, key_id: str, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("sealing keys are 32 bytes (base64 of 32 random bytes in the env)")
        self.key_id = key_id
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, plaintext, associated_data)

    def open(self, sealed: bytes, associated_data: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], associated_data)
        except (InvalidTag, ValueError):
            return None


@dataclass(frozen=True)
class StoredKey:
    """A signing key as persisted: the private half is sealed with the key-encryption key."""

    kid: str
    public_jwk: str  # JSON
    sealed_private_key: bytes
    created_at: datetime
    retired_at: datetime | None


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey


def public_jwk(kid: str, public_key: Ed25519PublicKey) -> dict[str, str]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(raw),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    }


def new_stored_key(sealer: Sealer, now: datetime) -> StoredKey:
    private = Ed25519PrivateKey.generate()
    kid = f"{now:%Y%m%d}-{uuid.uuid4().hex[:12]}"
    raw = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return StoredKey(
        kid=kid,
        public_jwk=json.dumps(public_jwk(kid, private.public_key()), sort_keys=True),
        sealed_private_key=sealer.seal(raw, kid.encode()),
        created_at=now,
        retired_at=None,
    )


def unseal_key(stored: StoredKey, sealer: Sealer) -> SigningKey:
    raw = sealer.open(stored.sealed_private_key, stored.kid.encode())
    if raw is None:
        raise RuntimeError(
            f"signing key {stored.kid} cannot be decrypted: "
            "wrong SUUUPRA_IDENTITY_KEY_ENCRYPTION_KEY"
        )
    return SigningKey(stored.kid, Ed25519PrivateKey.from_private_bytes(raw))


def published_keys(keys: Sequence[StoredKey], now: datetime, overlap: timedelta) -> list[StoredKey]:
    """Current key plus retired keys whose tokens may still be alive (retired < overlap ago)."""
    return [k for k in keys if k.retired_at is None or now - k.retired_at < overlap]


def jwks_document(keys: Iterable[StoredKey]) -> dict[str, Any]:
    return {"keys": [json.loads(k.public_jwk) for k in keys]}


def oidc_discovery(issuer: str, jwks_uri: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "grant_types_supported": ["password", "refresh_token"],
        "claims_supported": [
            "iss",
            "aud",
            "sub",
            "tenant",
            "roles",
            "perms",
            "sid",
            "jti",
            "iat",
            "exp",
        ],
    }


@dataclass(frozen=True)
class AccessClaims:
    subject: str
    tenant_id: str
    roles: Sequence[str]
    permissions: Sequence[str]
    session_id: str


def issue_access_token(
    key: SigningKey,
    claims: AccessClaims,
    *,
    issuer: str,
    audience: str,
    now: datetime,
    ttl: timedelta,
) -> tuple[str, datetime]:
    expires = now + ttl
    payload: Mapping[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": claims.subject,
        "tenant": claims.tenant_id,
        "roles": sorted(claims.roles),
        "perms": sorted(claims.permissions),
        "sid": claims.session_id,
        "jti": uuid.uuid4().hex,
        "iat": int(now.timestamp()),
        "exp": int(expires.timestamp()),
    }
    token = jwt.encode(dict(payload), key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
    return token, expires
