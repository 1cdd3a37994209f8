# mypy: disable-error-code="import-untyped"
"""clients.py against real servers: propagation across two hops, typed errors, retries."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from suuupra.testing.v1 import echo_service_pb2 as pb
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

from suuupra_runtime.auth import JwtVerifier, current_caller
from suuupra_runtime.clients import call_options, channel_for, domain_errors, raise_from_rpc_error
from suuupra_runtime.config import ServerSettings
from suuupra_runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from suuupra_runtime.request_context import current_request_id, remaining_seconds
from suuupra_runtime.server import RuntimeServer, ServiceDefinition
from suuupra_runtime.testing.echo_service import SERVICE_NAME, EchoService
from suuupra_runtime.tracing import current_trace_id

KEY = Ed25519PrivateKey.generate()
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class Jwks:
    async def fetch(self) -> dict[str, Any]:
        jwk = json.loads(OKPAlgorithm.to_jwk(KEY.public_key()))
        jwk["kid"] = "k1"
        return {"keys": [jwk]}


def user_token() -> str:
    now = int(time.time())
    claims = {
        "iss": "iss",
        "aud": "suuupra",
        "sub": "user-7",
        "perms": [],
        "iat": now,
        "exp": now + 300,
    }
    return jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": "k1"})


class RelayEcho(EchoService):
    """Echo "relay:<target>" calls <target>'s Echo; "inspect" reports what the server saw."""

    async def Echo(self, request: pb.EchoRequest, context: Any) -> pb.EchoResponse:
        if request.message.startswith("relay:"):
            stub = pb_grpc.EchoServiceStub(channel_for(request.message.removeprefix("relay:")))
            with domain_errors():
                inner: pb.EchoResponse = await stub.Echo(
                    pb.EchoRequest(message="inspect"), **call_options()
                )
            return inner
        if request.message == "inspect":
            seen = {"trace_id": current_trace_id(), "remaining": remaining_seconds()}
            return pb.EchoResponse(
                message=json.dumps(seen),
                request_id=current_request_id() or "",
                caller=current_caller().principal,
            )
        return await super().Echo(request, context)

    async def Sleep(self, request: pb.SleepRequest, context: Any) -> pb.SleepResponse:
        if request.milliseconds == 7:  # relay a long sleep to the other server
            target = dict(context.invocation_metadata())["x-target"]
            stub = pb_grpc.EchoServiceStub(channel_for(target))
            reply: pb.SleepResponse = await stub.Sleep(
                pb.SleepRequest(milliseconds=5000), **call_options()
            )
            return reply
        return await super().Sleep(request, context)


async def _start() -> RuntimeServer:
    servicer = RelayEcho()
    definition = ServiceDefinition(
        name="relay",
        register=lambda s: pb_grpc.add_EchoServiceServicer_to_server(servicer, s),
        service_names=[SERVICE_NAME],
        jwt_verifier=JwtVerifier(Jwks(), "iss", "suuupra"),
    )
    server = RuntimeServer(
        definition,
        ServerSettings(
            service_name="relay",
            grpc_addr="127.0.0.1:0",
            http_addr=None,
            drain_delay_seconds=0,
            grace_seconds=1,
        ),
    )
    await server.start()
    return server


@pytest.fixture
async def two_servers() -> AsyncIterator[tuple[RuntimeServer, RuntimeServer]]:
    front, back = await _start(), await _start()
    try:
        yield front, back
    finally:
        await front.stop()
        await back.stop()


async def test_request_id_token_trace_and_deadline_propagate(two_servers: Any) -> None:
    front, back = two_servers
    async with grpc.aio.insecure_channel(f"127.0.0.1:{front.grpc_port}") as ch:
        stub = pb_grpc.EchoServiceStub(ch)
        reply = await stub.Echo(
            pb.EchoRequest(message=f"relay:127.0.0.1:{back.grpc_port}"),
            metadata=(
                ("x-request-id", "chain-1"),
                ("authorization", f"Bearer {user_token()}"),
                ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),
            ),
            timeout=4,
        )
    assert reply.request_id == "chain-1"
    assert reply.caller == "user-7"
    seen = json.loads(reply.message)
    assert seen["trace_id"] == TRACE_ID
    # Shortened, not reset: below the caller's 4 s, give or take grpc's clock slop (its
    # time_remaining() compares a converted monotonic deadline with the wall clock; one run
    # read 4.009 s).
    assert 2.5 < seen["remaining"] < 4.1


