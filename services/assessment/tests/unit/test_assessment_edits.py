"""Pure rules for editing and deleting assignments: what may change in a draft, after publication,
after submissions and after grading; which changes are announced; when deleting is allowed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from services.assessment import domain
from services.assessment.tests.unit.test_assessment_domain import T0, assignment
from suuupra_runtime.errors import FailedPrecondition, InvalidArgument

NO_WORK = domain.WorkFacts()
SUBMITTED = domain.WorkFacts(submissions=3)
GRADED = domain.WorkFacts(submissions=3, grades=1)
DRAFT = domain.AssignmentState.DRAFT
AT = T0 + timedelta(hours=1)


def edit(
    changes: dict[str, Any], work: domain.WorkFacts = NO_WORK, **current: Any
) -> tuple[domain.Assignment, tuple[str, ...]]:
    return domain.edit_assignment(assignment(**current), changes, work, AT)


def refused(changes: dict[str, Any], work: domain.WorkFacts, **current: Any) -> FailedPrecondition:
    with pytest.raises(FailedPrecondition) as err:
        edit(changes, work, **current)
    return err.value


def test_an_edit_applies_the_values_bumps_the_version_and_names_what_changed() -> None:
    before = assignment()
    after, changed = edit({"title": "Essay 2", "instructions": "Longer.", "category": "homework"})
    assert (after.title, after.instructions) == ("Essay 2", "Longer.")
    assert changed == ("title", "instructions")  # category was sent unchanged
    assert after.version == before.version + 1
    assert after.updated_at == AT


def test_sending_the_current_values_changes_nothing() -> None:
    current = assignment()
    after, changed = edit({"title": current.title, "due_time": current.due_time})
    assert changed == ()
    assert after == current  # same version: nothing to write


def test_a_draft_changes_freely_even_harshly() -> None:
    after, changed = edit(
        {
            "section_id": "sec-b",
            "due_time": T0 - timedelta(days=1),
            "max_attempts": 1,
            "submission_types": frozenset({domain.SubmissionType.TEXT}),
            "allowed_file_types": (),
            "late_policy": domain.LatePolicy(5_000, 0),
        },
        state=DRAFT,
    )
    assert set(changed) == {
        "section_id",
        "due_time",
        "max_attempts",
        "submission_types",
        "allowed_file_types",
        "late_policy",
    }
    assert after.max_attempts == 1


def test_publication_fixes_the_audience() -> None:
    err = refused({"section_id": "sec-b"}, NO_WORK)
    assert err.reason == "ASSIGNMENT_PUBLISHED"
    assert [v.type for v in err.violations] == ["PUBLISHED"]


def test_a_published_assignment_without_submissions_may_tighten_its_terms() -> None:
    after, changed = edit({"due_time": T0 - timedelta(days=1), "max_attempts": 1})
    assert changed == ("max_attempts", "due_time")
    assert after.due_time == T0 - timedelta(days=1)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"due_time": T0 - timedelta(hours=1)}, "due_time"),
        ({"close_time": T0 + timedelta(days=2)}, "close_time"),
        ({"open_time": T0 - timedelta(days=6)}, "open_time"),
        ({"max_attempts": 1}, "max_attempts"),
        ({"submission_types": frozenset({domain.SubmissionType.FILES})}, "submission_types"),
        ({"allowed_file_types": ("application/pdf",)}, "allowed_file_types"),
        ({"late_policy": domain.LatePolicy(2_000, 6_000)}, "late_policy"),
        ({"late_policy": domain.LatePolicy(1_000, 5_000)}, "late_policy"),
    ],
)
def test_after_submissions_the_terms_never_get_harsher(changes: dict[str, Any], field: str) -> None:
    err = refused(changes, SUBMITTED)
    assert err.reason == "ASSIGNMENT_HAS_SUBMISSIONS"
    assert [v.type for v in err.violations] == ["SUBMISSIONS_EXIST"]
    assert field in err.violations[0].description


def test_after_submissions_the_terms_may_get_more_lenient() -> None:
    current = assignment()
    after, changed = edit(
        {
            "open_time": current.open_time - timedelta(days=1),
            "due_time": current.due_time + timedelta(days=2),
            "close_time": current.close_time + timedelta(days=2),
            "max_attempts": 5,
            "submission_types": frozenset(domain.SubmissionType),
            "allowed_file_types": ("application/pdf", "image/*", "text/plain"),
            "late_policy": domain.LatePolicy(500, 8_000),
            "title": "Essay (clarified)",
            "instructions": "Clearer.",
            "category": "projects",
        },
        SUBMITTED,
    )
    assert len(changed) == 10
    assert after.max_attempts == 5
    # "Any type" is the widest list of all.
    assert edit({"allowed_file_types": ()}, SUBMITTED)[1] == ("allowed_file_types",)
    with pytest.raises(FailedPrecondition):
        edit({"allowed_file_types": ("application/pdf",)}, SUBMITTED, allowed_file_types=())


def test_points_may_change_until_something_is_graded() -> None:
    no_rubric = {"rubric": ()}
    after, changed = edit({"max_points_centi": 5_000}, SUBMITTED, **no_rubric)
    assert (after.max_points_centi, changed) == (5_000, ("max_points_centi",))
    err = refused({"max_points_centi": 5_000}, GRADED, **no_rubric)
    assert err.reason == "ASSIGNMENT_GRADED"
    assert [v.type for v in err.violations] == ["GRADES_EXIST"]


def test_after_grading_the_rubric_structure_is_fixed_but_its_wording_is_not() -> None:
    current = assignment()
    reworded = (
        domain.RubricCriterion("c", "Content and argument", current.rubric[0].levels),
        current.rubric[1],
    )
    after, changed = edit({"rubric": reworded}, GRADED)
    assert changed == ("rubric",)
    assert after.rubric[0].title == "Content and argument"

    more_points = (
        current.rubric[0],
        domain.RubricCriterion(
            "s", "Style", (domain.RubricLevel("low", 1_000), domain.RubricLevel("hi", 5_000))
        ),
    )
    err = refused({"rubric": more_points}, GRADED)
    # The sum moves the maximum too: both are named.
    assert [v.type for v in err.violations] == ["GRADES_EXIST", "GRADES_EXIST"]
    # Before any grade, the same change is fine and the maximum follows the rubric.
    after, changed = edit({"rubric": more_points}, SUBMITTED)
    assert after.max_points_centi == 11_000
    assert changed == ("max_points_centi", "rubric")


def test_every_refused_change_is_listed_and_the_first_reason_wins() -> None:
    err = refused(
        {"max_points_centi": 1, "rubric": (), "due_time": T0 - timedelta(hours=1)}, GRADED
    )
    assert err.reason == "ASSIGNMENT_GRADED"
    assert {v.type for v in err.violations} == {"GRADES_EXIST", "SUBMISSIONS_EXIST"}


def test_the_maximum_of_a_rubric_assignment_comes_from_the_rubric() -> None:
    with pytest.raises(InvalidArgument) as err:
        edit({"max_points_centi": 1_234})
    assert [v.field for v in err.value.violations] == ["assignment.max_points_centi"]
    # Rubric criteria without ids get positional ids, as on create.
    after, _ = edit(
        {"rubric": (domain.RubricCriterion("", "Only", (domain.RubricLevel("ok", 700),)),)}
    )
    assert [c.criterion_id for c in after.rubric] == ["c1"]
    assert after.max_points_centi == 700


def test_edited_values_must_still_fit_together() -> None:
    with pytest.raises(InvalidArgument) as err:
        edit({"due_time": T0 + timedelta(days=5)})  # after close_time
    assert [v.field for v in err.value.violations] == ["assignment.close_time"]
    with pytest.raises(InvalidArgument) as err:
        edit({"submission_types": frozenset({domain.SubmissionType.TEXT})}, state=DRAFT)
    assert [v.field for v in err.value.violations] == ["assignment.allowed_file_types"]
    with pytest.raises(InvalidArgument) as err:
        edit({"batch_id": "b2"})
    assert [v.field for v in err.value.violations] == ["update_mask"]


def test_students_hear_about_published_changes_except_the_category() -> None:
    published = assignment()
    assert domain.announced_changes(published, ("title", "category")) == ("title",)
    assert domain.announced_changes(published, ("category",)) == ()
    assert domain.announced_changes(assignment(state=DRAFT), ("title", "due_time")) == ()


def test_only_assignments_without_submissions_may_be_deleted() -> None:
    domain.check_deletable(assignment(state=DRAFT), NO_WORK)
    domain.check_deletable(assignment(), NO_WORK)
    with pytest.raises(FailedPrecondition) as err:
        domain.check_deletable(assignment(), SUBMITTED)
    assert err.value.reason == "ASSIGNMENT_HAS_SUBMISSIONS"
