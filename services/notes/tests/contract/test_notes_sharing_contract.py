# mypy: disable-error-code="import-untyped,no-any-return"
"""Sharing through gRPC: only owners and grantees read a note, edit vs read permission,
revocation cuts access at once, cohort shares follow the enrollment projection, and the
NoteShared event reaches JetStream through the outbox."""

from __future__ import annotations

import datetime as dt

import grpc
import nats
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from suuupra.courses.v1 import enrollment_enums_pb2 as enrollment
from suuupra.notes.v1 import note_pb2
from suuupra.notes.v1 import notes_events_pb2 as ev
from suuupra.notes.v1 import notes_service_pb2 as pb

from services.notes.tests.harness import NotesHarness, User
from suuupra_runtime.testing.polling import eventually
from suuupra_runtime.testing.rpc_errors import error_reason, field_violations, rid


async def _get(notes: NotesHarness, who: User, note_id: str) -> note_pb2.Note:
    return (
        await notes.stub.GetNote(pb.GetNoteRequest(note_id=note_id), metadata=who.metadata)
    ).note


async def _code(notes: NotesHarness, who: User, note_id: str) -> grpc.StatusCode:
    try:
        await _get(notes, who, note_id)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def _edit(
    notes: NotesHarness, who: User, note: note_pb2.Note, body: str
) -> pb.UpdateNoteResponse:
    return await notes.stub.UpdateNote(
        pb.UpdateNoteRequest(
            request_id=rid(),
            note_id=note.note_id,
            etag=note.etag,
            update_mask=FieldMask(paths=["body"]),
            body=body,
        ),
        metadata=who.metadata,
    )


async def test_only_the_owner_and_grantees_read_a_note(notes: NotesHarness) -> None:
    ada, bob, eve = notes.user("ada"), notes.user("bob"), notes.user("eve")
    note = (await notes.create(ada, title="shared")).note
    assert await _code(notes, bob, note.note_id) == grpc.StatusCode.PERMISSION_DENIED

    share = (await notes.share(ada, note.note_id, user=bob)).share
    assert share.user_id == bob.user_id and share.permission == ev.SHARE_PERMISSION_READ
    seen = await _get(notes, bob, note.note_id)
    assert seen.title == "shared" and seen.access == note_pb2.NOTE_ACCESS_READ
    assert await _code(notes, eve, note.note_id) == grpc.StatusCode.PERMISSION_DENIED

    shared = await notes.stub.ListSharedNotes(pb.ListSharedNotesRequest(), metadata=bob.metadata)
    assert [n.note_id for n in shared.notes] == [note.note_id]
    assert (
        list(
            (
                await notes.stub.ListSharedNotes(pb.ListSharedNotesRequest(), metadata=eve.metadata)
            ).notes
        )
        == []
    )

    # A reader cannot edit, delete or re-share.
    with pytest.raises(grpc.aio.AioRpcError) as edit:
        await _edit(notes, bob, seen, "mine now")
    assert edit.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as reshare:
        await notes.share(bob, note.note_id, user=eve)
    assert reshare.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as delete:
        await notes.stub.DeleteNote(
            pb.DeleteNoteRequest(request_id=rid(), note_id=note.note_id), metadata=bob.metadata
        )
    assert delete.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await _get(notes, ada, note.note_id)).version == 1

    # Upgrading the same grantee to EDIT changes the share, not the number of shares.
    upgraded = (await notes.share(ada, note.note_id, user=bob, edit=True)).share
    assert upgraded.share_id == share.share_id
    edited = (await _edit(notes, bob, seen, "edited by bob")).note
    assert edited.body == "edited by bob" and edited.access == note_pb2.NOTE_ACCESS_EDIT
    shares = await notes.stub.ListNoteShares(
        pb.ListNoteSharesRequest(note_id=note.note_id), metadata=ada.metadata
    )
    assert [(s.user_id, s.permission) for s in shares.shares] == [
        (bob.user_id, ev.SHARE_PERMISSION_EDIT)
    ]
    with pytest.raises(grpc.aio.AioRpcError) as grantee_lists:
        await notes.stub.ListNoteShares(
            pb.ListNoteSharesRequest(note_id=note.note_id), metadata=bob.metadata
        )
    assert grantee_lists.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_revoking_a_share_cuts_access_immediately(notes: NotesHarness) -> None:
    ada, bob = notes.user("ada"), notes.user("bob")
    note = (await notes.create(ada)).note
    share = (await notes.share(ada, note.note_id, user=bob, edit=True)).share
    assert (await _get(notes, bob, note.note_id)).access == note_pb2.NOTE_ACCESS_EDIT

    await notes.stub.RevokeNoteShare(
        pb.RevokeNoteShareRequest(request_id=rid(), note_id=note.note_id, share_id=share.share_id),
        metadata=ada.metadata,
    )
    # No delay, no cache: the very next calls are refused.
    assert await _code(notes, bob, note.note_id) == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as edit:
        await _edit(notes, bob, note, "too late")
    assert edit.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (
        list(
            (
                await notes.stub.ListSharedNotes(pb.ListSharedNotesRequest(), metadata=bob.metadata)
            ).notes
        )
        == []
    )

    with pytest.raises(grpc.aio.AioRpcError) as again:
        await notes.stub.RevokeNoteShare(
            pb.RevokeNoteShareRequest(
                request_id=rid(), note_id=note.note_id, share_id=share.share_id
            ),
            metadata=ada.metadata,
        )
    assert again.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(again.value) == "SHARE_NOT_FOUND"


