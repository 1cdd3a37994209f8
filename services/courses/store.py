# ruff: noqa: S608 (SQL is built from this module's own column-list constants, never from input)
"""SQL for the courses database: rows ⇄ domain objects. No rules live here.

Writes run on the request's `UnitOfWork` session; the catalog (the hot read path) runs as one
statement on a pooled asyncpg connection (`Database.fetch`). Every query names the tenant.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.courses import domain
from services.courses.domain import (
    Batch,
    BatchState,
    Content,
    Course,
    CourseState,
    Department,
    Enrollment,
    Role,
    Seats,
    Status,
)

__all__ = ["IntegrityError"]

# ---------------------------------------------------------------------------------------------
# Row mapping


def _s(value: Any) -> str:
    return str(value) if value is not None else ""


def department_of(row: Any) -> Department:
    return Department(
        department_id=str(row.department_id),
        tenant_id=str(row.tenant_id),
        code=row.code,
        name=row.name,
        created_at=row.created_at,
    )


COURSE_COLUMNS = (
    "course_id, tenant_id, code, title, description, language, tags, department_id, owner_ids, "
    "state, published_version, row_version, created_at, updated_at"
)


def course_of(row: Any) -> Course:
    get = row.__getitem__ if not hasattr(row, "_mapping") else row._mapping.__getitem__
    return Course(
        course_id=str(get("course_id")),
        tenant_id=str(get("tenant_id")),
        code=get("code"),
        title=get("title"),
        description=get("description"),
        language=get("language"),
        tags=tuple(get("tags") or ()),
        department_id=str(get("department_id")) if get("department_id") else None,
        owner_ids=tuple(str(o) for o in get("owner_ids") or ()),
        state=CourseState(get("state")),
        published_version=get("published_version"),
        row_version=get("row_version"),
        created_at=get("created_at"),
        updated_at=get("updated_at"),
    )


BATCH_COLUMNS = (
    "batch_id, tenant_id, course_id, name, capacity, start_at, end_at, schedule, state, created_at"
)


def batch_of(row: Any) -> Batch:
    return Batch(
        batch_id=str(row.batch_id),
        tenant_id=str(row.tenant_id),
        course_id=str(row.course_id),
        name=row.name,
        capacity=row.capacity,
        start_at=row.start_at,
        end_at=row.end_at,
        schedule=row.schedule,
        state=BatchState(row.state),
        created_at=row.created_at,
    )


ENROLLMENT_COLUMNS = (
    "enrollment_id, tenant_id, course_id, batch_id, section_id, user_id, role, status, seq, "
    "created_at, updated_at"
)


def enrollment_of(row: Any) -> Enrollment:
    return Enrollment(
        enrollment_id=str(row.enrollment_id),
        tenant_id=str(row.tenant_id),
        course_id=str(row.course_id),
        batch_id=str(row.batch_id),
        section_id=str(row.section_id) if row.section_id else None,
        user_id=str(row.user_id),
        role=Role(row.role),
        status=Status(row.status),
        seq=row.seq,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# ---------------------------------------------------------------------------------------------
# Departments


async def insert_department(session: AsyncSession, d: Department) -> None:
    await session.execute(
        text(
            "INSERT INTO departments (department_id, tenant_id, code, name, created_at) "
            "VALUES (:id, :tenant, :code, :name, :at)"
        ),
        {"id": d.department_id, "tenant": d.tenant_id, "code": d.code, "name": d.name,
         "at": d.created_at},
    )  # fmt: skip


async def list_departments(session: AsyncSession, tenant_id: str) -> list[Department]:
    rows = await session.execute(
        text("SELECT * FROM departments WHERE tenant_id = :tenant ORDER BY code"),
        {"tenant": tenant_id},
    )
    return [department_of(r) for r in rows]


async def department_exists(session: AsyncSession, tenant_id: str, department_id: str) -> bool:
    found = await session.scalar(
        text("SELECT 1 FROM departments WHERE tenant_id = :tenant AND department_id = :id"),
        {"tenant": tenant_id, "id": department_id},
    )
    return found is not None


# ---------------------------------------------------------------------------------------------
# Courses and versions


async def insert_course(session: AsyncSession, c: Course) -> None:
    await session.execute(
        text(
            "INSERT INTO courses (course_id, tenant_id, code, title, description, language, tags, "
            "department_id, owner_ids, state, published_version, row_version, created_at, "
            "updated_at) VALUES (:id, :tenant, :code, :title, :description, :language, :tags, "
            ":department, :owners, :state, 0, 1, :at, :at)"
        ),
        {
            "id": c.course_id, "tenant": c.tenant_id, "code": c.code, "title": c.title,
            "description": c.description, "language": c.language, "tags": list(c.tags),
            "department": c.department_id, "owners": list(c.owner_ids), "state": c.state.value,
            "at": c.created_at,
        },
    )  # fmt: skip


async def get_course(
    session: AsyncSession, tenant_id: str, course_id: str, *, lock: bool = False
) -> Course | None:
    row = (
        await session.execute(
            text(
                f"SELECT {COURSE_COLUMNS} FROM courses WHERE tenant_id = :tenant "
                f"AND course_id = :id{' FOR UPDATE' if lock else ''}"
            ),
            {"tenant": tenant_id, "id": course_id},
        )
    ).first()
    return course_of(row) if row is not None else None


async def save_course(session: AsyncSession, c: Course) -> None:
    """Write metadata and state; the caller bumped `row_version` (the etag)."""
    await session.execute(
        text(
            "UPDATE courses SET title = :title, description = :description, "
            "language = :language, tags = :tags, department_id = :department, owner_ids = :owners, "
            "state = :state, published_version = :published, row_version = :rv, "
            "updated_at = :at WHERE course_id = :id AND tenant_id = :tenant"
        ),
        {
            "id": c.course_id, "tenant": c.tenant_id, "title": c.title,
            "description": c.description, "language": c.language, "tags": list(c.tags),
            "department": c.department_id, "owners": list(c.owner_ids), "state": c.state.value,
            "published": c.published_version, "rv": c.row_version, "at": c.updated_at,
        },
    )  # fmt: skip


async def get_draft(session: AsyncSession, course_id: str) -> Content:
    doc = await session.scalar(
        text("SELECT draft FROM courses WHERE course_id = :id"), {"id": course_id}
    )
    return domain.content_from_json(doc)


async def save_draft(session: AsyncSession, course_id: str, content: Content, at: datetime) -> None:
    await session.execute(
        text(
            "UPDATE courses SET draft = CAST(:doc AS jsonb), row_version = row_version + 1, "
            "updated_at = :at WHERE course_id = :id"
        ),
        {"id": course_id, "doc": json.dumps(domain.content_to_json(content)), "at": at},
    )


async def insert_version(
    session: AsyncSession,
    course: Course,
    *,
    version: int,
    content: Content,
    published_by: str | None,
    at: datetime,
) -> None:
    await session.execute(
        text(
            "INSERT INTO course_versions (course_id, version, tenant_id, title, content, "
            "lesson_count, published_by, published_at) VALUES (:id, :version, :tenant, :title, "
            "CAST(:doc AS jsonb), :lessons, :by, :at)"
        ),
        {
            "id": course.course_id, "version": version, "tenant": course.tenant_id,
            "title": course.title, "doc": json.dumps(domain.content_to_json(content)),
            "lessons": len(content.lessons()), "by": published_by, "at": at,
        },
    )  # fmt: skip


async def get_version(
    session: AsyncSession, tenant_id: str, course_id: str, version: int
) -> tuple[int, Content] | None:
    """One version's content, `version` 0 meaning the latest published one.

    One statement reads both the course's pointer and the version row, so a concurrent publish
    yields either the old or the new version, whole.
    """
    row = (
        await session.execute(
            text(
                "SELECT v.version, v.content FROM course_versions v JOIN courses c "
                "ON c.course_id = v.course_id WHERE c.tenant_id = :tenant "
                "AND c.course_id = :id AND v.version = "
                "CASE WHEN :version = 0 THEN c.published_version ELSE :version END"
            ),
            {"tenant": tenant_id, "id": course_id, "version": version},
        )
    ).first()
    if row is None:
        return None
    return row.version, domain.content_from_json(row.content)


async def list_versions(session: AsyncSession, tenant_id: str, course_id: str) -> list[Any]:
    rows = await session.execute(
        text(
            "SELECT course_id, version, title, published_by, published_at, lesson_count "
            "FROM course_versions WHERE tenant_id = :tenant AND course_id = :id "
            "ORDER BY version DESC"
        ),
        {"tenant": tenant_id, "id": course_id},
    )
    return list(rows)


async def staff_roles(
    session: AsyncSession, tenant_id: str, course_id: str, user_id: str | None
) -> set[Role]:
    """The user's staff roles (instructor, TA) in any batch of the course."""
    if not user_id:
        return set()
    rows = await session.execute(
        text(
            "SELECT DISTINCT role FROM enrollments WHERE tenant_id = :tenant AND course_id = :id "
            "AND user_id = :user AND role IN ('instructor', 'teaching_assistant') "
            "AND status IN ('active', 'completed')"
        ),
        {"tenant": tenant_id, "id": course_id, "user": user_id},
    )
    return {Role(r.role) for r in rows}


