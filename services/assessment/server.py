"""Wiring only: settings → database → handlers → servicers → ServiceDefinition."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from services.assessment import events
from services.assessment.api import SERVICE_NAMES, register_all
from services.assessment.files import FileStore, UnavailableFileStore
from services.assessment.files_client import MeshFileStore
from services.assessment.handlers import Assessment
from suuupra_runtime.clients import close_channels
from suuupra_runtime.db import Database, migrations_applied, prepare_service_database
from suuupra_runtime.events import EventConsumer, NatsLink, OutboxRelay, StreamSpec
from suuupra_runtime.server import ServiceDefinition

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = "assessment"
STREAM = StreamSpec.for_domain(SERVICE)
COURSES_STREAM = StreamSpec.for_domain("courses")
ENROLLMENT_CONSUMER = "assessment-courses"
DUE_SOON_INTERVAL_SECONDS = 60.0
log = logging.getLogger(__name__)


@dataclass
class Wiring:
    """Everything `build_wiring` assembled; tests use it to reach the parts directly."""

    definition: ServiceDefinition
    assessment: Assessment
    database: Database
    database_url: str
    relay: OutboxRelay
    enrollments: EventConsumer


async def prepare_database(server_url: str) -> str:
    """Create the service database if absent and apply migrations (runtime tables + ours)."""
    return await prepare_service_database(server_url, SERVICE, MIGRATIONS)


async def build_wiring(
    database_url: str, nats_url: str, *, files: FileStore | None = None
) -> Wiring:
    db = await Database.connect(database_url)
    assessment = Assessment(db, files or UnavailableFileStore(), events.emit)
    relay = OutboxRelay(db, nats_url)
    link = NatsLink(nats_url, name=SERVICE, streams=[STREAM, COURSES_STREAM])
    enrollments = EventConsumer(
        db,
        nats_url,
        durable=ENROLLMENT_CONSUMER,
        stream=COURSES_STREAM.name,
        handlers=events.ENROLLMENT_HANDLERS,
        filter_subjects=[
            f"suuupra.courses.v1.{name}"
            for name in (
                "CourseCreated",
                "BatchOpened",
                "EnrollmentCreated",
                "EnrollmentPromoted",
                "EnrollmentDropped",
            )
        ],
    )

    async def migrations_ready() -> bool:
        return await migrations_applied(db, MIGRATIONS)

    async def consume_enrollments() -> None:
        # The consumer binds to the COURSES stream, which the link provisions once NATS is up.
        while not await link.ready():  # noqa: ASYNC110 (the link offers no event to wait on)
            await asyncio.sleep(0.05)
        await enrollments.run()

    async def remind_due_soon() -> None:
        # Reminders are not urgent to the second; a sweep a minute is plenty.
        while True:
            try:
                await assessment.announce_due_soon()
            except Exception:
                log.exception("due-soon sweep failed; retrying next interval")
            await asyncio.sleep(DUE_SOON_INTERVAL_SECONDS)

    async def close() -> None:
        await close_channels()
        await relay.close()
        await link.close()
        await db.dispose()

    definition = ServiceDefinition(
        name=SERVICE,
        register=lambda server: register_all(server, assessment),
        service_names=SERVICE_NAMES,
        readiness=[db.ping, migrations_ready, link.ready],
        background=[link.maintain, relay.run, consume_enrollments, remind_due_soon],
        on_stop=[close],
    )
    return Wiring(definition, assessment, db, database_url, relay, enrollments)


def files_from_env() -> FileStore:
    """The files service through this pod's sidecar (`SUUUPRA_OUTBOUND_ADDR`, which the dev
    runner and k8s set); without one, file submissions are refused."""
    outbound = os.environ.get("SUUUPRA_OUTBOUND_ADDR")
    return MeshFileStore(outbound) if outbound else UnavailableFileStore()


async def build() -> ServiceDefinition:
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        raise SystemExit("DATABASE_URL (a PostgreSQL server URL) is required")
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    database_url = await prepare_database(server_url)
    return (await build_wiring(database_url, nats_url, files=files_from_env())).definition
