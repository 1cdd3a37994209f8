"""`ReadPool` against real PostgreSQL: any postgres URL form, $n parameters, uuid/jsonb values."""

from __future__ import annotations

import uuid

import pytest

from suuupra_runtime.read_pool import ReadPool, asyncpg_dsn


def test_dsn_drops_the_sqlalchemy_driver_and_keeps_credentials() -> None:
    assert asyncpg_dsn("postgresql+asyncpg://u:p@h:5/db") == "postgresql://u:p@h:5/db"
    assert asyncpg_dsn("postgres://u:p@h:5/db") == "postgresql://u:p@h:5/db"
    with pytest.raises(ValueError):
        asyncpg_dsn("mysql://u@h/db")


async def test_reads_rows_values_and_none(fresh_database: str) -> None:
    reads = await ReadPool.connect(fresh_database, max_size=2)
    try:
        ident = uuid.uuid4()
        row = await reads.fetchrow("SELECT $1::uuid AS id, '{\"a\": 1}'::jsonb AS doc", str(ident))
        assert row is not None and row["id"] == ident and row["doc"] == '{"a": 1}'
        assert await reads.fetchrow("SELECT 1 WHERE false") is None
        rows = await reads.fetch("SELECT g FROM generate_series(1, $1::int) g", 3)
        assert [r["g"] for r in rows] == [1, 2, 3]
        assert await reads.fetchval("SELECT $1::text || 'b'", "a") == "ab"
    finally:
        await reads.close()
