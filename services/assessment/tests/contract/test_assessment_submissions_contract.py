# mypy: disable-error-code="import-untyped"
"""Submitting through gRPC: the hard cut-off, extensions for one student only, exact late
penalties, idempotent retries, the database-enforced attempt limit under 20 concurrent submits,
bad input refused with field violations, and tenant scoping."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, timedelta

import grpc
import pytest
from sqlalchemy import func, select
from suuupra.assessment.v1 import assessment_resources_pb2 as res
from suuupra.assessment.v1 import assessment_service_pb2 as pb

from services.assessment import domain, store
from services.assessment.tests.harness import Harness, now, start_harness, ts
from suuupra_runtime.testing.rpc_errors import error_reason, field_violations, rid


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with start_harness(postgres_server_url, nats_url) as harness:
        yield harness


async def _count_submissions(h: Harness, assignment_id: str, student_id: str | None = None) -> int:
    t = store.submissions
    stmt = select(func.count()).select_from(t).where(t.c.assignment_id == assignment_id)
    if student_id:
        stmt = stmt.where(t.c.student_id == student_id)
    async with h.wiring.database.unit_of_work(tenant_id=h.tenant_id) as uow:
        return int(await uow.session.scalar(stmt) or 0)


async def test_hard_cutoff_refuses_and_an_extension_admits_only_that_student(h: Harness) -> None:
    batch = await h.batch(students=2)
    t = now()
    assignment = await h.assignment(
        batch,
        due_time=t - timedelta(days=2),
        close_time=t - timedelta(days=1),
        late_policy=res.LatePolicy(percent_per_day_bp=1000, floor_bp=5000),
    )
    alice, bob = batch.students
    for student in (alice, bob):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.submit(student, assignment.assignment_id)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(err.value) == "ASSIGNMENT_CLOSED"
    assert await _count_submissions(h, assignment.assignment_id) == 0

    await h.assignments.SetStudentException(
        pb.SetStudentExceptionRequest(
            request_id=rid(),
            assignment_id=assignment.assignment_id,
            student_id=alice.user_id,
            extended_due_time=ts(t + timedelta(days=1)),
            extended_close_time=ts(t + timedelta(days=2)),
            reason="medical leave",
        ),
        metadata=batch.instructor.md,
    )
    submitted = await h.submit(alice, assignment.assignment_id)
    assert submitted.attempt == 1 and not submitted.late and submitted.penalty_bp == 0

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.submit(bob, assignment.assignment_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await _count_submissions(h, assignment.assignment_id, bob.user_id) == 0


async def test_only_instructors_grant_extensions(h: Harness) -> None:
    batch = await h.batch(students=1)
    assignment = await h.assignment(batch)
    request = pb.SetStudentExceptionRequest(
        request_id=rid(),
        assignment_id=assignment.assignment_id,
        student_id=batch.students[0].user_id,
        extended_due_time=ts(now() + timedelta(days=5)),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.assignments.SetStudentException(request, metadata=batch.tas[0].md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _expected_penalty(submit_time: float, due_time: float, per_day_bp: int, floor_bp: int) -> int:
    """The policy, recomputed from its definition: per started day late, capped at the floor."""
    days = math.ceil((submit_time - due_time) / 86_400)
    return min(per_day_bp * days, 10_000 - floor_bp)


@pytest.mark.parametrize(
    ("per_day_bp", "floor_bp", "late_by"),
    [
        (1000, 5000, timedelta(days=2, hours=1)),  # 3 started days → 30 %
        (2500, 4000, timedelta(days=2, hours=23)),  # 75 % capped at 60 % by the floor
        (750, 0, timedelta(hours=1)),  # 1 started day → 7.5 %
    ],
)
async def test_late_penalty_matches_the_policy_exactly(
    h: Harness, per_day_bp: int, floor_bp: int, late_by: timedelta
) -> None:
    batch = await h.batch(students=1)
    t = now()
    assignment = await h.assignment(
        batch,
        due_time=t - late_by,
        close_time=t + timedelta(days=3),
        late_policy=res.LatePolicy(percent_per_day_bp=per_day_bp, floor_bp=floor_bp),
        max_points_centi=8000,
    )
    submission = await h.submit(batch.students[0], assignment.assignment_id)
    expected = _expected_penalty(
        submission.submit_time.ToDatetime(tzinfo=UTC).timestamp(),
        assignment.due_time.ToDatetime(tzinfo=UTC).timestamp(),
        per_day_bp,
        floor_bp,
    )
    assert submission.late
    assert submission.penalty_bp == expected
    assert f"penalty {expected / 100:g}%" in submission.penalty_explanation

    grade = await h.grade(batch.instructor, submission.submission_id, 7_351)
    assert grade.raw_score_centi == 7_351
    # Score after the penalty, rounded half up to a hundredth of a point.
    exact = 7_351 * (10_000 - expected) / 10_000
    assert grade.score_centi == math.floor(exact + 0.5)


async def test_same_request_id_creates_one_attempt(h: Harness) -> None:
    batch = await h.batch(students=1)
    assignment = await h.assignment(batch, max_attempts=5)
    student = batch.students[0]
    request_id = rid()
    first = await h.submit(student, assignment.assignment_id, request_id=request_id)
    again = await asyncio.gather(
        *(h.submit(student, assignment.assignment_id, request_id=request_id) for _ in range(5))
    )
    assert all(s == first for s in again)
    assert await _count_submissions(h, assignment.assignment_id) == 1

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.submit(student, assignment.assignment_id, "other text", request_id=request_id)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["request_id"]
    assert await _count_submissions(h, assignment.assignment_id) == 1


async def test_twenty_concurrent_submits_never_exceed_max_attempts(h: Harness) -> None:
    batch = await h.batch(students=1)
    assignment = await h.assignment(batch, max_attempts=3)
    student = batch.students[0]
    results = await asyncio.gather(
        *(h.submit(student, assignment.assignment_id, f"try {i}") for i in range(20)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, res.Submission)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 3 and len(failed) == 17
    assert sorted(s.attempt for s in ok) == [1, 2, 3]
    assert {e.code() for e in failed} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert {error_reason(e) for e in failed} == {"MAX_ATTEMPTS_REACHED"}
    assert await _count_submissions(h, assignment.assignment_id) == 3
    listed = await h.submissions.ListSubmissions(
        pb.ListSubmissionsRequest(assignment_id=assignment.assignment_id), metadata=student.md
    )
    assert len(listed.submissions) == 3  # every attempt is kept


async def test_submission_window_and_kind_rules(h: Harness) -> None:
    batch = await h.batch(students=1)
    student = batch.students[0]
    t = now()
    future = await h.assignment(
        batch, open_time=t + timedelta(days=1), due_time=t + timedelta(days=2)
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.submit(student, future.assignment_id)
    assert error_reason(err.value) == "ASSIGNMENT_NOT_OPEN"

    draft = await h.assignment(batch, publish=False)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.submit(student, draft.assignment_id)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND  # drafts are invisible to students

    text_only = await h.assignment(batch)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.submit(student, text_only.assignment_id, link="https://example.org/work")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["link"]
    assert await _count_submissions(h, text_only.assignment_id) == 0


async def test_file_submissions_are_refused_while_no_files_service(h: Harness) -> None:
    batch = await h.batch(students=1)
    assignment = await h.assignment(
        batch, submission_types=[res.SUBMISSION_TYPE_TEXT, res.SUBMISSION_TYPE_FILES]
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.submit(batch.students[0], assignment.assignment_id, file_ids=[str(uuid.uuid4())])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "FILES_UNAVAILABLE"
    assert await _count_submissions(h, assignment.assignment_id) == 0


async def test_bad_assignment_input_is_refused_with_field_violations(h: Harness) -> None:
    batch = await h.batch(students=0, tas=0)
    t = now()
    request = pb.CreateAssignmentRequest(
        request_id=rid(),
        course_id="c",
        batch_id=batch.batch_id,
        title="",
        max_points_centi=100,
        submission_types=[res.SUBMISSION_TYPE_TEXT],
        max_attempts=0,
        open_time=ts(t),
        due_time=ts(t + timedelta(days=1)),
        close_time=ts(t + timedelta(days=2)),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.assignments.CreateAssignment(request, metadata=batch.instructor.md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(err.value)) == {"title", "max_attempts"}

    request.title, request.max_attempts = "Ok", 1
    request.close_time.CopyFrom(ts(t - timedelta(days=1)))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.assignments.CreateAssignment(request, metadata=batch.instructor.md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["close_time"]
    listed = await h.assignments.ListAssignments(
        pb.ListAssignmentsRequest(batch_id=batch.batch_id), metadata=batch.instructor.md
    )
    assert list(listed.assignments) == []


async def test_students_cannot_create_and_other_tenants_see_nothing(h: Harness) -> None:
    batch = await h.batch(students=1)
    assignment = await h.assignment(batch)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.assignment(batch.__class__(**{**batch.__dict__, "instructor": batch.students[0]}))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    outsider = h.person("tenant_admin", tenant_id="another-tenant")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.assignments.GetAssignment(
            pb.GetAssignmentRequest(assignment_id=assignment.assignment_id), metadata=outsider.md
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    stranger = h.person("student")  # same tenant, not enrolled in the batch
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.submit(stranger, assignment.assignment_id)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_section_assignments_are_invisible_to_other_sections(h: Harness) -> None:
    batch = await h.batch(students=0, tas=0)
    inside, outside = h.person("student"), h.person("student")
    for person, section in ((inside, "sec-a"), (outside, "sec-b")):
        async with h.wiring.database.unit_of_work(tenant_id=h.tenant_id) as uow:
            await store.set_membership(
                uow.session,
                tenant_id=h.tenant_id,
                batch_id=batch.batch_id,
                user_id=person.user_id,
                role=domain.BatchRole.STUDENT,
                course_id=batch.course_id,
                section_id=section,
                active=True,
                at=now(),
            )
    assignment = await h.assignment(batch, section_id="sec-a")
    assert (await h.submit(inside, assignment.assignment_id)).attempt == 1
    for call in (
        h.assignments.GetAssignment(
            pb.GetAssignmentRequest(assignment_id=assignment.assignment_id), metadata=outside.md
        ),
        h.submit(outside, assignment.assignment_id),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await h.assignments.ListAssignments(
        pb.ListAssignmentsRequest(batch_id=batch.batch_id), metadata=outside.md
    )
    assert list(listed.assignments) == []


async def test_list_assignments_pages_by_due_time(h: Harness) -> None:
    batch = await h.batch(students=0, tas=0)
    t = now()
    close = t + timedelta(days=9)
    ids = [
        (await h.assignment(batch, due_time=t + timedelta(days=d), close_time=close)).assignment_id
        for d in (3, 1, 2)
    ]
    seen: list[str] = []
    token = ""
    for _ in range(3):
        page = await h.assignments.ListAssignments(
            pb.ListAssignmentsRequest(batch_id=batch.batch_id, page_size=2, page_token=token),
            metadata=batch.instructor.md,
        )
        seen += [a.assignment_id for a in page.assignments]
        token = page.next_page_token
        if not token:
            break
    assert seen == [ids[1], ids[2], ids[0]]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.assignments.ListAssignments(
            pb.ListAssignmentsRequest(batch_id=batch.batch_id, page_token="garbage"),
            metadata=batch.instructor.md,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
