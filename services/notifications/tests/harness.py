# mypy: disable-error-code="import-untyped"
"""The notifications service in-process for integration/contract tests: fresh database, the given
NATS, an SMTP sink for mail, a controllable clock, and helpers to publish other services' events
and wait for outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

import grpc
import nats
from google.protobuf.message import Message
from suuupra.notifications.v1 import notification_pb2 as res
from suuupra.notifications.v1 import notifications_service_pb2 as pb
from suuupra.notifications.v1 import notifications_service_pb2_grpc as rpc

from services.identity.domain import role_permissions
from services.notifications.config import NotificationsConfig
from services.notifications.domain import Channel, RetryPolicy
from services.notifications.providers import Provider
from services.notifications.providers.email import SmtpEmail
from services.notifications.server import MIGRATIONS, Wiring, build_wiring
from suuupra_runtime.events import StreamSpec, ensure_streams
from suuupra_runtime.events.headers import outbound_headers
from suuupra_runtime.infra.smtp_sink import SmtpSink
from suuupra_runtime.testing.harness import RunningService, fresh_service_database, running_service
from suuupra_runtime.testing.tokens import TestIssuer, bearer

DELIVERY_KEY = b"d" * 32  # identity's test harness seals with this key (make_config)
DELIVERY_KEY_ID = "test"
T = TypeVar("T")


class FakeClock:
    """Now, as the service sees it; tests move it forward."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


