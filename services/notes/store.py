# ruff: noqa: S608 (SQL text is assembled only from this module's constants; values are $n params)
"""SQL for notes, shares and cohort membership, on raw asyncpg connections.

Reads run on the service's `ReadPool` (raw asyncpg, autocommit); writes run on the raw
connection of the request's unit of work (`writing`), so they commit with its outbox events and
idempotency record. One SQL dialect ($n parameters) for both. Every query is tenant-scoped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.notes import domain
from suuupra_runtime.db import UnitOfWork

CHANGES_CHANNEL = "suuupra_notes_changes"  # NOTIFY channel the watch feed LISTENs on

Conn = Any  # asyncpg.Connection (asyncpg ships no type information)

_NOTE_COLUMNS = (
    "n.note_id, n.tenant_id, n.owner_id, n.title, n.body, n.tags, n.course_id, n.lesson_id, "
    "n.video_offset_ms, n.version, n.created_at, n.updated_at"
)

# The caller's ($3) strongest share of note n: direct, or through a cohort they are active in.
_BEST_SHARE = """(
    SELECT max(s.permission) FROM note_shares s
    WHERE s.note_id = n.note_id
      AND (s.user_id = $3 OR s.batch_id IN (
            SELECT m.batch_id FROM batch_members m
            WHERE m.tenant_id = n.tenant_id AND m.user_id = $3 AND m.active))
)"""


# One note ($2) of a tenant ($1) with the caller's ($3) strongest share: GetNote's one query.
NOTE_WITH_ACCESS_SQL = (
    f"SELECT {_NOTE_COLUMNS}, {_BEST_SHARE} AS best_share FROM notes n "
    "WHERE n.tenant_id = $1 AND n.note_id = $2"
)


@dataclass(frozen=True)
class NoteRow:
    note: domain.Note
    best_share: int | None


@dataclass(frozen=True)
class ShareRow:
    share_id: str
    note_id: str
    user_id: str
    batch_id: str
    permission: domain.Permission
    created_by: str
    created_at: datetime


async def writing(uow: UnitOfWork) -> Conn:
    """The raw asyncpg connection inside the unit of work's transaction."""
    conn = await uow.session.connection()
    raw = await conn.get_raw_connection()
    return raw.driver_connection


