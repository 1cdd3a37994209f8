# mypy: disable-error-code="import-untyped"
"""The shared runtime through real gRPC: an in-process EchoService server on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from jwt.algorithms import OKPAlgorithm
from suuupra.testing.v1 import echo_service_pb2 as pb
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

from suuupra_runtime import grpc_poller
from suuupra_runtime.auth import JwtVerifier
from suuupra_runtime.config import ServerSettings
from suuupra_runtime.grpc_errors import decode_status
from suuupra_runtime.server import RuntimeServer
from suuupra_runtime.testing.echo_service import LEAKY_SECRET, SERVICE_NAME, echo_definition

ISSUER = "test-issuer"
AUDIENCE = "suuupra"
SERVICE_PEER = "spiffe://suuupra.local/ns/suuupra/sa/courses"


class StaticJwks:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        jwk = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
        jwk["kid"] = "k1"
        self.document = {"keys": [jwk]}

    async def fetch(self) -> Mapping[str, Any]:
        return self.document


SIGNING_KEY = Ed25519PrivateKey.generate()


def token(perms: list[str], **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-7",
        "tenant": "t-1",
        "perms": perms,
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return jwt.encode(claims, SIGNING_KEY, algorithm="EdDSA", headers={"kid": "k1"})


def settings(**overrides: Any) -> ServerSettings:
    base: dict[str, Any] = {
        "service_name": "echo",
        "grpc_addr": "127.0.0.1:0",
        "http_addr": "127.0.0.1:0",
        "drain_delay_seconds": 0.0,
        "grace_seconds": 1.0,
        "readiness_interval_seconds": 0.05,
    }
    base.update(overrides)
    return ServerSettings(**base)


class Readiness:
    def __init__(self) -> None:
        self.ready = False

    async def __call__(self) -> bool:
        return self.ready


@pytest.fixture
async def readiness() -> Readiness:
    return Readiness()


async def _start(
    server_settings: ServerSettings, readiness: Readiness | None = None
) -> RuntimeServer:
    definition = echo_definition(readiness=[readiness] if readiness else [])
    definition.jwt_verifier = JwtVerifier(StaticJwks(SIGNING_KEY), ISSUER, AUDIENCE)
    server = RuntimeServer(definition, server_settings)
    await server.start()
    return server


@pytest.fixture
async def server() -> AsyncIterator[RuntimeServer]:
    srv = await _start(settings())
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def channel(server: RuntimeServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        yield ch


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def details_of(err: grpc.aio.AioRpcError) -> tuple[Any, list[Any]]:
    rich = decode_status(err.trailing_metadata())
    assert rich is not None, "status details missing"
    unpacked = []
    for detail in rich.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RequestInfo,
        ):
            if detail.Is(kind.DESCRIPTOR):
                msg = kind()
                detail.Unpack(msg)
                unpacked.append(msg)
    return rich, unpacked


def first(items: list[Any], kind: Any) -> Any:
    found = [i for i in items if isinstance(i, kind)]
    assert found, f"no {kind.__name__} in details"
    return found[0]


async def health_status(ch: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(ch)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    status: int = response.status
    return status


async def test_health_is_not_serving_until_readiness_passes(readiness: Readiness) -> None:
    srv = await _start(settings(), readiness)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as ch:
            await asyncio.sleep(0.2)  # several readiness polls
            for name in ("", SERVICE_NAME):
                assert await health_status(ch, name) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert (await asyncio.to_thread(http_get, srv.http_port, "/healthz"))[0] == 503

            readiness.ready = True
            deadline = time.monotonic() + 3
            while await health_status(ch, SERVICE_NAME) != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, "never became SERVING"
                await asyncio.sleep(0.02)
            assert await health_status(ch) == health_pb2.HealthCheckResponse.SERVING
            assert (await asyncio.to_thread(http_get, srv.http_port, "/healthz"))[0] == 200

            readiness.ready = False  # a dependency goes away later
            deadline = time.monotonic() + 3
            while await health_status(ch) != health_pb2.HealthCheckResponse.NOT_SERVING:
                assert time.monotonic() < deadline, "did not flip back to NOT_SERVING"
                await asyncio.sleep(0.02)
    finally:
        await srv.stop()


async def test_bad_stream_count_is_invalid_argument_with_field_violation(
    channel: grpc.aio.Channel,
) -> None:
    stub = pb_grpc.EchoServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.StreamEcho(pb.StreamEchoRequest(message="x", count=0)):
            pytest.fail("no message may be streamed for an invalid request")
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, items = details_of(err)
    bad = first(items, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["count"]
    info = first(items, error_details_pb2.ErrorInfo)
    assert info.domain == "echo.suuupra.local"


async def test_request_id_round_trip_and_minting(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.EchoServiceStub(channel)
    call = stub.Echo(pb.EchoRequest(message="hi"), metadata=(("x-request-id", "req-123"),))
    response = await call
    assert response.message == "hi"
    assert response.request_id == "req-123"
    # Echoed in the trailers (they ride on the status frame; see interceptors.py).
    assert ("x-request-id", "req-123") in tuple(await call.trailing_metadata())
    assert "x-request-id" not in dict(await call.initial_metadata())

    call = stub.Echo(pb.EchoRequest(message="hi"))
    response = await call
    minted = (await call.trailing_metadata())["x-request-id"]
    assert uuid.UUID(minted).version == 4
    assert response.request_id == minted

    # Junk (log injection attempts) is replaced, not echoed.
    call = stub.Echo(pb.EchoRequest(message="hi"), metadata=(("x-request-id", 'a"\\b c'),))
    response = await call
    assert uuid.UUID(response.request_id).version == 4


async def test_unauthenticated_vs_permission_denied(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.EchoServiceStub(channel)
    request = pb.ProtectedEchoRequest(message="secret stuff")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ProtectedEcho(request)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    bearer = (("authorization", f"Bearer {token(['other.perm'])}"),)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ProtectedEcho(request, metadata=bearer)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    _, items = details_of(caught.value)
    assert first(items, error_details_pb2.ErrorInfo).reason == "MISSING_PERMISSION"

    bearer = (("authorization", f"Bearer {token(['testing.echo.call'])}"),)
    response = await stub.ProtectedEcho(request, metadata=bearer)
    assert (response.message, response.caller) == ("secret stuff", "user-7")

    peer = (("x-forwarded-client-cert", f"Hash=ab;URI={SERVICE_PEER}"),)
    response = await stub.ProtectedEcho(request, metadata=peer)
    assert response.caller == SERVICE_PEER


async def test_bad_token_is_rejected_even_on_public_methods(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.EchoServiceStub(channel)
    for value in ("Bearer not.a.jwt", f"Bearer {token([], exp=int(time.time()) - 60)}", "Basic x"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Echo(pb.EchoRequest(message="hi"), metadata=(("authorization", value),))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, value
        assert value.split(" ")[-1] not in (caught.value.details() or "")
    response = await stub.Echo(
        pb.EchoRequest(message="hi"), metadata=(("authorization", f"Bearer {token([])}"),)
    )
    assert response.caller == "user-7"


async def test_streaming_and_mid_stream_errors(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.EchoServiceStub(channel)
    items = [m async for m in stub.StreamEcho(pb.StreamEchoRequest(message="yo", count=5))]
    assert [(m.index, m.message) for m in items] == [(i, "yo") for i in range(5)]

    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in stub.StreamEcho(pb.StreamEchoRequest(message="!abort", count=3)):
            received.append(message.index)
    assert received == [0]
    assert caught.value.code() == grpc.StatusCode.ABORTED
    _, details = details_of(caught.value)
    assert first(details, error_details_pb2.ErrorInfo).reason == "ECHO_ABORTED"


async def test_a_stream_ends_when_the_caller_s_token_expires(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.EchoServiceStub(channel)
    expiring = token([], exp=int(time.time()) + 2)
    call = stub.StreamEcho(
        pb.StreamEchoRequest(message="!hold", count=1),
        metadata=(("authorization", f"Bearer {expiring}"),),
    )
    assert (await call.read()).index == 0
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(call.read(), timeout=10)
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    _, details = details_of(ended.value)
    assert first(details, error_details_pb2.ErrorInfo).reason == "TOKEN_EXPIRED"
    assert time.monotonic() - started < 4
    # Without a user token nothing expires: the same stream stays open.
    anonymous = stub.StreamEcho(pb.StreamEchoRequest(message="!hold", count=1))
    assert (await anonymous.read()).index == 0
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anonymous.read(), timeout=2.5)
    anonymous.cancel()


async def test_unexpected_exception_is_internal_without_leaks(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.EchoServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Echo(pb.EchoRequest(message="!internal"), metadata=(("x-request-id", "r-9"),))
    err = caught.value
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error (request id r-9)"
    raw = b"".join(v for _, v in err.trailing_metadata() if isinstance(v, bytes))
    assert b"hunter2" not in raw and b"SELECT" not in raw and b"Traceback" not in raw
    assert LEAKY_SECRET not in (err.debug_error_string() or "")
    _, details = details_of(err)
    assert first(details, error_details_pb2.RequestInfo).request_id == "r-9"
    assert ("x-request-id", "r-9") in tuple(err.trailing_metadata())


async def test_create_note_validates_before_the_handler(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.EchoServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateNote(pb.CreateNoteRequest(request_id="nope", title=""))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, details = details_of(caught.value)
    fields = {v.field for v in first(details, error_details_pb2.BadRequest).field_violations}
    assert fields == {"request_id", "title"}


async def test_unknown_method_is_unimplemented(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary("/suuupra.testing.v1.EchoService/Nope")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests() -> AsyncIterator[Any]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for response in stub.ServerReflectionInfo(requests()):
        names |= {s.name for s in response.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


async def test_load_shedding_with_maximum_concurrent_rpcs() -> None:
    srv = await _start(settings(max_concurrent_rpcs=2))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as ch:
            stub = pb_grpc.EchoServiceStub(ch)
            slow = [
                asyncio.ensure_future(stub.Sleep(pb.SleepRequest(milliseconds=800)))
                for _ in range(2)
            ]
            await asyncio.sleep(0.3)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Echo(pb.EchoRequest(message="one too many"), timeout=5)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            for response in await asyncio.gather(*slow):
                assert response.slept_milliseconds >= 700
            # The limit frees up as soon as the slow calls are done.
            deadline = time.monotonic() + 2
            while True:
                try:
                    assert (await stub.Echo(pb.EchoRequest(message="again"))).message == "again"
                    break
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert time.monotonic() < deadline, "capacity never came back"
                    await asyncio.sleep(0.05)
    finally:
        await srv.stop()


async def test_oversize_message_is_rejected_and_server_survives() -> None:
    srv = await _start(settings(max_message_bytes=2048))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as ch:
            stub = pb_grpc.EchoServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Echo(pb.EchoRequest(message="x" * 3000), timeout=5)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await stub.Echo(pb.EchoRequest(message="small"))).message == "small"
    finally:
        await srv.stop()


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_show_red_counters(server: RuntimeServer, channel: grpc.aio.Channel) -> None:
    labels = {"grpc_service": SERVICE_NAME, "grpc_method": "Echo"}
    _, before = await asyncio.to_thread(http_get, server.http_port, "/metrics")
    stub = pb_grpc.EchoServiceStub(channel)
    for _ in range(3):
        await stub.Echo(pb.EchoRequest(message="m"))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Echo(pb.EchoRequest(message="!internal"))
    status, after = await asyncio.to_thread(http_get, server.http_port, "/metrics")
    assert status == 200
    b, a = before.decode(), after.decode()
    assert (
        _sample(a, "grpc_server_handled_total", **labels, grpc_code="OK")
        - _sample(b, "grpc_server_handled_total", **labels, grpc_code="OK")
        == 3
    )
    assert (
        _sample(a, "grpc_server_handled_total", **labels, grpc_code="INTERNAL")
        - _sample(b, "grpc_server_handled_total", **labels, grpc_code="INTERNAL")
        == 1
    )
    assert (
        _sample(a, "grpc_server_handling_seconds_count", **labels)
        - _sample(b, "grpc_server_handling_seconds_count", **labels)
        == 4
    )
    assert _sample(a, "grpc_server_in_flight", **labels) == 0
    assert (await asyncio.to_thread(http_get, server.http_port, "/nope"))[0] == 404


async def test_one_json_log_line_per_rpc_without_secrets(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    from suuupra_runtime.logs import JsonFormatter

    stub = pb_grpc.EchoServiceStub(channel)
    bearer = token(["testing.echo.call"])
    with caplog.at_level("INFO", logger="suuupra.rpc"):
        await stub.ProtectedEcho(
            pb.ProtectedEchoRequest(message="payload-text"),
            metadata=(("authorization", f"Bearer {bearer}"), ("x-request-id", "log-1")),
        )
    records = [r for r in caplog.records if r.name == "suuupra.rpc"]
    assert len(records) == 1
    line = json.loads(JsonFormatter("echo").format(records[0]))
    assert line["method"] == "/suuupra.testing.v1.EchoService/ProtectedEcho"
    assert line["code"] == "OK"
    assert line["request_id"] == "log-1"
    assert (line["caller"], line["tenant"]) == ("user-7", "t-1")
    assert line["duration_ms"] >= 0
    text = json.dumps(line)
    assert bearer not in text and bearer.split(".")[2] not in text
    assert "payload-text" not in text


async def test_a_verified_token_is_honoured_from_cache_only_with_the_bearer_scheme(
    channel: grpc.aio.Channel,
) -> None:
    # The second call takes the interceptor's no-await path (a token verified before); the same
    # token under another scheme, or a peer identity beside it, must still be decided correctly.
    stub = pb_grpc.EchoServiceStub(channel)
    good = token(["testing.echo.call"])
    for scheme in ("Bearer", "bearer"):
        response = await stub.ProtectedEcho(
            pb.ProtectedEchoRequest(message="m"), metadata=(("authorization", f"{scheme} {good}"),)
        )
        assert response.caller == "user-7"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Echo(pb.EchoRequest(message="m"), metadata=(("authorization", f"Basic {good}"),))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    both = (
        ("authorization", f"Bearer {good}"),
        ("x-forwarded-client-cert", f"Hash=ab;URI={SERVICE_PEER}"),
    )
    response = await stub.ProtectedEcho(pb.ProtectedEchoRequest(message="m"), metadata=both)
    assert response.caller == "user-7"  # the user, with the service as the peer


async def test_the_grpc_poller_thread_runs_without_wakeup_preemption() -> None:
    poller = grpc_poller.poller_thread()
    if poller is None or poller.native_id is None:  # grpc.aio starts it with the first server
        srv = await _start(settings())
        await srv.stop()
        poller = grpc_poller.poller_thread()
    assert poller is not None and poller.native_id is not None
    os.sched_setscheduler(poller.native_id, os.SCHED_OTHER, os.sched_param(0))

    off = await _start(settings(batch_grpc_poller=False))
    try:
        assert os.sched_getscheduler(poller.native_id) == os.SCHED_OTHER
    finally:
        await off.stop()
    on = await _start(settings())
    try:
        assert os.sched_getscheduler(poller.native_id) == os.SCHED_BATCH
    finally:
        await on.stop()
