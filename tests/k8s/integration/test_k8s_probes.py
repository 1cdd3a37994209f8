# mypy: disable-error-code="import-untyped"
"""The app's probes as the kubelet runs them (exec inside the app container) against a real gRPC
health service: readiness needs SERVING, liveness only an answer, and both fail when nothing
answers. The commands are taken from the generated Deployment itself."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from tools.k8s.layout import APP_GRPC_PORT

ROOT = Path(__file__).resolve().parents[3]


def probe_commands() -> dict[str, list[str]]:
    deployment = yaml.safe_load((ROOT / "k8s/services/identity/deployment.yaml").read_text())
    (app,) = deployment["spec"]["template"]["spec"]["containers"]
    return {
        probe: app[probe]["exec"]["command"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    }


async def run_probes(port: int) -> dict[str, int]:
    """All three probes at once (as the kubelet may), each as its own process."""
    commands = probe_commands()
    codes = await asyncio.gather(*(run_probe(c, port) for c in commands.values()))
    return dict(zip(commands, codes, strict=True))


async def run_probe(command: list[str], port: int) -> int:
    assert command[0] == "python"
    argv = [sys.executable, *(arg.replace(f":{APP_GRPC_PORT}", f":{port}") for arg in command[1:])]
    process = await asyncio.create_subprocess_exec(*argv)
    try:
        return await asyncio.wait_for(process.wait(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[int, health_aio.HealthServicer]]:
    server = grpc.aio.server()
    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port, servicer
    finally:
        await server.stop(None)


async def test_probes_target_the_app_on_loopback() -> None:
    commands = probe_commands()
    assert all(f"127.0.0.1:{APP_GRPC_PORT}" in " ".join(c) for c in commands.values())


async def test_serving_app_is_ready_and_alive(
    health_server: tuple[int, health_aio.HealthServicer],
) -> None:
    port, servicer = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    results = await run_probes(port)
    assert results == {"startupProbe": 0, "readinessProbe": 0, "livenessProbe": 0}


async def test_not_serving_app_is_unready_but_not_restarted(
    health_server: tuple[int, health_aio.HealthServicer],
) -> None:
    port, servicer = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    results = await run_probes(port)
    assert results == {"startupProbe": 0, "readinessProbe": 1, "livenessProbe": 0}


async def test_app_that_does_not_answer_fails_every_probe() -> None:
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        dead_port = reserved.getsockname()[1]
        results = await run_probes(dead_port)
    assert results == {"startupProbe": 1, "readinessProbe": 1, "livenessProbe": 1}
