"""Notes rules: note fields, access levels, updates with optimistic concurrency, sharing, cohort
membership and page tokens. Pure Python: no I/O, no proto types."""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from suuupra_runtime.errors import FieldViolation, InvalidArgument
from suuupra_runtime.updates import etag_of

MAX_TAGS = 20
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
UPDATABLE_PATHS = frozenset({"title", "body", "tags", "attachment"})


class Access(enum.IntEnum):
    """What a caller may do with one note; higher includes lower."""

    NONE = 0
    READ = 1
    EDIT = 2
    OWNER = 3


class Permission(enum.IntEnum):
    """A share's permission (stored as this number)."""

    READ = 1
    EDIT = 2


def access_of(owner_id: str, caller_id: str, best_share: int | None) -> Access:
    """The caller's access: owner, else the strongest share that reaches them, else none."""
    if owner_id == caller_id:
        return Access.OWNER
    if best_share is None:
        return Access.NONE
    return Access.EDIT if best_share >= Permission.EDIT else Access.READ


@dataclass(frozen=True)
class Attachment:
    course_id: str = ""
    lesson_id: str = ""
    video_offset_ms: int | None = None

    @property
    def empty(self) -> bool:
        return not self.course_id and not self.lesson_id and self.video_offset_ms is None


@dataclass(frozen=True)
class NoteContent:
    """The user-editable part of a note."""

    title: str
    body: str
    tags: tuple[str, ...]
    attachment: Attachment


@dataclass(frozen=True)
class Note:
    note_id: str
    tenant_id: str
    owner_id: str
    content: NoteContent
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def etag(self) -> str:
        return etag_of(self.version)


def normalise_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Lower-cased, de-duplicated, in first-seen order (so "SQL" and "sql" are one tag)."""
    seen: dict[str, None] = {}
    for tag in tags:
        seen.setdefault(tag.strip().lower(), None)
    seen.pop("", None)
    return tuple(seen)


def check_content(content: NoteContent, prefix: str = "") -> NoteContent:
    """Normalised content, or InvalidArgument naming every offending field."""
    violations: list[FieldViolation] = []
    title = content.title.strip()
    if not title:
        violations.append(FieldViolation(f"{prefix}title", "must not be blank"))
    tags = normalise_tags(content.tags)
    if len(tags) > MAX_TAGS:
        violations.append(FieldViolation(f"{prefix}tags", f"at most {MAX_TAGS} tags"))
    att = content.attachment
    if att.lesson_id and not att.course_id:
        violations.append(
            FieldViolation(f"{prefix}attachment.course_id", "is required with a lesson_id")
        )
    if att.video_offset_ms is not None and not att.lesson_id:
        violations.append(
            FieldViolation(f"{prefix}attachment.lesson_id", "is required with a video_offset")
        )
    if violations:
        raise InvalidArgument(violations)
    return replace(content, title=title, tags=tags)


def check_update_mask(paths: Sequence[str]) -> frozenset[str]:
    if not paths:
        raise InvalidArgument([FieldViolation("update_mask", "must name at least one field")])
    unknown = sorted(set(paths) - UPDATABLE_PATHS)
    if unknown:
        raise InvalidArgument(
            [
                FieldViolation(
                    "update_mask",
                    f"unknown paths {unknown}; allowed: {sorted(UPDATABLE_PATHS)}",
                )
            ]
        )
    return frozenset(paths)


def apply_update(current: NoteContent, paths: frozenset[str], sent: NoteContent) -> NoteContent:
    """The content after an update: the fields in `paths` from `sent`, the rest unchanged."""
    merged = NoteContent(
        title=sent.title if "title" in paths else current.title,
        body=sent.body if "body" in paths else current.body,
        tags=sent.tags if "tags" in paths else current.tags,
        attachment=sent.attachment if "attachment" in paths else current.attachment,
    )
    return check_content(merged)


# ---------------------------------------------------------------------------------------------
# Cohort membership (projected from enrollment events)


@dataclass(frozen=True)
class MembershipChange:
    tenant_id: str
    batch_id: str
    user_id: str
    course_id: str
    active: bool
    as_of: datetime


def supersedes(change_as_of: datetime, stored_as_of: datetime | None) -> bool:
    """An enrollment event wins over the stored state unless that state is newer: events may
    arrive late or be replayed, and a late EnrollmentCreated must not undo a drop."""
    return stored_as_of is None or change_as_of >= stored_as_of


# ---------------------------------------------------------------------------------------------
# Domain events


@dataclass(frozen=True)
class NoteShared:
    tenant_id: str
    note_id: str
    share_id: str
    owner_id: str
    title: str
    permission: Permission
    batch_id: str
    recipient_ids: tuple[str, ...]
    occurred_at: datetime


@dataclass(frozen=True)
class NoteShareRevoked:
    tenant_id: str
    note_id: str
    share_id: str
    owner_id: str
    occurred_at: datetime


DomainEvent = NoteShared | NoteShareRevoked


# ---------------------------------------------------------------------------------------------
# Pagination: opaque tokens bound to the filters they were minted for


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def page_size(requested: int) -> int:
    return DEFAULT_PAGE_SIZE if requested <= 0 else min(requested, MAX_PAGE_SIZE)


def encode_page_token(position: Sequence[str | int], filters: str) -> str:
    payload = json.dumps([list(position), filters]).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_page_token(token: str, filters: str) -> list[str | int]:
    """The position a token encodes; InvalidArgument when malformed or minted for other filters."""
    try:
        padded = token + "=" * (-len(token) % 4)
        position, minted_for = json.loads(base64.urlsafe_b64decode(padded))
        if minted_for != filters or not isinstance(position, list):
            raise ValueError("other filters")
        return [p if isinstance(p, int) else str(p) for p in position]
    except (ValueError, TypeError, binascii.Error):
        raise InvalidArgument(
            [FieldViolation("page_token", "is invalid or was issued for different filters")]
        ) from None


def keyset_after(token: str, filters: str) -> tuple[datetime, str] | None:
    """(created_at, note_id) after which the next page starts, or None for the first page."""
    if not token:
        return None
    position = decode_page_token(token, filters)
    try:
        created = datetime.fromisoformat(str(position[0]))
        note_id = str(position[1])
    except (ValueError, IndexError):
        raise InvalidArgument([FieldViolation("page_token", "is invalid")]) from None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created, note_id


def keyset_token(note: Note, filters: str) -> str:
    return encode_page_token([note.created_at.isoformat(), note.note_id], filters)
