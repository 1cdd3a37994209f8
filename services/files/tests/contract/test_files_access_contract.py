# mypy: disable-error-code="import-untyped"
"""Who may read what: owner, tenant admin, user grants, service resource grants, other tenants;
signed HTTP download links with ranges; soft delete, purge and the outbox events."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from suuupra.files.v1 import files_events_pb2 as ev
from suuupra.files.v1 import files_service_pb2 as pb

from services.files.links import LinkClaims
from services.files.tests.harness import (
    FilesHarness,
    User,
    code_of,
    files_harness,
    pdf_bytes,
    upload_messages,
)
from suuupra_runtime.db import outbox_table
from suuupra_runtime.testing.rpc_errors import error_reason, rid

SPIFFE = "spiffe://suuupra.local/ns/suuupra/sa/{}"


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[FilesHarness]:
    async with files_harness(postgres_server_url, nats_url) as harness:
        yield harness


def as_service(user: User, service: str) -> tuple[tuple[str, str], ...]:
    """A call from `service`'s sidecar (XFCC) forwarding `user`'s token."""
    return (*user.md, ("x-forwarded-client-cert", f"URI={SPIFFE.format(service)}"))


async def test_only_owner_admin_and_grantees_can_read(h: FilesHarness) -> None:
    owner, stranger, admin = h.user(), h.user(), h.user(["tenant_admin"])
    foreign_admin = h.user(["tenant_admin"], tenant_id=rid())
    f = (await h.upload(owner, pdf_bytes(5000, seed=20))).file
    get = pb.GetFileRequest(file_id=f.file_id)
    assert await code_of(h.stub.GetFile(get, metadata=owner.md)) == grpc.StatusCode.OK
    assert await code_of(h.stub.GetFile(get, metadata=admin.md)) == grpc.StatusCode.OK
    # Strangers and other tenants cannot even learn that the file exists.
    assert await code_of(h.stub.GetFile(get, metadata=stranger.md)) == grpc.StatusCode.NOT_FOUND
    assert await code_of(h.stub.GetFile(get, metadata=foreign_admin.md)) == (
        grpc.StatusCode.NOT_FOUND
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await h.download(stranger, f.file_id)
    grant = pb.GrantAccessRequest(
        request_id=rid(), file_id=f.file_id, grantee=f"users/{stranger.user_id}"
    )
    # Only the owner (or an admin) may share.
    assert await code_of(h.stub.GrantAccess(grant, metadata=stranger.md)) == (
        grpc.StatusCode.NOT_FOUND
    )
    await h.stub.GrantAccess(grant, metadata=owner.md)
    await h.stub.GrantAccess(grant, metadata=owner.md)  # a retry changes nothing
    assert await h.download(stranger, f.file_id) == pdf_bytes(5000, seed=20)
    # The grantee may read but not delete.
    delete = pb.DeleteFileRequest(request_id=rid(), file_id=f.file_id)
    assert await code_of(h.stub.DeleteFile(delete, metadata=stranger.md)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    await h.stub.RevokeAccess(
        pb.RevokeAccessRequest(request_id=rid(), file_id=f.file_id, grantee=grant.grantee),
        metadata=owner.md,
    )
    assert await code_of(h.stub.GetFile(get, metadata=stranger.md)) == grpc.StatusCode.NOT_FOUND


async def test_service_resource_grants(h: FilesHarness) -> None:
    student, grader = h.user(), h.user(["teaching_assistant"])
    f = (await h.upload(student, pdf_bytes(4000, seed=21), purpose=2)).file
    resource = "assessment.submission/42"
    grant = pb.GrantAccessRequest(request_id=rid(), file_id=f.file_id, grantee=resource)
    # A user cannot grant to another service's resource, nor can a different service.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.GrantAccess(grant, metadata=student.md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.GrantAccess(grant, metadata=as_service(student, "notes"))
    assert error_reason(err.value) == "GRANT_NOT_ALLOWED"
    # Assessment, acting for the student who owns the file, attaches it to the submission.
    await h.stub.GrantAccess(grant, metadata=as_service(student, "assessment"))
    via = pb.GetFileRequest(file_id=f.file_id, via_resource=resource)
    # The grader reads through assessment (which checked they grade submission 42)...
    ok = await h.stub.GetFile(via, metadata=as_service(grader, "assessment"))
    assert ok.file.file_id == f.file_id
    link = await h.stub.CreateDownloadLink(
        pb.CreateDownloadLinkRequest(file_id=f.file_id, via_resource=resource),
        metadata=as_service(grader, "assessment"),
    )
    assert link.path.startswith("/files/d/")
    # ...but not directly, not through another service, and not through another resource.
    assert await code_of(h.stub.GetFile(via, metadata=grader.md)) == grpc.StatusCode.NOT_FOUND
    assert await code_of(h.stub.GetFile(via, metadata=as_service(grader, "notes"))) == (
        grpc.StatusCode.NOT_FOUND
    )
    other = pb.GetFileRequest(file_id=f.file_id, via_resource="assessment.submission/43")
    assert await code_of(h.stub.GetFile(other, metadata=as_service(grader, "assessment"))) == (
        grpc.StatusCode.NOT_FOUND
    )
    # The edge is a proxy, never a trusted service.
    assert await code_of(h.stub.GetFile(via, metadata=as_service(grader, "edge"))) == (
        grpc.StatusCode.NOT_FOUND
    )


async def test_signed_links_serve_ranges_and_expire(h: FilesHarness) -> None:
    owner, stranger = h.user(), h.user()
    data = pdf_bytes(300_000, seed=22)
    f = (await h.upload(owner, data, name="notes été.pdf")).file
    link = await h.stub.CreateDownloadLink(
        pb.CreateDownloadLinkRequest(file_id=f.file_id, ttl_seconds=60), metadata=owner.md
    )
    assert (
        await code_of(
            h.stub.CreateDownloadLink(
                pb.CreateDownloadLinkRequest(file_id=f.file_id), metadata=stranger.md
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )
    base = f"http://{h.service.http_address}"
    async with httpx.AsyncClient(base_url=base) as http:
        whole = await http.get(link.path)
        assert whole.status_code == 200
        assert whole.content == data
        assert whole.headers["content-type"] == "application/pdf"
        assert whole.headers["accept-ranges"] == "bytes"
        assert "attachment" in whole.headers["content-disposition"]
        part = await http.get(link.path, headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206
        assert part.content == data[1000:2000]
        assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
        tail = await http.get(link.path, headers={"Range": "bytes=-10"})
        assert tail.content == data[-10:]
        beyond = await http.get(link.path, headers={"Range": f"bytes={len(data)}-"})
        assert beyond.status_code == 416
        head = await http.head(link.path)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        # Tampering with the token or the path is a plain 404.
        token = link.path.removeprefix("/files/d/")
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        assert (await http.get(f"/files/d/{forged}")).status_code == 404
        assert (await http.get("/files/d/")).status_code == 404
        # An expired link is refused.
        expired = int(dt.datetime.now(dt.UTC).timestamp()) - 1
        old = h.wiring.files.links.token(LinkClaims(f.tenant_id, f.file_id, 1, 1, expired))
        assert (await http.get(f"/files/d/{old}")).status_code == 404


async def test_delete_hides_then_purge_frees_bytes_and_quota(
    postgres_server_url: str, nats_url: str
) -> None:
    async with files_harness(postgres_server_url, nats_url, retention_seconds=0.0) as h:
        owner = h.user()
        data = pdf_bytes(70_000, seed=23)
        f = (await h.upload(owner, data)).file
        again = (await h.upload(owner, data, name="copy.pdf")).file  # same bytes: one object
        assert len(h.stored_objects()) == 1
        link = await h.stub.CreateDownloadLink(
            pb.CreateDownloadLinkRequest(file_id=f.file_id), metadata=owner.md
        )
        request = pb.DeleteFileRequest(request_id=rid(), file_id=f.file_id)
        deleted = await h.stub.DeleteFile(request, metadata=owner.md)
        assert (await h.stub.DeleteFile(request, metadata=owner.md)) == deleted  # retry
        get = pb.GetFileRequest(file_id=f.file_id)
        assert await code_of(h.stub.GetFile(get, metadata=owner.md)) == grpc.StatusCode.NOT_FOUND
        async with httpx.AsyncClient(base_url=f"http://{h.service.http_address}") as http:
            assert (await http.get(link.path)).status_code == 404
        assert await h.wiring.files.purge_due() == 1
        # The copy still references the shared object; quota holds only the copy.
        assert len(h.stored_objects()) == 1
        quota = await h.stub.GetQuota(pb.GetQuotaRequest(), metadata=owner.md)
        assert quota.quota.used_bytes == len(data)
        await h.stub.DeleteFile(
            pb.DeleteFileRequest(request_id=rid(), file_id=again.file_id), metadata=owner.md
        )
        assert await h.wiring.files.purge_due() == 1
        assert h.stored_objects() == []
        quota = await h.stub.GetQuota(pb.GetQuotaRequest(), metadata=owner.md)
        assert quota.quota.used_bytes == 0
        # Two FileStored and two FileDeleted went through the outbox.
        rows = await h.wiring.database.fetch(
            f"SELECT event_type, payload FROM {outbox_table.name} ORDER BY seq"
        )
        types = [r["event_type"] for r in rows]
        assert types == [
            "suuupra.files.v1.FileStored",
            "suuupra.files.v1.FileStored",
            "suuupra.files.v1.FileDeleted",
            "suuupra.files.v1.FileDeleted",
        ]
        stored = ev.FileStored.FromString(bytes(rows[0]["payload"]))
        assert (stored.file_id, stored.sha256, stored.size_bytes) == (
            f.file_id,
            f.sha256,
            len(data),
        )
        assert stored.tenant_id == h.tenant_id and stored.owner_id == owner.user_id


async def test_listing_is_per_owner_and_paged(h: FilesHarness) -> None:
    owner, admin = h.user(), h.user(["tenant_admin"])
    ids = [(await h.upload(owner, pdf_bytes(100 + i, seed=i))).file.file_id for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = await h.stub.ListFiles(
            pb.ListFilesRequest(page_size=2, page_token=token), metadata=owner.md
        )
        seen += [f.file_id for f in page.files]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    as_admin = await h.stub.ListFiles(
        pb.ListFilesRequest(owner_id=owner.user_id, page_size=50), metadata=admin.md
    )
    assert len(as_admin.files) == 5
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.ListFiles(pb.ListFilesRequest(owner_id=owner.user_id), metadata=h.user().md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.ListFiles(pb.ListFilesRequest(page_token="garbage!"), metadata=owner.md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_anonymous_and_student_quota_changes_are_refused(h: FilesHarness) -> None:
    f = pb.GetFileRequest(file_id=rid())
    assert await code_of(h.stub.GetFile(f)) == grpc.StatusCode.UNAUTHENTICATED
    assert await code_of(h.stub.UploadFile(upload_messages(pdf_bytes(100)))) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    set_quota = pb.SetQuotaRequest(request_id=rid(), limit_bytes=1)
    assert await code_of(h.stub.SetQuota(set_quota, metadata=h.user().md)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    await asyncio.sleep(0)


async def test_uploads_are_private_to_their_uploader(h: FilesHarness) -> None:
    owner, other = h.user(), h.user()
    foreign = h.user(tenant_id=rid())
    upload_id = rid()
    data = pdf_bytes(300_000, seed=24)
    with pytest.raises(grpc.aio.AioRpcError):
        await h.stub.UploadFile(
            list(upload_messages(data, upload_id=upload_id, chunk=100_000))[:2],
            metadata=owner.md,
        )
    status = pb.GetUploadStatusRequest(upload_id=upload_id)
    assert await code_of(h.stub.GetUploadStatus(status, metadata=owner.md)) == grpc.StatusCode.OK
    for intruder in (other, foreign):
        assert await code_of(h.stub.GetUploadStatus(status, metadata=intruder.md)) == (
            grpc.StatusCode.NOT_FOUND
        )
    # Nobody else can continue (or hijack) the upload either.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.upload(other, data, upload_id=upload_id, offset=100_000)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.upload(foreign, data, upload_id=upload_id, offset=0)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