class Fetcher(Protocol):
    """Runs one read statement ($1 parameters): `ReadPool` in the service, `Database` too."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


class CatalogReads:
    """The catalog listing on raw asyncpg: the service's hottest read (bench/courses_catalog)."""

    SQL = (
        f"SELECT {COURSE_COLUMNS} FROM courses WHERE tenant_id = $1 "
        "AND ($2::boolean OR state = 'published') "
        "AND ($3::uuid IS NULL OR department_id = $3) "
        "AND ($4::text IS NULL OR $4 = ANY (tags)) "
        "AND ($5::text IS NULL OR language = $5) "
        "AND ($6::text IS NULL OR code ILIKE $6 OR title ILIKE $6 OR description ILIKE $6) "
        "AND ($7::text IS NULL OR code > $7) "
        "AND ($8::uuid IS NULL OR $8 = ANY (owner_ids) OR course_id IN ("
        "  SELECT course_id FROM enrollments WHERE tenant_id = $1 AND user_id = $8 "
        "  AND role = 'instructor' AND status IN ('active', 'completed'))) "
        "ORDER BY code LIMIT $9"
    )

    def __init__(self, reads: Fetcher) -> None:
        self.reads = reads

    async def list(
        self,
        tenant_id: str,
        *,
        include_all_states: bool,
        department_id: str | None,
        tag: str | None,
        language: str | None,
        pattern: str | None,
        after_code: str | None,
        managed_by: str | None,
        limit: int,
    ) -> list[Course]:
        rows = await self.reads.fetch(
            self.SQL, tenant_id, include_all_states, department_id, tag, language, pattern,
            after_code, managed_by, limit,
        )  # fmt: skip
        return [course_of(r) for r in rows]