def test_config(**overrides: object) -> NotificationsConfig:
    base = NotificationsConfig(
        delivery_key_id=DELIVERY_KEY_ID,
        delivery_key=DELIVERY_KEY,
        signing_key=b"s" * 32,
        retry=RetryPolicy(max_attempts=3, base_delay_seconds=0.05, max_delay_seconds=0.2),
        poll_interval_seconds=0.05,
        app_url="https://app.test",
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


test_config.__test__ = False  # type: ignore[attr-defined]


def producer_headers(event: Message, event_id: str, tenant_id: str) -> dict[str, str]:
    """The headers a producer's outbox relay puts on `event`."""
    return dict(
        outbound_headers(
            event_type=event.DESCRIPTOR.full_name,
            event_id=event_id,
            tenant_id=tenant_id,
            occurred_at=dt.datetime.now(dt.UTC),
            key=None,
            inherited={},
        )
    )


@dataclass
class Harness:
    wiring: Wiring
    service: RunningService
    sink: SmtpSink
    issuer: TestIssuer
    nats_url: str
    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def inbox(self) -> rpc.InboxServiceStub:
        return rpc.InboxServiceStub(self.service.channel)

    @property
    def preferences(self) -> rpc.PreferenceServiceStub:
        return rpc.PreferenceServiceStub(self.service.channel)

    @property
    def templates(self) -> rpc.TemplateServiceStub:
        return rpc.TemplateServiceStub(self.service.channel)

    @property
    def sends(self) -> rpc.SendServiceStub:
        return rpc.SendServiceStub(self.service.channel)

    def token(self, user_id: str, role: str = "student", tenant_id: str | None = None) -> str:
        return self.issuer.token(
            user_id,
            tenant_id or self.tenant_id,
            roles=[role],
            perms=role_permissions([role]),
        )

    def auth(self, user_id: str, role: str = "student") -> tuple[tuple[str, str], ...]:
        return bearer(self.token(user_id, role))

    async def publish(self, event: Message, *, tenant_id: str | None = None) -> str:
        """Publishes `event` the way a producer's outbox relay does; returns its event id."""
        event_id = str(uuid.uuid4())
        await self.publish_as(event, event_id, tenant_id=tenant_id)
        return event_id

    async def publish_as(
        self, event: Message, event_id: str, *, tenant_id: str | None = None
    ) -> None:
        name = event.DESCRIPTOR.full_name
        headers = producer_headers(event, event_id, tenant_id or self.tenant_id)
        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            await ensure_streams(js, [StreamSpec.for_domain(name.split(".")[1])])
            await js.publish(name, event.SerializeToString(), headers=headers)
        finally:
            await nc.close()

    async def user(self, email: str = "", display_name: str = "Test User") -> str:
        """A user known from identity's UserCreated event."""
        from suuupra.identity.v1 import identity_events_pb2 as identity

        user_id = str(uuid.uuid4())
        await self.publish(
            identity.UserCreated(
                tenant_id=self.tenant_id,
                user_id=user_id,
                email=email or f"{user_id[:8]}@example.test",
                display_name=display_name,
            )
        )
        await self.until(lambda: self._recipient_known(user_id), what=f"recipient {user_id}")
        return user_id

    async def count(self, sql: str, *args: object) -> int:
        """`SELECT count(*) ...` on the service's database."""
        row = await self.wiring.database.fetchrow(sql, *args)
        assert row is not None
        return int(row[0])

    async def _recipient_known(self, user_id: str) -> bool:
        row = await self.wiring.database.fetchrow(
            "SELECT 1 FROM recipients WHERE tenant_id = $1 AND user_id = $2",
            self.tenant_id,
            user_id,
        )
        return row is not None

    async def until(
        self, check: Callable[[], Awaitable[T | None]], *, what: str, within: float = 10.0
    ) -> T:
        """Polls `check` until it returns something truthy (the worker and consumers run in
        the background)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            result = await check()
            if result:
                return result
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def deliveries(self, user_id: str, admin_id: str | None = None) -> list[res.Delivery]:
        admin = admin_id or str(uuid.uuid4())
        reply = await self.sends.ListDeliveries(
            pb.ListDeliveriesRequest(user_id=user_id, page_size=500),
            metadata=self.auth(admin, "tenant_admin"),
        )
        return list(reply.deliveries)

    async def delivery(
        self, user_id: str, channel: int, *, final: bool = True, kind: str = ""
    ) -> res.Delivery:
        """The user's delivery on `channel`, once it has left the queue (unless `final`)."""

        async def check() -> res.Delivery | None:
            for d in await self.deliveries(user_id):
                if (
                    d.channel == channel
                    and (not kind or d.kind == kind)
                    and (not final or d.status != res.DELIVERY_STATUS_QUEUED)
                ):
                    return d
            return None

        return await self.until(check, what=f"delivery on channel {channel} for {user_id}")

    async def mails_to(self, address: str, count: int = 1, within: float = 10.0) -> list[str]:
        """Bodies of the mails to `address`, once at least `count` arrived."""
        await asyncio.to_thread(
            self.sink.wait_for, lambda _: len(self.sink.to(address)) >= count, within
        )
        return [str(m.get_content()) for m in self.sink.to(address)]


@contextlib.asynccontextmanager
async def notifications_harness(
    postgres_server_url: str,
    nats_url: str,
    *,
    clock: FakeClock | None = None,
    providers: Mapping[Channel, Provider] | None = None,
    config: NotificationsConfig | None = None,
) -> AsyncIterator[Harness]:
    issuer = TestIssuer()
    config = config or test_config()
    with SmtpSink() as sink:
        chosen: dict[Channel, Provider] = {
            Channel.EMAIL: SmtpEmail("127.0.0.1", sink.port, config.mail_from)
        }
        chosen.update(providers or {})
        async with fresh_service_database(
            postgres_server_url, "notifications", MIGRATIONS
        ) as database_url:
            wiring = await build_wiring(
                database_url,
                nats_url,
                config,
                providers=chosen,
                clock=clock if clock is not None else _now,
                consumer_backoff=(0.1, 0.2),
                fetch_timeout=0.2,
            )
            async with running_service(wiring.definition, issuer=issuer) as service:
                await _wait_serving(service)
                yield Harness(wiring, service, sink, issuer, nats_url)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _wait_serving(service: RunningService, within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not service.server.serving:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("notifications never became ready")
        await asyncio.sleep(0.02)


__all__ = [
    "FakeClock",
    "Harness",
    "bearer",
    "grpc",
    "notifications_harness",
    "producer_headers",
    "test_config",
]
