# mypy: disable-error-code="import-untyped"
"""Editing a draft's structure through gRPC: UpdateModule, DeleteModule, DeleteLesson and
MoveLesson. Published versions and learners' progress stay as they were; prerequisites block
deletes; etags, request ids and the walls between people and tenants hold; errors change
nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from suuupra.courses.v1 import course_pb2, enrollment_enums_pb2
from suuupra.courses.v1 import courses_service_pb2 as pb

from services.courses.tests.harness import (
    CoursesHarness,
    Person,
    PublishedCourse,
    code_of,
    courses_harness,
    error_reason,
    field_violations,
    rid,
)
from suuupra_runtime.errors import FailedPrecondition
from suuupra_runtime.grpc_errors import domain_error_from_rpc_error

DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[CoursesHarness]:
    async with courses_harness(postgres_server_url, nats_url) as harness:
        yield harness


async def _draft(h: CoursesHarness, who: Person, course_id: str) -> course_pb2.CourseContent:
    got = await h.courses.GetCourseContent(
        pb.GetCourseContentRequest(course_id=course_id, draft=True), metadata=who.metadata
    )
    content: course_pb2.CourseContent = got.content
    return content


def _layout(content: course_pb2.CourseContent) -> list[tuple[str, list[str]]]:
    return [(m.title, [ls.lesson_id for ls in m.lessons]) for m in content.modules]


async def _etag(h: CoursesHarness, who: Person, course_id: str) -> str:
    got = await h.courses.GetCourse(pb.GetCourseRequest(course_id=course_id), metadata=who.metadata)
    return str(got.course.etag)


async def _module(h: CoursesHarness, who: Person, course_id: str, title: str) -> str:
    created = await h.courses.CreateModule(
        pb.CreateModuleRequest(request_id=rid(), course_id=course_id, title=title),
        metadata=who.metadata,
    )
    return str(created.module.module_id)


async def _published_v1(
    h: CoursesHarness, who: Person, course: PublishedCourse
) -> course_pb2.CourseContent:
    got = await h.courses.GetCourseContent(
        pb.GetCourseContentRequest(course_id=course.course_id, version=1), metadata=who.metadata
    )
    content: course_pb2.CourseContent = got.content
    return content


async def _learner_completed_first(
    h: CoursesHarness, owner: Person, learner: Person
) -> PublishedCourse:
    """A published course (first ← second) whose learner completed the first lesson."""
    course = await h.published_course(owner)
    await h.enroll(learner, course.batch_id)
    await h.progress.CompleteLesson(
        pb.CompleteLessonRequest(
            request_id=rid(), batch_id=course.batch_id, lesson_id=course.lesson_ids[0]
        ),
        metadata=learner.metadata,
    )
    return course


async def test_update_module_renames_with_mask_and_etag(h: CoursesHarness) -> None:
    t = h.tenant()
    md = t.instructor.metadata
    course = await h.published_course(t.instructor)
    etag = await _etag(h, t.instructor, course.course_id)
    request = pb.UpdateModuleRequest(
        request_id=rid(), course_id=course.course_id,
        module=course_pb2.Module(module_id=course.module_id, title="  Foundations "),
        update_mask=FieldMask(paths=["title"]), etag=etag,
    )  # fmt: skip
    renamed = await h.courses.UpdateModule(request, metadata=md)
    assert renamed.module.title == "Foundations"
    assert [ls.lesson_id for ls in renamed.module.lessons] == course.lesson_ids
    # The rename is a draft edit: it bumps the course's etag and reports the new one.
    assert renamed.etag != etag
    assert renamed.etag == await _etag(h, t.instructor, course.course_id)
    assert _layout(await _draft(h, t.instructor, course.course_id)) == [
        ("Foundations", course.lesson_ids)
    ]
    # A retry with the same request id returns the first response, even though its etag is
    # stale now; a different payload under that id is refused.
    assert await h.courses.UpdateModule(request, metadata=md) == renamed
    reused = pb.UpdateModuleRequest()
    reused.CopyFrom(request)
    reused.module.title = "Other"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.UpdateModule(reused, metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # A stale etag is ABORTED and changes nothing.
    stale = pb.UpdateModuleRequest()
    stale.CopyFrom(request)
    stale.request_id = rid()
    stale.module.title = "Stale"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.UpdateModule(stale, metadata=md)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert error_reason(err.value) == "ETAG_MISMATCH"
    # Without an etag the write goes through (AIP-154: no etag, no check).
    stale.etag = ""
    assert (await h.courses.UpdateModule(stale, metadata=md)).module.title == "Stale"

    # Bad masks and fields are INVALID_ARGUMENT with field violations; unknown ids NOT_FOUND.
    for module, paths, expected in (
        (course_pb2.Module(module_id=course.module_id, title="x"), ["lessons"], "update_mask"),
        (course_pb2.Module(module_id=course.module_id, title="x"), [], "update_mask"),
        (course_pb2.Module(module_id=course.module_id, title="  "), ["title"], "module.title"),
        (course_pb2.Module(module_id="nope", title="x"), ["title"], "module.module_id"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.courses.UpdateModule(
                pb.UpdateModuleRequest(
                    request_id=rid(), course_id=course.course_id, module=module,
                    update_mask=FieldMask(paths=paths),
                ),
                metadata=md,
            )  # fmt: skip
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == [expected]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.UpdateModule(
            pb.UpdateModuleRequest(
                request_id=rid(), course_id=course.course_id,
                module=course_pb2.Module(module_id=rid(), title="x"),
                update_mask=FieldMask(paths=["title"]),
            ),
            metadata=md,
        )  # fmt: skip
    assert err.value.code() == NOT_FOUND
    assert error_reason(err.value) == "MODULE_NOT_FOUND"

    # Setting, then clearing the release time.
    release = pb.UpdateModuleRequest(
        request_id=rid(), course_id=course.course_id,
        module=course_pb2.Module(module_id=course.module_id),
        update_mask=FieldMask(paths=["release_time"]),
    )  # fmt: skip
    release.module.release_time.FromSeconds(4102444800)  # 2100-01-01
    set_ = await h.courses.UpdateModule(release, metadata=md)
    assert (set_.module.title, set_.module.release_time.seconds) == ("Stale", 4102444800)
    release.request_id = rid()
    release.module.ClearField("release_time")
    assert not (await h.courses.UpdateModule(release, metadata=md)).module.HasField("release_time")
    # The published version keeps its module as it was.
    published = await _published_v1(h, t.instructor, course)
    assert _layout(published) == [("Basics", course.lesson_ids)]


async def test_deletes_leave_published_versions_and_progress_alone(h: CoursesHarness) -> None:
    t = h.tenant(students=1)
    md = t.instructor.metadata
    learner = t.students[0]
    course = await _learner_completed_first(h, t.instructor, learner)
    first, second = course.lesson_ids
    # A second module whose lesson requires `first` (in the first module).
    extra = await _module(h, t.instructor, course.course_id, "Extra")
    third = await h.add_lesson(t.instructor, course.course_id, extra, "Graphs", [first])
    before = await _draft(h, t.instructor, course.course_id)
    etag = await _etag(h, t.instructor, course.course_id)

    # `first` is required by `second` and `third`: refused, naming both, nothing changes.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.DeleteLesson(
            pb.DeleteLessonRequest(request_id=rid(), course_id=course.course_id, lesson_id=first),
            metadata=md,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "LESSON_IS_PREREQUISITE"
    refused = domain_error_from_rpc_error(err.value)
    assert isinstance(refused, FailedPrecondition)
    assert sorted(v.subject for v in refused.violations) == sorted(
        [f"lessons/{second}", f"lessons/{third}"]
    )
    # The module holding `first` cannot go either: `third` (outside it) requires `first`.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.DeleteModule(
            pb.DeleteModuleRequest(
                request_id=rid(), course_id=course.course_id, module_id=course.module_id
            ),
            metadata=md,
        )
    assert error_reason(err.value) == "LESSON_IS_PREREQUISITE"
    refused = domain_error_from_rpc_error(err.value)
    assert isinstance(refused, FailedPrecondition)
    assert [v.subject for v in refused.violations] == [f"lessons/{third}"]
    assert await _draft(h, t.instructor, course.course_id) == before
    assert await _etag(h, t.instructor, course.course_id) == etag

    # `second` (with the quiz) is nobody's prerequisite: it goes; a retry with the same request
    # id returns the first response instead of NOT_FOUND.
    delete_second = pb.DeleteLessonRequest(
        request_id=rid(), course_id=course.course_id, lesson_id=second, etag=etag
    )
    deleted = await h.courses.DeleteLesson(delete_second, metadata=md)
    assert deleted.etag == await _etag(h, t.instructor, course.course_id) != etag
    assert await h.courses.DeleteLesson(delete_second, metadata=md) == deleted
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.DeleteLesson(
            pb.DeleteLessonRequest(request_id=rid(), course_id=course.course_id, lesson_id=second),
            metadata=md,
        )
    assert error_reason(err.value) == "LESSON_NOT_FOUND"
    # A stale etag is ABORTED even for a delete that would otherwise succeed.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.DeleteModule(
            pb.DeleteModuleRequest(
                request_id=rid(), course_id=course.course_id, module_id=extra, etag=etag
            ),
            metadata=md,
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert _layout(await _draft(h, t.instructor, course.course_id)) == [
        ("Basics", [first]),
        ("Extra", [third]),
    ]
    # The module with `third` goes whole; then `first` is free to go; then its module.
    delete_extra = pb.DeleteModuleRequest(
        request_id=rid(), course_id=course.course_id, module_id=extra
    )
    gone = await h.courses.DeleteModule(delete_extra, metadata=md)
    assert await h.courses.DeleteModule(delete_extra, metadata=md) == gone
    await h.courses.DeleteLesson(
        pb.DeleteLessonRequest(request_id=rid(), course_id=course.course_id, lesson_id=first),
        metadata=md,
    )
    await h.courses.DeleteModule(
        pb.DeleteModuleRequest(
            request_id=rid(), course_id=course.course_id, module_id=course.module_id
        ),
        metadata=md,
    )
    assert list((await _draft(h, t.instructor, course.course_id)).modules) == []

    # Learners still read version 1 whole, and their progress is untouched: `first` counts,
    # `second` is next and can still be completed (with its quiz) against version 1.
    content = await h.courses.GetCourseContent(
        pb.GetCourseContentRequest(course_id=course.course_id, batch_id=course.batch_id),
        metadata=learner.metadata,
    )
    assert content.content.version == 1
    assert _layout(content.content) == [("Basics", [first, second])]
    assert [len(ls.items) for ls in content.content.modules[0].lessons] == [1, 1]
    progress = await h.progress.GetProgress(
        pb.GetProgressRequest(batch_id=course.batch_id), metadata=learner.metadata
    )
    assert (list(progress.progress.completed_lesson_ids), progress.progress.next_lesson_id) == (
        [first],
        second,
    )
    done = await h.progress.CompleteLesson(
        pb.CompleteLessonRequest(request_id=rid(), batch_id=course.batch_id, lesson_id=second),
        metadata=learner.metadata,
    )
    assert done.progress.course_completed
    # An emptied draft cannot be published over version 1.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.PublishCourse(
            pb.PublishCourseRequest(request_id=rid(), course_id=course.course_id), metadata=md
        )
    assert error_reason(err.value) == "EMPTY_COURSE"


async def test_move_lesson_keeps_the_lesson_and_its_learners_progress(h: CoursesHarness) -> None:
    t = h.tenant(students=1)
    md = t.instructor.metadata
    learner = t.students[0]
    course = await _learner_completed_first(h, t.instructor, learner)
    first, second = course.lesson_ids
    advanced = await _module(h, t.instructor, course.course_id, "Advanced")
    third = await h.add_lesson(t.instructor, course.course_id, advanced, "Graphs")
    etag = await _etag(h, t.instructor, course.course_id)

    move = pb.MoveLessonRequest(
        request_id=rid(), course_id=course.course_id, lesson_id=second, module_id=advanced,
        position=1, etag=etag,
    )  # fmt: skip
    moved = await h.courses.MoveLesson(move, metadata=md)
    assert _layout(moved.content) == [("Basics", [first]), ("Advanced", [third, second])]
    lesson = moved.content.modules[1].lessons[1]
    # Same lesson: title, prerequisites and items travel with it.
    assert (lesson.title, list(lesson.prerequisite_lesson_ids), len(lesson.items)) == (
        "Sorting",
        [first],
        1,
    )
    assert moved.etag == await _etag(h, t.instructor, course.course_id) != etag
    assert await h.courses.MoveLesson(move, metadata=md) == moved  # retry: first response
    # Within a module; then refusals that change nothing.
    within = await h.courses.MoveLesson(
        pb.MoveLessonRequest(
            request_id=rid(), course_id=course.course_id, lesson_id=second, module_id=advanced,
            position=0, etag=moved.etag,
        ),
        metadata=md,
    )  # fmt: skip
    assert _layout(within.content) == [("Basics", [first]), ("Advanced", [second, third])]
    before = await _draft(h, t.instructor, course.course_id)
    for request, code, check in (
        (pb.MoveLessonRequest(lesson_id=first, module_id=advanced, position=3),
         grpc.StatusCode.INVALID_ARGUMENT, ["position"]),
        (pb.MoveLessonRequest(lesson_id=first, module_id=advanced, position=-1),
         grpc.StatusCode.INVALID_ARGUMENT, ["position"]),
        (pb.MoveLessonRequest(lesson_id=first, module_id=rid()), NOT_FOUND, "MODULE_NOT_FOUND"),
        (pb.MoveLessonRequest(lesson_id=rid(), module_id=advanced), NOT_FOUND, "LESSON_NOT_FOUND"),
        (pb.MoveLessonRequest(lesson_id=first, module_id=advanced, etag=etag),
         grpc.StatusCode.ABORTED, "ETAG_MISMATCH"),
    ):  # fmt: skip
        request.request_id, request.course_id = rid(), course.course_id
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.courses.MoveLesson(request, metadata=md)
        assert err.value.code() == code
        if isinstance(check, list):
            assert field_violations(err.value) == check
        else:
            assert error_reason(err.value) == check
    assert await _draft(h, t.instructor, course.course_id) == before

    # Learners see version 1 until the next publish; the completion of `first` stays.
    assert _layout(await _published_v1(h, t.instructor, course)) == [("Basics", [first, second])]
    await h.courses.PublishCourse(
        pb.PublishCourseRequest(request_id=rid(), course_id=course.course_id), metadata=md
    )
    content = await h.courses.GetCourseContent(
        pb.GetCourseContentRequest(course_id=course.course_id, batch_id=course.batch_id),
        metadata=learner.metadata,
    )
    assert (content.content.version, _layout(content.content)) == (
        2,
        [("Basics", [first]), ("Advanced", [second, third])],
    )
    progress = await h.progress.GetProgress(
        pb.GetProgressRequest(batch_id=course.batch_id), metadata=learner.metadata
    )
    assert list(progress.progress.completed_lesson_ids) == [first]
    assert progress.progress.next_lesson_id == second


async def test_only_the_course_editors_of_the_tenant_change_its_structure(
    h: CoursesHarness,
) -> None:
    a, b = h.tenant(students=1), h.tenant(students=1)
    course = await h.published_course(a.instructor)
    first, second = course.lesson_ids
    other = await _module(h, a.instructor, course.course_id, "Other")
    # An instructor (the token holds courses.courses.manage) who is only a TA of this course.
    assistant = h.person(a.tenant_id, "instructor")
    await h.enrollments.Enroll(
        pb.EnrollRequest(
            request_id=rid(), batch_id=course.batch_id, user_id=assistant.user_id,
            role=enrollment_enums_pb2.ENROLLMENT_ROLE_TEACHING_ASSISTANT,
        ),
        metadata=a.instructor.metadata,
    )  # fmt: skip
    before = await _draft(h, a.instructor, course.course_id)
    etag = await _etag(h, a.instructor, course.course_id)

    def calls(who: Person) -> list[Callable[[], Awaitable[object]]]:
        """One of each RPC, in an order an editor can run one after another (a gRPC call starts
        when it is created, so each is built only when it is awaited)."""
        md, cid = who.metadata, course.course_id
        return [
            lambda: h.courses.UpdateModule(
                pb.UpdateModuleRequest(
                    request_id=rid(), course_id=cid,
                    module=course_pb2.Module(module_id=course.module_id, title="Renamed"),
                    update_mask=FieldMask(paths=["title"]),
                ),
                metadata=md,
            ),
            lambda: h.courses.MoveLesson(
                pb.MoveLessonRequest(
                    request_id=rid(), course_id=cid, lesson_id=first, module_id=other
                ),
                metadata=md,
            ),
            lambda: h.courses.DeleteLesson(
                pb.DeleteLessonRequest(request_id=rid(), course_id=cid, lesson_id=second),
                metadata=md,
            ),
            lambda: h.courses.DeleteModule(
                pb.DeleteModuleRequest(request_id=rid(), course_id=cid, module_id=other),
                metadata=md,
            ),
        ]  # fmt: skip

    # Students hold no manage permission; this course's TA and an instructor of other courses
    # do, but are not this course's editors.
    enrolled = a.students[0]
    await h.enroll(enrolled, course.batch_id)
    for who in (enrolled, assistant, h.person(a.tenant_id, "instructor")):
        for call in calls(who):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call()
            assert err.value.code() == DENIED
            reason = "MISSING_PERMISSION" if who is enrolled else "NOT_COURSE_STAFF"
            assert error_reason(err.value) == reason
    # Another tenant: students are stopped by the permission, everyone else by the tenant wall.
    for who in (b.students[0], b.instructor, b.admin):
        allowed = {DENIED} if who is b.students[0] else {NOT_FOUND}
        for call in calls(who):
            assert await code_of(call()) in allowed
    assert await _draft(h, a.instructor, course.course_id) == before
    assert await _etag(h, a.instructor, course.course_id) == etag
    # The tenant admin edits every course of the tenant.
    for call in calls(a.admin):
        assert await code_of(call()) == grpc.StatusCode.OK
    assert _layout(await _draft(h, a.instructor, course.course_id)) == [("Renamed", [])]


async def test_archived_courses_and_malformed_requests_change_nothing(h: CoursesHarness) -> None:
    t = h.tenant()
    md = t.instructor.metadata
    course = await h.published_course(t.instructor)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.MoveLesson(
            pb.MoveLessonRequest(
                request_id="nope", course_id="x", lesson_id="", module_id="y", position=-1,
                etag="e" * 65,
            ),
            metadata=md,
        )  # fmt: skip
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(err.value)) == {
        "request_id", "course_id", "lesson_id", "module_id", "position", "etag",
    }  # fmt: skip
    for call in (
        h.courses.UpdateModule(
            pb.UpdateModuleRequest(request_id=rid(), course_id=course.course_id), metadata=md
        ),
        h.courses.DeleteModule(
            pb.DeleteModuleRequest(request_id=rid(), course_id=course.course_id, module_id="m"),
            metadata=md,
        ),
        h.courses.DeleteLesson(
            pb.DeleteLessonRequest(request_id=rid(), course_id="c", lesson_id=rid()),
            metadata=md,
        ),
    ):
        assert await code_of(call) == grpc.StatusCode.INVALID_ARGUMENT
    await h.courses.ArchiveCourse(
        pb.ArchiveCourseRequest(request_id=rid(), course_id=course.course_id), metadata=md
    )
    before = await _draft(h, t.instructor, course.course_id)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.courses.DeleteLesson(
            pb.DeleteLessonRequest(
                request_id=rid(), course_id=course.course_id, lesson_id=course.lesson_ids[1]
            ),
            metadata=md,
        )
    assert error_reason(err.value) == "COURSE_ARCHIVED"
    assert await _draft(h, t.instructor, course.course_id) == before


async def test_every_draft_edit_checks_and_reports_the_course_etag(h: CoursesHarness) -> None:
    # UpdateLesson, DeleteContentItem, ReorderModules and ReorderLessons take the course's etag
    # like the structure edits above: each reports the new one, a stale one is ABORTED and
    # changes nothing, an empty one skips the check.
    t = h.tenant()
    md = t.instructor.metadata
    course = await h.published_course(t.instructor)
    cid = course.course_id
    second_module = await _module(h, t.instructor, cid, "Extras")
    item_id = await h.add_article(t.instructor, cid, course.lesson_ids[0], "# Spare")
    stale = await _etag(h, t.instructor, cid)

    updated = await h.courses.UpdateLesson(
        pb.UpdateLessonRequest(
            request_id=rid(), course_id=cid, etag=stale,
            lesson=course_pb2.Lesson(lesson_id=course.lesson_ids[0], title="Welcome!"),
            update_mask=FieldMask(paths=["title"]),
        ),
        metadata=md,
    )  # fmt: skip
    assert updated.lesson.title == "Welcome!"
    assert updated.etag == await _etag(h, t.instructor, cid) != stale

    calls: list[Callable[[str], Awaitable[str]]] = [
        lambda etag: _reply_etag(h.courses.ReorderModules(
            pb.ReorderModulesRequest(
                request_id=rid(), course_id=cid, module_ids=[second_module, course.module_id],
                etag=etag,
            ),
            metadata=md,
        )),
        lambda etag: _reply_etag(h.courses.ReorderLessons(
            pb.ReorderLessonsRequest(
                request_id=rid(), course_id=cid, module_id=course.module_id,
                lesson_ids=course.lesson_ids, etag=etag,
            ),
            metadata=md,
        )),
        lambda etag: _reply_etag(h.courses.DeleteContentItem(
            pb.DeleteContentItemRequest(
                request_id=rid(), course_id=cid, item_id=item_id, etag=etag
            ),
            metadata=md,
        )),
    ]  # fmt: skip
    current = updated.etag
    for call in calls:
        before = _layout(await _draft(h, t.instructor, cid))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(stale)
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert error_reason(err.value) == "ETAG_MISMATCH"
        assert _layout(await _draft(h, t.instructor, cid)) == before
        assert await _etag(h, t.instructor, cid) == current
        current, previous = await call(current), current
        assert current == await _etag(h, t.instructor, cid) != previous
    draft = await _draft(h, t.instructor, cid)
    assert draft.modules[0].title == "Extras"
    assert item_id not in {i.item_id for m in draft.modules for ls in m.lessons for i in ls.items}
    # No etag: no check.
    assert await calls[1]("")


async def _reply_etag(call: Awaitable[object]) -> str:
    reply = await call
    return str(getattr(reply, "etag"))  # noqa: B009 (the replies are different message types)
