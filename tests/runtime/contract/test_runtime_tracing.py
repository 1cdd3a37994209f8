# mypy: disable-error-code="import-untyped"
"""With an exporter configured, each RPC records a SERVER span in the caller's trace."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from suuupra.testing.v1 import echo_service_pb2 as pb
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[3]
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_echo(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "suuupra_runtime.testing.echo_service"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_server_span_joins_the_callers_trace() -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}",
        "SUUUPRA_GRPC_ADDR": f"127.0.0.1:{port}",
        "SUUUPRA_HTTP_ADDR": "off",
        "SUUUPRA_DRAIN_DELAY_SECONDS": "0",
        "OTEL_TRACES_EXPORTER": "console",
    }
    env.pop("DATABASE_URL", None)
    process = start_echo(env)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.EchoServiceStub(channel)
            deadline = time.monotonic() + 20
            while True:
                try:
                    await stub.Echo(
                        pb.EchoRequest(message="traced"),
                        metadata=(("traceparent", f"00-{TRACE_ID}-b7ad6b7169203331-01"),),
                        timeout=1,
                    )
                    break
                except grpc.aio.AioRpcError:
                    assert time.monotonic() < deadline, "echo service did not start"
                    await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            await asyncio.to_thread(process.communicate)
    output = stderr.decode()
    assert process.returncode == 0, output
    assert f'"trace_id": "0x{TRACE_ID}"' in output, output[-2000:]
    assert '"name": "/suuupra.testing.v1.EchoService/Echo"' in output
    assert '"kind": "SpanKind.SERVER"' in output
    assert '"parent_id": "0xb7ad6b7169203331"' in output
