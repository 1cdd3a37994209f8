# mypy: disable-error-code="import-untyped"
"""Service-to-service calls through real Envoy sidecars with mTLS and topology RBAC."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import ssl
import time
from pathlib import Path

import grpc
import psutil
import pytest
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc
from suuupra.testing.v1 import echo_service_pb2 as pb
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

from suuupra_runtime.infra import envoy_binary
from suuupra_runtime.mesh.certs import create_ca, issue_workload_certificate, load_ca, rotate
from suuupra_runtime.mesh.sidecars import PROXY_NICE, envoy_command
from suuupra_runtime.mesh.topology import spiffe_id
from tests.mesh.conftest import RunningMesh
from tests.mesh.mesh_support import client_tls_context, served_certificate


def outbound(mesh: RunningMesh, service: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port(service, 'outbound')}")


def mtls_channel(mesh: RunningMesh, workload: str, port: int) -> grpc.aio.Channel:
    """A direct mTLS channel to a sidecar inbound, presenting `workload`'s certificate."""
    directory = mesh.cert_dir / workload
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(directory / "ca.crt").read_bytes(),
        private_key=(directory / "tls.key").read_bytes(),
        certificate_chain=(directory / "tls.crt").read_bytes(),
    )
    return grpc.aio.secure_channel(
        f"127.0.0.1:{port}", credentials, options=[("grpc.ssl_target_name_override", "bravo")]
    )


async def test_allowed_caller_reaches_the_app_which_sees_its_spiffe_id(mesh: RunningMesh) -> None:
    async with outbound(mesh, "alpha") as channel:
        stub = pb_grpc.EchoServiceStub(channel)
        response = await stub.Echo(
            pb.EchoRequest(message="hi"), metadata=[("x-forwarded-client-cert", "URI=forged")]
        )
    assert response.message == "hi"
    # The sidecar replaced the forged header with the verified peer certificate's identity.
    assert response.caller == spiffe_id(mesh.topology, "alpha")
    xfcc = mesh.apps["bravo"].seen_metadata[-1]["x-forwarded-client-cert"]
    assert "forged" not in xfcc
    assert f"By={spiffe_id(mesh.topology, 'bravo')}" in xfcc


async def test_server_streaming_through_the_mesh(mesh: RunningMesh) -> None:
    async with outbound(mesh, "alpha") as channel:
        stub = pb_grpc.EchoServiceStub(channel)
        replies = [r async for r in stub.StreamEcho(pb.StreamEchoRequest(message="s", count=25))]
    assert [r.index for r in replies] == list(range(25))


async def test_rpc_not_granted_to_caller_is_permission_denied(mesh: RunningMesh) -> None:
    before = len(mesh.apps["bravo"].seen_metadata)
    async with outbound(mesh, "charlie") as channel:
        stub = pb_grpc.EchoServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Echo(pb.EchoRequest(message="no"))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # The same caller may use the RPC its rule lists.
        replies = [r async for r in stub.StreamEcho(pb.StreamEchoRequest(message="y", count=2))]
    assert len(replies) == 2
    assert len(mesh.apps["bravo"].seen_metadata) == before + 1  # the denied call never arrived


