# mypy: disable-error-code="import-untyped"
# ruff: noqa: N802 (servicer method names are the RPC names from the contract)
"""gRPC servicers: proto ⇄ handler calls. No business rules live here.

Mutating RPCs run through `run_idempotent`, which owns the transaction: the handler's writes,
its outbox events and the remembered response commit together, and a retry with the same
`request_id` returns the first response without a second effect.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.courses.v1 import batch_pb2, course_pb2, enrollment_pb2
from suuupra.courses.v1 import courses_service_pb2 as pb
from suuupra.courses.v1 import courses_service_pb2_grpc as rpc

from services.courses import domain
from services.courses.events import ROLE_TO_PROTO, STATUS_TO_PROTO
from services.courses.handlers import (
    AttemptView,
    BatchView,
    ContentView,
    Courses,
    EnrollmentView,
    StatsView,
    VersionView,
)
from suuupra_runtime.access import is_trusted_service
from suuupra_runtime.auth import current_caller
from suuupra_runtime.db import UnitOfWork
from suuupra_runtime.errors import FieldViolation, InvalidArgument
from suuupra_runtime.idempotency import run_idempotent
from suuupra_runtime.timestamps import optional_timestamp_pb as ts
from suuupra_runtime.updates import etag_of, mask_paths

R = TypeVar("R", bound=Message)
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]

PACKAGE = "suuupra.courses.v1"
# The same rule as CreateCourseRequest.language (a nested Course carries no protovalidate rules).
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")

_STATE_TO_PROTO = {
    domain.CourseState.DRAFT: course_pb2.COURSE_STATE_DRAFT,
    domain.CourseState.PUBLISHED: course_pb2.COURSE_STATE_PUBLISHED,
    domain.CourseState.ARCHIVED: course_pb2.COURSE_STATE_ARCHIVED,
}
_BATCH_STATE_TO_PROTO = {
    domain.BatchState.SCHEDULED: batch_pb2.BATCH_STATE_SCHEDULED,
    domain.BatchState.OPEN: batch_pb2.BATCH_STATE_OPEN,
    domain.BatchState.CLOSED: batch_pb2.BATCH_STATE_CLOSED,
}
_ROLE_FROM_PROTO = {v: k for k, v in ROLE_TO_PROTO.items()}
_STATUS_FROM_PROTO = {v: k for k, v in STATUS_TO_PROTO.items()}


def actor() -> domain.Actor:
    """The caller as the domain sees it. A platform service (a trusted SPIFFE peer calling with
    no user token) acts for any tenant it names; everyone else, including users whose calls come
    through the edge (also a SPIFFE peer, but a proxy) or are forwarded by a service with their
    token, acts as that user within their token's tenant."""
    caller = current_caller()
    return domain.Actor(
        user_id=caller.subject,
        tenant_id=caller.tenant_id,
        permissions=caller.permissions,
        is_service=caller.subject is None and is_trusted_service(caller),
    )


# ---------------------------------------------------------------------------------------------
# Mapping helpers


