# mypy: disable-error-code="import-untyped"
"""EchoService.CreateNote through the runtime with a real database: idempotent by request_id."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from sqlalchemy import text
from suuupra.testing.v1 import echo_service_pb2 as pb
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

from suuupra_runtime.config import ServerSettings
from suuupra_runtime.db import Database, migrate
from suuupra_runtime.grpc_errors import decode_status
from suuupra_runtime.server import RuntimeServer
from suuupra_runtime.testing.echo_service import MIGRATIONS_DIR, echo_definition


@pytest.fixture
async def notes_db(fresh_database: str) -> AsyncIterator[Database]:
    await migrate(fresh_database, MIGRATIONS_DIR)
    db = await Database.connect(fresh_database, pool_size=2)
    yield db  # the server's on_stop disposes it


@pytest.fixture
async def stub(notes_db: Database) -> AsyncIterator[pb_grpc.EchoServiceStub]:
    server = RuntimeServer(
        echo_definition(db=notes_db),
        ServerSettings(
            service_name="echo",
            grpc_addr="127.0.0.1:0",
            http_addr=None,
            drain_delay_seconds=0,
            grace_seconds=1,
        ),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            yield pb_grpc.EchoServiceStub(channel)
    finally:
        await server.stop()


async def _note_count(db: Database) -> int:
    async with db.engine.connect() as conn:
        count = await conn.scalar(text("SELECT count(*) FROM notes"))
    assert isinstance(count, int)
    return count


async def test_retry_with_same_request_id_returns_the_first_note(
    stub: pb_grpc.EchoServiceStub, notes_db: Database
) -> None:
    request = pb.CreateNoteRequest(request_id=str(uuid.uuid4()), title="hello", body="world")
    first = await stub.CreateNote(request, timeout=10)
    again = await stub.CreateNote(request, timeout=10)
    assert first.note_id and first.note_id == again.note_id
    assert await _note_count(notes_db) == 1


async def test_same_request_id_other_payload_is_invalid_argument(
    stub: pb_grpc.EchoServiceStub, notes_db: Database
) -> None:
    request_id = str(uuid.uuid4())
    await stub.CreateNote(pb.CreateNoteRequest(request_id=request_id, title="a"), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateNote(pb.CreateNoteRequest(request_id=request_id, title="b"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    rich = decode_status(caught.value.trailing_metadata())
    assert rich is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in rich.details if d.Is(bad.DESCRIPTOR))
    assert [v.field for v in bad.field_violations] == ["request_id"]
    assert await _note_count(notes_db) == 1


async def test_invalid_note_writes_nothing(
    stub: pb_grpc.EchoServiceStub, notes_db: Database
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateNote(
            pb.CreateNoteRequest(request_id=str(uuid.uuid4()), title=""), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await _note_count(notes_db) == 0
