# mypy: disable-error-code="import-untyped"
"""Enrollment through gRPC: capacity and waitlist under 50 concurrent requests, promotion on
drop (and its events), one enrollment per user per batch, retries, service callers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from suuupra.courses.v1 import courses_events_pb2 as ev
from suuupra.courses.v1 import courses_service_pb2 as pb
from suuupra.courses.v1 import enrollment_enums_pb2 as enums

from services.courses.tests.harness import (
    CoursesHarness,
    code_of,
    courses_harness,
    error_reason,
    field_violations,
    rid,
    service_peer,
)

ACTIVE = enums.ENROLLMENT_STATUS_ACTIVE
WAITLISTED = enums.ENROLLMENT_STATUS_WAITLISTED


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[CoursesHarness]:
    async with courses_harness(postgres_server_url, nats_url) as harness:
        yield harness


async def test_fifty_concurrent_enrollments_fill_ten_seats_then_waitlist_in_arrival_order(
    h: CoursesHarness,
) -> None:
    t = h.tenant(students=50)
    course = await h.published_course(t.instructor, capacity=10)

    replies = await asyncio.gather(*(h.enroll(s, course.batch_id) for s in t.students))

    statuses = [r.enrollment.status for r in replies]
    assert statuses.count(ACTIVE) == 10
    assert statuses.count(WAITLISTED) == 40
    # Positions 1..40, each given once, at the moment of arrival.
    positions = sorted(
        r.enrollment.waitlist_position for r in replies if r.enrollment.status == WAITLISTED
    )
    assert positions == list(range(1, 41))

    # The roster, in arrival order: the first ten hold seats, then the waitlist in order.
    roster = await h.enrollments.ListEnrollments(
        pb.ListEnrollmentsRequest(batch_id=course.batch_id), metadata=t.instructor.metadata
    )
    listed = list(roster.enrollments)
    assert [e.status for e in listed] == [ACTIVE] * 10 + [WAITLISTED] * 40
    assert [e.waitlist_position for e in listed[10:]] == list(range(1, 41))
    by_id = {r.enrollment.enrollment_id: r.enrollment for r in replies}
    for e in listed[10:]:
        assert by_id[e.enrollment_id].waitlist_position == e.waitlist_position

    batch = await h.batches.GetBatch(
        pb.GetBatchRequest(batch_id=course.batch_id), metadata=t.instructor.metadata
    )
    assert (batch.batch.seats_taken, batch.batch.waitlist_length) == (10, 40)

    # Dropping a seat holder promotes the first waitlisted learner, and the events say so.
    leaver = listed[3]
    first_waiting = listed[10]
    owner = next(s for s in t.students if s.user_id == leaver.user_id)
    dropped = await h.enrollments.DropEnrollment(
        pb.DropEnrollmentRequest(request_id=rid(), enrollment_id=leaver.enrollment_id),
        metadata=owner.metadata,
    )
    assert dropped.enrollment.status == enums.ENROLLMENT_STATUS_DROPPED
    assert dropped.promoted.enrollment_id == first_waiting.enrollment_id
    assert dropped.promoted.status == ACTIVE
    assert [c.status for c in dropped.promoted.history] == [WAITLISTED, ACTIVE]
    assert dropped.promoted.history[-1].reason == "promoted from waitlist"

    after = await h.enrollments.ListEnrollments(
        pb.ListEnrollmentsRequest(batch_id=course.batch_id, status=WAITLISTED),
        metadata=t.instructor.metadata,
    )
    assert [e.enrollment_id for e in after.enrollments] == [e.enrollment_id for e in listed[11:]]
    assert [e.waitlist_position for e in after.enrollments] == list(range(1, 40))

    drops = [
        ev.EnrollmentDropped.FromString(p)
        for p in await h.outbox("suuupra.courses.v1.EnrollmentDropped")
    ]
    promotions = [
        ev.EnrollmentPromoted.FromString(p)
        for p in await h.outbox("suuupra.courses.v1.EnrollmentPromoted")
    ]
    created = [
        ev.EnrollmentCreated.FromString(p)
        for p in await h.outbox("suuupra.courses.v1.EnrollmentCreated")
    ]
    mine = [e for e in created if e.batch_id == course.batch_id]
    assert sum(e.status == ACTIVE for e in mine) == 10
    assert sorted(e.waitlist_position for e in mine if e.status == WAITLISTED) == list(range(1, 41))
    assert [(d.enrollment_id, d.user_id) for d in drops if d.batch_id == course.batch_id] == [
        (leaver.enrollment_id, leaver.user_id)
    ]
    assert [(p.enrollment_id, p.user_id) for p in promotions if p.batch_id == course.batch_id] == [
        (first_waiting.enrollment_id, first_waiting.user_id)
    ]


async def test_one_current_enrollment_per_user_per_batch_under_concurrency(
    h: CoursesHarness,
) -> None:
    t = h.tenant(students=1)
    course = await h.published_course(t.instructor, capacity=5)
    student = t.students[0]
    results = await asyncio.gather(
        *(h.enroll(student, course.batch_id) for _ in range(8)), return_exceptions=True
    )
    ok = [r for r in results if isinstance(r, pb.EnrollResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1
    assert len(refused) == 7
    assert {r.code() for r in refused} == {grpc.StatusCode.ALREADY_EXISTS}
    assert {error_reason(r) for r in refused} == {"ALREADY_ENROLLED"}
    # The database enforces it too, whatever the application does.
    rows = await h.wiring.database.fetch(
        "SELECT count(*) AS n FROM enrollments WHERE batch_id = $1", course.batch_id
    )
    assert rows[0]["n"] == 1
    with pytest.raises(Exception, match="enrollments_one_current"):
        await h.wiring.database.fetch(
            "INSERT INTO enrollments (enrollment_id, tenant_id, course_id, batch_id, user_id, "
            "role, status, created_at, updated_at) SELECT gen_random_uuid(), tenant_id, "
            "course_id, batch_id, user_id, role, 'waitlisted', now(), now() FROM enrollments "
            "WHERE batch_id = $1",
            course.batch_id,
        )


async def test_retry_with_same_request_id_enrolls_once(h: CoursesHarness) -> None:
    t = h.tenant(students=1)
    course = await h.published_course(t.instructor, capacity=5)
    request = pb.EnrollRequest(request_id=rid(), batch_id=course.batch_id)
    first = await h.enrollments.Enroll(request, metadata=t.students[0].metadata)
    again = await h.enrollments.Enroll(request, metadata=t.students[0].metadata)
    assert again.enrollment.enrollment_id == first.enrollment.enrollment_id
    other = pb.EnrollRequest(
        request_id=request.request_id, batch_id=course.batch_id, role=enums.ENROLLMENT_ROLE_OBSERVER
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.enrollments.Enroll(other, metadata=t.students[0].metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["request_id"]


async def test_self_enrollment_rules(h: CoursesHarness) -> None:
    t = h.tenant(students=2)
    course = await h.published_course(t.instructor, open_batch=False)
    student = t.students[0]
    # Not open yet: learners cannot enroll themselves, staff can.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.enroll(student, course.batch_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "BATCH_NOT_OPEN"
    by_staff = await h.enrollments.Enroll(
        pb.EnrollRequest(request_id=rid(), batch_id=course.batch_id, user_id=student.user_id),
        metadata=t.instructor.metadata,
    )
    assert by_staff.enrollment.status == ACTIVE
    assert by_staff.enrollment.history[0].reason == "enrolled by staff"
    # A student cannot enroll somebody else, nor themselves as an instructor.
    for request in (
        pb.EnrollRequest(request_id=rid(), batch_id=course.batch_id, user_id=student.user_id),
        pb.EnrollRequest(
            request_id=rid(), batch_id=course.batch_id, role=enums.ENROLLMENT_ROLE_INSTRUCTOR
        ),
    ):
        assert await code_of(h.enrollments.Enroll(request, metadata=t.students[1].metadata)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    await h.batches.CloseBatch(
        pb.CloseBatchRequest(request_id=rid(), batch_id=course.batch_id),
        metadata=t.instructor.metadata,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.enrollments.Enroll(
            pb.EnrollRequest(
                request_id=rid(), batch_id=course.batch_id, user_id=t.students[1].user_id
            ),
            metadata=t.instructor.metadata,
        )
    assert error_reason(err.value) == "BATCH_CLOSED"
    count = await h.wiring.database.fetch(
        "SELECT count(*) AS n FROM enrollments WHERE batch_id = $1", course.batch_id
    )
    assert count[0]["n"] == 1


async def test_service_caller_names_the_tenant(h: CoursesHarness) -> None:
    t = h.tenant()
    course = await h.published_course(t.instructor, capacity=1)
    user_id = h.person(t.tenant_id, "student").user_id
    peer = service_peer("commerce")
    # Without a tenant the call cannot be placed.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.enrollments.Enroll(
            pb.EnrollRequest(request_id=rid(), batch_id=course.batch_id, user_id=user_id),
            metadata=peer,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["tenant_id"]
    request = pb.EnrollRequest(
        request_id=rid(), batch_id=course.batch_id, user_id=user_id, tenant_id=t.tenant_id
    )
    bought = await h.enrollments.Enroll(request, metadata=peer)
    assert bought.enrollment.status == ACTIVE
    assert (await h.enrollments.Enroll(request, metadata=peer)).enrollment == bought.enrollment
    # Another tenant's id finds nothing.
    other = h.tenant()
    assert (
        await code_of(
            h.batches.GetBatch(
                pb.GetBatchRequest(batch_id=course.batch_id, tenant_id=other.tenant_id),
                metadata=peer,
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )
    dropped = await h.enrollments.DropEnrollment(
        pb.DropEnrollmentRequest(
            request_id=rid(),
            enrollment_id=bought.enrollment.enrollment_id,
            tenant_id=t.tenant_id,
            reason="refunded",
        ),
        metadata=peer,
    )
    assert dropped.enrollment.history[-1].reason == "refunded"
    # A user cannot borrow another tenant's id.
    assert (
        await code_of(
            h.batches.GetBatch(
                pb.GetBatchRequest(batch_id=course.batch_id, tenant_id=other.tenant_id),
                metadata=t.instructor.metadata,
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )


async def test_users_behind_the_edge_or_a_service_are_still_users(h: CoursesHarness) -> None:
    """The edge is a SPIFFE peer too, but a proxy: its users never gain a service's powers."""
    t, other = h.tenant(students=2), h.tenant()
    course = await h.published_course(t.instructor, open_batch=False)
    student, classmate = t.students
    for peer in (service_peer("edge"), service_peer("commerce")):
        md = (*student.metadata, *peer)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.enrollments.Enroll(
                pb.EnrollRequest(
                    request_id=rid(), batch_id=course.batch_id, user_id=classmate.user_id,
                    tenant_id=t.tenant_id,
                ),
                metadata=md,
            )  # fmt: skip
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Not open for self-enrollment: a service could enroll, the user cannot.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.enrollments.Enroll(
                pb.EnrollRequest(request_id=rid(), batch_id=course.batch_id), metadata=md
            )
        assert error_reason(err.value) == "BATCH_NOT_OPEN"
        assert (
            await code_of(
                h.batches.GetBatch(
                    pb.GetBatchRequest(batch_id=course.batch_id, tenant_id=other.tenant_id),
                    metadata=md,
                )
            )
            == grpc.StatusCode.PERMISSION_DENIED
        )
