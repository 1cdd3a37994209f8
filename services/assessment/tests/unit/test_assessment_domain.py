"""Pure rules: windows and extensions, late penalties, rubric scoring, file checks (against a fake
file store), and gradebook rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import ClassVar

import pytest

from services.assessment import domain
from services.assessment.files import StoredFile
from suuupra_runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def assignment(**overrides: object) -> domain.Assignment:
    base = domain.Assignment(
        assignment_id="a1",
        tenant_id="t1",
        course_id="c1",
        batch_id="b1",
        section_id="",
        title="Essay",
        instructions="",
        attachment_file_ids=(),
        max_points_centi=10_000,
        submission_types=frozenset({domain.SubmissionType.TEXT, domain.SubmissionType.FILES}),
        allowed_file_types=("application/pdf", "image/*"),
        max_attempts=2,
        open_time=T0 - timedelta(days=7),
        due_time=T0,
        close_time=T0 + timedelta(days=3),
        rubric=(
            domain.RubricCriterion(
                "c", "Content", (domain.RubricLevel("low", 2_000), domain.RubricLevel("hi", 6_000))
            ),
            domain.RubricCriterion(
                "s", "Style", (domain.RubricLevel("low", 1_000), domain.RubricLevel("hi", 4_000))
            ),
        ),
        late_policy=domain.LatePolicy(percent_per_day_bp=1_000, floor_bp=6_000),
        category="homework",
        state=domain.AssignmentState.PUBLISHED,
        created_by="u0",
        created_at=T0 - timedelta(days=8),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def exception(**fields: object) -> domain.StudentException:
    values: dict[str, object] = {
        "assignment_id": "a1",
        "student_id": "s1",
        "extended_due_time": None,
        "extended_close_time": None,
        "exempt": False,
        "reason": "",
        "granted_by": "i1",
        "updated_at": T0,
    }
    values.update(fields)
    return domain.StudentException(**values)  # type: ignore[arg-type]


TEXT = domain.SubmissionContent("answer", (), "")


class TestWindowAndLateness:
    def test_on_time_has_no_penalty(self) -> None:
        window = domain.window_for(assignment(), None)
        assert domain.late_verdict(window, assignment().late_policy, T0) == domain.LateVerdict(
            False, 0, "on time"
        )

    @pytest.mark.parametrize(
        ("late_by", "penalty"),
        [
            (timedelta(seconds=1), 1_000),
            (timedelta(days=1), 1_000),
            (timedelta(days=1, seconds=1), 2_000),
            (timedelta(days=3, hours=5), 4_000),  # 4 days = 40 %: exactly the floor's cap
            (timedelta(days=9), 4_000),  # capped: the score keeps its 60 % floor
        ],
    )
    def test_penalty_per_started_day_capped_by_floor(
        self, late_by: timedelta, penalty: int
    ) -> None:
        a = assignment(close_time=T0 + timedelta(days=10))
        verdict = domain.late_verdict(domain.window_for(a, None), a.late_policy, T0 + late_by)
        assert verdict.late and verdict.penalty_bp == penalty
        assert verdict.explanation.endswith(f"penalty {penalty / 100:g}%")

    def test_cap_is_explained(self) -> None:
        a = assignment(close_time=T0 + timedelta(days=10))
        verdict = domain.late_verdict(
            domain.window_for(a, None), a.late_policy, T0 + (9 * domain.DAY)
        )
        assert "capped at 40% by the 60% floor" in verdict.explanation

    def test_after_the_cutoff_nothing_is_accepted(self) -> None:
        a = assignment()
        window = domain.window_for(a, None)
        with pytest.raises(FailedPrecondition) as err:
            domain.check_submission(a, window, TEXT, a.close_time + timedelta(seconds=1))
        assert err.value.reason == "ASSIGNMENT_CLOSED"
        domain.check_submission(a, window, TEXT, a.close_time)  # the cut-off itself is allowed

    def test_extension_moves_due_and_cutoff_for_that_student(self) -> None:
        a = assignment()
        ext = exception(
            extended_due_time=T0 + timedelta(days=5), extended_close_time=T0 + timedelta(days=6)
        )
        window = domain.window_for(a, ext)
        assert window.extended and window.due_time == T0 + timedelta(days=5)
        when = T0 + timedelta(days=4)
        domain.check_submission(a, window, TEXT, when)
        assert not domain.late_verdict(window, a.late_policy, when).late
        late = domain.late_verdict(window, a.late_policy, T0 + timedelta(days=5, hours=1))
        assert late.penalty_bp == 1_000 and "extended due time" in late.explanation

    def test_extension_never_shortens(self) -> None:
        a = assignment()
        window = domain.window_for(a, exception(extended_due_time=T0 - timedelta(days=1)))
        assert window.due_time == a.due_time and window.close_time == a.close_time

    def test_extended_due_beyond_close_moves_the_cutoff(self) -> None:
        window = domain.window_for(
            assignment(), exception(extended_due_time=T0 + timedelta(days=10))
        )
        assert window.close_time == T0 + timedelta(days=10)

    def test_draft_and_not_open(self) -> None:
        draft = assignment(state=domain.AssignmentState.DRAFT)
        with pytest.raises(FailedPrecondition):
            domain.check_submission(draft, domain.window_for(draft, None), TEXT, T0)
        a = assignment()
        with pytest.raises(FailedPrecondition) as err:
            domain.check_submission(a, domain.window_for(a, None), TEXT, a.open_time - domain.DAY)
        assert err.value.reason == "ASSIGNMENT_NOT_OPEN"

    def test_kinds_of_content(self) -> None:
        a = assignment()
        window = domain.window_for(a, None)
        with pytest.raises(InvalidArgument) as err:
            domain.check_submission(a, window, domain.SubmissionContent("", (), "http://x"), T0)
        assert [v.field for v in err.value.violations] == ["link"]
        with pytest.raises(InvalidArgument) as err:
            domain.check_submission(a, window, domain.SubmissionContent("  ", (), ""), T0)
        assert [v.field for v in err.value.violations] == ["text"]


class TestGrading:
    def test_rubric_sum_and_consistency(self) -> None:
        a = assignment()
        choices = [domain.RubricChoice("c", 1), domain.RubricChoice("s", 0)]
        assert domain.raw_score(a, None, choices) == 7_000
        assert domain.raw_score(a, 7_000, choices) == 7_000
        with pytest.raises(InvalidArgument):
            domain.raw_score(a, 6_999, choices)
        with pytest.raises(InvalidArgument) as err:
            domain.raw_score(a, None, [domain.RubricChoice("c", 5)])
        assert err.value.violations[0].field == "rubric_scores[0].level_index"
        with pytest.raises(InvalidArgument):  # every criterion must be scored
            domain.raw_score(a, None, [domain.RubricChoice("c", 0)])
        with pytest.raises(InvalidArgument):
            domain.raw_score(a, 10_001, [])

    @pytest.mark.parametrize(
        ("raw", "penalty", "expected"),
        [(10_000, 0, 10_000), (7_351, 3_000, 5_146), (1, 5_000, 1), (3, 5_000, 2), (333, 1, 333)],
    )
    def test_penalty_rounds_half_up(self, raw: int, penalty: int, expected: int) -> None:
        assert domain.apply_penalty(raw, penalty) == expected


class FakeFileStore:
    """The files port as the tests' fake (the real service sits behind the mesh)."""

    def __init__(self, files: Sequence[StoredFile]) -> None:
        self.files = {f.file_id: f for f in files}
        self.grants: list[tuple[str, tuple[str, ...], str]] = []

    async def describe(self, tenant_id: str, file_ids: Sequence[str]) -> dict[str, StoredFile]:
        return {fid: self.files[fid] for fid in file_ids if fid in self.files}

    async def grant(self, tenant_id: str, file_ids: Sequence[str], resource: str) -> None:
        self.grants.append((tenant_id, tuple(file_ids), resource))


