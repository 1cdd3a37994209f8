"""Short-lived HMAC-signed download tokens for browsers (`/files/d/<token>`).

A token is `<payload>.<signature>`, both base64url without padding: the payload is compact JSON
(tenant, file, version, variant, expiry), the signature HMAC-SHA256 over the payload bytes with
the service's link key. Pure: the clock is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

PATH_PREFIX = "/files/d/"


@dataclass(frozen=True)
class LinkClaims:
    tenant_id: str
    file_id: str
    version: int
    variant: int
    expires_at: int  # unix seconds


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the download link key must be at least 32 bytes")
        self._key = key

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def token(self, claims: LinkClaims) -> str:
        payload = json.dumps(
            [claims.tenant_id, claims.file_id, claims.version, claims.variant, claims.expires_at],
            separators=(",", ":"),
        ).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def verify(self, token: str, now: float) -> LinkClaims | None:
        """The claims of a genuine, unexpired token; None for anything else."""
        payload_text, sep, signature_text = token.partition(".")
        if not sep:
            return None
        try:
            payload = _unb64(payload_text)
            signature = _unb64(signature_text)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            tenant_id, file_id, version, variant, expires_at = json.loads(payload)
        except (ValueError, TypeError):
            return None
        if not isinstance(expires_at, int) or expires_at <= now:
            return None
        return LinkClaims(str(tenant_id), str(file_id), int(version), int(variant), expires_at)
