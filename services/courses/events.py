# mypy: disable-error-code="import-untyped"
"""Domain events → `courses_events.proto` (through the outbox), and identity's user events in.

Outbound events are keyed by the aggregate other services order by: enrollment events by batch
(a member list is rebuilt in order), course events by course.

Inbound: `UserDeactivated` / `UserDeleted` drop the user's active and waitlisted enrollments
(freed seats promote the waitlist). The runtime's inbox makes each event count once, however
often it is delivered or replayed.
"""

from __future__ import annotations

from google.protobuf.message import Message
from suuupra.courses.v1 import courses_events_pb2 as ev
from suuupra.courses.v1 import enrollment_enums_pb2 as enums
from suuupra.identity.v1 import identity_events_pb2 as identity_ev

from services.courses import domain
from services.courses.handlers import Courses
from suuupra_runtime.db import Database, UnitOfWork
from suuupra_runtime.events import EventConsumer, StreamSpec
from suuupra_runtime.timestamps import optional_timestamp_pb as ts

IDENTITY_STREAM = StreamSpec.for_domain("identity")
CONSUMER_NAME = "courses-identity-users"

ROLE_TO_PROTO = {
    domain.Role.INSTRUCTOR: enums.ENROLLMENT_ROLE_INSTRUCTOR,
    domain.Role.TEACHING_ASSISTANT: enums.ENROLLMENT_ROLE_TEACHING_ASSISTANT,
    domain.Role.STUDENT: enums.ENROLLMENT_ROLE_STUDENT,
    domain.Role.OBSERVER: enums.ENROLLMENT_ROLE_OBSERVER,
}
STATUS_TO_PROTO = {
    domain.Status.ACTIVE: enums.ENROLLMENT_STATUS_ACTIVE,
    domain.Status.WAITLISTED: enums.ENROLLMENT_STATUS_WAITLISTED,
    domain.Status.DROPPED: enums.ENROLLMENT_STATUS_DROPPED,
    domain.Status.WITHDRAWN: enums.ENROLLMENT_STATUS_WITHDRAWN,
    domain.Status.COMPLETED: enums.ENROLLMENT_STATUS_COMPLETED,
}


