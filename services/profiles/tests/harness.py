# mypy: disable-error-code="import-untyped"
"""A real profiles server for integration/contract tests: fresh database, the NATS of the test
session, the in-process RuntimeServer on loopback, tokens from a TestIssuer carrying the
permissions identity really grants, and helpers to create users as identity's events would."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy import select
from suuupra.profiles.v1 import profiles_service_pb2_grpc as rpc

from services.identity.domain import role_permissions
from services.profiles.server import MIGRATIONS, Wiring, build_wiring
from suuupra_runtime.db import outbox_table
from suuupra_runtime.testing.harness import RunningService, fresh_service_database, running_service
from suuupra_runtime.testing.tokens import TestIssuer, bearer


@dataclass
class Member:
    tenant_id: str
    user_id: str
    metadata: tuple[tuple[str, str], ...]


@dataclass
class ProfilesHarness:
    wiring: Wiring
    service: RunningService
    issuer: TestIssuer
    members: dict[str, Member] = field(default_factory=dict)

    @property
    def profiles(self) -> rpc.ProfileServiceStub:
        return rpc.ProfileServiceStub(self.service.channel)

    @property
    def preferences(self) -> rpc.PreferenceServiceStub:
        return rpc.PreferenceServiceStub(self.service.channel)

    @property
    def follows(self) -> rpc.FollowServiceStub:
        return rpc.FollowServiceStub(self.service.channel)

    def token_for(self, tenant_id: str, user_id: str, role: str = "student") -> str:
        return self.issuer.token(user_id, tenant_id, roles=[role], perms=role_permissions([role]))

    async def add_member(
        self, name: str, tenant_id: str, display_name: str | None = None, role: str = "student"
    ) -> Member:
        """A user as identity's UserCreated would bring it (the consumer's own handler)."""
        user_id = str(uuid.uuid4())
        async with self.wiring.database.unit_of_work(tenant_id=tenant_id) as uow:
            await self.wiring.profiles.user_created(
                uow, tenant_id, user_id, display_name or name.title()
            )
        member = Member(tenant_id, user_id, bearer(self.token_for(tenant_id, user_id, role)))
        self.members[name] = member
        return member

    async def outbox_types(self, tenant_id: str | None = None) -> list[str]:
        """Short names of the events in the outbox (of one tenant when given), oldest first."""
        query = select(outbox_table.c.event_type).order_by(outbox_table.c.seq)
        if tenant_id is not None:
            query = query.where(outbox_table.c.tenant_id == tenant_id)
        async with self.wiring.database.engine.connect() as conn:
            rows = await conn.execute(query)
            return [r.event_type.rsplit(".", 1)[-1] for r in rows]

    async def delete_member(self, name: str) -> None:
        """What identity's UserDeleted does (the consumer's own handler)."""
        member = self.members[name]
        async with self.wiring.database.unit_of_work(tenant_id=member.tenant_id) as uow:
            await self.wiring.profiles.user_deleted(uow, member.tenant_id, member.user_id)


@asynccontextmanager
async def profiles_harness(
    postgres_server_url: str, nats_url: str
) -> AsyncIterator[ProfilesHarness]:
    async with fresh_service_database(postgres_server_url, "profiles", MIGRATIONS) as url:
        wiring = await build_wiring(url, nats_url)
        issuer = TestIssuer()
        async with running_service(wiring.definition, issuer=issuer) as service:
            yield ProfilesHarness(wiring, service, issuer)
