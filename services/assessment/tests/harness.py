# mypy: disable-error-code="import-untyped"
"""The assessment service in-process for integration/contract tests: a fresh migrated database,
real NATS, the runtime server on loopback, tokens from a `TestIssuer` carrying the permissions
identity really grants, and batch membership seeded through the enrollment projection."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.assessment.v1 import assessment_resources_pb2 as res
from suuupra.assessment.v1 import assessment_service_pb2 as pb
from suuupra.assessment.v1 import assessment_service_pb2_grpc as rpc

from services.assessment import domain, store
from services.assessment.files import FileStore
from services.assessment.server import MIGRATIONS, Wiring, build_wiring
from services.identity.domain import role_permissions
from suuupra_runtime.testing.harness import RunningService, fresh_service_database, running_service
from suuupra_runtime.testing.rpc_errors import rid
from suuupra_runtime.testing.tokens import TestIssuer, bearer

Metadata = tuple[tuple[str, str], ...]


def ts(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Person:
    user_id: str
    md: Metadata


@dataclass
class Batch:
    batch_id: str
    course_id: str
    instructor: Person
    tas: list[Person]
    students: list[Person]


@dataclass
class Harness:
    wiring: Wiring
    svc: RunningService
    issuer: TestIssuer
    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def assignments(self) -> rpc.AssignmentServiceStub:
        return rpc.AssignmentServiceStub(self.svc.channel)

    @property
    def submissions(self) -> rpc.SubmissionServiceStub:
        return rpc.SubmissionServiceStub(self.svc.channel)

    @property
    def grading(self) -> rpc.GradingServiceStub:
        return rpc.GradingServiceStub(self.svc.channel)

    @property
    def gradebook(self) -> rpc.GradebookServiceStub:
        return rpc.GradebookServiceStub(self.svc.channel)

    def person(self, role: str, *, tenant_id: str | None = None) -> Person:
        user_id = str(uuid.uuid4())
        token = self.issuer.token(
            user_id,
            tenant_id or self.tenant_id,
            roles=[role],
            perms=role_permissions([role]),
        )
        return Person(user_id, bearer(token))

    async def enroll(self, batch_id: str, person: Person, role: domain.BatchRole) -> None:
        async with self.wiring.database.unit_of_work(tenant_id=self.tenant_id) as uow:
            await store.set_membership(
                uow.session,
                tenant_id=self.tenant_id,
                batch_id=batch_id,
                user_id=person.user_id,
                role=role,
                course_id="course-1",
                section_id="",
                active=True,
                at=now(),
            )

    async def batch(self, *, students: int = 2, tas: int = 1) -> Batch:
        batch = Batch(
            batch_id=f"batch-{uuid.uuid4().hex[:8]}",
            course_id="course-1",
            instructor=self.person("instructor"),
            tas=[self.person("teaching_assistant") for _ in range(tas)],
            students=[self.person("student") for _ in range(students)],
        )
        await self.enroll(batch.batch_id, batch.instructor, domain.BatchRole.INSTRUCTOR)
        for ta in batch.tas:
            await self.enroll(batch.batch_id, ta, domain.BatchRole.TEACHING_ASSISTANT)
        for student in batch.students:
            await self.enroll(batch.batch_id, student, domain.BatchRole.STUDENT)
        return batch

    async def assignment(
        self,
        batch: Batch,
        *,
        publish: bool = True,
        open_time: datetime | None = None,
        due_time: datetime | None = None,
        close_time: datetime | None = None,
        **fields: Any,
    ) -> res.Assignment:
        t = now()
        request = pb.CreateAssignmentRequest(
            request_id=rid(),
            course_id=batch.course_id,
            batch_id=batch.batch_id,
            title=fields.pop("title", "Essay"),
            instructions="Write **something**.",
            max_points_centi=fields.pop("max_points_centi", 10_000),
            submission_types=fields.pop("submission_types", [res.SUBMISSION_TYPE_TEXT]),
            max_attempts=fields.pop("max_attempts", 3),
            open_time=ts(open_time or t - timedelta(days=7)),
            due_time=ts(due_time or t + timedelta(days=1)),
            close_time=ts(close_time or t + timedelta(days=2)),
            **fields,
        )
        created = await self.assignments.CreateAssignment(request, metadata=batch.instructor.md)
        if not publish:
            draft: res.Assignment = created.assignment
            return draft
        published = await self.assignments.PublishAssignment(
            pb.PublishAssignmentRequest(
                request_id=rid(), assignment_id=created.assignment.assignment_id
            ),
            metadata=batch.instructor.md,
        )
        out: res.Assignment = published.assignment
        return out

    async def submit(
        self, student: Person, assignment_id: str, text: str = "my answer", **fields: Any
    ) -> res.Submission:
        response = await self.submissions.SubmitAssignment(
            pb.SubmitAssignmentRequest(
                request_id=fields.pop("request_id", rid()),
                assignment_id=assignment_id,
                text=text,
                **fields,
            ),
            metadata=student.md,
        )
        submission: res.Submission = response.submission
        return submission

    async def grade(
        self, grader: Person, submission_id: str, score_centi: int, **fields: Any
    ) -> res.Grade:
        response = await self.grading.GradeSubmission(
            pb.GradeSubmissionRequest(
                request_id=rid(), submission_id=submission_id, score_centi=score_centi, **fields
            ),
            metadata=grader.md,
        )
        grade: res.Grade = response.grade
        return grade


@asynccontextmanager
async def start_harness(
    postgres_server_url: str,
    nats_url: str,
    *,
    files: FileStore | None = None,
    issuer: TestIssuer | None = None,
) -> AsyncIterator[Harness]:
    issuer = issuer or TestIssuer()
    async with fresh_service_database(postgres_server_url, "assessment", MIGRATIONS) as url:
        wiring = await build_wiring(url, nats_url, files=files)
        async with running_service(wiring.definition, issuer=issuer) as svc:
            yield Harness(wiring, svc, issuer)
