"""Wiring only: settings → database → handlers, worker, consumers → ServiceDefinition."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.notifications.api import SERVICE_NAMES, register_all
from services.notifications.compose import Composer
from services.notifications.config import NotificationsConfig
from services.notifications.domain import Channel
from services.notifications.events import (
    InboundEvents,
    OutcomeEvents,
    build_consumers,
    consumed_streams,
)
from services.notifications.handlers import Clock, Notifications, utcnow
from services.notifications.live import InboxHub
from services.notifications.providers import Provider
from services.notifications.providers.email import SmtpEmail
from services.notifications.providers.push import FcmPush
from services.notifications.providers.sms import TwilioSms
from services.notifications.sealing import TokenOpener
from services.notifications.unsubscribe import PREFIX, unsubscribe_route
from services.notifications.worker import DeliveryWorker
from suuupra_runtime.db import Database, migrations_applied, prepare_service_database
from suuupra_runtime.events import EventConsumer, NatsLink, OutboxRelay, StreamSpec
from suuupra_runtime.server import ServiceDefinition

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = "notifications"
STREAM = StreamSpec.for_domain(SERVICE)


@dataclass
class Wiring:
    """Everything `build_wiring` assembled; tests reach the parts through it."""

    definition: ServiceDefinition
    notifications: Notifications
    worker: DeliveryWorker
    consumers: list[EventConsumer]
    hub: InboxHub
    database: Database
    providers: Mapping[Channel, Provider] = field(default_factory=dict)


async def prepare_database(server_url: str) -> str:
    """Create the service database if absent and apply migrations (runtime tables + ours)."""
    return await prepare_service_database(server_url, SERVICE, MIGRATIONS)


def default_providers(config: NotificationsConfig) -> dict[Channel, Provider]:
    providers: dict[Channel, Provider] = {
        Channel.EMAIL: SmtpEmail(
            config.smtp_host,
            config.smtp_port,
            config.mail_from,
            security=config.smtp_security,
            username=config.smtp_username,
            password=config.smtp_password,
            ca_file=config.smtp_ca_file,
        )
    }
    if config.sms_api_url:
        providers[Channel.SMS] = TwilioSms(
            config.sms_api_url, config.sms_account_sid, config.sms_auth_token, config.sms_from
        )
    if config.push_api_url:
        providers[Channel.PUSH] = FcmPush(
            config.push_api_url, config.push_project, config.push_access_token
        )
    return providers


async def build_wiring(
    database_url: str,
    nats_url: str,
    config: NotificationsConfig | None = None,
    *,
    providers: Mapping[Channel, Provider] | None = None,
    clock: Clock = utcnow,
    durable_prefix: str = SERVICE,
    consumer_backoff: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0),
    fetch_timeout: float = 1.0,
) -> Wiring:
    config = config or NotificationsConfig.from_env()
    db = await Database.connect(database_url)
    # no_echo: the live hub hands its own items to this process's streams at commit; what it
    # publishes is for other replicas only, so the server need not send it back.
    link = NatsLink(nats_url, name=SERVICE, streams=[STREAM, *consumed_streams()], no_echo=True)
    hub = InboxHub(link)
    composer = Composer(
        TokenOpener(config.delivery_key_id, config.delivery_key),
        app_url=config.app_url,
        public_url=config.public_url,
        signing_key=config.signing_key,
    )
    notifications = Notifications(db, composer, hub, clock=clock)
    chosen = dict(providers) if providers is not None else default_providers(config)
    worker = DeliveryWorker(db, notifications, chosen, config, outcomes=OutcomeEvents())
    notifications.wake_worker = worker.wake
    consumers = build_consumers(
        db,
        nats_url,
        InboundEvents(notifications),
        durable_prefix=durable_prefix,
        backoff=consumer_backoff,
        fetch_timeout=fetch_timeout,
    )
    relay = OutboxRelay(db, nats_url)

    def after_link(consumer: EventConsumer) -> Callable[[], Awaitable[None]]:
        # Consumers bind to streams the link provisions: start them once it has.
        async def run() -> None:
            while not await link.ready():  # noqa: ASYNC110 (NatsLink exposes no event)
                await asyncio.sleep(0.05)
            await consumer.run()

        return run

    async def migrations_ready() -> bool:
        return await migrations_applied(db, MIGRATIONS)

    async def close() -> None:
        for provider in chosen.values():
            closer = getattr(provider, "close", None)
            if closer is not None:
                await closer()
        await relay.close()
        await link.close()
        await db.dispose()

    definition = ServiceDefinition(
        name=SERVICE,
        register=lambda server: register_all(server, notifications, hub, config.keepalive_seconds),
        service_names=SERVICE_NAMES,
        readiness=[db.ping, migrations_ready, link.ready, hub.ready],
        background=[
            link.maintain,
            hub.run,
            relay.run,
            worker.run,
            *(after_link(c) for c in consumers),
        ],
        on_stop=[close],
        http_prefix_routes={PREFIX: unsubscribe_route(notifications)},
    )
    return Wiring(definition, notifications, worker, consumers, hub, db, chosen)


async def build() -> ServiceDefinition:
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        raise SystemExit("DATABASE_URL (a PostgreSQL server URL) is required")
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    database_url = await prepare_database(server_url)
    return (await build_wiring(database_url, nats_url)).definition
