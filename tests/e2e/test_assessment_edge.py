# mypy: disable-error-code="import-untyped,no-any-return"
"""Assessment through the edge of a platform started by `./dev up`, on the demo data: the demo
students are members of the demo batch only because assessment projected courses' enrollment
events, and the instructor manages its assignment only because assessment projected that they
own the course. A student submits, the instructor grades and releases, the student sees the
released grade and cannot see a classmate's submission."""

from __future__ import annotations

import uuid

import grpc
from suuupra.assessment.v1 import assessment_resources_pb2 as res
from suuupra.assessment.v1 import assessment_service_pb2 as pb
from suuupra.assessment.v1 import assessment_service_pb2_grpc as rpc
from suuupra.courses.v1 import courses_service_pb2 as courses_pb
from suuupra.courses.v1 import courses_service_pb2_grpc as courses_grpc
from suuupra.identity.v1 import identity_service_pb2 as identity_pb
from suuupra.identity.v1 import identity_service_pb2_grpc as identity_grpc

from tests.e2e.platform_process import RunningPlatform
from tools.demo_data import (
    DEMO_ASSIGNMENT_TITLE,
    DEMO_INSTRUCTOR,
    DEMO_STUDENTS,
    DEMO_TENANT_SLUG,
    Account,
)


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _login(channel: grpc.Channel, account: Account) -> tuple[tuple[tuple[str, str]], str]:
    login = identity_grpc.AuthServiceStub(channel).Login(
        identity_pb.LoginRequest(
            tenant_slug=DEMO_TENANT_SLUG, email=account.email, password=account.password
        ),
        timeout=10,
    )
    md = _bearer(login.tokens.access_token)
    me = identity_grpc.UserServiceStub(channel).GetCurrentUser(
        identity_pb.GetCurrentUserRequest(), metadata=md, timeout=10
    )
    return md, me.user.user_id


def test_submit_grade_release_through_the_edge(platform: RunningPlatform) -> None:
    with grpc.insecure_channel(platform.edge) as channel:
        alice, alice_id = _login(channel, DEMO_STUDENTS[0])
        bob, _ = _login(channel, DEMO_STUDENTS[1])
        instructor, _ = _login(channel, DEMO_INSTRUCTOR)
        enrollments = courses_grpc.EnrollmentServiceStub(channel).ListEnrollments(
            courses_pb.ListEnrollmentsRequest(user_id=alice_id), metadata=alice, timeout=10
        )
        batch_id = enrollments.enrollments[0].batch_id
        assignments = rpc.AssignmentServiceStub(channel)
        submissions = rpc.SubmissionServiceStub(channel)
        grading = rpc.GradingServiceStub(channel)

        listed = assignments.ListAssignments(
            pb.ListAssignmentsRequest(batch_id=batch_id), metadata=alice, timeout=10
        )
        essay = next(a for a in listed.assignments if a.title == DEMO_ASSIGNMENT_TITLE)
        assert essay.state == res.ASSIGNMENT_STATE_PUBLISHED

        submitted = submissions.SubmitAssignment(
            pb.SubmitAssignmentRequest(
                request_id=str(uuid.uuid4()),
                assignment_id=essay.assignment_id,
                text="Insertion sort is quadratic; merge sort is n log n.",
            ),
            metadata=alice,
            timeout=10,
        ).submission
        assert submitted.attempt >= 1 and not submitted.late

        try:
            submissions.GetSubmission(
                pb.GetSubmissionRequest(submission_id=submitted.submission_id),
                metadata=bob,
                timeout=10,
            )
            raise AssertionError("a classmate read the submission")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED

        grade = grading.GradeSubmission(
            pb.GradeSubmissionRequest(
                request_id=str(uuid.uuid4()),
                submission_id=submitted.submission_id,
                rubric_scores=[
                    res.RubricScore(criterion_id="content", level_index=2),
                    res.RubricScore(criterion_id="clarity", level_index=1),
                ],
                feedback="Clear comparison.",
                release=True,
            ),
            metadata=instructor,
            timeout=10,
        ).grade
        assert grade.score_centi == 9_000 and grade.released

        seen = grading.GetGrade(
            pb.GetGradeRequest(assignment_id=essay.assignment_id, student_id=alice_id),
            metadata=alice,
            timeout=10,
        ).grade
        assert seen.score_centi == 9_000 and seen.feedback == "Clear comparison."