# ---------------------------------------------------------------------------------------------
# Batches and sections


async def insert_batch(session: AsyncSession, b: Batch) -> None:
    await session.execute(
        text(
            "INSERT INTO batches (batch_id, tenant_id, course_id, name, capacity, start_at, "
            "end_at, schedule, state, created_at) VALUES (:id, :tenant, :course, :name, "
            ":capacity, :start, :end, :schedule, :state, :at)"
        ),
        {
            "id": b.batch_id, "tenant": b.tenant_id, "course": b.course_id, "name": b.name,
            "capacity": b.capacity, "start": b.start_at, "end": b.end_at, "schedule": b.schedule,
            "state": b.state.value, "at": b.created_at,
        },
    )  # fmt: skip


async def get_batch(
    session: AsyncSession, tenant_id: str, batch_id: str, *, lock: bool = False
) -> Batch | None:
    """`lock` takes the batch's row lock: every seat decision of a batch happens under it."""
    row = (
        await session.execute(
            text(
                f"SELECT {BATCH_COLUMNS} FROM batches WHERE tenant_id = :tenant "
                f"AND batch_id = :id{' FOR UPDATE' if lock else ''}"
            ),
            {"tenant": tenant_id, "id": batch_id},
        )
    ).first()
    return batch_of(row) if row is not None else None


