# mypy: disable-error-code="import-untyped"
"""gRPC servicer: proto ⇄ handler calls. No business rules here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from suuupra.files.v1 import file_pb2
from suuupra.files.v1 import files_service_pb2 as pb
from suuupra.files.v1 import files_service_pb2_grpc as rpc

from services.files.domain import Principal, Purpose, UploadRequest
from services.files.handlers import Files, FileView
from suuupra_runtime.access import is_trusted_service, service_account
from suuupra_runtime.auth import current_caller
from suuupra_runtime.db import UnitOfWork
from suuupra_runtime.errors import FieldViolation, InvalidArgument, PermissionDenied
from suuupra_runtime.idempotency import run_idempotent
from suuupra_runtime.timestamps import timestamp_pb as _ts

SERVICE_NAME = "suuupra.files.v1.FileService"
SERVICE_NAMES = [SERVICE_NAME]
ADMIN_PERMISSION = "files.files.administer"
UPLOAD_ID_HEADER = "x-upload-id"
R = TypeVar("R", bound=Message)


def principal() -> Principal:
    caller = current_caller()
    if not caller.tenant_id:
        raise PermissionDenied(
            "this call needs a tenant (a user's access token)", reason="TENANT_REQUIRED"
        )
    service = None
    if caller.spiffe_id is not None and is_trusted_service(caller):
        service = service_account(caller.spiffe_id)
    return Principal(
        tenant_id=caller.tenant_id,
        user_id=caller.subject,
        is_admin=ADMIN_PERMISSION in caller.permissions,
        service=service,
    )


def file_message(view: FileView) -> file_pb2.File:
    return file_pb2.File(
        file_id=view.file_id,
        tenant_id=view.tenant_id,
        owner_id=view.owner_id,
        purpose=view.purpose,  # type: ignore[arg-type]
        name=view.name,
        content_type=view.content_type,
        size_bytes=view.size_bytes,
        sha256=view.sha256,
        version=view.version,
        has_thumbnail=view.has_thumbnail,
        create_time=_ts(view.create_time),
        update_time=_ts(view.update_time),
    )


def _version_message(view: FileView) -> file_pb2.FileVersion:
    return file_pb2.FileVersion(
        file_id=view.file_id,
        version=view.version,
        name=view.name,
        content_type=view.content_type,
        size_bytes=view.size_bytes,
        sha256=view.sha256,
        has_thumbnail=view.has_thumbnail,
        created_by=view.created_by,
        create_time=_ts(view.version_time),
    )


async def _chunks(requests: AsyncIterator[pb.UploadFileRequest]) -> AsyncIterator[bytes]:
    async for message in requests:
        if message.WhichOneof("part") != "chunk":
            raise InvalidArgument(
                [FieldViolation("metadata", "only the first message may carry metadata")],
                reason="UNEXPECTED_METADATA",
            )
        yield message.chunk


class FileApi(rpc.FileServiceServicer):
    def __init__(self, files: Files) -> None:
        self.files = files

    async def UploadFile(  # noqa: N802 (gRPC method names)
        self, request_iterator: AsyncIterator[pb.UploadFileRequest], context: Any
    ) -> pb.UploadFileResponse:
        who = principal()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "metadata":
            raise InvalidArgument(
                [FieldViolation("metadata", "the first message must carry the upload metadata")],
                reason="METADATA_REQUIRED",
            )
        meta = first.metadata

        async def announce(upload_id: str) -> None:
            await context.send_initial_metadata(((UPLOAD_ID_HEADER, upload_id),))

        upload_id, view = await self.files.upload(
            who,
            UploadRequest(
                name=meta.name,
                purpose=Purpose(meta.purpose),
                size_bytes=meta.size_bytes,
                sha256=meta.sha256,
                offset=meta.offset,
            ),
            upload_id=meta.upload_id or None,
            target_file_id=meta.file_id or None,
            chunks=_chunks(request_iterator),
            announce=announce,
        )
        return pb.UploadFileResponse(upload_id=upload_id, file=file_message(view))

    async def GetUploadStatus(  # noqa: N802
        self, request: pb.GetUploadStatusRequest, context: Any
    ) -> pb.GetUploadStatusResponse:
        status = await self.files.upload_status(principal(), request.upload_id)
        response = pb.GetUploadStatusResponse(
            upload_id=status.upload_id,
            state=file_pb2.UPLOAD_STATE_COMPLETED
            if status.completed
            else file_pb2.UPLOAD_STATE_IN_PROGRESS,
            committed_offset=status.committed_offset,
            size_bytes=status.size_bytes,
        )
        if status.file is not None:
            response.file.CopyFrom(file_message(status.file))
        return response

    async def DownloadFile(  # noqa: N802
        self, request: pb.DownloadFileRequest, context: Any
    ) -> AsyncIterator[pb.DownloadFileResponse]:
        download = await self.files.download(
            principal(),
            request.file_id,
            version=request.version,
            variant=request.variant,
            offset=request.offset,
            length=request.length,
            via_resource=request.via_resource or None,
        )
        first = pb.DownloadFileResponse(
            file=file_message(download.file),
            offset=download.range.start,
            range_length=download.range.length,
        )
        offset = download.range.start
        sent_first = False
        async for chunk in self.files.read(download):
            if not sent_first:
                first.data = chunk
                yield first
                sent_first = True
            else:
                yield pb.DownloadFileResponse(offset=offset, data=chunk)
            offset += len(chunk)
        if not sent_first:
            yield first

    async def GetFile(  # noqa: N802
        self, request: pb.GetFileRequest, context: Any
    ) -> pb.GetFileResponse:
        view = await self.files.get_file(principal(), request.file_id, request.via_resource or None)
        return pb.GetFileResponse(file=file_message(view))

    async def ListFiles(  # noqa: N802
        self, request: pb.ListFilesRequest, context: Any
    ) -> pb.ListFilesResponse:
        views, token = await self.files.list_files(
            principal(), request.owner_id, request.purpose, request.page_size, request.page_token
        )
        return pb.ListFilesResponse(files=[file_message(v) for v in views], next_page_token=token)

    async def ListFileVersions(  # noqa: N802
        self, request: pb.ListFileVersionsRequest, context: Any
    ) -> pb.ListFileVersionsResponse:
        views = await self.files.list_versions(principal(), request.file_id)
        return pb.ListFileVersionsResponse(versions=[_version_message(v) for v in views])

    async def DeleteFile(  # noqa: N802
        self, request: pb.DeleteFileRequest, context: Any
    ) -> pb.DeleteFileResponse:
        who = principal()

        async def work(uow: UnitOfWork) -> pb.DeleteFileResponse:
            purge = await self.files.delete(uow, who, request.file_id)
            return pb.DeleteFileResponse(file_id=request.file_id, purge_time=_ts(purge))

        return await self._idempotent("DeleteFile", who, request, pb.DeleteFileResponse, work)

    async def GrantAccess(  # noqa: N802
        self, request: pb.GrantAccessRequest, context: Any
    ) -> pb.GrantAccessResponse:
        who = principal()

        async def work(uow: UnitOfWork) -> pb.GrantAccessResponse:
            await self.files.grant(uow, who, request.file_id, request.grantee)
            return pb.GrantAccessResponse(file_id=request.file_id, grantee=request.grantee)

        return await self._idempotent("GrantAccess", who, request, pb.GrantAccessResponse, work)

    async def RevokeAccess(  # noqa: N802
        self, request: pb.RevokeAccessRequest, context: Any
    ) -> pb.RevokeAccessResponse:
        who = principal()

        async def work(uow: UnitOfWork) -> pb.RevokeAccessResponse:
            revoked = await self.files.revoke(uow, who, request.file_id, request.grantee)
            return pb.RevokeAccessResponse(revoked=revoked)

        return await self._idempotent("RevokeAccess", who, request, pb.RevokeAccessResponse, work)

    async def CreateDownloadLink(  # noqa: N802
        self, request: pb.CreateDownloadLinkRequest, context: Any
    ) -> pb.CreateDownloadLinkResponse:
        path, expires = await self.files.create_link(
            principal(),
            request.file_id,
            version=request.version,
            variant=request.variant,
            ttl_seconds=request.ttl_seconds,
            via_resource=request.via_resource or None,
        )
        return pb.CreateDownloadLinkResponse(path=path, expire_time=_ts(expires))

    async def GetQuota(  # noqa: N802
        self, request: pb.GetQuotaRequest, context: Any
    ) -> pb.GetQuotaResponse:
        who = principal()
        limit, used = await self.files.quota(who)
        return pb.GetQuotaResponse(
            quota=file_pb2.Quota(tenant_id=who.tenant_id, limit_bytes=limit, used_bytes=used)
        )

    async def SetQuota(  # noqa: N802
        self, request: pb.SetQuotaRequest, context: Any
    ) -> pb.SetQuotaResponse:
        who = principal()

        async def work(uow: UnitOfWork) -> pb.SetQuotaResponse:
            limit, used = await self.files.set_quota(uow, who, request.limit_bytes)
            return pb.SetQuotaResponse(
                quota=file_pb2.Quota(tenant_id=who.tenant_id, limit_bytes=limit, used_bytes=used)
            )

        return await self._idempotent("SetQuota", who, request, pb.SetQuotaResponse, work)

    async def _idempotent(
        self,
        method: str,
        who: Principal,
        request: Any,
        response_type: type[R],
        work: Callable[[UnitOfWork], Awaitable[R]],
    ) -> R:
        return await run_idempotent(
            self.files.db,
            tenant_id=who.tenant_id,
            method=f"/{SERVICE_NAME}/{method}",
            request=request,
            response_type=response_type,
            work=work,
        )


def register_all(server: grpc.aio.Server, files: Files) -> None:
    rpc.add_FileServiceServicer_to_server(FileApi(files), server)
