"""Outbound: domain events → `notes_events.proto` on the outbox. Inbound: the courses service's
enrollment events → the cohort membership projection that cohort shares are checked against."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.courses.v1 import courses_events_pb2 as courses_ev
from suuupra.courses.v1 import enrollment_enums_pb2 as enrollment
from suuupra.notes.v1 import notes_events_pb2 as ev

from services.notes import domain
from services.notes.handlers import Notes
from suuupra_runtime.db import UnitOfWork
from suuupra_runtime.events import EventEnvelope, EventHandler, current_envelope, replay_stream
from suuupra_runtime.timestamps import timestamp_pb as _ts

COHORT_CONSUMER = "notes-cohorts"

_PERMISSION = {
    domain.Permission.READ: ev.SHARE_PERMISSION_READ,
    domain.Permission.EDIT: ev.SHARE_PERMISSION_EDIT,
}


def to_proto(event: domain.DomainEvent) -> Message:
    match event:
        case domain.NoteShared():
            return ev.NoteShared(
                tenant_id=event.tenant_id,
                note_id=event.note_id,
                share_id=event.share_id,
                owner_id=event.owner_id,
                title=event.title,
                permission=_PERMISSION[event.permission],
                batch_id=event.batch_id,
                recipient_ids=list(event.recipient_ids),
                occurred_at=_ts(event.occurred_at),
            )
        case domain.NoteShareRevoked():
            return ev.NoteShareRevoked(
                tenant_id=event.tenant_id,
                note_id=event.note_id,
                share_id=event.share_id,
                owner_id=event.owner_id,
                occurred_at=_ts(event.occurred_at),
            )
    raise TypeError(f"unmapped event {type(event).__name__}")


def emit(uow: UnitOfWork, event: domain.DomainEvent) -> None:
    # Keyed by note so a consumer sees one note's shares and revocations in order.
    uow.add_event(to_proto(event), key=event.note_id)


# --- inbound: enrollment → cohort membership ------------------------------------------------


def _occurred(stamp: Timestamp, header: str | None) -> datetime:
    """The event's time; the envelope's `Suuupra-Occurred-At` header when the payload lacks it."""
    if stamp.seconds or stamp.nanos:
        return stamp.ToDatetime(tzinfo=UTC)
    if header:
        parsed = datetime.fromisoformat(header)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


def membership_change(
    event: Message, header_time: str | None = None
) -> domain.MembershipChange | None:
    """What an enrollment event means for cohort membership (None: nothing)."""
    e: Any = event
    match event:
        case courses_ev.EnrollmentCreated():
            # A waitlisted learner is not (yet) a member of the cohort.
            if e.status != enrollment.ENROLLMENT_STATUS_ACTIVE:
                return None
            active = True
        case courses_ev.EnrollmentPromoted():
            active = True
        case courses_ev.EnrollmentDropped():
            active = False
        case _:
            return None
    if not (e.tenant_id and e.batch_id and e.user_id):
        return None
    return domain.MembershipChange(
        tenant_id=e.tenant_id,
        batch_id=e.batch_id,
        user_id=e.user_id,
        course_id=e.course_id,
        active=active,
        as_of=_occurred(e.occurred_at, header_time),
    )


ENROLLMENT_EVENTS = (
    courses_ev.EnrollmentCreated,
    courses_ev.EnrollmentPromoted,
    courses_ev.EnrollmentDropped,
)


def cohort_handlers(notes: Notes) -> Mapping[type[Message], EventHandler]:
    async def handle(event: Any, uow: UnitOfWork) -> None:
        change = membership_change(event, current_envelope().occurred_at)
        if change is not None:
            await notes.apply_membership(uow, change)

    return dict.fromkeys(ENROLLMENT_EVENTS, handle)


async def rebuild_cohorts(notes: Notes, nats_url: str) -> int:
    """Replay COURSES from its start into the membership projection; returns events handled.

    Safe on a live service and idempotent: an event older than the stored state changes nothing,
    so replaying onto an empty table or onto the current one gives the same membership."""

    async def apply(event: Any, envelope: EventEnvelope) -> None:
        change = membership_change(event, envelope.occurred_at)
        if change is not None:
            async with notes.db.unit_of_work(tenant_id=change.tenant_id) as uow:
                await notes.apply_membership(uow, change)

    return await replay_stream(
        nats_url, stream="COURSES", handlers=dict.fromkeys(ENROLLMENT_EVENTS, apply)
    )
