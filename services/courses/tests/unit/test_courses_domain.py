"""Pure rules: content editing, learner views, seats and the waitlist, progress, quizzes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.courses import domain
from services.courses.domain import (
    Actor,
    Batch,
    BatchState,
    Content,
    Course,
    CourseState,
    Item,
    Lesson,
    Module,
    Role,
    Seats,
    Status,
)
from suuupra_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

NOW = datetime(2026, 12, 1, tzinfo=UTC)
QUIZ = {
    "questions": [
        {"id": "q1", "prompt": "?", "choices": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}],
         "correct": ["b"], "points": 2},
        {"id": "q2", "prompt": "?", "choices": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}],
         "correct": ["a", "b"], "points": 1},
    ]
}  # fmt: skip


def _course(state: CourseState = CourseState.PUBLISHED) -> Course:
    return Course("c", "t", "C1", "T", "", "en", (), None, ("owner",), state, 1, 1, NOW, NOW)


def _batch(
    state: BatchState = BatchState.OPEN, capacity: int = 2, start: datetime | None = None
) -> Batch:
    return Batch("b", "t", "c", "B", capacity, start, None, "", state, NOW)


def _content() -> Content:
    c = domain.add_module(Content(), Module("m1", "M1"))
    c = domain.add_lesson(c, "m1", Lesson("l1", "L1"))
    c = domain.add_lesson(c, "m1", Lesson("l2", "L2", prerequisites=("l1",)))
    c = domain.add_module(c, Module("m2", "M2", release_at=NOW + timedelta(days=1)))
    c = domain.add_lesson(c, "m2", Lesson("l3", "L3"))
    return domain.add_item(c, "l2", Item("i1", "Quiz", "quiz", QUIZ))


def test_content_round_trips_through_json() -> None:
    content = _content()
    assert domain.content_from_json(domain.content_to_json(content)) == content


def test_prerequisites_must_exist_and_never_cycle() -> None:
    content = _content()
    with pytest.raises(InvalidArgument):
        domain.add_lesson(content, "m1", Lesson("l9", "x", prerequisites=("nope",)))
    with pytest.raises(InvalidArgument):
        domain.update_lesson(content, "l1", prerequisites=["l2"])  # l2 already requires l1
    with pytest.raises(InvalidArgument):
        domain.update_lesson(content, "l1", prerequisites=["l1"])
    updated, lesson = domain.update_lesson(content, "l3", prerequisites=["l2", "l2"])
    assert lesson.prerequisites == ("l2",)
    assert updated.find_lesson("l3") is not None


def test_reordering_needs_a_permutation() -> None:
    content = _content()
    assert [m.module_id for m in domain.reorder_modules(content, ["m2", "m1"]).modules] == [
        "m2",
        "m1",
    ]
    with pytest.raises(InvalidArgument):
        domain.reorder_modules(content, ["m2"])
    module = domain.reorder_lessons(content, "m1", ["l2", "l1"])
    assert [ls.lesson_id for ls in module.lessons] == ["l2", "l1"]
    with pytest.raises(NotFound):
        domain.reorder_lessons(content, "zz", [])


def _layout(content: Content) -> list[tuple[str, list[str]]]:
    return [(m.module_id, [ls.lesson_id for ls in m.lessons]) for m in content.modules]


def test_update_module_renames_and_sets_or_clears_the_release_time() -> None:
    content = _content()
    renamed, module = domain.update_module(content, "m1", title="Basics")
    assert (module.title, module.release_at, [ls.lesson_id for ls in module.lessons]) == (
        "Basics",
        None,
        ["l1", "l2"],
    )
    assert renamed.modules[0] == module and renamed.modules[1] == content.modules[1]
    # False (the default) keeps the release time, None clears it, a datetime sets it.
    _, m2 = domain.update_module(content, "m2", title="Later")
    assert m2.release_at == NOW + timedelta(days=1)
    _, m2 = domain.update_module(content, "m2", release_at=None)
    assert (m2.title, m2.release_at) == ("M2", None)
    _, m1 = domain.update_module(content, "m1", release_at=NOW)
    assert m1.release_at == NOW
    with pytest.raises(NotFound):
        domain.update_module(content, "zz", title="x")


def test_delete_lesson_removes_it_with_its_items_unless_another_lesson_requires_it() -> None:
    content = _content()
    # l1 is l2's prerequisite: refused, naming l2.
    with pytest.raises(FailedPrecondition) as err:
        domain.delete_lesson(content, "l1")
    assert err.value.reason == "LESSON_IS_PREREQUISITE"
    assert err.value.metadata == {"dependent_lesson_ids": "l2"}
    assert [(v.type, v.subject) for v in err.value.violations] == [("PREREQUISITE", "lessons/l2")]
    # l2 (with the quiz) is nobody's prerequisite.
    without = domain.delete_lesson(content, "l2")
    assert _layout(without) == [("m1", ["l1"]), ("m2", ["l3"])]
    assert without.find_item("i1") is None
    # Once l2 is gone, l1 may go too; the module stays (empty).
    assert _layout(domain.delete_lesson(without, "l1")) == [("m1", []), ("m2", ["l3"])]
    with pytest.raises(NotFound):
        domain.delete_lesson(content, "zz")


def test_delete_module_removes_its_lessons_unless_a_lesson_elsewhere_requires_one() -> None:
    content = _content()
    # Requirements inside the module go with it.
    assert _layout(domain.delete_module(content, "m1")) == [("m2", ["l3"])]
    assert domain.delete_module(content, "m1").find_item("i1") is None
    dependent, _ = domain.update_lesson(content, "l3", prerequisites=["l2", "l1"])
    with pytest.raises(FailedPrecondition) as err:
        domain.delete_module(dependent, "m1")
    assert err.value.reason == "LESSON_IS_PREREQUISITE"
    assert [v.subject for v in err.value.violations] == ["lessons/l3", "lessons/l3"]
    assert err.value.metadata == {"dependent_lesson_ids": "l3"}
    # A module whose lessons nobody outside requires goes.
    assert _layout(domain.delete_module(dependent, "m2")) == [("m1", ["l1", "l2"])]
    with pytest.raises(NotFound):
        domain.delete_module(content, "zz")


def test_move_lesson_between_and_within_modules() -> None:
    content = _content()
    moved = domain.move_lesson(content, "l1", "m2", 0)
    assert _layout(moved) == [("m1", ["l2"]), ("m2", ["l1", "l3"])]
    # The lesson keeps its id, items and prerequisites.
    assert domain.get_lesson(moved, "l1") == domain.get_lesson(content, "l1")
    assert _layout(domain.move_lesson(content, "l2", "m2", 1)) == [
        ("m1", ["l1"]),
        ("m2", ["l3", "l2"]),
    ]
    moved_quiz = domain.move_lesson(content, "l2", "m2", 1)
    assert domain.get_lesson(moved_quiz, "l2") == domain.get_lesson(content, "l2")
    # Within its own module the position counts the other lessons.
    assert _layout(domain.move_lesson(content, "l1", "m1", 1)) == [
        ("m1", ["l2", "l1"]),
        ("m2", ["l3"]),
    ]
    assert _layout(domain.move_lesson(content, "l2", "m1", 0)) == [
        ("m1", ["l2", "l1"]),
        ("m2", ["l3"]),
    ]
    with pytest.raises(InvalidArgument) as bad:
        domain.move_lesson(content, "l1", "m1", 2)
    assert [v.field for v in bad.value.violations] == ["position"]
    with pytest.raises(InvalidArgument):
        domain.move_lesson(content, "l1", "m2", 2)
    with pytest.raises(NotFound):
        domain.move_lesson(content, "zz", "m2", 0)
    with pytest.raises(NotFound):
        domain.move_lesson(content, "l1", "zz", 0)


def test_learner_view_hides_answer_keys_and_unreleased_lessons() -> None:
    view, locked = domain.learner_view(_content(), NOW)
    assert locked == {"l3"}
    quiz = view.find_item("i1")
    assert quiz is not None
    assert all("correct" not in q for q in quiz[1].body["questions"])
    assert _content().find_item("i1")[1].body["questions"][0]["correct"] == ["b"]  # type: ignore[index]
    later, locked_later = domain.learner_view(_content(), NOW + timedelta(days=2))
    assert locked_later == set()
    assert later.lessons()[2].lesson_id == "l3"


def test_seats_then_waitlist_and_who_may_enroll() -> None:
    decide = domain.decide_enrollment
    assert (
        decide(
            course=_course(), batch=_batch(), role=Role.STUDENT, by_staff=False, seats=Seats(1, 0)
        )
        is Status.ACTIVE
    )
    assert (
        decide(
            course=_course(), batch=_batch(), role=Role.STUDENT, by_staff=False, seats=Seats(2, 0)
        )
        is Status.WAITLISTED
    )
    # Staff roles never take seats; unlimited capacity never waits.
    assert (
        decide(
            course=_course(), batch=_batch(), role=Role.INSTRUCTOR, by_staff=True, seats=Seats(2, 5)
        )
        is Status.ACTIVE
    )
    assert (
        decide(
            course=_course(),
            batch=_batch(capacity=0),
            role=Role.STUDENT,
            by_staff=False,
            seats=Seats(99, 0),
        )
        is Status.ACTIVE
    )
    with pytest.raises(FailedPrecondition):
        decide(
            course=_course(),
            batch=_batch(BatchState.SCHEDULED),
            role=Role.STUDENT,
            by_staff=False,
            seats=Seats(0, 0),
        )
    with pytest.raises(FailedPrecondition):
        decide(
            course=_course(CourseState.DRAFT),
            batch=_batch(),
            role=Role.STUDENT,
            by_staff=False,
            seats=Seats(0, 0),
        )
    with pytest.raises(FailedPrecondition):
        decide(
            course=_course(),
            batch=_batch(BatchState.CLOSED),
            role=Role.STUDENT,
            by_staff=True,
            seats=Seats(0, 0),
        )
    with pytest.raises(PermissionDenied):
        decide(
            course=_course(), batch=_batch(), role=Role.OBSERVER, by_staff=False, seats=Seats(0, 0)
        )
    assert (
        decide(
            course=_course(CourseState.DRAFT),
            batch=_batch(BatchState.SCHEDULED),
            role=Role.STUDENT,
            by_staff=True,
            seats=Seats(0, 0),
        )
        is Status.ACTIVE
    )


def test_drop_before_start_after_start_and_seats_to_fill() -> None:
    assert domain.status_after_drop(_batch(start=NOW + timedelta(days=1)), NOW) is Status.DROPPED
    assert domain.status_after_drop(_batch(start=NOW - timedelta(days=1)), NOW) is Status.WITHDRAWN
    assert domain.seats_to_fill(_batch(capacity=2), Seats(1, 5)) == 1
    assert domain.seats_to_fill(_batch(capacity=2), Seats(2, 5)) == 0
    assert domain.seats_to_fill(_batch(capacity=2), Seats(0, 0)) == 0


def test_course_authority() -> None:
    teacher = Actor("owner", "t", frozenset({domain.PERM_MANAGE}))
    other = Actor("other", "t", frozenset({domain.PERM_MANAGE}))
    admin = Actor("adm", "t", frozenset({domain.PERM_MANAGE, domain.PERM_ADMINISTER}))
    course = _course()
    domain.require_edit(teacher, domain.authority(teacher, course.owner_ids, ()), "c")
    domain.require_edit(admin, domain.authority(admin, course.owner_ids, ()), "c")
    domain.require_edit(other, domain.authority(other, course.owner_ids, {Role.INSTRUCTOR}), "c")
    with pytest.raises(PermissionDenied):
        domain.require_edit(other, domain.authority(other, course.owner_ids, ()), "c")
    ta = domain.authority(other, course.owner_ids, {Role.TEACHING_ASSISTANT})
    assert ta.is_staff and not ta.can_edit
    with pytest.raises(PermissionDenied):
        domain.resolve_tenant(teacher, "other-tenant")
    with pytest.raises(InvalidArgument):
        domain.resolve_tenant(Actor(None, None, is_service=True), "")
    assert domain.resolve_tenant(Actor(None, None, is_service=True), "t2") == "t2"


def test_progress_prerequisites_and_quiz_scoring() -> None:
    content = _content()
    p = domain.progress(content, ["l1"], course_id="c", batch_id="b", user_id="u", version=1)
    assert (p.total, p.percent, p.next_lesson_id, p.course_completed) == (3, 33, "l2", False)
    done = domain.progress(content, ["l1", "l2", "l3", "stale"], course_id="c", batch_id="b",
                           user_id="u", version=1)  # fmt: skip
    assert done.course_completed and done.percent == 100
    with pytest.raises(FailedPrecondition):
        domain.require_completable(content, "l2", [], NOW)
    with pytest.raises(FailedPrecondition):
        domain.require_completable(content, "l3", ["l1", "l2"], NOW)  # not released yet
    domain.require_completable(content, "l2", ["l1"], NOW)
    score, top, results = domain.score_quiz(QUIZ, {"q1": ["b"], "q2": ["a"]})
    assert (score, top) == (2, 3)
    assert [r.correct for r in results] == [True, False]


def test_item_validation() -> None:
    assert domain.validate_item("quiz", QUIZ) == []
    bad = {"questions": [{"id": "q1", "choices": [{"id": "a", "text": "x"}], "correct": ["z"]}]}
    fields = [v.field for v in domain.validate_item("quiz", bad)]
    assert fields == ["item.quiz.questions[0].choices", "item.quiz.questions[0].correct_choice_ids"]
    assert domain.validate_item("external_link", {"url": "ftp://x"})
    assert domain.validate_item("video", {"file_id": ""})
    assert domain.validate_item("", {})


def test_page_tokens_are_bound_to_their_filters() -> None:
    token = domain.encode_page_token(["CS101"], "f1")
    assert domain.decode_page_token(token, "f1") == ["CS101"]
    with pytest.raises(InvalidArgument):
        domain.decode_page_token(token, "f2")
    with pytest.raises(InvalidArgument):
        domain.decode_page_token("!!", "f1")
    assert domain.page_key(domain.encode_page_token([42], "f"), "f", int) == 42
    for forged in ([], ["42"], [1, 2], [None]):
        with pytest.raises(InvalidArgument):
            domain.page_key(domain.encode_page_token(forged, "f"), "f", int)
