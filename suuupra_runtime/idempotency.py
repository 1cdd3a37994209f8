"""Idempotent mutating RPCs keyed by the client-minted `request_id` (DESIGN.md §3).

Public API::

    response = await run_idempotent(
        db, tenant_id=caller.tenant_id, method="/suuupra.notes.v1.NoteService/CreateNote",
        request=request, response_type=CreateNoteResponse,
        work=lambda uow: create_note(uow, request),      # async (UnitOfWork) -> response
    )

- First call with a `request_id`: `work` runs in a unit of work; the response is stored in
  `idempotency_keys` in the *same* transaction, so the effect and the remembered response commit
  (or roll back) together. A failing `work` stores nothing: a retry runs it again.
- Same `request_id` and the same payload again (also concurrently): no second effect; the stored
  first response is returned.
- Same `request_id` with a different payload: `InvalidArgument` on field `request_id`.
- Empty `request_id`: the contract did not require one, so `work` runs without de-duplication.

Keys are scoped by (tenant, method, caller, request_id); tenant is '' when the call has none. The
caller (the user subject, else the calling service's SPIFFE id, else '' for anonymous calls) is
part of the key because a request id is not a secret: another member of the tenant replaying one
must neither receive this caller's stored response nor be told the id is taken. It is stored in
the `method` column as `<method>#<caller>`, so the table keeps its primary key. The payload
fingerprint is SHA-256 of the request's deterministic serialisation with `request_id` cleared.

Concurrency: the key row is inserted *first* (`INSERT ... ON CONFLICT DO NOTHING`). PostgreSQL
makes a concurrent duplicate's insert wait for the first transaction; if that commits, the
duplicate sees the conflict and reads the committed response; if it rolls back, the duplicate's
insert succeeds and it does the work itself. Exactly one transaction performs the effect.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import and_, select, update
from sqlalchemy.dialects.postgresql import insert

from suuupra_runtime.auth import current_caller
from suuupra_runtime.db import Database, UnitOfWork, idempotency_keys_table
from suuupra_runtime.errors import FieldViolation, InvalidArgument

__all__ = ["payload_fingerprint", "run_idempotent"]

R = TypeVar("R", bound=Message)

REQUEST_ID_FIELD = "request_id"


def payload_fingerprint(request: Message) -> bytes:
    """SHA-256 of `request` without its `request_id`, stable across processes."""
    body = type(request)()
    body.CopyFrom(request)
    body.ClearField(REQUEST_ID_FIELD)
    return hashlib.sha256(body.SerializeToString(deterministic=True)).digest()


async def run_idempotent(
    db: Database,
    *,
    tenant_id: str | None,
    method: str,
    request: Message,
    response_type: type[R],
    work: Callable[[UnitOfWork], Awaitable[R]],
) -> R:
    request_id: str = getattr(request, REQUEST_ID_FIELD)
    if not request_id:
        async with db.unit_of_work(tenant_id=tenant_id) as uow:
            return await work(uow)

    table = idempotency_keys_table
    tenant = tenant_id or ""
    method = f"{method}#{current_caller().principal}"
    fingerprint = payload_fingerprint(request)
    key = and_(
        table.c.tenant_id == tenant, table.c.method == method, table.c.request_id == request_id
    )
    async with db.unit_of_work(tenant_id=tenant_id) as uow:
        claimed = await uow.session.scalar(
            insert(table)
            .values(
                tenant_id=tenant,
                method=method,
                request_id=request_id,
                payload_sha256=fingerprint,
            )
            .on_conflict_do_nothing()
            .returning(table.c.request_id)
        )
        if claimed is not None:
            response = await work(uow)
            await uow.session.execute(
                update(table).where(key).values(response=response.SerializeToString())
            )
            return response
        stored = (
            await uow.session.execute(select(table.c.payload_sha256, table.c.response).where(key))
        ).one()
    if bytes(stored.payload_sha256) != fingerprint:
        raise InvalidArgument(
            [
                FieldViolation(
                    REQUEST_ID_FIELD,
                    "was already used for a different request; use a new request_id",
                )
            ],
            reason="REQUEST_ID_REUSED",
        )
    return response_type.FromString(stored.response)
