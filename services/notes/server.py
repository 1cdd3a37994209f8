"""Wiring only: settings → database → change feed → handlers → servicers → ServiceDefinition."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from services.notes import events
from services.notes.api import SERVICE_NAMES, register_all
from services.notes.feed import ChangeFeed
from services.notes.handlers import Notes
from suuupra_runtime.db import Database, migrations_applied, prepare_service_database
from suuupra_runtime.events import EventConsumer, NatsLink, OutboxRelay, StreamSpec
from suuupra_runtime.read_pool import ReadPool
from suuupra_runtime.server import ServiceDefinition

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = "notes"
STREAM = StreamSpec.for_domain(SERVICE)
COURSES_STREAM = StreamSpec.for_domain("courses")


@dataclass
class Wiring:
    """Everything `build_wiring` assembled; tests use it to reach the parts directly."""

    definition: ServiceDefinition
    notes: Notes
    database: Database
    feed: ChangeFeed
    consumer: EventConsumer
    relay: OutboxRelay


async def prepare_database(server_url: str) -> str:
    """Create the service database if absent and apply migrations (runtime tables + ours)."""
    return await prepare_service_database(server_url, SERVICE, MIGRATIONS)


async def build_wiring(
    database_url: str, nats_url: str, *, consumer_fetch_timeout: float = 1.0
) -> Wiring:
    db = await Database.connect(database_url)
    reads = await ReadPool.connect(database_url)
    feed = ChangeFeed(database_url)
    notes = Notes(db, reads, feed, events.emit)
    relay = OutboxRelay(db, nats_url)
    # Consumed streams are listed too, so notes may start before courses.
    link = NatsLink(nats_url, name=SERVICE, streams=[STREAM, COURSES_STREAM])
    consumer = EventConsumer(
        db,
        nats_url,
        durable=events.COHORT_CONSUMER,
        stream=COURSES_STREAM.name,
        handlers=events.cohort_handlers(notes),
        fetch_timeout=consumer_fetch_timeout,
    )

    async def migrations_ready() -> bool:
        return await migrations_applied(db, MIGRATIONS)

    async def close() -> None:
        await feed.close()
        await relay.close()
        await link.close()
        await reads.close()
        await db.dispose()

    async def consume() -> None:
        # The durable consumer needs the COURSES stream, which the link provisions first.
        while not await link.ready():  # noqa: ASYNC110 (NatsLink offers no event to wait on)
            await asyncio.sleep(0.2)
        await consumer.run()

    definition = ServiceDefinition(
        name=SERVICE,
        register=lambda server: register_all(server, notes),
        service_names=SERVICE_NAMES,
        readiness=[db.ping, migrations_ready, link.ready, feed.ready],
        background=[link.maintain, relay.run, feed.run, consume],
        on_drain=[feed.drain],
        on_stop=[close],
    )
    return Wiring(definition, notes, db, feed, consumer, relay)


async def build() -> ServiceDefinition:
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        raise SystemExit("DATABASE_URL (a PostgreSQL server URL) is required")
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    database_url = await prepare_database(server_url)
    return (await build_wiring(database_url, nats_url)).definition
