# mypy: disable-error-code="import-untyped,no-any-return"
"""Notes through the edge of a platform started by `./dev up`: a demo student shares a note
with another, who watches it over gRPC-Web (server streaming through Envoy's grpc_web filter),
sees the owner's edit arrive live, and sees the stream end with PERMISSION_DENIED on revoke."""

from __future__ import annotations

import http.client
import struct
import uuid
from collections.abc import Iterator

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from suuupra.identity.v1 import identity_service_pb2 as identity_pb
from suuupra.identity.v1 import identity_service_pb2_grpc as identity_grpc
from suuupra.notes.v1 import notes_events_pb2 as notes_ev
from suuupra.notes.v1 import notes_service_pb2 as pb
from suuupra.notes.v1 import notes_service_pb2_grpc as rpc

from tests.e2e.platform_process import RunningPlatform
from tools.demo_data import DEMO_STUDENTS, DEMO_TENANT_SLUG

WATCH = "/suuupra.notes.v1.NoteService/WatchNote"


def _login(channel: grpc.Channel, index: int) -> tuple[str, str]:
    """(access token, user id) of demo student `index`."""
    account = DEMO_STUDENTS[index]
    login = identity_grpc.AuthServiceStub(channel).Login(
        identity_pb.LoginRequest(
            tenant_slug=DEMO_TENANT_SLUG, email=account.email, password=account.password
        ),
        timeout=10,
    )
    token = login.tokens.access_token
    me = identity_grpc.UserServiceStub(channel).GetCurrentUser(
        identity_pb.GetCurrentUserRequest(), metadata=_bearer(token), timeout=10
    )
    return token, me.user.user_id


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _frames(response: http.client.HTTPResponse) -> Iterator[tuple[bool, bytes]]:
    """(is_trailer, payload) of each gRPC-Web frame as it arrives on the open response."""
    while True:
        header = response.read(5)
        if len(header) < 5:
            return
        flags, length = struct.unpack(">BI", header)
        yield bool(flags & 0x80), response.read(length)


def _trailers(payload: bytes) -> dict[str, str]:
    out = {}
    for line in payload.decode().split("\r\n"):
        if line:
            key, _, value = line.partition(":")
            out[key.strip().lower()] = value.strip()
    return out


def test_watch_note_over_grpc_web_through_the_edge(platform: RunningPlatform) -> None:
    with grpc.insecure_channel(platform.edge) as channel:
        owner_token, _ = _login(channel, 0)
        reader_token, reader_id = _login(channel, 1)
        notes = rpc.NoteServiceStub(channel)
        note = notes.CreateNote(
            pb.CreateNoteRequest(request_id=str(uuid.uuid4()), title="Edge", body="v1"),
            metadata=_bearer(owner_token),
            timeout=10,
        ).note
        share = notes.ShareNote(
            pb.ShareNoteRequest(
                request_id=str(uuid.uuid4()),
                note_id=note.note_id,
                user_id=reader_id,
                permission=notes_ev.SHARE_PERMISSION_READ,
            ),
            metadata=_bearer(owner_token),
            timeout=10,
        ).share

        host, port = platform.edge.split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=15)
        try:
            body = pb.WatchNoteRequest(note_id=note.note_id).SerializeToString()
            connection.request(
                "POST",
                WATCH,
                body=struct.pack(">BI", 0, len(body)) + body,
                headers={
                    "content-type": "application/grpc-web+proto",
                    "x-grpc-web": "1",
                    "accept": "application/grpc-web+proto",
                    "authorization": f"Bearer {reader_token}",
                },
            )
            response = connection.getresponse()
            assert response.status == 200
            frames = _frames(response)
            is_trailer, first = next(frames)
            assert not is_trailer, _trailers(first)
            snapshot = pb.WatchNoteResponse.FromString(first)
            assert snapshot.kind == pb.WatchNoteResponse.KIND_SNAPSHOT
            assert snapshot.note.body == "v1"

            notes.UpdateNote(
                pb.UpdateNoteRequest(
                    request_id=str(uuid.uuid4()),
                    note_id=note.note_id,
                    etag=note.etag,
                    update_mask=FieldMask(paths=["body"]),
                    body="v2 live",
                ),
                metadata=_bearer(owner_token),
                timeout=10,
            )
            is_trailer, second = next(frames)
            assert not is_trailer, _trailers(second)
            change = pb.WatchNoteResponse.FromString(second)
            assert change.kind == pb.WatchNoteResponse.KIND_UPDATED
            assert change.note.body == "v2 live"

            notes.RevokeNoteShare(
                pb.RevokeNoteShareRequest(
                    request_id=str(uuid.uuid4()), note_id=note.note_id, share_id=share.share_id
                ),
                metadata=_bearer(owner_token),
                timeout=10,
            )
            is_trailer, last = next(frames)
            assert is_trailer
            assert _trailers(last).get("grpc-status") == str(
                grpc.StatusCode.PERMISSION_DENIED.value[0]
            )
        finally:
            connection.close()


def test_the_demo_note_is_shared_with_the_second_student(platform: RunningPlatform) -> None:
    with grpc.insecure_channel(platform.edge) as channel:
        token, _ = _login(channel, 1)
        shared = rpc.NoteServiceStub(channel).ListSharedNotes(
            pb.ListSharedNotesRequest(), metadata=_bearer(token), timeout=10
        )
        assert "Study plan" in {n.title for n in shared.notes}