def note_from(row: Any) -> domain.Note:
    offset = row["video_offset_ms"]
    return domain.Note(
        note_id=str(row["note_id"]),
        tenant_id=row["tenant_id"],
        owner_id=row["owner_id"],
        content=domain.NoteContent(
            title=row["title"],
            body=row["body"],
            tags=tuple(row["tags"]),
            attachment=domain.Attachment(
                course_id=row["course_id"] or "",
                lesson_id=row["lesson_id"] or "",
                video_offset_ms=None if offset is None else int(offset),
            ),
        ),
        version=int(row["version"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _share_from(row: Any) -> ShareRow:
    return ShareRow(
        share_id=str(row["share_id"]),
        note_id=str(row["note_id"]),
        user_id=row["user_id"] or "",
        batch_id=row["batch_id"] or "",
        permission=domain.Permission(row["permission"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
    )


def _uuid(value: str) -> uuid.UUID | None:
    """Ids arrive validated as UUIDs; anything else simply matches no row."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# --- notes --------------------------------------------------------------------------------


async def note_with_access(
    conn: Conn, tenant_id: str, note_id: str, user_id: str, *, for_update: bool = False
) -> NoteRow | None:
    key = _uuid(note_id)
    if key is None:
        return None
    sql = NOTE_WITH_ACCESS_SQL + (" FOR UPDATE OF n" if for_update else "")
    row = await conn.fetchrow(
        sql,
        tenant_id,
        key,
        user_id,
    )
    if row is None:
        return None
    best = row["best_share"]
    return NoteRow(note_from(row), None if best is None else int(best))


async def insert_note(conn: Conn, note: domain.Note) -> None:
    c = note.content
    await conn.execute(
        "INSERT INTO notes (note_id, tenant_id, owner_id, title, body, tags, course_id, "
        "lesson_id, video_offset_ms, version, created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        uuid.UUID(note.note_id),
        note.tenant_id,
        note.owner_id,
        c.title,
        c.body,
        list(c.tags),
        c.attachment.course_id or None,
        c.attachment.lesson_id or None,
        c.attachment.video_offset_ms,
        note.version,
        note.created_at,
        note.updated_at,
    )


async def update_note(conn: Conn, note: domain.Note) -> None:
    c = note.content
    await conn.execute(
        "UPDATE notes SET title = $3, body = $4, tags = $5, course_id = $6, lesson_id = $7, "
        "video_offset_ms = $8, version = $9, updated_at = $10 "
        "WHERE tenant_id = $1 AND note_id = $2",
        note.tenant_id,
        uuid.UUID(note.note_id),
        c.title,
        c.body,
        list(c.tags),
        c.attachment.course_id or None,
        c.attachment.lesson_id or None,
        c.attachment.video_offset_ms,
        note.version,
        note.updated_at,
    )


async def delete_note(conn: Conn, tenant_id: str, note_id: str) -> None:
    await conn.execute(
        "DELETE FROM notes WHERE tenant_id = $1 AND note_id = $2", tenant_id, uuid.UUID(note_id)
    )


@dataclass(frozen=True)
class NoteFilter:
    tag: str
    course_id: str
    lesson_id: str


async def list_own_notes(
    conn: Conn,
    *,
    tenant_id: str,
    owner_id: str,
    filters: NoteFilter,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[domain.Note]:
    clauses = ["n.tenant_id = $1", "n.owner_id = $2"]
    args: list[Any] = [tenant_id, owner_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if filters.tag:
        clauses.append(f"n.tags @> ARRAY[{arg(filters.tag.lower())}]::text[]")
    if filters.course_id:
        clauses.append(f"n.course_id = {arg(filters.course_id)}")
    if filters.lesson_id:
        clauses.append(f"n.lesson_id = {arg(filters.lesson_id)}")
    if after is not None:
        clauses.append(f"(n.created_at, n.note_id) < ({arg(after[0])}, {arg(_uuid(after[1]))})")
    rows = await conn.fetch(
        f"SELECT {_NOTE_COLUMNS} FROM notes n WHERE {' AND '.join(clauses)} "
        f"ORDER BY n.created_at DESC, n.note_id DESC LIMIT {arg(limit)}",
        *args,
    )
    return [note_from(r) for r in rows]


async def list_shared_notes(
    conn: Conn, *, tenant_id: str, user_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[NoteRow]:
    args: list[Any] = [tenant_id, limit, user_id]
    keyset = ""
    if after is not None:
        keyset = "AND (n.created_at, n.note_id) < ($4, $5)"
        args += [after[0], _uuid(after[1])]
    rows = await conn.fetch(
        f"""
        SELECT {_NOTE_COLUMNS}, best.permission AS best_share
        FROM notes n
        JOIN (
            SELECT s.note_id, max(s.permission) AS permission FROM note_shares s
            WHERE s.tenant_id = $1
              AND (s.user_id = $3 OR s.batch_id IN (
                    SELECT m.batch_id FROM batch_members m
                    WHERE m.tenant_id = $1 AND m.user_id = $3 AND m.active))
            GROUP BY s.note_id
        ) best ON best.note_id = n.note_id
        WHERE n.tenant_id = $1 AND n.owner_id <> $3 {keyset}
        ORDER BY n.created_at DESC, n.note_id DESC
        LIMIT $2
        """,
        *args,
    )
    return [NoteRow(note_from(r), int(r["best_share"])) for r in rows]


@dataclass(frozen=True)
class SearchHit:
    note: domain.Note
    snippet: str
    rank: float


async def search_own_notes(
    conn: Conn, *, tenant_id: str, owner_id: str, query: str, offset: int, limit: int
) -> list[SearchHit]:
    rows = await conn.fetch(
        f"""
        SELECT {_NOTE_COLUMNS}, ts_rank_cd(n.search, q) AS rank,
               ts_headline('english', n.body, q,
                           'StartSel=**, StopSel=**, MaxWords=30, MinWords=8') AS snippet
        FROM notes n, websearch_to_tsquery('english', $3) q
        WHERE n.tenant_id = $1 AND n.owner_id = $2 AND n.search @@ q
        ORDER BY rank DESC, n.created_at DESC, n.note_id DESC
        LIMIT $4 OFFSET $5
        """,
        tenant_id,
        owner_id,
        query,
        limit,
        offset,
    )
    return [SearchHit(note_from(r), r["snippet"] or "", float(r["rank"])) for r in rows]


# --- shares -------------------------------------------------------------------------------

_SHARE_COLUMNS = "share_id, note_id, user_id, batch_id, permission, created_by, created_at"


async def find_share(
    conn: Conn, tenant_id: str, note_id: str, *, user_id: str = "", batch_id: str = ""
) -> ShareRow | None:
    column, value = ("user_id", user_id) if user_id else ("batch_id", batch_id)
    row = await conn.fetchrow(
        f"SELECT {_SHARE_COLUMNS} FROM note_shares "
        f"WHERE tenant_id = $1 AND note_id = $2 AND {column} = $3",
        tenant_id,
        uuid.UUID(note_id),
        value,
    )
    return None if row is None else _share_from(row)


async def insert_share(conn: Conn, tenant_id: str, share: ShareRow) -> None:
    await conn.execute(
        f"INSERT INTO note_shares (tenant_id, {_SHARE_COLUMNS}) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        tenant_id,
        uuid.UUID(share.share_id),
        uuid.UUID(share.note_id),
        share.user_id or None,
        share.batch_id or None,
        int(share.permission),
        share.created_by,
        share.created_at,
    )


async def set_share_permission(
    conn: Conn, tenant_id: str, share_id: str, permission: domain.Permission
) -> None:
    await conn.execute(
        "UPDATE note_shares SET permission = $3 WHERE tenant_id = $1 AND share_id = $2",
        tenant_id,
        uuid.UUID(share_id),
        int(permission),
    )


async def delete_share(conn: Conn, tenant_id: str, note_id: str, share_id: str) -> bool:
    key = _uuid(share_id)
    if key is None:
        return False
    deleted = await conn.fetchval(
        "DELETE FROM note_shares WHERE tenant_id = $1 AND note_id = $2 AND share_id = $3 "
        "RETURNING share_id",
        tenant_id,
        uuid.UUID(note_id),
        key,
    )
    return deleted is not None


async def list_shares(conn: Conn, tenant_id: str, note_id: str) -> list[ShareRow]:
    rows = await conn.fetch(
        f"SELECT {_SHARE_COLUMNS} FROM note_shares WHERE tenant_id = $1 AND note_id = $2 "
        "ORDER BY created_at, share_id",
        tenant_id,
        uuid.UUID(note_id),
    )
    return [_share_from(r) for r in rows]


# --- cohorts ------------------------------------------------------------------------------


async def active_members(conn: Conn, tenant_id: str, batch_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT user_id FROM batch_members WHERE tenant_id = $1 AND batch_id = $2 AND active "
        "ORDER BY user_id",
        tenant_id,
        batch_id,
    )
    return [r["user_id"] for r in rows]


async def apply_membership(conn: Conn, change: domain.MembershipChange) -> bool:
    """Upsert the member's state unless a newer event was applied already; True if applied."""
    applied = await conn.fetchval(
        """
        INSERT INTO batch_members AS m (tenant_id, batch_id, user_id, course_id, active, as_of)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (tenant_id, batch_id, user_id) DO UPDATE
            SET active = EXCLUDED.active, as_of = EXCLUDED.as_of, course_id = EXCLUDED.course_id
            WHERE m.as_of <= EXCLUDED.as_of
        RETURNING 1
        """,
        change.tenant_id,
        change.batch_id,
        change.user_id,
        change.course_id,
        change.active,
        change.as_of,
    )
    return applied is not None


# --- change notifications -----------------------------------------------------------------


async def notify_note_changed(conn: Conn, tenant_id: str, note_id: str) -> None:
    """Tell every replica's watchers of the note to re-read it (delivered at commit)."""
    await _notify(conn, {"t": tenant_id, "n": note_id})


async def notify_access_changed(conn: Conn, tenant_id: str, user_ids: Sequence[str]) -> None:
    """Tell watchers held by these users to re-check their access (cohort membership moved)."""
    for user_id in user_ids:
        await _notify(conn, {"t": tenant_id, "u": user_id})


async def _notify(conn: Conn, payload: dict[str, str]) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", CHANGES_CHANNEL, json.dumps(payload))
