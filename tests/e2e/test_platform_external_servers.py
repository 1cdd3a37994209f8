# mypy: disable-error-code="import-untyped"
"""DATABASE_URL / NATS_URL point `./dev up` at existing servers: it starts neither PostgreSQL nor
NATS itself, and the services keep their data on the given servers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from suuupra_runtime.infra import EmbeddedNats, EmbeddedPostgres, free_port
from tests.e2e.platform_process import start_platform


async def _databases(dsn: str) -> set[str]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT datname FROM pg_database")
    finally:
        await connection.close()
    return {row["datname"] for row in rows}


def test_external_database_and_broker_are_used_instead_of_embedded_ones(tmp_path: Path) -> None:
    with (
        EmbeddedPostgres(tmp_path / "external-pg", free_port()) as postgres,
        EmbeddedNats(tmp_path / "external-nats", free_port(), free_port()) as nats,
    ):
        platform = start_platform(
            tmp_path / "state",
            extra_args=["--no-demo-data"],
            extra_env={"DATABASE_URL": postgres.url, "NATS_URL": nats.url},
        )
        try:
            names = {c.name() for c in platform.descendants()}
            assert "postgres" not in names, names
            assert "nats-server" not in names, names
            assert "envoy" in names, names
            text = platform.text()
            assert "PostgreSQL: external server from DATABASE_URL" in text
            assert "NATS: external server from NATS_URL" in text
            assert not (tmp_path / "state" / "data" / "postgres").exists()
            assert "identity" in asyncio.run(_databases(postgres.dsn))
        finally:
            assert platform.stop() == 0, platform.text()
        assert postgres.running and nats.running  # stopping the platform left them alone