def time_of(message: Message, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    value: Timestamp = getattr(message, field)
    return value.ToDatetime(tzinfo=UTC)


def department_pb(d: domain.Department) -> course_pb2.Department:
    return course_pb2.Department(
        department_id=d.department_id,
        tenant_id=d.tenant_id,
        code=d.code,
        name=d.name,
        create_time=ts(d.created_at),
    )


def course_pb(c: domain.Course) -> course_pb2.Course:
    return course_pb2.Course(
        course_id=c.course_id,
        tenant_id=c.tenant_id,
        code=c.code,
        title=c.title,
        description=c.description,
        language=c.language,
        tags=list(c.tags),
        department_id=c.department_id or "",
        owner_ids=list(c.owner_ids),
        state=_STATE_TO_PROTO[c.state],
        published_version=c.published_version,
        create_time=ts(c.created_at),
        update_time=ts(c.updated_at),
        etag=etag_of(c.row_version),
    )


def version_pb(v: VersionView) -> course_pb2.CourseVersion:
    return course_pb2.CourseVersion(
        course_id=v.course_id,
        version=v.version,
        title=v.title,
        published_by=v.published_by,
        publish_time=ts(v.published_at),
        lesson_count=v.lesson_count,
    )


def item_pb(item: domain.Item) -> course_pb2.ContentItem:
    out = course_pb2.ContentItem(item_id=item.item_id, title=item.title)
    body = item.body
    match item.kind:
        case "article":
            out.article.markdown = body.get("markdown", "")
        case "video":
            out.video.file_id = body.get("file_id", "")
            if body.get("duration_seconds") is not None:
                out.video.duration.FromTimedelta(timedelta(seconds=body["duration_seconds"]))
            for caption in body.get("captions", []):
                out.video.captions.add(language=caption["language"], file_id=caption["file_id"])
        case "document":
            out.document.file_id = body.get("file_id", "")
        case "external_link":
            out.external_link.url = body.get("url", "")
        case "quiz":
            for q in body.get("questions", []):
                out.quiz.questions.add(
                    question_id=q["id"],
                    prompt=q.get("prompt", ""),
                    choices=[
                        course_pb2.QuizChoice(choice_id=c["id"], text=c["text"])
                        for c in q.get("choices", [])
                    ],
                    correct_choice_ids=q.get("correct", []),
                    points=int(q.get("points") or 1),
                )
    return out


def item_from_pb(item: course_pb2.ContentItem) -> domain.Item:
    """Proto → domain item; question ids default to q1, q2, ... and choice ids to a, b, ... so a
    client can name the answer key without minting ids."""
    kind = item.WhichOneof("body") or ""
    body: dict[str, Any] = {}
    match kind:
        case "article":
            body = {"markdown": item.article.markdown}
        case "video":
            body = {
                "file_id": item.video.file_id,
                "duration_seconds": item.video.duration.ToTimedelta().total_seconds()
                if item.video.HasField("duration")
                else None,
                "captions": [
                    {"language": c.language, "file_id": c.file_id} for c in item.video.captions
                ],
            }
        case "document":
            body = {"file_id": item.document.file_id}
        case "external_link":
            body = {"url": item.external_link.url}
        case "quiz":
            body = {
                "questions": [
                    {
                        "id": q.question_id or f"q{qi + 1}",
                        "prompt": q.prompt,
                        "choices": [
                            {"id": c.choice_id or chr(ord("a") + ci), "text": c.text}
                            for ci, c in enumerate(q.choices)
                        ],
                        "correct": list(q.correct_choice_ids),
                        "points": q.points or 1,
                    }
                    for qi, q in enumerate(item.quiz.questions)
                ]
            }
    return domain.Item("", item.title, kind, body)


def lesson_pb(lesson: domain.Lesson, locked: bool = False) -> course_pb2.Lesson:
    return course_pb2.Lesson(
        lesson_id=lesson.lesson_id,
        title=lesson.title,
        prerequisite_lesson_ids=list(lesson.prerequisites),
        release_time=ts(lesson.release_at),
        items=[item_pb(i) for i in lesson.items],
        locked=locked,
    )


def module_pb(module: domain.Module, locked: Iterable[str] = ()) -> course_pb2.Module:
    locked_ids = set(locked)
    return course_pb2.Module(
        module_id=module.module_id,
        title=module.title,
        release_time=ts(module.release_at),
        lessons=[lesson_pb(ls, ls.lesson_id in locked_ids) for ls in module.lessons],
    )


def content_pb(
    course_id: str, version: int, content: domain.Content, locked: Iterable[str] = ()
) -> course_pb2.CourseContent:
    locked_ids = frozenset(locked)
    return course_pb2.CourseContent(
        course_id=course_id,
        version=version,
        modules=[module_pb(m, locked_ids) for m in content.modules],
    )


def content_view_pb(view: ContentView) -> course_pb2.CourseContent:
    return content_pb(view.course_id, view.version, view.content, view.locked)


def batch_pb(view: BatchView) -> batch_pb2.Batch:
    b = view.batch
    return batch_pb2.Batch(
        batch_id=b.batch_id,
        tenant_id=b.tenant_id,
        course_id=b.course_id,
        name=b.name,
        capacity=b.capacity,
        start_time=ts(b.start_at),
        end_time=ts(b.end_at),
        schedule=b.schedule,
        state=_BATCH_STATE_TO_PROTO[b.state],
        seats_taken=view.seats.taken,
        waitlist_length=view.seats.waitlisted,
        sections=[
            batch_pb2.Section(section_id=sid, batch_id=b.batch_id, name=name)
            for sid, name in view.sections
        ],
        create_time=ts(b.created_at),
    )


def enrollment_pb(view: EnrollmentView) -> enrollment_pb2.Enrollment:
    e = view.enrollment
    return enrollment_pb2.Enrollment(
        enrollment_id=e.enrollment_id,
        tenant_id=e.tenant_id,
        course_id=e.course_id,
        batch_id=e.batch_id,
        section_id=e.section_id or "",
        user_id=e.user_id,
        role=ROLE_TO_PROTO[e.role],
        status=STATUS_TO_PROTO[e.status],
        waitlist_position=view.waitlist_position,
        create_time=ts(e.created_at),
        update_time=ts(e.updated_at),
        history=[
            enrollment_pb2.EnrollmentStatusChange(
                status=STATUS_TO_PROTO[h.status],
                reason=h.reason,
                actor_id=h.actor_id,
                change_time=ts(h.at),
            )
            for h in view.history
        ],
    )


def progress_pb(p: domain.ProgressView) -> enrollment_pb2.Progress:
    return enrollment_pb2.Progress(
        course_id=p.course_id,
        batch_id=p.batch_id,
        user_id=p.user_id,
        version=p.version,
        total_lessons=p.total,
        completed_lessons=len(p.completed_ids),
        percent=p.percent,
        completed_lesson_ids=list(p.completed_ids),
        next_lesson_id=p.next_lesson_id,
        course_completed=p.course_completed,
    )


def attempt_pb(a: AttemptView) -> enrollment_pb2.QuizAttempt:
    return enrollment_pb2.QuizAttempt(
        attempt_id=a.attempt_id,
        lesson_id=a.lesson_id,
        item_id=a.item_id,
        attempt_number=a.number,
        score=a.score,
        max_score=a.max_score,
        results=[
            enrollment_pb2.QuestionResult(
                question_id=r.question_id, correct=r.correct, points=r.points
            )
            for r in a.results
        ],
        submit_time=ts(a.at),
    )


def stats_pb(s: StatsView) -> enrollment_pb2.CompletionStats:
    return enrollment_pb2.CompletionStats(
        course_id=s.course_id,
        batch_id=s.batch_id,
        version=s.version,
        learners=s.learners,
        completed_learners=s.completed_learners,
        average_percent=s.average_percent,
        lessons=[
            enrollment_pb2.LessonCompletion(lesson_id=lid, completed=n) for lid, n in s.lessons
        ],
    )


# ---------------------------------------------------------------------------------------------
# Servicers


class _Base:
    def __init__(self, courses: Courses) -> None:
        self.courses = courses

    async def _idempotent(
        self,
        *,
        service: str,
        method: str,
        request: Message,
        response_type: type[R],
        work: Callable[[UnitOfWork], Awaitable[R]],
        tenant_id: str = "",
    ) -> R:
        tenant = domain.resolve_tenant(actor(), tenant_id)
        return await run_idempotent(
            self.courses.db,
            tenant_id=tenant,
            method=f"/{PACKAGE}.{service}/{method}",
            request=request,
            response_type=response_type,
            work=work,
        )


class DepartmentServicer(_Base, rpc.DepartmentServiceServicer):
    async def CreateDepartment(
        self, request: pb.CreateDepartmentRequest, context: Ctx
    ) -> pb.CreateDepartmentResponse:
        async def work(uow: UnitOfWork) -> pb.CreateDepartmentResponse:
            d = await self.courses.create_department(
                uow, actor(), code=request.code, name=request.name
            )
            return pb.CreateDepartmentResponse(department=department_pb(d))

        return await self._idempotent(
            service="DepartmentService", method="CreateDepartment", request=request,
            response_type=pb.CreateDepartmentResponse, work=work,
        )  # fmt: skip

    async def ListDepartments(
        self, request: pb.ListDepartmentsRequest, context: Ctx
    ) -> pb.ListDepartmentsResponse:
        departments = await self.courses.list_departments(actor())
        return pb.ListDepartmentsResponse(departments=[department_pb(d) for d in departments])


class CourseServicer(_Base, rpc.CourseServiceServicer):
    async def CreateCourse(
        self, request: pb.CreateCourseRequest, context: Ctx
    ) -> pb.CreateCourseResponse:
        async def work(uow: UnitOfWork) -> pb.CreateCourseResponse:
            course = await self.courses.create_course(
                uow, actor(), code=request.code, title=request.title,
                description=request.description, language=request.language,
                tags=request.tags, department_id=request.department_id,
                owner_ids=request.owner_ids,
            )  # fmt: skip
            return pb.CreateCourseResponse(course=course_pb(course))

        return await self._idempotent(
            service="CourseService", method="CreateCourse", request=request,
            response_type=pb.CreateCourseResponse, work=work,
        )  # fmt: skip

    async def GetCourse(self, request: pb.GetCourseRequest, context: Ctx) -> pb.GetCourseResponse:
        course = await self.courses.get_course(actor(), request.course_id)
        return pb.GetCourseResponse(course=course_pb(course))

    async def ListCourses(
        self, request: pb.ListCoursesRequest, context: Ctx
    ) -> pb.ListCoursesResponse:
        courses, token = await self.courses.list_courses(
            actor(), page_size=request.page_size, page_token=request.page_token,
            department_id=request.department_id, tag=request.tag, language=request.language,
            query=request.query, managed_only=request.managed_only,
        )  # fmt: skip
        return pb.ListCoursesResponse(
            courses=[course_pb(c) for c in courses], next_page_token=token
        )

    async def UpdateCourse(
        self, request: pb.UpdateCourseRequest, context: Ctx
    ) -> pb.UpdateCourseResponse:
        allowed = {"title", "description", "language", "tags", "department_id", "owner_ids"}
        paths = mask_paths(request.update_mask.paths, allowed, "course")
        c = request.course
        violations = []
        if "title" in paths and not c.title.strip():
            violations.append(FieldViolation("course.title", "must not be empty"))
        if "title" in paths and len(c.title) > 200:
            violations.append(FieldViolation("course.title", "at most 200 characters"))
        if "language" in paths and not _LANGUAGE.match(c.language):
            violations.append(FieldViolation("course.language", "a BCP 47 tag such as en or hi-IN"))
        if "description" in paths and len(c.description) > 20000:
            violations.append(FieldViolation("course.description", "at most 20000 characters"))
        if "tags" in paths and (len(c.tags) > 20 or any(not 0 < len(t) <= 50 for t in c.tags)):
            violations.append(
                FieldViolation("course.tags", "at most 20 tags of 1 to 50 characters")
            )
        if "department_id" in paths and c.department_id and not _is_uuid(c.department_id):
            violations.append(FieldViolation("course.department_id", "must be a UUID"))
        if "owner_ids" in paths and not all(_is_uuid(o) for o in c.owner_ids):
            violations.append(FieldViolation("course.owner_ids", "must be UUIDs"))
        if not _is_uuid(c.course_id):
            violations.append(FieldViolation("course.course_id", "must be a UUID"))
        if violations:
            raise InvalidArgument(violations)
        changes: dict[str, Any] = {}
        for path in paths:
            value = getattr(c, path)
            changes[path] = tuple(value) if path in ("tags", "owner_ids") else value

        async def work(uow: UnitOfWork) -> pb.UpdateCourseResponse:
            course = await self.courses.update_course(uow, actor(), c.course_id, c.etag, changes)
            return pb.UpdateCourseResponse(course=course_pb(course))

        return await self._idempotent(
            service="CourseService", method="UpdateCourse", request=request,
            response_type=pb.UpdateCourseResponse, work=work,
        )  # fmt: skip

    async def PublishCourse(
        self, request: pb.PublishCourseRequest, context: Ctx
    ) -> pb.PublishCourseResponse:
        async def work(uow: UnitOfWork) -> pb.PublishCourseResponse:
            course, version = await self.courses.publish_course(
                uow, actor(), request.course_id, request.etag
            )
            return pb.PublishCourseResponse(course=course_pb(course), version=version_pb(version))

        return await self._idempotent(
            service="CourseService", method="PublishCourse", request=request,
            response_type=pb.PublishCourseResponse, work=work,
        )  # fmt: skip

    async def ArchiveCourse(
        self, request: pb.ArchiveCourseRequest, context: Ctx
    ) -> pb.ArchiveCourseResponse:
        async def work(uow: UnitOfWork) -> pb.ArchiveCourseResponse:
            course = await self.courses.archive_course(uow, actor(), request.course_id)
            return pb.ArchiveCourseResponse(course=course_pb(course))

        return await self._idempotent(
            service="CourseService", method="ArchiveCourse", request=request,
            response_type=pb.ArchiveCourseResponse, work=work,
        )  # fmt: skip

    async def ListCourseVersions(
        self, request: pb.ListCourseVersionsRequest, context: Ctx
    ) -> pb.ListCourseVersionsResponse:
        versions = await self.courses.list_versions(actor(), request.course_id)
        return pb.ListCourseVersionsResponse(versions=[version_pb(v) for v in versions])

    async def GetCourseContent(
        self, request: pb.GetCourseContentRequest, context: Ctx
    ) -> pb.GetCourseContentResponse:
        view = await self.courses.get_content(
            actor(), request.course_id, batch_id=request.batch_id, version=request.version,
            draft=request.draft,
        )  # fmt: skip
        return pb.GetCourseContentResponse(content=content_view_pb(view))

    async def CreateModule(
        self, request: pb.CreateModuleRequest, context: Ctx
    ) -> pb.CreateModuleResponse:
        async def work(uow: UnitOfWork) -> pb.CreateModuleResponse:
            module = await self.courses.create_module(
                uow, actor(), request.course_id, request.title, time_of(request, "release_time")
            )
            return pb.CreateModuleResponse(module=module_pb(module))

        return await self._idempotent(
            service="CourseService", method="CreateModule", request=request,
            response_type=pb.CreateModuleResponse, work=work,
        )  # fmt: skip

    async def CreateLesson(
        self, request: pb.CreateLessonRequest, context: Ctx
    ) -> pb.CreateLessonResponse:
        async def work(uow: UnitOfWork) -> pb.CreateLessonResponse:
            lesson = await self.courses.create_lesson(
                uow, actor(), request.course_id, request.module_id, title=request.title,
                prerequisites=list(request.prerequisite_lesson_ids),
                release_at=time_of(request, "release_time"),
            )  # fmt: skip
            return pb.CreateLessonResponse(lesson=lesson_pb(lesson))

        return await self._idempotent(
            service="CourseService", method="CreateLesson", request=request,
            response_type=pb.CreateLessonResponse, work=work,
        )  # fmt: skip

    async def UpdateLesson(
        self, request: pb.UpdateLessonRequest, context: Ctx
    ) -> pb.UpdateLessonResponse:
        paths = mask_paths(
            request.update_mask.paths,
            {"title", "prerequisite_lesson_ids", "release_time"},
            "lesson",
        )
        lesson = request.lesson
        violations = []
        if not _is_uuid(lesson.lesson_id):
            violations.append(FieldViolation("lesson.lesson_id", "must be a UUID"))
        if "title" in paths and not (0 < len(lesson.title.strip()) <= 200):
            violations.append(FieldViolation("lesson.title", "1 to 200 characters"))
        if violations:
            raise InvalidArgument(violations)

        async def work(uow: UnitOfWork) -> pb.UpdateLessonResponse:
            updated, etag = await self.courses.update_lesson(
                uow, actor(), request.course_id, lesson.lesson_id,
                title=lesson.title if "title" in paths else None,
                prerequisites=list(lesson.prerequisite_lesson_ids)
                if "prerequisite_lesson_ids" in paths else None,
                release_at=time_of(lesson, "release_time") if "release_time" in paths else False,
                etag=request.etag,
            )  # fmt: skip
            return pb.UpdateLessonResponse(lesson=lesson_pb(updated), etag=etag)

        return await self._idempotent(
            service="CourseService", method="UpdateLesson", request=request,
            response_type=pb.UpdateLessonResponse, work=work,
        )  # fmt: skip

    async def CreateContentItem(
        self, request: pb.CreateContentItemRequest, context: Ctx
    ) -> pb.CreateContentItemResponse:
        item = item_from_pb(request.item)
        if not request.item.title.strip() or len(request.item.title) > 200:
            raise InvalidArgument([FieldViolation("item.title", "1 to 200 characters")])

        async def work(uow: UnitOfWork) -> pb.CreateContentItemResponse:
            created = await self.courses.create_item(
                uow, actor(), request.course_id, request.lesson_id, item
            )
            return pb.CreateContentItemResponse(item=item_pb(created))

        return await self._idempotent(
            service="CourseService", method="CreateContentItem", request=request,
            response_type=pb.CreateContentItemResponse, work=work,
        )  # fmt: skip

    async def DeleteContentItem(
        self, request: pb.DeleteContentItemRequest, context: Ctx
    ) -> pb.DeleteContentItemResponse:
        async def work(uow: UnitOfWork) -> pb.DeleteContentItemResponse:
            etag = await self.courses.delete_item(
                uow, actor(), request.course_id, request.item_id, etag=request.etag
            )
            return pb.DeleteContentItemResponse(etag=etag)

        return await self._idempotent(
            service="CourseService", method="DeleteContentItem", request=request,
            response_type=pb.DeleteContentItemResponse, work=work,
        )  # fmt: skip

    async def ReorderModules(
        self, request: pb.ReorderModulesRequest, context: Ctx
    ) -> pb.ReorderModulesResponse:
        async def work(uow: UnitOfWork) -> pb.ReorderModulesResponse:
            edit = await self.courses.reorder_modules(
                uow, actor(), request.course_id, list(request.module_ids), etag=request.etag
            )
            return pb.ReorderModulesResponse(
                content=content_pb(request.course_id, 0, edit.content), etag=edit.etag
            )

        return await self._idempotent(
            service="CourseService", method="ReorderModules", request=request,
            response_type=pb.ReorderModulesResponse, work=work,
        )  # fmt: skip

    async def ReorderLessons(
        self, request: pb.ReorderLessonsRequest, context: Ctx
    ) -> pb.ReorderLessonsResponse:
        async def work(uow: UnitOfWork) -> pb.ReorderLessonsResponse:
            module, etag = await self.courses.reorder_lessons(
                uow, actor(), request.course_id, request.module_id, list(request.lesson_ids),
                etag=request.etag,
            )  # fmt: skip
            return pb.ReorderLessonsResponse(module=module_pb(module), etag=etag)

        return await self._idempotent(
            service="CourseService", method="ReorderLessons", request=request,
            response_type=pb.ReorderLessonsResponse, work=work,
        )  # fmt: skip

    async def UpdateModule(
        self, request: pb.UpdateModuleRequest, context: Ctx
    ) -> pb.UpdateModuleResponse:
        paths = mask_paths(request.update_mask.paths, {"title", "release_time"}, "module")
        module = request.module
        violations = []
        if not _is_uuid(module.module_id):
            violations.append(FieldViolation("module.module_id", "must be a UUID"))
        if "title" in paths and not (0 < len(module.title.strip()) <= 200):
            violations.append(FieldViolation("module.title", "1 to 200 characters"))
        if violations:
            raise InvalidArgument(violations)

        async def work(uow: UnitOfWork) -> pb.UpdateModuleResponse:
            updated, etag = await self.courses.update_module(
                uow, actor(), request.course_id, module.module_id, etag=request.etag,
                title=module.title if "title" in paths else None,
                release_at=time_of(module, "release_time") if "release_time" in paths else False,
            )  # fmt: skip
            return pb.UpdateModuleResponse(module=module_pb(updated), etag=etag)

        return await self._idempotent(
            service="CourseService", method="UpdateModule", request=request,
            response_type=pb.UpdateModuleResponse, work=work,
        )  # fmt: skip

    async def DeleteModule(
        self, request: pb.DeleteModuleRequest, context: Ctx
    ) -> pb.DeleteModuleResponse:
        async def work(uow: UnitOfWork) -> pb.DeleteModuleResponse:
            etag = await self.courses.delete_module(
                uow, actor(), request.course_id, request.module_id, etag=request.etag
            )
            return pb.DeleteModuleResponse(etag=etag)

        return await self._idempotent(
            service="CourseService", method="DeleteModule", request=request,
            response_type=pb.DeleteModuleResponse, work=work,
        )  # fmt: skip

    async def DeleteLesson(
        self, request: pb.DeleteLessonRequest, context: Ctx
    ) -> pb.DeleteLessonResponse:
        async def work(uow: UnitOfWork) -> pb.DeleteLessonResponse:
            etag = await self.courses.delete_lesson(
                uow, actor(), request.course_id, request.lesson_id, etag=request.etag
            )
            return pb.DeleteLessonResponse(etag=etag)

        return await self._idempotent(
            service="CourseService", method="DeleteLesson", request=request,
            response_type=pb.DeleteLessonResponse, work=work,
        )  # fmt: skip

    async def MoveLesson(
        self, request: pb.MoveLessonRequest, context: Ctx
    ) -> pb.MoveLessonResponse:
        async def work(uow: UnitOfWork) -> pb.MoveLessonResponse:
            edit = await self.courses.move_lesson(
                uow, actor(), request.course_id, request.lesson_id, module_id=request.module_id,
                position=request.position, etag=request.etag,
            )  # fmt: skip
            return pb.MoveLessonResponse(
                content=content_pb(request.course_id, 0, edit.content), etag=edit.etag
            )

        return await self._idempotent(
            service="CourseService", method="MoveLesson", request=request,
            response_type=pb.MoveLessonResponse, work=work,
        )  # fmt: skip


class BatchServicer(_Base, rpc.BatchServiceServicer):
    async def CreateBatch(
        self, request: pb.CreateBatchRequest, context: Ctx
    ) -> pb.CreateBatchResponse:
        async def work(uow: UnitOfWork) -> pb.CreateBatchResponse:
            view = await self.courses.create_batch(
                uow, actor(), request.course_id, name=request.name, capacity=request.capacity,
                start_at=time_of(request, "start_time"), end_at=time_of(request, "end_time"),
                schedule=request.schedule,
            )  # fmt: skip
            return pb.CreateBatchResponse(batch=batch_pb(view))

        return await self._idempotent(
            service="BatchService", method="CreateBatch", request=request,
            response_type=pb.CreateBatchResponse, work=work,
        )  # fmt: skip

    async def GetBatch(self, request: pb.GetBatchRequest, context: Ctx) -> pb.GetBatchResponse:
        view = await self.courses.get_batch(actor(), request.batch_id, request.tenant_id)
        return pb.GetBatchResponse(batch=batch_pb(view))

    async def ListBatches(
        self, request: pb.ListBatchesRequest, context: Ctx
    ) -> pb.ListBatchesResponse:
        views = await self.courses.list_batches(actor(), request.course_id)
        return pb.ListBatchesResponse(batches=[batch_pb(v) for v in views])

    async def OpenBatch(self, request: pb.OpenBatchRequest, context: Ctx) -> pb.OpenBatchResponse:
        async def work(uow: UnitOfWork) -> pb.OpenBatchResponse:
            view = await self.courses.open_batch(uow, actor(), request.batch_id)
            return pb.OpenBatchResponse(batch=batch_pb(view))

        return await self._idempotent(
            service="BatchService", method="OpenBatch", request=request,
            response_type=pb.OpenBatchResponse, work=work,
        )  # fmt: skip

    async def CloseBatch(
        self, request: pb.CloseBatchRequest, context: Ctx
    ) -> pb.CloseBatchResponse:
        async def work(uow: UnitOfWork) -> pb.CloseBatchResponse:
            view = await self.courses.close_batch(uow, actor(), request.batch_id)
            return pb.CloseBatchResponse(batch=batch_pb(view))

        return await self._idempotent(
            service="BatchService", method="CloseBatch", request=request,
            response_type=pb.CloseBatchResponse, work=work,
        )  # fmt: skip

    async def CreateSection(
        self, request: pb.CreateSectionRequest, context: Ctx
    ) -> pb.CreateSectionResponse:
        async def work(uow: UnitOfWork) -> pb.CreateSectionResponse:
            sid, bid, name = await self.courses.create_section(
                uow, actor(), request.batch_id, request.name
            )
            return pb.CreateSectionResponse(
                section=batch_pb2.Section(section_id=sid, batch_id=bid, name=name)
            )

        return await self._idempotent(
            service="BatchService", method="CreateSection", request=request,
            response_type=pb.CreateSectionResponse, work=work,
        )  # fmt: skip


class EnrollmentServicer(_Base, rpc.EnrollmentServiceServicer):
    async def Enroll(self, request: pb.EnrollRequest, context: Ctx) -> pb.EnrollResponse:
        role = _ROLE_FROM_PROTO.get(request.role)

        async def work(uow: UnitOfWork) -> pb.EnrollResponse:
            view = await self.courses.enroll(
                uow, actor(), tenant_id=request.tenant_id, batch_id=request.batch_id,
                user_id=request.user_id, role=role, section_id=request.section_id,
            )  # fmt: skip
            return pb.EnrollResponse(enrollment=enrollment_pb(view))

        return await self._idempotent(
            service="EnrollmentService", method="Enroll", request=request,
            response_type=pb.EnrollResponse, work=work, tenant_id=request.tenant_id,
        )  # fmt: skip

    async def DropEnrollment(
        self, request: pb.DropEnrollmentRequest, context: Ctx
    ) -> pb.DropEnrollmentResponse:
        async def work(uow: UnitOfWork) -> pb.DropEnrollmentResponse:
            dropped, promoted = await self.courses.drop(
                uow, actor(), tenant_id=request.tenant_id, enrollment_id=request.enrollment_id,
                reason=request.reason,
            )  # fmt: skip
            return pb.DropEnrollmentResponse(
                enrollment=enrollment_pb(dropped),
                promoted=enrollment_pb(promoted) if promoted else None,
            )

        return await self._idempotent(
            service="EnrollmentService", method="DropEnrollment", request=request,
            response_type=pb.DropEnrollmentResponse, work=work, tenant_id=request.tenant_id,
        )  # fmt: skip

    async def GetEnrollment(
        self, request: pb.GetEnrollmentRequest, context: Ctx
    ) -> pb.GetEnrollmentResponse:
        view = await self.courses.get_enrollment(actor(), request.tenant_id, request.enrollment_id)
        return pb.GetEnrollmentResponse(enrollment=enrollment_pb(view))

    async def ListEnrollments(
        self, request: pb.ListEnrollmentsRequest, context: Ctx
    ) -> pb.ListEnrollmentsResponse:
        views, token = await self.courses.list_enrollments(
            actor(), tenant_id=request.tenant_id, batch_id=request.batch_id,
            user_id=request.user_id, status=_STATUS_FROM_PROTO.get(request.status),
            page_size=request.page_size, page_token=request.page_token,
        )  # fmt: skip
        return pb.ListEnrollmentsResponse(
            enrollments=[enrollment_pb(v) for v in views], next_page_token=token
        )


class ProgressServicer(_Base, rpc.ProgressServiceServicer):
    async def CompleteLesson(
        self, request: pb.CompleteLessonRequest, context: Ctx
    ) -> pb.CompleteLessonResponse:
        async def work(uow: UnitOfWork) -> pb.CompleteLessonResponse:
            view = await self.courses.complete_lesson(
                uow, actor(), request.batch_id, request.lesson_id
            )
            return pb.CompleteLessonResponse(progress=progress_pb(view))

        return await self._idempotent(
            service="ProgressService", method="CompleteLesson", request=request,
            response_type=pb.CompleteLessonResponse, work=work,
        )  # fmt: skip

    async def SubmitQuizAttempt(
        self, request: pb.SubmitQuizAttemptRequest, context: Ctx
    ) -> pb.SubmitQuizAttemptResponse:
        answers = {a.question_id: list(a.choice_ids) for a in request.answers}

        async def work(uow: UnitOfWork) -> pb.SubmitQuizAttemptResponse:
            attempt = await self.courses.submit_quiz(
                uow, actor(), request.batch_id, request.item_id, answers
            )
            return pb.SubmitQuizAttemptResponse(attempt=attempt_pb(attempt))

        return await self._idempotent(
            service="ProgressService", method="SubmitQuizAttempt", request=request,
            response_type=pb.SubmitQuizAttemptResponse, work=work,
        )  # fmt: skip

    async def GetProgress(
        self, request: pb.GetProgressRequest, context: Ctx
    ) -> pb.GetProgressResponse:
        view = await self.courses.get_progress(actor(), request.batch_id, request.user_id)
        return pb.GetProgressResponse(progress=progress_pb(view))

    async def GetCompletionStats(
        self, request: pb.GetCompletionStatsRequest, context: Ctx
    ) -> pb.GetCompletionStatsResponse:
        stats = await self.courses.completion_stats(actor(), request.course_id, request.batch_id)
        return pb.GetCompletionStatsResponse(stats=stats_pb(stats))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def register_all(server: grpc.aio.Server, courses: Courses) -> None:
    rpc.add_DepartmentServiceServicer_to_server(DepartmentServicer(courses), server)
    rpc.add_CourseServiceServicer_to_server(CourseServicer(courses), server)
    rpc.add_BatchServiceServicer_to_server(BatchServicer(courses), server)
    rpc.add_EnrollmentServiceServicer_to_server(EnrollmentServicer(courses), server)
    rpc.add_ProgressServiceServicer_to_server(ProgressServicer(courses), server)


SERVICE_NAMES = [
    f"{PACKAGE}.{name}"
    for name in (
        "DepartmentService",
        "CourseService",
        "BatchService",
        "EnrollmentService",
        "ProgressService",
    )
]
