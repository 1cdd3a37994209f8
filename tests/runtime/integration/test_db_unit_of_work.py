"""Database, unit of work, per-service databases and migrations against real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from suuupra_runtime.db import (
    Database,
    ensure_database,
    migrate,
    migrations_applied,
    outbox_table,
)
from suuupra_runtime.testing.postgres import drop_database, execute_autocommit
from tests.runtime.integration.sample_events import NoteCreated

SERVICE_MIGRATIONS = Path(__file__).parent / "service_migrations"


@pytest.fixture
async def db(fresh_database: str) -> AsyncIterator[Database]:
    await migrate(fresh_database, SERVICE_MIGRATIONS)
    database = await Database.connect(fresh_database, pool_size=2)
    yield database
    await database.dispose()


async def test_migrate_creates_runtime_and_service_tables(fresh_database: str) -> None:
    assert not await migrations_applied(fresh_database, SERVICE_MIGRATIONS)
    await migrate(fresh_database, SERVICE_MIGRATIONS)
    assert await migrations_applied(fresh_database, SERVICE_MIGRATIONS)
    database = await Database.connect(fresh_database)
    try:
        async with database.engine.connect() as conn:
            tables = set(
                (
                    await conn.execute(
                        text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                    )
                ).scalars()
            )
            runtime_version = await conn.scalar(
                text("SELECT version_num FROM alembic_version_runtime")
            )
            service_version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    finally:
        await database.dispose()
    assert {"outbox", "inbox", "dead_letters", "idempotency_keys", "notes", "effects"} <= tables
    assert (runtime_version, service_version) == ("runtime_0002", "svc_0001")


async def test_readiness_sees_a_schema_that_is_not_at_this_code_s_head(
    fresh_database: str,
) -> None:
    await migrate(fresh_database, SERVICE_MIGRATIONS)
    database = await Database.connect(fresh_database)
    try:
        assert await migrations_applied(database, SERVICE_MIGRATIONS)
        await execute_autocommit(fresh_database, "UPDATE alembic_version SET version_num = 'old'")
        assert not await migrations_applied(database, SERVICE_MIGRATIONS)
        await execute_autocommit(fresh_database, "DROP TABLE alembic_version_runtime")
        assert not await migrations_applied(database, SERVICE_MIGRATIONS)
    finally:
        await database.dispose()


async def test_concurrent_migrations_apply_once(fresh_database: str) -> None:
    await asyncio.gather(*(migrate(fresh_database, SERVICE_MIGRATIONS) for _ in range(3)))
    assert await migrations_applied(fresh_database, SERVICE_MIGRATIONS)
    # Re-running at head is a no-op.
    await migrate(fresh_database, SERVICE_MIGRATIONS)


async def test_unit_of_work_commits_state_and_outbox_together(db: Database) -> None:
    async with db.unit_of_work(tenant_id="t1") as uow:
        await uow.session.execute(
            text("INSERT INTO notes (id, tenant_id, title) VALUES ('n1', 't1', 'hello')")
        )
        event_id = uow.add_event(NoteCreated(note_id="n1", title="hello"), key="n1")
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(outbox_table))).one()
        notes = await conn.scalar(text("SELECT count(*) FROM notes"))
    assert notes == 1
    assert str(row.id) == event_id
    assert row.subject == "suuupra.eventtest.v1.NoteCreated"
    assert row.event_type == "suuupra.eventtest.v1.NoteCreated"
    assert row.tenant_id == "t1" and row.published_at is None
    assert getattr(NoteCreated.FromString(row.payload), "title") == "hello"  # noqa: B009
    assert row.headers["Suuupra-Event-Id"] == event_id
    assert row.headers["Suuupra-Tenant"] == "t1"
    assert row.headers["Suuupra-Event-Key"] == "n1"
    assert row.headers["Suuupra-Occurred-At"].endswith("Z")


async def test_rolled_back_unit_of_work_leaves_no_state_and_no_events(db: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with db.unit_of_work(tenant_id="t1") as uow:
            await uow.session.execute(
                text("INSERT INTO notes (id, tenant_id, title) VALUES ('n1', 't1', 'x')")
            )
            uow.add_event(NoteCreated(note_id="n1"))
            raise RuntimeError("boom")
    async with db.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM outbox")) == 0
        assert await conn.scalar(text("SELECT count(*) FROM notes")) == 0


async def test_ping_reports_reachability(db: Database) -> None:
    assert await db.ping()
    unreachable = await Database.connect("postgresql://postgres@127.0.0.1:1/none")
    try:
        assert not await unreachable.ping()
    finally:
        await unreachable.dispose()


async def test_ensure_database_creates_owned_database_once(postgres_server_url: str) -> None:
    name = f"svc_ensure_{uuid.uuid4().hex[:8]}"
    try:
        urls = await asyncio.gather(*(ensure_database(postgres_server_url, name) for _ in range(3)))
        assert len(set(urls)) == 1
        url = make_url(urls[0])
        assert (url.username, url.database) == (name, name)
        await migrate(urls[0], SERVICE_MIGRATIONS)
        database = await Database.connect(urls[0])
        try:
            async with database.engine.connect() as conn:
                owner = await conn.scalar(
                    text("SELECT tableowner FROM pg_tables WHERE tablename = 'outbox'")
                )
        finally:
            await database.dispose()
        assert owner == name
        assert await ensure_database(postgres_server_url, name) == urls[0]
    finally:
        await drop_database(
            make_url(postgres_server_url).set(database=name).render_as_string(False)
        )
        await execute_autocommit(postgres_server_url, f'DROP ROLE IF EXISTS "{name}"')


async def test_hot_path_reads_see_committed_rows(db: Database) -> None:
    async with db.unit_of_work(tenant_id="t1") as uow:
        await uow.session.execute(
            text("INSERT INTO notes (id, tenant_id, title) VALUES ('n1', 't1', 'hello')")
        )
    row = await db.fetchrow("SELECT title FROM notes WHERE id = $1 AND tenant_id = $2", "n1", "t1")
    assert row is not None and row["title"] == "hello"
    assert await db.fetchrow("SELECT title FROM notes WHERE id = $1", "missing") is None
    assert [r["id"] for r in await db.fetch("SELECT id FROM notes ORDER BY id")] == ["n1"]


async def test_after_commit_callbacks_run_only_after_a_commit(db: Database) -> None:
    ran: list[str] = []
    async with db.unit_of_work(tenant_id="t1") as uow:
        uow.after_commit(lambda: ran.append("first"))

        def failing() -> None:
            raise ZeroDivisionError

        uow.after_commit(failing)  # a failing callback does not stop the next one
        uow.after_commit(lambda: ran.append("second"))
        assert ran == []  # not before the commit
    assert ran == ["first", "second"]

    with pytest.raises(RuntimeError):
        async with db.unit_of_work(tenant_id="t1") as uow:
            uow.after_commit(lambda: ran.append("rolled back"))
            raise RuntimeError("boom")
    assert ran == ["first", "second"]
