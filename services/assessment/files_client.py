# mypy: disable-error-code="import-untyped"
"""`MeshFileStore`: the files port over the mesh (files' GetFile, GrantAccess, CreateDownloadLink).

Calls leave through this service's sidecar (`SUUUPRA_OUTBOUND_ADDR`), which presents assessment's
SPIFFE identity to files; the runtime client forwards the end user's token, so files sees "the
assessment service acting for this user": a student's own files are readable and grantable, and a
grader reads through the submission's grant, which files honours only for the `assessment`
peer. Only this module imports files' generated stubs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC

import grpc
from suuupra.files.v1 import files_service_pb2 as pb
from suuupra.files.v1 import files_service_pb2_grpc as rpc

from services.assessment.files import DownloadLink, StoredFile
from suuupra_runtime.clients import (
    call_options,
    channel_for,
    domain_errors,
    raise_from_rpc_error,
)

# Grant request ids derive from (resource, file), so a retried call grants once.
_GRANT_NAMESPACE = uuid.UUID("2f7c1c55-8d0e-4a8e-9d7b-3a0c6b1f5e21")
Metadata = tuple[tuple[str, str], ...]


class MeshFileStore:
    def __init__(self, target: str, *, extra_metadata: Metadata = ()) -> None:
        """`extra_metadata` exists for tests that run without sidecars (it carries the XFCC
        header a sidecar would add); deployments never set it."""
        self._stub = rpc.FileServiceStub(channel_for(target))
        self._extra = extra_metadata

    def _options(self) -> dict[str, object]:
        options = call_options()
        return {"timeout": options["timeout"], "metadata": (*options["metadata"], *self._extra)}

    async def _describe_one(self, file_id: str) -> StoredFile | None:
        try:
            reply = await self._stub.GetFile(pb.GetFileRequest(file_id=file_id), **self._options())
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None  # missing and not-yours read the same
            raise_from_rpc_error(err)
        f = reply.file
        return StoredFile(f.file_id, f.owner_id, f.content_type, f.size_bytes)

    async def describe(self, tenant_id: str, file_ids: Sequence[str]) -> dict[str, StoredFile]:
        found = await asyncio.gather(*(self._describe_one(fid) for fid in file_ids))
        return {f.file_id: f for f in found if f is not None}

    async def grant(self, tenant_id: str, file_ids: Sequence[str], resource: str) -> None:
        grantee = resource
        with domain_errors():
            await asyncio.gather(
                *(
                    self._stub.GrantAccess(
                        pb.GrantAccessRequest(
                            request_id=str(uuid.uuid5(_GRANT_NAMESPACE, f"{grantee}|{fid}")),
                            file_id=fid,
                            grantee=grantee,
                        ),
                        **self._options(),
                    )
                    for fid in file_ids
                )
            )

    async def download_link(self, tenant_id: str, file_id: str, resource: str) -> DownloadLink:
        with domain_errors():
            reply = await self._stub.CreateDownloadLink(
                pb.CreateDownloadLinkRequest(file_id=file_id, via_resource=resource),
                **self._options(),
            )
        expires = (
            reply.expire_time.ToDatetime(tzinfo=UTC) if reply.HasField("expire_time") else None
        )
        return DownloadLink(reply.path, expires)
