# mypy: disable-error-code="import-untyped"
"""`ServiceDefinition.on_drain`: awaited when draining starts, after health turned NOT_SERVING and
before the grace period, while in-flight calls still run; then `on_stop`."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from suuupra.testing.v1 import echo_service_pb2 as pb
from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

from suuupra_runtime.server import RuntimeServer
from suuupra_runtime.testing.echo_service import echo_definition
from suuupra_runtime.testing.harness import test_settings


async def test_on_drain_runs_before_the_grace_period_and_before_on_stop() -> None:
    events: list[str] = []
    server: RuntimeServer | None = None

    async def drain() -> None:
        assert server is not None
        events.append(f"drain serving={server.serving}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            status = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        events.append(f"health={health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)}")

    async def failing_drain() -> None:
        events.append("failing drain")
        raise RuntimeError("a failing hook must not stop the drain")

    async def stop() -> None:
        events.append("stop")

    definition = replace(echo_definition(), on_drain=[drain, failing_drain], on_stop=[stop])
    server = RuntimeServer(definition, replace(test_settings("echo"), grace_seconds=5.0))
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        stub = pb_grpc.EchoServiceStub(channel)
        in_flight = asyncio.ensure_future(stub.Sleep(pb.SleepRequest(milliseconds=300)))
        await asyncio.sleep(0.1)
        await server.stop()
        reply = await in_flight  # the grace period still let the running call finish
        assert reply.slept_milliseconds >= 250
    finally:
        await channel.close()
    assert events == ["drain serving=False", "health=NOT_SERVING", "failing drain", "stop"]
