"""Use cases: load → decide (domain) → write, inside the caller's unit of work.

Mutating use cases take the `UnitOfWork` that `run_idempotent` opened, so their writes, their
outbox events and the remembered response commit together. Reads open their own session.

Concurrency: every seat decision of a batch (enroll, drop, promote) runs under the batch's row
lock (`SELECT ... FOR UPDATE`), so seats are counted and assigned one request at a time and the
waitlist's arrival order is the order the lock was granted; the partial unique index
`enrollments_one_current` backs the one-enrollment-per-user rule even if that were bypassed.
Content edits and publishes lock the course row.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.courses import domain, store
from services.courses.domain import (
    Actor,
    Batch,
    BatchState,
    Content,
    Course,
    CourseAuthority,
    CourseState,
    Department,
    Enrollment,
    Item,
    Lesson,
    Module,
    ProgressView,
    QuestionScore,
    Role,
    Seats,
    Status,
)
from suuupra_runtime.db import Database, UnitOfWork
from suuupra_runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from suuupra_runtime.updates import etag_matches, etag_of

Emit = Callable[[UnitOfWork, domain.DomainEvent], None]


@dataclass(frozen=True)
class BatchView:
    batch: Batch
    seats: Seats
    sections: tuple[tuple[str, str], ...]  # (section_id, name)


@dataclass(frozen=True)
class HistoryEntry:
    status: Status
    reason: str
    actor_id: str
    at: datetime


@dataclass(frozen=True)
class EnrollmentView:
    enrollment: Enrollment
    waitlist_position: int
    history: tuple[HistoryEntry, ...]


@dataclass(frozen=True)
class VersionView:
    course_id: str
    version: int
    title: str
    published_by: str
    published_at: datetime
    lesson_count: int


@dataclass(frozen=True)
class ContentView:
    course_id: str
    version: int
    content: Content
    locked: frozenset[str]


@dataclass(frozen=True)
class DraftEdit:
    content: Content
    etag: str  # the course's etag after the edit


@dataclass(frozen=True)
class AttemptView:
    attempt_id: str
    lesson_id: str
    item_id: str
    number: int
    score: int
    max_score: int
    results: tuple[QuestionScore, ...]
    at: datetime


@dataclass(frozen=True)
class StatsView:
    course_id: str
    batch_id: str
    version: int
    learners: int
    completed_learners: int
    average_percent: float
    lessons: tuple[tuple[str, int], ...]


def _like_pattern(query: str) -> str | None:
    query = query.strip()
    if not query:
        return None
    escaped = re.sub(r"([\\%_])", r"\\\1", query)
    return f"%{escaped}%"


class Courses:
    def __init__(
        self,
        db: Database,
        emit: Emit,
        *,
        reads: store.Fetcher | None = None,
        clock: Callable[[], datetime] = domain.now_utc,
    ) -> None:
        self.db = db
        self.emit = emit
        self.clock = clock
        # The catalog runs on a raw asyncpg pool when given one (no session, no pre-ping).
        self.catalog = store.CatalogReads(reads or db)

    # --- shared loading ---------------------------------------------------------------------

    async def _course(
        self, session: AsyncSession, tenant_id: str, course_id: str, *, lock: bool = False
    ) -> Course:
        course = await store.get_course(session, tenant_id, course_id, lock=lock)
        if course is None:
            raise NotFound(f"course {course_id} not found", reason="COURSE_NOT_FOUND")
        return course

    async def _authority(
        self, session: AsyncSession, actor: Actor, course: Course
    ) -> CourseAuthority:
        roles = await store.staff_roles(session, course.tenant_id, course.course_id, actor.user_id)
        return domain.authority(actor, course.owner_ids, roles)

    async def _editable(self, session: AsyncSession, actor: Actor, course_id: str) -> Course:
        """The course, locked for writing, after checking the actor may change it."""
        tenant = domain.resolve_tenant(actor, "")
        course = await self._course(session, tenant, course_id, lock=True)
        domain.require_edit(actor, await self._authority(session, actor, course), course_id)
        domain.require_mutable(course)
        return course

    async def _batch(
        self, session: AsyncSession, tenant_id: str, batch_id: str, *, lock: bool = False
    ) -> Batch:
        batch = await store.get_batch(session, tenant_id, batch_id, lock=lock)
        if batch is None:
            raise NotFound(f"batch {batch_id} not found", reason="BATCH_NOT_FOUND")
        return batch

    async def _batch_views(
        self, session: AsyncSession, batches: Sequence[Batch]
    ) -> list[BatchView]:
        ids = [b.batch_id for b in batches]
        seats = await store.seats(session, ids)
        sections = await store.sections_of(session, ids)
        return [
            BatchView(
                b,
                seats[b.batch_id],
                tuple((str(s.section_id), s.name) for s in sections[b.batch_id]),
            )
            for b in batches
        ]

    async def _enrollment_views(
        self, session: AsyncSession, enrollments: Sequence[Enrollment]
    ) -> list[EnrollmentView]:
        positions = await store.waitlist_positions(
            session, [e.batch_id for e in enrollments if e.status is Status.WAITLISTED]
        )
        history = await store.history_of(session, [e.enrollment_id for e in enrollments])
        return [
            EnrollmentView(
                e,
                positions.get(e.enrollment_id, 0),
                tuple(
                    HistoryEntry(Status(h.status), h.reason, str(h.actor_id or ""), h.changed_at)
                    for h in history[e.enrollment_id]
                ),
            )
            for e in enrollments
        ]

    # --- departments --------------------------------------------------------------------------

    async def create_department(
        self, uow: UnitOfWork, actor: Actor, *, code: str, name: str
    ) -> Department:
        tenant = domain.resolve_tenant(actor, "")
        department = Department(domain.new_id(), tenant, code.upper(), name.strip(), self.clock())
        session = uow.session
        async with session.begin_nested():
            try:
                await store.insert_department(session, department)
            except store.IntegrityError:
                raise AlreadyExists(
                    f"department {department.code} already exists", reason="DEPARTMENT_EXISTS"
                ) from None
        return department

    async def list_departments(self, actor: Actor) -> list[Department]:
        tenant = domain.resolve_tenant(actor, "")
        async with self.db.sessions() as session:
            return await store.list_departments(session, tenant)

    # --- courses ------------------------------------------------------------------------------

    async def create_course(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        code: str,
        title: str,
        description: str,
        language: str,
        tags: Iterable[str],
        department_id: str,
        owner_ids: Iterable[str],
    ) -> Course:
        tenant = domain.resolve_tenant(actor, "")
        session = uow.session
        if department_id and not await store.department_exists(session, tenant, department_id):
            raise InvalidArgument([FieldViolation("department_id", "names no department")])
        owners = tuple(dict.fromkeys([*([actor.user_id] if actor.user_id else []), *owner_ids]))
        now = self.clock()
        course = Course(
            course_id=domain.new_id(),
            tenant_id=tenant,
            code=code.upper(),
            title=title.strip(),
            description=description,
            language=language or "en",
            tags=domain.normalize_tags(tags),
            department_id=department_id or None,
            owner_ids=owners,
            state=CourseState.DRAFT,
            published_version=0,
            row_version=1,
            created_at=now,
            updated_at=now,
        )
        async with session.begin_nested():
            try:
                await store.insert_course(session, course)
            except store.IntegrityError:
                raise AlreadyExists(
                    f"a course with code {course.code} already exists", reason="COURSE_CODE_TAKEN"
                ) from None
        self.emit(
            uow,
            domain.CourseCreated(
                tenant, course.course_id, course.code, course.title, department_id, owners
            ),
        )
        return course

    async def get_course(self, actor: Actor, course_id: str) -> Course:
        tenant = domain.resolve_tenant(actor, "")
        async with self.db.sessions() as session:
            course = await self._course(session, tenant, course_id)
            if course.state is CourseState.DRAFT:
                auth = await self._authority(session, actor, course)
                domain.require_staff(auth, "see an unpublished course")
            return course

    async def list_courses(
        self,
        actor: Actor,
        *,
        page_size: int,
        page_token: str,
        department_id: str,
        tag: str,
        language: str,
        query: str,
        managed_only: bool,
    ) -> tuple[list[Course], str]:
        tenant = domain.resolve_tenant(actor, "")
        managed_by: str | None = None
        if managed_only and not actor.administers:
            if not actor.user_id:
                return [], ""
            managed_by = actor.user_id
        fingerprint = hashlib.sha256(
            repr((department_id, tag, language, query, managed_only)).encode()
        ).hexdigest()[:16]
        after = domain.page_key(page_token, fingerprint, str) if page_token else None
        limit = domain.page_size(page_size)
        courses = await self.catalog.list(
            tenant,
            include_all_states=managed_only,
            department_id=department_id or None,
            tag=tag.strip().lower() or None,
            language=language or None,
            pattern=_like_pattern(query),
            after_code=after,
            managed_by=managed_by,
            limit=limit + 1,
        )
        token = ""
        if len(courses) > limit:
            courses = courses[:limit]
            token = domain.encode_page_token([courses[-1].code], fingerprint)
        return courses, token

    async def update_course(
        self,
        uow: UnitOfWork,
        actor: Actor,
        course_id: str,
        etag: str,
        changes: dict[str, Any],
    ) -> Course:
        session = uow.session
        course = await self._editable(session, actor, course_id)
        if not etag_matches(etag, course.row_version):
            raise domain_aborted(course_id)
        if changes.get("department_id") and not await store.department_exists(
            session, course.tenant_id, changes["department_id"]
        ):
            raise InvalidArgument([FieldViolation("course.department_id", "names no department")])
        if "tags" in changes:
            changes["tags"] = domain.normalize_tags(changes["tags"])
        if "department_id" in changes:
            changes["department_id"] = changes["department_id"] or None
        if "owner_ids" in changes:
            changes["owner_ids"] = tuple(dict.fromkeys(changes["owner_ids"]))
            if not changes["owner_ids"]:
                raise InvalidArgument(
                    [FieldViolation("course.owner_ids", "a course needs an owner")]
                )
        updated = replace(
            course, **changes, row_version=course.row_version + 1, updated_at=self.clock()
        )
        await store.save_course(session, updated)
        return updated

    async def publish_course(
        self, uow: UnitOfWork, actor: Actor, course_id: str, etag: str
    ) -> tuple[Course, VersionView]:
        session = uow.session
        course = await self._editable(session, actor, course_id)
        if not etag_matches(etag, course.row_version):
            raise domain_aborted(course_id)
        draft = await store.get_draft(session, course_id)
        domain.require_publishable(draft)
        now = self.clock()
        version = course.published_version + 1
        await store.insert_version(
            session, course, version=version, content=draft, published_by=actor.user_id, at=now
        )
        published = replace(
            course,
            state=CourseState.PUBLISHED,
            published_version=version,
            row_version=course.row_version + 1,
            updated_at=now,
        )
        await store.save_course(session, published)
        batches = await store.list_batches(session, course.tenant_id, course_id)
        self.emit(
            uow,
            domain.CoursePublished(
                course.tenant_id, course_id, version, course.title,
                tuple(b.batch_id for b in batches),
            ),
        )  # fmt: skip
        view = VersionView(
            course_id, version, course.title, actor.user_id or "", now, len(draft.lessons())
        )
        return published, view

    async def archive_course(self, uow: UnitOfWork, actor: Actor, course_id: str) -> Course:
        session = uow.session
        course = await self._editable(session, actor, course_id)
        archived = replace(
            course,
            state=CourseState.ARCHIVED,
            row_version=course.row_version + 1,
            updated_at=self.clock(),
        )
        await store.save_course(session, archived)
        self.emit(uow, domain.CourseArchived(course.tenant_id, course_id))
        return archived

    async def list_versions(self, actor: Actor, course_id: str) -> list[VersionView]:
        tenant = domain.resolve_tenant(actor, "")
        async with self.db.sessions() as session:
            course = await self._course(session, tenant, course_id)
            if course.state is CourseState.DRAFT:
                domain.require_staff(
                    await self._authority(session, actor, course), "see an unpublished course"
                )
            rows = await store.list_versions(session, tenant, course_id)
        return [
            VersionView(
                str(r.course_id), r.version, r.title, str(r.published_by or ""), r.published_at,
                r.lesson_count,
            )
            for r in rows
        ]  # fmt: skip

    async def get_content(
        self, actor: Actor, course_id: str, *, batch_id: str, version: int, draft: bool
    ) -> ContentView:
        tenant = domain.resolve_tenant(actor, "")
        async with self.db.sessions() as session:
            course = await self._course(session, tenant, course_id)
            auth = await self._authority(session, actor, course)
            if draft:
                domain.require_staff(auth, "read the draft")
                content = await store.get_draft(session, course_id)
                return ContentView(course_id, 0, content, frozenset())
            if not auth.is_staff:
                await self._require_reader(session, actor, tenant, course_id, batch_id)
            if course.published_version == 0:
                raise FailedPrecondition(
                    "the course has no published version", reason="COURSE_NOT_PUBLISHED"
                )
            found = await store.get_version(session, tenant, course_id, version)
        if found is None:
            raise NotFound(f"version {version} of course {course_id} not found",
                           reason="VERSION_NOT_FOUND")  # fmt: skip
        number, content = found
        if auth.is_staff:
            return ContentView(course_id, number, content, frozenset())
        view, locked = domain.learner_view(content, self.clock())
        return ContentView(course_id, number, view, frozenset(locked))

    async def _require_reader(
        self, session: AsyncSession, actor: Actor, tenant: str, course_id: str, batch_id: str
    ) -> Enrollment:
        """A learner reads through a batch of this course that they are a member of."""
        if not batch_id:
            raise PermissionDenied(
                "learners read course content through their batch (batch_id)",
                reason="NOT_ENROLLED",
            )
        enrollment = (
            await store.current_enrollment(session, tenant, batch_id, actor.user_id)
            if actor.user_id
            else None
        )
        if (
            enrollment is None
            or enrollment.course_id != course_id
            or enrollment.status not in domain.READER_STATUSES
        ):
            raise PermissionDenied(
                "the caller is not an active member of this batch of the course",
                reason="NOT_ENROLLED",
            )
        return enrollment

    # --- content editing ------------------------------------------------------------------------

    async def _edit_draft(
        self,
        uow: UnitOfWork,
        actor: Actor,
        course_id: str,
        change: Callable[[Content], Content],
        *,
        etag: str = "",
    ) -> DraftEdit:
        """Apply `change` to the draft under the course's row lock. Every draft edit bumps the
        course's row version (its etag); a non-empty `etag` must be the current one."""
        session = uow.session
        course = await self._editable(session, actor, course_id)
        if not etag_matches(etag, course.row_version):
            raise domain_aborted(course_id)
        content = change(await store.get_draft(session, course_id))
        await store.save_draft(session, course_id, content, self.clock())
        return DraftEdit(content, etag_of(course.row_version + 1))

    async def create_module(
        self, uow: UnitOfWork, actor: Actor, course_id: str, title: str, release_at: datetime | None
    ) -> Module:
        module = Module(domain.new_id(), title.strip(), release_at)
        await self._edit_draft(uow, actor, course_id, lambda c: domain.add_module(c, module))
        return module

    async def create_lesson(
        self,
        uow: UnitOfWork,
        actor: Actor,
        course_id: str,
        module_id: str,
        *,
        title: str,
        prerequisites: Sequence[str],
        release_at: datetime | None,
    ) -> Lesson:
        lesson = Lesson(
            domain.new_id(), title.strip(), tuple(dict.fromkeys(prerequisites)), release_at
        )
        await self._edit_draft(
            uow, actor, course_id, lambda c: domain.add_lesson(c, module_id, lesson)
        )
        return lesson

    async def update_lesson(
        self,
        uow: UnitOfWork,
        actor: Actor,
        course_id: str,
        lesson_id: str,
        *,
        title: str | None,
        prerequisites: Sequence[str] | None,
        release_at: datetime | bool | None,
        etag: str = "",
    ) -> tuple[Lesson, str]:
        """The lesson as it is now and the course's new etag."""
        result: list[Lesson] = []

        def change(content: Content) -> Content:
            updated, lesson = domain.update_lesson(
                content, lesson_id, title=title, prerequisites=prerequisites, release_at=release_at
            )
            result.append(lesson)
            return updated

        edit = await self._edit_draft(uow, actor, course_id, change, etag=etag)
        return result[0], edit.etag

    async def create_item(
        self, uow: UnitOfWork, actor: Actor, course_id: str, lesson_id: str, item: Item
    ) -> Item:
        violations = domain.validate_item(item.kind, item.body)
        if violations:
            raise InvalidArgument(violations)
        item = replace(item, item_id=domain.new_id())
        await self._edit_draft(uow, actor, course_id, lambda c: domain.add_item(c, lesson_id, item))
        return item

    async def delete_item(
        self, uow: UnitOfWork, actor: Actor, course_id: str, item_id: str, *, etag: str = ""
    ) -> str:
        """The course's new etag."""
        edit = await self._edit_draft(
            uow, actor, course_id, lambda c: domain.delete_item(c, item_id), etag=etag
        )
        return edit.etag

    async def reorder_modules(
        self,
        uow: UnitOfWork,
        actor: Actor,
        course_id: str,
        module_ids: Sequence[str],
        *,
        etag: str = "",
    ) -> DraftEdit:
        return await self._edit_draft(
            uow, actor, course_id, lambda c: domain.reorder_modules(c, module_ids), etag=etag
        )

    async def reorder_lessons(
        self,
        uow: UnitOfWork,
        actor: Actor,
        course_id: str,
        module_id: str,
        lesson_ids: Sequence[str],
        *,
        etag: str = "",
    ) -> tuple[Module, str]:
        """The module as it is now and the course's new etag."""
        result: list[Module] = []

        def change(content: Content) -> Content:
            module = domain.reorder_lessons(content, module_id, lesson_ids)
            result.append(module)
            return domain.replace_module(content, module)

        edit = await self._edit_draft(uow, actor, course_id, change, etag=etag)
        return result[0], edit.etag

    async def update_module(
        self,
        uow: UnitOfWork,
        actor: Actor,
        course_id: str,
        module_id: str,
        *,
        etag: str,
        title: str | None,
        release_at: datetime | bool | None,
    ) -> tuple[Module, str]:
        """The module as it is now and the course's new etag."""
        result: list[Module] = []

        def change(content: Content) -> Content:
            updated, module = domain.update_module(
                content,
                module_id,
                title=title.strip() if title is not None else None,
                release_at=release_at,
            )
            result.append(module)
            return updated

        edit = await self._edit_draft(uow, actor, course_id, change, etag=etag)
        return result[0], edit.etag

    async def delete_module(
        self, uow: UnitOfWork, actor: Actor, course_id: str, module_id: str, *, etag: str
    ) -> str:
        """The course's new etag."""
        edit = await self._edit_draft(
            uow, actor, course_id, lambda c: domain.delete_module(c, module_id), etag=etag
        )
        return edit.etag

    async def delete_lesson(
        self, uow: UnitOfWork, actor: Actor, course_id: str, lesson_id: str, *, etag: str
    ) -> str:
        """The course's new etag."""
        edit = await self._edit_draft(
            uow, actor, course_id, lambda c: domain.delete_lesson(c, lesson_id), etag=etag
        )
        return edit.etag

    async def move_lesson(
        self,
        uow: UnitOfWork,
        actor: Actor,
        course_id: str,
        lesson_id: str,
        *,
        module_id: str,
        position: int,
        etag: str,
    ) -> DraftEdit:
        return await self._edit_draft(
            uow, actor, course_id,
            lambda c: domain.move_lesson(c, lesson_id, module_id, position), etag=etag,
        )  # fmt: skip

    # --- batches ------------------------------------------------------------------------------

    async def create_batch(
        self,
        uow: UnitOfWork,
        actor: Actor,
        course_id: str,
        *,
        name: str,
        capacity: int,
        start_at: datetime | None,
        end_at: datetime | None,
        schedule: str,
    ) -> BatchView:
        domain.validate_batch_dates(start_at, end_at)
        course = await self._editable(uow.session, actor, course_id)
        batch = Batch(
            batch_id=domain.new_id(),
            tenant_id=course.tenant_id,
            course_id=course_id,
            name=name.strip(),
            capacity=capacity,
            start_at=start_at,
            end_at=end_at,
            schedule=schedule,
            state=BatchState.SCHEDULED,
            created_at=self.clock(),
        )
        await store.insert_batch(uow.session, batch)
        return BatchView(batch, Seats(0, 0), ())

    async def _managed_batch(
        self, uow: UnitOfWork, actor: Actor, batch_id: str
    ) -> tuple[Batch, Course]:
        tenant = domain.resolve_tenant(actor, "")
        batch = await self._batch(uow.session, tenant, batch_id, lock=True)
        course = await self._course(uow.session, tenant, batch.course_id)
        domain.require_edit(
            actor, await self._authority(uow.session, actor, course), course.course_id
        )
        return batch, course

    async def open_batch(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> BatchView:
        batch, course = await self._managed_batch(uow, actor, batch_id)
        opened = domain.open_batch(batch, course)
        if batch.state is not BatchState.OPEN:
            await store.set_batch_state(uow.session, opened)
            self.emit(uow, domain.BatchOpened(opened))
        return (await self._batch_views(uow.session, [opened]))[0]

    async def close_batch(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> BatchView:
        batch, _ = await self._managed_batch(uow, actor, batch_id)
        closed = domain.close_batch(batch)
        if batch.state is not BatchState.CLOSED:
            await store.set_batch_state(uow.session, closed)
            self.emit(uow, domain.BatchClosed(closed))
        return (await self._batch_views(uow.session, [closed]))[0]

    async def create_section(
        self, uow: UnitOfWork, actor: Actor, batch_id: str, name: str
    ) -> tuple[str, str, str]:
        batch, _ = await self._managed_batch(uow, actor, batch_id)
        section_id = domain.new_id()
        await store.insert_section(uow.session, section_id, batch, name.strip(), self.clock())
        return section_id, batch.batch_id, name.strip()

    async def get_batch(self, actor: Actor, batch_id: str, tenant_id: str) -> BatchView:
        tenant = domain.resolve_tenant(actor, tenant_id)
        async with self.db.sessions() as session:
            batch = await self._batch(session, tenant, batch_id)
            return (await self._batch_views(session, [batch]))[0]

    async def list_batches(self, actor: Actor, course_id: str) -> list[BatchView]:
        tenant = domain.resolve_tenant(actor, "")
        async with self.db.sessions() as session:
            course = await self._course(session, tenant, course_id)
            if course.state is CourseState.DRAFT:
                domain.require_staff(
                    await self._authority(session, actor, course), "see an unpublished course"
                )
            return await self._batch_views(
                session, await store.list_batches(session, tenant, course_id)
            )

    # --- enrollment -----------------------------------------------------------------------------

    async def enroll(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        tenant_id: str,
        batch_id: str,
        user_id: str,
        role: Role | None,
        section_id: str,
    ) -> EnrollmentView:
        tenant = domain.resolve_tenant(actor, tenant_id)
        session = uow.session
        target = user_id or actor.user_id
        if not target:
            raise InvalidArgument([FieldViolation("user_id", "service callers must name the user")])
        # The batch's row lock serialises every seat decision of this batch.
        batch = await self._batch(session, tenant, batch_id, lock=True)
        course = await self._course(session, tenant, batch.course_id)
        by_staff = actor.is_service
        if not by_staff and (target != actor.user_id or (role and role is not Role.STUDENT)):
            auth = await self._authority(session, actor, course)
            if domain.PERM_ENROLLMENTS_MANAGE not in actor.permissions or not auth.can_edit:
                raise PermissionDenied(
                    "only the course's instructors and admins enroll other people or staff",
                    reason="NOT_COURSE_STAFF",
                )
            by_staff = True
        if section_id and not await store.section_in_batch(session, batch_id, section_id):
            raise InvalidArgument([FieldViolation("section_id", "names no section of this batch")])
        if await store.current_enrollment(session, tenant, batch_id, target) is not None:
            raise AlreadyExists(
                "the user already has an enrollment in this batch", reason="ALREADY_ENROLLED"
            )
        role = role or Role.STUDENT
        seats = (await store.seats(session, [batch_id]))[batch_id]
        status = domain.decide_enrollment(
            course=course, batch=batch, role=role, by_staff=by_staff, seats=seats
        )
        now = self.clock()
        enrollment = Enrollment(
            enrollment_id=domain.new_id(),
            tenant_id=tenant,
            course_id=course.course_id,
            batch_id=batch_id,
            section_id=section_id or None,
            user_id=target,
            role=role,
            status=status,
            seq=0,
            created_at=now,
            updated_at=now,
        )
        async with session.begin_nested():
            try:
                enrollment = await store.insert_enrollment(session, enrollment)
            except store.IntegrityError:
                raise AlreadyExists(
                    "the user already has an enrollment in this batch", reason="ALREADY_ENROLLED"
                ) from None
        reason = (
            "self-enrolled"
            if target == actor.user_id and not actor.is_service
            else ("enrolled by a service" if actor.is_service else "enrolled by staff")
        )
        await store.add_history(
            session, enrollment.enrollment_id, status=status, reason=reason,
            actor_id=actor.user_id, at=now,
        )  # fmt: skip
        position = await store.waitlist_position(session, enrollment)
        self.emit(uow, domain.EnrollmentCreated(enrollment, position))
        history = (HistoryEntry(status, reason, actor.user_id or "", now),)
        return EnrollmentView(enrollment, position, history)

    async def drop(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        tenant_id: str,
        enrollment_id: str,
        reason: str,
    ) -> tuple[EnrollmentView, EnrollmentView | None]:
        tenant = domain.resolve_tenant(actor, tenant_id)
        session = uow.session
        found = await store.get_enrollment(session, tenant, enrollment_id)
        if found is None:
            raise NotFound(f"enrollment {enrollment_id} not found", reason="ENROLLMENT_NOT_FOUND")
        if not actor.is_service and found.user_id != actor.user_id:
            course = await self._course(session, tenant, found.course_id)
            auth = await self._authority(session, actor, course)
            if domain.PERM_ENROLLMENTS_MANAGE not in actor.permissions or not auth.can_edit:
                raise PermissionDenied(
                    "only the learner, the course's instructors and admins drop an enrollment",
                    reason="NOT_COURSE_STAFF",
                )
        batch = await self._batch(session, tenant, found.batch_id, lock=True)
        # Re-read under the batch lock: a concurrent drop or promotion may have changed it.
        enrollment = await store.get_enrollment(session, tenant, enrollment_id)
        assert enrollment is not None
        default_reason = "dropped by learner" if found.user_id == actor.user_id else "removed"
        dropped, promoted = await self._drop_locked(
            uow, batch, enrollment, reason or default_reason, actor.user_id
        )
        views = await self._enrollment_views(session, [dropped, *promoted])
        return views[0], (views[1] if len(views) > 1 else None)

    async def _drop_locked(
        self,
        uow: UnitOfWork,
        batch: Batch,
        enrollment: Enrollment,
        reason: str,
        actor_id: str | None,
    ) -> tuple[Enrollment, list[Enrollment]]:
        """Drop under the batch lock, then give freed seats to the waitlist in arrival order."""
        domain.require_droppable(enrollment)
        session = uow.session
        now = self.clock()
        status = domain.status_after_drop(batch, now)
        dropped = await store.set_status(session, enrollment, status, now)
        await store.add_history(
            session, dropped.enrollment_id, status=status, reason=reason, actor_id=actor_id, at=now
        )
        self.emit(uow, domain.EnrollmentDropped(dropped, reason))
        promoted: list[Enrollment] = []
        seats = (await store.seats(session, [batch.batch_id]))[batch.batch_id]
        for waiting in await store.first_waitlisted(
            session, batch.batch_id, domain.seats_to_fill(batch, seats)
        ):
            up = await store.set_status(session, waiting, Status.ACTIVE, now)
            await store.add_history(
                session, up.enrollment_id, status=Status.ACTIVE,
                reason="promoted from waitlist", actor_id=None, at=now,
            )  # fmt: skip
            self.emit(uow, domain.EnrollmentPromoted(up))
            promoted.append(up)
        return dropped, promoted

    async def remove_user(self, uow: UnitOfWork, tenant_id: str, user_id: str, reason: str) -> int:
        """Drop every active/waitlisted enrollment of a user (identity deactivated or deleted
        them). Batches are locked in id order so two removals can never deadlock."""
        session = uow.session
        count = 0
        for enrollment in await store.current_enrollments_of_user(session, tenant_id, user_id):
            batch = await self._batch(session, tenant_id, enrollment.batch_id, lock=True)
            fresh = await store.get_enrollment(session, tenant_id, enrollment.enrollment_id)
            if fresh is None or fresh.status not in (Status.ACTIVE, Status.WAITLISTED):
                continue
            await self._drop_locked(uow, batch, fresh, reason, None)
            count += 1
        return count

    async def get_enrollment(
        self, actor: Actor, tenant_id: str, enrollment_id: str
    ) -> EnrollmentView:
        tenant = domain.resolve_tenant(actor, tenant_id)
        async with self.db.sessions() as session:
            enrollment = await store.get_enrollment(session, tenant, enrollment_id)
            if enrollment is None:
                raise NotFound(
                    f"enrollment {enrollment_id} not found", reason="ENROLLMENT_NOT_FOUND"
                )
            if not actor.is_service and enrollment.user_id != actor.user_id:
                await self._require_roster_reader(session, actor, tenant, enrollment.course_id)
            return (await self._enrollment_views(session, [enrollment]))[0]

    async def _require_roster_reader(
        self, session: AsyncSession, actor: Actor, tenant: str, course_id: str
    ) -> None:
        course = await self._course(session, tenant, course_id)
        auth = await self._authority(session, actor, course)
        if domain.PERM_ENROLLMENTS_READ not in actor.permissions or not auth.is_staff:
            raise PermissionDenied(
                "only the course's staff see other people's enrollments",
                reason="NOT_COURSE_STAFF",
            )

    async def list_enrollments(
        self,
        actor: Actor,
        *,
        tenant_id: str,
        batch_id: str,
        user_id: str,
        status: Status | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[EnrollmentView], str]:
        tenant = domain.resolve_tenant(actor, tenant_id)
        if bool(batch_id) == bool(user_id):
            raise InvalidArgument(
                [FieldViolation("batch_id", "give exactly one of batch_id and user_id")]
            )
        fingerprint = hashlib.sha256(repr((batch_id, user_id, status)).encode()).hexdigest()[:16]
        after = domain.page_key(page_token, fingerprint, int) if page_token else 0
        limit = domain.page_size(page_size, default=100, maximum=500)
        async with self.db.sessions() as session:
            if not actor.is_service:
                if batch_id:
                    batch = await self._batch(session, tenant, batch_id)
                    await self._require_roster_reader(session, actor, tenant, batch.course_id)
                elif user_id != actor.user_id and not actor.administers:
                    raise PermissionDenied(
                        "only admins list another user's enrollments", reason="NOT_ADMIN"
                    )
            rows = await store.list_enrollments(
                session, tenant, batch_id=batch_id or None, user_id=user_id or None,
                status=status, after_seq=after, limit=limit + 1,
            )  # fmt: skip
            token = ""
            if len(rows) > limit:
                rows = rows[:limit]
                token = domain.encode_page_token([rows[-1].seq], fingerprint)
            return await self._enrollment_views(session, rows), token

    # --- progress -----------------------------------------------------------------------------

    async def _learner(
        self, session: AsyncSession, actor: Actor, batch_id: str
    ) -> tuple[str, Enrollment, int, Content]:
        tenant = domain.resolve_tenant(actor, "")
        enrollment = (
            await store.current_enrollment(session, tenant, batch_id, actor.user_id)
            if actor.user_id
            else None
        )
        if (
            enrollment is None
            or enrollment.role is not Role.STUDENT
            or enrollment.status not in domain.READER_STATUSES
        ):
            raise PermissionDenied(
                "the caller is not an active student of this batch", reason="NOT_ENROLLED"
            )
        found = await store.get_version(session, tenant, enrollment.course_id, 0)
        if found is None:
            raise FailedPrecondition(
                "the course has no published version", reason="COURSE_NOT_PUBLISHED"
            )
        return tenant, enrollment, found[0], found[1]

    async def complete_lesson(
        self, uow: UnitOfWork, actor: Actor, batch_id: str, lesson_id: str
    ) -> ProgressView:
        session = uow.session
        tenant, enrollment, version, content = await self._learner(session, actor, batch_id)
        now = self.clock()
        done = await store.completed_lessons(session, batch_id, enrollment.user_id)
        if lesson_id not in done:
            domain.require_completable(content, lesson_id, done, now)
            if await store.record_completion(session, enrollment, lesson_id, now):
                done.add(lesson_id)
                self.emit(
                    uow,
                    domain.LessonCompleted(
                        tenant, enrollment.course_id, batch_id, lesson_id, enrollment.user_id
                    ),
                )
        view = domain.progress(
            content, done, course_id=enrollment.course_id, batch_id=batch_id,
            user_id=enrollment.user_id, version=version,
        )  # fmt: skip
        if view.course_completed and enrollment.status is Status.ACTIVE:
            await store.set_status(session, enrollment, Status.COMPLETED, now)
            await store.add_history(
                session, enrollment.enrollment_id, status=Status.COMPLETED,
                reason="completed every lesson", actor_id=None, at=now,
            )  # fmt: skip
            self.emit(
                uow,
                domain.CourseCompleted(tenant, enrollment.course_id, batch_id, enrollment.user_id),
            )
        return view

    async def submit_quiz(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch_id: str,
        item_id: str,
        answers: dict[str, list[str]],
    ) -> AttemptView:
        session = uow.session
        _, enrollment, version, content = await self._learner(session, actor, batch_id)
        found = content.find_item(item_id)
        if found is None or found[1].kind != "quiz":
            raise NotFound(
                f"quiz {item_id} is not in the published course", reason="QUIZ_NOT_FOUND"
            )
        lesson, item = found
        module_lesson = content.find_lesson(lesson.lesson_id)
        now = self.clock()
        if module_lesson and not domain.released(module_lesson[0], lesson, now):
            raise FailedPrecondition("the lesson is not released yet", reason="LESSON_NOT_RELEASED")
        score, max_score, results = domain.score_quiz(item.body, answers)
        attempt_id = domain.new_id()
        # Serialise one learner's attempts (their enrollment row) so attempt numbers never
        # collide, without queueing the rest of the batch behind them.
        await store.lock_enrollment(session, enrollment.enrollment_id)
        number = await store.insert_quiz_attempt(
            session, attempt_id=attempt_id, e=enrollment, lesson_id=lesson.lesson_id,
            item_id=item_id, version=version, score=score, max_score=max_score,
            results=[{"question_id": r.question_id, "correct": r.correct, "points": r.points}
                     for r in results],
            at=now,
        )  # fmt: skip
        return AttemptView(
            attempt_id, lesson.lesson_id, item_id, number, score, max_score, tuple(results), now
        )

    async def get_progress(self, actor: Actor, batch_id: str, user_id: str) -> ProgressView:
        tenant = domain.resolve_tenant(actor, "")
        async with self.db.sessions() as session:
            if user_id and user_id != actor.user_id:
                batch = await self._batch(session, tenant, batch_id)
                course = await self._course(session, tenant, batch.course_id)
                auth = await self._authority(session, actor, course)
                if domain.PERM_PROGRESS_READ not in actor.permissions or not auth.is_staff:
                    raise PermissionDenied(
                        "only the course's staff see other learners' progress",
                        reason="NOT_COURSE_STAFF",
                    )
                enrollment = await store.current_enrollment(session, tenant, batch_id, user_id)
                if enrollment is None:
                    raise NotFound("the user is not enrolled in this batch", reason="NOT_ENROLLED")
                found = await store.get_version(session, tenant, course.course_id, 0)
                if found is None:
                    raise FailedPrecondition(
                        "the course has no published version", reason="COURSE_NOT_PUBLISHED"
                    )
                version, content = found
            else:
                _, enrollment, version, content = await self._learner(session, actor, batch_id)
            done = await store.completed_lessons(session, batch_id, enrollment.user_id)
        return domain.progress(
            content, done, course_id=enrollment.course_id, batch_id=batch_id,
            user_id=enrollment.user_id, version=version,
        )  # fmt: skip

    async def completion_stats(self, actor: Actor, course_id: str, batch_id: str) -> StatsView:
        tenant = domain.resolve_tenant(actor, "")
        async with self.db.sessions() as session:
            course = await self._course(session, tenant, course_id)
            domain.require_staff(await self._authority(session, actor, course), "see statistics")
            if batch_id:
                batch = await self._batch(session, tenant, batch_id)
                if batch.course_id != course_id:
                    raise NotFound(f"batch {batch_id} not found", reason="BATCH_NOT_FOUND")
            found = await store.get_version(session, tenant, course_id, 0)
            learners, done = await store.completions_by_learner(
                session, tenant, course_id, batch_id or None
            )
        version, content = found if found else (0, Content())
        order = content.lesson_ids()
        per_lesson = dict.fromkeys(order, 0)
        percents: list[int] = []
        for row in learners:
            completed = done.get((str(row.batch_id), str(row.user_id)), set())
            view = domain.progress(
                content, completed, course_id=course_id, batch_id=str(row.batch_id),
                user_id=str(row.user_id), version=version,
            )  # fmt: skip
            percents.append(view.percent)
            for lesson_id in view.completed_ids:
                per_lesson[lesson_id] += 1
        return StatsView(
            course_id=course_id,
            batch_id=batch_id,
            version=version,
            learners=len(learners),
            completed_learners=sum(1 for r in learners if r.status == Status.COMPLETED.value),
            average_percent=sum(percents) / len(percents) if percents else 0.0,
            lessons=tuple(per_lesson.items()),
        )


def domain_aborted(course_id: str) -> Exception:
    from suuupra_runtime.errors import Aborted

    return Aborted(
        f"course {course_id} changed since it was read; re-read and retry", reason="ETAG_MISMATCH"
    )
