"""Files rules, pure Python: purposes and their limits, content types, ranges, grants, access.

No I/O and no proto types: handlers feed facts in and act on the decisions that come out.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import filetype  # type: ignore[import-untyped]

from suuupra_runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
)

MiB = 1024 * 1024
GiB = 1024 * MiB

# How many leading bytes content sniffing needs (filetype reads at most 8 KiB; zip-based office
# formats are recognised from the first entries).
SNIFF_BYTES = 8192


class Purpose(enum.IntEnum):
    """Mirrors `suuupra.files.v1.FilePurpose` (values equal the proto numbers)."""

    AVATAR = 1
    SUBMISSION = 2
    COURSE_MATERIAL = 3
    VIDEO_SOURCE = 4


IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})
_DOCUMENT_TYPES = frozenset(
    {
        "application/pdf",
        "text/plain",
        "application/zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.oasis.opendocument.text",
    }
)
_VIDEO_TYPES = frozenset(
    {"video/mp4", "video/webm", "video/quicktime", "video/x-matroska", "video/x-m4v"}
)


@dataclass(frozen=True)
class PurposePolicy:
    max_bytes: int
    allowed_types: frozenset[str]


POLICIES: Mapping[Purpose, PurposePolicy] = {
    Purpose.AVATAR: PurposePolicy(5 * MiB, IMAGE_TYPES),
    Purpose.SUBMISSION: PurposePolicy(100 * MiB, _DOCUMENT_TYPES | IMAGE_TYPES),
    Purpose.COURSE_MATERIAL: PurposePolicy(
        512 * MiB, _DOCUMENT_TYPES | IMAGE_TYPES | _VIDEO_TYPES | {"audio/mpeg"}
    ),
    Purpose.VIDEO_SOURCE: PurposePolicy(8 * GiB, _VIDEO_TYPES),
}


def policy_for(purpose: Purpose) -> PurposePolicy:
    return POLICIES[purpose]


def detect_content_type(head: bytes) -> str:
    """The content type the bytes themselves show; never the client's name or claim.

    Magic numbers first (`filetype`); what has none is `text/plain` only if it is valid UTF-8
    without control characters, else `application/octet-stream` (allowed by no purpose).
    """
    kind = filetype.guess(head)
    if kind is not None:
        return str(kind.mime)
    if _looks_like_text(head):
        return "text/plain"
    return "application/octet-stream"


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the sniff boundary is still text.
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    return not any(ord(c) < 32 and c not in "\t\n\r\f" for c in text)


@dataclass(frozen=True)
class UploadRequest:
    """The metadata message of an upload, as facts."""

    name: str
    purpose: Purpose
    size_bytes: int
    sha256: str
    offset: int


def check_declared(upload: UploadRequest) -> None:
    """Limits checked before a single byte is accepted."""
    limit = policy_for(upload.purpose).max_bytes
    if upload.size_bytes > limit:
        raise InvalidArgument(
            [
                FieldViolation(
                    "metadata.size_bytes",
                    f"exceeds the {limit} byte limit for {upload.purpose.name.lower()} files",
                )
            ],
            reason="FILE_TOO_LARGE",
        )
    if "/" in upload.name or "\\" in upload.name or upload.name in {".", ".."}:
        raise InvalidArgument(
            [FieldViolation("metadata.name", "must be a file name, not a path")],
            reason="INVALID_FILE_NAME",
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in upload.name):
        raise InvalidArgument(
            [FieldViolation("metadata.name", "must not contain control characters")],
            reason="INVALID_FILE_NAME",
        )


def check_content_type(purpose: Purpose, content_type: str) -> None:
    if content_type not in policy_for(purpose).allowed_types:
        raise InvalidArgument(
            [
                FieldViolation(
                    "chunk",
                    f"content is {content_type}, not allowed for {purpose.name.lower()} files",
                )
            ],
            reason="CONTENT_TYPE_NOT_ALLOWED",
        )


def check_quota(used_bytes: int, limit_bytes: int, adding: int) -> None:
    if used_bytes + adding > limit_bytes:
        raise ResourceExhausted(
            f"storage quota exceeded: {used_bytes} of {limit_bytes} bytes used, "
            f"{adding} more requested",
            reason="QUOTA_EXCEEDED",
            metadata={"used_bytes": str(used_bytes), "limit_bytes": str(limit_bytes)},
        )


def check_resume(stored: UploadRequest, requested: UploadRequest, committed_offset: int) -> None:
    """A resumed upload must describe the same content and start where the last one stopped."""
    for field_name in ("name", "purpose", "size_bytes", "sha256"):
        if getattr(stored, field_name) != getattr(requested, field_name):
            raise InvalidArgument(
                [FieldViolation(f"metadata.{field_name}", "differs from the upload being resumed")],
                reason="UPLOAD_MISMATCH",
            )
    if requested.offset != committed_offset:
        raise FailedPrecondition(
            f"upload continues at byte {committed_offset}, not {requested.offset}",
            reason="UPLOAD_OFFSET_MISMATCH",
            metadata={"committed_offset": str(committed_offset)},
        )


def check_complete(declared_size: int, declared_sha256: str, size: int, sha256: str) -> None:
    if size != declared_size:
        raise InvalidArgument(
            [
                FieldViolation(
                    "metadata.size_bytes", f"declared {declared_size} bytes, received {size}"
                )
            ],
            reason="SIZE_MISMATCH",
        )
    if sha256 != declared_sha256:
        raise InvalidArgument(
            [FieldViolation("metadata.sha256", "does not match the received content")],
            reason="CHECKSUM_MISMATCH",
        )


# --- byte ranges ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ByteRange:
    start: int
    length: int

    @property
    def end(self) -> int:
        """Inclusive last byte (HTTP's Content-Range convention)."""
        return self.start + self.length - 1


def rpc_range(size: int, offset: int, length: int) -> ByteRange:
    """The RPC's (offset, length=0 → to the end) within a file of `size` bytes."""
    if offset > size:
        raise InvalidArgument(
            [FieldViolation("offset", f"is beyond the end of the file ({size} bytes)")],
            reason="RANGE_NOT_SATISFIABLE",
        )
    available = size - offset
    return ByteRange(offset, available if length == 0 else min(length, available))


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiableError(ValueError):
    pass


def http_range(header: str | None, size: int) -> ByteRange | None:
    """A single `Range: bytes=a-b | a- | -n` against `size`; None means the whole file.

    Multiple ranges are answered with the whole file (allowed by RFC 9110 §14.2); a syntactically
    valid range that starts past the end raises RangeNotSatisfiableError (416).
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # unparseable or multi-range: ignore the header
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiableError(header)
        start = max(0, size - suffix)
        return ByteRange(start, size - start)
    start = int(first)
    if start >= size:
        raise RangeNotSatisfiableError(header)
    end = min(int(last), size - 1) if last else size - 1
    if end < start:
        return None
    return ByteRange(start, end - start + 1)


# --- grants and access --------------------------------------------------------------------


@dataclass(frozen=True)
class Grantee:
    """`users/<id>` or another service's resource `<service>.<kind>/<id>`."""

    raw: str

    @property
    def user_id(self) -> str | None:
        return self.raw.removeprefix("users/") if self.raw.startswith("users/") else None

    @property
    def service(self) -> str | None:
        """The service owning the resource (`assessment` for `assessment.submission/7`)."""
        if self.user_id is not None:
            return None
        return self.raw.split(".", 1)[0]


@dataclass(frozen=True)
class Principal:
    """Who asks: a user (subject) of a tenant, possibly through a calling service."""

    tenant_id: str
    user_id: str | None
    is_admin: bool
    service: str | None  # SPIFFE service account of a calling service (never the edge)


@dataclass(frozen=True)
class FileFacts:
    file_id: str
    tenant_id: str
    owner_id: str
    deleted_at: datetime | None


def can_manage(principal: Principal, file: FileFacts) -> bool:
    """Upload new versions, delete, grant: the owner or a tenant admin."""
    return file.tenant_id == principal.tenant_id and (
        principal.is_admin or (principal.user_id is not None and principal.user_id == file.owner_id)
    )


def can_read(
    principal: Principal,
    file: FileFacts,
    grants: frozenset[str],
    via_resource: str | None = None,
) -> bool:
    """Owner, tenant admin, a user granted directly, or a service reading through a grant to one
    of its own resources (that service has already decided its user may see the resource)."""
    if file.tenant_id != principal.tenant_id:
        return False
    if can_manage(principal, file):
        return True
    if principal.user_id is not None and f"users/{principal.user_id}" in grants:
        return True
    if via_resource and via_resource in grants and principal.service is not None:
        return Grantee(via_resource).service == principal.service
    return False


def check_can_grant(principal: Principal, file: FileFacts, grantee: Grantee) -> None:
    """Users grant to users (owner/admin); a resource grant only by the service owning it."""
    if grantee.user_id is not None:
        if not can_manage(principal, file):
            raise PermissionDenied("only the owner or a tenant admin may share this file")
        return
    if principal.service is None or principal.service != grantee.service:
        raise PermissionDenied(
            f"only the {grantee.service} service may grant access to its resources",
            reason="GRANT_NOT_ALLOWED",
        )
    if not can_manage(principal, file) and principal.user_id is not None:
        # A service acting for a user can attach only files that user controls.
        raise PermissionDenied("the user this call acts for does not own the file")


def thumbnail_wanted(content_type: str) -> bool:
    return content_type in IMAGE_TYPES
