# mypy: disable-error-code="import-untyped"
"""The runtime's own EchoService (a subprocess, as services run) behind sidecars: the runtime
reads the caller's SPIFFE id from the sidecar's XFCC, and the app binds loopback only."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from suuupra.testing.v1 import echo_service_pb2 as pb
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

from suuupra_runtime.mesh.certs import ensure_dev_certificates
from suuupra_runtime.mesh.envoy import DevAddressing, render_sidecar, to_yaml
from suuupra_runtime.mesh.sidecars import EnvoyProcess
from suuupra_runtime.mesh.topology import ROOT, Topology, spiffe_id
from tests.mesh.mesh_support import build_test_topology


@dataclass
class RuntimeMesh:
    topology: Topology
    app: asyncio.subprocess.Process


async def _wait_serving(port: int, app: asyncio.subprocess.Process) -> None:
    for _ in range(150):
        if app.returncode is not None:
            raise RuntimeError(f"echo service exited with {app.returncode}")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("echo service not serving")


@pytest.fixture(scope="module")
async def runtime_mesh() -> AsyncIterator[RuntimeMesh]:
    topology = build_test_topology()
    bravo = topology.service("bravo")
    with tempfile.TemporaryDirectory(prefix="suuupra-mesh-rt-") as tmp:
        root = Path(tmp)
        ensure_dev_certificates(topology, root / "certs")
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}",
            "SUUUPRA_GRPC_ADDR": f"127.0.0.1:{bravo.app_port}",
            "SUUUPRA_HTTP_ADDR": f"127.0.0.1:{bravo.http_port}",
            "SUUUPRA_LOG_LEVEL": "WARNING",
        }
        log = (root / "echo.log").open("wb")
        app = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "suuupra_runtime.testing.echo_service", env=env, stderr=log
        )
        envoys: list[EnvoyProcess] = []
        try:
            for name in ("alpha", "bravo", "charlie"):
                path = root / f"{name}.yaml"
                config = render_sidecar(topology, name, DevAddressing(), str(root / "certs"))
                path.write_text(to_yaml(config))
                envoys.append(EnvoyProcess(path, log_path=root / f"{name}.log"))
                envoys[-1].start()
            for envoy in envoys:
                await envoy.wait_ready_async()
            await _wait_serving(bravo.app_port, app)
            yield RuntimeMesh(topology, app)
        finally:
            for envoy in envoys:
                envoy.stop()
            if app.returncode is None:
                app.terminate()
                await asyncio.wait_for(app.wait(), 20)
            log.close()


async def test_runtime_sees_the_calling_service_spiffe_id(runtime_mesh: RuntimeMesh) -> None:
    topology = runtime_mesh.topology
    target = f"127.0.0.1:{topology.service('alpha').outbound_port}"
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.EchoServiceStub(channel)
        reply = await stub.Echo(
            pb.EchoRequest(message="svc"), metadata=[("x-request-id", "mesh-req-1")]
        )
        assert reply.caller == spiffe_id(topology, "alpha")
        assert reply.request_id == "mesh-req-1"
        items = [r async for r in stub.StreamEcho(pb.StreamEchoRequest(message="s", count=10))]
        assert [r.index for r in items] == list(range(10))


async def test_runtime_behind_sidecar_enforces_topology(runtime_mesh: RuntimeMesh) -> None:
    target = f"127.0.0.1:{runtime_mesh.topology.service('charlie').outbound_port}"
    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.EchoServiceStub(channel).Echo(pb.EchoRequest(message="x"))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_runtime_app_listens_on_loopback_only(runtime_mesh: RuntimeMesh) -> None:
    bravo = runtime_mesh.topology.service("bravo")
    process = psutil.Process(runtime_mesh.app.pid)
    listening = [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert {c.laddr.port for c in listening} >= {bravo.app_port, bravo.http_port}
    for conn in listening:
        address = ipaddress.ip_address(conn.laddr.ip)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        assert address.is_loopback, conn
