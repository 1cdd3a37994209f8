# mypy: disable-error-code="import-untyped,no-any-return"
"""A real notes server for integration/contract tests: a fresh migrated database, a fresh NATS,
the service in-process on loopback (`running_service`), access tokens from a `TestIssuer` with
the permissions identity really grants, and helpers to publish courses' enrollment events."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.courses.v1 import courses_events_pb2 as courses_ev
from suuupra.courses.v1 import enrollment_enums_pb2 as enrollment
from suuupra.notes.v1 import notes_service_pb2 as pb
from suuupra.notes.v1 import notes_service_pb2_grpc as rpc

from services.identity.domain import role_permissions
from services.notes.server import COURSES_STREAM, MIGRATIONS, Wiring, build_wiring
from suuupra_runtime.events import provision_streams
from suuupra_runtime.events.headers import MSG_ID, outbound_headers
from suuupra_runtime.testing.harness import RunningService, fresh_service_database, running_service
from suuupra_runtime.testing.polling import eventually
from suuupra_runtime.testing.rpc_errors import rid
from suuupra_runtime.testing.tokens import TestIssuer, bearer

Metadata = tuple[tuple[str, str], ...]


@dataclass
class User:
    user_id: str
    tenant_id: str
    metadata: Metadata


@dataclass
class NotesHarness:
    wiring: Wiring
    service: RunningService
    issuer: TestIssuer
    nats_url: str
    database_url: str
    users: dict[str, User] = field(default_factory=dict)

    @property
    def stub(self) -> rpc.NoteServiceStub:
        return rpc.NoteServiceStub(self.service.channel)

    def user(
        self, name: str, tenant_id: str = "tenant-a", roles: tuple[str, ...] = ("student",)
    ) -> User:
        """A user of `tenant_id` with a token carrying what identity grants `roles`."""
        key = f"{tenant_id}/{name}"
        if key not in self.users:
            user_id = str(uuid.uuid4())
            token = self.issuer.token(
                user_id, tenant_id, roles=roles, perms=role_permissions(roles)
            )
            self.users[key] = User(user_id, tenant_id, bearer(token))
        return self.users[key]

    async def create(
        self, who: User, title: str = "Graph notes", body: str = "", **kw: object
    ) -> pb.CreateNoteResponse:
        return await self.stub.CreateNote(
            pb.CreateNoteRequest(request_id=rid(), title=title, body=body, **kw),  # type: ignore[arg-type]
            metadata=who.metadata,
            timeout=10,
        )

    async def share(
        self,
        owner: User,
        note_id: str,
        *,
        user: User | None = None,
        batch_id: str = "",
        edit: bool = False,
    ) -> pb.ShareNoteResponse:
        from suuupra.notes.v1 import notes_events_pb2 as ev

        request = pb.ShareNoteRequest(
            request_id=rid(),
            note_id=note_id,
            permission=ev.SHARE_PERMISSION_EDIT if edit else ev.SHARE_PERMISSION_READ,
        )
        if user is not None:
            request.user_id = user.user_id
        else:
            request.batch_id = batch_id
        return await self.stub.ShareNote(request, metadata=owner.metadata, timeout=10)

    async def scalar(self, sql: str) -> object:
        """One value from the service's database (to wait for the projection)."""
        return await self.wiring.notes.reads.fetchval(sql)

    async def publish(self, event: Message, tenant_id: str) -> str:
        """Publish a courses event to JetStream as the courses service's relay would."""
        event_id = str(uuid.uuid4())
        headers = outbound_headers(
            event_type=event.DESCRIPTOR.full_name,
            event_id=event_id,
            tenant_id=tenant_id,
            occurred_at=dt.datetime.now(dt.UTC),
        )
        headers[MSG_ID] = event_id
        nc = await nats.connect(self.nats_url)
        try:
            await nc.jetstream().publish(
                event.DESCRIPTOR.full_name, event.SerializeToString(), headers=headers
            )
        finally:
            await nc.close()
        return event_id

    async def enroll(
        self,
        who: User,
        batch_id: str,
        *,
        status: int = enrollment.ENROLLMENT_STATUS_ACTIVE,
        at: dt.datetime | None = None,
    ) -> None:
        await self.publish(
            courses_ev.EnrollmentCreated(
                tenant_id=who.tenant_id,
                enrollment_id=str(uuid.uuid4()),
                course_id="course-1",
                batch_id=batch_id,
                user_id=who.user_id,
                role=enrollment.ENROLLMENT_ROLE_STUDENT,
                status=status,  # type: ignore[arg-type]
                occurred_at=_ts(at or dt.datetime.now(dt.UTC)),
            ),
            who.tenant_id,
        )

    async def drop(self, who: User, batch_id: str, *, at: dt.datetime | None = None) -> None:
        await self.publish(
            courses_ev.EnrollmentDropped(
                tenant_id=who.tenant_id,
                enrollment_id=str(uuid.uuid4()),
                course_id="course-1",
                batch_id=batch_id,
                user_id=who.user_id,
                role=enrollment.ENROLLMENT_ROLE_STUDENT,
                status=enrollment.ENROLLMENT_STATUS_DROPPED,
                occurred_at=_ts(at or dt.datetime.now(dt.UTC)),
            ),
            who.tenant_id,
        )


def _ts(value: dt.datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


@contextlib.asynccontextmanager
async def notes_server(
    database_url: str, nats_url: str, issuer: TestIssuer
) -> AsyncIterator[tuple[Wiring, RunningService]]:
    wiring = await build_wiring(database_url, nats_url, consumer_fetch_timeout=0.2)
    async with running_service(wiring.definition, issuer=issuer) as service:
        await eventually(service.server.check_ready, within=20)
        yield wiring, service


@contextlib.asynccontextmanager
async def notes_harness(postgres_server_url: str, nats_url: str) -> AsyncIterator[NotesHarness]:
    issuer = TestIssuer()
    await provision_streams(nats_url, [COURSES_STREAM])
    async with (
        fresh_service_database(postgres_server_url, "notes", MIGRATIONS) as database_url,
        notes_server(database_url, nats_url, issuer) as (wiring, service),
    ):
        yield NotesHarness(wiring, service, issuer, nats_url, database_url)