async def test_workload_absent_from_callers_is_denied_but_may_check_health(
    mesh: RunningMesh,
) -> None:
    ca_dir = mesh.cert_dir / "ca"
    # A certificate from the mesh CA for a workload no rule mentions.
    ca = load_ca(mesh.cert_dir)
    cert, key = issue_workload_certificate(
        ca, f"spiffe://suuupra.local/ns/{mesh.topology.namespace}/sa/delta", ("bravo",)
    )
    delta = mesh.cert_dir / "delta"
    delta.mkdir(exist_ok=True)
    (delta / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (delta / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (delta / "ca.crt").write_bytes((ca_dir / "ca.crt").read_bytes())
    async with mtls_channel(mesh, "delta", mesh.port("bravo", "inbound")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.EchoServiceStub(channel).Echo(pb.EchoRequest(message="x"))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # Reflection is only for the edge.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
            )(b"")
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The edge's own identity is allowed what its rule lists.
    async with mtls_channel(mesh, "edge", mesh.port("bravo", "inbound")) as channel:
        response = await pb_grpc.EchoServiceStub(channel).Echo(pb.EchoRequest(message="e"))
    assert response.caller == spiffe_id(mesh.topology, "edge")


async def test_plaintext_to_the_inbound_port_gets_no_grpc_response(mesh: RunningMesh) -> None:
    port = mesh.port("bravo", "inbound")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.EchoServiceStub(channel).Echo(pb.EchoRequest(message="x"), timeout=3)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # At the byte level: an HTTP/2 preface is answered by no HTTP/2 frame at all.
    reply = await asyncio.to_thread(_send_plaintext_h2_preface, port)
    assert not reply.startswith(b"\x00\x00"), reply  # not a SETTINGS frame


def _send_plaintext_h2_preface(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        try:
            return sock.recv(64)
        except (ConnectionResetError, TimeoutError):
            return b""


def _handshake_and_request(port: int, context: ssl.SSLContext) -> bytes:
    """Complete a TLS handshake and read the server's first bytes (TLS 1.3 rejects late)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        return tls.recv(64)


def test_client_certificate_from_another_ca_is_refused(mesh: RunningMesh, tmp_path: Path) -> None:
    port = mesh.port("bravo", "inbound")
    ca_file = mesh.cert_dir / "ca" / "ca.crt"
    # Control: the mesh's own certificate gets an HTTP/2 SETTINGS frame back.
    ok = _handshake_and_request(port, client_tls_context(mesh.cert_dir, "alpha", ca_file))
    assert ok[3:4] == b"\x04"  # frame type SETTINGS
    # Same SPIFFE id, but signed by a foreign CA.
    foreign = create_ca("foreign CA")
    cert, key = issue_workload_certificate(foreign, spiffe_id(mesh.topology, "alpha"))
    directory = tmp_path / "foreign"
    directory.mkdir()
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for context in (
        client_tls_context(directory.parent, "foreign", ca_file),
        client_tls_context(mesh.cert_dir, None, ca_file),  # no client certificate at all
    ):
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            reply = _handshake_and_request(port, context)
            # Some OpenSSL builds report the alert as a clean EOF instead of an exception.
            if reply == b"":
                raise ssl.SSLError("connection closed by server")


def test_sidecar_admin_and_app_ports_listen_on_loopback_only(mesh: RunningMesh) -> None:
    ports = {
        mesh.port("alpha", "app"),
        mesh.port("bravo", "app"),
        mesh.port("bravo", "http"),
        *(mesh.port(s, "admin") for s in mesh.topology.services),
        *(mesh.port(s, "outbound") for s in mesh.topology.services),
        mesh.topology.edge.admin_port,
    }
    listening = {
        c.laddr.port: c.laddr.ip
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port in ports
    }
    assert set(listening) == ports
    not_loopback = {port: ip for port, ip in listening.items() if not _is_loopback(ip)}
    assert not_loopback == {}


def test_every_envoy_thread_runs_below_the_apps_priority(mesh: RunningMesh) -> None:
    # The sidecars batch their work instead of preempting the app for each HTTP/2 frame
    # (PROXY_NICE; bench/mesh_overhead.py measures the difference). Workers are threads started
    # after exec, so each must have inherited the niceness.
    assert PROXY_NICE > 0
    for name, envoy in mesh.envoys.items():
        assert envoy.pid is not None
        process = psutil.Process(envoy.pid)
        assert process.exe() == str(envoy_binary()), name
        threads = [psutil.Process(t.id) for t in process.threads()]
        assert len(threads) > 1, name
        assert {t.nice() for t in threads} == {PROXY_NICE + os.nice(0)}, name


def test_envoy_command_line() -> None:
    command = envoy_command(Path("/x.yaml"), base_id=7, cpus=frozenset({1, 0}))
    binary = str(envoy_binary())
    at = command.index(binary)
    assert command[:at] == ["taskset", "-c", "0,1", "nice", "-n", str(PROXY_NICE)]
    assert command[at + 1 : at + 3] == ["-c", "/x.yaml"]
    assert "--disable-hot-restart" in command
    assert envoy_command(Path("/x.yaml"), nice=0)[0] == binary


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


async def test_rotated_certificates_are_picked_up_without_restart(mesh: RunningMesh) -> None:
    bravo_port = mesh.port("bravo", "inbound")
    ca_file = mesh.cert_dir / "ca" / "ca.crt"
    context = client_tls_context(mesh.cert_dir, "alpha", ca_file)
    old_server = served_certificate(bravo_port, context)
    pids = {name: envoy.pid for name, envoy in mesh.envoys.items()}

    new_server = rotate(mesh.cert_dir, "bravo")
    new_client = rotate(mesh.cert_dir, "alpha")
    assert new_server.serial_number != old_server.serial_number

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        served = served_certificate(
            bravo_port, client_tls_context(mesh.cert_dir, "alpha", ca_file)
        ).serial_number
        loaded = _loaded_serials(mesh, "alpha")
        if served == new_server.serial_number and f"{new_client.serial_number:x}" in loaded:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail(f"rotation not picked up: served={served:x} alpha loaded={loaded}")

    async with outbound(mesh, "alpha") as channel:
        response = await pb_grpc.EchoServiceStub(channel).Echo(pb.EchoRequest(message="after"))
    assert response.message == "after"
    assert response.caller == spiffe_id(mesh.topology, "alpha")
    assert {name: envoy.pid for name, envoy in mesh.envoys.items()} == pids
    assert all(envoy.is_ready() for envoy in mesh.envoys.values())


def _loaded_serials(mesh: RunningMesh, envoy: str) -> str:
    """Envoy's admin /certs (serials in hex) as text, for a containment check."""
    return json.dumps(json.loads(mesh.envoys[envoy].admin_get("/certs")))