async def test_files_must_exist_be_own_and_allowed() -> None:
    store = FakeFileStore(
        [
            StoredFile("pdf", "s1", "application/pdf", 10),
            StoredFile("png", "s1", "image/png", 10),
            StoredFile("exe", "s1", "application/x-msdownload", 10),
            StoredFile("other", "s2", "application/pdf", 10),
        ]
    )
    known = await store.describe("t1", ["pdf", "png", "exe", "other", "missing"])
    facts = {k: domain.FileFacts(v.owner_id, v.content_type) for k, v in known.items()}
    allowed = assignment().allowed_file_types
    domain.check_files(["pdf", "png"], facts, "s1", allowed)
    with pytest.raises(InvalidArgument) as err:
        domain.check_files(["pdf", "exe", "other", "missing"], facts, "s1", allowed)
    assert [v.field for v in err.value.violations] == ["file_ids[1]", "file_ids[2]", "file_ids[3]"]
    # "someone else's" and "missing" read the same, so ids reveal nothing.
    assert err.value.violations[1].description == err.value.violations[2].description


def test_access_rules() -> None:
    student = domain.Actor("s1", "t1", frozenset(), frozenset({domain.BatchRole.STUDENT}))
    ta = domain.Actor("ta", "t1", frozenset(), frozenset({domain.BatchRole.TEACHING_ASSISTANT}))
    admin = domain.Actor("ad", "t1", frozenset({"assessment.assignments.administer"}))
    stranger = domain.Actor("x", "t1", frozenset())
    domain.require_grader(ta, "b")
    domain.require_grader(admin, "b")
    for who in (student, stranger):
        with pytest.raises(PermissionDenied):
            domain.require_grader(who, "b")
    with pytest.raises(PermissionDenied):
        domain.require_instructor(ta, "b")
    assert domain.may_see_student_work(student, "s1")
    assert not domain.may_see_student_work(student, "s2")
    assert domain.may_see_student_work(ta, "s2")


