# mypy: disable-error-code="import-untyped"
"""Demo data for the dev platform, loaded through the edge with the real RPCs.

A tenant "Demo College" with a tenant admin, an instructor and three students, and (when the
courses service runs) a published course DEMO101 with an open batch the students are enrolled
in. Loading is idempotent: it creates only what is missing (the demo admin can log in → the
tenant exists; users are listed first), and every create carries a request id derived from
what it creates, so a restart or a retried call changes nothing.

Run alone against a running platform: `python -m tools.demo_data --edge 127.0.0.1:17000
--platform-admin-file .suuupra/demo-credentials.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.assessment.v1 import assessment_resources_pb2 as assessment_res
from suuupra.assessment.v1 import assessment_service_pb2 as assessment_pb
from suuupra.assessment.v1 import assessment_service_pb2_grpc as assessment_grpc
from suuupra.courses.v1 import batch_pb2, course_pb2
from suuupra.courses.v1 import courses_service_pb2 as courses_pb
from suuupra.courses.v1 import courses_service_pb2_grpc as courses_grpc
from suuupra.identity.v1 import identity_service_pb2 as identity_pb
from suuupra.identity.v1 import identity_service_pb2_grpc as identity_grpc
from suuupra.notes.v1 import notes_events_pb2 as notes_ev
from suuupra.notes.v1 import notes_service_pb2 as notes_pb
from suuupra.notes.v1 import notes_service_pb2_grpc as notes_grpc

DEMO_TENANT_SLUG = "demo-college"
DEMO_TENANT_NAME = "Demo College"
DEMO_PASSWORD = "suuupra-demo-2026"
PLATFORM_TENANT_SLUG = "platform"
_REQUEST_ID_NAMESPACE = uuid.UUID("6b3f1e8e-5a51-4d0e-9a3c-4f1b1d0c2e7a")
_TIMEOUT = 10.0


@dataclass(frozen=True)
class Account:
    tenant_slug: str
    email: str
    password: str
    display_name: str
    role: str


@dataclass(frozen=True)
class PlatformAdmin:
    """The first platform admin, created by identity's bootstrap on its first start."""

    tenant_slug: str
    email: str
    password: str

    @classmethod
    def load_or_create(cls, path: Path) -> PlatformAdmin:
        """Read the admin from `path`, or mint one with a random password and save it (0600)."""
        if path.exists():
            data = json.loads(path.read_text())
            return cls(**data["platform_admin"])
        admin = cls(
            tenant_slug=PLATFORM_TENANT_SLUG,
            email="admin@suuupra.local",
            password=secrets.token_urlsafe(18),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps({"platform_admin": asdict(admin)}, indent=2) + "\n")
        return admin


DEMO_ADMIN = Account(
    DEMO_TENANT_SLUG, "admin@demo-college.example", DEMO_PASSWORD, "Demo Admin", "tenant_admin"
)
DEMO_INSTRUCTOR = Account(
    DEMO_TENANT_SLUG, "instructor@demo-college.example", DEMO_PASSWORD, "Ada Instructor",
    "instructor",
)  # fmt: skip
DEMO_STUDENTS = tuple(
    Account(DEMO_TENANT_SLUG, f"student{i}@demo-college.example", DEMO_PASSWORD, name, "student")
    for i, name in enumerate(("Sam Student", "Priya Student", "Lee Student"), start=1)
)
DEMO_ACCOUNTS = (DEMO_ADMIN, DEMO_INSTRUCTOR, *DEMO_STUDENTS)


def request_id(*parts: str) -> str:
    """The same request id for the same thing on every run: retries become no-ops."""
    return str(uuid.uuid5(_REQUEST_ID_NAMESPACE, "/".join(parts)))


class DemoDataError(RuntimeError):
    pass


async def login(channel: grpc.aio.Channel, tenant_slug: str, email: str, password: str) -> str:
    """An access token for the account (no MFA on demo accounts)."""
    auth = identity_grpc.AuthServiceStub(channel)
    reply = await auth.Login(
        identity_pb.LoginRequest(
            tenant_slug=tenant_slug, email=email, password=password, user_agent="suuupra-demo-data"
        ),
        timeout=_TIMEOUT,
    )
    if not reply.tokens.access_token:
        raise DemoDataError(f"login of {email} asked for a second factor")
    return str(reply.tokens.access_token)


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _try_login(channel: grpc.aio.Channel, account: Account) -> str | None:
    """The account's access token, or None when it cannot log in (e.g. does not exist yet)."""
    try:
        return await login(channel, account.tenant_slug, account.email, account.password)
    except grpc.aio.AioRpcError as err:
        if err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND):
            return None
        raise


