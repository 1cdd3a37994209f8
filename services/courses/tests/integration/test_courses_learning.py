# mypy: disable-error-code="import-untyped"
"""Versions, publishing under concurrent reads, progress, quizzes and completion statistics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from suuupra.courses.v1 import courses_events_pb2 as ev
from suuupra.courses.v1 import courses_service_pb2 as pb
from suuupra.courses.v1 import enrollment_enums_pb2 as enums

from services.courses.tests.harness import CoursesHarness, courses_harness, error_reason, rid


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[CoursesHarness]:
    async with courses_harness(postgres_server_url, nats_url) as harness:
        yield harness


def _texts(content: pb.GetCourseContentResponse) -> list[str]:
    return [
        i.article.markdown
        for m in content.content.modules
        for ls in m.lessons
        for i in ls.items
        if i.HasField("article")
    ]


async def test_publishing_while_a_learner_reads_gives_one_whole_version(h: CoursesHarness) -> None:
    """Every article of version N says "vN"; a read must never mix two versions."""
    t = h.tenant(students=1)
    owner, learner = t.instructor, t.students[0]
    course_id = await h.draft_course(owner)
    module = await h.courses.CreateModule(
        pb.CreateModuleRequest(request_id=rid(), course_id=course_id, title="M"),
        metadata=owner.metadata,
    )
    lessons = [
        await h.add_lesson(owner, course_id, module.module.module_id, f"L{i}") for i in range(4)
    ]
    items = [await h.add_article(owner, course_id, lesson, "v1") for lesson in lessons]
    await h.courses.PublishCourse(
        pb.PublishCourseRequest(request_id=rid(), course_id=course_id), metadata=owner.metadata
    )
    batch_id = await h.batch(owner, course_id)
    await h.enroll(learner, batch_id)

    versions = 6
    seen: list[tuple[int, list[str]]] = []
    publishing_done = asyncio.Event()

    async def publisher() -> None:
        for n in range(2, versions + 1):
            # Rewrite every article of the draft as "vN", then publish it as version N.
            for index, lesson in enumerate(lessons):
                await h.courses.DeleteContentItem(
                    pb.DeleteContentItemRequest(
                        request_id=rid(), course_id=course_id, item_id=items[index]
                    ),
                    metadata=owner.metadata,
                )
                items[index] = await h.add_article(owner, course_id, lesson, f"v{n}")
            await h.courses.PublishCourse(
                pb.PublishCourseRequest(request_id=rid(), course_id=course_id),
                metadata=owner.metadata,
            )
        publishing_done.set()

    async def reader() -> None:
        while not publishing_done.is_set():
            content = await h.courses.GetCourseContent(
                pb.GetCourseContentRequest(course_id=course_id, batch_id=batch_id),
                metadata=learner.metadata,
            )
            seen.append((content.content.version, _texts(content)))

    await asyncio.gather(publisher(), reader(), reader())
    assert len(seen) > versions
    for version, texts in seen:
        assert texts == [f"v{version}"] * 4, (version, texts)
    assert len({v for v, _ in seen}) > 1  # the reads really overlapped the publishes
    # Older versions stay readable, unchanged.
    old = await h.courses.GetCourseContent(
        pb.GetCourseContentRequest(course_id=course_id, batch_id=batch_id, version=2),
        metadata=learner.metadata,
    )
    assert _texts(old) == ["v2"] * 4
    listed = await h.courses.ListCourseVersions(
        pb.ListCourseVersionsRequest(course_id=course_id), metadata=learner.metadata
    )
    assert [v.version for v in listed.versions] == list(range(versions, 0, -1))
    published = [
        ev.CoursePublished.FromString(p)
        for p in await h.outbox("suuupra.courses.v1.CoursePublished")
    ]
    assert [p.version for p in published if p.course_id == course_id] == list(
        range(1, versions + 1)
    )


async def test_progress_prerequisites_quiz_and_completion(h: CoursesHarness) -> None:
    t = h.tenant(students=2)
    course = await h.published_course(t.instructor)
    learner, idle = t.students
    await h.enroll(learner, course.batch_id)
    await h.enroll(idle, course.batch_id)
    first, second = course.lesson_ids
    md = learner.metadata

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.progress.CompleteLesson(
            pb.CompleteLessonRequest(request_id=rid(), batch_id=course.batch_id, lesson_id=second),
            metadata=md,
        )
    assert error_reason(err.value) == "PREREQUISITES_INCOMPLETE"

    step = await h.progress.CompleteLesson(
        pb.CompleteLessonRequest(request_id=rid(), batch_id=course.batch_id, lesson_id=first),
        metadata=md,
    )
    assert (step.progress.percent, step.progress.next_lesson_id) == (50, second)
    # Completing again changes nothing and emits nothing new.
    await h.progress.CompleteLesson(
        pb.CompleteLessonRequest(request_id=rid(), batch_id=course.batch_id, lesson_id=first),
        metadata=md,
    )

    wrong = await h.progress.SubmitQuizAttempt(
        pb.SubmitQuizAttemptRequest(
            request_id=rid(), batch_id=course.batch_id, item_id=course.quiz_id,
            answers=[pb.QuizAnswer(question_id="q1", choice_ids=["a"])],
        ),
        metadata=md,
    )  # fmt: skip
    right = await h.progress.SubmitQuizAttempt(
        pb.SubmitQuizAttemptRequest(
            request_id=rid(), batch_id=course.batch_id, item_id=course.quiz_id,
            answers=[pb.QuizAnswer(question_id="q1", choice_ids=["b"])],
        ),
        metadata=md,
    )  # fmt: skip
    assert (wrong.attempt.attempt_number, wrong.attempt.score, wrong.attempt.max_score) == (1, 0, 2)
    assert (right.attempt.attempt_number, right.attempt.score) == (2, 2)
    burst = await asyncio.gather(
        *(
            h.progress.SubmitQuizAttempt(
                pb.SubmitQuizAttemptRequest(
                    request_id=rid(), batch_id=course.batch_id, item_id=course.quiz_id,
                    answers=[pb.QuizAnswer(question_id="q1", choice_ids=["b"])],
                ),
                metadata=md,
            )
            for _ in range(4)
        )
    )  # fmt: skip
    assert sorted(a.attempt.attempt_number for a in burst) == [3, 4, 5, 6]

    done = await h.progress.CompleteLesson(
        pb.CompleteLessonRequest(request_id=rid(), batch_id=course.batch_id, lesson_id=second),
        metadata=md,
    )
    assert done.progress.course_completed
    assert (done.progress.percent, done.progress.next_lesson_id) == (100, "")

    mine = await h.enrollments.ListEnrollments(
        pb.ListEnrollmentsRequest(user_id=learner.user_id), metadata=md
    )
    assert mine.enrollments[0].status == enums.ENROLLMENT_STATUS_COMPLETED

    # Staff read anyone's progress and the course statistics; learners do not.
    theirs = await h.progress.GetProgress(
        pb.GetProgressRequest(batch_id=course.batch_id, user_id=learner.user_id),
        metadata=t.instructor.metadata,
    )
    assert theirs.progress.completed_lessons == 2
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.progress.GetProgress(
            pb.GetProgressRequest(batch_id=course.batch_id, user_id=learner.user_id),
            metadata=idle.metadata,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    stats = await h.progress.GetCompletionStats(
        pb.GetCompletionStatsRequest(course_id=course.course_id), metadata=t.instructor.metadata
    )
    assert (stats.stats.learners, stats.stats.completed_learners) == (2, 1)
    assert stats.stats.average_percent == 50.0
    assert {ls.lesson_id: ls.completed for ls in stats.stats.lessons} == {first: 1, second: 1}

    completions = [
        ev.LessonCompleted.FromString(p)
        for p in await h.outbox("suuupra.courses.v1.LessonCompleted")
    ]
    assert [c.lesson_id for c in completions if c.batch_id == course.batch_id] == [first, second]
    finished = [
        ev.CourseCompleted.FromString(p)
        for p in await h.outbox("suuupra.courses.v1.CourseCompleted")
    ]
    assert [c.user_id for c in finished if c.batch_id == course.batch_id] == [learner.user_id]


async def test_catalog_filters_and_pages(h: CoursesHarness) -> None:
    t = h.tenant(students=1)
    dept = await h.departments.CreateDepartment(
        pb.CreateDepartmentRequest(request_id=rid(), code="CS", name="Computer Science"),
        metadata=t.admin.metadata,
    )
    department_id = dept.department.department_id
    for i in range(25):
        course_id = await h.draft_course(
            t.instructor, code=f"CAT{i:02d}",
            title=f"Course {i} {'graphs' if i % 5 == 0 else 'sets'}",
            language="hi" if i % 2 else "en", tags=["Theory"] if i < 10 else ["lab"],
            department_id=department_id if i % 3 == 0 else "",
        )  # fmt: skip
        if i != 24:  # one stays a draft: never in the catalog
            module = await h.courses.CreateModule(
                pb.CreateModuleRequest(request_id=rid(), course_id=course_id, title="M"),
                metadata=t.instructor.metadata,
            )
            await h.add_lesson(t.instructor, course_id, module.module.module_id, "L")
            await h.courses.PublishCourse(
                pb.PublishCourseRequest(request_id=rid(), course_id=course_id),
                metadata=t.instructor.metadata,
            )
    md = t.students[0].metadata
    codes: list[str] = []
    token = ""
    while True:
        page = await h.courses.ListCourses(
            pb.ListCoursesRequest(page_size=10, page_token=token), metadata=md
        )
        codes += [c.code for c in page.courses]
        token = page.next_page_token
        if not token:
            break
    assert codes == [f"CAT{i:02d}" for i in range(24)]

    async def filtered(**kw: object) -> list[str]:
        page = await h.courses.ListCourses(pb.ListCoursesRequest(page_size=100, **kw), metadata=md)  # type: ignore[arg-type]
        return [c.code for c in page.courses]

    assert await filtered(tag="theory") == [f"CAT{i:02d}" for i in range(10)]
    assert await filtered(language="hi") == [f"CAT{i:02d}" for i in range(1, 24, 2)]
    assert await filtered(department_id=department_id) == [f"CAT{i:02d}" for i in range(0, 24, 3)]
    assert await filtered(query="GRAPHS") == ["CAT00", "CAT05", "CAT10", "CAT15", "CAT20"]
    assert await filtered(query="%") == []
    assert await filtered(query="graphs", tag="lab", language="en") == ["CAT10", "CAT20"]
    managed = await h.courses.ListCourses(
        pb.ListCoursesRequest(page_size=100, managed_only=True), metadata=t.instructor.metadata
    )
    assert len(managed.courses) == 25
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.ListCourses(
            pb.ListCoursesRequest(page_token="garbage", tag="x"), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