class TestGradebookRow:
    columns: ClassVar[list[domain.Column]] = [
        domain.Column("h1", "H1", "hw", 10_000),
        domain.Column("h2", "H2", "hw", 5_000),
        domain.Column("e1", "E1", "exam", 20_000),
        domain.Column("x", "X", "other", 100),
    ]
    categories: ClassVar[list[domain.Category]] = [
        domain.Category("hw", 2_500, 1),
        domain.Category("exam", 7_500),
    ]

    def grade(self, score: int) -> domain.ReleasedGrade:
        return domain.ReleasedGrade(score, score, 0, 1, "")

    def test_weights_drops_and_rescaling(self) -> None:
        grades = {"h1": self.grade(5_000), "h2": self.grade(5_000)}
        row = domain.compute_row("s", self.columns, self.categories, grades, frozenset())
        # current: hw keeps h2 (100 %), h1 dropped; exam has nothing → re-scaled to hw alone.
        assert row.current == Fraction(1)
        # final: hw drops h1 (50 % < 100 %... the lowest share) → 100 %; exam 0 %.
        assert row.final == Fraction(1 * 2_500 + 0 * 7_500, 10_000)
        statuses = [c.status for c in row.cells]
        assert statuses == [
            domain.CellStatus.DROPPED,
            domain.CellStatus.GRADED,
            domain.CellStatus.UNGRADED,
            domain.CellStatus.UNCATEGORIZED,
        ]

    def test_exempt_leaves_the_totals(self) -> None:
        grades = {"h2": self.grade(2_500), "e1": self.grade(10_000)}
        row = domain.compute_row("s", self.columns, self.categories, grades, frozenset({"h1"}))
        assert row.cells[0].status is domain.CellStatus.EXEMPT
        assert row.current == Fraction(1, 2)  # hw 50 % (nothing to drop: one item), exam 50 %
        assert domain.percent(row.current) == 50.0

    def test_without_categories_it_is_points_based(self) -> None:
        grades = {"h1": self.grade(10_000), "x": self.grade(100)}
        row = domain.compute_row("s", self.columns, [], grades, frozenset())
        assert row.current == Fraction(10_100, 10_100)
        assert row.final == Fraction(10_100, 35_100)

    def test_categories_must_add_up(self) -> None:
        with pytest.raises(InvalidArgument):
            domain.check_categories([domain.Category("a", 5_000)])
        domain.check_categories([domain.Category("a", 5_000), domain.Category("b", 5_000)])
        domain.check_categories([])
