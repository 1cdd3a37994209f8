"""The signing-key ring: the current Ed25519 key and the published JWKS, loaded from the
database and shared by every replica (rotation, overlap, reload on an unknown kid)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence

from services.identity import domain, store
from services.identity.config import IdentityConfig
from services.identity.keys import (
    Sealer,
    SigningKey,
    StoredKey,
    jwks_document,
    new_stored_key,
    oidc_discovery,
    published_keys,
    unseal_key,
)
from suuupra_runtime.db import Database, UnitOfWork
from suuupra_runtime.errors import Unavailable

log = logging.getLogger(__name__)


class KeyRing:
    """The current signing key and the published JWKS, refreshed from the database so every
    replica picks up a rotation within `refresh_interval`."""

    def __init__(self, db: Database, sealer: Sealer, config: IdentityConfig) -> None:
        self._db = db
        self._sealer = sealer
        self._config = config
        self._current: SigningKey | None = None
        self._jwks: bytes = b'{"keys": []}'
        self._jwks_doc: dict[str, object] = {"keys": []}
        self._loaded_at = float("-inf")

    @property
    def current(self) -> SigningKey:
        if self._current is None:
            raise Unavailable("signing keys not loaded yet", retry_after_seconds=1.0)
        return self._current

    @property
    def jwks_json(self) -> bytes:
        return self._jwks

    async def fetch(self) -> dict[str, object]:
        """The JwksProvider protocol, for verifying our own tokens without an HTTP hop.

        The verifier calls this when a token names a kid it does not know, e.g. one another
        replica just rotated to: reload from the database then, at most once per second so
        bogus kids cannot turn into database load.
        """
        now = time.monotonic()
        if now - self._loaded_at >= 1.0:
            self._loaded_at = now
            try:
                await self.load()
            except Exception:  # keep serving with the keys we have
                log.exception("reloading signing keys failed")
        return self._jwks_doc

    def discovery_json(self) -> bytes:
        doc = oidc_discovery(
            self._config.issuer, f"{self._config.public_url}/.well-known/jwks.json"
        )
        return json.dumps(doc).encode()

    async def load(self) -> None:
        async with self._db.engine.connect() as conn:
            keys = await store.all_signing_keys(conn)
        if not any(k.retired_at is None for k in keys):
            await self.rotate()
            return
        self._install(keys)

    async def rotate(self) -> str:
        """Make a new key current (or adopt the one another replica just created at start)."""
        async with self._db.unit_of_work(tenant_id=None) as uow:
            kid = await self.rotate_in(uow, adopt_existing=self._current is None)
        await self.reload()
        return kid

    async def rotate_in(self, uow: UnitOfWork, *, adopt_existing: bool = False) -> str:
        """The database half of a rotation, inside the caller's transaction; call `reload()`
        after it commits."""
        await store.lock_signing_keys(uow.session)
        now = domain.utcnow()
        existing = await store.all_signing_keys(uow.session)
        fresh = [k for k in existing if k.retired_at is None]
        # Two replicas starting at once: the second sees the first's key and keeps it.
        if fresh and adopt_existing:
            return fresh[0].kid
        key = new_stored_key(self._sealer, now)
        await store.add_signing_key(uow.session, key, now)
        return key.kid

    async def reload(self) -> None:
        async with self._db.engine.connect() as conn:
            self._install(await store.all_signing_keys(conn))

    def _install(self, keys: Sequence[StoredKey]) -> None:
        now = domain.utcnow()
        current = next(k for k in keys if k.retired_at is None)
        if self._current is None or self._current.kid != current.kid:
            self._current = unseal_key(current, self._sealer)
        doc = jwks_document(published_keys(keys, now, self._config.key_overlap))
        self._jwks_doc = doc
        self._jwks = json.dumps(doc).encode()

    async def refresh_forever(self, interval: float = 30.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.load()
            except Exception:  # keep serving with the keys we have; retry next round
                log.exception("reloading signing keys failed")
