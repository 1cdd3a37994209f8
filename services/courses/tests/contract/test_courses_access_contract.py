# mypy: disable-error-code="import-untyped"
"""Who sees and changes what: drafts and answer keys, batches, course ownership, tenants,
and bad input that changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from suuupra.courses.v1 import course_pb2
from suuupra.courses.v1 import courses_service_pb2 as pb

from services.courses.tests.harness import (
    CoursesHarness,
    code_of,
    courses_harness,
    error_reason,
    field_violations,
    rid,
)

DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[CoursesHarness]:
    async with courses_harness(postgres_server_url, nats_url) as harness:
        yield harness


async def test_student_reads_only_published_content_of_their_own_batch(h: CoursesHarness) -> None:
    t = h.tenant(students=2)
    course = await h.published_course(t.instructor)
    other_batch = await h.batch(t.instructor, course.course_id)
    reader, outsider = t.students
    await h.enroll(reader, course.batch_id)
    await h.enroll(outsider, other_batch)
    # A draft change after publishing is invisible to learners.
    await h.add_article(t.instructor, course.course_id, course.lesson_ids[0], "DRAFT ONLY")

    content = await h.courses.GetCourseContent(
        pb.GetCourseContentRequest(course_id=course.course_id, batch_id=course.batch_id),
        metadata=reader.metadata,
    )
    items = [i for m in content.content.modules for ls in m.lessons for i in ls.items]
    assert content.content.version == 1
    assert "DRAFT ONLY" not in str(content)
    quiz = next(i for i in items if i.HasField("quiz"))
    # Answer keys never reach learners.
    assert [list(q.correct_choice_ids) for q in quiz.quiz.questions] == [[]]

    for request in (
        pb.GetCourseContentRequest(
            course_id=course.course_id, batch_id=course.batch_id, draft=True
        ),
        # Another batch of the same course: not theirs.
        pb.GetCourseContentRequest(course_id=course.course_id, batch_id=other_batch),
        pb.GetCourseContentRequest(course_id=course.course_id),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.courses.GetCourseContent(request, metadata=reader.metadata)
        assert err.value.code() == DENIED
    # The outsider is in the other batch, not in the reader's.
    assert (
        await code_of(
            h.courses.GetCourseContent(
                pb.GetCourseContentRequest(course_id=course.course_id, batch_id=course.batch_id),
                metadata=outsider.metadata,
            )
        )
        == DENIED
    )

    # Staff see the draft and the answer key.
    draft = await h.courses.GetCourseContent(
        pb.GetCourseContentRequest(course_id=course.course_id, draft=True),
        metadata=t.instructor.metadata,
    )
    assert "DRAFT ONLY" in str(draft)
    staff_view = await h.courses.GetCourseContent(
        pb.GetCourseContentRequest(course_id=course.course_id), metadata=t.instructor.metadata
    )
    staff_quiz = next(
        i
        for m in staff_view.content.modules
        for ls in m.lessons
        for i in ls.items
        if i.HasField("quiz")
    )
    assert list(staff_quiz.quiz.questions[0].correct_choice_ids) == ["b"]


async def test_student_cannot_see_an_unpublished_course(h: CoursesHarness) -> None:
    t = h.tenant(students=1)
    course_id = await h.draft_course(t.instructor)
    student = t.students[0]
    assert (
        await code_of(
            h.courses.GetCourse(pb.GetCourseRequest(course_id=course_id), metadata=student.metadata)
        )
        == DENIED
    )
    assert (
        await code_of(
            h.courses.GetCourseContent(
                pb.GetCourseContentRequest(course_id=course_id, draft=True),
                metadata=student.metadata,
            )
        )
        == DENIED
    )
    listed = await h.courses.ListCourses(pb.ListCoursesRequest(), metadata=student.metadata)
    assert course_id not in [c.course_id for c in listed.courses]


async def test_instructor_of_one_course_cannot_edit_another(h: CoursesHarness) -> None:
    t = h.tenant()
    theirs = await h.draft_course(t.instructor)
    other_instructor = h.person(t.tenant_id, "instructor")
    mine = await h.draft_course(other_instructor)
    before = await h.courses.GetCourse(
        pb.GetCourseRequest(course_id=theirs), metadata=t.instructor.metadata
    )
    m = other_instructor.metadata
    calls = [
        h.courses.UpdateCourse(
            pb.UpdateCourseRequest(
                request_id=rid(),
                course=course_pb2.Course(course_id=theirs, title="pwned"),
                update_mask=FieldMask(paths=["title"]),
            ),
            metadata=m,
        ),
        h.courses.CreateModule(
            pb.CreateModuleRequest(request_id=rid(), course_id=theirs, title="x"), metadata=m
        ),
        h.courses.PublishCourse(
            pb.PublishCourseRequest(request_id=rid(), course_id=theirs), metadata=m
        ),
        h.courses.ArchiveCourse(
            pb.ArchiveCourseRequest(request_id=rid(), course_id=theirs), metadata=m
        ),
        h.batches.CreateBatch(
            pb.CreateBatchRequest(request_id=rid(), course_id=theirs, name="b"), metadata=m
        ),
        h.courses.GetCourseContent(
            pb.GetCourseContentRequest(course_id=theirs, draft=True), metadata=m
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == DENIED
        assert error_reason(err.value) == "NOT_COURSE_STAFF"
    after = await h.courses.GetCourse(
        pb.GetCourseRequest(course_id=theirs), metadata=t.instructor.metadata
    )
    assert after.course == before.course
    # Their own course is theirs to change; the tenant admin may change both.
    await h.courses.CreateModule(
        pb.CreateModuleRequest(request_id=rid(), course_id=mine, title="ok"), metadata=m
    )
    await h.courses.CreateModule(
        pb.CreateModuleRequest(request_id=rid(), course_id=theirs, title="ok"),
        metadata=t.admin.metadata,
    )
    # A student has no manage permission at all.
    student = h.person(t.tenant_id, "student")
    assert (
        await code_of(
            h.courses.CreateCourse(
                pb.CreateCourseRequest(request_id=rid(), code="NOPE", title="x", language="en"),
                metadata=student.metadata,
            )
        )
        == DENIED
    )


async def test_tenant_b_sees_nothing_of_tenant_a(h: CoursesHarness) -> None:
    a, b = h.tenant(students=1), h.tenant(students=1)
    course = await h.published_course(a.instructor)
    await h.enroll(a.students[0], course.batch_id)
    enrolled = await h.enrollments.ListEnrollments(
        pb.ListEnrollmentsRequest(batch_id=course.batch_id), metadata=a.instructor.metadata
    )
    enrollment_id = enrolled.enrollments[0].enrollment_id
    for who in (b.admin, b.instructor, b.students[0]):
        md = who.metadata
        for call in (
            h.courses.GetCourse(pb.GetCourseRequest(course_id=course.course_id), metadata=md),
            h.courses.GetCourseContent(
                pb.GetCourseContentRequest(course_id=course.course_id, batch_id=course.batch_id),
                metadata=md,
            ),
            h.courses.ListCourseVersions(
                pb.ListCourseVersionsRequest(course_id=course.course_id), metadata=md
            ),
            h.batches.GetBatch(pb.GetBatchRequest(batch_id=course.batch_id), metadata=md),
            h.batches.ListBatches(pb.ListBatchesRequest(course_id=course.course_id), metadata=md),
            h.enrollments.Enroll(
                pb.EnrollRequest(request_id=rid(), batch_id=course.batch_id), metadata=md
            ),
            h.enrollments.GetEnrollment(
                pb.GetEnrollmentRequest(enrollment_id=enrollment_id), metadata=md
            ),
            h.enrollments.ListEnrollments(
                pb.ListEnrollmentsRequest(batch_id=course.batch_id), metadata=md
            ),
            h.enrollments.DropEnrollment(
                pb.DropEnrollmentRequest(request_id=rid(), enrollment_id=enrollment_id), metadata=md
            ),
            h.courses.CreateModule(
                pb.CreateModuleRequest(request_id=rid(), course_id=course.course_id, title="x"),
                metadata=md,
            ),
        ):
            # Admins hold every permission, so only the tenant wall stops them: NOT_FOUND. Roles
            # without an RPC's permission are stopped before existence is checked.
            allowed = {NOT_FOUND} if who is b.admin else {NOT_FOUND, DENIED}
            assert await code_of(call) in allowed
        listed = await h.courses.ListCourses(pb.ListCoursesRequest(), metadata=md)
        assert list(listed.courses) == []
        managed = await h.courses.ListCourses(pb.ListCoursesRequest(managed_only=True), metadata=md)
        assert list(managed.courses) == []
    still = await h.enrollments.GetEnrollment(
        pb.GetEnrollmentRequest(enrollment_id=enrollment_id), metadata=a.students[0].metadata
    )
    assert still.enrollment.status == enrolled.enrollments[0].status


async def test_bad_input_is_invalid_argument_and_changes_nothing(h: CoursesHarness) -> None:
    t = h.tenant()
    md = t.instructor.metadata
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.CreateCourse(
            pb.CreateCourseRequest(request_id="nope", code="bad code!", title="", language="EN"),
            metadata=md,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"request_id", "code", "title", "language"} <= set(field_violations(err.value))
    course_id = await h.draft_course(t.instructor)
    module = await h.courses.CreateModule(
        pb.CreateModuleRequest(request_id=rid(), course_id=course_id, title="M"), metadata=md
    )
    lesson_id = await h.add_lesson(t.instructor, course_id, module.module.module_id, "L")
    bad_items = [
        course_pb2.ContentItem(title="Q", quiz=course_pb2.Quiz(questions=[
            course_pb2.QuizQuestion(prompt="?", choices=[course_pb2.QuizChoice(text="x"),
                                                          course_pb2.QuizChoice(text="y")],
                                    correct_choice_ids=["z"])])),
        course_pb2.ContentItem(title="V", video=course_pb2.Video()),
        course_pb2.ContentItem(
            title="L", external_link=course_pb2.ExternalLink(url="javascript:alert(1)")
        ),
        course_pb2.ContentItem(title="nothing"),
    ]  # fmt: skip
    for item in bad_items:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.courses.CreateContentItem(
                pb.CreateContentItemRequest(
                    request_id=rid(), course_id=course_id, lesson_id=lesson_id, item=item
                ),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value)
    # Unknown prerequisite, reorder that is not a permutation.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.add_lesson(t.instructor, course_id, module.module.module_id, "L2", [rid()])
    assert field_violations(err.value) == ["prerequisite_lesson_ids[0]"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.ReorderModules(
            pb.ReorderModulesRequest(request_id=rid(), course_id=course_id, module_ids=[rid()]),
            metadata=md,
        )
    assert field_violations(err.value) == ["module_ids"]
    draft = await h.courses.GetCourseContent(
        pb.GetCourseContentRequest(course_id=course_id, draft=True), metadata=md
    )
    assert [len(ls.items) for m in draft.content.modules for ls in m.lessons] == [0]
    assert [ls.title for m in draft.content.modules for ls in m.lessons] == ["L"]
    # Publishing an empty course is refused; a stale etag is ABORTED.
    empty = await h.draft_course(t.instructor)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.PublishCourse(
            pb.PublishCourseRequest(request_id=rid(), course_id=empty), metadata=md
        )
    assert error_reason(err.value) == "EMPTY_COURSE"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.PublishCourse(
            pb.PublishCourseRequest(request_id=rid(), course_id=course_id, etag='W/"1"'),
            metadata=md,
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
