"""Inbound events → notifications, and our delivery outcomes → `notifications_events.proto`.

One durable consumer per producing domain. Every handler runs inside the consumer's unit of work
(inbox rows + deliveries in one transaction per fetched batch); NoteShared, which arrives in
bursts, has a batch handler that does a whole batch's work in a handful of statements. Source
keys are `event:<event id>`, so each event yields at most one delivery per user and channel,
however often it is redelivered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.assessment.v1 import assessment_events_pb2 as assessment
from suuupra.courses.v1 import courses_events_pb2 as courses
from suuupra.courses.v1 import enrollment_enums_pb2 as enrollment
from suuupra.identity.v1 import identity_events_pb2 as identity
from suuupra.notes.v1 import notes_events_pb2 as notes
from suuupra.notifications.v1 import notification_pb2 as pb
from suuupra.notifications.v1 import notifications_events_pb2 as ev

from services.notifications import store
from services.notifications.domain import Status
from services.notifications.handlers import Notice, Notifications, SealedToken
from services.notifications.store import DeliveryRow
from services.notifications.worker import Outcomes
from suuupra_runtime.db import Database, UnitOfWork
from suuupra_runtime.events import (
    BatchHandler,
    EventConsumer,
    EventEnvelope,
    EventHandler,
    Received,
    StreamSpec,
    current_envelope,
)
from suuupra_runtime.timestamps import timestamp_pb

CONSUMED_DOMAINS = ("identity", "courses", "assessment", "notes")
# Batches handled at once per domain (EventConsumer.batches_in_flight), where events commute:
# a NoteShared's deliveries and inbox rows are its own (keyed by its event id), and the one thing
# batches share, users' unread counters, is locked in (tenant, user) order by its trigger and
# numbered under that lock. Other domains' events set projections in stream order: one batch.
# Three for NOTES: with one waiting on PostgreSQL and one on its commit, a third keeps the core
# busy (bench/README.md, notifications_inbox: 0.53-0.56x raw NATS with two, 0.56-0.59x with three).
_BATCHES_IN_FLIGHT = {"notes": 3}
_STUDENT = enrollment.ENROLLMENT_ROLE_STUDENT


def _stream_sequence() -> int:
    # Stream order of the courses event being handled: memberships keep the latest.
    return current_envelope().stream_sequence or 0


def _source(envelope: EventEnvelope | None = None) -> str:
    return f"event:{(envelope or current_envelope()).event_id}"


def _when(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "soon"
    return ts.ToDatetime(tzinfo=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _centi(value: int) -> str:
    return f"{value / 100:g}"


class InboundEvents:
    def __init__(self, notifications: Notifications) -> None:
        self.n = notifications

    def _now(self) -> dt.datetime:
        return self.n.clock()

    # --- identity -----------------------------------------------------------------------------

    async def user_created(self, e: identity.UserCreated, uow: UnitOfWork) -> None:
        await store.upsert_identity(
            uow.session,
            e.tenant_id,
            e.user_id,
            email=e.email,
            display_name=e.display_name,
            now=self._now(),
        )

    async def user_updated(self, e: identity.UserUpdated, uow: UnitOfWork) -> None:
        before = (await store.recipients(uow.session, e.tenant_id, [e.user_id]))[e.user_id]
        await store.upsert_identity(
            uow.session,
            e.tenant_id,
            e.user_id,
            email=e.email,
            display_name=e.display_name,
            now=self._now(),
        )
        if "email" in e.changed_fields:
            # Tell the old address too: an attacker changing the email must not go unnoticed.
            await self.n.notify(
                uow,
                tenant_id=e.tenant_id,
                user_ids=[e.user_id],
                kind="identity.account_changed",
                source=_source(),
                data={"changed": "email address"},
                email_override=before.email,
            )

    async def user_deactivated(self, e: identity.UserDeactivated, uow: UnitOfWork) -> None:
        await store.set_active(uow.session, e.tenant_id, e.user_id, False, self._now(), erase=False)

    async def user_activated(self, e: identity.UserActivated, uow: UnitOfWork) -> None:
        await store.set_active(uow.session, e.tenant_id, e.user_id, True, self._now(), erase=False)

    async def user_deleted(self, e: identity.UserDeleted, uow: UnitOfWork) -> None:
        # Deleted users' contact data is erased: nothing may reach them any more.
        await store.set_active(uow.session, e.tenant_id, e.user_id, False, self._now(), erase=True)

    async def _token_mail(
        self,
        e: identity.EmailVerificationRequested | identity.PasswordResetRequested,
        uow: UnitOfWork,
        kind: str,
    ) -> None:
        await store.upsert_identity(
            uow.session,
            e.tenant_id,
            e.user_id,
            email=e.email,
            display_name=e.display_name,
            now=self._now(),
        )
        await self.n.notify(
            uow,
            tenant_id=e.tenant_id,
            user_ids=[e.user_id],
            kind=kind,
            source=_source(),
            data={"display_name": e.display_name, "expires": _when(e.expire_time)},
            email_override=e.email,
            sealed=SealedToken(e.token.key_id, e.token.ciphertext),
        )

    async def verification_requested(
        self, e: identity.EmailVerificationRequested, uow: UnitOfWork
    ) -> None:
        await self._token_mail(e, uow, "identity.email_verification")

    async def reset_requested(self, e: identity.PasswordResetRequested, uow: UnitOfWork) -> None:
        await self._token_mail(e, uow, "identity.password_reset")

    # --- courses ------------------------------------------------------------------------------

    async def course_created(self, e: courses.CourseCreated, uow: UnitOfWork) -> None:
        await store.upsert_course(uow.session, e.tenant_id, e.course_id, e.title)

    async def course_published(self, e: courses.CoursePublished, uow: UnitOfWork) -> None:
        await store.upsert_course(uow.session, e.tenant_id, e.course_id, e.title)
        members: list[str] = []
        for batch_id in e.batch_ids:
            members += await store.batch_members(uow.session, e.tenant_id, batch_id, [_STUDENT])
        await self.n.notify(
            uow,
            tenant_id=e.tenant_id,
            user_ids=list(dict.fromkeys(members)),
            kind="courses.published",
            source=_source(),
            data={"course_title": e.title, "course_id": e.course_id},
        )

    async def enrollment_created(self, e: courses.EnrollmentCreated, uow: UnitOfWork) -> None:
        active = e.status == enrollment.ENROLLMENT_STATUS_ACTIVE
        waitlisted = e.status == enrollment.ENROLLMENT_STATUS_WAITLISTED
        batch = e.batch_id or e.course_id
        applied = await store.set_membership(
            uow.session,
            e.tenant_id,
            batch,
            e.user_id,
            course_id=e.course_id,
            role=e.role,
            active=active,
            now=self._now(),
            source_seq=_stream_sequence(),
        )
        if not applied or not (active or waitlisted):
            return
        title = await store.course_title(uow.session, e.tenant_id, e.course_id)
        await self.n.notify(
            uow,
            tenant_id=e.tenant_id,
            user_ids=[e.user_id],
            kind="courses.enrolled" if active else "courses.waitlisted",
            source=_source(),
            data={
                "course_title": title,
                "course_id": e.course_id,
                "position": str(e.waitlist_position),
            },
        )

    async def enrollment_promoted(self, e: courses.EnrollmentPromoted, uow: UnitOfWork) -> None:
        batch = e.batch_id or e.course_id
        if not await store.set_membership(
            uow.session,
            e.tenant_id,
            batch,
            e.user_id,
            course_id=e.course_id,
            role=e.role,
            active=True,
            now=self._now(),
            source_seq=_stream_sequence(),
        ):
            return  # a later enrollment event (e.g. a drop) already set this membership
        title = await store.course_title(uow.session, e.tenant_id, e.course_id)
        await self.n.notify(
            uow,
            tenant_id=e.tenant_id,
            user_ids=[e.user_id],
            kind="courses.waitlist_promoted",
            source=_source(),
            data={"course_title": title, "course_id": e.course_id},
        )

    async def enrollment_dropped(self, e: courses.EnrollmentDropped, uow: UnitOfWork) -> None:
        batch = e.batch_id or e.course_id
        await store.set_membership(
            uow.session,
            e.tenant_id,
            batch,
            e.user_id,
            course_id=e.course_id,
            role=e.role,
            active=False,
            now=self._now(),
            source_seq=_stream_sequence(),
        )

    # --- assessment ---------------------------------------------------------------------------

    async def assignment_published(
        self, e: assessment.AssignmentPublished, uow: UnitOfWork
    ) -> None:
        members = await store.batch_members(
            uow.session, e.tenant_id, e.batch_id or e.course_id, [_STUDENT]
        )
        await self.n.notify(
            uow,
            tenant_id=e.tenant_id,
            user_ids=members,
            kind="assessment.assignment_published",
            source=_source(),
            data={"title": e.title, "assignment_id": e.assignment_id, "due": _when(e.due_time)},
        )

    async def assignment_updated(self, e: assessment.AssignmentUpdated, uow: UnitOfWork) -> None:
        """A moved due date is news on every channel students chose for assignments; other
        changes (instructions, attachments, ...) only in the inbox."""
        members = await store.batch_members(
            uow.session, e.tenant_id, e.batch_id or e.course_id, [_STUDENT]
        )
        data = {"title": e.title, "assignment_id": e.assignment_id, "due": _when(e.due_time)}
        if "due_time" in e.changed_fields and e.HasField("previous_due_time"):
            kind = "assessment.due_changed"
            data["previous_due"] = _when(e.previous_due_time)
        else:
            kind = "assessment.assignment_updated"
            data["changes"] = ", ".join(f.replace("_", " ") for f in e.changed_fields)
        await self.n.notify(
            uow, tenant_id=e.tenant_id, user_ids=members, kind=kind, source=_source(), data=data
        )

    async def assignment_deleted(self, e: assessment.AssignmentDeleted, uow: UnitOfWork) -> None:
        members = await store.batch_members(
            uow.session, e.tenant_id, e.batch_id or e.course_id, [_STUDENT]
        )
        await self.n.notify(
            uow,
            tenant_id=e.tenant_id,
            user_ids=members,
            kind="assessment.assignment_removed",
            source=_source(),
            data={"title": e.title, "assignment_id": e.assignment_id},
        )

    async def due_soon(self, e: assessment.AssignmentDueSoon, uow: UnitOfWork) -> None:
        await self.n.notify(
            uow,
            tenant_id=e.tenant_id,
            user_ids=list(dict.fromkeys(e.student_ids)),
            kind="assessment.due_soon",
            source=_source(),
            data={"title": e.title, "assignment_id": e.assignment_id, "due": _when(e.due_time)},
        )

    async def grade_released(self, e: assessment.GradeReleased, uow: UnitOfWork) -> None:
        await self.n.notify(
            uow,
            tenant_id=e.tenant_id,
            user_ids=[e.student_id],
            kind="assessment.grade_released",
            source=_source(),
            data={
                "title": e.assignment_title,
                "assignment_id": e.assignment_id,
                "score": _centi(e.score_centi),
                "max_points": _centi(e.max_points_centi),
            },
        )

    # --- notes --------------------------------------------------------------------------------

    async def notes_shared(self, items: Sequence[Received], uow: UnitOfWork) -> None:
        """A batch of NoteShared events: owners, recipients and preferences in one query, the
        deliveries and inbox rows of all of them in one statement each."""
        s = uow.session
        shared: list[tuple[EventEnvelope, notes.NoteShared, list[str]]] = []
        for item in items:
            e: notes.NoteShared = item.event
            recipients = list(e.recipient_ids)
            if e.batch_id:
                recipients += await store.batch_members(s, e.tenant_id, e.batch_id)
            recipients = [u for u in dict.fromkeys(recipients) if u != e.owner_id]
            shared.append((item.envelope, e, recipients))
        people = await store.recipients_and_preferences(
            s, [(e.tenant_id, u) for _, e, users in shared for u in [e.owner_id, *users]]
        )
        notices = [
            Notice(
                tenant_id=e.tenant_id,
                user_ids=users,
                kind="notes.shared",
                source=_source(envelope),
                data={
                    "note_title": e.title,
                    "note_id": e.note_id,
                    "owner_name": people[(e.tenant_id, e.owner_id)][0].display_name,
                },
            )
            for envelope, e, users in shared
        ]
        await self.n.notify_many(uow, notices, known=people)

    def handlers(self) -> Mapping[str, Mapping[type[Message], EventHandler]]:
        """Handlers by consumed domain (one durable consumer each)."""
        return {
            "identity": {
                identity.UserCreated: self.user_created,
                identity.UserUpdated: self.user_updated,
                identity.UserDeactivated: self.user_deactivated,
                identity.UserActivated: self.user_activated,
                identity.UserDeleted: self.user_deleted,
                identity.EmailVerificationRequested: self.verification_requested,
                identity.PasswordResetRequested: self.reset_requested,
            },
            "courses": {
                courses.CourseCreated: self.course_created,
                courses.CoursePublished: self.course_published,
                courses.EnrollmentCreated: self.enrollment_created,
                courses.EnrollmentPromoted: self.enrollment_promoted,
                courses.EnrollmentDropped: self.enrollment_dropped,
            },
            "assessment": {
                assessment.AssignmentPublished: self.assignment_published,
                assessment.AssignmentUpdated: self.assignment_updated,
                assessment.AssignmentDeleted: self.assignment_deleted,
                assessment.AssignmentDueSoon: self.due_soon,
                assessment.GradeReleased: self.grade_released,
            },
            "notes": {},
        }

    def batch_handlers(self) -> Mapping[str, Mapping[type[Message], BatchHandler]]:
        """Batch handlers by consumed domain: events that arrive in bursts."""
        return {"notes": {notes.NoteShared: self.notes_shared}}


def consumed_streams() -> list[StreamSpec]:
    return [StreamSpec.for_domain(d) for d in CONSUMED_DOMAINS]


def build_consumers(
    db: Database,
    nats_url: str,
    inbound: InboundEvents,
    *,
    durable_prefix: str = "notifications",
    backoff: Sequence[float] = (1.0, 5.0, 30.0, 120.0),
    fetch_timeout: float = 1.0,
    batch_size: int = 256,
) -> list[EventConsumer]:
    batched = inbound.batch_handlers()
    return [
        EventConsumer(
            db,
            nats_url,
            durable=f"{durable_prefix}-{domain}",
            stream=StreamSpec.for_domain(domain).name,
            handlers=handlers,
            batch_handlers=batched.get(domain, {}),
            backoff=backoff,
            fetch_timeout=fetch_timeout,
            # A fetch returns what is pending, up to this many, without waiting for more; they
            # are handled in one transaction.
            batch_size=batch_size,
            batches_in_flight=_BATCHES_IN_FLIGHT.get(domain, 1),
        )
        for domain, handlers in inbound.handlers().items()
    ]


class OutcomeEvents(Outcomes):
    def sent(self, row: DeliveryRow, attempts: int, now: dt.datetime) -> Message | None:
        return ev.DeliverySent(
            tenant_id=row.tenant_id,
            delivery_id=row.delivery_id,
            user_id=row.user_id,
            kind=row.kind,
            channel=pb.Channel.ValueType(int(row.channel)),
            attempts=attempts,
            occurred_at=timestamp_pb(now),
        )

    def failed(
        self, row: DeliveryRow, status: Status, error: str, attempts: int, now: dt.datetime
    ) -> Message | None:
        return ev.DeliveryFailed(
            tenant_id=row.tenant_id,
            delivery_id=row.delivery_id,
            user_id=row.user_id,
            kind=row.kind,
            channel=pb.Channel.ValueType(int(row.channel)),
            status=pb.DeliveryStatus.ValueType(int(status)),
            error=error[:500],
            attempts=attempts,
            occurred_at=timestamp_pb(now),
        )


__all__: Sequence[Any] = ["InboundEvents", "OutcomeEvents", "build_consumers", "consumed_streams"]
