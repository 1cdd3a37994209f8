# mypy: disable-error-code="import-untyped"
"""Helpers for the mesh suite: free port blocks, a test topology, echo apps, gRPC-Web framing."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import ssl
import struct
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from suuupra.testing.v1 import echo_service_pb2 as pb
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

from suuupra_runtime.mesh.topology import PORT_BLOCK_SIZE, Topology, parse_topology

ECHO_SERVICE = "suuupra.testing.v1.EchoService"


def free_port_block(taken: set[int], size: int = PORT_BLOCK_SIZE) -> int:
    """`size` consecutive ports that are free now, below the ephemeral range (no client races)."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(20000, 32000 - size)
        ports = range(base, base + size)
        if taken.intersection(ports):
            continue
        if all(_bindable(p) for p in ports):
            taken.update(ports)
            return base
    raise RuntimeError("no free port block")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def build_test_topology(*, rps: int = 5, burst: int = 40, max_bytes: int = 16384) -> Topology:
    """alpha → bravo (all EchoService), charlie → bravo (StreamEcho only), edge → bravo."""
    taken: set[int] = set()
    blocks = {name: free_port_block(taken) for name in ("edge", "alpha", "bravo", "charlie")}
    infra = free_port_block(taken, 3)
    return parse_topology(
        {
            "trust_domain": "suuupra.local",
            "namespace": "meshtest",
            "infrastructure": {
                "postgres_port": infra,
                "nats_port": infra + 1,
                "nats_monitor_port": infra + 2,
            },
            "edge": {
                "port_block": blocks["edge"],
                "rate_limit": {"requests_per_second": rps, "burst": burst},
                "max_request_bytes": max_bytes,
                "cors_allowed_origins": ["http://localhost:5173"],
                "debug_service": "bravo",
                "route_timeout_seconds": 2,
                "streaming_rpcs": [f"/{ECHO_SERVICE}/StreamEcho"],
            },
            "services": {
                "alpha": {
                    "port_block": blocks["alpha"],
                    "grpc_packages": ["suuupra.alpha.v1"],
                    "upstreams": ["bravo"],
                },
                "bravo": {
                    "port_block": blocks["bravo"],
                    "grpc_packages": ["suuupra.testing.v1"],
                    "http_paths": ["/.well-known/"],
                    "callers": [
                        {"from": "alpha", "rpcs": [f"/{ECHO_SERVICE}/"]},
                        {"from": "charlie", "rpcs": [f"/{ECHO_SERVICE}/StreamEcho"]},
                        {"from": "edge", "rpcs": [f"/{ECHO_SERVICE}/"]},
                    ],
                },
                "charlie": {
                    "port_block": blocks["charlie"],
                    "grpc_packages": ["suuupra.charlie.v1"],
                    "upstreams": ["bravo"],
                },
            },
        }
    )


# -- the app behind a sidecar -------------------------------------------------------------------


def xfcc_uri(metadata: Mapping[str, str]) -> str:
    """The `URI=` element of the (last) XFCC entry the sidecar set, or ''."""
    header = metadata.get("x-forwarded-client-cert", "")
    last = header.split(",")[-1]
    for part in last.split(";"):
        key, _, value = part.partition("=")
        if key.strip() == "URI":
            return value.strip('"')
    return ""


@dataclass
class EchoApp(pb_grpc.EchoServiceServicer):
    """A bare grpc.aio EchoService reporting the caller's SPIFFE id from XFCC as `caller`."""

    seen_metadata: list[dict[str, str]] = field(default_factory=list)

    def _record(self, context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
        metadata = {k: str(v) for k, v in context.invocation_metadata() or ()}
        self.seen_metadata.append(metadata)
        return metadata

    async def Echo(
        self, request: pb.EchoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EchoResponse:
        metadata = self._record(context)
        return pb.EchoResponse(
            message=request.message,
            request_id=metadata.get("x-request-id", ""),
            caller=xfcc_uri(metadata),
        )

    async def ProtectedEcho(
        self, request: pb.ProtectedEchoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ProtectedEchoResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the mesh test app")
        raise AssertionError("abort raises")

    async def CreateNote(
        self, request: pb.CreateNoteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateNoteResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the mesh test app")
        raise AssertionError("abort raises")

    async def Sleep(
        self, request: pb.SleepRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SleepResponse:
        await asyncio.sleep(request.milliseconds / 1000)
        return pb.SleepResponse(slept_milliseconds=request.milliseconds)

    async def StreamEcho(
        self, request: pb.StreamEchoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        self._record(context)
        for i in range(request.count):
            if request.message == "slow" and i:
                await asyncio.sleep(0.5)
            yield pb.StreamEchoResponse(index=i, message=request.message)


async def start_echo_server(port: int) -> tuple[grpc.aio.Server, EchoApp]:
    app = EchoApp()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 1 << 20)])
    pb_grpc.add_EchoServiceServicer_to_server(app, server)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set(ECHO_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (ECHO_SERVICE, reflection.SERVICE_NAME, health.SERVICE_NAME), server
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, app


class JwksServer:
    """Serves a JWKS document at /.well-known/jwks.json on 127.0.0.1 (HTTP/1.1)."""

    def __init__(self, port: int, jwks: dict[str, Any]) -> None:
        body = json.dumps(jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- TLS probes ----------------------------------------------------------------------------------


def client_tls_context(cert_dir: Path, workload: str | None, ca_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(ca_file))
    if workload is not None:
        context.load_cert_chain(
            str(cert_dir / workload / "tls.crt"), str(cert_dir / workload / "tls.key")
        )
    context.set_alpn_protocols(["h2"])
    return context


def served_certificate(port: int, context: ssl.SSLContext) -> x509.Certificate:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


# -- gRPC-Web framing ---------------------------------------------------------------------------


def grpc_web_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


@dataclass
class GrpcWebResponse:
    status: int
    headers: dict[str, str]
    messages: list[bytes]
    trailers: dict[str, str]

    @property
    def grpc_status(self) -> int:
        value = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        assert value is not None, f"no grpc-status in {self.headers} / {self.trailers}"
        return int(value)


def parse_grpc_web(status: int, headers: dict[str, str], body: bytes) -> GrpcWebResponse:
    messages: list[bytes] = []
    trailers: dict[str, str] = {}
    for flag, payload in _frames(body):
        if flag & 0x80:
            for line in payload.decode().split("\r\n"):
                if line:
                    key, _, value = line.partition(":")
                    trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(payload)
    return GrpcWebResponse(status, headers, messages, trailers)


def _frames(body: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset < len(body):
        flag = body[offset]
        (length,) = struct.unpack(">I", body[offset + 1 : offset + 5])
        yield flag, body[offset + 5 : offset + 5 + length]
        offset += 5 + length
