"""Tables (SQLAlchemy Core, mirroring migrations/) and row ⇄ domain mapping.

Every query is scoped by tenant; ids are globally unique, so the tenant condition is what keeps
one institution from ever reading another's rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.assessment import domain

metadata = MetaData()

batch_members = Table(
    "batch_members",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("batch_id", Text, primary_key=True),
    Column("user_id", Text, primary_key=True),
    Column("role", Text, primary_key=True),
    Column("course_id", Text),
    Column("section_id", Text),
    Column("active", Boolean),
    Column("updated_at", DateTime(timezone=True)),
)

course_owners = Table(
    "course_owners",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("course_id", Text, primary_key=True),
    Column("user_id", Text, primary_key=True),
)

batch_courses = Table(
    "batch_courses",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("batch_id", Text, primary_key=True),
    Column("course_id", Text),
)

assignments = Table(
    "assignments",
    metadata,
    Column("assignment_id", Text, primary_key=True),
    Column("tenant_id", Text),
    Column("course_id", Text),
    Column("batch_id", Text),
    Column("section_id", Text),
    Column("title", Text),
    Column("instructions", Text),
    Column("attachment_file_ids", ARRAY(Text)),
    Column("max_points_centi", BigInteger),
    Column("submission_types", ARRAY(Text)),
    Column("allowed_file_types", ARRAY(Text)),
    Column("max_attempts", Integer),
    Column("open_time", DateTime(timezone=True)),
    Column("due_time", DateTime(timezone=True)),
    Column("close_time", DateTime(timezone=True)),
    Column("rubric", JSONB),
    Column("late_per_day_bp", Integer),
    Column("late_floor_bp", Integer),
    Column("category", Text),
    Column("state", Text),
    Column("created_by", Text),
    Column("created_at", DateTime(timezone=True)),
    Column("published_at", DateTime(timezone=True)),
    Column("due_soon_sent_at", DateTime(timezone=True)),
    Column("version", BigInteger),
    Column("updated_at", DateTime(timezone=True)),
)

student_exceptions = Table(
    "student_exceptions",
    metadata,
    Column("tenant_id", Text),
    Column("assignment_id", Text, primary_key=True),
    Column("student_id", Text, primary_key=True),
    Column("extended_due_time", DateTime(timezone=True)),
    Column("extended_close_time", DateTime(timezone=True)),
    Column("exempt", Boolean),
    Column("reason", Text),
    Column("granted_by", Text),
    Column("updated_at", DateTime(timezone=True)),
)

attempt_counters = Table(
    "attempt_counters",
    metadata,
    Column("tenant_id", Text),
    Column("assignment_id", Text, primary_key=True),
    Column("student_id", Text, primary_key=True),
    Column("used", Integer),
    Column("max_attempts", Integer),
)

submissions = Table(
    "submissions",
    metadata,
    Column("submission_id", Text, primary_key=True),
    Column("tenant_id", Text),
    Column("assignment_id", Text),
    Column("batch_id", Text),
    Column("student_id", Text),
    Column("attempt", Integer),
    Column("max_attempts", Integer),
    Column("body_text", Text),
    Column("file_ids", ARRAY(Text)),
    Column("link", Text),
    Column("submitted_at", DateTime(timezone=True)),
    Column("late", Boolean),
    Column("penalty_bp", Integer),
    Column("penalty_explanation", Text),
)

grades = Table(
    "grades",
    metadata,
    Column("grade_id", Text, primary_key=True),
    Column("tenant_id", Text),
    Column("assignment_id", Text),
    Column("batch_id", Text),
    Column("student_id", Text),
    Column("submission_id", Text),
    Column("raw_score_centi", BigInteger),
    Column("penalty_bp", Integer),
    Column("score_centi", BigInteger),
    Column("max_points_centi", BigInteger),
    Column("rubric_scores", JSONB),
    Column("feedback", Text),
    Column("feedback_file_ids", ARRAY(Text)),
    Column("grader_id", Text),
    Column("released", Boolean),
    Column("version", BigInteger),
    Column("updated_at", DateTime(timezone=True)),
)

grade_audit = Table(
    "grade_audit",
    metadata,
    Column("audit_id", Text, primary_key=True),
    Column("seq", BigInteger),
    Column("tenant_id", Text),
    Column("grade_id", Text),
    Column("action", Text),
    Column("actor_id", Text),
    Column("reason", Text),
    Column("previous_score_centi", BigInteger),
    Column("score_centi", BigInteger),
    Column("previous_released", Boolean),
    Column("released", Boolean),
    Column("changes", JSONB),
    Column("created_at", DateTime(timezone=True)),
)

gradebook_categories = Table(
    "gradebook_categories",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("batch_id", Text, primary_key=True),
    Column("position", Integer),
    Column("name", Text, primary_key=True),
    Column("weight_bp", Integer),
    Column("drop_lowest", Integer),
)


# --------------------------------------------------------------------------------------------
# Enrollment projection


async def set_membership(
    session: AsyncSession,
    *,
    tenant_id: str,
    batch_id: str,
    user_id: str,
    role: domain.BatchRole,
    course_id: str,
    section_id: str,
    active: bool,
    at: datetime,
) -> None:
    stmt = insert(batch_members).values(
        tenant_id=tenant_id,
        batch_id=batch_id,
        user_id=user_id,
        role=role.value,
        course_id=course_id,
        section_id=section_id,
        active=active,
        updated_at=at,
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["tenant_id", "batch_id", "user_id", "role"],
            set_={
                "active": stmt.excluded.active,
                "section_id": stmt.excluded.section_id,
                "updated_at": stmt.excluded.updated_at,
            },
        )
    )


async def add_course_owners(
    session: AsyncSession, tenant_id: str, course_id: str, owner_ids: Sequence[str]
) -> None:
    if owner_ids:
        await session.execute(
            insert(course_owners)
            .values(
                [{"tenant_id": tenant_id, "course_id": course_id, "user_id": u} for u in owner_ids]
            )
            .on_conflict_do_nothing()
        )


async def set_batch_course(
    session: AsyncSession, tenant_id: str, batch_id: str, course_id: str
) -> None:
    await session.execute(
        insert(batch_courses)
        .values(tenant_id=tenant_id, batch_id=batch_id, course_id=course_id)
        .on_conflict_do_nothing()
    )


async def owns_batch_course(
    session: AsyncSession, tenant_id: str, batch_id: str, user_id: str
) -> bool:
    """Whether `user_id` owns the course `batch_id` belongs to (owners teach every batch)."""
    found = await session.scalar(
        select(course_owners.c.user_id)
        .join(
            batch_courses,
            and_(
                batch_courses.c.tenant_id == course_owners.c.tenant_id,
                batch_courses.c.course_id == course_owners.c.course_id,
            ),
        )
        .where(
            batch_courses.c.tenant_id == tenant_id,
            batch_courses.c.batch_id == batch_id,
            course_owners.c.user_id == user_id,
        )
    )
    return found is not None


async def batch_roles(
    session: AsyncSession, tenant_id: str, batch_id: str, user_id: str
) -> frozenset[domain.BatchRole]:
    rows = await session.scalars(
        select(batch_members.c.role).where(
            batch_members.c.tenant_id == tenant_id,
            batch_members.c.batch_id == batch_id,
            batch_members.c.user_id == user_id,
            batch_members.c.active.is_(True),
        )
    )
    return frozenset(domain.BatchRole(r) for r in rows)


async def batch_students(session: AsyncSession, tenant_id: str, batch_id: str) -> list[str]:
    rows = await session.scalars(
        select(batch_members.c.user_id)
        .where(
            batch_members.c.tenant_id == tenant_id,
            batch_members.c.batch_id == batch_id,
            batch_members.c.role == domain.BatchRole.STUDENT.value,
            batch_members.c.active.is_(True),
        )
        .order_by(batch_members.c.user_id)
    )
    return list(rows)


# --------------------------------------------------------------------------------------------
# Assignments


def _rubric_json(rubric: Sequence[domain.RubricCriterion]) -> list[dict[str, Any]]:
    return [
        {
            "id": c.criterion_id,
            "title": c.title,
            "levels": [
                {"title": lv.title, "points": lv.points_centi, "description": lv.description}
                for lv in c.levels
            ],
        }
        for c in rubric
    ]


def _rubric_of(data: Sequence[Mapping[str, Any]]) -> tuple[domain.RubricCriterion, ...]:
    return tuple(
        domain.RubricCriterion(
            criterion_id=c["id"],
            title=c["title"],
            levels=tuple(
                domain.RubricLevel(lv["title"], int(lv["points"]), lv["description"])
                for lv in c["levels"]
            ),
        )
        for c in data
    )


def assignment_values(a: domain.Assignment) -> dict[str, Any]:
    return {
        "assignment_id": a.assignment_id,
        "tenant_id": a.tenant_id,
        "course_id": a.course_id,
        "batch_id": a.batch_id,
        "section_id": a.section_id,
        "title": a.title,
        "instructions": a.instructions,
        "attachment_file_ids": list(a.attachment_file_ids),
        "max_points_centi": a.max_points_centi,
        "submission_types": sorted(t.value for t in a.submission_types),
        "allowed_file_types": list(a.allowed_file_types),
        "max_attempts": a.max_attempts,
        "open_time": a.open_time,
        "due_time": a.due_time,
        "close_time": a.close_time,
        "rubric": _rubric_json(a.rubric),
        "late_per_day_bp": a.late_policy.percent_per_day_bp,
        "late_floor_bp": a.late_policy.floor_bp,
        "category": a.category,
        "state": a.state.value,
        "created_by": a.created_by,
        "created_at": a.created_at,
        "published_at": a.published_at,
        "version": a.version,
        "updated_at": a.updated_at or a.created_at,
    }


# What an edit may write (identity, batch and history columns never change).
_EDITABLE_COLUMNS = (set(domain.UPDATABLE_FIELDS) - {"late_policy"}) | {
    "late_per_day_bp",
    "late_floor_bp",
    "version",
    "updated_at",
}


async def save_assignment_edit(
    session: AsyncSession, a: domain.Assignment, *, due_time_changed: bool
) -> None:
    """Write an edited assignment. A new due time gets its own "due soon" reminder (the sweep
    announces once per due time), and students who already used attempts get the new limit."""
    values = {k: v for k, v in assignment_values(a).items() if k in _EDITABLE_COLUMNS}
    if due_time_changed:
        values["due_soon_sent_at"] = None
    await session.execute(
        assignments.update()
        .where(
            assignments.c.tenant_id == a.tenant_id,
            assignments.c.assignment_id == a.assignment_id,
        )
        .values(**values)
    )
    await session.execute(
        attempt_counters.update()
        .where(
            attempt_counters.c.tenant_id == a.tenant_id,
            attempt_counters.c.assignment_id == a.assignment_id,
            attempt_counters.c.max_attempts != a.max_attempts,
        )
        .values(max_attempts=a.max_attempts)
    )


async def work_facts(session: AsyncSession, tenant_id: str, assignment_id: str) -> domain.WorkFacts:
    """How many submissions and grades an assignment has (call with the assignment locked)."""
    row = (
        await session.execute(
            select(
                select(func.count())
                .select_from(submissions)
                .where(
                    submissions.c.tenant_id == tenant_id,
                    submissions.c.assignment_id == assignment_id,
                )
                .scalar_subquery(),
                select(func.count())
                .select_from(grades)
                .where(grades.c.tenant_id == tenant_id, grades.c.assignment_id == assignment_id)
                .scalar_subquery(),
            )
        )
    ).one()
    return domain.WorkFacts(submissions=int(row[0]), grades=int(row[1]))


async def delete_assignment(session: AsyncSession, tenant_id: str, assignment_id: str) -> None:
    """Remove an assignment and its per-student exceptions. Submissions, attempt counters and
    grades reference the assignment (foreign keys), so the database itself refuses to delete
    one that has any."""
    await session.execute(
        student_exceptions.delete().where(
            student_exceptions.c.tenant_id == tenant_id,
            student_exceptions.c.assignment_id == assignment_id,
        )
    )
    await session.execute(
        assignments.delete().where(
            assignments.c.tenant_id == tenant_id, assignments.c.assignment_id == assignment_id
        )
    )


def assignment_of(row: Any) -> domain.Assignment:
    return domain.Assignment(
        assignment_id=row.assignment_id,
        tenant_id=row.tenant_id,
        course_id=row.course_id,
        batch_id=row.batch_id,
        section_id=row.section_id,
        title=row.title,
        instructions=row.instructions,
        attachment_file_ids=tuple(row.attachment_file_ids),
        max_points_centi=row.max_points_centi,
        submission_types=frozenset(domain.SubmissionType(t) for t in row.submission_types),
        allowed_file_types=tuple(row.allowed_file_types),
        max_attempts=row.max_attempts,
        open_time=row.open_time,
        due_time=row.due_time,
        close_time=row.close_time,
        rubric=_rubric_of(row.rubric),
        late_policy=domain.LatePolicy(row.late_per_day_bp, row.late_floor_bp),
        category=row.category,
        state=domain.AssignmentState(row.state),
        created_by=row.created_by,
        created_at=row.created_at,
        published_at=row.published_at,
        version=row.version,
        updated_at=row.updated_at,
    )


async def load_assignment(
    session: AsyncSession,
    tenant_id: str,
    assignment_id: str,
    *,
    for_update: bool = False,
    for_key_share: bool = False,
) -> domain.Assignment | None:
    """`for_update` serialises writers of the assignment (publish, edit, delete);
    `for_key_share` is what a submit or a grade takes: they run side by side, but an edit or a
    delete waits for them (and they for it), so none acts on terms that are being replaced."""
    stmt = select(assignments).where(
        assignments.c.tenant_id == tenant_id, assignments.c.assignment_id == assignment_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    elif for_key_share:
        stmt = stmt.with_for_update(read=True, key_share=True)
    row = (await session.execute(stmt)).first()
    return assignment_of(row) if row is not None else None


async def batch_assignments(
    session: AsyncSession,
    tenant_id: str,
    batch_id: str,
    *,
    published_only: bool,
    after: tuple[datetime, str] | None = None,
    limit: int | None = None,
) -> list[domain.Assignment]:
    conditions = [assignments.c.tenant_id == tenant_id, assignments.c.batch_id == batch_id]
    if published_only:
        conditions.append(assignments.c.state == domain.AssignmentState.PUBLISHED.value)
    if after is not None:
        conditions.append(
            (assignments.c.due_time, assignments.c.assignment_id) > after  # type: ignore[operator]
        )
    stmt = (
        select(assignments)
        .where(and_(*conditions))
        .order_by(assignments.c.due_time, assignments.c.assignment_id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return [assignment_of(r) for r in (await session.execute(stmt)).all()]


def exception_of(row: Any) -> domain.StudentException:
    return domain.StudentException(
        assignment_id=row.assignment_id,
        student_id=row.student_id,
        extended_due_time=row.extended_due_time,
        extended_close_time=row.extended_close_time,
        exempt=row.exempt,
        reason=row.reason,
        granted_by=row.granted_by,
        updated_at=row.updated_at,
    )


async def load_exception(
    session: AsyncSession, tenant_id: str, assignment_id: str, student_id: str
) -> domain.StudentException | None:
    row = (
        await session.execute(
            select(student_exceptions).where(
                student_exceptions.c.tenant_id == tenant_id,
                student_exceptions.c.assignment_id == assignment_id,
                student_exceptions.c.student_id == student_id,
            )
        )
    ).first()
    return exception_of(row) if row is not None else None


async def save_exception(
    session: AsyncSession, tenant_id: str, exc: domain.StudentException
) -> None:
    values = {
        "tenant_id": tenant_id,
        "assignment_id": exc.assignment_id,
        "student_id": exc.student_id,
        "extended_due_time": exc.extended_due_time,
        "extended_close_time": exc.extended_close_time,
        "exempt": exc.exempt,
        "reason": exc.reason,
        "granted_by": exc.granted_by,
        "updated_at": exc.updated_at,
    }
    stmt = insert(student_exceptions).values(**values)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["assignment_id", "student_id"],
            set_={k: v for k, v in values.items() if k not in ("assignment_id", "student_id")},
        )
    )


async def exempt_pairs(
    session: AsyncSession, tenant_id: str, assignment_ids: Sequence[str]
) -> set[tuple[str, str]]:
    if not assignment_ids:
        return set()
    rows = await session.execute(
        select(student_exceptions.c.student_id, student_exceptions.c.assignment_id).where(
            student_exceptions.c.tenant_id == tenant_id,
            student_exceptions.c.assignment_id.in_(assignment_ids),
            student_exceptions.c.exempt.is_(True),
        )
    )
    return {(r.student_id, r.assignment_id) for r in rows}


# --------------------------------------------------------------------------------------------
# Submissions


async def claim_attempt(
    session: AsyncSession, tenant_id: str, assignment_id: str, student_id: str, max_attempts: int
) -> int | None:
    """The next attempt number, or None when the limit is reached.

    One statement: insert the counter at 1, or bump it while below the limit. PostgreSQL locks
    the conflicting row and re-checks the WHERE on its latest version, so concurrent submits of
    one student serialise here and never claim more than `max_attempts` numbers.
    """
    claim = insert(attempt_counters).values(
        tenant_id=tenant_id,
        assignment_id=assignment_id,
        student_id=student_id,
        used=1,
        max_attempts=max_attempts,
    )
    stmt = claim.on_conflict_do_update(
        index_elements=["assignment_id", "student_id"],
        set_={"used": attempt_counters.c.used + 1},
        where=attempt_counters.c.used < attempt_counters.c.max_attempts,
    ).returning(attempt_counters.c.used)
    used: int | None = await session.scalar(stmt)
    return used


SUBMISSION_COLUMNS = [
    submissions.c.submission_id,
    submissions.c.tenant_id,
    submissions.c.assignment_id,
    submissions.c.batch_id,
    submissions.c.student_id,
    submissions.c.attempt,
    submissions.c.body_text,
    submissions.c.file_ids,
    submissions.c.link,
    submissions.c.submitted_at,
    submissions.c.late,
    submissions.c.penalty_bp,
    submissions.c.penalty_explanation,
]


async def load_submission(session: AsyncSession, tenant_id: str, submission_id: str) -> Any:
    return (
        await session.execute(
            select(*SUBMISSION_COLUMNS).where(
                submissions.c.tenant_id == tenant_id,
                submissions.c.submission_id == submission_id,
            )
        )
    ).first()


async def list_submissions(
    session: AsyncSession,
    tenant_id: str,
    assignment_id: str,
    student_id: str | None,
    *,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[Any]:
    conditions = [
        submissions.c.tenant_id == tenant_id,
        submissions.c.assignment_id == assignment_id,
    ]
    if student_id:
        conditions.append(submissions.c.student_id == student_id)
    if before is not None:
        conditions.append(
            (submissions.c.submitted_at, submissions.c.submission_id) < before  # type: ignore[operator]
        )
    stmt = (
        select(*SUBMISSION_COLUMNS)
        .where(and_(*conditions))
        .order_by(submissions.c.submitted_at.desc(), submissions.c.submission_id.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).all())


# --------------------------------------------------------------------------------------------
# Grades


async def load_grade(
    session: AsyncSession,
    tenant_id: str,
    *,
    assignment_id: str,
    student_id: str,
    for_update: bool = False,
) -> Any:
    stmt = select(grades).where(
        grades.c.tenant_id == tenant_id,
        grades.c.assignment_id == assignment_id,
        grades.c.student_id == student_id,
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).first()


async def load_grade_by_id(session: AsyncSession, tenant_id: str, grade_id: str) -> Any:
    return (
        await session.execute(
            select(grades).where(grades.c.tenant_id == tenant_id, grades.c.grade_id == grade_id)
        )
    ).first()


async def grades_of_submissions(
    session: AsyncSession, tenant_id: str, submission_ids: Sequence[str]
) -> dict[str, Any]:
    if not submission_ids:
        return {}
    rows = await session.execute(
        select(grades).where(
            grades.c.tenant_id == tenant_id,
            grades.c.submission_id.in_(submission_ids),
        )
    )
    return {r.submission_id: r for r in rows}


async def batch_grades(session: AsyncSession, tenant_id: str, batch_id: str) -> list[Any]:
    rows = await session.execute(
        select(
            grades.c.assignment_id,
            grades.c.student_id,
            grades.c.raw_score_centi,
            grades.c.penalty_bp,
            grades.c.score_centi,
            grades.c.released,
            submissions.c.attempt,
            submissions.c.penalty_explanation,
        )
        .join(submissions, submissions.c.submission_id == grades.c.submission_id)
        .where(grades.c.tenant_id == tenant_id, grades.c.batch_id == batch_id)
    )
    return list(rows)


async def load_categories(
    session: AsyncSession, tenant_id: str, batch_id: str
) -> list[domain.Category]:
    rows = await session.execute(
        select(gradebook_categories)
        .where(
            gradebook_categories.c.tenant_id == tenant_id,
            gradebook_categories.c.batch_id == batch_id,
        )
        .order_by(gradebook_categories.c.position)
    )
    return [domain.Category(r.name, r.weight_bp, r.drop_lowest) for r in rows]
