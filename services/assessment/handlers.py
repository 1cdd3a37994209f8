"""Use cases: load → decide (domain) → write through the unit of work, events in the outbox.

Mutating use cases take the `UnitOfWork` first so api.py can run them inside `run_idempotent`,
which owns the transaction (effect, events and the remembered response commit together). Reads
open their own short transaction. No proto types here.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.assessment import domain, store
from services.assessment.files import (
    DownloadLink,
    FileStore,
    assignment_resource,
    submission_resource,
)
from suuupra_runtime.db import Database, UnitOfWork
from suuupra_runtime.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from suuupra_runtime.updates import etag_matches, etag_of

Emit = Callable[[UnitOfWork, domain.DomainEvent], None]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Principal:
    """The caller as the runtime verified it (token or SPIFFE peer)."""

    user_id: str
    tenant_id: str
    permissions: frozenset[str]
    is_service: bool = False


@dataclass(frozen=True)
class NewAssignment:
    course_id: str
    batch_id: str
    section_id: str
    title: str
    instructions: str
    attachment_file_ids: tuple[str, ...]
    max_points_centi: int
    submission_types: frozenset[domain.SubmissionType]
    allowed_file_types: tuple[str, ...]
    max_attempts: int
    open_time: datetime
    due_time: datetime
    close_time: datetime
    rubric: tuple[domain.RubricCriterion, ...]
    late_policy: domain.LatePolicy
    category: str


@dataclass(frozen=True)
class GradeView:
    grade_id: str
    submission_id: str
    assignment_id: str
    student_id: str
    raw_score_centi: int
    penalty_bp: int
    score_centi: int
    max_points_centi: int
    rubric_scores: tuple[domain.RubricChoice, ...]
    feedback: str
    feedback_file_ids: tuple[str, ...]
    grader_id: str
    released: bool
    version: int
    updated_at: datetime


@dataclass(frozen=True)
class SubmissionView:
    submission_id: str
    tenant_id: str
    assignment_id: str
    batch_id: str
    student_id: str
    attempt: int
    text: str
    file_ids: tuple[str, ...]
    link: str
    submitted_at: datetime
    late: bool
    penalty_bp: int
    penalty_explanation: str
    grade: GradeView | None = None


@dataclass(frozen=True)
class AuditEntry:
    audit_id: str
    grade_id: str
    action: str
    actor_id: str
    reason: str
    previous_score_centi: int | None
    score_centi: int
    previous_released: bool
    released: bool
    changes: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class GradeCommand:
    submission_id: str
    score_centi: int | None
    rubric_scores: tuple[domain.RubricChoice, ...]
    feedback: str
    feedback_file_ids: tuple[str, ...]
    release: bool
    reason: str
    expected_version: int | None


@dataclass(frozen=True)
class Gradebook:
    batch_id: str
    categories: list[domain.Category]
    columns: list[domain.Column]
    rows: list[domain.Row]


# --------------------------------------------------------------------------------------------
# Helpers


def _grade_view(row: Any) -> GradeView:
    return GradeView(
        grade_id=row.grade_id,
        submission_id=row.submission_id,
        assignment_id=row.assignment_id,
        student_id=row.student_id,
        raw_score_centi=row.raw_score_centi,
        penalty_bp=row.penalty_bp,
        score_centi=row.score_centi,
        max_points_centi=row.max_points_centi,
        rubric_scores=tuple(
            domain.RubricChoice(r["criterion_id"], int(r["level_index"])) for r in row.rubric_scores
        ),
        feedback=row.feedback,
        feedback_file_ids=tuple(row.feedback_file_ids),
        grader_id=row.grader_id,
        released=row.released,
        version=row.version,
        updated_at=row.updated_at,
    )


def _submission_view(row: Any, grade: GradeView | None = None) -> SubmissionView:
    return SubmissionView(
        submission_id=row.submission_id,
        tenant_id=row.tenant_id,
        assignment_id=row.assignment_id,
        batch_id=row.batch_id,
        student_id=row.student_id,
        attempt=row.attempt,
        text=row.body_text,
        file_ids=tuple(row.file_ids),
        link=row.link,
        submitted_at=row.submitted_at,
        late=row.late,
        penalty_bp=row.penalty_bp,
        penalty_explanation=row.penalty_explanation,
        grade=grade,
    )


def encode_token(values: Sequence[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode()


def decode_token(token: str, size: int) -> list[str] | None:
    if not token:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        values = None
    if not isinstance(values, list) or len(values) != size:
        raise InvalidArgument([FieldViolation("page_token", "not a token from this list")])
    return [str(v) for v in values]


def _page_size(size: int, default: int = 50) -> int:
    return size or default


def _not_found(kind: str, ident: str) -> NotFound:
    return NotFound(f"{kind} {ident} not found", reason=f"{kind.upper()}_NOT_FOUND")


# --------------------------------------------------------------------------------------------


class Assessment:
    def __init__(
        self,
        db: Database,
        files: FileStore,
        emit: Emit,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.files = files
        self.emit = emit
        self.clock = clock

    async def _actor(
        self, session: AsyncSession, p: Principal, batch_id: str
    ) -> tuple[domain.Actor, set[str]]:
        """The caller with their roles in `batch_id`, plus the sections they are enrolled in."""
        rows = await session.execute(
            select(store.batch_members.c.role, store.batch_members.c.section_id).where(
                store.batch_members.c.tenant_id == p.tenant_id,
                store.batch_members.c.batch_id == batch_id,
                store.batch_members.c.user_id == p.user_id,
                store.batch_members.c.active.is_(True),
            )
        )
        roles: set[domain.BatchRole] = set()
        sections: set[str] = set()
        for row in rows:
            roles.add(domain.BatchRole(row.role))
            sections.add(row.section_id)
        if await store.owns_batch_course(session, p.tenant_id, batch_id, p.user_id):
            roles.add(domain.BatchRole.INSTRUCTOR)  # owners teach every batch of their course
        actor = domain.Actor(
            user_id=p.user_id,
            tenant_id=p.tenant_id,
            permissions=p.permissions,
            batch_roles=frozenset(roles),
            is_service=p.is_service,
        )
        return actor, sections

    async def _assignment(
        self,
        session: AsyncSession,
        p: Principal,
        assignment_id: str,
        *,
        for_update: bool = False,
        for_key_share: bool = False,
    ) -> domain.Assignment:
        assignment = await store.load_assignment(
            session,
            p.tenant_id,
            assignment_id,
            for_update=for_update,
            for_key_share=for_key_share,
        )
        if assignment is None:
            raise _not_found("assignment", assignment_id)
        return assignment

    async def _visible_assignment(
        self, session: AsyncSession, p: Principal, assignment_id: str
    ) -> tuple[domain.Assignment, domain.Actor]:
        """Staff see drafts; students see published assignments of their batch (and section)."""
        assignment = await self._assignment(session, p, assignment_id)
        actor, sections = await self._actor(session, p, assignment.batch_id)
        domain.require_member(actor, assignment.batch_id)
        if not actor.is_staff and (
            assignment.state is not domain.AssignmentState.PUBLISHED
            or (assignment.section_id and assignment.section_id not in sections)
        ):
            raise _not_found("assignment", assignment_id)
        return assignment, actor

    # --- assignments ------------------------------------------------------------------------

    async def create_assignment(
        self, uow: UnitOfWork, p: Principal, cmd: NewAssignment
    ) -> domain.Assignment:
        actor, _ = await self._actor(uow.session, p, cmd.batch_id)
        domain.require_instructor(actor, cmd.batch_id)
        points = domain.check_new_assignment(
            open_time=cmd.open_time,
            due_time=cmd.due_time,
            close_time=cmd.close_time,
            rubric=cmd.rubric,
            max_points_centi=cmd.max_points_centi,
            submission_types=cmd.submission_types,
            allowed_file_types=cmd.allowed_file_types,
            late_policy=cmd.late_policy,
        )
        rubric = domain.with_criterion_ids(cmd.rubric)
        now = self.clock()
        assignment = domain.Assignment(
            assignment_id=str(uuid.uuid4()),
            tenant_id=p.tenant_id,
            course_id=cmd.course_id,
            batch_id=cmd.batch_id,
            section_id=cmd.section_id,
            title=cmd.title,
            instructions=cmd.instructions,
            attachment_file_ids=cmd.attachment_file_ids,
            max_points_centi=points,
            submission_types=cmd.submission_types,
            allowed_file_types=cmd.allowed_file_types,
            max_attempts=cmd.max_attempts,
            open_time=cmd.open_time,
            due_time=cmd.due_time,
            close_time=cmd.close_time,
            rubric=rubric,
            late_policy=cmd.late_policy,
            category=cmd.category,
            state=domain.AssignmentState.DRAFT,
            created_by=p.user_id,
            created_at=now,
            updated_at=now,
        )
        await uow.session.execute(
            insert(store.assignments).values(**store.assignment_values(assignment))
        )
        return assignment

    async def publish_assignment(
        self, uow: UnitOfWork, p: Principal, assignment_id: str
    ) -> domain.Assignment:
        assignment = await self._assignment(uow.session, p, assignment_id, for_update=True)
        actor, _ = await self._actor(uow.session, p, assignment.batch_id)
        domain.require_instructor(actor, assignment.batch_id)
        if assignment.state is domain.AssignmentState.PUBLISHED:
            return assignment  # publishing twice is a no-op, not an error
        now = self.clock()
        published = replace(
            assignment,
            state=domain.AssignmentState.PUBLISHED,
            published_at=now,
            version=assignment.version + 1,
            updated_at=now,
        )
        await uow.session.execute(
            update(store.assignments)
            .where(store.assignments.c.assignment_id == assignment_id)
            .values(
                state=published.state.value,
                published_at=now,
                version=published.version,
                updated_at=now,
            )
        )
        self.emit(uow, domain.AssignmentPublished(published, now))
        return published

    async def _managed_assignment(
        self, session: AsyncSession, p: Principal, assignment_id: str, etag: str
    ) -> domain.Assignment:
        """The assignment locked for a write by an instructor of its batch, at `etag`."""
        assignment = await self._assignment(session, p, assignment_id, for_update=True)
        actor, _ = await self._actor(session, p, assignment.batch_id)
        domain.require_instructor(actor, assignment.batch_id)
        if not etag_matches(etag, assignment.version):
            raise Aborted(
                f"assignment {assignment_id} changed since it was read (etag "
                f"{etag_of(assignment.version)}); re-read it and retry",
                reason="ETAG_MISMATCH",
            )
        return assignment

    async def new_attachments(
        self, p: Principal, assignment_id: str, file_ids: Sequence[str]
    ) -> list[str]:
        """The attachments an edit adds (files not attached yet), for checking them against the
        files service before the transaction: like at creation, they must be the editor's own.
        Files attached before stay, whoever attached them."""
        if not file_ids:
            return []
        async with self.db.unit_of_work(tenant_id=p.tenant_id) as uow:
            current = await store.load_assignment(uow.session, p.tenant_id, assignment_id)
        attached = set(current.attachment_file_ids) if current is not None else set()
        return [f for f in file_ids if f not in attached]

    async def update_assignment(
        self,
        uow: UnitOfWork,
        p: Principal,
        assignment_id: str,
        etag: str,
        changes: dict[str, Any],
    ) -> domain.Assignment:
        session = uow.session
        current = await self._managed_assignment(session, p, assignment_id, etag)
        work = await store.work_facts(session, p.tenant_id, assignment_id)
        now = self.clock()
        edited, changed = domain.edit_assignment(current, changes, work, now)
        if not changed:
            return current  # the same values again: nothing to write or announce
        await store.save_assignment_edit(session, edited, due_time_changed="due_time" in changed)
        announced = domain.announced_changes(edited, changed)
        if announced:
            self.emit(
                uow,
                domain.AssignmentUpdated(
                    assignment=edited,
                    changed_fields=announced,
                    previous_due_time=current.due_time if "due_time" in changed else None,
                    updated_by=p.user_id,
                    occurred_at=now,
                ),
            )
        return edited

    async def delete_assignment(
        self, uow: UnitOfWork, p: Principal, assignment_id: str, etag: str
    ) -> None:
        session = uow.session
        assignment = await self._managed_assignment(session, p, assignment_id, etag)
        domain.check_deletable(
            assignment, await store.work_facts(session, p.tenant_id, assignment_id)
        )
        await store.delete_assignment(session, p.tenant_id, assignment_id)
        if assignment.state is domain.AssignmentState.PUBLISHED:
            # Students were told about it; drafts were never announced.
            self.emit(uow, domain.AssignmentDeleted(assignment, p.user_id, self.clock()))

    async def get_assignment(self, p: Principal, assignment_id: str) -> domain.Assignment:
        async with self.db.unit_of_work(tenant_id=p.tenant_id) as uow:
            assignment, _ = await self._visible_assignment(uow.session, p, assignment_id)
            return assignment

    async def list_assignments(
        self, p: Principal, batch_id: str, page_size: int, page_token: str
    ) -> tuple[list[domain.Assignment], str]:
        after = decode_token(page_token, 2)
        limit = _page_size(page_size)
        async with self.db.unit_of_work(tenant_id=p.tenant_id) as uow:
            actor, sections = await self._actor(uow.session, p, batch_id)
            domain.require_member(actor, batch_id)
            items = await store.batch_assignments(
                uow.session,
                p.tenant_id,
                batch_id,
                published_only=not actor.is_staff,
                after=(datetime.fromisoformat(after[0]), after[1]) if after else None,
                limit=limit + 1,
            )
        if not actor.is_staff:
            items = [a for a in items if not a.section_id or a.section_id in sections]
        token = ""
        if len(items) > limit:
            items = items[:limit]
            token = encode_token([items[-1].due_time.isoformat(), items[-1].assignment_id])
        return items, token

    async def set_exception(
        self,
        uow: UnitOfWork,
        p: Principal,
        *,
        assignment_id: str,
        student_id: str,
        extended_due_time: datetime | None,
        extended_close_time: datetime | None,
        exempt: bool,
        reason: str,
    ) -> domain.StudentException:
        assignment = await self._assignment(uow.session, p, assignment_id)
        actor, _ = await self._actor(uow.session, p, assignment.batch_id)
        domain.require_instructor(actor, assignment.batch_id)
        roles = await store.batch_roles(uow.session, p.tenant_id, assignment.batch_id, student_id)
        if domain.BatchRole.STUDENT not in roles:
            raise InvalidArgument(
                [FieldViolation("student_id", "is not a student of the assignment's batch")]
            )
        violations = []
        if extended_due_time is not None and extended_due_time <= assignment.due_time:
            violations.append(
                FieldViolation("extended_due_time", "must be after the assignment's due time")
            )
        if extended_close_time is not None and extended_close_time <= assignment.close_time:
            violations.append(
                FieldViolation("extended_close_time", "must be after the assignment's close time")
            )
        if violations:
            raise InvalidArgument(violations)
        exception = domain.StudentException(
            assignment_id=assignment_id,
            student_id=student_id,
            extended_due_time=extended_due_time,
            extended_close_time=extended_close_time,
            exempt=exempt,
            reason=reason,
            granted_by=p.user_id,
            updated_at=self.clock(),
        )
        await store.save_exception(uow.session, p.tenant_id, exception)
        return exception

    # --- submissions ------------------------------------------------------------------------

    async def check_submission_files(
        self, p: Principal, assignment_id: str, file_ids: Sequence[str]
    ) -> None:
        """Before the transaction (it calls the files service): the files exist, are the
        student's own and of an allowed type."""
        if not file_ids:
            return
        async with self.db.unit_of_work(tenant_id=p.tenant_id) as uow:
            assignment, _ = await self._visible_assignment(uow.session, p, assignment_id)
        known = await self.files.describe(p.tenant_id, file_ids)
        facts = {fid: domain.FileFacts(f.owner_id, f.content_type) for fid, f in known.items()}
        domain.check_files(file_ids, facts, p.user_id, assignment.allowed_file_types)

    async def grant_submission_files(
        self, p: Principal, submission_id: str, batch_id: str, file_ids: Sequence[str]
    ) -> None:
        """After the submit committed (it calls the files service): the submission's graders may
        read its files. Idempotent, so a retried submit simply grants again."""
        if file_ids:
            await self.files.grant(p.tenant_id, file_ids, submission_resource(submission_id))

    async def submission_file_link(
        self, p: Principal, submission_id: str, file_id: str
    ) -> DownloadLink:
        async with self.db.unit_of_work(tenant_id=p.tenant_id) as uow:
            row = await store.load_submission(uow.session, p.tenant_id, submission_id)
            if row is None:
                raise _not_found("submission", submission_id)
            actor, _ = await self._actor(uow.session, p, row.batch_id)
            if not domain.may_see_student_work(actor, row.student_id):
                raise PermissionDenied(
                    "students see only their own submissions", reason="NOT_YOUR_SUBMISSION"
                )
            grade = (
                await store.grades_of_submissions(uow.session, p.tenant_id, [submission_id])
            ).get(submission_id)
        # Feedback files are the student's once the grade is released; graders see them always.
        feedback = (
            set(grade.feedback_file_ids)
            if grade is not None and (actor.is_staff or grade.released)
            else set()
        )
        if file_id not in row.file_ids and file_id not in feedback:
            raise _not_found("file", file_id)
        return await self.files.download_link(
            p.tenant_id, file_id, submission_resource(submission_id)
        )

    async def check_attachments(self, p: Principal, file_ids: Sequence[str]) -> None:
        """Before creating an assignment (it calls files): attachments are the author's own."""
        if not file_ids:
            return
        known = await self.files.describe(p.tenant_id, file_ids)
        facts = {fid: domain.FileFacts(f.owner_id, f.content_type) for fid, f in known.items()}
        domain.check_files(file_ids, facts, p.user_id, (), field_name="attachment_file_ids")

    async def grant_attachments_of(
        self, p: Principal, assignment_id: str, file_ids: Sequence[str]
    ) -> None:
        """After the assignment committed: whoever may see it may read its attachments."""
        if file_ids:
            await self.files.grant(p.tenant_id, file_ids, assignment_resource(assignment_id))

    async def attachment_link(self, p: Principal, assignment_id: str, file_id: str) -> DownloadLink:
        async with self.db.unit_of_work(tenant_id=p.tenant_id) as uow:
            assignment, _ = await self._visible_assignment(uow.session, p, assignment_id)
        if file_id not in assignment.attachment_file_ids:
            raise _not_found("file", file_id)
        return await self.files.download_link(
            p.tenant_id, file_id, assignment_resource(assignment_id)
        )

    async def check_feedback_files(self, p: Principal, file_ids: Sequence[str]) -> None:
        """Before grading (it calls the files service): feedback files are the grader's own."""
        if not file_ids:
            return
        known = await self.files.describe(p.tenant_id, file_ids)
        facts = {fid: domain.FileFacts(f.owner_id, f.content_type) for fid, f in known.items()}
        domain.check_files(file_ids, facts, p.user_id, (), field_name="feedback_file_ids")

    async def submit(
        self,
        uow: UnitOfWork,
        p: Principal,
        assignment_id: str,
        content: domain.SubmissionContent,
    ) -> SubmissionView:
        session = uow.session
        assignment = await self._assignment(session, p, assignment_id, for_key_share=True)
        actor, sections = await self._actor(session, p, assignment.batch_id)
        domain.require_student(actor, assignment.batch_id)
        if assignment.state is not domain.AssignmentState.PUBLISHED:
            raise _not_found("assignment", assignment_id)  # drafts do not exist for students
        if assignment.section_id and assignment.section_id not in sections:
            raise _not_found("assignment", assignment_id)  # another section's: invisible
        exception = await store.load_exception(session, p.tenant_id, assignment_id, p.user_id)
        window = domain.window_for(assignment, exception)
        now = self.clock()
        domain.check_submission(assignment, window, content, now)
        attempt = await store.claim_attempt(
            session, p.tenant_id, assignment_id, p.user_id, assignment.max_attempts
        )
        if attempt is None:
            raise FailedPrecondition(
                f"all {assignment.max_attempts} attempt(s) are used",
                reason="MAX_ATTEMPTS_REACHED",
                metadata={"max_attempts": str(assignment.max_attempts)},
            )
        verdict = domain.late_verdict(window, assignment.late_policy, now)
        view = SubmissionView(
            submission_id=str(uuid.uuid4()),
            tenant_id=p.tenant_id,
            assignment_id=assignment_id,
            batch_id=assignment.batch_id,
            student_id=p.user_id,
            attempt=attempt,
            text=content.text,
            file_ids=content.file_ids,
            link=content.link,
            submitted_at=now,
            late=verdict.late,
            penalty_bp=verdict.penalty_bp,
            penalty_explanation=verdict.explanation,
        )
        await session.execute(
            insert(store.submissions).values(
                submission_id=view.submission_id,
                tenant_id=p.tenant_id,
                assignment_id=assignment_id,
                batch_id=assignment.batch_id,
                student_id=p.user_id,
                attempt=attempt,
                max_attempts=assignment.max_attempts,
                body_text=content.text,
                file_ids=list(content.file_ids),
                link=content.link,
                submitted_at=now,
                late=verdict.late,
                penalty_bp=verdict.penalty_bp,
                penalty_explanation=verdict.explanation,
            )
        )
        self.emit(
            uow,
            domain.SubmissionCreated(
                tenant_id=p.tenant_id,
                submission_id=view.submission_id,
                assignment_id=assignment_id,
                course_id=assignment.course_id,
                batch_id=assignment.batch_id,
                student_id=p.user_id,
                attempt=attempt,
                late=verdict.late,
                penalty_bp=verdict.penalty_bp,
                file_ids=content.file_ids,
                submitted_at=now,
            ),
        )
        return view

    async def _with_visible_grades(
        self, session: AsyncSession, p: Principal, actor: domain.Actor, rows: Sequence[Any]
    ) -> list[SubmissionView]:
        grades = await store.grades_of_submissions(
            session, p.tenant_id, [r.submission_id for r in rows]
        )
        out = []
        for row in rows:
            grade = grades.get(row.submission_id)
            visible = grade is not None and (actor.is_staff or grade.released)
            out.append(_submission_view(row, _grade_view(grade) if visible else None))
        return out

    async def get_submission(self, p: Principal, submission_id: str) -> SubmissionView:
        async with self.db.unit_of_work(tenant_id=p.tenant_id) as uow:
            row = await store.load_submission(uow.session, p.tenant_id, submission_id)
            if row is None:
                raise _not_found("submission", submission_id)
            actor, _ = await self._actor(uow.session, p, row.batch_id)
            if not domain.may_see_student_work(actor, row.student_id):
                raise PermissionDenied(
                    "students see only their own submissions", reason="NOT_YOUR_SUBMISSION"
                )
            return (await self._with_visible_grades(uow.session, p, actor, [row]))[0]

    async def list_submissions(
        self, p: Principal, assignment_id: str, student_id: str, page_size: int, page_token: str
    ) -> tuple[list[SubmissionView], str]:
        before = decode_token(page_token, 2)
        limit = _page_size(page_size)
        async with self.db.unit_of_work(tenant_id=p.tenant_id) as uow:
            assignment, actor = await self._visible_assignment(uow.session, p, assignment_id)
            if not actor.is_staff:
                if student_id and student_id != p.user_id:
                    raise PermissionDenied(
                        "students see only their own submissions", reason="NOT_YOUR_SUBMISSION"
                    )
                student_id = p.user_id
            rows = await store.list_submissions(
                uow.session,
                p.tenant_id,
                assignment.assignment_id,
                student_id or None,
                before=(datetime.fromisoformat(before[0]), before[1]) if before else None,
                limit=limit + 1,
            )
            token = ""
            if len(rows) > limit:
                rows = rows[:limit]
                token = encode_token([rows[-1].submitted_at.isoformat(), rows[-1].submission_id])
            return await self._with_visible_grades(uow.session, p, actor, rows), token

    # --- grading ----------------------------------------------------------------------------

    async def _audit(
        self,
        session: AsyncSession,
        p: Principal,
        *,
        grade_id: str,
        action: str,
        reason: str,
        previous_score: int | None,
        score: int,
        previous_released: bool,
        released: bool,
        changes: Sequence[str],
        at: datetime,
    ) -> None:
        await session.execute(
            insert(store.grade_audit).values(
                audit_id=str(uuid.uuid4()),
                tenant_id=p.tenant_id,
                grade_id=grade_id,
                action=action,
                actor_id=p.user_id,
                reason=reason,
                previous_score_centi=previous_score,
                score_centi=score,
                previous_released=previous_released,
                released=released,
                changes=list(changes),
                created_at=at,
            )
        )

    async def grade(self, uow: UnitOfWork, p: Principal, cmd: GradeCommand) -> GradeView:
        session = uow.session
        sub = await store.load_submission(session, p.tenant_id, cmd.submission_id)
        if sub is None:
            raise _not_found("submission", cmd.submission_id)
        assignment = await self._assignment(session, p, sub.assignment_id, for_key_share=True)
        actor, _ = await self._actor(session, p, assignment.batch_id)
        domain.require_grader(actor, assignment.batch_id)
        raw = domain.raw_score(assignment, cmd.score_centi, cmd.rubric_scores)
        score = domain.apply_penalty(raw, sub.penalty_bp)
        now = self.clock()
        rubric_json = [
            {"criterion_id": c.criterion_id, "level_index": c.level_index}
            for c in cmd.rubric_scores
        ]
        existing = await store.load_grade(
            session,
            p.tenant_id,
            assignment_id=assignment.assignment_id,
            student_id=sub.student_id,
            for_update=True,
        )
        if existing is None:
            return await self._first_grade(
                uow,
                p,
                assignment=assignment,
                sub=sub,
                cmd=cmd,
                raw=raw,
                score=score,
                rubric_json=rubric_json,
                now=now,
            )

        if cmd.expected_version is not None and cmd.expected_version != existing.version:
            raise Aborted(
                f"the grade is at version {existing.version}, not {cmd.expected_version}",
                reason="GRADE_VERSION_MISMATCH",
            )
        before = _grade_view(existing)
        released = existing.released or cmd.release
        changes = _changes(
            before,
            submission_id=sub.submission_id,
            raw=raw,
            score=score,
            rubric=cmd.rubric_scores,
            feedback=cmd.feedback,
            feedback_files=cmd.feedback_file_ids,
            released=released,
        )
        if not changes:
            return before  # same grade again: nothing to record
        if not cmd.reason.strip():
            raise InvalidArgument(
                [FieldViolation("reason", "changing an existing grade needs a reason")]
            )
        version = existing.version + 1
        await session.execute(
            update(store.grades)
            .where(store.grades.c.grade_id == existing.grade_id)
            .values(
                submission_id=sub.submission_id,
                raw_score_centi=raw,
                penalty_bp=sub.penalty_bp,
                score_centi=score,
                rubric_scores=rubric_json,
                feedback=cmd.feedback,
                feedback_file_ids=list(cmd.feedback_file_ids),
                grader_id=p.user_id,
                released=released,
                version=version,
                updated_at=now,
            )
        )
        await self._audit(
            session,
            p,
            grade_id=existing.grade_id,
            action="changed",
            reason=cmd.reason,
            previous_score=existing.score_centi,
            score=score,
            previous_released=existing.released,
            released=released,
            changes=changes,
            at=now,
        )
        after = replace(
            before,
            submission_id=sub.submission_id,
            raw_score_centi=raw,
            penalty_bp=sub.penalty_bp,
            score_centi=score,
            rubric_scores=cmd.rubric_scores,
            feedback=cmd.feedback,
            feedback_file_ids=cmd.feedback_file_ids,
            grader_id=p.user_id,
            released=released,
            version=version,
            updated_at=now,
        )
        self.emit(
            uow,
            domain.GradeChanged(
                tenant_id=p.tenant_id,
                grade_id=after.grade_id,
                assignment_id=after.assignment_id,
                submission_id=after.submission_id,
                student_id=after.student_id,
                previous_score_centi=existing.score_centi,
                score_centi=score,
                changed_by=p.user_id,
                reason=cmd.reason,
                released=released,
                occurred_at=now,
            ),
        )
        if released and not existing.released:
            self._emit_released(uow, assignment, after, now)
        return after

    async def _first_grade(
        self,
        uow: UnitOfWork,
        p: Principal,
        *,
        assignment: domain.Assignment,
        sub: Any,
        cmd: GradeCommand,
        raw: int,
        score: int,
        rubric_json: list[dict[str, Any]],
        now: datetime,
    ) -> GradeView:
        if cmd.expected_version:
            raise Aborted("the grade does not exist yet", reason="GRADE_VERSION_MISMATCH")
        view = GradeView(
            grade_id=str(uuid.uuid4()),
            submission_id=sub.submission_id,
            assignment_id=assignment.assignment_id,
            student_id=sub.student_id,
            raw_score_centi=raw,
            penalty_bp=sub.penalty_bp,
            score_centi=score,
            max_points_centi=assignment.max_points_centi,
            rubric_scores=cmd.rubric_scores,
            feedback=cmd.feedback,
            feedback_file_ids=cmd.feedback_file_ids,
            grader_id=p.user_id,
            released=cmd.release,
            version=1,
            updated_at=now,
        )
        claimed = await uow.session.scalar(
            insert(store.grades)
            .values(
                grade_id=view.grade_id,
                tenant_id=p.tenant_id,
                assignment_id=view.assignment_id,
                batch_id=assignment.batch_id,
                student_id=view.student_id,
                submission_id=view.submission_id,
                raw_score_centi=raw,
                penalty_bp=view.penalty_bp,
                score_centi=score,
                max_points_centi=view.max_points_centi,
                rubric_scores=rubric_json,
                feedback=view.feedback,
                feedback_file_ids=list(view.feedback_file_ids),
                grader_id=p.user_id,
                released=view.released,
                version=1,
                updated_at=now,
            )
            .on_conflict_do_nothing()
            .returning(store.grades.c.grade_id)
        )
        if claimed is None:
            raise Aborted(
                "another grader graded this student at the same moment; reload and retry",
                reason="GRADE_CONFLICT",
            )
        await self._audit(
            uow.session,
            p,
            grade_id=view.grade_id,
            action="created",
            reason=cmd.reason,
            previous_score=None,
            score=score,
            previous_released=False,
            released=view.released,
            changes=[f"score: {score}", f"attempt graded: {sub.attempt}"],
            at=now,
        )
        self.emit(
            uow,
            domain.GradeChanged(
                tenant_id=p.tenant_id,
                grade_id=view.grade_id,
                assignment_id=view.assignment_id,
                submission_id=view.submission_id,
                student_id=view.student_id,
                previous_score_centi=None,
                score_centi=score,
                changed_by=p.user_id,
                reason=cmd.reason,
                released=view.released,
                occurred_at=now,
            ),
        )
        if view.released:
            self._emit_released(uow, assignment, view, now)
        return view

    def _emit_released(
        self, uow: UnitOfWork, assignment: domain.Assignment, grade: GradeView, now: datetime
    ) -> None:
        self.emit(
            uow,
            domain.GradeReleased(
                tenant_id=assignment.tenant_id,
                grade_id=grade.grade_id,
                assignment_id=assignment.assignment_id,
                submission_id=grade.submission_id,
                course_id=assignment.course_id,
                batch_id=assignment.batch_id,
                student_id=grade.student_id,
                assignment_title=assignment.title,
                score_centi=grade.score_centi,
                max_points_centi=grade.max_points_centi,
                occurred_at=now,
            ),
        )

    async def release(
        self, uow: UnitOfWork, p: Principal, assignment_id: str, grade_ids: Sequence[str]
    ) -> list[GradeView]:
        session = uow.session
        assignment = await self._assignment(session, p, assignment_id)
        actor, _ = await self._actor(session, p, assignment.batch_id)
        domain.require_grader(actor, assignment.batch_id)
        stmt = (
            select(store.grades)
            .where(
                store.grades.c.tenant_id == p.tenant_id,
                store.grades.c.assignment_id == assignment_id,
            )
            .order_by(store.grades.c.student_id)
            .with_for_update()
        )
        if grade_ids:
            stmt = stmt.where(store.grades.c.grade_id.in_(list(grade_ids)))
        rows = list((await session.execute(stmt)).all())
        missing = set(grade_ids) - {r.grade_id for r in rows}
        if missing:
            raise InvalidArgument(
                [
                    FieldViolation(f"grade_ids[{i}]", "not a grade of this assignment")
                    for i, gid in enumerate(grade_ids)
                    if gid in missing
                ]
            )
        now = self.clock()
        out: list[GradeView] = []
        for row in rows:
            if row.released:
                continue
            view = replace(_grade_view(row), released=True, version=row.version + 1, updated_at=now)
            await session.execute(
                update(store.grades)
                .where(store.grades.c.grade_id == row.grade_id)
                .values(released=True, version=view.version, updated_at=now)
            )
            await self._audit(
                session,
                p,
                grade_id=row.grade_id,
                action="released",
                reason="bulk release",
                previous_score=row.score_centi,
                score=row.score_centi,
                previous_released=False,
                released=True,
                changes=["released: false → true"],
                at=now,
            )
            self._emit_released(uow, assignment, view, now)
            out.append(view)
        return out

    async def get_grade(self, p: Principal, assignment_id: str, student_id: str) -> GradeView:
        async with self.db.unit_of_work(tenant_id=p.tenant_id) as uow:
            _, actor = await self._visible_assignment(uow.session, p, assignment_id)
            if not domain.may_see_student_work(actor, student_id):
                raise PermissionDenied(
                    "students see only their own grades", reason="NOT_YOUR_GRADE"
                )
            row = await store.load_grade(
                uow.session, p.tenant_id, assignment_id=assignment_id, student_id=student_id
            )
        # An unreleased grade does not exist for the student: same answer as no grade at all.
        if row is None or not (actor.is_staff or row.released):
            raise NotFound("no released grade yet", reason="GRADE_NOT_FOUND")
        return _grade_view(row)

    async def list_audit(
        self, p: Principal, grade_id: str, page_size: int, page_token: str
    ) -> tuple[list[AuditEntry], str]:
        after = decode_token(page_token, 1)
        limit = _page_size(page_size, 100)
        async with self.db.unit_of_work(tenant_id=p.tenant_id) as uow:
            grade = await store.load_grade_by_id(uow.session, p.tenant_id, grade_id)
            if grade is None:
                raise _not_found("grade", grade_id)
            actor, _ = await self._actor(uow.session, p, grade.batch_id)
            domain.require_grader(actor, grade.batch_id)
            t = store.grade_audit
            stmt = select(t).where(t.c.tenant_id == p.tenant_id, t.c.grade_id == grade_id)
            if after:
                stmt = stmt.where(t.c.seq > int(after[0]))
            rows = list((await uow.session.execute(stmt.order_by(t.c.seq).limit(limit + 1))).all())
        token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            token = encode_token([str(rows[-1].seq)])
        return [
            AuditEntry(
                audit_id=r.audit_id,
                grade_id=r.grade_id,
                action=r.action,
                actor_id=r.actor_id,
                reason=r.reason,
                previous_score_centi=r.previous_score_centi,
                score_centi=r.score_centi,
                previous_released=r.previous_released,
                released=r.released,
                changes=tuple(r.changes),
                created_at=r.created_at,
            )
            for r in rows
        ], token

    # --- reminders ------------------------------------------------------------------------

    async def announce_due_soon(
        self, horizon: timedelta = timedelta(hours=24), limit: int = 100
    ) -> int:
        """One sweep over every tenant: assignments due within `horizon` that were not announced
        get one AssignmentDueSoon naming the students who have not submitted (and are not
        exempt). SKIP LOCKED lets several replicas sweep without announcing anything twice."""
        now = self.clock()
        a, m, sub, exc = (
            store.assignments,
            store.batch_members,
            store.submissions,
            store.student_exceptions,
        )
        async with self.db.unit_of_work(tenant_id=None) as uow:
            rows = (
                await uow.session.execute(
                    select(a)
                    .where(
                        a.c.state == domain.AssignmentState.PUBLISHED.value,
                        a.c.due_soon_sent_at.is_(None),
                        a.c.due_time > now,
                        a.c.due_time <= now + horizon,
                    )
                    .order_by(a.c.due_time)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                assignment = store.assignment_of(row)
                members = select(m.c.user_id).where(
                    m.c.tenant_id == assignment.tenant_id,
                    m.c.batch_id == assignment.batch_id,
                    m.c.role == domain.BatchRole.STUDENT.value,
                    m.c.active.is_(True),
                    ~select(sub.c.submission_id)
                    .where(
                        sub.c.assignment_id == assignment.assignment_id,
                        sub.c.student_id == m.c.user_id,
                    )
                    .exists(),
                    ~select(exc.c.student_id)
                    .where(
                        exc.c.assignment_id == assignment.assignment_id,
                        exc.c.student_id == m.c.user_id,
                        exc.c.exempt.is_(True),
                    )
                    .exists(),
                )
                if assignment.section_id:
                    members = members.where(m.c.section_id == assignment.section_id)
                pending = tuple(sorted(await uow.session.scalars(members.distinct())))
                if pending:
                    self.emit(uow, domain.AssignmentDueSoon(assignment, pending, now))
                await uow.session.execute(
                    update(a)
                    .where(a.c.assignment_id == assignment.assignment_id)
                    .values(due_soon_sent_at=now)
                )
        return len(rows)

    # --- gradebook --------------------------------------------------------------------------

    async def set_categories(
        self, uow: UnitOfWork, p: Principal, batch_id: str, categories: Sequence[domain.Category]
    ) -> list[domain.Category]:
        actor, _ = await self._actor(uow.session, p, batch_id)
        domain.require_instructor(actor, batch_id)
        domain.check_categories(categories)
        t = store.gradebook_categories
        await uow.session.execute(
            t.delete().where(t.c.tenant_id == p.tenant_id, t.c.batch_id == batch_id)
        )
        if categories:
            await uow.session.execute(
                insert(t),
                [
                    {
                        "tenant_id": p.tenant_id,
                        "batch_id": batch_id,
                        "position": index,
                        "name": c.name,
                        "weight_bp": c.weight_bp,
                        "drop_lowest": c.drop_lowest,
                    }
                    for index, c in enumerate(categories)
                ],
            )
        return list(categories)

    async def gradebook(self, p: Principal, batch_id: str) -> Gradebook:
        async with self.db.unit_of_work(tenant_id=p.tenant_id) as uow:
            session = uow.session
            actor, _ = await self._actor(session, p, batch_id)
            domain.require_grader(actor, batch_id)
            categories = await store.load_categories(session, p.tenant_id, batch_id)
            assignments = await store.batch_assignments(
                session, p.tenant_id, batch_id, published_only=True
            )
            students = await store.batch_students(session, p.tenant_id, batch_id)
            grade_rows = await store.batch_grades(session, p.tenant_id, batch_id)
            exempt = await store.exempt_pairs(
                session, p.tenant_id, [a.assignment_id for a in assignments]
            )
        columns = [
            domain.Column(a.assignment_id, a.title, a.category, a.max_points_centi)
            for a in assignments
        ]
        released: dict[str, dict[str, domain.ReleasedGrade]] = {}
        for g in grade_rows:
            if g.released:
                released.setdefault(g.student_id, {})[g.assignment_id] = domain.ReleasedGrade(
                    g.score_centi, g.raw_score_centi, g.penalty_bp, g.attempt, g.penalty_explanation
                )
        # Students who left the batch but have grades stay in the book (history is kept).
        everyone = sorted(set(students) | set(released))
        rows = [
            domain.compute_row(
                student,
                columns,
                categories,
                released.get(student, {}),
                frozenset(a for s, a in exempt if s == student),
            )
            for student in everyone
        ]
        return Gradebook(batch_id, categories, columns, rows)

    async def explain(
        self, p: Principal, batch_id: str, student_id: str, assignment_id: str
    ) -> tuple[domain.Cell, domain.Row]:
        book = await self.gradebook(p, batch_id)
        row = next((r for r in book.rows if r.student_id == student_id), None)
        if row is None:
            raise _not_found("student", student_id)
        cell = next((c for c in row.cells if c.assignment_id == assignment_id), None)
        if cell is None:
            raise _not_found("assignment", assignment_id)
        return cell, row

    async def export_csv(self, p: Principal, batch_id: str) -> bytes:
        book = await self.gradebook(p, batch_id)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            ["student_id", *(c.title for c in book.columns), "current_percent", "final_percent"]
        )
        writer.writerow(["max_points", *(f"{c.max_points_centi / 100:g}" for c in book.columns)])
        for row in book.rows:
            cells = [
                {
                    domain.CellStatus.EXEMPT: "EX",
                    domain.CellStatus.UNGRADED: "",
                }.get(cell.status, f"{cell.score_centi / 100:g}")
                for cell in row.cells
            ]
            writer.writerow(
                [
                    row.student_id,
                    *cells,
                    f"{domain.percent(row.current):.2f}",
                    f"{domain.percent(row.final):.2f}",
                ]
            )
        return out.getvalue().encode()


def _changes(
    before: GradeView,
    *,
    submission_id: str,
    raw: int,
    score: int,
    rubric: Sequence[domain.RubricChoice],
    feedback: str,
    feedback_files: Sequence[str],
    released: bool,
) -> list[str]:
    """What a regrade changes, as "field: old → new" lines for the audit trail."""
    lines = []
    if before.submission_id != submission_id:
        lines.append(f"submission: {before.submission_id} → {submission_id}")
    if before.raw_score_centi != raw:
        lines.append(f"raw_score_centi: {before.raw_score_centi} → {raw}")
    if before.score_centi != score:
        lines.append(f"score_centi: {before.score_centi} → {score}")
    if tuple(before.rubric_scores) != tuple(rubric):
        old = ", ".join(f"{c.criterion_id}={c.level_index}" for c in before.rubric_scores)
        new = ", ".join(f"{c.criterion_id}={c.level_index}" for c in rubric)
        lines.append(f"rubric: [{old}] → [{new}]")
    if before.feedback != feedback:
        lines.append("feedback changed")
    if tuple(before.feedback_file_ids) != tuple(feedback_files):
        lines.append(f"feedback files: {list(before.feedback_file_ids)} → {list(feedback_files)}")
    if before.released != released:
        lines.append(f"released: {str(before.released).lower()} → {str(released).lower()}")
    return lines


__all__ = [
    "Assessment",
    "AuditEntry",
    "GradeCommand",
    "GradeView",
    "Gradebook",
    "NewAssignment",
    "Principal",
    "SubmissionView",
]
