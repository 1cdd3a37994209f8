# mypy: disable-error-code="import-untyped"
"""`suuupra.testing.v1.EchoService` on the shared runtime, for the platform's tests and benchmarks.

Run it like any service (settings from `SUUUPRA_*`, see `config.py`):

    SUUUPRA_GRPC_ADDR=127.0.0.1:17900 SUUUPRA_HTTP_ADDR=127.0.0.1:17904 \\
        python -m suuupra_runtime.testing.echo_service

`SUUUPRA_JWKS_URL` (optional) enables bearer-token verification. In-process:
`echo_definition()` returns the `ServiceDefinition` (pass `readiness=` to gate health).

Behaviour:
* `Echo` returns the message, the request id the server saw and the caller's principal;
* `ProtectedEcho` needs the `testing.echo.call` permission (declared in the contract);
* `StreamEcho` streams `count` numbered copies;
* `Sleep` sleeps (cancelled with the call) and reports how long;
* `CreateNote` is refused with FAILED_PRECONDITION / `NOT_IMPLEMENTED` for now.

Test hooks (the service is never deployed as part of the product): `Echo` with message
`!internal` raises an unexpected exception whose text contains a fake secret (it must never reach
the client); `StreamEcho` with message `!abort` fails with ABORTED after the first item.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from suuupra.testing.v1 import echo_service_pb2 as pb
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

from suuupra_runtime.auth import current_caller
from suuupra_runtime.errors import Aborted, FailedPrecondition
from suuupra_runtime.request_context import current_request_id
from suuupra_runtime.server import ServiceDefinition, run

SERVICE_NAME = "suuupra.testing.v1.EchoService"
LEAKY_SECRET = "password=hunter2 SELECT * FROM secrets"


class EchoService(pb_grpc.EchoServiceServicer):
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

    async def Sleep(  # noqa: N802 (gRPC method names)
        self, request: pb.SleepRequest, context: Any
    ) -> pb.SleepResponse:
        started = time.monotonic()
        await asyncio.sleep(request.milliseconds / 1000)
        return pb.SleepResponse(slept_milliseconds=int((time.monotonic() - started) * 1000))

    async def CreateNote(  # noqa: N802 (gRPC method names)
        self, request: pb.CreateNoteRequest, context: Any
    ) -> pb.CreateNoteResponse:
        # TODO(runtime): store notes through DATA's `run_idempotent` once it is merged.
        raise FailedPrecondition("notes are not implemented yet", reason="NOT_IMPLEMENTED")


def echo_definition(
    readiness: Sequence[Callable[[], Awaitable[bool]]] = (),
) -> ServiceDefinition:
    servicer = EchoService()
    return ServiceDefinition(
        name="echo",
        register=lambda server: pb_grpc.add_EchoServiceServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME],
        readiness=readiness,
    )


async def _build() -> ServiceDefinition:
    return echo_definition()


if __name__ == "__main__":
    # Tests and benchmarks start this often; per-RPC log lines only when asked for.
    os.environ.setdefault("SUUUPRA_LOG_LEVEL", "WARNING")
    run(_build)
