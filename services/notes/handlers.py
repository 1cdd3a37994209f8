"""Notes use cases: load → decide (domain) → write, inside the caller's unit of work.

Mutating use cases take the `UnitOfWork` that `run_idempotent` opened, so the change, its outbox
events, its change notification and the remembered response commit together.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from services.notes import domain, store
from services.notes.feed import ChangeFeed
from suuupra_runtime.db import Database, UnitOfWork
from suuupra_runtime.errors import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from suuupra_runtime.read_pool import ReadPool

EmitEvent = Callable[[UnitOfWork, domain.DomainEvent], None]


@dataclass(frozen=True)
class Actor:
    """The end user behind a call: notes are personal, so a user and a tenant are required."""

    user_id: str
    tenant_id: str


@dataclass(frozen=True)
class NoteView:
    note: domain.Note
    access: domain.Access


class WatchKind(enum.Enum):
    SNAPSHOT = "snapshot"
    UPDATED = "updated"
    DELETED = "deleted"


def _now() -> datetime:
    return datetime.now(UTC)


def _no_access(note_id: str) -> PermissionDenied:
    return PermissionDenied(f"you have no access to note {note_id}", reason="NOTE_ACCESS_DENIED")


def _not_found(note_id: str) -> NotFound:
    return NotFound(f"note {note_id} not found", reason="NOTE_NOT_FOUND")


def _view(actor: Actor, row: store.NoteRow | None, note_id: str) -> NoteView:
    """The caller's view of a loaded note; NOT_FOUND / PERMISSION_DENIED otherwise."""
    if row is None:
        raise _not_found(note_id)
    access = domain.access_of(row.note.owner_id, actor.user_id, row.best_share)
    if access is domain.Access.NONE:
        raise _no_access(note_id)
    return NoteView(row.note, access)


def _require(view: NoteView, needed: domain.Access, what: str) -> None:
    if view.access < needed:
        raise PermissionDenied(
            f"only the note's {what} may do this", reason="NOTE_PERMISSION_INSUFFICIENT"
        )


