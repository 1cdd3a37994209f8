# mypy: disable-error-code="import-untyped"
# ruff: noqa: N802 (servicer method names are the RPC names from the contract)
"""gRPC servicer: proto ⇄ handler calls. No business rules live here.

Mutating RPCs run through `run_idempotent`, which owns the transaction: the handler's writes, its
outbox events, its change notification and the stored response commit together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from suuupra.notes.v1 import note_pb2
from suuupra.notes.v1 import notes_events_pb2 as events_pb
from suuupra.notes.v1 import notes_service_pb2 as pb
from suuupra.notes.v1 import notes_service_pb2_grpc as rpc

from services.notes import domain, store
from services.notes.handlers import Actor, Notes, NoteView, WatchKind
from suuupra_runtime.auth import current_caller
from suuupra_runtime.db import UnitOfWork
from suuupra_runtime.errors import PermissionDenied
from suuupra_runtime.idempotency import run_idempotent
from suuupra_runtime.timestamps import timestamp_pb as _ts

R = TypeVar("R", bound=Message)
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]

SERVICE = "suuupra.notes.v1.NoteService"
SERVICE_NAMES = [SERVICE]

_ACCESS = {
    domain.Access.READ: note_pb2.NOTE_ACCESS_READ,
    domain.Access.EDIT: note_pb2.NOTE_ACCESS_EDIT,
    domain.Access.OWNER: note_pb2.NOTE_ACCESS_OWNER,
}
_PERMISSION_TO_PROTO = {
    domain.Permission.READ: events_pb.SHARE_PERMISSION_READ,
    domain.Permission.EDIT: events_pb.SHARE_PERMISSION_EDIT,
}
_PERMISSION_FROM_PROTO = {v: k for k, v in _PERMISSION_TO_PROTO.items()}
_WATCH_KIND = {
    WatchKind.SNAPSHOT: pb.WatchNoteResponse.KIND_SNAPSHOT,
    WatchKind.UPDATED: pb.WatchNoteResponse.KIND_UPDATED,
    WatchKind.DELETED: pb.WatchNoteResponse.KIND_DELETED,
}


def actor() -> Actor:
    caller = current_caller()
    if not caller.subject or not caller.tenant_id:
        # Notes belong to people; a service identity has no notes of its own.
        raise PermissionDenied("notes need an end user's token", reason="END_USER_REQUIRED")
    return Actor(user_id=caller.subject, tenant_id=caller.tenant_id)


def note_pb(view: NoteView) -> note_pb2.Note:
    n = view.note
    c = n.content
    attachment = None
    if not c.attachment.empty:
        attachment = note_pb2.NoteAttachment(
            course_id=c.attachment.course_id, lesson_id=c.attachment.lesson_id
        )
        if c.attachment.video_offset_ms is not None:
            offset = Duration()
            offset.FromMilliseconds(c.attachment.video_offset_ms)
            attachment.video_offset.CopyFrom(offset)
    return note_pb2.Note(
        note_id=n.note_id,
        tenant_id=n.tenant_id,
        owner_id=n.owner_id,
        title=c.title,
        body=c.body,
        tags=list(c.tags),
        attachment=attachment,
        version=n.version,
        etag=n.etag,
        create_time=_ts(n.created_at),
        update_time=_ts(n.updated_at),
        access=_ACCESS[view.access],
    )


def share_pb(share: store.ShareRow) -> note_pb2.NoteShare:
    return note_pb2.NoteShare(
        share_id=share.share_id,
        note_id=share.note_id,
        user_id=share.user_id,
        batch_id=share.batch_id,
        permission=_PERMISSION_TO_PROTO[share.permission],
        created_by=share.created_by,
        create_time=_ts(share.created_at),
    )


def attachment_from(msg: pb.NoteAttachmentInput, present: bool) -> domain.Attachment:
    if not present:
        return domain.Attachment()
    return domain.Attachment(
        course_id=msg.course_id,
        lesson_id=msg.lesson_id,
        video_offset_ms=msg.video_offset.ToMilliseconds() if msg.HasField("video_offset") else None,
    )


class NoteServicer(rpc.NoteServiceServicer):
    def __init__(self, notes: Notes) -> None:
        self.notes = notes

    async def _idempotent(
        self,
        method: str,
        request: Message,
        response_type: type[R],
        who: Actor,
        work: Callable[[UnitOfWork], Awaitable[R]],
    ) -> R:
        return await run_idempotent(
            self.notes.db,
            tenant_id=who.tenant_id,
            # Request ids are per user: two users of a tenant may mint the same id.
            method=f"/{SERVICE}/{method}#{who.user_id}",
            request=request,
            response_type=response_type,
            work=work,
        )

    async def CreateNote(
        self, request: pb.CreateNoteRequest, context: Ctx
    ) -> pb.CreateNoteResponse:
        who = actor()
        content = domain.NoteContent(
            title=request.title,
            body=request.body,
            tags=tuple(request.tags),
            attachment=attachment_from(request.attachment, request.HasField("attachment")),
        )

        async def work(uow: UnitOfWork) -> pb.CreateNoteResponse:
            return pb.CreateNoteResponse(note=note_pb(await self.notes.create(uow, who, content)))

        return await self._idempotent("CreateNote", request, pb.CreateNoteResponse, who, work)

    async def GetNote(self, request: pb.GetNoteRequest, context: Ctx) -> pb.GetNoteResponse:
        return pb.GetNoteResponse(note=note_pb(await self.notes.get(actor(), request.note_id)))

    async def UpdateNote(
        self, request: pb.UpdateNoteRequest, context: Ctx
    ) -> pb.UpdateNoteResponse:
        who = actor()
        sent = domain.NoteContent(
            title=request.title,
            body=request.body,
            tags=tuple(request.tags),
            attachment=attachment_from(request.attachment, request.HasField("attachment")),
        )

        async def work(uow: UnitOfWork) -> pb.UpdateNoteResponse:
            view = await self.notes.update(
                uow,
                who,
                note_id=request.note_id,
                etag=request.etag,
                paths=list(request.update_mask.paths),
                sent=sent,
            )
            return pb.UpdateNoteResponse(note=note_pb(view))

        return await self._idempotent("UpdateNote", request, pb.UpdateNoteResponse, who, work)

    async def DeleteNote(
        self, request: pb.DeleteNoteRequest, context: Ctx
    ) -> pb.DeleteNoteResponse:
        who = actor()

        async def work(uow: UnitOfWork) -> pb.DeleteNoteResponse:
            await self.notes.delete(uow, who, request.note_id, request.etag)
            return pb.DeleteNoteResponse()

        return await self._idempotent("DeleteNote", request, pb.DeleteNoteResponse, who, work)

    async def ListNotes(self, request: pb.ListNotesRequest, context: Ctx) -> pb.ListNotesResponse:
        views, token = await self.notes.list_own(
            actor(),
            store.NoteFilter(
                tag=request.tag, course_id=request.course_id, lesson_id=request.lesson_id
            ),
            request.page_size,
            request.page_token,
        )
        return pb.ListNotesResponse(notes=[note_pb(v) for v in views], next_page_token=token)

    async def SearchNotes(
        self, request: pb.SearchNotesRequest, context: Ctx
    ) -> pb.SearchNotesResponse:
        hits, token = await self.notes.search(
            actor(), request.query, request.page_size, request.page_token
        )
        return pb.SearchNotesResponse(
            hits=[
                pb.SearchNoteHit(
                    note=note_pb(NoteView(h.note, domain.Access.OWNER)),
                    snippet=h.snippet,
                    rank=h.rank,
                )
                for h in hits
            ],
            next_page_token=token,
        )

    async def ShareNote(self, request: pb.ShareNoteRequest, context: Ctx) -> pb.ShareNoteResponse:
        who = actor()
        permission = _PERMISSION_FROM_PROTO[request.permission]

        async def work(uow: UnitOfWork) -> pb.ShareNoteResponse:
            share = await self.notes.share(
                uow,
                who,
                request.note_id,
                user_id=request.user_id,
                batch_id=request.batch_id,
                permission=permission,
            )
            return pb.ShareNoteResponse(share=share_pb(share))

        return await self._idempotent("ShareNote", request, pb.ShareNoteResponse, who, work)

    async def RevokeNoteShare(
        self, request: pb.RevokeNoteShareRequest, context: Ctx
    ) -> pb.RevokeNoteShareResponse:
        who = actor()

        async def work(uow: UnitOfWork) -> pb.RevokeNoteShareResponse:
            await self.notes.revoke(uow, who, request.note_id, request.share_id)
            return pb.RevokeNoteShareResponse()

        return await self._idempotent(
            "RevokeNoteShare", request, pb.RevokeNoteShareResponse, who, work
        )

    async def ListNoteShares(
        self, request: pb.ListNoteSharesRequest, context: Ctx
    ) -> pb.ListNoteSharesResponse:
        shares = await self.notes.list_shares(actor(), request.note_id)
        return pb.ListNoteSharesResponse(shares=[share_pb(s) for s in shares])

    async def ListSharedNotes(
        self, request: pb.ListSharedNotesRequest, context: Ctx
    ) -> pb.ListSharedNotesResponse:
        views, token = await self.notes.list_shared(actor(), request.page_size, request.page_token)
        return pb.ListSharedNotesResponse(notes=[note_pb(v) for v in views], next_page_token=token)

    async def WatchNote(
        self, request: pb.WatchNoteRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchNoteResponse]:
        async for kind, view in self.notes.watch(actor(), request.note_id):
            yield pb.WatchNoteResponse(kind=_WATCH_KIND[kind], note=note_pb(view))


def register_all(server: grpc.aio.Server, notes: Notes) -> None:
    rpc.add_NoteServiceServicer_to_server(NoteServicer(notes), server)
