# mypy: disable-error-code="import-untyped"
"""Events in and out.

Out: `profiles_events.proto` messages written to the outbox in the handler's transaction.
In: identity's UserCreated / UserDeleted, through a durable consumer whose inbox makes each
event apply once; the same handlers serve `rebuild_from_identity`, a replay of the whole
IDENTITY stream, which is safe to repeat because the writes themselves are idempotent
(insert-if-absent, tombstone-if-alive).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message
from suuupra.identity.v1 import identity_events_pb2 as identity_ev
from suuupra.profiles.v1 import profiles_events_pb2 as ev

from suuupra_runtime.db import Database, UnitOfWork
from suuupra_runtime.events import EventConsumer, EventEnvelope, replay_stream
from suuupra_runtime.timestamps import now_pb as _now

if TYPE_CHECKING:
    from services.profiles import domain
    from services.profiles.handlers import Profiles

IDENTITY_STREAM = "IDENTITY"
CONSUMER = "profiles-identity-users"
# Only the user lifecycle matters here; the filter spares us identity's token and role events.
IDENTITY_SUBJECTS = (
    "suuupra.identity.v1.UserCreated",
    "suuupra.identity.v1.UserDeleted",
)


class ProfileEvents:
    """Outbox writers; every event is keyed by the user it is about (per-user ordering)."""

    @staticmethod
    def _add(uow: UnitOfWork, tenant_id: str, event: Message, key: str) -> None:
        # The consumer's unit of work carries the tenant of the incoming event; API calls carry
        # the caller's. Both equal the event's tenant, but say so explicitly.
        acting = uow.tenant_id
        uow.tenant_id = tenant_id
        try:
            uow.add_event(event, key=key)
        finally:
            uow.tenant_id = acting

    def profile_created(self, uow: UnitOfWork, profile: domain.Profile) -> None:
        self._add(
            uow,
            profile.tenant_id,
            ev.ProfileCreated(
                tenant_id=profile.tenant_id,
                user_id=profile.user_id,
                display_name=profile.display_name,
                locale=profile.locale,
                time_zone=profile.time_zone,
                occurred_at=_now(),
            ),
            profile.user_id,
        )

    def profile_updated(self, uow: UnitOfWork, profile: domain.Profile, changed: list[str]) -> None:
        self._add(
            uow,
            profile.tenant_id,
            ev.ProfileUpdated(
                tenant_id=profile.tenant_id,
                user_id=profile.user_id,
                display_name=profile.display_name,
                locale=profile.locale,
                time_zone=profile.time_zone,
                changed_fields=changed,
                occurred_at=_now(),
            ),
            profile.user_id,
        )

    def profile_deleted(self, uow: UnitOfWork, tenant_id: str, user_id: str) -> None:
        self._add(
            uow,
            tenant_id,
            ev.ProfileDeleted(tenant_id=tenant_id, user_id=user_id, occurred_at=_now()),
            user_id,
        )

    def follow_changed(
        self, uow: UnitOfWork, tenant_id: str, follower: str, followee: str, *, now_following: bool
    ) -> None:
        kind = ev.UserFollowed if now_following else ev.UserUnfollowed
        event = kind(
            tenant_id=tenant_id, follower_id=follower, followee_id=followee, occurred_at=_now()
        )
        self._add(uow, tenant_id, event, follower)


def identity_handlers(
    profiles: Profiles,
) -> dict[type[Message], Callable[[Any, UnitOfWork], Awaitable[None]]]:
    """Identity event → profiles effect, inside the consumer's unit of work."""

    async def on_user_created(event: identity_ev.UserCreated, uow: UnitOfWork) -> None:
        await profiles.user_created(uow, event.tenant_id, event.user_id, event.display_name)

    async def on_user_deleted(event: identity_ev.UserDeleted, uow: UnitOfWork) -> None:
        await profiles.user_deleted(uow, event.tenant_id, event.user_id)

    return {identity_ev.UserCreated: on_user_created, identity_ev.UserDeleted: on_user_deleted}


def identity_consumer(db: Database, nats_url: str, profiles: Profiles) -> EventConsumer:
    return EventConsumer(
        db,
        nats_url,
        durable=CONSUMER,
        stream=IDENTITY_STREAM,
        handlers=identity_handlers(profiles),
        filter_subjects=IDENTITY_SUBJECTS,
    )


async def rebuild_from_identity(db: Database, nats_url: str, profiles: Profiles) -> int:
    """Re-apply identity's whole user history (e.g. after restoring an old backup). Each event
    runs in its own unit of work, outside the inbox: the handlers' idempotent writes make a
    repeated replay a no-op, and events are emitted only for real changes."""
    handlers = identity_handlers(profiles)

    def adapt(
        handle: Callable[[Any, UnitOfWork], Awaitable[None]],
    ) -> Callable[[Any, EventEnvelope], Awaitable[None]]:
        async def apply(event: Any, envelope: EventEnvelope) -> None:
            async with db.unit_of_work(tenant_id=envelope.tenant_id) as uow:
                await handle(event, uow)

        return apply

    return await replay_stream(
        nats_url,
        stream=IDENTITY_STREAM,
        handlers={kind: adapt(handle) for kind, handle in handlers.items()},
        subjects=IDENTITY_SUBJECTS,
    )
