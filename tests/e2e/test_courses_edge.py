# mypy: disable-error-code="import-untyped"
"""The courses journey through the edge of a platform started by `./dev up` (demo data loaded):
a demo student finds the demo course in the catalog, reads it through their batch without the
quiz's answer key, completes a lesson; the instructor sees the roster; another student's token
cannot enroll somebody else even though the edge is a SPIFFE peer of the courses sidecar."""

from __future__ import annotations

import uuid

import grpc
import jwt
import pytest
from suuupra.courses.v1 import courses_service_pb2 as pb
from suuupra.courses.v1 import courses_service_pb2_grpc as rpc
from suuupra.courses.v1 import enrollment_enums_pb2 as enums

from tests.e2e.platform_process import RunningPlatform
from tools.demo_data import DEMO_COURSE_CODE, DEMO_INSTRUCTOR, DEMO_STUDENTS, login


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def test_courses_journey_through_the_edge(platform: RunningPlatform) -> None:
    async with grpc.aio.insecure_channel(platform.edge) as channel:
        student = DEMO_STUDENTS[0]
        token = await login(channel, student.tenant_slug, student.email, student.password)
        md = _bearer(token)
        courses = rpc.CourseServiceStub(channel)
        enrollments = rpc.EnrollmentServiceStub(channel)

        catalog = await courses.ListCourses(
            pb.ListCoursesRequest(query=DEMO_COURSE_CODE), metadata=md, timeout=10
        )
        assert [c.code for c in catalog.courses] == [DEMO_COURSE_CODE]
        course = catalog.courses[0]

        subject = str(jwt.decode(token, options={"verify_signature": False})["sub"])
        mine = await enrollments.ListEnrollments(
            pb.ListEnrollmentsRequest(user_id=subject), metadata=md, timeout=10
        )
        enrollment = next(e for e in mine.enrollments if e.course_id == course.course_id)
        assert enrollment.status == enums.ENROLLMENT_STATUS_ACTIVE

        content = await courses.GetCourseContent(
            pb.GetCourseContentRequest(course_id=course.course_id, batch_id=enrollment.batch_id),
            metadata=md,
            timeout=10,
        )
        lessons = [ls for m in content.content.modules for ls in m.lessons]
        quiz = next(i for ls in lessons for i in ls.items if i.HasField("quiz"))
        assert all(not q.correct_choice_ids for q in quiz.quiz.questions)

        done = await rpc.ProgressServiceStub(channel).CompleteLesson(
            pb.CompleteLessonRequest(
                request_id=str(uuid.uuid4()),
                batch_id=enrollment.batch_id,
                lesson_id=lessons[0].lesson_id,
            ),
            metadata=md,
            timeout=10,
        )
        assert done.progress.completed_lessons >= 1

        teacher = _bearer(
            await login(
                channel,
                DEMO_INSTRUCTOR.tenant_slug,
                DEMO_INSTRUCTOR.email,
                DEMO_INSTRUCTOR.password,
            )
        )
        roster = await enrollments.ListEnrollments(
            pb.ListEnrollmentsRequest(batch_id=enrollment.batch_id), metadata=teacher, timeout=10
        )
        assert len(roster.enrollments) == len(DEMO_STUDENTS)

        # The edge's certificate is a SPIFFE identity too; its users must stay users.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await enrollments.Enroll(
                pb.EnrollRequest(
                    request_id=str(uuid.uuid4()),
                    batch_id=enrollment.batch_id,
                    user_id=str(uuid.uuid4()),
                    tenant_id=course.tenant_id,
                ),
                metadata=md,
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
