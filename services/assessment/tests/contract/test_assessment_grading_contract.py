# mypy: disable-error-code="import-untyped"
"""Grading through gRPC: who may read and grade what, draft vs released grades, the audit trail
of every change, bulk release, and a gradebook whose totals match an independent recomputation."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select
from suuupra.assessment.v1 import assessment_resources_pb2 as res
from suuupra.assessment.v1 import assessment_service_pb2 as pb

from services.assessment import store
from services.assessment.tests.harness import Harness, now, start_harness
from suuupra_runtime.db import outbox_table
from suuupra_runtime.testing.rpc_errors import error_reason, field_violations, rid


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with start_harness(postgres_server_url, nats_url) as harness:
        yield harness


async def _outbox_count(h: Harness, event_type: str, grade_id: str | None = None) -> int:
    async with h.wiring.database.unit_of_work(tenant_id=h.tenant_id) as uow:
        rows = await uow.session.execute(
            select(outbox_table.c.payload).where(outbox_table.c.event_type == event_type)
        )
        payloads = [bytes(r.payload) for r in rows]
    if grade_id is None:
        return len(payloads)
    return sum(1 for p in payloads if grade_id.encode() in p)


async def test_students_see_only_their_own_work_and_only_released_grades(h: Harness) -> None:
    batch = await h.batch(students=2)
    alice, bob = batch.students
    assignment = await h.assignment(batch)
    mine = await h.submit(alice, assignment.assignment_id)
    theirs = await h.submit(bob, assignment.assignment_id)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.submissions.GetSubmission(
            pb.GetSubmissionRequest(submission_id=theirs.submission_id), metadata=alice.md
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.submissions.ListSubmissions(
            pb.ListSubmissionsRequest(
                assignment_id=assignment.assignment_id, student_id=bob.user_id
            ),
            metadata=alice.md,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    own_list = await h.submissions.ListSubmissions(
        pb.ListSubmissionsRequest(assignment_id=assignment.assignment_id), metadata=alice.md
    )
    assert [s.submission_id for s in own_list.submissions] == [mine.submission_id]

    draft = await h.grade(batch.tas[0], mine.submission_id, 9_000, feedback="good")
    assert not draft.released
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.grading.GetGrade(
            pb.GetGradeRequest(assignment_id=assignment.assignment_id, student_id=alice.user_id),
            metadata=alice.md,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    seen = await h.submissions.GetSubmission(
        pb.GetSubmissionRequest(submission_id=mine.submission_id), metadata=alice.md
    )
    assert not seen.submission.HasField("grade")
    staff_view = await h.submissions.GetSubmission(
        pb.GetSubmissionRequest(submission_id=mine.submission_id), metadata=batch.tas[0].md
    )
    assert staff_view.submission.grade.score_centi == 9_000

    await h.grading.ReleaseGrades(
        pb.ReleaseGradesRequest(request_id=rid(), assignment_id=assignment.assignment_id),
        metadata=batch.instructor.md,
    )
    released = await h.grading.GetGrade(
        pb.GetGradeRequest(assignment_id=assignment.assignment_id, student_id=alice.user_id),
        metadata=alice.md,
    )
    assert released.grade.released and released.grade.score_centi == 9_000
    with pytest.raises(grpc.aio.AioRpcError) as err:  # still not Bob's grade
        await h.grading.GetGrade(
            pb.GetGradeRequest(assignment_id=assignment.assignment_id, student_id=bob.user_id),
            metadata=alice.md,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_ta_of_batch_x_cannot_grade_batch_y(h: Harness) -> None:
    x = await h.batch(students=1)
    y = await h.batch(students=1)
    in_y = await h.assignment(y)
    submission = await h.submit(y.students[0], in_y.assignment_id)
    for outsider in (x.tas[0], x.instructor):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.grade(outsider, submission.submission_id, 5_000)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(err.value) == "NOT_BATCH_GRADER"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.grade(y.students[0], submission.submission_id, 10_000)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED  # students lack the permission
    async with h.wiring.database.unit_of_work(tenant_id=h.tenant_id) as uow:
        count = await uow.session.scalar(
            select(func.count())
            .select_from(store.grades)
            .where(store.grades.c.assignment_id == in_y.assignment_id)
        )
    assert count == 0
    graded = await h.grade(y.tas[0], submission.submission_id, 5_000)
    assert graded.grader_id == y.tas[0].user_id


async def test_every_grade_change_is_in_the_audit_trail(h: Harness) -> None:
    batch = await h.batch(students=1, tas=1)
    ta, instructor = batch.tas[0], batch.instructor
    rubric = [
        res.RubricCriterion(
            criterion_id="content",
            title="Content",
            levels=[
                res.RubricLevel(title="weak", points_centi=2_000),
                res.RubricLevel(title="strong", points_centi=6_000),
            ],
        ),
        res.RubricCriterion(
            criterion_id="style",
            title="Style",
            levels=[
                res.RubricLevel(title="weak", points_centi=1_000),
                res.RubricLevel(title="strong", points_centi=4_000),
            ],
        ),
    ]
    assignment = await h.assignment(batch, rubric=rubric, max_points_centi=0)
    assert assignment.max_points_centi == 10_000
    submission = await h.submit(batch.students[0], assignment.assignment_id)

    def rubric_request(content: int, style: int, **fields: object) -> pb.GradeSubmissionRequest:
        return pb.GradeSubmissionRequest(
            request_id=rid(),
            submission_id=submission.submission_id,
            rubric_scores=[
                res.RubricScore(criterion_id="content", level_index=content),
                res.RubricScore(criterion_id="style", level_index=style),
            ],
            **fields,  # type: ignore[arg-type]
        )

    first = (await h.grading.GradeSubmission(rubric_request(1, 0), metadata=ta.md)).grade
    assert first.score_centi == 7_000 and first.version == 1

    with pytest.raises(grpc.aio.AioRpcError) as err:  # a regrade must say why
        await h.grading.GradeSubmission(rubric_request(1, 1), metadata=instructor.md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["reason"]

    with pytest.raises(grpc.aio.AioRpcError) as err:  # a stale version is refused
        await h.grading.GradeSubmission(
            rubric_request(1, 1, reason="x", expected_version=0), metadata=instructor.md
        )
    assert err.value.code() == grpc.StatusCode.ABORTED

    regrade = (
        await h.grading.GradeSubmission(
            rubric_request(1, 1, reason="style is fine after all", expected_version=1),
            metadata=instructor.md,
        )
    ).grade
    assert regrade.score_centi == 10_000 and regrade.version == 2

    released = await h.grading.ReleaseGrades(
        pb.ReleaseGradesRequest(
            request_id=rid(), assignment_id=assignment.assignment_id, grade_ids=[first.grade_id]
        ),
        metadata=ta.md,
    )
    assert [g.grade_id for g in released.grades] == [first.grade_id]

    trail = await h.grading.ListGradeAudit(
        pb.ListGradeAuditRequest(grade_id=first.grade_id), metadata=instructor.md
    )
    entries = list(trail.entries)
    assert [e.action for e in entries] == [
        res.GRADE_ACTION_CREATED,
        res.GRADE_ACTION_CHANGED,
        res.GRADE_ACTION_RELEASED,
    ]
    assert [e.actor_id for e in entries] == [ta.user_id, instructor.user_id, ta.user_id]
    assert not entries[0].HasField("previous_score_centi")
    assert entries[1].previous_score_centi == 7_000 and entries[1].score_centi == 10_000
    assert entries[1].reason == "style is fine after all"
    assert any(c.startswith("rubric: [content=1, style=0] → [content=1, style=1]") for c in
               entries[1].changes)  # fmt: skip
    assert not entries[1].released and entries[2].released
    # The refused attempts changed nothing; events follow the trail.
    assert await _outbox_count(h, "suuupra.assessment.v1.GradeChanged", first.grade_id) == 2
    assert await _outbox_count(h, "suuupra.assessment.v1.GradeReleased", first.grade_id) == 1

    with pytest.raises(grpc.aio.AioRpcError) as err:  # students never read the trail
        await h.grading.ListGradeAudit(
            pb.ListGradeAuditRequest(grade_id=first.grade_id), metadata=batch.students[0].md
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _independent_percentages(
    categories: dict[str, tuple[int, int]],
    items: list[tuple[str, int, int | None, bool]],
) -> tuple[float | None, float | None]:
    """Current and final percent from raw grades, by the rules' definitions (not the code's):
    items are (category, max points, released score or None, exempt)."""
    results: list[float | None] = []
    for final in (False, True):
        weight_total = 0
        weighted = 0.0
        for name, (weight, drop) in categories.items():
            scored = [
                (score if score is not None else 0, maximum)
                for category, maximum, score, exempt in items
                if category == name and not exempt and (score is not None or final)
            ]
            if not scored:
                continue
            scored.sort(key=lambda pair: pair[0] / pair[1])
            kept = scored[min(drop, len(scored) - 1) :]
            share = sum(s for s, _ in kept) / sum(m for _, m in kept)
            weighted += share * weight
            weight_total += weight
        results.append(100 * weighted / weight_total if weight_total else None)
    return results[0], results[1]


async def test_gradebook_totals_match_an_independent_recomputation(h: Harness) -> None:
    batch = await h.batch(students=3, tas=1)
    instructor, ta = batch.instructor, batch.tas[0]
    await h.gradebook.SetGradebookCategories(
        pb.SetGradebookCategoriesRequest(
            request_id=rid(),
            batch_id=batch.batch_id,
            categories=[
                res.GradeCategory(name="homework", weight_bp=4_000, drop_lowest=1),
                res.GradeCategory(name="exams", weight_bp=6_000),
            ],
        ),
        metadata=instructor.md,
    )
    t = now()
    specs: list[tuple[str, str, int, dict[str, Any]]] = [
        ("hw1", "homework", 10_000, {}),
        ("hw2", "homework", 5_000, {}),
        ("hw3", "homework", 2_000, {}),
        (
            "exam1",
            "exams",
            10_000,
            {
                "due_time": t - timedelta(days=1, hours=1),
                "close_time": t + timedelta(days=1),
                "late_policy": res.LatePolicy(percent_per_day_bp=1_000, floor_bp=5_000),
            },
        ),
        ("exam2", "exams", 20_000, {}),
        ("bonus", "extra", 1_000, {}),
    ]
    assignments = {}
    for title, category, points, extra in specs:
        assignments[title] = await h.assignment(
            batch, title=title, category=category, max_points_centi=points, **extra
        )
    s1, s2, s3 = batch.students
    await h.assignments.SetStudentException(
        pb.SetStudentExceptionRequest(
            request_id=rid(),
            assignment_id=assignments["hw1"].assignment_id,
            student_id=s2.user_id,
            exempt=True,
            reason="transfer credit",
        ),
        metadata=instructor.md,
    )
    # (student, assignment) → (raw score, release?)
    plan = {
        (s1, "hw1"): (8_000, True), (s1, "hw2"): (5_000, True), (s1, "hw3"): (500, True),
        (s1, "exam1"): (9_000, True), (s1, "exam2"): (15_050, True), (s1, "bonus"): (1_000, True),
        (s2, "hw1"): (10_000, True), (s2, "hw2"): (2_500, True),
        (s2, "exam1"): (7_000, True), (s2, "exam2"): (19_999, False),
        (s3, "hw2"): (4_000, True), (s3, "exam1"): (3_333, True),
    }  # fmt: skip
    released: dict[tuple[str, str], int] = {}
    for (student, title), (raw, release) in plan.items():
        submission = await h.submit(student, assignments[title].assignment_id)
        grade = await h.grade(ta, submission.submission_id, raw, release=release)
        if title == "exam1":
            assert grade.penalty_bp == 2_000  # 2 started days late x 10 %
        if release:
            released[(student.user_id, title)] = grade.score_centi

    book = await h.gradebook.GetGradebook(
        pb.GetGradebookRequest(batch_id=batch.batch_id), metadata=ta.md
    )
    # Columns come in due-time order (exam1 is already due).
    assert book.columns[0].title == "exam1"
    assert sorted(c.title for c in book.columns) == sorted(s[0] for s in specs)
    position = {c.title: index for index, c in enumerate(book.columns)}
    rows = {r.student_id: r for r in book.rows}
    assert set(rows) == {s.user_id for s in batch.students}
    categories = {"homework": (4_000, 1), "exams": (6_000, 0)}
    for student in batch.students:
        items = [
            (
                category,
                points,
                released.get((student.user_id, title)),
                student is s2 and title == "hw1",
            )
            for title, category, points, _ in specs
            if category in categories
        ]
        current, final = _independent_percentages(categories, items)
        row = rows[student.user_id]
        assert row.current_percent == pytest.approx(current or 0.0, abs=0.006)
        assert row.final_percent == pytest.approx(final or 0.0, abs=0.006)
        for cell, column in zip(row.cells, book.columns, strict=True):
            score = released.get((student.user_id, column.title))
            if column.category == "extra":
                assert cell.status == res.CELL_STATUS_UNCATEGORIZED
            elif student is s2 and column.title == "hw1":
                assert cell.status == res.CELL_STATUS_EXEMPT
            elif score is None:
                assert cell.status == res.CELL_STATUS_UNGRADED
            else:
                assert cell.score_centi == score
    # s1 lowest homework share is hw3 (25 %): dropped from the current percentage.
    hw3 = rows[s1.user_id].cells[position["hw3"]]
    assert hw3.status == res.CELL_STATUS_DROPPED

    explained = await h.gradebook.ExplainGradebookCell(
        pb.ExplainGradebookCellRequest(
            batch_id=batch.batch_id,
            student_id=s3.user_id,
            assignment_id=assignments["exam1"].assignment_id,
        ),
        metadata=instructor.md,
    )
    text = "\n".join(explained.cell_explanation)
    assert "late:" in text and "penalty 20%" in text and "weighs 60%" in text
    assert explained.current_percent == rows[s3.user_id].current_percent

    exported = await h.gradebook.ExportGradebookCsv(
        pb.ExportGradebookCsvRequest(batch_id=batch.batch_id), metadata=instructor.md
    )
    table = list(csv.reader(io.StringIO(exported.csv.decode())))
    assert table[0][0] == "student_id" and table[0][-2:] == ["current_percent", "final_percent"]
    by_student = {line[0]: line for line in table[2:]}
    for student in batch.students:
        assert float(by_student[student.user_id][-1]) == rows[student.user_id].final_percent

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.gradebook.GetGradebook(
            pb.GetGradebookRequest(batch_id=batch.batch_id), metadata=s1.md
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_category_weights_must_add_up(h: Harness) -> None:
    batch = await h.batch(students=0, tas=0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.gradebook.SetGradebookCategories(
            pb.SetGradebookCategoriesRequest(
                request_id=rid(),
                batch_id=batch.batch_id,
                categories=[res.GradeCategory(name="a", weight_bp=5_000)],
            ),
            metadata=batch.instructor.md,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["categories"]
