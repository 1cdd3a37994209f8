"""run_idempotent against real PostgreSQL: one effect per request id, even under concurrency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from suuupra.testing.v1.echo_service_pb2 import CreateNoteRequest, CreateNoteResponse

from suuupra_runtime.auth import Caller, reset_current_caller, set_current_caller
from suuupra_runtime.db import Database, UnitOfWork, migrate
from suuupra_runtime.errors import InvalidArgument
from suuupra_runtime.idempotency import run_idempotent

SERVICE_MIGRATIONS = Path(__file__).parent / "service_migrations"
METHOD = "/suuupra.testing.v1.EchoService/CreateNote"


@pytest.fixture
async def db(fresh_database: str) -> AsyncIterator[Database]:
    await migrate(fresh_database, SERVICE_MIGRATIONS)
    database = await Database.connect(fresh_database, pool_size=10)
    yield database
    await database.dispose()


def _create_note(
    request: CreateNoteRequest, delay: float = 0.0
) -> Callable[[UnitOfWork], Awaitable[CreateNoteResponse]]:
    async def work(uow: UnitOfWork) -> CreateNoteResponse:
        note_id = uuid.uuid4().hex
        await uow.session.execute(
            text("INSERT INTO notes (id, tenant_id, title) VALUES (:id, :t, :title)"),
            {"id": note_id, "t": uow.tenant_id or "", "title": request.title},
        )
        if delay:
            await asyncio.sleep(delay)  # widen the race window for concurrent duplicates
        return CreateNoteResponse(note_id=note_id, title=request.title)

    return work


async def _call(
    db: Database, request: CreateNoteRequest, tenant: str | None = "t1", delay: float = 0.0
) -> CreateNoteResponse:
    return await run_idempotent(
        db,
        tenant_id=tenant,
        method=METHOD,
        request=request,
        response_type=CreateNoteResponse,
        work=_create_note(request, delay),
    )


async def _notes(db: Database) -> int:
    async with db.engine.connect() as conn:
        count = await conn.scalar(text("SELECT count(*) FROM notes"))
    assert isinstance(count, int)
    return count


async def test_same_request_id_twice_has_one_effect_and_same_response(db: Database) -> None:
    request = CreateNoteRequest(request_id=str(uuid.uuid4()), title="a", body="b")
    first = await _call(db, request)
    second = await _call(db, request)
    assert first == second and first.note_id
    assert await _notes(db) == 1


async def test_same_request_id_with_other_payload_is_invalid_argument(db: Database) -> None:
    request_id = str(uuid.uuid4())
    await _call(db, CreateNoteRequest(request_id=request_id, title="a"))
    with pytest.raises(InvalidArgument) as caught:
        await _call(db, CreateNoteRequest(request_id=request_id, title="changed"))
    assert [v.field for v in caught.value.violations] == ["request_id"]
    assert await _notes(db) == 1


async def test_concurrent_duplicates_have_one_effect(db: Database) -> None:
    request = CreateNoteRequest(request_id=str(uuid.uuid4()), title="race")
    responses = await asyncio.gather(*(_call(db, request, delay=0.05) for _ in range(20)))
    assert len({r.note_id for r in responses}) == 1
    assert await _notes(db) == 1


async def test_failed_work_stores_nothing_and_a_retry_runs_again(db: Database) -> None:
    request = CreateNoteRequest(request_id=str(uuid.uuid4()), title="x")

    async def failing(uow: UnitOfWork) -> CreateNoteResponse:
        await _create_note(request)(uow)
        raise RuntimeError("downstream failed")

    with pytest.raises(RuntimeError):
        await run_idempotent(
            db, tenant_id="t1", method=METHOD, request=request,
            response_type=CreateNoteResponse, work=failing,
        )  # fmt: skip
    assert await _notes(db) == 0
    assert (await _call(db, request)).title == "x"
    assert await _notes(db) == 1


async def test_request_ids_are_scoped_per_tenant(db: Database) -> None:
    request = CreateNoteRequest(request_id=str(uuid.uuid4()), title="x")
    a = await _call(db, request, tenant="t1")
    b = await _call(db, request, tenant="t2")
    assert a.note_id != b.note_id
    assert await _notes(db) == 2


async def test_request_ids_are_scoped_per_caller(db: Database) -> None:
    # A request id is not a secret: another user of the same tenant replaying it gets their own
    # effect, never the first caller's stored response.
    request = CreateNoteRequest(request_id=str(uuid.uuid4()), title="x")
    responses = []
    for subject in ("alice", "bob", "alice"):
        token = set_current_caller(Caller(subject=subject, tenant_id="t1"))
        try:
            responses.append(await _call(db, request, tenant="t1"))
        finally:
            reset_current_caller(token)
    alice, bob, alice_again = responses
    assert alice == alice_again
    assert bob.note_id != alice.note_id
    assert await _notes(db) == 2
