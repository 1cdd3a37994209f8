"""Wiring only: settings → database → handlers → servicers → ServiceDefinition."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from services.profiles import store
from services.profiles.api import SERVICE_NAMES, register_all
from services.profiles.events import IDENTITY_STREAM, identity_consumer
from services.profiles.handlers import Profiles
from suuupra_runtime.db import Database, migrations_applied, prepare_service_database
from suuupra_runtime.events import EventConsumer, NatsLink, OutboxRelay, StreamSpec
from suuupra_runtime.read_pool import ReadPool
from suuupra_runtime.server import ServiceDefinition

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = "profiles"
STREAM = StreamSpec.for_domain(SERVICE)
# We consume identity's stream, so we provision it too (services start in any order).
CONSUMED = StreamSpec.for_domain("identity")
assert CONSUMED.name == IDENTITY_STREAM


@dataclass
class Wiring:
    """Everything `build_wiring` assembled; tests use it to reach the parts directly."""

    definition: ServiceDefinition
    profiles: Profiles
    consumer: EventConsumer
    relay: OutboxRelay
    database: Database
    database_url: str


async def build_wiring(database_url: str, nats_url: str) -> Wiring:
    db = await Database.connect(database_url)
    reads = await ReadPool.connect(database_url)
    profiles = Profiles(db, store.Reads(reads))
    relay = OutboxRelay(db, nats_url)
    link = NatsLink(nats_url, name=SERVICE, streams=[STREAM, CONSUMED])
    consumer = identity_consumer(db, nats_url, profiles)

    async def migrations_ready() -> bool:
        return await migrations_applied(db, MIGRATIONS)

    async def start_consumer() -> None:
        # The durable consumer binds to IDENTITY, which the link creates: wait for it first.
        while not await link.ready():  # noqa: ASYNC110 (the link exposes no event to wait on)
            await asyncio.sleep(0.1)
        await consumer.run()

    async def close() -> None:
        await relay.close()
        await link.close()
        await reads.close()
        await db.dispose()

    definition = ServiceDefinition(
        name=SERVICE,
        register=lambda server: register_all(server, profiles),
        service_names=SERVICE_NAMES,
        readiness=[db.ping, migrations_ready, link.ready],
        background=[link.maintain, relay.run, start_consumer],
        on_stop=[close],
    )
    return Wiring(definition, profiles, consumer, relay, db, database_url)


async def build() -> ServiceDefinition:
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        raise SystemExit("DATABASE_URL (a PostgreSQL server URL) is required")
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    database_url = await prepare_service_database(server_url, SERVICE, MIGRATIONS)
    return (await build_wiring(database_url, nats_url)).definition
