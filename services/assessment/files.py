"""The files port: what assessment needs from the files service, and nothing more.

A submission's files must exist, belong to the submitting student (in their tenant) and have an
allowed type; once submitted, the batch's graders must be able to read them. Files grants a
service resource (`assessment.submission/<id>`) rather than each grader: who may see a
submission stays assessment's decision, and a grader reads a file *through* that resource
(`via_resource`) on a call that assessment makes for them.

`MeshFileStore` (`files_client.py`) talks to the files service over the mesh;
`UnavailableFileStore` runs where no files service is configured (file submissions are refused
with FAILED_PRECONDITION, text and link submissions work); unit tests use a fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from suuupra_runtime.errors import FailedPrecondition


@dataclass(frozen=True)
class StoredFile:
    file_id: str
    owner_id: str
    content_type: str
    size_bytes: int


@dataclass(frozen=True)
class DownloadLink:
    path: str
    expires_at: datetime | None


def submission_resource(submission_id: str) -> str:
    """The files-side name of a submission, the grantee of its (and its feedback's) files."""
    return f"assessment.submission/{submission_id}"


def assignment_resource(assignment_id: str) -> str:
    """The files-side name of an assignment, the grantee of its attachments."""
    return f"assessment.assignment/{assignment_id}"


class FileStore(Protocol):
    async def describe(self, tenant_id: str, file_ids: Sequence[str]) -> dict[str, StoredFile]:
        """Metadata of the files the current caller may read (others are left out)."""
        ...

    async def grant(self, tenant_id: str, file_ids: Sequence[str], resource: str) -> None:
        """Let whoever assessment allows to see `resource` read these files (idempotent)."""
        ...

    async def download_link(self, tenant_id: str, file_id: str, resource: str) -> DownloadLink:
        """A short-lived browser link to a file, read through its grant to `resource`."""
        ...


def _unavailable() -> FailedPrecondition:
    return FailedPrecondition(
        "file submissions need the files service, which is not available",
        reason="FILES_UNAVAILABLE",
    )


class UnavailableFileStore:
    """No files service configured: refuse everything file-related, change nothing."""

    async def describe(self, tenant_id: str, file_ids: Sequence[str]) -> dict[str, StoredFile]:
        raise _unavailable()

    async def grant(self, tenant_id: str, file_ids: Sequence[str], resource: str) -> None:
        raise _unavailable()

    async def download_link(self, tenant_id: str, file_id: str, resource: str) -> DownloadLink:
        raise _unavailable()
