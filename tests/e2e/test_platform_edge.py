# mypy: disable-error-code="import-untyped"
"""Through the edge of a platform started by `./dev up`: health, reflection, gRPC-Web and the
first identity journey (log in as the demo admin, use the token, a forged token is refused)."""

from __future__ import annotations

import http.client
import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from suuupra.identity.v1 import identity_service_pb2 as identity_pb
from suuupra.identity.v1 import identity_service_pb2_grpc as identity_grpc

from tests.e2e.grpc_web import frame, parse_frames
from tests.e2e.platform_process import GRPCURL, RunningPlatform
from tools.demo_data import DEMO_ADMIN, DEMO_STUDENTS, DEMO_TENANT_SLUG

LOGIN = "/suuupra.identity.v1.AuthService/Login"


def _login_request(account: object = DEMO_ADMIN) -> identity_pb.LoginRequest:
    return identity_pb.LoginRequest(
        tenant_slug=DEMO_TENANT_SLUG,
        email=account.email,  # type: ignore[attr-defined]
        password=account.password,  # type: ignore[attr-defined]
    )


async def _services_behind_edge(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    names: list[str] = []
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    async for reply in call:
        names += [s.name for s in reply.list_services_response.service]
    return names


async def test_every_service_is_healthy_through_the_edge(platform: RunningPlatform) -> None:
    async with grpc.aio.insecure_channel(platform.edge) as channel:
        services = await _services_behind_edge(channel)
        ours = [s for s in services if s.startswith("suuupra.")]
        assert ours, f"reflection through the edge lists no Suuupra service: {services}"
        health = health_pb2_grpc.HealthStub(channel)
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert overall.status == health_pb2.HealthCheckResponse.SERVING
        for name in ours:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


def test_grpcurl_lists_services_through_the_edge(platform: RunningPlatform) -> None:
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", platform.edge, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split()
    assert "suuupra.identity.v1.AuthService" in listed
    assert "grpc.health.v1.Health" in listed


def test_grpc_web_login_through_the_edge(platform: RunningPlatform) -> None:
    host, port = platform.edge.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        connection.request(
            "POST",
            LOGIN,
            body=frame(_login_request().SerializeToString()),
            headers={
                "content-type": "application/grpc-web+proto",
                "x-grpc-web": "1",
                "accept": "application/grpc-web+proto",
            },
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 200
    assert response.getheader("content-type", "").startswith("application/grpc-web")
    messages, trailers = parse_frames(body)
    status = response.getheader("grpc-status") or trailers.get("grpc-status")
    assert status == "0", (status, trailers, response.getheaders())
    assert len(messages) == 1
    reply = identity_pb.LoginResponse.FromString(messages[0])
    assert reply.tokens.access_token.count(".") == 2  # a JWT
    assert reply.tokens.refresh_token


async def test_identity_journey_through_the_edge(platform: RunningPlatform) -> None:
    async with grpc.aio.insecure_channel(platform.edge) as channel:
        auth = identity_grpc.AuthServiceStub(channel)
        users = identity_grpc.UserServiceStub(channel)
        login = await auth.Login(_login_request(), timeout=10)
        token = login.tokens.access_token
        me = await users.GetCurrentUser(
            identity_pb.GetCurrentUserRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
        assert me.user.email == DEMO_ADMIN.email
        assert "tenant_admin" in me.user.roles

        # The demo students exist too (loaded by ./dev up), and can log in.
        student = await auth.Login(_login_request(DEMO_STUDENTS[0]), timeout=10)
        assert student.tokens.access_token

        # A forged token never reaches identity: the edge's JWT filter refuses it.
        with pytest.raises(grpc.aio.AioRpcError) as forged:
            await users.GetCurrentUser(
                identity_pb.GetCurrentUserRequest(),
                metadata=(("authorization", "Bearer not.a.jwt"),),
                timeout=10,
            )
        assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "jwt" in (forged.value.details() or "").lower(), forged.value.details()

        # A token signed by someone else (valid shape, unknown key) is refused the same way.
        tampered = token[: token.rindex(".") + 1] + ("A" * 86)
        with pytest.raises(grpc.aio.AioRpcError) as bad_signature:
            await users.GetCurrentUser(
                identity_pb.GetCurrentUserRequest(),
                metadata=(("authorization", f"Bearer {tampered}"),),
                timeout=10,
            )
        assert bad_signature.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # No token at all passes the edge; identity's runtime refuses the RPC.
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await users.GetCurrentUser(identity_pb.GetCurrentUserRequest(), timeout=10)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