def to_proto(event: domain.DomainEvent) -> tuple[Message, str, str]:
    """(message, tenant, ordering key)."""
    match event:
        case domain.CourseCreated():
            return (
                ev.CourseCreated(
                    tenant_id=event.tenant_id, course_id=event.course_id, code=event.code,
                    title=event.title, department_id=event.department_id,
                    owner_ids=list(event.owner_ids), occurred_at=ts(event.occurred_at),
                ),
                event.tenant_id,
                event.course_id,
            )  # fmt: skip
        case domain.CoursePublished():
            return (
                ev.CoursePublished(
                    tenant_id=event.tenant_id, course_id=event.course_id, version=event.version,
                    title=event.title, batch_ids=list(event.batch_ids),
                    occurred_at=ts(event.occurred_at),
                ),
                event.tenant_id,
                event.course_id,
            )  # fmt: skip
        case domain.CourseArchived():
            return (
                ev.CourseArchived(
                    tenant_id=event.tenant_id, course_id=event.course_id,
                    occurred_at=ts(event.occurred_at),
                ),
                event.tenant_id,
                event.course_id,
            )  # fmt: skip
        case domain.BatchOpened():
            b = event.batch
            return (
                ev.BatchOpened(
                    tenant_id=b.tenant_id, course_id=b.course_id, batch_id=b.batch_id,
                    name=b.name, capacity=b.capacity, start_time=ts(b.start_at),
                    end_time=ts(b.end_at), occurred_at=ts(event.occurred_at),
                ),
                b.tenant_id,
                b.batch_id,
            )  # fmt: skip
        case domain.BatchClosed():
            b = event.batch
            return (
                ev.BatchClosed(
                    tenant_id=b.tenant_id, course_id=b.course_id, batch_id=b.batch_id,
                    occurred_at=ts(event.occurred_at),
                ),
                b.tenant_id,
                b.batch_id,
            )  # fmt: skip
        case domain.EnrollmentCreated():
            e = event.enrollment
            return (
                ev.EnrollmentCreated(
                    tenant_id=e.tenant_id, enrollment_id=e.enrollment_id,
                    course_id=e.course_id, batch_id=e.batch_id, section_id=e.section_id or "",
                    user_id=e.user_id, role=ROLE_TO_PROTO[e.role],
                    status=STATUS_TO_PROTO[e.status], waitlist_position=event.waitlist_position,
                    occurred_at=ts(event.occurred_at),
                ),
                e.tenant_id,
                e.batch_id,
            )  # fmt: skip
        case domain.EnrollmentPromoted():
            e = event.enrollment
            return (
                ev.EnrollmentPromoted(
                    tenant_id=e.tenant_id, enrollment_id=e.enrollment_id,
                    course_id=e.course_id, batch_id=e.batch_id, section_id=e.section_id or "",
                    user_id=e.user_id, role=ROLE_TO_PROTO[e.role],
                    occurred_at=ts(event.occurred_at),
                ),
                e.tenant_id,
                e.batch_id,
            )  # fmt: skip
        case domain.EnrollmentDropped():
            e = event.enrollment
            return (
                ev.EnrollmentDropped(
                    tenant_id=e.tenant_id, enrollment_id=e.enrollment_id,
                    course_id=e.course_id, batch_id=e.batch_id, user_id=e.user_id,
                    role=ROLE_TO_PROTO[e.role], status=STATUS_TO_PROTO[e.status],
                    reason=event.reason, occurred_at=ts(event.occurred_at),
                ),
                e.tenant_id,
                e.batch_id,
            )  # fmt: skip
        case domain.LessonCompleted():
            return (
                ev.LessonCompleted(
                    tenant_id=event.tenant_id, course_id=event.course_id,
                    batch_id=event.batch_id, lesson_id=event.lesson_id, user_id=event.user_id,
                    occurred_at=ts(event.occurred_at),
                ),
                event.tenant_id,
                event.batch_id,
            )  # fmt: skip
        case domain.CourseCompleted():
            return (
                ev.CourseCompleted(
                    tenant_id=event.tenant_id, course_id=event.course_id,
                    batch_id=event.batch_id, user_id=event.user_id,
                    occurred_at=ts(event.occurred_at),
                ),
                event.tenant_id,
                event.batch_id,
            )  # fmt: skip
    raise TypeError(f"unmapped event {type(event).__name__}")


def emit(uow: UnitOfWork, event: domain.DomainEvent) -> None:
    message, tenant, key = to_proto(event)
    # Service callers and consumers act without a token tenant; the header names the event's.
    acting = uow.tenant_id
    uow.tenant_id = tenant
    try:
        uow.add_event(message, key=key)
    finally:
        uow.tenant_id = acting


class IdentityEvents:
    """Handlers for identity's user lifecycle events."""

    def __init__(self, courses: Courses) -> None:
        self.courses = courses

    async def on_deactivated(self, event: identity_ev.UserDeactivated, uow: UnitOfWork) -> None:
        await self.courses.remove_user(uow, event.tenant_id, event.user_id, "user deactivated")

    async def on_deleted(self, event: identity_ev.UserDeleted, uow: UnitOfWork) -> None:
        await self.courses.remove_user(uow, event.tenant_id, event.user_id, "user deleted")


def identity_consumer(db: Database, nats_url: str, courses: Courses) -> EventConsumer:
    handlers = IdentityEvents(courses)
    return EventConsumer(
        db,
        nats_url,
        durable=CONSUMER_NAME,
        stream=IDENTITY_STREAM.name,
        handlers={
            identity_ev.UserDeactivated: handlers.on_deactivated,
            identity_ev.UserDeleted: handlers.on_deleted,
        },
        filter_subjects=[
            identity_ev.UserDeactivated.DESCRIPTOR.full_name,
            identity_ev.UserDeleted.DESCRIPTOR.full_name,
        ],
    )
