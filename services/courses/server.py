"""Wiring only: settings → database → handlers → servicers → ServiceDefinition."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from services.courses.api import SERVICE_NAMES, register_all
from services.courses.events import IDENTITY_STREAM, emit, identity_consumer
from services.courses.handlers import Courses
from suuupra_runtime.db import Database, migrations_applied, prepare_service_database
from suuupra_runtime.events import EventConsumer, NatsLink, OutboxRelay, StreamSpec
from suuupra_runtime.read_pool import ReadPool
from suuupra_runtime.server import ServiceDefinition

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = "courses"
STREAM = StreamSpec.for_domain(SERVICE)


@dataclass
class Wiring:
    """Everything `build_wiring` assembled; tests use it to reach the parts directly."""

    definition: ServiceDefinition
    courses: Courses
    database: Database
    database_url: str
    relay: OutboxRelay
    consumer: EventConsumer


async def prepare_database(server_url: str) -> str:
    """Create the service database if absent and apply migrations (runtime tables + ours)."""
    return await prepare_service_database(server_url, SERVICE, MIGRATIONS)


async def build_wiring(database_url: str, nats_url: str) -> Wiring:
    # Enrollment bursts hold a connection each while they queue on a batch's row lock.
    db = await Database.connect(database_url, pool_size=10, max_overflow=20)
    reads = await ReadPool.connect(database_url, max_size=10)
    courses = Courses(db, emit, reads=reads)
    relay = OutboxRelay(db, nats_url)
    # Our stream and identity's (consumed): whoever starts first creates it.
    link = NatsLink(nats_url, name=SERVICE, streams=[STREAM, IDENTITY_STREAM])
    consumer = identity_consumer(db, nats_url, courses)

    async def migrations_ready() -> bool:
        return await migrations_applied(db, MIGRATIONS)

    async def close() -> None:
        await relay.close()
        await link.close()
        await reads.close()
        await db.dispose()

    definition = ServiceDefinition(
        name=SERVICE,
        register=lambda server: register_all(server, courses),
        service_names=SERVICE_NAMES,
        readiness=[db.ping, migrations_ready, link.ready],
        background=[link.maintain, relay.run, consumer.run],
        on_stop=[close],
    )
    return Wiring(definition, courses, db, database_url, relay, consumer)


async def build() -> ServiceDefinition:
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        raise SystemExit("DATABASE_URL (a PostgreSQL server URL) is required")
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    database_url = await prepare_database(server_url)
    return (await build_wiring(database_url, nats_url)).definition