async def test_sharing_with_yourself_or_nobody_is_bad_input(notes: NotesHarness) -> None:
    ada = notes.user("ada")
    note = (await notes.create(ada)).note
    with pytest.raises(grpc.aio.AioRpcError) as self_share:
        await notes.share(ada, note.note_id, user=ada)
    assert field_violations(self_share.value) == ["user_id"]
    with pytest.raises(grpc.aio.AioRpcError) as nobody:
        await notes.stub.ShareNote(
            pb.ShareNoteRequest(
                request_id=rid(), note_id=note.note_id, permission=ev.SHARE_PERMISSION_READ
            ),
            metadata=ada.metadata,
        )
    assert nobody.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as no_permission:
        await notes.stub.ShareNote(
            pb.ShareNoteRequest(request_id=rid(), note_id=note.note_id, batch_id="b1"),
            metadata=ada.metadata,
        )
    assert field_violations(no_permission.value) == ["permission"]


async def test_cohort_sharing_follows_the_enrollment_projection(notes: NotesHarness) -> None:
    ada, sam, lee, wait = (
        notes.user("ada"),
        notes.user("sam"),
        notes.user("lee"),
        notes.user("wait"),
    )
    note = (await notes.create(ada, title="for the cohort")).note
    await notes.enroll(sam, "batch-1")
    await notes.enroll(wait, "batch-1", status=enrollment.ENROLLMENT_STATUS_WAITLISTED)
    await notes.enroll(lee, "batch-2")

    async def projected() -> bool:
        return bool(await notes.scalar("SELECT count(*) = 2 FROM batch_members"))

    await eventually(projected)
    await notes.share(ada, note.note_id, batch_id="batch-1")
    assert (await _get(notes, sam, note.note_id)).access == note_pb2.NOTE_ACCESS_READ
    assert await _code(notes, lee, note.note_id) == grpc.StatusCode.PERMISSION_DENIED
    assert await _code(notes, wait, note.note_id) == grpc.StatusCode.PERMISSION_DENIED

    # Joining later grants access; dropping takes it away.
    await notes.enroll(lee, "batch-1")

    async def lee_reads() -> bool:
        return await _code(notes, lee, note.note_id) == grpc.StatusCode.OK

    await eventually(lee_reads)
    await notes.drop(sam, "batch-1")

    async def sam_lost_it() -> bool:
        return await _code(notes, sam, note.note_id) == grpc.StatusCode.PERMISSION_DENIED

    await eventually(sam_lost_it)
    # A stale EnrollmentCreated arriving after the drop does not bring Sam back.
    await notes.enroll(sam, "batch-1", at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    await notes.enroll(notes.user("marker"), "batch-9")

    async def marker_projected() -> bool:
        return bool(
            await notes.scalar("SELECT count(*) > 0 FROM batch_members WHERE batch_id = 'batch-9'")
        )

    await eventually(marker_projected)
    assert await _code(notes, sam, note.note_id) == grpc.StatusCode.PERMISSION_DENIED


async def test_note_shared_event_names_the_recipients(notes: NotesHarness) -> None:
    ada, bob, sam = notes.user("ada"), notes.user("bob"), notes.user("sam")
    note = (await notes.create(ada, title="read me")).note
    await notes.enroll(sam, "batch-7")
    await notes.enroll(ada, "batch-7")  # the owner is in the cohort too, but is told nothing

    async def projected() -> bool:
        return bool(await notes.scalar("SELECT count(*) = 2 FROM batch_members"))

    await eventually(projected)
    await notes.share(ada, note.note_id, user=bob)
    await notes.share(ada, note.note_id, user=bob)  # unchanged: no second event
    await notes.share(ada, note.note_id, batch_id="batch-7", edit=True)

    nc = await nats.connect(notes.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            "suuupra.notes.v1.NoteShared", durable="test-shared", stream="NOTES"
        )
        received: list[ev.NoteShared] = []

        async def two_events() -> bool:
            try:
                for msg in await sub.fetch(2, timeout=0.5):
                    received.append(ev.NoteShared.FromString(msg.data))
                    await msg.ack()
            except (TimeoutError, nats.errors.TimeoutError):
                pass
            return len(received) >= 2

        await eventually(two_events)
        await sub.unsubscribe()
    finally:
        await nc.close()
    direct, cohort = received
    assert (direct.note_id, direct.title, list(direct.recipient_ids)) == (
        note.note_id,
        "read me",
        [bob.user_id],
    )
    assert direct.permission == ev.SHARE_PERMISSION_READ and direct.owner_id == ada.user_id
    assert cohort.batch_id == "batch-7" and list(cohort.recipient_ids) == [sam.user_id]
    assert cohort.permission == ev.SHARE_PERMISSION_EDIT and cohort.tenant_id == ada.tenant_id


async def test_replaying_courses_rebuilds_the_same_cohort_projection(notes: NotesHarness) -> None:
    from services.notes.events import rebuild_cohorts

    sam, lee = notes.user("sam"), notes.user("lee")
    await notes.enroll(sam, "batch-1")
    await notes.enroll(lee, "batch-1")
    await notes.drop(sam, "batch-1")
    await notes.enroll(lee, "batch-2", status=enrollment.ENROLLMENT_STATUS_WAITLISTED)
    state = (
        "SELECT string_agg(batch_id || user_id || active::text, ',' ORDER BY batch_id, user_id) "
        "FROM batch_members"
    )

    async def projected() -> bool:
        return await notes.scalar("SELECT count(*) FROM inbox") == 4

    await eventually(projected)
    before = await notes.scalar(state)
    assert set(str(before).split(",")) == {
        f"batch-1{lee.user_id}true",
        f"batch-1{sam.user_id}false",
    }
    await notes.scalar("DELETE FROM batch_members RETURNING 1")
    assert await rebuild_cohorts(notes.wiring.notes, notes.nats_url) == 4
    assert await notes.scalar(state) == before
    assert await rebuild_cohorts(notes.wiring.notes, notes.nats_url) == 4  # twice: no change
    assert await notes.scalar(state) == before


async def test_shared_notes_page_through_direct_and_cohort_shares(notes: NotesHarness) -> None:
    ada, bob = notes.user("ada"), notes.user("bob")
    await notes.enroll(bob, "batch-3")

    async def projected() -> bool:
        return bool(await notes.scalar("SELECT count(*) = 1 FROM batch_members"))

    await eventually(projected)
    made = []
    for i in range(3):
        note = (await notes.create(ada, title=f"s{i}")).note
        if i == 1:
            await notes.share(ada, note.note_id, batch_id="batch-3", edit=True)
        else:
            await notes.share(ada, note.note_id, user=bob)
        made.append(note.note_id)
    await notes.share(ada, made[0], batch_id="batch-3")  # two routes to one note: listed once
    await notes.create(bob, title="bob's own")  # own notes are not "shared with me"
    seen: list[tuple[str, int]] = []
    token = ""
    while True:
        page = await notes.stub.ListSharedNotes(
            pb.ListSharedNotesRequest(page_size=2, page_token=token), metadata=bob.metadata
        )
        seen += [(n.note_id, n.access) for n in page.notes]
        token = page.next_page_token
        if not token:
            break
    assert seen == [
        (made[2], note_pb2.NOTE_ACCESS_READ),
        (made[1], note_pb2.NOTE_ACCESS_EDIT),
        (made[0], note_pb2.NOTE_ACCESS_READ),
    ]