class Notes:
    def __init__(self, db: Database, reads: ReadPool, feed: ChangeFeed, emit: EmitEvent) -> None:
        self.db = db
        self.reads = reads  # raw asyncpg pool: reads skip SQLAlchemy and its pre-ping
        self.feed = feed
        self.emit = emit

    # --- notes ----------------------------------------------------------------------------

    async def create(self, uow: UnitOfWork, actor: Actor, content: domain.NoteContent) -> NoteView:
        checked = domain.check_content(content)
        now = _now()
        note = domain.Note(
            note_id=str(uuid.uuid4()),
            tenant_id=actor.tenant_id,
            owner_id=actor.user_id,
            content=checked,
            version=1,
            created_at=now,
            updated_at=now,
        )
        await store.insert_note(await store.writing(uow), note)
        return NoteView(note, domain.Access.OWNER)

    async def get(self, actor: Actor, note_id: str) -> NoteView:
        conn = self.reads
        row = await store.note_with_access(conn, actor.tenant_id, note_id, actor.user_id)
        return _view(actor, row, note_id)

    async def update(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        note_id: str,
        etag: str,
        paths: list[str],
        sent: domain.NoteContent,
    ) -> NoteView:
        mask = domain.check_update_mask(paths)
        conn = await store.writing(uow)
        row = await store.note_with_access(
            conn, actor.tenant_id, note_id, actor.user_id, for_update=True
        )
        view = _view(actor, row, note_id)
        _require(view, domain.Access.EDIT, "owner or an editor")
        if etag != view.note.etag:
            raise Aborted(
                "the note changed since you read it; re-read it and retry",
                reason="ETAG_MISMATCH",
                metadata={"current_etag": view.note.etag},
            )
        content = domain.apply_update(view.note.content, mask, sent)
        updated = replace(
            view.note, content=content, version=view.note.version + 1, updated_at=_now()
        )
        await store.update_note(conn, updated)
        await store.notify_note_changed(conn, actor.tenant_id, note_id)
        return NoteView(updated, view.access)

    async def delete(self, uow: UnitOfWork, actor: Actor, note_id: str, etag: str) -> None:
        conn = await store.writing(uow)
        row = await store.note_with_access(
            conn, actor.tenant_id, note_id, actor.user_id, for_update=True
        )
        view = _view(actor, row, note_id)
        _require(view, domain.Access.OWNER, "owner")
        if etag and etag != view.note.etag:
            raise Aborted("the note changed since you read it", reason="ETAG_MISMATCH")
        await store.delete_note(conn, actor.tenant_id, note_id)
        await store.notify_note_changed(conn, actor.tenant_id, note_id)

    async def list_own(
        self, actor: Actor, filters: store.NoteFilter, size: int, token: str
    ) -> tuple[list[NoteView], str]:
        fp = domain.fingerprint("own", actor.tenant_id, actor.user_id, filters)
        after = domain.keyset_after(token, fp)
        limit = domain.page_size(size)
        conn = self.reads
        notes = await store.list_own_notes(
            conn,
            tenant_id=actor.tenant_id,
            owner_id=actor.user_id,
            filters=filters,
            after=after,
            limit=limit + 1,
        )
        page = notes[:limit]
        next_token = domain.keyset_token(page[-1], fp) if len(notes) > limit else ""
        return [NoteView(n, domain.Access.OWNER) for n in page], next_token

    async def list_shared(self, actor: Actor, size: int, token: str) -> tuple[list[NoteView], str]:
        fp = domain.fingerprint("shared", actor.tenant_id, actor.user_id)
        after = domain.keyset_after(token, fp)
        limit = domain.page_size(size)
        conn = self.reads
        rows = await store.list_shared_notes(
            conn, tenant_id=actor.tenant_id, user_id=actor.user_id, after=after, limit=limit + 1
        )
        page = rows[:limit]
        next_token = domain.keyset_token(page[-1].note, fp) if len(rows) > limit else ""
        views = [
            NoteView(r.note, domain.access_of(r.note.owner_id, actor.user_id, r.best_share))
            for r in page
        ]
        return views, next_token

    async def search(
        self, actor: Actor, query: str, size: int, token: str
    ) -> tuple[list[store.SearchHit], str]:
        if not query.strip():
            raise InvalidArgument([FieldViolation("query", "must not be blank")])
        fp = domain.fingerprint("search", actor.tenant_id, actor.user_id, query)
        offset = 0
        if token:
            position = domain.decode_page_token(token, fp)
            offset = position[0] if position and isinstance(position[0], int) else -1
            if offset < 0:
                raise InvalidArgument([FieldViolation("page_token", "is invalid")])
        limit = domain.page_size(size)
        conn = self.reads
        hits = await store.search_own_notes(
            conn,
            tenant_id=actor.tenant_id,
            owner_id=actor.user_id,
            query=query,
            offset=offset,
            limit=limit + 1,
        )
        page = hits[:limit]
        next_token = domain.encode_page_token([offset + limit], fp) if len(hits) > limit else ""
        return page, next_token

    # --- sharing --------------------------------------------------------------------------

    async def share(
        self,
        uow: UnitOfWork,
        actor: Actor,
        note_id: str,
        *,
        user_id: str,
        batch_id: str,
        permission: domain.Permission,
    ) -> store.ShareRow:
        if user_id and user_id == actor.user_id:
            raise InvalidArgument([FieldViolation("user_id", "you own this note already")])
        conn = await store.writing(uow)
        # Locking the note serialises share changes of one note (no duplicate share rows).
        row = await store.note_with_access(
            conn, actor.tenant_id, note_id, actor.user_id, for_update=True
        )
        view = _view(actor, row, note_id)
        _require(view, domain.Access.OWNER, "owner")
        existing = await store.find_share(
            conn, actor.tenant_id, note_id, user_id=user_id, batch_id=batch_id
        )
        if existing is not None and existing.permission == permission:
            return existing  # nothing changes, nobody is told twice
        if existing is not None:
            share = replace(existing, permission=permission)
            await store.set_share_permission(conn, actor.tenant_id, share.share_id, permission)
        else:
            share = store.ShareRow(
                share_id=str(uuid.uuid4()),
                note_id=note_id,
                user_id=user_id,
                batch_id=batch_id,
                permission=permission,
                created_by=actor.user_id,
                created_at=_now(),
            )
            await store.insert_share(conn, actor.tenant_id, share)
        recipients = (
            [user_id]
            if user_id
            else [
                m
                for m in await store.active_members(conn, actor.tenant_id, batch_id)
                if m != actor.user_id
            ]
        )
        self.emit(
            uow,
            domain.NoteShared(
                tenant_id=actor.tenant_id,
                note_id=note_id,
                share_id=share.share_id,
                owner_id=view.note.owner_id,
                title=view.note.content.title,
                permission=permission,
                batch_id=batch_id,
                recipient_ids=tuple(recipients),
                occurred_at=_now(),
            ),
        )
        await store.notify_note_changed(conn, actor.tenant_id, note_id)
        return share

    async def revoke(self, uow: UnitOfWork, actor: Actor, note_id: str, share_id: str) -> None:
        conn = await store.writing(uow)
        row = await store.note_with_access(
            conn, actor.tenant_id, note_id, actor.user_id, for_update=True
        )
        view = _view(actor, row, note_id)
        _require(view, domain.Access.OWNER, "owner")
        if not await store.delete_share(conn, actor.tenant_id, note_id, share_id):
            raise NotFound(f"share {share_id} not found", reason="SHARE_NOT_FOUND")
        self.emit(
            uow,
            domain.NoteShareRevoked(
                tenant_id=actor.tenant_id,
                note_id=note_id,
                share_id=share_id,
                owner_id=view.note.owner_id,
                occurred_at=_now(),
            ),
        )
        # Open watches of the grantees re-check access at commit and end with PERMISSION_DENIED.
        await store.notify_note_changed(conn, actor.tenant_id, note_id)

    async def list_shares(self, actor: Actor, note_id: str) -> list[store.ShareRow]:
        conn = self.reads
        row = await store.note_with_access(conn, actor.tenant_id, note_id, actor.user_id)
        view = _view(actor, row, note_id)
        _require(view, domain.Access.OWNER, "owner")
        return await store.list_shares(conn, actor.tenant_id, note_id)

    # --- cohorts (enrollment events) --------------------------------------------------------

    async def apply_membership(self, uow: UnitOfWork, change: domain.MembershipChange) -> None:
        conn = await store.writing(uow)
        if await store.apply_membership(conn, change):
            await store.notify_access_changed(conn, change.tenant_id, [change.user_id])

    # --- live watch -----------------------------------------------------------------------

    async def watch(self, actor: Actor, note_id: str) -> AsyncIterator[tuple[WatchKind, NoteView]]:
        """The note now, then after every committed change; ends after DELETED, raises
        PermissionDenied as soon as the caller's access is gone."""
        # Subscribe before the first read, so a change committed in between is not missed.
        with self.feed.subscription(actor.tenant_id, note_id, actor.user_id) as changes:
            last = await self.get(actor, note_id)
            yield WatchKind.SNAPSHOT, last
            while True:
                await changes.wait()
                if self.feed.draining:
                    # Tell the client to reconnect (to another replica) instead of holding this
                    # process for the whole grace period.
                    raise Unavailable(
                        "the server is shutting down; watch again",
                        retry_after_seconds=0.0,
                        reason="SERVER_DRAINING",
                    )
                conn = self.reads
                row = await store.note_with_access(conn, actor.tenant_id, note_id, actor.user_id)
                if row is None:
                    yield WatchKind.DELETED, last
                    return
                current = _view(actor, row, note_id)  # raises PermissionDenied when revoked
                if current.note.version != last.note.version or current.access != last.access:
                    last = current
                    yield WatchKind.UPDATED, current