async def _ensure_tenant(channel: grpc.aio.Channel, platform_admin: PlatformAdmin) -> bool:
    """Create Demo College with its admin unless the admin can log in already; True if created."""
    if await _try_login(channel, DEMO_ADMIN) is not None:
        return False
    try:
        platform_token = await login(
            channel, platform_admin.tenant_slug, platform_admin.email, platform_admin.password
        )
    except grpc.aio.AioRpcError as err:
        raise DemoDataError(
            f"cannot log in as the platform admin {platform_admin.email}: "
            f"{err.code().name}: {err.details()}"
        ) from err
    tenants = identity_grpc.TenantServiceStub(channel)
    try:
        await tenants.CreateTenant(
            identity_pb.CreateTenantRequest(
                request_id=request_id("tenant", DEMO_TENANT_SLUG),
                slug=DEMO_TENANT_SLUG,
                display_name=DEMO_TENANT_NAME,
                admin_email=DEMO_ADMIN.email,
                admin_display_name=DEMO_ADMIN.display_name,
                admin_password=DEMO_ADMIN.password,
            ),
            metadata=_bearer(platform_token),
            timeout=_TIMEOUT,
        )
    except grpc.aio.AioRpcError as err:
        if err.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
        raise DemoDataError(
            f"tenant {DEMO_TENANT_SLUG!r} exists but {DEMO_ADMIN.email} cannot log in with the "
            "demo password; it was changed by hand (use --no-demo-data, or delete the state dir)"
        ) from err
    return True


async def _existing_emails(users: Any, admin_token: str) -> set[str]:
    emails: set[str] = set()
    page_token = ""
    while True:
        page = await users.ListUsers(
            identity_pb.ListUsersRequest(page_size=200, page_token=page_token),
            metadata=_bearer(admin_token),
            timeout=_TIMEOUT,
        )
        emails |= {u.email for u in page.users}
        page_token = page.next_page_token
        if not page_token:
            return emails


async def load_demo_data(
    edge_address: str,
    platform_admin: PlatformAdmin,
    *,
    services: Sequence[str],
    report: Callable[[str], None] = print,
) -> None:
    """Create what is missing of the demo tenant and users, through the edge (native gRPC)."""
    if "identity" not in services:
        report("  skip demo data: the identity service is not running")
        return
    async with grpc.aio.insecure_channel(edge_address) as channel:
        created = await _ensure_tenant(channel, platform_admin)
        report(f"  {'new ' if created else 'have'} tenant {DEMO_TENANT_NAME} ({DEMO_TENANT_SLUG})")
        admin_token = await login(channel, DEMO_TENANT_SLUG, DEMO_ADMIN.email, DEMO_ADMIN.password)
        users = identity_grpc.UserServiceStub(channel)
        existing = await _existing_emails(users, admin_token)
        for account in (DEMO_INSTRUCTOR, *DEMO_STUDENTS):
            if account.email in existing:
                report(f"  have {account.role:<10} {account.email}")
                continue
            try:
                await users.CreateUser(
                    identity_pb.CreateUserRequest(
                        request_id=request_id("user", DEMO_TENANT_SLUG, account.email),
                        email=account.email,
                        display_name=account.display_name,
                        password=account.password,
                        roles=[account.role],
                    ),
                    metadata=_bearer(admin_token),
                    timeout=_TIMEOUT,
                )
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.ALREADY_EXISTS:  # a concurrent loader won
                    raise
            report(f"  new  {account.role:<10} {account.email}")
        if "notes" in services:
            await _ensure_demo_note(channel, report)
    if "courses" not in services:
        report("  skip demo course: there is no courses service yet")
        return
    async with grpc.aio.insecure_channel(edge_address) as channel:
        batch = await _ensure_demo_course(channel, report)
        if "assessment" in services:
            await _ensure_demo_assignment(channel, batch, report)


