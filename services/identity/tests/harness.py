# mypy: disable-error-code="import-untyped"
"""A real identity server for integration/contract tests: fresh PostgreSQL database, NATS,
in-process RuntimeServer on loopback ports, plus helpers to bootstrap tenants and log in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
from suuupra.identity.v1 import identity_service_pb2 as pb
from suuupra.identity.v1 import identity_service_pb2_grpc as rpc

from services.identity import domain
from services.identity.config import IdentityConfig
from services.identity.server import Wiring, build_wiring, prepare_database
from suuupra_runtime.config import ServerSettings
from suuupra_runtime.server import RuntimeServer
from suuupra_runtime.testing.postgres import create_database, drop_database
from suuupra_runtime.testing.rpc_errors import error_reason, field_violations, rid
from suuupra_runtime.testing.tokens import bearer

PASSWORD = "violet-harbour-lantern-42"


def make_config(**overrides: Any) -> IdentityConfig:
    base = IdentityConfig(
        key_encryption_key=b"k" * 32,
        delivery_key_id="test",
        delivery_key=b"d" * 32,
    )
    return replace(base, **overrides)


def lenient_throttles() -> dict[str, domain.ThrottlePolicy]:
    """For tests that fail many logins on purpose but are not about throttling."""
    return {
        "account_throttle": replace(domain.ACCOUNT_THROTTLE, free_failures=1_000_000),
        "address_throttle": replace(domain.ADDRESS_THROTTLE, free_failures=1_000_000),
    }


@dataclass
class TenantFixture:
    tenant_id: str
    slug: str
    admin_id: str
    admin_email: str
    admin_token: str


@dataclass
class IdentityHarness:
    wiring: Wiring
    server: RuntimeServer
    channel: grpc.aio.Channel
    database_url: str
    platform_token: str = ""
    tenants: dict[str, TenantFixture] = field(default_factory=dict)

    @property
    def users(self) -> rpc.UserServiceStub:
        return rpc.UserServiceStub(self.channel)

    @property
    def auth(self) -> rpc.AuthServiceStub:
        return rpc.AuthServiceStub(self.channel)

    @property
    def tenants_api(self) -> rpc.TenantServiceStub:
        return rpc.TenantServiceStub(self.channel)

    @property
    def roles(self) -> rpc.RoleServiceStub:
        return rpc.RoleServiceStub(self.channel)

    @property
    def api_keys(self) -> rpc.ApiKeyServiceStub:
        return rpc.ApiKeyServiceStub(self.channel)

    @property
    def audit(self) -> rpc.AuditServiceStub:
        return rpc.AuditServiceStub(self.channel)

    async def login(
        self, slug: str, email: str, password: str = PASSWORD, *, address: str | None = None
    ) -> pb.LoginResponse:
        metadata = (("x-forwarded-for", address),) if address else ()
        response: pb.LoginResponse = await self.auth.Login(
            pb.LoginRequest(tenant_slug=slug, email=email, password=password), metadata=metadata
        )
        return response

    async def token(self, slug: str, email: str, password: str = PASSWORD) -> str:
        return (await self.login(slug, email, password)).tokens.access_token

    async def bootstrap(self) -> None:
        await self.wiring.identity.bootstrap_platform(
            "platform", "Platform", "root@platform.test", PASSWORD
        )
        self.platform_token = await self.token("platform", "root@platform.test")

    async def create_tenant(
        self, slug: str, *, settings: Any = None, domains: Sequence[str] = ()
    ) -> TenantFixture:
        email = f"admin@{slug}.test"
        request = pb.CreateTenantRequest(
            request_id=rid(),
            slug=slug,
            display_name=slug.title(),
            admin_email=email,
            admin_display_name=f"{slug} admin",
            admin_password=PASSWORD,
        )
        if settings is not None:
            request.settings.CopyFrom(settings)
        created = await self.tenants_api.CreateTenant(request, metadata=bearer(self.platform_token))
        tenant = TenantFixture(
            tenant_id=created.tenant.tenant_id,
            slug=slug,
            admin_id=created.admin.user_id,
            admin_email=email,
            admin_token=await self.token(slug, email),
        )
        self.tenants[slug] = tenant
        return tenant

    async def create_user(
        self, tenant: TenantFixture, email: str, *, roles: Sequence[str] = ("student",)
    ) -> str:
        created = await self.users.CreateUser(
            pb.CreateUserRequest(
                request_id=rid(),
                email=email,
                display_name=email.split("@", maxsplit=1)[0],
                password=PASSWORD,
                roles=list(roles),
            ),
            metadata=bearer(tenant.admin_token),
        )
        return str(created.user.user_id)


async def start_harness(
    postgres_server_url: str, nats_url: str, config: IdentityConfig | None = None
) -> IdentityHarness:
    database_url = await create_database(postgres_server_url, prefix="identity_test")
    try:
        await prepare_database_at(database_url)
        wiring = await build_wiring(database_url, nats_url, config or make_config())
        server = RuntimeServer(
            wiring.definition,
            ServerSettings(
                service_name="identity",
                grpc_addr="127.0.0.1:0",
                http_addr="127.0.0.1:0",
                drain_delay_seconds=0.0,
                grace_seconds=1.0,
                readiness_interval_seconds=0.1,
                jwt_issuer=(config or make_config()).issuer,
                jwt_audience=(config or make_config()).audience,
            ),
        )
        await server.start()
    except BaseException:
        await drop_database(database_url)
        raise
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    return IdentityHarness(wiring, server, channel, database_url)


async def prepare_database_at(database_url: str) -> None:
    from services.identity.server import MIGRATIONS
    from suuupra_runtime.db import migrate

    await migrate(database_url, MIGRATIONS)


async def stop_harness(h: IdentityHarness) -> None:
    try:
        await h.channel.close()
        await h.server.stop()
    finally:
        await drop_database(h.database_url)


__all__ = [
    "bearer",
    "error_reason",
    "field_violations",
    "prepare_database",
    "rid",
    "start_harness",
    "stop_harness",
]