async def test_downstream_deadline_is_the_callers(two_servers: Any) -> None:
    front, back = two_servers
    async with grpc.aio.insecure_channel(f"127.0.0.1:{front.grpc_port}") as ch:
        stub = pb_grpc.EchoServiceStub(ch)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Sleep(
                pb.SleepRequest(milliseconds=7),
                metadata=(("x-target", f"127.0.0.1:{back.grpc_port}"),),
                timeout=0.5,
            )
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2  # the 5 s downstream sleep was cut short


async def test_errors_come_back_as_domain_errors(two_servers: Any) -> None:
    _, back = two_servers
    stub = pb_grpc.EchoServiceStub(channel_for(f"127.0.0.1:{back.grpc_port}"))
    with pytest.raises(InvalidArgument) as invalid, domain_errors():
        async for _ in stub.StreamEcho(pb.StreamEchoRequest(count=0), **call_options()):
            pass
    assert [v.field for v in invalid.value.violations] == ["count"]
    assert invalid.value.domain == "relay.suuupra.local"

    note = pb.CreateNoteRequest(request_id=str(uuid.uuid4()), title="t")
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await stub.CreateNote(note, **call_options())
    with pytest.raises(FailedPrecondition) as failed:
        raise_from_rpc_error(raw.value)
    assert failed.value.reason == "NO_DATABASE"

    front_stub = pb_grpc.EchoServiceStub(channel_for(f"127.0.0.1:{two_servers[0].grpc_port}"))
    with pytest.raises(grpc.aio.AioRpcError) as internal:
        await front_stub.Echo(pb.EchoRequest(message="!internal"))
    with pytest.raises(grpc.aio.AioRpcError):
        raise_from_rpc_error(internal.value)  # INTERNAL has no domain class: re-raised as is


class Flaky(EchoService):
    """Bare servicer that answers UNAVAILABLE a set number of times per method."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {"Echo": 0, "CreateNote": 0}

    async def Echo(self, request: pb.EchoRequest, context: Any) -> pb.EchoResponse:
        self.attempts["Echo"] += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        raise AssertionError("unreachable")

    async def CreateNote(self, request: pb.CreateNoteRequest, context: Any) -> Any:
        self.attempts["CreateNote"] += 1
        if self.attempts["CreateNote"] < 3:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        return pb.CreateNoteResponse(note_id="n1", title=request.title)

    async def Sleep(self, request: pb.SleepRequest, context: Any) -> pb.SleepResponse:
        await asyncio.sleep(request.milliseconds / 1000)
        return pb.SleepResponse(slept_milliseconds=request.milliseconds)


async def test_retries_only_idempotent_methods_on_unavailable() -> None:
    flaky = Flaky()
    server = grpc.aio.server()
    pb_grpc.add_EchoServiceServicer_to_server(flaky, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        target = f"127.0.0.1:{port}"
        stub = pb_grpc.EchoServiceStub(channel_for(target))
        reply = await stub.CreateNote(pb.CreateNoteRequest(title="t"), **call_options())
        assert reply.note_id == "n1"
        assert flaky.attempts["CreateNote"] == 3

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Echo(pb.EchoRequest(message="x"), **call_options())
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert flaky.attempts["Echo"] == 1
        with pytest.raises(Unavailable):
            raise_from_rpc_error(caught.value)

        # Load shedding arrives without details and still maps by its code.
        with pytest.raises(ResourceExhausted):
            raise_from_rpc_error(
                grpc.aio.AioRpcError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    "Concurrent RPC limit exceeded!",
                )
            )
    finally:
        await server.stop(0)
