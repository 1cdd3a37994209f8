# mypy: disable-error-code="import-untyped"
"""The first learner journey (issue 6), end to end through the edge of a platform started by
`./dev up`: every call goes through the edge (native gRPC, and gRPC-Web where a browser would
call), tokens come from identity's real login, mail is read from the platform's SMTP sink.

The tenant admin opens self sign-up, creates an instructor and a course with a published lesson
and an open batch (the instructor teaching it); a learner signs up (gRPC-Web, as a browser
would), verifies the address with the token from the mail, logs in, enrolls, reads the lesson and
completes it; the instructor publishes an assignment; the learner uploads a file and submits; the
instructor grades (a draft the learner cannot see) and releases; the learner sees the grade.

Cross-service seams asserted on the way: identity → notifications → SMTP (the verification
mail), courses → assessment (batch roles of the instructor and the learner come only from
courses' enrollment events), assessment → files over the mesh (the submitted file is checked and
granted to the submission; the instructor downloads it through a signed link at the edge),
identity → profiles (the learner's profile), courses → notes (a note shared with the cohort),
courses/notes/assessment → notifications (enrollment, shared-note, new-assignment and grade
notices in the inbox, read over gRPC-Web; the grade mail, whose unsubscribe link works at the
edge).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import http.client
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlparse

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.assessment.v1 import assessment_resources_pb2 as assessment_res
from suuupra.assessment.v1 import assessment_service_pb2 as assessment_pb
from suuupra.assessment.v1 import assessment_service_pb2_grpc as assessment_grpc
from suuupra.courses.v1 import batch_pb2, course_pb2, enrollment_enums_pb2
from suuupra.courses.v1 import courses_service_pb2 as courses_pb
from suuupra.courses.v1 import courses_service_pb2_grpc as courses_grpc
from suuupra.files.v1 import file_purpose_pb2
from suuupra.files.v1 import files_service_pb2 as files_pb
from suuupra.files.v1 import files_service_pb2_grpc as files_grpc
from suuupra.identity.v1 import identity_service_pb2 as identity_pb
from suuupra.identity.v1 import identity_service_pb2_grpc as identity_grpc
from suuupra.notes.v1 import notes_events_pb2
from suuupra.notes.v1 import notes_service_pb2 as notes_pb
from suuupra.notes.v1 import notes_service_pb2_grpc as notes_grpc
from suuupra.notifications.v1 import notification_pb2
from suuupra.notifications.v1 import notifications_service_pb2 as notifications_pb
from suuupra.notifications.v1 import notifications_service_pb2_grpc as notifications_grpc
from suuupra.profiles.v1 import profiles_service_pb2 as profiles_pb
from suuupra.profiles.v1 import profiles_service_pb2_grpc as profiles_grpc

from tests.e2e import grpc_web
from tests.e2e.platform_process import RunningPlatform
from tools.demo_data import DEMO_ADMIN, DEMO_TENANT_SLUG

T = TypeVar("T")

TIMEOUT = 10.0
# How long an event may take to cross services on a loaded 2-core machine.
EVENT_DEADLINE = 45.0
LESSON_MARKDOWN = "# Welcome\n\nEvery journey starts with a first lesson."
ESSAY = "My essay: the journey through the mesh, end to end."
ATTACHMENT = b"Appendix: sources and notes for the essay.\n" * 20

ROLE = enrollment_enums_pb2.EnrollmentRole
STATUS = enrollment_enums_pb2.EnrollmentStatus


def rid() -> str:
    return str(uuid.uuid4())


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def ts(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    what: str,
    *,
    within: float = EVENT_DEADLINE,
    retry_codes: Sequence[grpc.StatusCode] = (),
) -> T:
    """Poll `probe` until it returns something truthy (retrying the given gRPC codes) or fail
    with what was last seen once the deadline passes."""
    deadline = time.monotonic() + within
    last = "nothing yet"
    while True:
        try:
            result = await probe()
            if result:
                return result
            last = repr(result)
        except grpc.aio.AioRpcError as err:
            if err.code() not in retry_codes:
                raise
            last = f"{err.code().name}: {err.details()}"
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s (last: {last})")
        await asyncio.sleep(0.25)


# --- the platform's SMTP sink (a Maildir) ---------------------------------------------------


def mails_to(maildir: Path, address: str) -> list[EmailMessage]:
    found: list[EmailMessage] = []
    for sub in ("new", "cur"):
        folder = maildir / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            if address.lower() in str(message.get("To", "")).lower():
                found.append(message)
    return found


def body_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, message
    return str(part.get_content())


async def wait_for_mail(maildir: Path, address: str, subject: str) -> EmailMessage:
    async def probe() -> EmailMessage | None:
        for message in mails_to(maildir, address):
            if subject in str(message.get("Subject", "")):
                return message
        return None

    return await eventually(probe, f"mail {subject!r} to {address}")


def verification_token(message: EmailMessage) -> str:
    """The token from the verification link (`...?token=...`) of the mail."""
    for word in body_of(message).split():
        if "token=" in word:
            values = parse_qs(urlparse(word).query).get("token")
            if values:
                return values[0]
    raise AssertionError(f"no verification link in the mail:\n{body_of(message)}")


# --- the people and their stubs --------------------------------------------------------------


@dataclass
class Stubs:
    auth: identity_grpc.AuthServiceStub
    users: identity_grpc.UserServiceStub
    tenants: identity_grpc.TenantServiceStub
    courses: courses_grpc.CourseServiceStub
    batches: courses_grpc.BatchServiceStub
    enrollments: courses_grpc.EnrollmentServiceStub
    progress: courses_grpc.ProgressServiceStub
    assignments: assessment_grpc.AssignmentServiceStub
    submissions: assessment_grpc.SubmissionServiceStub
    grading: assessment_grpc.GradingServiceStub
    files: files_grpc.FileServiceStub
    inbox: notifications_grpc.InboxServiceStub
    notes: notes_grpc.NoteServiceStub
    profiles: profiles_grpc.ProfileServiceStub

    @classmethod
    def on(cls, channel: grpc.aio.Channel) -> Stubs:
        return cls(
            auth=identity_grpc.AuthServiceStub(channel),
            users=identity_grpc.UserServiceStub(channel),
            tenants=identity_grpc.TenantServiceStub(channel),
            courses=courses_grpc.CourseServiceStub(channel),
            batches=courses_grpc.BatchServiceStub(channel),
            enrollments=courses_grpc.EnrollmentServiceStub(channel),
            progress=courses_grpc.ProgressServiceStub(channel),
            assignments=assessment_grpc.AssignmentServiceStub(channel),
            submissions=assessment_grpc.SubmissionServiceStub(channel),
            grading=assessment_grpc.GradingServiceStub(channel),
            files=files_grpc.FileServiceStub(channel),
            inbox=notifications_grpc.InboxServiceStub(channel),
            notes=notes_grpc.NoteServiceStub(channel),
            profiles=profiles_grpc.ProfileServiceStub(channel),
        )


async def login(stubs: Stubs, email_address: str, password: str) -> str:
    reply = await stubs.auth.Login(
        identity_pb.LoginRequest(
            tenant_slug=DEMO_TENANT_SLUG, email=email_address, password=password
        ),
        timeout=TIMEOUT,
    )
    assert reply.tokens.access_token, "login asked for a second factor"
    return str(reply.tokens.access_token)


@dataclass
class CourseSetup:
    course_id: str
    lesson_id: str
    batch_id: str
    title: str


async def open_self_signup(stubs: Stubs, admin: str) -> None:
    tenant = (await stubs.tenants.GetTenant(
        identity_pb.GetTenantRequest(), metadata=bearer(admin), timeout=TIMEOUT
    )).tenant  # fmt: skip
    if tenant.settings.self_signup_enabled:
        return
    tenant.settings.self_signup_enabled = True
    updated = await stubs.tenants.UpdateTenant(
        identity_pb.UpdateTenantRequest(
            request_id=rid(),
            tenant=tenant,
            update_mask=FieldMask(paths=["settings.self_signup_enabled"]),
        ),
        metadata=bearer(admin),
        timeout=TIMEOUT,
    )
    assert updated.tenant.settings.self_signup_enabled


async def create_course(stubs: Stubs, admin: str, suffix: str, instructor_id: str) -> CourseSetup:
    """A course owned by the instructor with one published lesson and an open batch, which the
    instructor teaches (an INSTRUCTOR enrollment: the batch role other services project)."""
    md = bearer(admin)
    title = f"Journey {suffix}"
    course = (await stubs.courses.CreateCourse(
        courses_pb.CreateCourseRequest(
            request_id=rid(), code=f"J{suffix}", title=title, language="en",
            owner_ids=[instructor_id],
        ),
        metadata=md, timeout=TIMEOUT,
    )).course  # fmt: skip
    module = (await stubs.courses.CreateModule(
        courses_pb.CreateModuleRequest(
            request_id=rid(), course_id=course.course_id, title="Week 1"
        ),
        metadata=md, timeout=TIMEOUT,
    )).module  # fmt: skip
    lesson = (await stubs.courses.CreateLesson(
        courses_pb.CreateLessonRequest(
            request_id=rid(), course_id=course.course_id, module_id=module.module_id,
            title="Getting started",
        ),
        metadata=md, timeout=TIMEOUT,
    )).lesson  # fmt: skip
    await stubs.courses.CreateContentItem(
        courses_pb.CreateContentItemRequest(
            request_id=rid(),
            course_id=course.course_id,
            lesson_id=lesson.lesson_id,
            item=course_pb2.ContentItem(
                title="Read me first", article=course_pb2.Article(markdown=LESSON_MARKDOWN)
            ),
        ),
        metadata=md,
        timeout=TIMEOUT,
    )
    published = await stubs.courses.PublishCourse(
        courses_pb.PublishCourseRequest(request_id=rid(), course_id=course.course_id),
        metadata=md,
        timeout=TIMEOUT,
    )
    assert published.course.state == course_pb2.COURSE_STATE_PUBLISHED
    assert published.version.version == 1 and published.version.lesson_count == 1
    batch = (await stubs.batches.CreateBatch(
        courses_pb.CreateBatchRequest(
            request_id=rid(), course_id=course.course_id, name=f"Cohort {suffix}", capacity=30
        ),
        metadata=md, timeout=TIMEOUT,
    )).batch  # fmt: skip
    opened = await stubs.batches.OpenBatch(
        courses_pb.OpenBatchRequest(request_id=rid(), batch_id=batch.batch_id),
        metadata=md,
        timeout=TIMEOUT,
    )
    assert opened.batch.state == batch_pb2.BATCH_STATE_OPEN
    teaching = await stubs.enrollments.Enroll(
        courses_pb.EnrollRequest(
            request_id=rid(),
            batch_id=batch.batch_id,
            user_id=instructor_id,
            role=ROLE.ENROLLMENT_ROLE_INSTRUCTOR,
        ),
        metadata=md,
        timeout=TIMEOUT,
    )
    assert teaching.enrollment.status == STATUS.ENROLLMENT_STATUS_ACTIVE
    return CourseSetup(course.course_id, lesson.lesson_id, batch.batch_id, title)


async def upload(
    stubs: Stubs, token: str, name: str, content: bytes
) -> files_pb.UploadFileResponse:
    async def parts() -> AsyncIterator[files_pb.UploadFileRequest]:
        yield files_pb.UploadFileRequest(
            metadata=files_pb.UploadMetadata(
                name=name,
                purpose=file_purpose_pb2.FILE_PURPOSE_SUBMISSION,
                size_bytes=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
            )
        )
        yield files_pb.UploadFileRequest(chunk=content)

    reply: files_pb.UploadFileResponse = await stubs.files.UploadFile(
        parts(), metadata=bearer(token), timeout=TIMEOUT
    )
    return reply


def http_get(edge: str, path: str) -> tuple[int, bytes]:
    """A plain browser GET through the edge (signed links carry their own authorization)."""
    host, port = edge.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def http_post(edge: str, path: str, body: bytes) -> tuple[int, bytes]:
    """A form POST through the edge, as a mail client's one-click unsubscribe sends it."""
    host, port = edge.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        connection.request(
            "POST",
            path,
            body=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def inbox_via_grpc_web(edge: str, token: str) -> list[notification_pb2.Notification]:
    """The learner's inbox as the web app reads it: gRPC-Web through the edge."""
    reply = grpc_web.call(
        edge,
        "/suuupra.notifications.v1.InboxService/ListNotifications",
        notifications_pb.ListNotificationsRequest(page_size=50),
        token=token,
    )
    assert reply.http_status == 200, reply
    return list(reply.single(notifications_pb.ListNotificationsResponse).notifications)


async def wait_for_notification(
    edge: str, token: str, kind: str, match: Callable[[notification_pb2.Notification], bool]
) -> notification_pb2.Notification:
    async def probe() -> notification_pb2.Notification | None:
        listed = await asyncio.to_thread(inbox_via_grpc_web, edge, token)
        return next((n for n in listed if n.kind == kind and match(n)), None)

    return await eventually(probe, f"in-app notification {kind}")


# --- the journey ------------------------------------------------------------------------------


async def test_first_learner_journey(platform: RunningPlatform) -> None:
    edge = platform.edge
    maildir = platform.state_dir / "mail"
    suffix = uuid.uuid4().hex[:8]
    password = f"journey-{uuid.uuid4().hex}"
    learner_email = f"learner-{suffix}@demo-college.example"
    instructor_email = f"teacher-{suffix}@demo-college.example"

    async with grpc.aio.insecure_channel(edge) as channel:
        s = Stubs.on(channel)

        # 1. The tenant admin (demo data) opens sign-up and creates an instructor and a course.
        admin = await login(s, DEMO_ADMIN.email, DEMO_ADMIN.password)
        await open_self_signup(s, admin)
        instructor_user = (await s.users.CreateUser(
            identity_pb.CreateUserRequest(
                request_id=rid(), email=instructor_email, display_name="Grace Teacher",
                password=password, roles=["instructor"],
            ),
            metadata=bearer(admin), timeout=TIMEOUT,
        )).user  # fmt: skip
        instructor = await login(s, instructor_email, password)
        setup = await create_course(s, admin, suffix, instructor_user.user_id)

        # 2. A learner signs up from the browser (gRPC-Web, anonymous) ...
        signup = grpc_web.call(
            edge,
            "/suuupra.identity.v1.UserService/SignUp",
            identity_pb.SignUpRequest(
                request_id=rid(),
                tenant_slug=DEMO_TENANT_SLUG,
                email=learner_email,
                display_name="Lina Learner",
                password=password,
            ),
        )
        learner_user = signup.single(identity_pb.SignUpResponse).user
        assert not learner_user.email_verified
        assert list(learner_user.roles) == ["student"]

        # ... the verification mail reaches the SMTP sink (identity → notifications → SMTP) ...
        mail = await wait_for_mail(maildir, learner_email, "Verify your email address")
        token = verification_token(mail)
        await s.users.VerifyEmail(identity_pb.VerifyEmailRequest(token=token), timeout=TIMEOUT)

        # ... and the learner logs in, verified.
        learner = await login(s, learner_email, password)
        me = (await s.users.GetCurrentUser(
            identity_pb.GetCurrentUserRequest(), metadata=bearer(learner), timeout=TIMEOUT
        )).user  # fmt: skip
        assert me.user_id == learner_user.user_id and me.email_verified

        # 3. Enroll in the batch, read the published lesson, complete it.
        enrolled = (await s.enrollments.Enroll(
            courses_pb.EnrollRequest(request_id=rid(), batch_id=setup.batch_id),
            metadata=bearer(learner), timeout=TIMEOUT,
        )).enrollment  # fmt: skip
        assert enrolled.status == STATUS.ENROLLMENT_STATUS_ACTIVE
        assert enrolled.role == ROLE.ENROLLMENT_ROLE_STUDENT
        content = (await s.courses.GetCourseContent(
            courses_pb.GetCourseContentRequest(
                course_id=setup.course_id, batch_id=setup.batch_id
            ),
            metadata=bearer(learner), timeout=TIMEOUT,
        )).content  # fmt: skip
        assert content.version == 1
        lessons = [lesson for module in content.modules for lesson in module.lessons]
        assert [lesson.lesson_id for lesson in lessons] == [setup.lesson_id]
        assert not lessons[0].locked
        assert lessons[0].items[0].article.markdown == LESSON_MARKDOWN
        progress = (await s.progress.CompleteLesson(
            courses_pb.CompleteLessonRequest(
                request_id=rid(), batch_id=setup.batch_id, lesson_id=setup.lesson_id
            ),
            metadata=bearer(learner), timeout=TIMEOUT,
        )).progress  # fmt: skip
        assert list(progress.completed_lesson_ids) == [setup.lesson_id]
        assert progress.percent == 100 and progress.course_completed

        # Notifications learned the enrollment from courses' events (in-app, via gRPC-Web).
        await wait_for_notification(
            edge, learner, "courses.enrolled", lambda n: setup.title in n.title
        )

        # Profiles provisioned the learner's profile from identity's UserCreated.
        async def my_profile() -> str:
            reply: profiles_pb.GetMyProfileResponse = await s.profiles.GetMyProfile(
                profiles_pb.GetMyProfileRequest(), metadata=bearer(learner), timeout=TIMEOUT
            )
            return str(reply.profile.display_name)

        assert (
            await eventually(
                my_profile,
                "profiles provisions the learner from identity's events",
                retry_codes=(grpc.StatusCode.NOT_FOUND,),
            )
            == "Lina Learner"
        )

        # The instructor shares reading notes with the cohort: notes knows who is in the batch
        # from courses' enrollment events, and notifications tells the learner.
        note = (await s.notes.CreateNote(
            notes_pb.CreateNoteRequest(
                request_id=rid(), title=f"Reading notes {suffix}", body="Read chapter 1 first."
            ),
            metadata=bearer(instructor), timeout=TIMEOUT,
        )).note  # fmt: skip
        await s.notes.ShareNote(
            notes_pb.ShareNoteRequest(
                request_id=rid(),
                note_id=note.note_id,
                batch_id=setup.batch_id,
                permission=notes_events_pb2.SHARE_PERMISSION_READ,
            ),
            metadata=bearer(instructor),
            timeout=TIMEOUT,
        )

        async def learner_reads_note() -> str:
            reply: notes_pb.GetNoteResponse = await s.notes.GetNote(
                notes_pb.GetNoteRequest(note_id=note.note_id),
                metadata=bearer(learner),
                timeout=TIMEOUT,
            )
            return str(reply.note.body)

        shared_body = await eventually(
            learner_reads_note,
            "notes learns the learner's cohort from courses' events",
            retry_codes=(grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED),
        )
        assert shared_body == "Read chapter 1 first."
        await wait_for_notification(
            edge, learner, "notes.shared", lambda n: f"Reading notes {suffix}" in n.body
        )

        # 4. The instructor publishes an assignment. Assessment knows they teach the batch only
        # from courses' enrollment events, so the first attempts may be refused until then.
        now = datetime.now(UTC)
        assignment_title = f"Essay {suffix}"

        async def create_assignment() -> assessment_res.Assignment:
            reply: assessment_pb.CreateAssignmentResponse = await s.assignments.CreateAssignment(
                assessment_pb.CreateAssignmentRequest(
                    request_id=rid(),
                    course_id=setup.course_id,
                    batch_id=setup.batch_id,
                    title=assignment_title,
                    instructions="Write about your first lesson; attach your sources.",
                    max_points_centi=100_00,
                    submission_types=[
                        assessment_res.SUBMISSION_TYPE_TEXT,
                        assessment_res.SUBMISSION_TYPE_FILES,
                    ],
                    max_attempts=2,
                    open_time=ts(now - timedelta(minutes=5)),
                    due_time=ts(now + timedelta(days=7)),
                    close_time=ts(now + timedelta(days=8)),
                ),
                metadata=bearer(instructor),
                timeout=TIMEOUT,
            )
            return reply.assignment

        draft = await eventually(
            create_assignment,
            "assessment learns the batch's instructor from courses' events",
            retry_codes=(grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND),
        )
        assignment = (await s.assignments.PublishAssignment(
            assessment_pb.PublishAssignmentRequest(
                request_id=rid(), assignment_id=draft.assignment_id
            ),
            metadata=bearer(instructor), timeout=TIMEOUT,
        )).assignment  # fmt: skip
        assert assignment.state == assessment_res.ASSIGNMENT_STATE_PUBLISHED

        # 5. The learner sees it (assessment projected their enrollment from courses' events)
        # and is told about it in the inbox.
        async def learner_sees_assignment() -> assessment_res.Assignment:
            reply: assessment_pb.GetAssignmentResponse = await s.assignments.GetAssignment(
                assessment_pb.GetAssignmentRequest(assignment_id=assignment.assignment_id),
                metadata=bearer(learner),
                timeout=TIMEOUT,
            )
            return reply.assignment

        seen = await eventually(
            learner_sees_assignment,
            "assessment learns the learner's enrollment from courses' events",
            retry_codes=(grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND),
        )
        assert seen.title == assignment_title
        await wait_for_notification(
            edge,
            learner,
            "assessment.assignment_published",
            lambda n: assignment_title in n.title,
        )

        # 6. The learner uploads a file (files service) and submits.
        uploaded = await upload(s, learner, "sources.txt", ATTACHMENT)
        assert uploaded.file.owner_id == learner_user.user_id
        assert uploaded.file.content_type == "text/plain"
        assert uploaded.file.sha256 == hashlib.sha256(ATTACHMENT).hexdigest()
        submission = (await s.submissions.SubmitAssignment(
            assessment_pb.SubmitAssignmentRequest(
                request_id=rid(), assignment_id=assignment.assignment_id, text=ESSAY,
                file_ids=[uploaded.file.file_id],
            ),
            metadata=bearer(learner), timeout=TIMEOUT,
        )).submission  # fmt: skip
        assert submission.student_id == learner_user.user_id
        assert submission.attempt == 1 and not submission.late
        assert list(submission.file_ids) == [uploaded.file.file_id]

        # The instructor never owned the file: files lets them read it only through the grant
        # assessment made to the submission, as a signed link a browser opens at the edge.
        with pytest.raises(grpc.aio.AioRpcError) as not_theirs:
            await s.files.GetFile(
                files_pb.GetFileRequest(file_id=uploaded.file.file_id),
                metadata=bearer(instructor),
                timeout=TIMEOUT,
            )
        assert not_theirs.value.code() == grpc.StatusCode.NOT_FOUND
        link = await s.submissions.CreateSubmissionFileLink(
            assessment_pb.CreateSubmissionFileLinkRequest(
                submission_id=submission.submission_id, file_id=uploaded.file.file_id
            ),
            metadata=bearer(instructor),
            timeout=TIMEOUT,
        )
        assert link.path.startswith("/files/")
        status, downloaded = await asyncio.to_thread(http_get, edge, link.path)
        assert (status, downloaded) == (200, ATTACHMENT)

        # 7. The instructor finds the submission, grades it (a draft) and releases the grades.
        listed = (await s.submissions.ListSubmissions(
            assessment_pb.ListSubmissionsRequest(assignment_id=assignment.assignment_id),
            metadata=bearer(instructor), timeout=TIMEOUT,
        )).submissions  # fmt: skip
        assert [(x.submission_id, x.text, list(x.file_ids)) for x in listed] == [
            (submission.submission_id, ESSAY, [uploaded.file.file_id])
        ]
        draft_grade = (await s.grading.GradeSubmission(
            assessment_pb.GradeSubmissionRequest(
                request_id=rid(), submission_id=submission.submission_id,
                score_centi=87_50, feedback="Clear and well sourced.",
            ),
            metadata=bearer(instructor), timeout=TIMEOUT,
        )).grade  # fmt: skip
        assert not draft_grade.released
        own_grade = assessment_pb.GetGradeRequest(
            assignment_id=assignment.assignment_id, student_id=learner_user.user_id
        )
        try:
            await s.grading.GetGrade(own_grade, metadata=bearer(learner), timeout=TIMEOUT)
            raise AssertionError("a draft grade is visible to the learner")
        except grpc.aio.AioRpcError as hidden:
            assert hidden.code() == grpc.StatusCode.NOT_FOUND, hidden
        released = (await s.grading.ReleaseGrades(
            assessment_pb.ReleaseGradesRequest(
                request_id=rid(), assignment_id=assignment.assignment_id
            ),
            metadata=bearer(instructor), timeout=TIMEOUT,
        )).grades  # fmt: skip
        assert [g.grade_id for g in released] == [draft_grade.grade_id]
        assert released[0].released

        # 8. The learner sees the released grade ...
        grade = (await s.grading.GetGrade(
            own_grade, metadata=bearer(learner), timeout=TIMEOUT
        )).grade  # fmt: skip
        assert grade.released and grade.score_centi == 87_50
        assert grade.max_points_centi == 100_00 and grade.feedback == "Clear and well sourced."

        # ... and is notified: in the inbox (assessment → notifications) ...
        notice = await wait_for_notification(
            edge,
            learner,
            "assessment.grade_released",
            lambda n: assignment_title in n.title,
        )
        assert "87.5 / 100" in notice.body, notice
        assert notice.data.get("assignment_id") == assignment.assignment_id
        unread = await s.inbox.GetUnreadCount(
            notifications_pb.GetUnreadCountRequest(), metadata=bearer(learner), timeout=TIMEOUT
        )
        assert unread.unread_count >= 4  # enrolled, note shared, new assignment, graded

        # ... and by mail.
        graded_mail = await wait_for_mail(
            maildir, learner_email, f"Your grade for {assignment_title}"
        )
        assert "87.5 / 100" in body_of(graded_mail)

        # 9. The mail's one-click unsubscribe link (RFC 8058) points at the platform's public
        # address and works there: GET shows a page, the mail client's POST unsubscribes.
        link_header = str(graded_mail.get("List-Unsubscribe", ""))
        assert graded_mail.get("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
        url = urlparse(link_header.strip().strip("<>"))
        assert url.netloc == edge, link_header
        target = f"{url.path}?{url.query}"
        page_status, page = await asyncio.to_thread(http_get, edge, target)
        assert page_status == 200 and b"<form" in page
        done_status, done = await asyncio.to_thread(
            http_post, edge, target, b"List-Unsubscribe=One-Click"
        )
        assert done_status == 200, done
        assert b"no longer get" in done
