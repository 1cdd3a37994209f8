# mypy: disable-error-code="import-untyped"
"""The courses service in-process for integration/contract tests: a fresh database, the shared
NATS server, a `TestIssuer` for tokens with the permissions identity really grants per role,
and builders for the usual fixtures (a published course with a batch)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc
from suuupra.courses.v1 import course_pb2
from suuupra.courses.v1 import courses_service_pb2 as pb
from suuupra.courses.v1 import courses_service_pb2_grpc as rpc

from services.courses.server import MIGRATIONS, SERVICE, Wiring, build_wiring
from services.identity.domain import role_permissions
from suuupra_runtime.testing.harness import (
    RunningService,
    fresh_service_database,
    running_service,
)
from suuupra_runtime.testing.rpc_errors import error_reason, field_violations, rid
from suuupra_runtime.testing.tokens import TestIssuer, bearer

Metadata = tuple[tuple[str, str], ...]
SERVICE_PEER = "spiffe://suuupra.local/ns/suuupra/sa/commerce"


def service_peer(name: str = "commerce") -> Metadata:
    """What the sidecar adds for a calling service (the app trusts it: it binds loopback)."""
    return (
        ("x-forwarded-client-cert", f"Hash=ab;URI=spiffe://suuupra.local/ns/suuupra/sa/{name}"),
    )


@dataclass
class Person:
    user_id: str
    tenant_id: str
    metadata: Metadata


@dataclass
class Tenant:
    tenant_id: str
    admin: Person
    instructor: Person
    students: list[Person] = field(default_factory=list)


@dataclass
class PublishedCourse:
    course_id: str
    module_id: str
    lesson_ids: list[str]
    quiz_id: str
    batch_id: str


@dataclass
class CoursesHarness:
    svc: RunningService
    wiring: Wiring
    issuer: TestIssuer

    @property
    def departments(self) -> rpc.DepartmentServiceStub:
        return rpc.DepartmentServiceStub(self.svc.channel)

    @property
    def courses(self) -> rpc.CourseServiceStub:
        return rpc.CourseServiceStub(self.svc.channel)

    @property
    def batches(self) -> rpc.BatchServiceStub:
        return rpc.BatchServiceStub(self.svc.channel)

    @property
    def enrollments(self) -> rpc.EnrollmentServiceStub:
        return rpc.EnrollmentServiceStub(self.svc.channel)

    @property
    def progress(self) -> rpc.ProgressServiceStub:
        return rpc.ProgressServiceStub(self.svc.channel)

    def person(self, tenant_id: str, role: str, user_id: str | None = None) -> Person:
        uid = user_id or str(uuid.uuid4())
        token = self.issuer.token(uid, tenant_id, roles=[role], perms=role_permissions([role]))
        return Person(uid, tenant_id, bearer(token))

    def tenant(self, students: int = 0) -> Tenant:
        tid = str(uuid.uuid4())
        return Tenant(
            tid,
            self.person(tid, "tenant_admin"),
            self.person(tid, "instructor"),
            [self.person(tid, "student") for _ in range(students)],
        )

    async def draft_course(self, owner: Person, code: str | None = None, **fields: object) -> str:
        created = await self.courses.CreateCourse(
            pb.CreateCourseRequest(
                request_id=rid(),
                code=code or f"C{uuid.uuid4().hex[:8]}",
                title=str(fields.pop("title", "Algorithms")),
                language=str(fields.pop("language", "en")),
                **fields,  # type: ignore[arg-type]
            ),
            metadata=owner.metadata,
        )
        return str(created.course.course_id)

    async def add_lesson(
        self, owner: Person, course_id: str, module_id: str, title: str,
        prerequisites: Sequence[str] = (),
    ) -> str:  # fmt: skip
        lesson = await self.courses.CreateLesson(
            pb.CreateLessonRequest(
                request_id=rid(), course_id=course_id, module_id=module_id, title=title,
                prerequisite_lesson_ids=list(prerequisites),
            ),
            metadata=owner.metadata,
        )  # fmt: skip
        return str(lesson.lesson.lesson_id)

    async def add_article(self, owner: Person, course_id: str, lesson_id: str, text: str) -> str:
        item = await self.courses.CreateContentItem(
            pb.CreateContentItemRequest(
                request_id=rid(), course_id=course_id, lesson_id=lesson_id,
                item=course_pb2.ContentItem(
                    title="Notes", article=course_pb2.Article(markdown=text)
                ),
            ),
            metadata=owner.metadata,
        )  # fmt: skip
        return str(item.item.item_id)

    async def published_course(
        self, owner: Person, *, capacity: int = 0, open_batch: bool = True
    ) -> PublishedCourse:
        """Module with two lessons (the second requires the first) and a quiz; one batch."""
        course_id = await self.draft_course(owner)
        module = await self.courses.CreateModule(
            pb.CreateModuleRequest(request_id=rid(), course_id=course_id, title="Basics"),
            metadata=owner.metadata,
        )
        module_id = module.module.module_id
        first = await self.add_lesson(owner, course_id, module_id, "Intro")
        second = await self.add_lesson(owner, course_id, module_id, "Sorting", [first])
        await self.add_article(owner, course_id, first, "# Welcome")
        quiz = await self.courses.CreateContentItem(
            pb.CreateContentItemRequest(
                request_id=rid(), course_id=course_id, lesson_id=second,
                item=course_pb2.ContentItem(
                    title="Check",
                    quiz=course_pb2.Quiz(
                        questions=[
                            course_pb2.QuizQuestion(
                                prompt="Fastest average sort?",
                                choices=[
                                    course_pb2.QuizChoice(text="bubble"),
                                    course_pb2.QuizChoice(text="quick"),
                                ],
                                correct_choice_ids=["b"],
                                points=2,
                            )
                        ]
                    ),
                ),
            ),
            metadata=owner.metadata,
        )  # fmt: skip
        await self.courses.PublishCourse(
            pb.PublishCourseRequest(request_id=rid(), course_id=course_id),
            metadata=owner.metadata,
        )
        batch_id = await self.batch(owner, course_id, capacity=capacity, open_batch=open_batch)
        return PublishedCourse(course_id, module_id, [first, second], quiz.item.item_id, batch_id)

    async def batch(
        self, owner: Person, course_id: str, *, capacity: int = 0, open_batch: bool = True
    ) -> str:
        batch = await self.batches.CreateBatch(
            pb.CreateBatchRequest(
                request_id=rid(), course_id=course_id, name="Autumn", capacity=capacity
            ),
            metadata=owner.metadata,
        )
        if open_batch:
            await self.batches.OpenBatch(
                pb.OpenBatchRequest(request_id=rid(), batch_id=batch.batch.batch_id),
                metadata=owner.metadata,
            )
        return str(batch.batch.batch_id)

    async def enroll(self, learner: Person, batch_id: str) -> pb.EnrollResponse:
        reply: pb.EnrollResponse = await self.enrollments.Enroll(
            pb.EnrollRequest(request_id=rid(), batch_id=batch_id), metadata=learner.metadata
        )
        return reply

    async def outbox(self, event_type: str) -> list[bytes]:
        """Payloads of this event type in the outbox, in commit order."""
        rows = await self.wiring.database.fetch(
            "SELECT payload FROM outbox WHERE event_type = $1 ORDER BY seq", event_type
        )
        return [bytes(r["payload"]) for r in rows]


@contextlib.asynccontextmanager
async def courses_harness(postgres_server_url: str, nats_url: str) -> AsyncIterator[CoursesHarness]:
    issuer = TestIssuer()
    async with fresh_service_database(postgres_server_url, SERVICE, MIGRATIONS) as url:
        wiring = await build_wiring(url, nats_url)
        async with running_service(wiring.definition, issuer=issuer) as svc:
            yield CoursesHarness(svc, wiring, issuer)


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


__all__ = [
    "CoursesHarness",
    "Person",
    "Tenant",
    "code_of",
    "courses_harness",
    "error_reason",
    "field_violations",
    "rid",
    "service_peer",
]
