# mypy: disable-error-code="import-untyped,no-any-return"
"""WatchNote: live updates to readers across replicas (LISTEN/NOTIFY), and a reader whose
access is revoked (share revoked, cohort left) sees the stream end with PERMISSION_DENIED."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from suuupra.notes.v1 import notes_service_pb2 as pb
from suuupra.notes.v1 import notes_service_pb2_grpc as rpc

from services.notes.tests.harness import NotesHarness, User, notes_server
from suuupra_runtime.testing.polling import eventually
from suuupra_runtime.testing.rpc_errors import error_reason, rid

Kind = pb.WatchNoteResponse


def _watch(stub: rpc.NoteServiceStub, who: User, note_id: str) -> Any:
    return stub.WatchNote(pb.WatchNoteRequest(note_id=note_id), metadata=who.metadata, timeout=30)


async def _next(call: Any) -> pb.WatchNoteResponse:
    message = await asyncio.wait_for(call.read(), timeout=5)
    assert message is not grpc.aio.EOF, "stream ended"
    return message


async def _watching(notes: NotesHarness, count: int = 1) -> None:
    async def ready() -> bool:
        return notes.wiring.feed.watcher_count >= count

    await eventually(ready)


async def _update(
    stub: rpc.NoteServiceStub, who: User, note_id: str, etag: str, body: str
) -> pb.UpdateNoteResponse:
    return await stub.UpdateNote(
        pb.UpdateNoteRequest(
            request_id=rid(),
            note_id=note_id,
            etag=etag,
            update_mask=FieldMask(paths=["body"]),
            body=body,
        ),
        metadata=who.metadata,
    )


async def test_readers_see_updates_live_and_the_stream_ends_on_delete(notes: NotesHarness) -> None:
    ada, bob = notes.user("ada"), notes.user("bob")
    note = (await notes.create(ada, body="v1")).note
    await notes.share(ada, note.note_id, user=bob)

    call = _watch(notes.stub, bob, note.note_id)
    first = await _next(call)
    assert first.kind == Kind.KIND_SNAPSHOT and first.note.body == "v1"

    updated = (await _update(notes.stub, ada, note.note_id, note.etag, "v2")).note
    change = await _next(call)
    assert change.kind == Kind.KIND_UPDATED and change.note.body == "v2"
    assert change.note.version == updated.version

    await notes.stub.DeleteNote(
        pb.DeleteNoteRequest(request_id=rid(), note_id=note.note_id), metadata=ada.metadata
    )
    last = await _next(call)
    assert last.kind == Kind.KIND_DELETED and last.note.note_id == note.note_id
    assert await asyncio.wait_for(call.read(), timeout=5) is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_a_revoked_reader_s_watch_ends_with_permission_denied_at_once(
    notes: NotesHarness,
) -> None:
    ada, bob = notes.user("ada"), notes.user("bob")
    note = (await notes.create(ada, body="private soon")).note
    share = (await notes.share(ada, note.note_id, user=bob)).share

    call = _watch(notes.stub, bob, note.note_id)
    assert (await _next(call)).kind == Kind.KIND_SNAPSHOT
    await notes.stub.RevokeNoteShare(
        pb.RevokeNoteShareRequest(request_id=rid(), note_id=note.note_id, share_id=share.share_id),
        metadata=ada.metadata,
    )
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(call.read(), timeout=3)
    assert ended.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(ended.value) == "NOTE_ACCESS_DENIED"

    # The owner's edit after the revocation never reaches Bob, and he cannot watch again.
    with pytest.raises(grpc.aio.AioRpcError) as rewatch:
        await _next(_watch(notes.stub, bob, note.note_id))
    assert rewatch.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_leaving_the_cohort_ends_the_watch(notes: NotesHarness) -> None:
    ada, sam = notes.user("ada"), notes.user("sam")
    note = (await notes.create(ada)).note
    await notes.enroll(sam, "batch-1")
    await notes.share(ada, note.note_id, batch_id="batch-1")

    async def sam_reads() -> bool:
        try:
            await notes.stub.GetNote(pb.GetNoteRequest(note_id=note.note_id), metadata=sam.metadata)
        except grpc.aio.AioRpcError:
            return False
        return True

    await eventually(sam_reads)
    call = _watch(notes.stub, sam, note.note_id)
    assert (await _next(call)).kind == Kind.KIND_SNAPSHOT
    await notes.drop(sam, "batch-1")
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(call.read(), timeout=10)
    assert ended.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_changes_made_on_another_replica_reach_the_watchers(notes: NotesHarness) -> None:
    ada, bob = notes.user("ada"), notes.user("bob")
    note = (await notes.create(ada, body="v1")).note
    share = (await notes.share(ada, note.note_id, user=bob)).share
    call = _watch(notes.stub, bob, note.note_id)
    assert (await _next(call)).kind == Kind.KIND_SNAPSHOT

    # A second replica: same database, its own process state and LISTEN connection.
    async with notes_server(notes.database_url, notes.nats_url, notes.issuer) as (_, replica):
        other = rpc.NoteServiceStub(replica.channel)
        await _update(other, ada, note.note_id, note.etag, "from replica 2")
        change = await _next(call)
        assert change.kind == Kind.KIND_UPDATED and change.note.body == "from replica 2"

        await other.RevokeNoteShare(
            pb.RevokeNoteShareRequest(
                request_id=rid(), note_id=note.note_id, share_id=share.share_id
            ),
            metadata=ada.metadata,
        )
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(call.read(), timeout=3)
        assert ended.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await _watching(notes, 0)


async def test_watching_a_note_you_cannot_read_is_refused(notes: NotesHarness) -> None:
    ada, eve = notes.user("ada"), notes.user("eve")
    note = (await notes.create(ada)).note
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await _next(_watch(notes.stub, eve, note.note_id))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await _next(_watch(notes.stub, eve, "nope"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert notes.wiring.feed.watcher_count == 0


async def test_watchers_survive_a_lost_listen_connection(notes: NotesHarness) -> None:
    ada, bob = notes.user("ada"), notes.user("bob")
    note = (await notes.create(ada, body="v1")).note
    await notes.share(ada, note.note_id, user=bob)
    call = _watch(notes.stub, bob, note.note_id)
    assert (await _next(call)).kind == Kind.KIND_SNAPSHOT

    listener = notes.wiring.feed.listener
    lost_pid = listener.server_pid
    assert lost_pid is not None
    assert await notes.scalar(f"SELECT pg_terminate_backend({int(lost_pid)})")

    async def relistening() -> bool:
        return listener.server_pid not in (None, lost_pid)

    await eventually(relistening)
    await _update(notes.stub, ada, note.note_id, note.etag, "after the reconnect")
    change = await _next(call)
    assert change.kind == Kind.KIND_UPDATED and change.note.body == "after the reconnect"


async def test_a_draining_replica_ends_its_watches_with_unavailable(notes: NotesHarness) -> None:
    ada = notes.user("ada")
    note = (await notes.create(ada)).note
    async with notes_server(notes.database_url, notes.nats_url, notes.issuer) as (wiring, replica):
        call = _watch(rpc.NoteServiceStub(replica.channel), ada, note.note_id)
        assert (await _next(call)).kind == Kind.KIND_SNAPSHOT
        stopping = asyncio.ensure_future(replica.server.stop())
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(call.read(), timeout=5)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(ended.value) == "SERVER_DRAINING"
        await stopping
        assert wiring.feed.watcher_count == 0
