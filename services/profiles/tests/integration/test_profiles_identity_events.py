# mypy: disable-error-code="import-untyped"
"""Identity's user lifecycle drives profiles: the running service's durable consumer creates and
tombstones profiles through the inbox, and replaying the whole IDENTITY stream twice (the
runtime's replay) leaves exactly one profile per user, emits nothing new, resurrects nobody and
keeps users' own edits."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import nats
from google.protobuf.message import Message
from sqlalchemy import func, select
from suuupra.identity.v1 import identity_events_pb2 as identity_ev

from services.profiles import domain, store
from services.profiles.events import CONSUMER, rebuild_from_identity
from services.profiles.handlers import Actor
from services.profiles.tests.harness import ProfilesHarness, profiles_harness
from suuupra_runtime.db import inbox_table
from suuupra_runtime.events import StreamSpec, provision_streams
from suuupra_runtime.events.headers import MSG_ID, outbound_headers

TENANT = str(uuid.uuid4())


async def _publish(nats_url: str, events: list[Message], *, event_ids: list[str]) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for event, event_id in zip(events, event_ids, strict=True):
            name = event.DESCRIPTOR.full_name
            headers = outbound_headers(
                event_type=name, event_id=event_id, tenant_id=TENANT,
                occurred_at=dt.datetime.now(dt.UTC), key=getattr(event, "user_id", None),
            )  # fmt: skip
            headers[MSG_ID] = f"{event_id}.{uuid.uuid4().hex[:6]}"  # never dropped by JetStream
            await js.publish(name, event.SerializeToString(), headers=headers)
    finally:
        await nc.close()


async def _rows(h: ProfilesHarness) -> dict[str, tuple[str, bool]]:
    async with h.wiring.database.engine.connect() as conn:
        result = await conn.execute(
            select(
                store.profiles.c.user_id, store.profiles.c.display_name, store.profiles.c.deleted_at
            )
        )
        return {r.user_id: (r.display_name, r.deleted_at is not None) for r in result}


async def _inbox_count(h: ProfilesHarness) -> int:
    async with h.wiring.database.engine.connect() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(inbox_table).where(inbox_table.c.consumer == CONSUMER)
        )
        return int(count or 0)


async def _until(predicate: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(15.0):
        while not await predicate():  # noqa: ASYNC110 (polling the database and NATS)
            await asyncio.sleep(0.05)


async def test_identity_events_replayed_twice_leave_one_profile_per_user(
    postgres_server_url: str, fresh_nats_url: str
) -> None:
    await provision_streams(fresh_nats_url, [StreamSpec.for_domain("identity")])
    users = [str(uuid.uuid4()) for _ in range(3)]
    ada, bo, cy = users
    events: list[Message] = [
        identity_ev.UserCreated(tenant_id=TENANT, user_id=ada, display_name="Ada  Lovelace"),
        identity_ev.UserCreated(tenant_id=TENANT, user_id=bo, display_name="Bo"),
        identity_ev.RoleAssigned(tenant_id=TENANT, user_id=bo, role_name="instructor"),
        identity_ev.UserCreated(tenant_id=TENANT, user_id=cy, display_name="Cy"),
        identity_ev.UserDeleted(tenant_id=TENANT, user_id=cy),
        # A deleted user's create arriving again (re-emitted with a new id) must not resurrect.
        identity_ev.UserCreated(tenant_id=TENANT, user_id=cy, display_name="Cy again"),
    ]
    ids = [str(uuid.uuid4()) for _ in events]
    async with profiles_harness(postgres_server_url, fresh_nats_url) as h:
        await _publish(fresh_nats_url, events, event_ids=ids)

        async def consumed() -> bool:
            return await _inbox_count(h) == 5  # RoleAssigned is filtered out

        await _until(consumed)
        assert await _rows(h) == {ada: ("Ada Lovelace", False), bo: ("Bo", False), cy: ("", True)}

        # The same event delivered again (e.g. a replayed dead letter) is dropped by the inbox.
        await _publish(fresh_nats_url, [events[0]], event_ids=[ids[0]])

        async def drained() -> bool:
            nc = await nats.connect(fresh_nats_url)
            try:
                info = await nc.jetstream().consumer_info("IDENTITY", CONSUMER)
            finally:
                await nc.close()
            return not info.num_pending and not info.num_ack_pending

        await _until(drained)
        assert await _inbox_count(h) == 5
        # Bo edits their profile; a replay must not undo it.
        async with h.wiring.database.unit_of_work(tenant_id=TENANT) as uow:
            await h.wiring.profiles.update_my_profile(
                uow,
                Actor(user_id=bo, tenant_id=TENANT),
                domain.ProfilePatch(display_name="Bo Renamed"),
                "",
            )
        outbox_before = Counter(await h.outbox_types())

        assert (
            await rebuild_from_identity(h.wiring.database, fresh_nats_url, h.wiring.profiles) == 5
        )
        assert (
            await rebuild_from_identity(h.wiring.database, fresh_nats_url, h.wiring.profiles) == 5
        )

        assert await _rows(h) == {
            ada: ("Ada Lovelace", False),
            bo: ("Bo Renamed", False),
            cy: ("", True),
        }
        assert await _inbox_count(h) == 5
        outbox_after = Counter(await h.outbox_types())
        assert outbox_after == outbox_before
        assert outbox_after["ProfileCreated"] == 3 and outbox_after["ProfileDeleted"] == 1
