# mypy: disable-error-code="import-untyped"
"""Editing and deleting assignments through gRPC: edits students see after publication (and
hear about), stale etags, the rules once work exists, who may edit, idempotent retries, the
"due soon" reminder following the due time, and deletes that never lose submitted work."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from sqlalchemy import Table, func, select
from suuupra.assessment.v1 import assessment_events_pb2 as ev
from suuupra.assessment.v1 import assessment_resources_pb2 as res
from suuupra.assessment.v1 import assessment_service_pb2 as pb

from services.assessment import store
from services.assessment.tests.harness import Batch, Harness, Person, now, start_harness, ts
from suuupra_runtime.db import outbox_table
from suuupra_runtime.testing.rpc_errors import error_reason, field_violations, rid

M = TypeVar("M", bound=Message)


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with start_harness(postgres_server_url, nats_url) as harness:
        yield harness


async def _update(
    h: Harness,
    who: Person,
    assignment: res.Assignment,
    paths: list[str],
    *,
    request_id: str | None = None,
) -> res.Assignment:
    response = await h.assignments.UpdateAssignment(
        pb.UpdateAssignmentRequest(
            request_id=request_id or rid(),
            assignment=assignment,
            update_mask=FieldMask(paths=paths),
        ),
        metadata=who.md,
    )
    updated: res.Assignment = response.assignment
    return updated


async def _refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def _get(h: Harness, who: Person, assignment_id: str) -> res.Assignment:
    response = await h.assignments.GetAssignment(
        pb.GetAssignmentRequest(assignment_id=assignment_id), metadata=who.md
    )
    found: res.Assignment = response.assignment
    return found


async def _events(h: Harness, event_type: type[M], assignment_id: str) -> list[M]:
    async with h.wiring.database.unit_of_work(tenant_id=None) as uow:
        rows = await uow.session.execute(
            select(outbox_table.c.payload)
            .where(outbox_table.c.event_type == f"suuupra.assessment.v1.{event_type.__name__}")
            .order_by(outbox_table.c.seq)
        )
        events = [event_type.FromString(bytes(r.payload)) for r in rows]
    return [e for e in events if getattr(e, "assignment_id", None) == assignment_id]


async def _rows(h: Harness, table: Table, assignment_id: str) -> int:
    async with h.wiring.database.unit_of_work(tenant_id=h.tenant_id) as uow:
        count = await uow.session.scalar(
            select(func.count()).select_from(table).where(table.c.assignment_id == assignment_id)
        )
        return int(count or 0)


async def test_edits_to_a_published_assignment_reach_its_students_and_are_announced(
    h: Harness,
) -> None:
    batch = await h.batch(students=1, tas=0)
    student = batch.students[0]
    published = await h.assignment(batch)
    seen = await _get(h, student, published.assignment_id)
    assert seen.etag == published.etag

    edit = res.Assignment()
    edit.CopyFrom(published)  # read-modify-write: every field sent, the mask says what changes
    edit.instructions = "Write **two** pages."
    edit.due_time.CopyFrom(ts(published.due_time.ToDatetime() + timedelta(hours=12)))
    updated = await _update(h, batch.instructor, edit, ["instructions", "due_time", "title"])
    assert updated.etag != published.etag
    assert updated.update_time.ToDatetime() >= published.update_time.ToDatetime()

    seen = await _get(h, student, published.assignment_id)
    assert seen.instructions == "Write **two** pages."
    assert seen.due_time == edit.due_time
    assert seen.title == published.title  # in the mask but unchanged
    assert seen.etag == updated.etag

    [announced] = await _events(h, ev.AssignmentUpdated, published.assignment_id)
    assert list(announced.changed_fields) == ["instructions", "due_time"]
    assert announced.previous_due_time == published.due_time
    assert announced.due_time == edit.due_time
    assert announced.updated_by == batch.instructor.user_id

    # The gradebook category is the staff's business: changed, but not announced.
    updated.category = "projects"
    regrouped = await _update(h, batch.instructor, updated, ["category"])
    assert regrouped.category == "projects"
    assert len(await _events(h, ev.AssignmentUpdated, published.assignment_id)) == 1

    # Drafts change without telling anyone.
    draft = await h.assignment(batch, publish=False)
    draft.title = "Renamed draft"
    await _update(h, batch.instructor, draft, ["title"])
    assert await _events(h, ev.AssignmentUpdated, draft.assignment_id) == []


async def test_a_stale_etag_is_aborted_and_changes_nothing(h: Harness) -> None:
    batch = await h.batch(students=0, tas=0)
    original = await h.assignment(batch)
    first = res.Assignment(assignment_id=original.assignment_id, etag=original.etag, title="One")
    await _update(h, batch.instructor, first, ["title"])

    second = res.Assignment(assignment_id=original.assignment_id, etag=original.etag, title="Two")
    err = await _refused(_update(h, batch.instructor, second, ["title"]))
    assert err.code() == grpc.StatusCode.ABORTED
    assert error_reason(err) == "ETAG_MISMATCH"
    assert (await _get(h, batch.instructor, original.assignment_id)).title == "One"

    err = await _refused(
        h.assignments.DeleteAssignment(
            pb.DeleteAssignmentRequest(
                request_id=rid(), assignment_id=original.assignment_id, etag=original.etag
            ),
            metadata=batch.instructor.md,
        )
    )
    assert err.code() == grpc.StatusCode.ABORTED
    assert (await _get(h, batch.instructor, original.assignment_id)).title == "One"

    # No etag: last writer wins (AIP-154).
    anyway = res.Assignment(assignment_id=original.assignment_id, title="Three")
    assert (await _update(h, batch.instructor, anyway, ["title"])).title == "Three"


async def test_after_submissions_terms_only_get_more_lenient(h: Harness) -> None:
    batch = await h.batch(students=1, tas=0)
    student = batch.students[0]
    assignment = await h.assignment(batch, max_attempts=1)
    await h.submit(student, assignment.assignment_id)
    err = await _refused(h.submit(student, assignment.assignment_id))
    assert error_reason(err) == "MAX_ATTEMPTS_REACHED"

    earlier = res.Assignment()
    earlier.CopyFrom(assignment)
    earlier.due_time.CopyFrom(ts(now() - timedelta(hours=1)))
    err = await _refused(_update(h, batch.instructor, earlier, ["due_time", "title"]))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err) == "ASSIGNMENT_HAS_SUBMISSIONS"
    unchanged = await _get(h, batch.instructor, assignment.assignment_id)
    assert unchanged.due_time == assignment.due_time
    assert unchanged.etag == assignment.etag

    # One more attempt for everyone: the student who used theirs may submit again.
    more = res.Assignment(assignment_id=assignment.assignment_id, max_attempts=2)
    assert (await _update(h, batch.instructor, more, ["max_attempts"])).max_attempts == 2
    assert (await h.submit(student, assignment.assignment_id)).attempt == 2


async def test_after_grading_the_points_are_fixed(h: Harness) -> None:
    batch = await h.batch(students=1, tas=0)
    assignment = await h.assignment(batch)
    submission = await h.submit(batch.students[0], assignment.assignment_id)

    # Submitted but ungraded: the maximum may still change.
    fewer = res.Assignment(assignment_id=assignment.assignment_id, max_points_centi=5_000)
    assert (await _update(h, batch.instructor, fewer, ["max_points_centi"])).max_points_centi == (
        5_000
    )
    await h.grade(batch.instructor, submission.submission_id, 4_000, release=True)

    fewer.max_points_centi = 2_000
    err = await _refused(_update(h, batch.instructor, fewer, ["max_points_centi"]))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err) == "ASSIGNMENT_GRADED"
    book = await h.gradebook.GetGradebook(
        pb.GetGradebookRequest(batch_id=batch.batch_id), metadata=batch.instructor.md
    )
    assert book.rows[0].current_percent == 80.0  # 40 of 50, as graded


async def test_only_instructors_of_the_batch_edit_or_delete(h: Harness) -> None:
    batch = await h.batch(students=1, tas=1)
    other = await h.batch(students=0, tas=0)
    assignment = await h.assignment(batch)
    change = res.Assignment(assignment_id=assignment.assignment_id, title="Hijacked")
    outsider = h.person("tenant_admin", tenant_id=str(uuid.uuid4()))
    cases = [
        (batch.students[0], grpc.StatusCode.PERMISSION_DENIED),  # no manage permission
        (batch.tas[0], grpc.StatusCode.PERMISSION_DENIED),  # grades, does not manage
        (other.instructor, grpc.StatusCode.PERMISSION_DENIED),  # NOT_BATCH_INSTRUCTOR
        (outsider, grpc.StatusCode.NOT_FOUND),  # another tenant's: does not exist
    ]
    for who, code in cases:
        err = await _refused(_update(h, who, change, ["title"]))
        assert err.code() == code
        err = await _refused(
            h.assignments.DeleteAssignment(
                pb.DeleteAssignmentRequest(
                    request_id=rid(), assignment_id=assignment.assignment_id
                ),
                metadata=who.md,
            )
        )
        assert err.code() == code
    assert (await _get(h, batch.instructor, assignment.assignment_id)) == assignment


async def test_bad_updates_are_refused_with_field_violations(h: Harness) -> None:
    batch = await h.batch(students=0, tas=0)
    assignment = await h.assignment(batch)
    bad = res.Assignment(assignment_id=assignment.assignment_id, title="", max_attempts=0)
    err = await _refused(_update(h, batch.instructor, bad, ["title", "max_attempts", "category"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(err)) == {"assignment.title", "assignment.max_attempts"}

    err = await _refused(_update(h, batch.instructor, bad, ["batch_id"]))
    assert field_violations(err) == ["update_mask"]
    err = await _refused(_update(h, batch.instructor, bad, ["due_time"]))  # unset: required
    assert field_violations(err) == ["assignment.due_time"]
    late = res.Assignment(assignment_id=assignment.assignment_id)
    late.due_time.CopyFrom(ts(assignment.close_time.ToDatetime() + timedelta(days=1)))
    err = await _refused(_update(h, batch.instructor, late, ["due_time"]))
    assert field_violations(err) == ["assignment.close_time"]
    nobody = res.Assignment(assignment_id="not-a-uuid", title="x")
    err = await _refused(_update(h, batch.instructor, nobody, ["title"]))
    assert field_violations(err) == ["assignment.assignment_id"]
    assert (await _get(h, batch.instructor, assignment.assignment_id)) == assignment


async def test_a_retried_update_is_applied_once(h: Harness) -> None:
    batch = await h.batch(students=0, tas=0)
    assignment = await h.assignment(batch)
    request_id = rid()
    change = res.Assignment(
        assignment_id=assignment.assignment_id, etag=assignment.etag, title="Once"
    )
    first = await _update(h, batch.instructor, change, ["title"], request_id=request_id)
    again = await _update(h, batch.instructor, change, ["title"], request_id=request_id)
    assert again == first  # the first response, although its etag is stale by now
    assert (await _get(h, batch.instructor, assignment.assignment_id)).etag == first.etag
    assert len(await _events(h, ev.AssignmentUpdated, assignment.assignment_id)) == 1

    change.title = "Other"
    err = await _refused(_update(h, batch.instructor, change, ["title"], request_id=request_id))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_new_due_time_gets_its_own_due_soon_reminder(h: Harness) -> None:
    batch = await h.batch(students=1, tas=0)
    t = now()
    assignment = await h.assignment(batch, due_time=t + timedelta(hours=2))
    await h.wiring.assessment.announce_due_soon()
    assert len(await _events(h, ev.AssignmentDueSoon, assignment.assignment_id)) == 1

    later = res.Assignment(assignment_id=assignment.assignment_id)
    later.due_time.CopyFrom(ts(t + timedelta(hours=5)))
    await _update(h, batch.instructor, later, ["due_time"])
    await h.wiring.assessment.announce_due_soon()
    reminders = await _events(h, ev.AssignmentDueSoon, assignment.assignment_id)
    assert [r.due_time for r in reminders][-1] == later.due_time
    assert len(reminders) == 2

    # Title changes do not repeat the reminder.
    await _update(
        h, batch.instructor, res.Assignment(assignment_id=assignment.assignment_id, title="T"),
        ["title"],
    )  # fmt: skip
    await h.wiring.assessment.announce_due_soon()
    assert len(await _events(h, ev.AssignmentDueSoon, assignment.assignment_id)) == 2


async def _delete(h: Harness, who: Person, assignment_id: str, request_id: str = "") -> None:
    await h.assignments.DeleteAssignment(
        pb.DeleteAssignmentRequest(request_id=request_id or rid(), assignment_id=assignment_id),
        metadata=who.md,
    )


async def test_deleting_drafts_and_unsubmitted_assignments(h: Harness) -> None:
    batch: Batch = await h.batch(students=1, tas=0)
    draft = await h.assignment(batch, publish=False)
    request_id = rid()
    await _delete(h, batch.instructor, draft.assignment_id, request_id)
    await _delete(h, batch.instructor, draft.assignment_id, request_id)  # retry: same answer
    err = await _refused(_get(h, batch.instructor, draft.assignment_id))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await _refused(_delete(h, batch.instructor, draft.assignment_id))  # a new request
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert await _events(h, ev.AssignmentDeleted, draft.assignment_id) == []  # never announced

    published = await h.assignment(batch)
    await h.assignments.SetStudentException(
        pb.SetStudentExceptionRequest(
            request_id=rid(), assignment_id=published.assignment_id,
            student_id=batch.students[0].user_id, exempt=True,
        ),
        metadata=batch.instructor.md,
    )  # fmt: skip
    await _delete(h, batch.instructor, published.assignment_id)
    assert await _rows(h, store.student_exceptions, published.assignment_id) == 0
    [deleted] = await _events(h, ev.AssignmentDeleted, published.assignment_id)
    assert deleted.deleted_by == batch.instructor.user_id
    listed = await h.assignments.ListAssignments(
        pb.ListAssignmentsRequest(batch_id=batch.batch_id), metadata=batch.students[0].md
    )
    assert published.assignment_id not in [a.assignment_id for a in listed.assignments]


async def test_submitted_work_is_never_deleted(h: Harness) -> None:
    batch = await h.batch(students=1, tas=0)
    assignment = await h.assignment(batch)
    submission = await h.submit(batch.students[0], assignment.assignment_id)
    await h.grade(batch.instructor, submission.submission_id, 5_000)
    err = await _refused(_delete(h, batch.instructor, assignment.assignment_id))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err) == "ASSIGNMENT_HAS_SUBMISSIONS"
    assert (await _get(h, batch.students[0], assignment.assignment_id)) == assignment
    assert await _rows(h, store.submissions, assignment.assignment_id) == 1
    assert await _rows(h, store.grades, assignment.assignment_id) == 1