async def _ensure_demo_note(channel: grpc.aio.Channel, report: Callable[[str], None]) -> None:
    """The first demo student's note, shared read-only with the second (WatchNote shows it live).
    Request ids are derived, so a rerun replays the first responses and changes nothing."""
    author, reader = DEMO_STUDENTS[0], DEMO_STUDENTS[1]
    author_token = _bearer(await login(channel, author.tenant_slug, author.email, author.password))
    reader_id = (
        await identity_grpc.UserServiceStub(channel).GetCurrentUser(
            identity_pb.GetCurrentUserRequest(),
            metadata=_bearer(
                await login(channel, reader.tenant_slug, reader.email, reader.password)
            ),
            timeout=_TIMEOUT,
        )
    ).user.user_id
    notes = notes_grpc.NoteServiceStub(channel)
    note = (
        await notes.CreateNote(
            notes_pb.CreateNoteRequest(
                request_id=request_id("note", author.email, "welcome"),
                title="Study plan",
                body="# Week 1\n\n- [ ] Read *What is an algorithm?*\n- [ ] Try the quiz",
                tags=["plan", "week-1"],
            ),
            metadata=author_token,
            timeout=_TIMEOUT,
        )
    ).note
    await notes.ShareNote(
        notes_pb.ShareNoteRequest(
            request_id=request_id("note", author.email, "welcome", "share", reader.email),
            note_id=note.note_id,
            user_id=reader_id,
            permission=notes_ev.SHARE_PERMISSION_READ,
        ),
        metadata=author_token,
        timeout=_TIMEOUT,
    )
    report(f"  have note       '{note.title}' by {author.email}, shared with {reader.email}")


DEMO_COURSE_CODE = "DEMO101"


async def _ensure_demo_course(
    channel: grpc.aio.Channel, report: Callable[[str], None]
) -> batch_pb2.Batch:
    """A published course (one module, two lessons, a quiz) with an open batch of 10 seats and the
    demo students enrolled. Every call carries a request id derived from what it creates, so a
    rerun replays the first responses (the courses service remembers them) and changes nothing."""
    instructor = _bearer(
        await login(channel, DEMO_TENANT_SLUG, DEMO_INSTRUCTOR.email, DEMO_INSTRUCTOR.password)
    )
    courses = courses_grpc.CourseServiceStub(channel)
    batches = courses_grpc.BatchServiceStub(channel)
    enrollments = courses_grpc.EnrollmentServiceStub(channel)

    def rid(*parts: str) -> str:
        return request_id("course", DEMO_COURSE_CODE, *parts)

    course = (
        await courses.CreateCourse(
            courses_pb.CreateCourseRequest(
                request_id=rid("create"),
                code=DEMO_COURSE_CODE,
                title="Introduction to Algorithms",
                description="Sorting, searching and the ideas behind them.",
                language="en",
                tags=["algorithms", "beginner"],
            ),
            metadata=instructor,
            timeout=_TIMEOUT,
        )
    ).course
    module = (
        await courses.CreateModule(
            courses_pb.CreateModuleRequest(
                request_id=rid("module"), course_id=course.course_id, title="Getting started"
            ),
            metadata=instructor,
            timeout=_TIMEOUT,
        )
    ).module
    lesson_ids: list[str] = []
    for index, title in enumerate(("What is an algorithm?", "Sorting")):
        lesson = await courses.CreateLesson(
            courses_pb.CreateLessonRequest(
                request_id=rid("lesson", str(index)),
                course_id=course.course_id,
                module_id=module.module_id,
                title=title,
                prerequisite_lesson_ids=lesson_ids[-1:],
            ),
            metadata=instructor,
            timeout=_TIMEOUT,
        )
        lesson_ids.append(lesson.lesson.lesson_id)
    items = (
        course_pb2.ContentItem(
            title="Reading", article=course_pb2.Article(markdown="# Algorithms\n\nStep by step.")
        ),
        course_pb2.ContentItem(
            title="Check yourself",
            quiz=course_pb2.Quiz(
                questions=[
                    course_pb2.QuizQuestion(
                        prompt="Average cost of quicksort?",
                        choices=[
                            course_pb2.QuizChoice(text="O(n log n)"),
                            course_pb2.QuizChoice(text="O(n^2)"),
                        ],
                        correct_choice_ids=["a"],
                    )
                ]
            ),
        ),
    )
    for index, (lesson_id, item) in enumerate(zip(lesson_ids, items, strict=True)):
        await courses.CreateContentItem(
            courses_pb.CreateContentItemRequest(
                request_id=rid("item", str(index)), course_id=course.course_id,
                lesson_id=lesson_id, item=item,
            ),
            metadata=instructor,
            timeout=_TIMEOUT,
        )  # fmt: skip
    await courses.PublishCourse(
        courses_pb.PublishCourseRequest(request_id=rid("publish"), course_id=course.course_id),
        metadata=instructor,
        timeout=_TIMEOUT,
    )
    batch: batch_pb2.Batch = (
        await batches.CreateBatch(
            courses_pb.CreateBatchRequest(
                request_id=rid("batch"), course_id=course.course_id, name="Demo cohort", capacity=10
            ),
            metadata=instructor,
            timeout=_TIMEOUT,
        )
    ).batch
    await batches.OpenBatch(
        courses_pb.OpenBatchRequest(request_id=rid("open"), batch_id=batch.batch_id),
        metadata=instructor,
        timeout=_TIMEOUT,
    )
    for student in DEMO_STUDENTS:
        token = await login(channel, student.tenant_slug, student.email, student.password)
        await enrollments.Enroll(
            courses_pb.EnrollRequest(
                request_id=rid("enroll", student.email), batch_id=batch.batch_id
            ),
            metadata=_bearer(token),
            timeout=_TIMEOUT,
        )
    report(f"  have course     {DEMO_COURSE_CODE} (batch {batch.batch_id}, 3 students enrolled)")
    return batch


