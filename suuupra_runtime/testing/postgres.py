"""Throwaway PostgreSQL databases for tests.

Public API:
- `async create_database(server_url, prefix="test") -> str`: a new, uniquely named, empty database
  on the server at `server_url` (any postgresql URL with a superuser or CREATEDB role); returns its
  `postgresql+asyncpg://` URL.
- `async drop_database(database_url)`: drops it, disconnecting any session still attached.
- `async execute_autocommit(url, *statements)`: run statements outside a transaction (DDL such as
  CREATE DATABASE needs that).
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

__all__ = ["create_database", "drop_database", "execute_autocommit"]


def _with_database(url: str, name: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )


async def execute_autocommit(url: str, *statements: str) -> None:
    engine = create_async_engine(
        _with_database(url, make_url(url).database or "postgres"),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
    )
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database(server_url: str, prefix: str = "test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    await execute_autocommit(server_url, f'CREATE DATABASE "{name}"')
    return _with_database(server_url, name)


async def drop_database(database_url: str) -> None:
    name = make_url(database_url).database
    if not name:
        raise ValueError(f"{database_url!r} names no database")
    await execute_autocommit(
        _with_database(database_url, "postgres"), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    )
