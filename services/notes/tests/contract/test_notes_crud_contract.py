# mypy: disable-error-code="import-untyped,no-any-return"
"""Notes through gRPC: create/get/update/delete, optimistic concurrency, listing, search,
idempotent retries, validation and tenant isolation."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from suuupra.notes.v1 import note_pb2
from suuupra.notes.v1 import notes_service_pb2 as pb

from services.notes.tests.harness import NotesHarness
from suuupra_runtime.testing.rpc_errors import error_reason, field_violations, rid


async def test_create_get_update_delete_roundtrip(notes: NotesHarness) -> None:
    ada = notes.user("ada")
    created = (
        await notes.create(
            ada,
            title="  Dijkstra ",
            body="# Shortest paths\nRelax **edges**.",
            tags=["Graphs", "graphs", "exam"],
            attachment=pb.NoteAttachmentInput(
                course_id="algo-101", lesson_id="l-7", video_offset=Duration(seconds=95)
            ),
        )
    ).note
    assert created.title == "Dijkstra"
    assert list(created.tags) == ["graphs", "exam"]
    assert created.owner_id == ada.user_id and created.tenant_id == ada.tenant_id
    assert created.attachment.video_offset.seconds == 95
    assert created.access == note_pb2.NOTE_ACCESS_OWNER
    assert created.version == 1

    got = (
        await notes.stub.GetNote(pb.GetNoteRequest(note_id=created.note_id), metadata=ada.metadata)
    ).note
    assert got == created

    updated = (
        await notes.stub.UpdateNote(
            pb.UpdateNoteRequest(
                request_id=rid(),
                note_id=created.note_id,
                etag=created.etag,
                update_mask=FieldMask(paths=["body"]),
                body="changed",
                title="ignored: not in the mask",
            ),
            metadata=ada.metadata,
        )
    ).note
    assert updated.body == "changed" and updated.title == "Dijkstra"
    assert updated.version == 2 and updated.etag != created.etag

    await notes.stub.DeleteNote(
        pb.DeleteNoteRequest(request_id=rid(), note_id=created.note_id), metadata=ada.metadata
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await notes.stub.GetNote(pb.GetNoteRequest(note_id=created.note_id), metadata=ada.metadata)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_stale_etag_is_rejected_and_changes_nothing(notes: NotesHarness) -> None:
    ada = notes.user("ada")
    note = (await notes.create(ada, body="v1")).note

    async def update(body: str) -> pb.UpdateNoteResponse:
        return await notes.stub.UpdateNote(
            pb.UpdateNoteRequest(
                request_id=rid(),
                note_id=note.note_id,
                etag=note.etag,
                update_mask=FieldMask(paths=["body"]),
                body=body,
            ),
            metadata=ada.metadata,
        )

    # Two writers start from the same version at once: exactly one wins.
    results = await asyncio.gather(update("writer A"), update("writer B"), return_exceptions=True)
    wins = [r for r in results if isinstance(r, pb.UpdateNoteResponse)]
    losses = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(wins) == 1 and len(losses) == 1, results
    assert losses[0].code() == grpc.StatusCode.ABORTED
    assert error_reason(losses[0]) == "ETAG_MISMATCH"

    current = (
        await notes.stub.GetNote(pb.GetNoteRequest(note_id=note.note_id), metadata=ada.metadata)
    ).note
    assert current.body == wins[0].note.body and current.version == 2


async def test_retries_with_the_same_request_id_duplicate_nothing(notes: NotesHarness) -> None:
    ada = notes.user("ada")
    request = pb.CreateNoteRequest(request_id=rid(), title="once")
    first = await notes.stub.CreateNote(request, metadata=ada.metadata)
    again = await notes.stub.CreateNote(request, metadata=ada.metadata)
    assert again.note.note_id == first.note.note_id
    listed = await notes.stub.ListNotes(pb.ListNotesRequest(), metadata=ada.metadata)
    assert [n.note_id for n in listed.notes] == [first.note.note_id]

    changed = pb.CreateNoteRequest(request_id=request.request_id, title="other payload")
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await notes.stub.CreateNote(changed, metadata=ada.metadata)
    assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(reused.value) == ["request_id"]


async def test_bad_input_is_refused_with_field_violations_and_stores_nothing(
    notes: NotesHarness,
) -> None:
    ada = notes.user("ada")
    cases = [
        (pb.CreateNoteRequest(request_id=rid(), title=""), "title"),
        (pb.CreateNoteRequest(request_id="not-a-uuid", title="x"), "request_id"),
        (pb.CreateNoteRequest(request_id=rid(), title="x", tags=["has space"]), "tags[0]"),
        (
            pb.CreateNoteRequest(request_id=rid(), title="x", tags=[f"t{i}" for i in range(21)]),
            "tags",
        ),
        (
            pb.CreateNoteRequest(
                request_id=rid(), title="x", attachment=pb.NoteAttachmentInput(lesson_id="l1")
            ),
            "attachment.course_id",
        ),
        (
            pb.CreateNoteRequest(
                request_id=rid(),
                title="x",
                attachment=pb.NoteAttachmentInput(course_id="c1", video_offset=Duration(seconds=5)),
            ),
            "attachment.lesson_id",
        ),
        (pb.CreateNoteRequest(request_id=rid(), title="   "), "title"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await notes.stub.CreateNote(request, metadata=ada.metadata)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in field_violations(bad.value), (field, field_violations(bad.value))

    note = (await notes.create(ada)).note
    with pytest.raises(grpc.aio.AioRpcError) as bad_mask:
        await notes.stub.UpdateNote(
            pb.UpdateNoteRequest(
                request_id=rid(),
                note_id=note.note_id,
                etag=note.etag,
                update_mask=FieldMask(paths=["owner_id"]),
            ),
            metadata=ada.metadata,
        )
    assert field_violations(bad_mask.value) == ["update_mask"]
    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await notes.stub.ListNotes(pb.ListNotesRequest(page_token="garbage"), metadata=ada.metadata)
    assert field_violations(bad_token.value) == ["page_token"]

    listed = await notes.stub.ListNotes(pb.ListNotesRequest(), metadata=ada.metadata)
    assert [n.note_id for n in listed.notes] == [note.note_id]
    assert listed.notes[0].version == 1


async def test_list_filters_and_pages(notes: NotesHarness) -> None:
    ada = notes.user("ada")
    made = []
    for i in range(5):
        made.append(
            (
                await notes.create(
                    ada,
                    title=f"n{i}",
                    tags=["even"] if i % 2 == 0 else ["odd"],
                    attachment=pb.NoteAttachmentInput(course_id="c1" if i < 3 else "c2"),
                )
            ).note.note_id
        )
    await notes.create(notes.user("bob"), title="not mine")

    seen: list[str] = []
    token = ""
    while True:
        page = await notes.stub.ListNotes(
            pb.ListNotesRequest(page_size=2, page_token=token), metadata=ada.metadata
        )
        seen += [n.note_id for n in page.notes]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(made))  # newest first, each exactly once, only mine

    even = await notes.stub.ListNotes(pb.ListNotesRequest(tag="EVEN"), metadata=ada.metadata)
    assert {n.title for n in even.notes} == {"n0", "n2", "n4"}
    both = await notes.stub.ListNotes(
        pb.ListNotesRequest(tag="even", course_id="c1"), metadata=ada.metadata
    )
    assert {n.title for n in both.notes} == {"n0", "n2"}

    first = await notes.stub.ListNotes(pb.ListNotesRequest(page_size=2), metadata=ada.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as other_filters:
        await notes.stub.ListNotes(
            pb.ListNotesRequest(page_size=2, page_token=first.next_page_token, tag="odd"),
            metadata=ada.metadata,
        )
    assert field_violations(other_filters.value) == ["page_token"]


async def test_full_text_search_finds_my_notes_only(notes: NotesHarness) -> None:
    ada = notes.user("ada")
    bob = notes.user("bob")
    dijkstra = (
        await notes.create(ada, title="Dijkstra", body="Shortest paths relax the edges of graphs.")
    ).note
    await notes.create(
        ada, title="Sorting", body="Quicksort partitions around a pivot.", tags=["algorithms"]
    )
    await notes.create(bob, title="Bob's graphs", body="graphs everywhere")

    hits = (
        await notes.stub.SearchNotes(pb.SearchNotesRequest(query="graph"), metadata=ada.metadata)
    ).hits
    assert [h.note.note_id for h in hits] == [dijkstra.note_id]  # stemmed: graph ~ graphs
    assert "**graphs**" in hits[0].snippet
    by_tag = (
        await notes.stub.SearchNotes(
            pb.SearchNotesRequest(query="algorithms"), metadata=ada.metadata
        )
    ).hits
    assert [h.note.title for h in by_tag] == ["Sorting"]
    none = (
        await notes.stub.SearchNotes(
            pb.SearchNotesRequest(query="graph -edges"), metadata=ada.metadata
        )
    ).hits
    assert list(none) == []


async def test_tenants_are_isolated(notes: NotesHarness) -> None:
    ada = notes.user("ada", tenant_id="tenant-a")
    mallory = notes.user("mallory", tenant_id="tenant-b")
    note = (await notes.create(ada, title="secret plan", body="secret")).note
    # Even sharing cannot reach across tenants: the share names a user of the owner's tenant.
    mallory_in_a = notes.users.setdefault(
        "tenant-a/mallory-id", type(mallory)(mallory.user_id, "tenant-a", ())
    )
    await notes.share(ada, note.note_id, user=mallory_in_a)

    with pytest.raises(grpc.aio.AioRpcError) as other_tenant:
        await notes.stub.GetNote(pb.GetNoteRequest(note_id=note.note_id), metadata=mallory.metadata)
    assert other_tenant.value.code() == grpc.StatusCode.NOT_FOUND
    for call in (
        notes.stub.ListNotes(pb.ListNotesRequest(), metadata=mallory.metadata),
        notes.stub.ListSharedNotes(pb.ListSharedNotesRequest(), metadata=mallory.metadata),
    ):
        assert list((await call).notes) == []
    search = await notes.stub.SearchNotes(
        pb.SearchNotesRequest(query="secret"), metadata=mallory.metadata
    )
    assert list(search.hits) == []
    with pytest.raises(grpc.aio.AioRpcError) as update:
        await notes.stub.UpdateNote(
            pb.UpdateNoteRequest(
                request_id=rid(),
                note_id=note.note_id,
                etag=note.etag,
                update_mask=FieldMask(paths=["body"]),
                body="pwned",
            ),
            metadata=mallory.metadata,
        )
    assert update.value.code() == grpc.StatusCode.NOT_FOUND
    assert (
        await notes.stub.GetNote(pb.GetNoteRequest(note_id=note.note_id), metadata=ada.metadata)
    ).note.body == "secret"


async def test_calls_without_the_permission_or_a_token_are_refused(notes: NotesHarness) -> None:
    ada = notes.user("ada")
    note = (await notes.create(ada)).note
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await notes.stub.GetNote(pb.GetNoteRequest(note_id=note.note_id))
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    no_perm = notes.issuer.token("someone", "tenant-a", roles=["student"], perms=[])
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await notes.stub.GetNote(
            pb.GetNoteRequest(note_id=note.note_id),
            metadata=(("authorization", f"Bearer {no_perm}"),),
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
