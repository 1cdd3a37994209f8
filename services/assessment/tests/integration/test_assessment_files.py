# mypy: disable-error-code="import-untyped"
"""Submission files against the real files service (in-process, its own database): only the
student's own files of an allowed type are accepted, the submission is granted read access,
and graders of the batch (only they, and the student) reach the bytes through assessment.

No Envoy here: the XFCC header the sidecar would add (assessment's SPIFFE id) is passed by the
client, which is exactly what files trusts from its loopback-bound port."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from sqlalchemy import func, select
from suuupra.assessment.v1 import assessment_resources_pb2 as res
from suuupra.assessment.v1 import assessment_service_pb2 as pb
from suuupra.files.v1 import files_service_pb2 as files_pb
from suuupra.files.v1 import files_service_pb2_grpc as files_rpc

from services.assessment import store
from services.assessment.files_client import MeshFileStore
from services.assessment.tests.harness import Batch, Harness, Person, start_harness
from services.files.server import MIGRATIONS as FILES_MIGRATIONS
from services.files.server import build_wiring as build_files
from services.files.tests.harness import pdf_bytes, png_bytes, test_config, upload_messages
from suuupra_runtime.testing.harness import RunningService, fresh_service_database, running_service
from suuupra_runtime.testing.rpc_errors import field_violations
from suuupra_runtime.testing.tokens import TestIssuer

XFCC = ("x-forwarded-client-cert", "URI=spiffe://suuupra.local/ns/suuupra/sa/assessment")
SUBMISSION_PURPOSE = 2


@dataclass
class Rig:
    h: Harness
    files: RunningService

    async def upload(self, person: Person, data: bytes, name: str) -> str:
        stub = files_rpc.FileServiceStub(self.files.channel)
        reply = await stub.UploadFile(
            upload_messages(data, name=name, purpose=SUBMISSION_PURPOSE), metadata=person.md
        )
        return str(reply.file.file_id)


@pytest.fixture(scope="module")
async def rig(postgres_server_url: str, nats_url: str) -> AsyncIterator[Rig]:
    issuer = TestIssuer()  # one issuer: files verifies the tokens assessment forwards
    data_dir = Path(tempfile.mkdtemp(prefix="suuupra-assessment-files-"))
    try:
        async with fresh_service_database(postgres_server_url, "files", FILES_MIGRATIONS) as url:
            wiring = await build_files(url, nats_url, test_config(data_dir))
            async with running_service(wiring.definition, issuer=issuer) as files_svc:
                store_ = MeshFileStore(files_svc.address, extra_metadata=(XFCC,))
                async with start_harness(
                    postgres_server_url, nats_url, files=store_, issuer=issuer
                ) as h:
                    yield Rig(h, files_svc)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def _pdf_assignment(h: Harness, batch: Batch) -> res.Assignment:
    return await h.assignment(
        batch,
        submission_types=[res.SUBMISSION_TYPE_TEXT, res.SUBMISSION_TYPE_FILES],
        allowed_file_types=["application/pdf"],
    )


async def _count(h: Harness, assignment_id: str) -> int:
    t = store.submissions
    async with h.wiring.database.unit_of_work(tenant_id=h.tenant_id) as uow:
        stmt = select(func.count()).select_from(t).where(t.c.assignment_id == assignment_id)
        return int(await uow.session.scalar(stmt) or 0)


async def test_own_allowed_files_are_submitted_and_graders_can_read_them(rig: Rig) -> None:
    h = rig.h
    batch = await h.batch(students=2, tas=1)
    alice, bob = batch.students
    assignment = await _pdf_assignment(h, batch)
    content = pdf_bytes(64 * 1024, seed=1)
    essay = await rig.upload(alice, content, "essay.pdf")

    submitted = await h.submit(alice, assignment.assignment_id, file_ids=[essay])
    assert list(submitted.file_ids) == [essay]

    link = await h.submissions.CreateSubmissionFileLink(
        pb.CreateSubmissionFileLinkRequest(submission_id=submitted.submission_id, file_id=essay),
        metadata=batch.tas[0].md,
    )
    assert link.path.startswith("/files/d/")
    async with httpx.AsyncClient(base_url=f"http://{rig.files.http_address}") as http:
        got = await http.get(link.path)
    assert got.status_code == 200 and got.content == content

    # The grant is to the submission, not to the TA: files alone does not let them in.
    files = files_rpc.FileServiceStub(rig.files.channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await files.GetFile(files_pb.GetFileRequest(file_id=essay), metadata=batch.tas[0].md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    # Neither another student nor a TA of another batch gets a link.
    other = await h.batch(students=0, tas=1)
    for outsider in (bob, other.tas[0]):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.submissions.CreateSubmissionFileLink(
                pb.CreateSubmissionFileLinkRequest(
                    submission_id=submitted.submission_id, file_id=essay
                ),
                metadata=outsider.md,
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_foreign_missing_or_disallowed_files_store_nothing(rig: Rig) -> None:
    h = rig.h
    batch = await h.batch(students=2, tas=0)
    alice, bob = batch.students
    assignment = await _pdf_assignment(h, batch)
    bobs = await rig.upload(bob, pdf_bytes(4096, seed=2), "bob.pdf")
    picture = await rig.upload(alice, png_bytes(32, 32), "photo.png")
    missing = str(uuid.uuid4())
    for file_ids, field in (
        ([bobs], "file_ids[0]"),
        ([missing], "file_ids[0]"),
        ([picture], "file_ids[0]"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.submit(alice, assignment.assignment_id, file_ids=file_ids)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == [field]
    assert await _count(h, assignment.assignment_id) == 0


async def test_feedback_files_reach_the_student_only_once_released(rig: Rig) -> None:
    h = rig.h
    batch = await h.batch(students=1, tas=1)
    student, ta = batch.students[0], batch.tas[0]
    assignment = await _pdf_assignment(h, batch)
    submitted = await h.submit(student, assignment.assignment_id)
    notes = pdf_bytes(8 * 1024, seed=3)
    feedback = await rig.upload(ta, notes, "feedback.pdf")
    not_mine = await rig.upload(student, pdf_bytes(2048, seed=4), "student.pdf")

    with pytest.raises(grpc.aio.AioRpcError) as err:  # feedback files are the grader's own
        await h.grade(ta, submitted.submission_id, 5_000, feedback_file_ids=[not_mine])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["feedback_file_ids[0]"]

    draft = await h.grade(ta, submitted.submission_id, 5_000, feedback_file_ids=[feedback])
    link_request = pb.CreateSubmissionFileLinkRequest(
        submission_id=submitted.submission_id, file_id=feedback
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a draft's files stay hidden
        await h.submissions.CreateSubmissionFileLink(link_request, metadata=student.md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await h.grading.ReleaseGrades(
        pb.ReleaseGradesRequest(
            request_id=str(uuid.uuid4()),
            assignment_id=assignment.assignment_id,
            grade_ids=[draft.grade_id],
        ),
        metadata=ta.md,
    )
    link = await h.submissions.CreateSubmissionFileLink(link_request, metadata=student.md)
    async with httpx.AsyncClient(base_url=f"http://{rig.files.http_address}") as http:
        got = await http.get(link.path)
    assert got.status_code == 200 and got.content == notes


async def test_attachments_are_the_instructors_and_readable_by_the_batch(rig: Rig) -> None:
    h = rig.h
    batch = await h.batch(students=1, tas=0)
    student, instructor = batch.students[0], batch.instructor
    handout = pdf_bytes(4096, seed=5)
    attachment = await rig.upload(instructor, handout, "handout.pdf")
    foreign = await rig.upload(student, pdf_bytes(2048, seed=6), "mine.pdf")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.assignment(batch, attachment_file_ids=[foreign])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["attachment_file_ids[0]"]

    assignment = await h.assignment(batch, attachment_file_ids=[attachment])
    request = pb.CreateAttachmentLinkRequest(
        assignment_id=assignment.assignment_id, file_id=attachment
    )
    link = await h.assignments.CreateAttachmentLink(request, metadata=student.md)
    async with httpx.AsyncClient(base_url=f"http://{rig.files.http_address}") as http:
        got = await http.get(link.path)
    assert got.status_code == 200 and got.content == handout

    stranger = h.person("student")  # same tenant, not in the batch
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.assignments.CreateAttachmentLink(request, metadata=stranger.md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
