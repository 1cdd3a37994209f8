# mypy: disable-error-code="import-untyped"
"""`suuupra.testing.v1.EchoService` on the shared runtime, for the platform's tests and benchmarks.

Run it like any service (settings from `SUUUPRA_*`, see `config.py`):

    SUUUPRA_GRPC_ADDR=127.0.0.1:17900 SUUUPRA_HTTP_ADDR=127.0.0.1:17904 \\
        python -m suuupra_runtime.testing.echo_service

`SUUUPRA_JWKS_URL` (optional) enables bearer-token verification. `DATABASE_URL` (optional)
gives it a database (`echo`, created and migrated at start; health waits for it) so `CreateNote`
works. In-process: `echo_definition(db=..., readiness=...)` returns the `ServiceDefinition`.

Behaviour:
* `Echo` returns the message, the request id the server saw and the caller's principal;
* `ProtectedEcho` needs the `testing.echo.call` permission (declared in the contract);
* `StreamEcho` streams `count` numbered copies;
* `Sleep` sleeps (cancelled with the call) and reports how long;
* `CreateNote` stores a note through the idempotency store (`run_idempotent`): a retry with the
  same `request_id` returns the first note, the same id with another payload is INVALID_ARGUMENT;
  without a database it is refused with FAILED_PRECONDITION / `NO_DATABASE`.

Test hooks (the service is never deployed as part of the product): `Echo` with message
`!internal` raises an unexpected exception whose text contains a fake secret (it must never reach
the client); `StreamEcho` with message `!abort` fails with ABORTED after the first item.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import text
from suuupra.testing.v1 import echo_service_pb2 as pb
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

from suuupra_runtime.auth import current_caller
from suuupra_runtime.db import Database, UnitOfWork, ensure_database, migrate
from suuupra_runtime.errors import Aborted, FailedPrecondition
from suuupra_runtime.idempotency import run_idempotent
from suuupra_runtime.request_context import current_request_id
from suuupra_runtime.server import ServiceDefinition, run

SERVICE_NAME = "suuupra.testing.v1.EchoService"
CREATE_NOTE = f"/{SERVICE_NAME}/CreateNote"
MIGRATIONS_DIR = Path(__file__).with_name("echo_migrations")
LEAKY_SECRET = "password=hunter2 SELECT * FROM secrets"


class EchoService(pb_grpc.EchoServiceServicer):
    def __init__(self, db: Database | None = None) -> None:
        self._db = db

    async def Echo(  # noqa: N802 (gRPC method names)
        self, request: pb.EchoRequest, context: Any
    ) -> pb.EchoResponse:
        if request.message == "!internal":
            raise RuntimeError(LEAKY_SECRET)
        return pb.EchoResponse(
            message=request.message,
            request_id=current_request_id() or "",
            caller=current_caller().principal,
        )

    async def ProtectedEcho(  # noqa: N802 (gRPC method names)
        self, request: pb.ProtectedEchoRequest, context: Any
    ) -> pb.ProtectedEchoResponse:
        return pb.ProtectedEchoResponse(message=request.message, caller=current_caller().principal)

    async def StreamEcho(  # noqa: N802 (gRPC method names)
        self, request: pb.StreamEchoRequest, context: Any
    ) -> AsyncIterator[pb.StreamEchoResponse]:
        for index in range(request.count):
            if request.message == "!abort" and index == 1:
                raise Aborted("stream aborted on request", reason="ECHO_ABORTED")
            yield pb.StreamEchoResponse(index=index, message=request.message)
        if request.message == "!hold":
            await asyncio.Event().wait()  # a live stream: open until the call ends

    async def Sleep(  # noqa: N802 (gRPC method names)
        self, request: pb.SleepRequest, context: Any
    ) -> pb.SleepResponse:
        started = time.monotonic()
        await asyncio.sleep(request.milliseconds / 1000)
        return pb.SleepResponse(slept_milliseconds=int((time.monotonic() - started) * 1000))

    async def CreateNote(  # noqa: N802 (gRPC method names)
        self, request: pb.CreateNoteRequest, context: Any
    ) -> pb.CreateNoteResponse:
        if self._db is None:
            raise FailedPrecondition("this echo server has no database", reason="NO_DATABASE")
        tenant_id = current_caller().tenant_id

        async def work(uow: UnitOfWork) -> pb.CreateNoteResponse:
            note_id = str(uuid.uuid4())
            await uow.session.execute(
                text(
                    "INSERT INTO notes (id, tenant_id, title, body) "
                    "VALUES (:id, :tenant, :title, :body)"
                ),
                {
                    "id": note_id,
                    "tenant": tenant_id or "",
                    "title": request.title,
                    "body": request.body,
                },
            )
            return pb.CreateNoteResponse(note_id=note_id, title=request.title)

        return await run_idempotent(
            self._db,
            tenant_id=tenant_id,
            method=CREATE_NOTE,
            request=request,
            response_type=pb.CreateNoteResponse,
            work=work,
        )


def echo_definition(
    readiness: Sequence[Callable[[], Awaitable[bool]]] = (),
    *,
    db: Database | None = None,
) -> ServiceDefinition:
    servicer = EchoService(db)
    checks = list(readiness)
    on_stop: list[Callable[[], Awaitable[None]]] = []
    if db is not None:
        checks.append(db.ping)
        on_stop.append(db.dispose)
    return ServiceDefinition(
        name="echo",
        register=lambda server: pb_grpc.add_EchoServiceServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME],
        readiness=checks,
        on_stop=on_stop,
    )


async def open_echo_database(server_url: str) -> Database:
    """Create (if absent) and migrate the `echo` database on `server_url`, then connect."""
    url = await ensure_database(server_url, "echo")
    await migrate(url, MIGRATIONS_DIR)
    return await Database.connect(url, pool_size=5)


async def _build() -> ServiceDefinition:
    server_url = os.environ.get("DATABASE_URL")
    db = await open_echo_database(server_url) if server_url else None
    return echo_definition(db=db)


if __name__ == "__main__":
    # Tests and benchmarks start this often; per-RPC log lines only when asked for.
    os.environ.setdefault("SUUUPRA_LOG_LEVEL", "WARNING")
    run(_build)