async def list_batches(session: AsyncSession, tenant_id: str, course_id: str) -> list[Batch]:
    rows = await session.execute(
        text(
            f"SELECT {BATCH_COLUMNS} FROM batches WHERE tenant_id = :tenant AND course_id = :id "
            "ORDER BY start_at NULLS LAST, created_at"
        ),
        {"tenant": tenant_id, "id": course_id},
    )
    return [batch_of(r) for r in rows]


async def set_batch_state(session: AsyncSession, batch: Batch) -> None:
    await session.execute(
        text("UPDATE batches SET state = :state WHERE batch_id = :id"),
        {"id": batch.batch_id, "state": batch.state.value},
    )


async def insert_section(
    session: AsyncSession, section_id: str, batch: Batch, name: str, at: datetime
) -> None:
    await session.execute(
        text(
            "INSERT INTO sections (section_id, tenant_id, batch_id, name, created_at) "
            "VALUES (:id, :tenant, :batch, :name, :at)"
        ),
        {"id": section_id, "tenant": batch.tenant_id, "batch": batch.batch_id, "name": name,
         "at": at},
    )  # fmt: skip


async def sections_of(session: AsyncSession, batch_ids: Sequence[str]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {b: [] for b in batch_ids}
    if not batch_ids:
        return out
    rows = await session.execute(
        text(
            "SELECT section_id, batch_id, name FROM sections WHERE batch_id = ANY (:ids) "
            "ORDER BY created_at"
        ),
        {"ids": list(batch_ids)},
    )
    for r in rows:
        out[str(r.batch_id)].append(r)
    return out


async def seats(session: AsyncSession, batch_ids: Sequence[str]) -> dict[str, Seats]:
    out = {b: Seats(0, 0) for b in batch_ids}
    if not batch_ids:
        return out
    rows = await session.execute(
        text(
            "SELECT batch_id, "
            "count(*) FILTER (WHERE role = 'student' AND status IN ('active', 'completed')) "
            "AS taken, count(*) FILTER (WHERE status = 'waitlisted') AS waiting "
            "FROM enrollments WHERE batch_id = ANY (:ids) GROUP BY batch_id"
        ),
        {"ids": list(batch_ids)},
    )
    for r in rows:
        out[str(r.batch_id)] = Seats(r.taken, r.waiting)
    return out


async def section_in_batch(session: AsyncSession, batch_id: str, section_id: str) -> bool:
    found = await session.scalar(
        text("SELECT 1 FROM sections WHERE batch_id = :batch AND section_id = :id"),
        {"batch": batch_id, "id": section_id},
    )
    return found is not None


# ---------------------------------------------------------------------------------------------
# Enrollments


async def insert_enrollment(session: AsyncSession, e: Enrollment) -> Enrollment:
    """Insert and return it with its arrival sequence. A second current enrollment of the same
    user in the batch violates `enrollments_one_current` (IntegrityError)."""
    seq = await session.scalar(
        text(
            "INSERT INTO enrollments (enrollment_id, tenant_id, course_id, batch_id, section_id, "
            "user_id, role, status, created_at, updated_at) VALUES (:id, :tenant, :course, "
            ":batch, :section, :user, :role, :status, :at, :at) RETURNING seq"
        ),
        {
            "id": e.enrollment_id, "tenant": e.tenant_id, "course": e.course_id,
            "batch": e.batch_id, "section": e.section_id, "user": e.user_id,
            "role": e.role.value, "status": e.status.value, "at": e.created_at,
        },
    )  # fmt: skip
    return replace(e, seq=int(seq or 0))


async def get_enrollment(
    session: AsyncSession, tenant_id: str, enrollment_id: str
) -> Enrollment | None:
    row = (
        await session.execute(
            text(
                f"SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE tenant_id = :tenant "
                "AND enrollment_id = :id"
            ),
            {"tenant": tenant_id, "id": enrollment_id},
        )
    ).first()
    return enrollment_of(row) if row is not None else None


async def lock_enrollment(session: AsyncSession, enrollment_id: str) -> None:
    await session.execute(
        text("SELECT 1 FROM enrollments WHERE enrollment_id = :id FOR UPDATE"),
        {"id": enrollment_id},
    )


async def current_enrollment(
    session: AsyncSession, tenant_id: str, batch_id: str, user_id: str
) -> Enrollment | None:
    row = (
        await session.execute(
            text(
                f"SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE tenant_id = :tenant "
                "AND batch_id = :batch AND user_id = :user "
                "AND status IN ('active', 'waitlisted', 'completed')"
            ),
            {"tenant": tenant_id, "batch": batch_id, "user": user_id},
        )
    ).first()
    return enrollment_of(row) if row is not None else None


async def current_enrollments_of_user(
    session: AsyncSession, tenant_id: str, user_id: str
) -> list[Enrollment]:
    rows = await session.execute(
        text(
            f"SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE tenant_id = :tenant "
            "AND user_id = :user AND status IN ('active', 'waitlisted') ORDER BY batch_id"
        ),
        {"tenant": tenant_id, "user": user_id},
    )
    return [enrollment_of(r) for r in rows]


async def waitlist_position(session: AsyncSession, e: Enrollment) -> int:
    if e.status is not Status.WAITLISTED:
        return 0
    ahead = await session.scalar(
        text(
            "SELECT count(*) FROM enrollments WHERE batch_id = :batch "
            "AND status = 'waitlisted' AND seq < :seq"
        ),
        {"batch": e.batch_id, "seq": e.seq},
    )
    return int(ahead or 0) + 1


async def waitlist_positions(session: AsyncSession, batch_ids: Iterable[str]) -> dict[str, int]:
    ids = list(set(batch_ids))
    if not ids:
        return {}
    rows = await session.execute(
        text(
            "SELECT enrollment_id, row_number() OVER (PARTITION BY batch_id ORDER BY seq) AS pos "
            "FROM enrollments WHERE batch_id = ANY (:ids) AND status = 'waitlisted'"
        ),
        {"ids": ids},
    )
    return {str(r.enrollment_id): int(r.pos) for r in rows}


async def first_waitlisted(session: AsyncSession, batch_id: str, limit: int) -> list[Enrollment]:
    rows = await session.execute(
        text(
            f"SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE batch_id = :batch "
            "AND status = 'waitlisted' ORDER BY seq LIMIT :limit"
        ),
        {"batch": batch_id, "limit": limit},
    )
    return [enrollment_of(r) for r in rows]


async def set_status(
    session: AsyncSession, e: Enrollment, status: Status, at: datetime
) -> Enrollment:
    await session.execute(
        text("UPDATE enrollments SET status = :status, updated_at = :at WHERE enrollment_id = :id"),
        {"id": e.enrollment_id, "status": status.value, "at": at},
    )
    return replace(e, status=status, updated_at=at)


async def add_history(
    session: AsyncSession,
    enrollment_id: str,
    *,
    status: Status,
    reason: str,
    actor_id: str | None,
    at: datetime,
) -> None:
    await session.execute(
        text(
            "INSERT INTO enrollment_history (enrollment_id, status, reason, actor_id, changed_at) "
            "VALUES (:id, :status, :reason, :actor, :at)"
        ),
        {"id": enrollment_id, "status": status.value, "reason": reason, "actor": actor_id,
         "at": at},
    )  # fmt: skip


async def history_of(session: AsyncSession, enrollment_ids: Sequence[str]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {e: [] for e in enrollment_ids}
    if not enrollment_ids:
        return out
    rows = await session.execute(
        text(
            "SELECT enrollment_id, status, reason, actor_id, changed_at FROM enrollment_history "
            "WHERE enrollment_id = ANY (:ids) ORDER BY id"
        ),
        {"ids": list(enrollment_ids)},
    )
    for r in rows:
        out[str(r.enrollment_id)].append(r)
    return out


async def list_enrollments(
    session: AsyncSession,
    tenant_id: str,
    *,
    batch_id: str | None,
    user_id: str | None,
    status: Status | None,
    after_seq: int,
    limit: int,
) -> list[Enrollment]:
    rows = await session.execute(
        text(
            f"SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE tenant_id = :tenant "
            "AND (CAST(:batch AS uuid) IS NULL OR batch_id = :batch) "
            "AND (CAST(:user AS uuid) IS NULL OR user_id = :user) "
            "AND (CAST(:status AS text) IS NULL OR status = :status) "
            "AND seq > :after ORDER BY seq LIMIT :limit"
        ),
        {"tenant": tenant_id, "batch": batch_id, "user": user_id,
         "status": status.value if status else None, "after": after_seq, "limit": limit},
    )  # fmt: skip
    return [enrollment_of(r) for r in rows]


# ---------------------------------------------------------------------------------------------
# Progress


async def record_completion(
    session: AsyncSession, e: Enrollment, lesson_id: str, at: datetime
) -> bool:
    """True when this is the first completion of the lesson by the learner in the batch."""
    inserted = await session.scalar(
        text(
            "INSERT INTO lesson_completions (tenant_id, batch_id, user_id, lesson_id, course_id, "
            "completed_at) VALUES (:tenant, :batch, :user, :lesson, :course, :at) "
            "ON CONFLICT DO NOTHING RETURNING 1"
        ),
        {"tenant": e.tenant_id, "batch": e.batch_id, "user": e.user_id, "lesson": lesson_id,
         "course": e.course_id, "at": at},
    )  # fmt: skip
    return inserted is not None


async def completed_lessons(session: AsyncSession, batch_id: str, user_id: str) -> set[str]:
    rows = await session.execute(
        text(
            "SELECT lesson_id FROM lesson_completions WHERE batch_id = :batch AND user_id = :user"
        ),
        {"batch": batch_id, "user": user_id},
    )
    return {str(r.lesson_id) for r in rows}


async def completions_by_learner(
    session: AsyncSession, tenant_id: str, course_id: str, batch_id: str | None
) -> tuple[list[Any], dict[tuple[str, str], set[str]]]:
    """Seat-holding students of the course (or one batch) and their completed lesson ids."""
    learners = list(
        await session.execute(
            text(
                "SELECT batch_id, user_id, status FROM enrollments WHERE tenant_id = :tenant "
                "AND course_id = :course AND (CAST(:batch AS uuid) IS NULL OR batch_id = :batch) "
                "AND role = 'student' AND status IN ('active', 'completed')"
            ),
            {"tenant": tenant_id, "course": course_id, "batch": batch_id},
        )
    )
    done: dict[tuple[str, str], set[str]] = {}
    rows = await session.execute(
        text(
            "SELECT batch_id, user_id, lesson_id FROM lesson_completions WHERE tenant_id = :tenant "
            "AND course_id = :course AND (CAST(:batch AS uuid) IS NULL OR batch_id = :batch)"
        ),
        {"tenant": tenant_id, "course": course_id, "batch": batch_id},
    )
    for r in rows:
        done.setdefault((str(r.batch_id), str(r.user_id)), set()).add(str(r.lesson_id))
    return learners, done


async def insert_quiz_attempt(
    session: AsyncSession,
    *,
    attempt_id: str,
    e: Enrollment,
    lesson_id: str,
    item_id: str,
    version: int,
    score: int,
    max_score: int,
    results: list[Mapping[str, Any]],
    at: datetime,
) -> int:
    """Store the attempt and return its number (1, 2, ...); the enrollment lock serialises these."""
    number = await session.scalar(
        text(
            "SELECT coalesce(max(attempt_number), 0) + 1 FROM quiz_attempts "
            "WHERE batch_id = :batch AND user_id = :user AND item_id = :item"
        ),
        {"batch": e.batch_id, "user": e.user_id, "item": item_id},
    )
    await session.execute(
        text(
            "INSERT INTO quiz_attempts (attempt_id, tenant_id, batch_id, user_id, course_id, "
            "lesson_id, item_id, version, attempt_number, score, max_score, results, submitted_at) "
            "VALUES (:id, :tenant, :batch, :user, :course, :lesson, :item, :version, :number, "
            ":score, :max, CAST(:results AS jsonb), :at)"
        ),
        {
            "id": attempt_id, "tenant": e.tenant_id, "batch": e.batch_id, "user": e.user_id,
            "course": e.course_id, "lesson": lesson_id, "item": item_id, "version": version,
            "number": number, "score": score, "max": max_score, "results": json.dumps(results),
            "at": at,
        },
    )  # fmt: skip
    return int(number or 1)
