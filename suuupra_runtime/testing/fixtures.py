"""pytest plugin with the platform's shared fixtures (registered by the root conftest.py).

Fixtures (servers start lazily: only when a test asks for them, so unit runs do no I/O):
- `postgres_server_url` (session): SQLAlchemy URL (`postgresql+asyncpg://`, superuser) of a
  PostgreSQL server. `DATABASE_URL` when set; otherwise an `EmbeddedPostgres` in a temp dir,
  started once per session and stopped at its end.
- `nats_url` (session): `NATS_URL` when set; otherwise an `EmbeddedNats` for the session.
- `fresh_database` (function): a new, uniquely named empty database on `postgres_server_url`;
  yields its `postgresql+asyncpg://` URL and drops it afterwards.
- `fresh_nats_url` (function): a NATS server with no streams: a brand-new `EmbeddedNats`
  (≈ 40 ms) unless `NATS_URL` is set, in which case every stream on that server is deleted first
  (an external `NATS_URL` given to the tests must therefore be a test-only server).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from suuupra_runtime.infra import EmbeddedNats, EmbeddedPostgres, free_port
from suuupra_runtime.testing.nats import delete_all_streams


def _with_asyncpg_driver(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url!r}")


@contextlib.contextmanager
def _server_dir(kind: str) -> Iterator[Path]:
    # Not pytest's tmp_path: concurrent pytest runs of the same user prune each other's old
    # basetemp directories, which would delete a live server's data under it.
    with tempfile.TemporaryDirectory(prefix=f"suuupra-test-{kind}-") as directory:
        yield Path(directory)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    external = os.environ.get("DATABASE_URL")
    if external:
        yield _with_asyncpg_driver(external)
        return
    with _server_dir("pg") as directory, EmbeddedPostgres(directory / "data", free_port()) as pg:
        yield pg.url


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    external = os.environ.get("NATS_URL")
    if external:
        yield external
        return
    with (
        _server_dir("nats") as directory,
        EmbeddedNats(directory / "js", free_port(), free_port()) as server,
    ):
        yield server.url


@pytest.fixture
async def fresh_database(postgres_server_url: str) -> AsyncIterator[str]:
    # Imported here so loading this plugin never needs SQLAlchemy's asyncio extra (greenlet).
    from suuupra_runtime.testing.postgres import create_database, drop_database

    url = await create_database(postgres_server_url)
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
async def fresh_nats_url() -> AsyncIterator[str]:
    external = os.environ.get("NATS_URL")
    if external:
        await delete_all_streams(external)
        yield external
        return
    with (
        _server_dir("nats") as directory,
        EmbeddedNats(directory / "js", free_port(), free_port()) as server,
    ):
        yield server.url
