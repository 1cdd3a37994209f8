# mypy: disable-error-code="import-untyped"
"""Uploads through gRPC: verified before visible, resumable after an interruption, and every
rejection (checksum, disguised type, quota, scanner) leaves nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from suuupra.files.v1 import file_pb2
from suuupra.files.v1 import files_service_pb2 as pb

from services.files.scanning import ScanSubject, ScanVerdict
from services.files.tests.harness import (
    CHUNK,
    FilesHarness,
    User,
    files_harness,
    pdf_bytes,
    png_bytes,
    sha256,
    upload_messages,
)
from suuupra_runtime.testing.rpc_errors import error_reason, field_violations, rid

MiB = 1024 * 1024


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[FilesHarness]:
    async with files_harness(postgres_server_url, nats_url) as harness:
        yield harness


async def _nothing_stored(
    h: FilesHarness, before: dict[str, int], used_before: int, staged_before: list[Path]
) -> None:
    assert await h.counts() == before
    quota = await h.stub.GetQuota(pb.GetQuotaRequest(), metadata=h.user().md)
    assert quota.quota.used_bytes == used_before
    assert h.staged() == staged_before


async def test_upload_then_download_round_trip(h: FilesHarness) -> None:
    owner = h.user()
    data = pdf_bytes(3 * MiB + 17, seed=1)
    response = await h.upload(owner, data, name="lecture.pdf")
    f = response.file
    assert (f.name, f.size_bytes, f.sha256, f.version) == (
        "lecture.pdf",
        len(data),
        sha256(data),
        1,
    )
    assert f.content_type == "application/pdf"
    assert f.owner_id == owner.user_id
    assert await h.download(owner, f.file_id) == data
    # A byte range: the middle 100 KiB, across a chunk boundary.
    part = await h.download(owner, f.file_id, offset=MiB - 50_000, length=100_000)
    assert part == data[MiB - 50_000 : MiB + 50_000]
    quota = await h.stub.GetQuota(pb.GetQuotaRequest(), metadata=owner.md)
    assert quota.quota.used_bytes >= len(data)


async def test_interrupted_20_mib_upload_resumes_with_right_checksum(h: FilesHarness) -> None:
    owner = h.user()
    data = pdf_bytes(20 * MiB, seed=2)
    upload_id = rid()
    half = 10 * MiB
    sent = asyncio.Event()

    async def first_half() -> AsyncIterator[pb.UploadFileRequest]:
        for message in upload_messages(data[:half], upload_id=upload_id):
            if message.WhichOneof("part") == "metadata":
                message.metadata.size_bytes = len(data)
                message.metadata.sha256 = sha256(data)
            yield message
        sent.set()
        await asyncio.Event().wait()  # the connection "drops" while the stream is open

    call = h.stub.UploadFile(first_half(), metadata=owner.md)
    assert (await call.initial_metadata())["x-upload-id"] == upload_id
    await sent.wait()
    # Wait until the server has checkpointed part of it (every 8 MiB), then cut the call.
    await _offset_reaches(h, owner, upload_id, 8 * MiB)
    call.cancel()
    listed = await h.stub.ListFiles(pb.ListFilesRequest(), metadata=owner.md)
    assert list(listed.files) == []  # nothing visible before the bytes are complete
    # Resume like a client would: ask where the upload stands, send the rest from there (and ask
    # again if the server was still saving the interrupted stream's last bytes).
    resumed_from: list[int] = []
    resumed = None
    while resumed is None:
        status = await h.stub.GetUploadStatus(
            pb.GetUploadStatusRequest(upload_id=upload_id), metadata=owner.md
        )
        assert status.state == file_pb2.UPLOAD_STATE_IN_PROGRESS
        resumed_from.append(status.committed_offset)
        try:
            resumed = await h.upload(
                owner, data, upload_id=upload_id, offset=status.committed_offset
            )
        except grpc.aio.AioRpcError as err:
            # The server refuses a stale offset at once; the client may see that as the refusal
            # or, if it was still sending chunks, as a failed send ("Internal error from Core").
            assert error_reason(err) == "UPLOAD_OFFSET_MISMATCH" or (
                err.code() == grpc.StatusCode.INTERNAL
            ), err
            assert len(resumed_from) < 50
    # It continued from the bytes kept durably (at least the 8 MiB checkpoint, at most what was
    # sent), not from the start.
    assert 8 * MiB <= resumed_from[-1] <= half
    assert resumed.upload_id == upload_id
    assert resumed.file.sha256 == sha256(data)
    assert resumed.file.size_bytes == len(data)
    assert sha256(await h.download(owner, resumed.file.file_id)) == sha256(data)
    done = await h.stub.GetUploadStatus(
        pb.GetUploadStatusRequest(upload_id=upload_id), metadata=owner.md
    )
    assert done.state == file_pb2.UPLOAD_STATE_COMPLETED
    assert done.file.file_id == resumed.file.file_id
    # Retrying the finished upload returns the same file and stores nothing twice.
    before = await h.counts()
    again = await h.upload(owner, data, upload_id=upload_id, offset=len(data))
    assert again.file.file_id == resumed.file.file_id
    assert await h.counts() == before


async def test_resume_from_the_wrong_offset_is_refused(h: FilesHarness) -> None:
    owner = h.user()
    data = pdf_bytes(2 * MiB, seed=3)
    upload_id = rid()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        # Half-close after 1 MiB: the upload stays resumable at 1 MiB.
        await h.stub.UploadFile(
            list(upload_messages(data, upload_id=upload_id))[:2], metadata=owner.md
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "UPLOAD_INCOMPLETE"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.upload(owner, data, upload_id=upload_id, offset=CHUNK // 2)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "UPLOAD_OFFSET_MISMATCH"
    done = await h.upload(owner, data, upload_id=upload_id, offset=CHUNK)
    assert done.file.sha256 == sha256(data)


async def test_wrong_checksum_stores_nothing(h: FilesHarness) -> None:
    owner = h.user()
    before, used, staged = await h.counts(), await _used(h), h.staged()
    data = pdf_bytes(MiB + 5, seed=4)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.upload(owner, data, declared_sha256=sha256(b"something else"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "CHECKSUM_MISMATCH"
    assert "metadata.sha256" in field_violations(err.value)
    await _nothing_stored(h, before, used, staged)
    assert not any(p.name == sha256(data) for p in h.stored_objects())


async def test_disallowed_type_disguised_by_extension_stores_nothing(h: FilesHarness) -> None:
    owner = h.user()
    before, used, staged = await h.counts(), await _used(h), h.staged()
    # A Windows executable named like a PDF, uploaded as a submission.
    exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 20_000
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.upload(owner, exe, name="essay.pdf", purpose=2)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "CONTENT_TYPE_NOT_ALLOWED"
    await _nothing_stored(h, before, used, staged)
    # An image is fine as course material but not as a video source.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.upload(owner, png_bytes(), name="clip.mp4", purpose=4)
    assert error_reason(err.value) == "CONTENT_TYPE_NOT_ALLOWED"
    await _nothing_stored(h, before, used, staged)


async def test_over_quota_upload_stores_nothing(h: FilesHarness) -> None:
    admin = h.user(["tenant_admin"], tenant_id=h.tenant_id)
    used, staged = await _used(h), h.staged()
    await h.stub.SetQuota(
        pb.SetQuotaRequest(request_id=rid(), limit_bytes=used + MiB), metadata=admin.md
    )
    before = await h.counts()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.upload(h.user(), pdf_bytes(2 * MiB, seed=5))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_reason(err.value) == "QUOTA_EXCEEDED"
        await _nothing_stored(h, before, used, staged)
        # Within the quota still works, and is counted.
        small = pdf_bytes(MiB // 2, seed=6)
        await h.upload(h.user(), small)
        assert await _used(h) == used + len(small)
    finally:
        await h.stub.SetQuota(
            pb.SetQuotaRequest(request_id=rid(), limit_bytes=10 * 1024 * MiB), metadata=admin.md
        )


async def test_size_and_limits_are_checked_before_bytes(h: FilesHarness) -> None:
    owner, staged = h.user(), h.staged()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.upload(owner, png_bytes(), name="me.png", purpose=1, declared_size=6 * MiB)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(err.value) == "FILE_TOO_LARGE"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.upload(owner, pdf_bytes(1000), declared_size=999)
    assert error_reason(err.value) == "SIZE_MISMATCH"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.UploadFile(iter([pb.UploadFileRequest(chunk=b"x")]), metadata=owner.md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.upload(owner, pdf_bytes(10), purpose=0)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata.purpose" in field_violations(err.value)
    assert h.staged() == staged


async def test_images_get_a_thumbnail(h: FilesHarness) -> None:
    owner = h.user()
    image = png_bytes(800, 600)
    response = await h.upload(owner, image, name="me.png", purpose=1)
    assert response.file.content_type == "image/png"
    assert response.file.has_thumbnail
    thumb = await h.download(owner, response.file.file_id, variant=file_pb2.FILE_VARIANT_THUMBNAIL)
    assert thumb[:4] == b"RIFF" and thumb[8:12] == b"WEBP"
    assert len(thumb) < len(image)


async def test_new_version_of_a_file(h: FilesHarness) -> None:
    owner = h.user()
    first = await h.upload(owner, pdf_bytes(2000, seed=7), name="draft.pdf")
    second_bytes = pdf_bytes(3000, seed=8)
    second = await h.upload(owner, second_bytes, name="final.pdf", file_id=first.file.file_id)
    assert (second.file.file_id, second.file.version) == (first.file.file_id, 2)
    versions = await h.stub.ListFileVersions(
        pb.ListFileVersionsRequest(file_id=first.file.file_id), metadata=owner.md
    )
    assert [v.version for v in versions.versions] == [2, 1]
    assert await h.download(owner, first.file.file_id) == second_bytes
    assert await h.download(owner, first.file.file_id, version=1) == pdf_bytes(2000, seed=7)
    other = h.user()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.upload(other, pdf_bytes(100), file_id=first.file.file_id)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _offset_reaches(
    h: FilesHarness, owner: User, upload_id: str, offset: int
) -> pb.GetUploadStatusResponse:
    """Poll the upload's committed offset until it reaches `offset` (generous bound: the
    machine may be loaded)."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        status: pb.GetUploadStatusResponse = await h.stub.GetUploadStatus(
            pb.GetUploadStatusRequest(upload_id=upload_id), metadata=owner.md
        )
        if status.committed_offset >= offset or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.02)


