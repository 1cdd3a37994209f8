"""Opening identity's sealed tokens (AES-256-GCM: 12-byte nonce || ciphertext || tag, associated
data = the event's user id). The format is identity's (`services/identity/keys.py::Sealer`);
it is restated here because services never import each other."""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class TokenOpener:
    def __init__(self, key_id: str, key: bytes) -> None:
        self.key_id = key_id
        self._aead = AESGCM(key)

    def open(self, key_id: str, sealed: bytes, user_id: str) -> str | None:
        """The raw token, or None for another key id or a ciphertext that does not verify."""
        if key_id != self.key_id or len(sealed) < 13:
            return None
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], user_id.encode()).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError):
            return None