DEMO_ASSIGNMENT_TITLE = "Sorting essay"


async def _ensure_demo_assignment(
    channel: grpc.aio.Channel, batch: batch_pb2.Batch, report: Callable[[str], None]
) -> None:
    """A published assignment in the demo batch, due in a week, with a small rubric and a late
    policy. Created once (looked up by title first: its times depend on when it was made)."""
    instructor = _bearer(
        await login(channel, DEMO_TENANT_SLUG, DEMO_INSTRUCTOR.email, DEMO_INSTRUCTOR.password)
    )
    stub = assessment_grpc.AssignmentServiceStub(channel)
    # The instructor owns the course; assessment learns that from courses' events, so the first
    # calls may be refused until its projection has caught up.
    for _ in range(80):
        try:
            listed = await stub.ListAssignments(
                assessment_pb.ListAssignmentsRequest(batch_id=batch.batch_id),
                metadata=instructor,
                timeout=_TIMEOUT,
            )
            break
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.PERMISSION_DENIED:
                raise
            await asyncio.sleep(0.25)
    else:
        report("  skip demo assignment: assessment has not seen the demo batch yet")
        return
    if any(a.title == DEMO_ASSIGNMENT_TITLE for a in listed.assignments):
        report(f"  have assignment {DEMO_ASSIGNMENT_TITLE}")
        return
    now = datetime.now(UTC).replace(microsecond=0)

    def ts(moment: datetime) -> Timestamp:
        out = Timestamp()
        out.FromDatetime(moment)
        return out

    levels = [
        assessment_res.RubricLevel(title="Needs work", points_centi=2_000),
        assessment_res.RubricLevel(title="Good", points_centi=4_000),
        assessment_res.RubricLevel(title="Excellent", points_centi=5_000),
    ]
    created = await stub.CreateAssignment(
        assessment_pb.CreateAssignmentRequest(
            request_id=request_id("assignment", batch.batch_id, DEMO_ASSIGNMENT_TITLE),
            course_id=batch.course_id,
            batch_id=batch.batch_id,
            title=DEMO_ASSIGNMENT_TITLE,
            instructions="Compare **insertion sort** and **merge sort** in about 500 words.",
            submission_types=[
                assessment_res.SUBMISSION_TYPE_TEXT,
                assessment_res.SUBMISSION_TYPE_FILES,
            ],
            allowed_file_types=["application/pdf"],
            max_attempts=3,
            open_time=ts(now - timedelta(days=1)),
            due_time=ts(now + timedelta(days=7)),
            close_time=ts(now + timedelta(days=10)),
            rubric=[
                assessment_res.RubricCriterion(criterion_id=key, title=key.title(), levels=levels)
                for key in ("content", "clarity")
            ],
            late_policy=assessment_res.LatePolicy(percent_per_day_bp=1_000, floor_bp=5_000),
            category="homework",
        ),
        metadata=instructor,
        timeout=_TIMEOUT,
    )
    await stub.PublishAssignment(
        assessment_pb.PublishAssignmentRequest(
            request_id=request_id("publish", created.assignment.assignment_id),
            assignment_id=created.assignment.assignment_id,
        ),
        metadata=instructor,
        timeout=_TIMEOUT,
    )
    report(f"  new  assignment {DEMO_ASSIGNMENT_TITLE} (due in 7 days)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo_data", description=__doc__)
    parser.add_argument("--edge", default="127.0.0.1:17000", help="edge address (host:port)")
    parser.add_argument(
        "--platform-admin-file",
        type=Path,
        default=Path(".suuupra/demo-credentials.json"),
        help="the runner's credentials file (written by ./dev up)",
    )
    args = parser.parse_args(argv)
    admin = PlatformAdmin.load_or_create(args.platform_admin_file)
    services = ("identity", "courses", "notes", "assessment")
    asyncio.run(load_demo_data(args.edge, admin, services=services))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
