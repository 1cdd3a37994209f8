# mypy: disable-error-code="import-untyped"
"""Unread counts come from a per-user counter row that triggers keep (migration 0004): it follows
every insert, read and delete, numbers concurrent transactions' items exactly, and starts from
the inbox rows that existed before the migration."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text

from services.notifications import store
from services.notifications.domain import Category
from services.notifications.server import MIGRATIONS
from suuupra_runtime.db import Database, migrate
from suuupra_runtime.testing.polling import eventually
from suuupra_runtime.testing.postgres import create_database, drop_database

TENANT = "unread-tenant"


@pytest.fixture
async def db(postgres_server_url: str) -> AsyncIterator[Database]:
    url = await create_database(postgres_server_url, prefix="notifications_unread")
    database = await Database.connect(url, pool_size=3)
    try:
        await migrate(url, MIGRATIONS)
        yield database
    finally:
        await database.dispose()
        await drop_database(url)


def _rows(user: str, count: int) -> list[store.NewNotification]:
    return [
        store.NewNotification(
            tenant_id=TENANT,
            user_id=user,
            delivery_id=str(uuid.uuid4()),
            kind="notes.shared",
            category=Category.NOTES,
            title=f"t{i}",
            body="b",
            data={},
        )
        for i in range(count)
    ]


async def _store(db: Database, rows: Sequence[store.NewNotification]) -> list[store.InboxItem]:
    async with db.unit_of_work(tenant_id=TENANT) as uow:
        return await store.insert_notifications(uow.session, rows, dt.datetime.now(dt.UTC))


async def _counts(db: Database, user: str) -> tuple[int, int]:
    """(the counter, a count of the user's unread rows)."""
    async with db.sessions() as s:
        counter = await store.unread_count(s, TENANT, user)
        rows = await s.scalar(
            text(
                "SELECT count(*) FROM notifications WHERE tenant_id = :t AND user_id = :u "
                "AND read_at IS NULL"
            ),
            {"t": TENANT, "u": user},
        )
    return counter, int(rows or 0)


async def test_the_counter_follows_inserts_reads_and_deletes(db: Database) -> None:
    assert await _counts(db, "u1") == (0, 0)
    rows = [*_rows("u1", 3), *_rows("u2", 1)]
    items = await _store(db, rows)
    assert [(i.user_id, i.unread_count) for i in items] == [
        ("u1", 1), ("u1", 2), ("u1", 3), ("u2", 1)
    ]  # fmt: skip
    # A delivery's row again stores nothing and counts nothing; a new one is counted.
    again = await _store(db, [replace(rows[0], title="again"), *_rows("u1", 1)])
    assert [(i.title, i.unread_count) for i in again] == [("t0", 4)]
    assert await _counts(db, "u1") == (4, 4)
    now = dt.datetime.now(dt.UTC)
    async with db.unit_of_work(tenant_id=TENANT) as uow:
        assert await store.mark_read(uow.session, TENANT, "u1", [items[0].notification_id], now)
        assert await store.unread_count(uow.session, TENANT, "u1") == 3
    async with db.unit_of_work(tenant_id=TENANT) as uow:  # read again: no change
        await store.mark_read(uow.session, TENANT, "u1", [items[0].notification_id], now)
    assert await _counts(db, "u1") == (3, 3)
    async with db.unit_of_work(tenant_id=TENANT) as uow:
        await uow.session.execute(
            text("UPDATE notifications SET read_at = NULL WHERE notification_id = :n"),
            {"n": items[0].notification_id},
        )  # marked unread again
        await uow.session.execute(
            text("DELETE FROM notifications WHERE notification_id = :n"),
            {"n": items[1].notification_id},
        )
    assert await _counts(db, "u1") == (3, 3)
    async with db.unit_of_work(tenant_id=TENANT) as uow:
        await store.mark_read(uow.session, TENANT, "u1", None, now)
    assert await _counts(db, "u1") == (0, 0)
    assert await _counts(db, "u2") == (1, 1)
    [later] = await _store(db, _rows("u1", 1))
    assert later.unread_count == 1


async def test_concurrent_transactions_number_one_user_s_items_exactly(db: Database) -> None:
    """The second transaction waits for the first's counter row and counts its items too (a
    count of unread rows in its snapshot would number both from 1)."""
    await _store(db, _rows("u1", 1))
    async with db.unit_of_work(tenant_id=TENANT) as first:
        first_items = await store.insert_notifications(
            first.session, _rows("u1", 2), dt.datetime.now(dt.UTC)
        )
        second = asyncio.create_task(_store(db, _rows("u1", 3)))

        async def second_waits_for_the_counter() -> bool:
            async with db.sessions() as s:
                waiting = await s.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"
                    )
                )
            return bool(waiting)

        await eventually(second_waits_for_the_counter)
    second_items = await second
    assert [i.unread_count for i in first_items] == [2, 3]
    assert [i.unread_count for i in second_items] == [4, 5, 6]
    assert await _counts(db, "u1") == (6, 6)


async def test_the_migration_counts_the_unread_rows_already_there(
    postgres_server_url: str, tmp_path: Path
) -> None:
    before = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, before)
    for path in (before / "versions").glob("0004_*.py"):
        path.unlink()
    url = await create_database(postgres_server_url, prefix="notifications_unread")
    database = await Database.connect(url, pool_size=2)
    try:
        await migrate(url, before)
        async with database.unit_of_work(tenant_id=TENANT) as uow:
            for user, read in [("u1", None), ("u1", None), ("u1", "now()"), ("u2", "now()")]:
                await uow.session.execute(
                    text(
                        "INSERT INTO notifications (notification_id, tenant_id, user_id, "
                        "delivery_id, kind, category, title, body, data, created_at, read_at) "
                        "VALUES (gen_random_uuid(), :t, :u, gen_random_uuid(), 'k', 1, '', '', "
                        f"'{{}}', now(), {read or 'NULL'})"
                    ),
                    {"t": TENANT, "u": user},
                )
        await migrate(url, MIGRATIONS)
        assert await _counts(database, "u1") == (2, 2)
        assert await _counts(database, "u2") == (0, 0)
        [item] = await _store(database, _rows("u1", 1))
        assert item.unread_count == 3
    finally:
        await database.dispose()
        await drop_database(url)
