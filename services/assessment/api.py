# mypy: disable-error-code="import-untyped"
# ruff: noqa: N802 (servicer method names are the RPC names from the contract)
"""gRPC servicers: proto ⇄ handler calls. No business rules live here.

Mutating RPCs run through `run_idempotent`, which owns the transaction: the handler's writes, its
outbox events and the stored response commit together, so a retried request id returns the
first response and changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.assessment.v1 import assessment_resources_pb2 as res
from suuupra.assessment.v1 import assessment_service_pb2 as pb
from suuupra.assessment.v1 import assessment_service_pb2_grpc as rpc

from services.assessment import domain
from services.assessment.handlers import (
    Assessment,
    AuditEntry,
    GradeCommand,
    GradeView,
    NewAssignment,
    Principal,
    SubmissionView,
)
from suuupra_runtime.auth import current_caller
from suuupra_runtime.db import UnitOfWork
from suuupra_runtime.errors import FieldViolation, InvalidArgument, Unauthenticated
from suuupra_runtime.idempotency import run_idempotent
from suuupra_runtime.timestamps import optional_timestamp_pb as ts
from suuupra_runtime.updates import etag_of, mask_paths
from suuupra_runtime.validation import violations_of

R = TypeVar("R", bound=Message)
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]

PACKAGE = "suuupra.assessment.v1"
SERVICE_NAMES = [
    f"{PACKAGE}.AssignmentService",
    f"{PACKAGE}.SubmissionService",
    f"{PACKAGE}.GradingService",
    f"{PACKAGE}.GradebookService",
]

_TYPES = {
    res.SUBMISSION_TYPE_TEXT: domain.SubmissionType.TEXT,
    res.SUBMISSION_TYPE_FILES: domain.SubmissionType.FILES,
    res.SUBMISSION_TYPE_LINK: domain.SubmissionType.LINK,
}
_TYPES_PB = {v: k for k, v in _TYPES.items()}
_STATES_PB = {
    domain.AssignmentState.DRAFT: res.ASSIGNMENT_STATE_DRAFT,
    domain.AssignmentState.PUBLISHED: res.ASSIGNMENT_STATE_PUBLISHED,
}
_ACTIONS_PB = {
    "created": res.GRADE_ACTION_CREATED,
    "changed": res.GRADE_ACTION_CHANGED,
    "released": res.GRADE_ACTION_RELEASED,
}
_CELLS_PB = {
    domain.CellStatus.GRADED: res.CELL_STATUS_GRADED,
    domain.CellStatus.UNGRADED: res.CELL_STATUS_UNGRADED,
    domain.CellStatus.EXEMPT: res.CELL_STATUS_EXEMPT,
    domain.CellStatus.DROPPED: res.CELL_STATUS_DROPPED,
    domain.CellStatus.UNCATEGORIZED: res.CELL_STATUS_UNCATEGORIZED,
}


def principal() -> Principal:
    caller = current_caller()
    if not caller.tenant_id:
        # Service peers act for a tenant only through a forwarded user token.
        raise Unauthenticated("a tenant-scoped user token is required", reason="NO_TENANT")
    return Principal(
        user_id=caller.subject or caller.principal,
        tenant_id=caller.tenant_id,
        permissions=caller.permissions,
        is_service=caller.is_service and caller.subject is None,
    )


def _method(service: str, name: str) -> str:
    return f"/{PACKAGE}.{service}/{name}"


async def _idempotent(
    assessment: Assessment,
    p: Principal,
    *,
    method: str,
    request: Message,
    response_type: type[R],
    work: Callable[[UnitOfWork], Awaitable[R]],
) -> R:
    return await run_idempotent(
        assessment.db,
        tenant_id=p.tenant_id,
        method=method,
        request=request,
        response_type=response_type,
        work=work,
    )


# ---------------------------------------------------------------------------------------------
# Mapping


def dt(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def _opt_dt(message: Message, name: str) -> datetime | None:
    return dt(getattr(message, name)) if message.HasField(name) else None


def assignment_pb(a: domain.Assignment) -> res.Assignment:
    return res.Assignment(
        assignment_id=a.assignment_id,
        tenant_id=a.tenant_id,
        course_id=a.course_id,
        batch_id=a.batch_id,
        section_id=a.section_id,
        title=a.title,
        instructions=a.instructions,
        attachment_file_ids=list(a.attachment_file_ids),
        max_points_centi=a.max_points_centi,
        submission_types=sorted(_TYPES_PB[t] for t in a.submission_types),
        allowed_file_types=list(a.allowed_file_types),
        max_attempts=a.max_attempts,
        open_time=ts(a.open_time),
        due_time=ts(a.due_time),
        close_time=ts(a.close_time),
        rubric=[
            res.RubricCriterion(
                criterion_id=c.criterion_id,
                title=c.title,
                levels=[
                    res.RubricLevel(
                        title=lv.title, points_centi=lv.points_centi, description=lv.description
                    )
                    for lv in c.levels
                ],
            )
            for c in a.rubric
        ],
        late_policy=res.LatePolicy(
            percent_per_day_bp=a.late_policy.percent_per_day_bp,
            floor_bp=a.late_policy.floor_bp,
        ),
        category=a.category,
        state=_STATES_PB[a.state],
        create_time=ts(a.created_at),
        publish_time=ts(a.published_at),
        created_by=a.created_by,
        etag=etag_of(a.version),
        update_time=ts(a.updated_at),
    )


def grade_pb(g: GradeView) -> res.Grade:
    return res.Grade(
        grade_id=g.grade_id,
        submission_id=g.submission_id,
        assignment_id=g.assignment_id,
        student_id=g.student_id,
        raw_score_centi=g.raw_score_centi,
        penalty_bp=g.penalty_bp,
        score_centi=g.score_centi,
        max_points_centi=g.max_points_centi,
        rubric_scores=[
            res.RubricScore(criterion_id=c.criterion_id, level_index=c.level_index)
            for c in g.rubric_scores
        ],
        feedback=g.feedback,
        feedback_file_ids=list(g.feedback_file_ids),
        grader_id=g.grader_id,
        released=g.released,
        version=g.version,
        update_time=ts(g.updated_at),
    )


def submission_pb(s: SubmissionView) -> res.Submission:
    out = res.Submission(
        submission_id=s.submission_id,
        tenant_id=s.tenant_id,
        assignment_id=s.assignment_id,
        batch_id=s.batch_id,
        student_id=s.student_id,
        attempt=s.attempt,
        text=s.text,
        file_ids=list(s.file_ids),
        link=s.link,
        submit_time=ts(s.submitted_at),
        late=s.late,
        penalty_bp=s.penalty_bp,
        penalty_explanation=s.penalty_explanation,
    )
    if s.grade is not None:
        out.grade.CopyFrom(grade_pb(s.grade))
    return out


def audit_pb(e: AuditEntry) -> res.GradeAuditEntry:
    out = res.GradeAuditEntry(
        audit_id=e.audit_id,
        grade_id=e.grade_id,
        action=_ACTIONS_PB.get(e.action, res.GRADE_ACTION_UNSPECIFIED),
        actor_id=e.actor_id,
        reason=e.reason,
        score_centi=e.score_centi,
        previous_released=e.previous_released,
        released=e.released,
        changes=list(e.changes),
        create_time=ts(e.created_at),
    )
    if e.previous_score_centi is not None:
        out.previous_score_centi = e.previous_score_centi
    return out


def category_pb(c: domain.Category) -> res.GradeCategory:
    return res.GradeCategory(name=c.name, weight_bp=c.weight_bp, drop_lowest=c.drop_lowest)


def cell_pb(c: domain.Cell) -> res.GradebookCell:
    return res.GradebookCell(
        assignment_id=c.assignment_id,
        status=_CELLS_PB[c.status],
        score_centi=c.score_centi,
        max_points_centi=c.max_points_centi,
    )


def new_assignment(r: pb.CreateAssignmentRequest) -> NewAssignment:
    return NewAssignment(
        course_id=r.course_id,
        batch_id=r.batch_id,
        section_id=r.section_id,
        title=r.title,
        instructions=r.instructions,
        attachment_file_ids=tuple(r.attachment_file_ids),
        max_points_centi=r.max_points_centi,
        submission_types=frozenset(_TYPES[t] for t in r.submission_types),
        allowed_file_types=tuple(r.allowed_file_types),
        max_attempts=r.max_attempts,
        open_time=dt(r.open_time),
        due_time=dt(r.due_time),
        close_time=dt(r.close_time),
        rubric=tuple(
            domain.RubricCriterion(
                criterion_id=c.criterion_id,
                title=c.title,
                levels=tuple(
                    domain.RubricLevel(lv.title, lv.points_centi, lv.description) for lv in c.levels
                ),
            )
            for c in r.rubric
        ),
        late_policy=domain.LatePolicy(r.late_policy.percent_per_day_bp, r.late_policy.floor_bp),
        category=r.category,
    )


def _create_fields_of(a: res.Assignment, paths: frozenset[str]) -> pb.CreateAssignmentRequest:
    """The masked fields of `a` in a CreateAssignmentRequest, whose contract rules they obey."""
    probe = pb.CreateAssignmentRequest()
    source: Message = a  # field names are dynamic here
    for path in paths:
        field = probe.DESCRIPTOR.fields_by_name[path]
        value = getattr(a, path)
        if field.is_repeated:
            getattr(probe, path).extend(value)
        elif field.message_type is not None:
            if source.HasField(path):
                getattr(probe, path).CopyFrom(value)
        else:
            setattr(probe, path, value)
    return probe


def assignment_changes(r: pb.UpdateAssignmentRequest) -> tuple[frozenset[str], dict[str, Any]]:
    """The mask's paths and their new values. The values must satisfy the rules
    CreateAssignmentRequest declares for the same fields (one set of rules, in the contract);
    fields outside the mask are ignored."""
    paths = mask_paths(r.update_mask.paths, domain.UPDATABLE_FIELDS, "assignment")
    probe = _create_fields_of(r.assignment, paths)
    # The id obeys the rule every request naming an assignment declares.
    violations = [
        FieldViolation(f"assignment.{v.field}", v.description)
        for v in violations_of(pb.GetAssignmentRequest(assignment_id=r.assignment.assignment_id))
    ]
    violations += [
        FieldViolation(f"assignment.{v.field}", v.description)
        for v in violations_of(probe)
        if v.field.split(".")[0].split("[")[0] in paths
    ]
    if violations:
        raise InvalidArgument(violations, reason="INVALID_REQUEST")
    cmd = new_assignment(probe)
    return paths, {path: getattr(cmd, path) for path in paths}


# ---------------------------------------------------------------------------------------------
# Servicers


class AssignmentApi(rpc.AssignmentServiceServicer):
    def __init__(self, assessment: Assessment) -> None:
        self.a = assessment

    async def CreateAssignment(
        self, request: pb.CreateAssignmentRequest, context: Ctx
    ) -> pb.CreateAssignmentResponse:
        p = principal()
        cmd = new_assignment(request)
        await self.a.check_attachments(p, cmd.attachment_file_ids)

        async def work(uow: UnitOfWork) -> pb.CreateAssignmentResponse:
            assignment = await self.a.create_assignment(uow, p, cmd)
            return pb.CreateAssignmentResponse(assignment=assignment_pb(assignment))

        response = await _idempotent(
            self.a,
            p,
            method=_method("AssignmentService", "CreateAssignment"),
            request=request,
            response_type=pb.CreateAssignmentResponse,
            work=work,
        )
        a = response.assignment
        if a.attachment_file_ids:
            # After the commit (it calls files); a retry replays the response and grants again.
            await self.a.grant_attachments_of(p, a.assignment_id, list(a.attachment_file_ids))
        return response

    async def PublishAssignment(
        self, request: pb.PublishAssignmentRequest, context: Ctx
    ) -> pb.PublishAssignmentResponse:
        p = principal()

        async def work(uow: UnitOfWork) -> pb.PublishAssignmentResponse:
            published = await self.a.publish_assignment(uow, p, request.assignment_id)
            return pb.PublishAssignmentResponse(assignment=assignment_pb(published))

        return await _idempotent(
            self.a,
            p,
            method=_method("AssignmentService", "PublishAssignment"),
            request=request,
            response_type=pb.PublishAssignmentResponse,
            work=work,
        )

    async def UpdateAssignment(
        self, request: pb.UpdateAssignmentRequest, context: Ctx
    ) -> pb.UpdateAssignmentResponse:
        p = principal()
        paths, changes = assignment_changes(request)
        assignment_id, etag = request.assignment.assignment_id, request.assignment.etag
        if "attachment_file_ids" in paths:
            added = await self.a.new_attachments(p, assignment_id, changes["attachment_file_ids"])
            await self.a.check_attachments(p, added)

        async def work(uow: UnitOfWork) -> pb.UpdateAssignmentResponse:
            updated = await self.a.update_assignment(uow, p, assignment_id, etag, changes)
            return pb.UpdateAssignmentResponse(assignment=assignment_pb(updated))

        response = await _idempotent(
            self.a,
            p,
            method=_method("AssignmentService", "UpdateAssignment"),
            request=request,
            response_type=pb.UpdateAssignmentResponse,
            work=work,
        )
        a = response.assignment
        if "attachment_file_ids" in paths and a.attachment_file_ids:
            # After the commit, as on create; granting again is harmless.
            await self.a.grant_attachments_of(p, a.assignment_id, list(a.attachment_file_ids))
        return response

    async def DeleteAssignment(
        self, request: pb.DeleteAssignmentRequest, context: Ctx
    ) -> pb.DeleteAssignmentResponse:
        p = principal()

        async def work(uow: UnitOfWork) -> pb.DeleteAssignmentResponse:
            await self.a.delete_assignment(uow, p, request.assignment_id, request.etag)
            return pb.DeleteAssignmentResponse()

        return await _idempotent(
            self.a,
            p,
            method=_method("AssignmentService", "DeleteAssignment"),
            request=request,
            response_type=pb.DeleteAssignmentResponse,
            work=work,
        )

    async def GetAssignment(
        self, request: pb.GetAssignmentRequest, context: Ctx
    ) -> pb.GetAssignmentResponse:
        found = await self.a.get_assignment(principal(), request.assignment_id)
        return pb.GetAssignmentResponse(assignment=assignment_pb(found))

    async def ListAssignments(
        self, request: pb.ListAssignmentsRequest, context: Ctx
    ) -> pb.ListAssignmentsResponse:
        items, token = await self.a.list_assignments(
            principal(), request.batch_id, request.page_size, request.page_token
        )
        return pb.ListAssignmentsResponse(
            assignments=[assignment_pb(a) for a in items], next_page_token=token
        )

    async def CreateAttachmentLink(
        self, request: pb.CreateAttachmentLinkRequest, context: Ctx
    ) -> pb.CreateAttachmentLinkResponse:
        link = await self.a.attachment_link(principal(), request.assignment_id, request.file_id)
        return pb.CreateAttachmentLinkResponse(path=link.path, expire_time=ts(link.expires_at))

    async def SetStudentException(
        self, request: pb.SetStudentExceptionRequest, context: Ctx
    ) -> pb.SetStudentExceptionResponse:
        p = principal()

        async def work(uow: UnitOfWork) -> pb.SetStudentExceptionResponse:
            exc = await self.a.set_exception(
                uow,
                p,
                assignment_id=request.assignment_id,
                student_id=request.student_id,
                extended_due_time=_opt_dt(request, "extended_due_time"),
                extended_close_time=_opt_dt(request, "extended_close_time"),
                exempt=request.exempt,
                reason=request.reason,
            )
            return pb.SetStudentExceptionResponse(
                exception=res.StudentException(
                    assignment_id=exc.assignment_id,
                    student_id=exc.student_id,
                    extended_due_time=ts(exc.extended_due_time),
                    extended_close_time=ts(exc.extended_close_time),
                    exempt=exc.exempt,
                    reason=exc.reason,
                    granted_by=exc.granted_by,
                    update_time=ts(exc.updated_at),
                )
            )

        return await _idempotent(
            self.a,
            p,
            method=_method("AssignmentService", "SetStudentException"),
            request=request,
            response_type=pb.SetStudentExceptionResponse,
            work=work,
        )


class SubmissionApi(rpc.SubmissionServiceServicer):
    def __init__(self, assessment: Assessment) -> None:
        self.a = assessment

    async def SubmitAssignment(
        self, request: pb.SubmitAssignmentRequest, context: Ctx
    ) -> pb.SubmitAssignmentResponse:
        p = principal()
        content = domain.SubmissionContent(request.text, tuple(request.file_ids), request.link)
        await self.a.check_submission_files(p, request.assignment_id, content.file_ids)

        async def work(uow: UnitOfWork) -> pb.SubmitAssignmentResponse:
            view = await self.a.submit(uow, p, request.assignment_id, content)
            return pb.SubmitAssignmentResponse(submission=submission_pb(view))

        response = await _idempotent(
            self.a,
            p,
            method=_method("SubmissionService", "SubmitAssignment"),
            request=request,
            response_type=pb.SubmitAssignmentResponse,
            work=work,
        )
        s = response.submission
        await self.a.grant_submission_files(p, s.submission_id, s.batch_id, list(s.file_ids))
        return response

    async def GetSubmission(
        self, request: pb.GetSubmissionRequest, context: Ctx
    ) -> pb.GetSubmissionResponse:
        found = await self.a.get_submission(principal(), request.submission_id)
        return pb.GetSubmissionResponse(submission=submission_pb(found))

    async def ListSubmissions(
        self, request: pb.ListSubmissionsRequest, context: Ctx
    ) -> pb.ListSubmissionsResponse:
        items, token = await self.a.list_submissions(
            principal(),
            request.assignment_id,
            request.student_id,
            request.page_size,
            request.page_token,
        )
        return pb.ListSubmissionsResponse(
            submissions=[submission_pb(s) for s in items], next_page_token=token
        )

    async def CreateSubmissionFileLink(
        self, request: pb.CreateSubmissionFileLinkRequest, context: Ctx
    ) -> pb.CreateSubmissionFileLinkResponse:
        link = await self.a.submission_file_link(
            principal(), request.submission_id, request.file_id
        )
        return pb.CreateSubmissionFileLinkResponse(path=link.path, expire_time=ts(link.expires_at))


class GradingApi(rpc.GradingServiceServicer):
    def __init__(self, assessment: Assessment) -> None:
        self.a = assessment

    async def GradeSubmission(
        self, request: pb.GradeSubmissionRequest, context: Ctx
    ) -> pb.GradeSubmissionResponse:
        p = principal()
        cmd = GradeCommand(
            submission_id=request.submission_id,
            score_centi=request.score_centi if request.HasField("score_centi") else None,
            rubric_scores=tuple(
                domain.RubricChoice(r.criterion_id, r.level_index) for r in request.rubric_scores
            ),
            feedback=request.feedback,
            feedback_file_ids=tuple(request.feedback_file_ids),
            release=request.release,
            reason=request.reason,
            expected_version=(
                request.expected_version if request.HasField("expected_version") else None
            ),
        )

        await self.a.check_feedback_files(p, cmd.feedback_file_ids)

        async def work(uow: UnitOfWork) -> pb.GradeSubmissionResponse:
            return pb.GradeSubmissionResponse(grade=grade_pb(await self.a.grade(uow, p, cmd)))

        response = await _idempotent(
            self.a,
            p,
            method=_method("GradingService", "GradeSubmission"),
            request=request,
            response_type=pb.GradeSubmissionResponse,
            work=work,
        )
        g = response.grade
        # After the commit, like a submission's own files: read through the submission's grant.
        await self.a.grant_submission_files(p, g.submission_id, "", list(g.feedback_file_ids))
        return response

    async def ReleaseGrades(
        self, request: pb.ReleaseGradesRequest, context: Ctx
    ) -> pb.ReleaseGradesResponse:
        p = principal()

        async def work(uow: UnitOfWork) -> pb.ReleaseGradesResponse:
            released = await self.a.release(uow, p, request.assignment_id, list(request.grade_ids))
            return pb.ReleaseGradesResponse(grades=[grade_pb(g) for g in released])

        return await _idempotent(
            self.a,
            p,
            method=_method("GradingService", "ReleaseGrades"),
            request=request,
            response_type=pb.ReleaseGradesResponse,
            work=work,
        )

    async def GetGrade(self, request: pb.GetGradeRequest, context: Ctx) -> pb.GetGradeResponse:
        found = await self.a.get_grade(principal(), request.assignment_id, request.student_id)
        return pb.GetGradeResponse(grade=grade_pb(found))

    async def ListGradeAudit(
        self, request: pb.ListGradeAuditRequest, context: Ctx
    ) -> pb.ListGradeAuditResponse:
        entries, token = await self.a.list_audit(
            principal(), request.grade_id, request.page_size, request.page_token
        )
        return pb.ListGradeAuditResponse(
            entries=[audit_pb(e) for e in entries], next_page_token=token
        )


class GradebookApi(rpc.GradebookServiceServicer):
    def __init__(self, assessment: Assessment) -> None:
        self.a = assessment

    async def SetGradebookCategories(
        self, request: pb.SetGradebookCategoriesRequest, context: Ctx
    ) -> pb.SetGradebookCategoriesResponse:
        p = principal()
        categories = [
            domain.Category(c.name, c.weight_bp, c.drop_lowest) for c in request.categories
        ]

        async def work(uow: UnitOfWork) -> pb.SetGradebookCategoriesResponse:
            saved = await self.a.set_categories(uow, p, request.batch_id, categories)
            return pb.SetGradebookCategoriesResponse(categories=[category_pb(c) for c in saved])

        return await _idempotent(
            self.a,
            p,
            method=_method("GradebookService", "SetGradebookCategories"),
            request=request,
            response_type=pb.SetGradebookCategoriesResponse,
            work=work,
        )

    async def GetGradebook(
        self, request: pb.GetGradebookRequest, context: Ctx
    ) -> pb.GetGradebookResponse:
        book = await self.a.gradebook(principal(), request.batch_id)
        return pb.GetGradebookResponse(
            batch_id=book.batch_id,
            categories=[category_pb(c) for c in book.categories],
            columns=[
                res.GradebookColumn(
                    assignment_id=c.assignment_id,
                    title=c.title,
                    category=c.category,
                    max_points_centi=c.max_points_centi,
                )
                for c in book.columns
            ],
            rows=[
                res.GradebookRow(
                    student_id=r.student_id,
                    cells=[cell_pb(c) for c in r.cells],
                    current_percent=domain.percent(r.current),
                    final_percent=domain.percent(r.final),
                )
                for r in book.rows
            ],
        )

    async def ExplainGradebookCell(
        self, request: pb.ExplainGradebookCellRequest, context: Ctx
    ) -> pb.ExplainGradebookCellResponse:
        cell, row = await self.a.explain(
            principal(), request.batch_id, request.student_id, request.assignment_id
        )
        return pb.ExplainGradebookCellResponse(
            cell=cell_pb(cell),
            cell_explanation=cell.explanation,
            total_explanation=row.explanation,
            current_percent=domain.percent(row.current),
            final_percent=domain.percent(row.final),
        )

    async def ExportGradebookCsv(
        self, request: pb.ExportGradebookCsvRequest, context: Ctx
    ) -> pb.ExportGradebookCsvResponse:
        data = await self.a.export_csv(principal(), request.batch_id)
        return pb.ExportGradebookCsvResponse(filename=f"gradebook-{request.batch_id}.csv", csv=data)


def register_all(server: grpc.aio.Server, assessment: Assessment) -> None:
    rpc.add_AssignmentServiceServicer_to_server(AssignmentApi(assessment), server)
    rpc.add_SubmissionServiceServicer_to_server(SubmissionApi(assessment), server)
    rpc.add_GradingServiceServicer_to_server(GradingApi(assessment), server)
    rpc.add_GradebookServiceServicer_to_server(GradebookApi(assessment), server)
