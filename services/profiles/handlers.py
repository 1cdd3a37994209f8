"""Use cases: load → decide (domain) → write through the unit of work (with outbox events)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from services.profiles import domain, store
from services.profiles.events import ProfileEvents
from suuupra_runtime.db import Database, UnitOfWork
from suuupra_runtime.errors import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from suuupra_runtime.updates import etag_matches


@dataclass(frozen=True)
class Actor:
    """The signed-in user calling (profiles has no service-to-service callers yet)."""

    user_id: str
    tenant_id: str


def _no_profile(user_id: str) -> NotFound:
    return NotFound(f"profile {user_id} not found", reason="PROFILE_NOT_FOUND")


@dataclass(frozen=True)
class Summary:
    user_id: str
    display_name: str
    headline: str
    avatar_file_id: str


def summary_of(row: store.ProfileRow, actor: Actor) -> Summary:
    """A list entry with only what the caller may see of that user."""
    relation = domain.relation_of(
        caller_id=actor.user_id, caller_tenant=actor.tenant_id,
        owner_id=row.profile.user_id, owner_tenant=row.profile.tenant_id,
        caller_follows=row.caller_follows,
    )  # fmt: skip
    seen = domain.view_for(row.profile, relation).profile
    return Summary(seen.user_id, seen.display_name, seen.headline, seen.avatar_file_id)


class Profiles:
    def __init__(
        self, db: Database, reads: store.Reads, events: ProfileEvents | None = None
    ) -> None:
        self.db = db
        self.reads = reads
        self.events = events or ProfileEvents()

    # -- own profile --------------------------------------------------------------------------

    async def my_profile(self, actor: Actor) -> domain.ProfileView:
        row = await self.reads.profile(actor.tenant_id, actor.user_id, actor.user_id)
        if row is None:
            raise _no_profile(actor.user_id)
        return domain.view_for(row.profile, domain.Relation.SELF)

    async def update_my_profile(
        self,
        uow: UnitOfWork,
        actor: Actor,
        patch: domain.ProfilePatch,
        etag: str,
    ) -> domain.ProfileView:
        patch = domain.validate_patch(patch)
        locked = await store.lock_profile(uow.session, actor.tenant_id, actor.user_id)
        if locked is None or locked.deleted:
            raise _no_profile(actor.user_id)
        if not etag_matches(etag, locked.profile.version):
            raise Aborted("the profile changed since you read it", reason="ETAG_MISMATCH")
        updated, changed = domain.apply_patch(locked.profile, patch)
        if changed:
            updated = replace(updated, updated_at=await store.save_profile(uow.session, updated))
            self.events.profile_updated(uow, updated, changed)
        return domain.view_for(updated, domain.Relation.SELF)

    # -- other profiles -----------------------------------------------------------------------

    async def profile(self, actor: Actor, user_id: str) -> domain.ProfileView:
        row = await self.reads.profile(actor.tenant_id, user_id, actor.user_id)
        if row is None:
            raise _no_profile(user_id)
        relation = domain.relation_of(
            caller_id=actor.user_id, caller_tenant=actor.tenant_id,
            owner_id=user_id, owner_tenant=actor.tenant_id, caller_follows=row.caller_follows,
        )  # fmt: skip
        return domain.view_for(row.profile, relation, followed=row.caller_follows)

    async def public_profile(self, tenant_id: str, user_id: str) -> domain.ProfileView:
        row = await self.reads.profile(tenant_id, user_id, None)
        view = None if row is None else domain.view_for(row.profile, domain.Relation.STRANGER)
        # A profile showing nothing publicly is indistinguishable from a missing one, so the
        # public endpoint cannot be used to enumerate a tenant's users.
        if view is None or not view.visible:
            raise _no_profile(user_id)
        return view

    async def search(
        self, actor: Actor, prefix: str, page_size: int, page_token: str
    ) -> tuple[list[Summary], str]:
        prefix = domain.normalize_display_name(prefix)
        if not prefix:
            raise InvalidArgument([FieldViolation("prefix", "must contain a visible character")])
        fp = domain.fingerprint("search", actor.tenant_id, actor.user_id, store.search_key(prefix))
        after: tuple[str, str] | None = None
        if page_token:
            name, uid = domain.decode_page_token(page_token, fp, 2)
            after = (name, uid)
        limit = domain.effective_page_size(page_size)
        rows = await self.reads.search(actor.tenant_id, prefix, actor.user_id, after, limit + 1)
        page = rows[:limit]
        token = ""
        if len(rows) > limit:
            last_row, last_key = page[-1]
            token = domain.encode_page_token((last_key, last_row.profile.user_id), fp)
        return [summary_of(row, actor) for row, _ in page], token

    # -- follow graph -------------------------------------------------------------------------

    async def follow(self, uow: UnitOfWork, actor: Actor, user_id: str) -> bool:
        domain.check_follow(actor.user_id, user_id)
        alive = await store.active_profiles(uow.session, actor.tenant_id, actor.user_id, user_id)
        # A deleted user's token stays valid until it expires; their profile is gone meanwhile.
        for needed in (actor.user_id, user_id):
            if needed not in alive:
                raise _no_profile(needed)
        created = await store.add_follow(uow.session, actor.tenant_id, actor.user_id, user_id)
        if created:
            self.events.follow_changed(
                uow, actor.tenant_id, actor.user_id, user_id, now_following=True
            )
        return created

    async def unfollow(self, uow: UnitOfWork, actor: Actor, user_id: str) -> bool:
        domain.check_follow(actor.user_id, user_id)
        removed = await store.remove_follow(uow.session, actor.tenant_id, actor.user_id, user_id)
        if removed:
            self.events.follow_changed(
                uow, actor.tenant_id, actor.user_id, user_id, now_following=False
            )
        return removed

    async def connections(
        self, actor: Actor, user_id: str, *, followers: bool, page_size: int, page_token: str
    ) -> tuple[list[Summary], str]:
        owner = await self.reads.profile(actor.tenant_id, user_id, actor.user_id)
        if owner is None:
            raise _no_profile(user_id)
        relation = domain.relation_of(
            caller_id=actor.user_id, caller_tenant=actor.tenant_id,
            owner_id=user_id, owner_tenant=actor.tenant_id, caller_follows=owner.caller_follows,
        )  # fmt: skip
        if not domain.can_see(owner.profile.privacy["connections"], relation):
            raise PermissionDenied(
                "this user's connections are private", reason="CONNECTIONS_PRIVATE"
            )
        kind = "followers" if followers else "following"
        fp = domain.fingerprint(kind, actor.tenant_id, user_id)
        after: tuple[datetime, str] | None = None
        if page_token:
            moment, uid = domain.decode_page_token(page_token, fp, 2)
            after = (_parse_time(moment), uid)
        limit = domain.effective_page_size(page_size)
        rows = await self.reads.connections(
            actor.tenant_id, user_id, actor.user_id, followers=followers, after=after,
            limit=limit + 1,
        )  # fmt: skip
        page = rows[:limit]
        token = ""
        if len(rows) > limit:
            last_row, last_at = page[-1]
            token = domain.encode_page_token((last_at.isoformat(), last_row.profile.user_id), fp)
        return [summary_of(row, actor) for row, _ in page], token

    # -- preferences --------------------------------------------------------------------------

    async def my_preferences(self, actor: Actor) -> list[domain.PreferenceValue]:
        stored = await self.reads.preferences(actor.tenant_id, actor.user_id)
        if stored is None:
            raise _no_profile(actor.user_id)
        return domain.effective_preferences(stored)

    async def update_my_preferences(
        self,
        uow: UnitOfWork,
        actor: Actor,
        set_values: Mapping[str, str],
        reset: Sequence[str],
    ) -> list[domain.PreferenceValue]:
        locked = await store.lock_profile(uow.session, actor.tenant_id, actor.user_id)
        # Validate before the existence check's outcome matters: bad input is reported as such.
        updated = domain.apply_preferences(locked.preferences if locked else {}, set_values, reset)
        if locked is None or locked.deleted:
            raise _no_profile(actor.user_id)
        if updated != locked.preferences:
            await store.save_preferences(uow.session, actor.tenant_id, actor.user_id, updated)
        return domain.effective_preferences(updated)

    # -- identity's user lifecycle (consumer side) -------------------------------------------

    async def user_created(
        self, uow: UnitOfWork, tenant_id: str, user_id: str, display_name: str
    ) -> bool:
        """Idempotent: a second UserCreated for the user (or one after UserDeleted) is a no-op."""
        profile = domain.Profile(
            tenant_id=tenant_id,
            user_id=user_id,
            display_name=domain.initial_display_name(display_name, fallback="Member"),
        )
        created = await store.insert_profile_if_absent(uow.session, profile)
        if created:
            self.events.profile_created(uow, profile)
        return created

    async def user_deleted(self, uow: UnitOfWork, tenant_id: str, user_id: str) -> bool:
        deleted = await store.tombstone_profile(uow.session, tenant_id, user_id)
        if deleted:
            self.events.profile_deleted(uow, tenant_id, user_id)
        return deleted


def _parse_time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidArgument([FieldViolation("page_token", "invalid")]) from None
