"""Wiring only: settings → database → storage → handlers → servicers → ServiceDefinition."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from services.files import events
from services.files.api import SERVICE_NAMES, register_all
from services.files.config import FilesConfig
from services.files.handlers import Files
from services.files.http_links import download_route
from services.files.scanning import Scanner
from services.files.staging import Staging
from services.files.storage import LocalDiskStore, ObjectStore, S3Store
from suuupra_runtime.db import Database, migrations_applied, prepare_service_database
from suuupra_runtime.events import NatsLink, OutboxRelay, StreamSpec
from suuupra_runtime.server import ServiceDefinition

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = "files"
STREAM = StreamSpec.for_domain(SERVICE)


@dataclass
class Wiring:
    """Everything `build_wiring` assembled; tests reach the parts through it."""

    definition: ServiceDefinition
    files: Files
    database: Database
    objects: ObjectStore
    config: FilesConfig


async def prepare_database(server_url: str) -> str:
    """Create the service database if absent and apply migrations (runtime tables + ours)."""
    return await prepare_service_database(server_url, SERVICE, MIGRATIONS)


def object_store(config: FilesConfig) -> ObjectStore:
    if config.s3 is not None:
        return S3Store(config.s3)
    return LocalDiskStore(config.data_dir / "objects")


async def build_wiring(
    database_url: str,
    nats_url: str,
    config: FilesConfig | None = None,
    *,
    objects: ObjectStore | None = None,
    scanner: Scanner | None = None,
) -> Wiring:
    config = config or FilesConfig.from_env()
    objects = objects or object_store(config)
    if isinstance(objects, S3Store):
        await objects.ensure_bucket()
    db = await Database.connect(database_url)
    staging = Staging(config.data_dir / "staging")
    files = Files(db, config, objects, staging, events.emit, scanner=scanner)
    relay = OutboxRelay(db, nats_url)
    link = NatsLink(nats_url, name=SERVICE, streams=[STREAM])

    async def migrations_ready() -> bool:
        return await migrations_applied(db, MIGRATIONS)

    async def close() -> None:
        await relay.close()
        await link.close()
        await db.dispose()

    prefix, handler = download_route(files)
    definition = ServiceDefinition(
        name=SERVICE,
        register=lambda server: register_all(server, files),
        service_names=SERVICE_NAMES,
        readiness=[db.ping, migrations_ready, link.ready],
        background=[link.maintain, relay.run, files.purge_forever],
        on_stop=[close],
        http_prefix_routes={prefix: handler},
    )
    return Wiring(definition, files, db, objects, config)


async def build() -> ServiceDefinition:
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        raise SystemExit("DATABASE_URL (a PostgreSQL server URL) is required")
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    database_url = await prepare_database(server_url)
    return (await build_wiring(database_url, nats_url)).definition
