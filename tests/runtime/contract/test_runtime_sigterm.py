# mypy: disable-error-code="import-untyped"
"""SIGTERM drain of a real service process: NOT_SERVING first, in-flight calls finish, exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from suuupra.testing.v1 import echo_service_pb2 as pb
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[3]
DRAIN_DELAY = 0.6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def echo_process() -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    grpc_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
        "SUUUPRA_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "SUUUPRA_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "SUUUPRA_DRAIN_DELAY_SECONDS": str(DRAIN_DELAY),
        "SUUUPRA_GRACE_SECONDS": "5",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "suuupra_runtime.testing.echo_service"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield process, grpc_port, http_port
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


async def wait_serving(channel: grpc.aio.Channel, process: subprocess.Popen[bytes]) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode()
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail("echo service never became SERVING")


async def test_sigterm_drains_in_flight_calls_and_exits_zero(
    echo_process: tuple[subprocess.Popen[bytes], int, int],
) -> None:
    process, grpc_port, http_port = echo_process
    target = f"127.0.0.1:{grpc_port}"
    async with grpc.aio.insecure_channel(target) as channel:
        await wait_serving(channel, process)
        stub = pb_grpc.EchoServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        in_flight = asyncio.ensure_future(
            stub.Sleep(pb.SleepRequest(milliseconds=1500), timeout=10)
        )
        await asyncio.sleep(0.2)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)

        # While the listener is still open, health already says NOT_SERVING.
        status = None
        while time.monotonic() - signalled < DRAIN_DELAY:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            status = reply.status
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.02)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        service_reply = await health.Check(
            health_pb2.HealthCheckRequest(service="suuupra.testing.v1.EchoService"), timeout=1
        )
        assert service_reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await asyncio.to_thread(healthz, http_port) == 503
        assert time.monotonic() - signalled < DRAIN_DELAY, "NOT_SERVING came too late"

        # After the drain delay new calls are refused while the old one is still running.
        await asyncio.sleep(DRAIN_DELAY + 0.2 - (time.monotonic() - signalled))
        assert not in_flight.done()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Echo(pb.EchoRequest(message="late"), timeout=1)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        reply = await in_flight
        assert reply.slept_milliseconds >= 1400

    exit_code = await asyncio.to_thread(process.wait, 10)
    _, stderr = process.communicate()
    assert exit_code == 0, stderr.decode()
    assert b"Traceback" not in stderr
