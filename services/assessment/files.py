"""The files port: what assessment needs from the files service, and nothing more.

A submission's files must exist, belong to the submitting student (in their tenant) and have an
allowed type; once submitted, the batch's graders must be able to read them. The port hides how:
`UnavailableFileStore` is what runs until a files service is reachable (file submissions are
refused with FAILED_PRECONDITION, text and link submissions work); tests use a fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from suuupra_runtime.errors import FailedPrecondition


@dataclass(frozen=True)
class StoredFile:
    file_id: str
    owner_id: str
    content_type: str
    size_bytes: int


class FileStore(Protocol):
    async def describe(self, tenant_id: str, file_ids: Sequence[str]) -> dict[str, StoredFile]:
        """Metadata of the files that exist in the tenant (missing ids are left out)."""
        ...

    async def grant_graders(
        self, tenant_id: str, file_ids: Sequence[str], *, batch_id: str, submission_id: str
    ) -> None:
        """Let the batch's graders read these files (idempotent)."""
        ...


class UnavailableFileStore:
    """No files service on this platform yet: refuse file submissions, change nothing."""

    async def describe(self, tenant_id: str, file_ids: Sequence[str]) -> dict[str, StoredFile]:
        raise FailedPrecondition(
            "file submissions need the files service, which is not available",
            reason="FILES_UNAVAILABLE",
        )

    async def grant_graders(
        self, tenant_id: str, file_ids: Sequence[str], *, batch_id: str, submission_id: str
    ) -> None:
        raise FailedPrecondition(
            "file submissions need the files service, which is not available",
            reason="FILES_UNAVAILABLE",
        )
