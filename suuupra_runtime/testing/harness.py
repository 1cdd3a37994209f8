# mypy: disable-error-code="import-untyped"
"""Run one service in-process for integration/contract tests: real gRPC server on loopback
ephemeral ports, a fresh PostgreSQL database, an insecure channel to it.

    async with running_service(definition, issuer=issuer) as svc:
        stub = CourseServiceStub(svc.channel)
        ...
    # server stopped (drain 0 s), channel closed

`fresh_service_database(server_url, "courses", MIGRATIONS)` creates a uniquely named database,
migrates it (runtime tables + the service's) and drops it on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from suuupra_runtime.config import ServerSettings
from suuupra_runtime.db import migrate
from suuupra_runtime.server import RuntimeServer, ServiceDefinition
from suuupra_runtime.testing.postgres import create_database, drop_database
from suuupra_runtime.testing.tokens import TestIssuer

__all__ = ["RunningService", "fresh_service_database", "running_service", "test_settings"]


def test_settings(service_name: str, issuer: TestIssuer | None = None) -> ServerSettings:
    """Loopback ephemeral ports, no drain delay, fast readiness polling."""
    settings = ServerSettings(
        service_name=service_name,
        grpc_addr="127.0.0.1:0",
        http_addr="127.0.0.1:0",
        drain_delay_seconds=0.0,
        grace_seconds=1.0,
        readiness_interval_seconds=0.05,
    )
    if issuer is not None:
        settings = replace(settings, jwt_issuer=issuer.issuer, jwt_audience=issuer.audience)
    return settings


test_settings.__test__ = False  # type: ignore[attr-defined]


@dataclass
class RunningService:
    server: RuntimeServer
    channel: grpc.aio.Channel

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.server.http_port}"


@contextlib.asynccontextmanager
async def running_service(
    definition: ServiceDefinition,
    *,
    issuer: TestIssuer | None = None,
    settings: ServerSettings | None = None,
) -> AsyncIterator[RunningService]:
    """Start `definition` (its JWT verifier replaced by `issuer`'s when given) until exit."""
    if issuer is not None:
        definition = replace(definition, jwt_verifier=issuer.verifier())
    server = RuntimeServer(definition, settings or test_settings(definition.name, issuer))
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        yield RunningService(server, channel)
    finally:
        try:
            await channel.close()
        finally:
            await server.stop()


@contextlib.asynccontextmanager
async def fresh_service_database(
    server_url: str, service: str, migrations_dir: Path | None
) -> AsyncIterator[str]:
    """A new migrated database for `service` (`postgresql+asyncpg://` URL); dropped afterwards."""
    url = await create_database(server_url, prefix=f"{service.replace('-', '_')}_test")
    try:
        await migrate(url, migrations_dir)
        yield url
    finally:
        await drop_database(url)
