# mypy: disable-error-code="import-untyped"
"""Identity's UserDeactivated / UserDeleted over real JetStream: the user's enrollments end,
freed seats go to the waitlist, and a redelivered event changes nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import nats.js.errors
import pytest
from suuupra.courses.v1 import courses_events_pb2 as courses_ev
from suuupra.courses.v1 import courses_service_pb2 as pb
from suuupra.courses.v1 import enrollment_enums_pb2 as enums
from suuupra.identity.v1 import identity_events_pb2 as identity_ev

from services.courses.tests.harness import CoursesHarness, courses_harness
from suuupra_runtime.events import headers as h_

ACTIVE = enums.ENROLLMENT_STATUS_ACTIVE


@pytest.fixture
async def h(postgres_server_url: str, fresh_nats_url: str) -> AsyncIterator[CoursesHarness]:
    async with courses_harness(postgres_server_url, fresh_nats_url) as harness:
        yield harness


async def _publish(nats_url: str, event: identity_ev.UserDeactivated | identity_ev.UserDeleted,
                   event_id: str) -> None:  # fmt: skip
    nc = await nats.connect(nats_url)
    try:
        name = event.DESCRIPTOR.full_name
        await nc.jetstream().publish(
            name,
            event.SerializeToString(),
            headers={
                h_.MSG_ID: str(uuid.uuid4()),  # a new message each time: only the inbox dedupes
                h_.EVENT_ID: event_id,
                h_.EVENT_TYPE: name,
                h_.TENANT: event.tenant_id,
            },
        )
    finally:
        await nc.close()


async def _until(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def _last_on_stream(nats_url: str, subject: str) -> courses_ev.EnrollmentPromoted:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + 15
        while True:
            try:
                msg = await js.get_last_msg("COURSES", subject)
                break
            except nats.js.errors.NotFoundError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        assert msg.headers is not None and msg.headers[h_.EVENT_TYPE] == subject
        return courses_ev.EnrollmentPromoted.FromString(msg.data or b"")
    finally:
        await nc.close()


async def _inbox_count(h: CoursesHarness) -> int:
    rows = await h.wiring.database.fetch("SELECT count(*) AS n FROM inbox")
    return int(rows[0]["n"])


async def test_deactivated_user_is_dropped_once_and_waitlist_promoted(
    h: CoursesHarness, fresh_nats_url: str
) -> None:
    t = h.tenant(students=2)
    course = await h.published_course(t.instructor, capacity=1)
    leaving, waiting = t.students
    held = await h.enroll(leaving, course.batch_id)
    queued = await h.enroll(waiting, course.batch_id)
    assert queued.enrollment.status == enums.ENROLLMENT_STATUS_WAITLISTED
    # The service must be subscribed before we publish (streams are created by its NatsLink).
    await _until(h.wiring.definition.readiness[2])

    event_id = str(uuid.uuid4())
    event = identity_ev.UserDeactivated(tenant_id=t.tenant_id, user_id=leaving.user_id)
    await _publish(fresh_nats_url, event, event_id)

    async def status_of(enrollment_id: str) -> int:
        reply = await h.enrollments.GetEnrollment(
            pb.GetEnrollmentRequest(enrollment_id=enrollment_id), metadata=t.instructor.metadata
        )
        return int(reply.enrollment.status)

    async def dropped() -> bool:
        return await status_of(held.enrollment.enrollment_id) == enums.ENROLLMENT_STATUS_DROPPED

    await _until(dropped)
    assert await status_of(queued.enrollment.enrollment_id) == ACTIVE
    # The relay carried the promotion to JetStream, where other services (assessment) read it.
    promoted = await _last_on_stream(fresh_nats_url, "suuupra.courses.v1.EnrollmentPromoted")
    assert promoted.enrollment_id == queued.enrollment.enrollment_id
    assert promoted.user_id == waiting.user_id
    got = await h.enrollments.GetEnrollment(
        pb.GetEnrollmentRequest(enrollment_id=held.enrollment.enrollment_id),
        metadata=t.instructor.metadata,
    )
    assert got.enrollment.history[-1].reason == "user deactivated"

    # The user comes back and enrolls again; a redelivery of the old event must not touch it.
    again = await h.enrollments.Enroll(
        pb.EnrollRequest(
            request_id=str(uuid.uuid4()), batch_id=course.batch_id, user_id=leaving.user_id
        ),
        metadata=t.instructor.metadata,
    )
    handled = await _inbox_count(h)
    await _publish(fresh_nats_url, event, event_id)
    # A different event after it proves the duplicate was consumed (and skipped) first.
    other = h.person(t.tenant_id, "student")
    deleted = identity_ev.UserDeleted(tenant_id=t.tenant_id, user_id=other.user_id)
    await _publish(fresh_nats_url, deleted, str(uuid.uuid4()))

    async def next_handled() -> bool:
        return await _inbox_count(h) == handled + 1

    await _until(next_handled)
    assert await status_of(again.enrollment.enrollment_id) in (
        ACTIVE,
        enums.ENROLLMENT_STATUS_WAITLISTED,
    )
    rows = await h.wiring.database.fetch(
        "SELECT count(*) AS n FROM enrollment_history WHERE reason = 'user deactivated'"
    )
    assert rows[0]["n"] == 1
