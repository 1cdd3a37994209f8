# mypy: disable-error-code="import-untyped"
"""Domain events → `assessment_events.proto` (outbox), and the inbound enrollment consumer.

Batch membership is a local projection of courses' events: EnrollmentCreated (ACTIVE) and
EnrollmentPromoted add a member with their role, EnrollmentDropped removes them; CourseCreated
(owners) and BatchOpened (batch → course) make a course's owners instructors of its batches, as
courses itself treats them. Handlers run
inside the runtime consumer's transaction (inbox row included), so each event applies once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypedDict

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.assessment.v1 import assessment_events_pb2 as ev
from suuupra.courses.v1 import courses_events_pb2 as courses
from suuupra.courses.v1 import enrollment_enums_pb2 as enums

from services.assessment import domain, store
from suuupra_runtime.db import UnitOfWork
from suuupra_runtime.events import EventHandler
from suuupra_runtime.timestamps import timestamp_pb as _ts


class _About(TypedDict):
    tenant_id: str
    assignment_id: str
    course_id: str
    batch_id: str
    section_id: str
    title: str


def _about(a: domain.Assignment) -> _About:
    """The fields naming the assignment, shared by the assignment events."""
    return {
        "tenant_id": a.tenant_id,
        "assignment_id": a.assignment_id,
        "course_id": a.course_id,
        "batch_id": a.batch_id,
        "section_id": a.section_id,
        "title": a.title,
    }


def to_proto(event: domain.DomainEvent) -> tuple[Message, str]:
    """The proto event and its ordering key."""
    match event:
        case domain.AssignmentPublished():
            a = event.assignment
            return ev.AssignmentPublished(
                **_about(a),
                due_time=_ts(a.due_time),
                max_points_centi=a.max_points_centi,
                occurred_at=_ts(event.occurred_at),
            ), a.assignment_id
        case domain.AssignmentUpdated():
            a = event.assignment
            updated = ev.AssignmentUpdated(
                **_about(a),
                changed_fields=list(event.changed_fields),
                due_time=_ts(a.due_time),
                close_time=_ts(a.close_time),
                max_points_centi=a.max_points_centi,
                updated_by=event.updated_by,
                occurred_at=_ts(event.occurred_at),
            )
            if event.previous_due_time is not None:
                updated.previous_due_time.CopyFrom(_ts(event.previous_due_time))
            return updated, a.assignment_id
        case domain.AssignmentDeleted():
            a = event.assignment
            return ev.AssignmentDeleted(
                **_about(a),
                deleted_by=event.deleted_by,
                occurred_at=_ts(event.occurred_at),
            ), a.assignment_id
        case domain.AssignmentDueSoon():
            a = event.assignment
            return ev.AssignmentDueSoon(
                tenant_id=a.tenant_id,
                assignment_id=a.assignment_id,
                course_id=a.course_id,
                batch_id=a.batch_id,
                title=a.title,
                due_time=_ts(a.due_time),
                student_ids=list(event.student_ids),
                occurred_at=_ts(event.occurred_at),
            ), a.assignment_id
        case domain.SubmissionCreated():
            return ev.SubmissionCreated(
                tenant_id=event.tenant_id,
                submission_id=event.submission_id,
                assignment_id=event.assignment_id,
                course_id=event.course_id,
                batch_id=event.batch_id,
                student_id=event.student_id,
                attempt=event.attempt,
                late=event.late,
                penalty_basis_points=event.penalty_bp,
                file_ids=list(event.file_ids),
                submit_time=_ts(event.submitted_at),
                occurred_at=_ts(event.submitted_at),
            ), event.student_id
        case domain.GradeReleased():
            return ev.GradeReleased(
                tenant_id=event.tenant_id,
                grade_id=event.grade_id,
                assignment_id=event.assignment_id,
                submission_id=event.submission_id,
                course_id=event.course_id,
                batch_id=event.batch_id,
                student_id=event.student_id,
                assignment_title=event.assignment_title,
                score_centi=event.score_centi,
                max_points_centi=event.max_points_centi,
                occurred_at=_ts(event.occurred_at),
            ), event.grade_id
        case domain.GradeChanged():
            changed = ev.GradeChanged(
                tenant_id=event.tenant_id,
                grade_id=event.grade_id,
                assignment_id=event.assignment_id,
                submission_id=event.submission_id,
                student_id=event.student_id,
                score_centi=event.score_centi,
                changed_by=event.changed_by,
                reason=event.reason,
                released=event.released,
                occurred_at=_ts(event.occurred_at),
            )
            if event.previous_score_centi is not None:
                changed.previous_score_centi = event.previous_score_centi
            return changed, event.grade_id
    raise TypeError(f"unmapped event {type(event).__name__}")


def emit(uow: UnitOfWork, event: domain.DomainEvent) -> None:
    message, key = to_proto(event)
    # The tenant header names the event's tenant; the reminder sweep's transaction spans tenants.
    acting_tenant = uow.tenant_id
    uow.tenant_id = str(getattr(message, "tenant_id", "")) or acting_tenant
    try:
        uow.add_event(message, key=key)
    finally:
        uow.tenant_id = acting_tenant


_ROLES = {
    enums.ENROLLMENT_ROLE_INSTRUCTOR: domain.BatchRole.INSTRUCTOR,
    enums.ENROLLMENT_ROLE_TEACHING_ASSISTANT: domain.BatchRole.TEACHING_ASSISTANT,
    enums.ENROLLMENT_ROLE_STUDENT: domain.BatchRole.STUDENT,
    enums.ENROLLMENT_ROLE_OBSERVER: domain.BatchRole.OBSERVER,
}


def _at(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC) if ts.seconds or ts.nanos else datetime.now(UTC)


async def on_enrollment_created(event: courses.EnrollmentCreated, uow: UnitOfWork) -> None:
    role = _ROLES.get(event.role)
    if role is None or event.status != enums.ENROLLMENT_STATUS_ACTIVE:
        return  # waitlisted (or unknown role): not a member yet
    await store.set_membership(
        uow.session,
        tenant_id=event.tenant_id,
        batch_id=event.batch_id,
        user_id=event.user_id,
        role=role,
        course_id=event.course_id,
        section_id=event.section_id,
        active=True,
        at=_at(event.occurred_at),
    )


async def on_enrollment_promoted(event: courses.EnrollmentPromoted, uow: UnitOfWork) -> None:
    role = _ROLES.get(event.role)
    if role is None:
        return
    await store.set_membership(
        uow.session,
        tenant_id=event.tenant_id,
        batch_id=event.batch_id,
        user_id=event.user_id,
        role=role,
        course_id=event.course_id,
        section_id=event.section_id,
        active=True,
        at=_at(event.occurred_at),
    )


async def on_enrollment_dropped(event: courses.EnrollmentDropped, uow: UnitOfWork) -> None:
    role = _ROLES.get(event.role)
    if role is None:
        return
    await store.set_membership(
        uow.session,
        tenant_id=event.tenant_id,
        batch_id=event.batch_id,
        user_id=event.user_id,
        role=role,
        course_id=event.course_id,
        section_id="",
        active=False,
        at=_at(event.occurred_at),
    )


async def on_course_created(event: courses.CourseCreated, uow: UnitOfWork) -> None:
    await store.add_course_owners(
        uow.session, event.tenant_id, event.course_id, list(event.owner_ids)
    )


async def on_batch_opened(event: courses.BatchOpened, uow: UnitOfWork) -> None:
    await store.set_batch_course(uow.session, event.tenant_id, event.batch_id, event.course_id)


ENROLLMENT_HANDLERS: dict[type[Message], EventHandler] = {
    courses.CourseCreated: on_course_created,
    courses.BatchOpened: on_batch_opened,
    courses.EnrollmentCreated: on_enrollment_created,
    courses.EnrollmentPromoted: on_enrollment_promoted,
    courses.EnrollmentDropped: on_enrollment_dropped,
}
