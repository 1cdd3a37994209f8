"""`ReadPool`: a small raw asyncpg pool for a service's hot authenticated reads.

    reads = await ReadPool.connect(database_url, max_size=10)   # any postgres URL form
    row = await reads.fetchrow("SELECT ... WHERE tenant_id = $1 AND id = $2", tenant, id)
    rows = await reads.fetch("SELECT ...", ...)
    await reads.close()

Why beside `Database`: SQLAlchemy's session, pool pre-ping and row processing cost ~4x a raw
asyncpg point select (`Database.fetchrow` still pays the pre-ping round trip). Per-request reads
that every authenticated call makes (identity's "my user", profiles' "a profile") need none of
that. Reads only: one autocommit statement per call; writes belong in a `UnitOfWork`.
A dropped connection surfaces as an error on that one call; asyncpg replaces it in the pool.
"""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from suuupra_runtime.db import normalize_url

__all__ = ["ReadPool", "asyncpg_dsn"]


def asyncpg_dsn(database_url: str) -> str:
    """`postgresql+asyncpg://…` (or any postgres URL) → the plain DSN asyncpg accepts."""
    url = make_url(normalize_url(database_url)).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class ReadPool:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, database_url: str, *, min_size: int = 1, max_size: int = 10) -> ReadPool:
        pool = await asyncpg.create_pool(
            asyncpg_dsn(database_url), min_size=min_size, max_size=max_size
        )
        return cls(pool)

    async def fetchrow(self, query: str, *args: Any) -> Any | None:
        return await self._pool.fetchrow(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self._pool.fetch(query, *args)
        return rows

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._pool.fetchval(query, *args)

    async def close(self) -> None:
        await self._pool.close()
