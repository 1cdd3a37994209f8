# mypy: disable-error-code="import-untyped"
"""Authoring through gRPC: metadata updates with etags, reordering, release dates, sections,
archiving (read-only, out of the catalog, no enrollment)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.courses.v1 import course_pb2
from suuupra.courses.v1 import courses_service_pb2 as pb

from services.courses.tests.harness import (
    CoursesHarness,
    courses_harness,
    error_reason,
    field_violations,
    rid,
)


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[CoursesHarness]:
    async with courses_harness(postgres_server_url, nats_url) as harness:
        yield harness


async def test_update_with_etag_reorder_and_release_dates(h: CoursesHarness) -> None:
    t = h.tenant(students=1)
    md = t.instructor.metadata
    course = await h.published_course(t.instructor)
    got = await h.courses.GetCourse(pb.GetCourseRequest(course_id=course.course_id), metadata=md)
    update = pb.UpdateCourseRequest(
        request_id=rid(),
        course=course_pb2.Course(
            course_id=course.course_id, etag=got.course.etag, title="Algorithms II",
            tags=["Graphs", "graphs", "Theory"],
        ),
        update_mask=FieldMask(paths=["title", "tags"]),
    )  # fmt: skip
    updated = await h.courses.UpdateCourse(update, metadata=md)
    assert (updated.course.title, list(updated.course.tags)) == (
        "Algorithms II",
        ["graphs", "theory"],
    )
    stale = pb.UpdateCourseRequest()
    stale.CopyFrom(update)
    stale.request_id = rid()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.UpdateCourse(stale, metadata=md)
    assert err.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.UpdateCourse(
            pb.UpdateCourseRequest(
                request_id=rid(), course=course_pb2.Course(course_id=course.course_id, code="X"),
                update_mask=FieldMask(paths=["code"]),
            ),
            metadata=md,
        )  # fmt: skip
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.UpdateCourse(
            pb.UpdateCourseRequest(
                request_id=rid(),
                course=course_pb2.Course(
                    course_id=course.course_id, language="English!", tags=[""]
                ),
                update_mask=FieldMask(paths=["language", "tags"]),
            ),
            metadata=md,
        )
    assert sorted(field_violations(err.value)) == ["course.language", "course.tags"]

    # Reverse the lessons, lock the first one until tomorrow, publish.
    first, second = course.lesson_ids
    await h.courses.UpdateLesson(
        pb.UpdateLessonRequest(
            request_id=rid(), course_id=course.course_id,
            lesson=course_pb2.Lesson(lesson_id=second, prerequisite_lesson_ids=[]),
            update_mask=FieldMask(paths=["prerequisite_lesson_ids"]),
        ),
        metadata=md,
    )  # fmt: skip
    reordered = await h.courses.ReorderLessons(
        pb.ReorderLessonsRequest(
            request_id=rid(), course_id=course.course_id, module_id=course.module_id,
            lesson_ids=[second, first],
        ),
        metadata=md,
    )  # fmt: skip
    assert [ls.lesson_id for ls in reordered.module.lessons] == [second, first]
    tomorrow = Timestamp()
    tomorrow.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    await h.courses.UpdateLesson(
        pb.UpdateLessonRequest(
            request_id=rid(), course_id=course.course_id,
            lesson=course_pb2.Lesson(lesson_id=first, release_time=tomorrow),
            update_mask=FieldMask(paths=["release_time"]),
        ),
        metadata=md,
    )  # fmt: skip
    await h.courses.PublishCourse(
        pb.PublishCourseRequest(request_id=rid(), course_id=course.course_id), metadata=md
    )
    learner = t.students[0]
    await h.enroll(learner, course.batch_id)
    content = await h.courses.GetCourseContent(
        pb.GetCourseContentRequest(course_id=course.course_id, batch_id=course.batch_id),
        metadata=learner.metadata,
    )
    lessons = list(content.content.modules[0].lessons)
    assert [(ls.lesson_id, ls.locked, len(ls.items)) for ls in lessons] == [
        (second, False, 1),
        (first, True, 0),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.progress.CompleteLesson(
            pb.CompleteLessonRequest(request_id=rid(), batch_id=course.batch_id, lesson_id=first),
            metadata=learner.metadata,
        )
    assert error_reason(err.value) == "LESSON_NOT_RELEASED"
    progress = await h.progress.GetProgress(
        pb.GetProgressRequest(batch_id=course.batch_id), metadata=learner.metadata
    )
    assert progress.progress.next_lesson_id == second


async def test_sections_and_archiving(h: CoursesHarness) -> None:
    t = h.tenant(students=2)
    md = t.instructor.metadata
    course = await h.published_course(t.instructor, capacity=5)
    section = await h.batches.CreateSection(
        pb.CreateSectionRequest(request_id=rid(), batch_id=course.batch_id, name="Lab A"),
        metadata=md,
    )
    joined = await h.enrollments.Enroll(
        pb.EnrollRequest(
            request_id=rid(), batch_id=course.batch_id, section_id=section.section.section_id
        ),
        metadata=t.students[0].metadata,
    )
    assert joined.enrollment.section_id == section.section.section_id
    batch = await h.batches.GetBatch(pb.GetBatchRequest(batch_id=course.batch_id), metadata=md)
    assert [s.name for s in batch.batch.sections] == ["Lab A"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.enrollments.Enroll(
            pb.EnrollRequest(request_id=rid(), batch_id=course.batch_id, section_id=rid()),
            metadata=t.students[1].metadata,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    archived = await h.courses.ArchiveCourse(
        pb.ArchiveCourseRequest(request_id=rid(), course_id=course.course_id), metadata=md
    )
    assert archived.course.state == course_pb2.COURSE_STATE_ARCHIVED
    for call in (
        h.courses.CreateModule(
            pb.CreateModuleRequest(request_id=rid(), course_id=course.course_id, title="x"),
            metadata=md,
        ),
        h.enrollments.Enroll(
            pb.EnrollRequest(request_id=rid(), batch_id=course.batch_id),
            metadata=t.students[1].metadata,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert error_reason(err.value) == "COURSE_ARCHIVED"
    catalog = await h.courses.ListCourses(pb.ListCoursesRequest(), metadata=t.students[1].metadata)
    assert course.course_id not in [c.course_id for c in catalog.courses]
    # Enrolled learners keep reading.
    still = await h.courses.GetCourseContent(
        pb.GetCourseContentRequest(course_id=course.course_id, batch_id=course.batch_id),
        metadata=t.students[0].metadata,
    )
    assert still.content.version == 1