async def _used(h: FilesHarness) -> int:
    quota = await h.stub.GetQuota(pb.GetQuotaRequest(), metadata=h.user().md)
    return int(quota.quota.used_bytes)


class _RejectAll:
    def __init__(self) -> None:
        self.seen: list[ScanSubject] = []

    async def scan(self, path: Path, subject: ScanSubject) -> ScanVerdict:
        assert await asyncio.to_thread(path.exists)
        self.seen.append(subject)
        return ScanVerdict(clean=False, reason="EICAR test signature")


async def test_a_rejecting_scanner_stores_nothing(postgres_server_url: str, nats_url: str) -> None:
    scanner = _RejectAll()
    async with files_harness(postgres_server_url, nats_url, scanner=scanner) as h:
        data = pdf_bytes(50_000, seed=9)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.upload(h.user(), data)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(err.value) == "FILE_REJECTED_BY_SCAN"
        assert scanner.seen[0].sha256 == sha256(data)
        assert await h.counts() == {"files": 0, "file_versions": 0, "uploads": 0}
        assert h.stored_objects() == [] and h.staged() == []
        assert await _used(h) == 0


async def test_lost_partial_bytes_restart_the_upload_from_zero(h: FilesHarness) -> None:
    """A resume that reaches a replica without the staged bytes must not resume on garbage."""
    owner = h.user()
    data = pdf_bytes(2 * MiB, seed=12)
    upload_id = rid()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.UploadFile(
            list(upload_messages(data, upload_id=upload_id))[:2], metadata=owner.md
        )
    assert error_reason(err.value) == "UPLOAD_INCOMPLETE"
    await asyncio.to_thread((h.data_dir / "staging" / f"{upload_id}.part").unlink)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.upload(owner, data, upload_id=upload_id, offset=CHUNK)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "UPLOAD_OFFSET_MISMATCH"
    status = await h.stub.GetUploadStatus(
        pb.GetUploadStatusRequest(upload_id=upload_id), metadata=owner.md
    )
    assert status.committed_offset == 0
    done = await h.upload(owner, data, upload_id=upload_id)
    assert done.file.sha256 == sha256(data)
    assert await h.download(owner, done.file.file_id) == data
