"""Tables and queries. Writes go through the unit of work's session (SQLAlchemy Core); the hot
reads (a profile, search, follower lists) run on the runtime's raw asyncpg `ReadPool`.

Every query names the tenant: rows of another tenant are unreachable by construction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.profiles import domain
from suuupra_runtime.read_pool import ReadPool

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

metadata = sa.MetaData()

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("tenant_id", sa.Uuid(as_uuid=False), primary_key=True),
    sa.Column("user_id", sa.Uuid(as_uuid=False), primary_key=True),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("search_name", sa.Text(collation="C"), nullable=False),
    sa.Column("headline", sa.Text, nullable=False),
    sa.Column("bio", sa.Text, nullable=False),
    sa.Column("avatar_file_id", sa.Text, nullable=False),
    sa.Column("locale", sa.Text, nullable=False),
    sa.Column("time_zone", sa.Text, nullable=False),
    sa.Column("links", JSONB, nullable=False),
    sa.Column("privacy", JSONB, nullable=False),
    sa.Column("preferences", JSONB, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
)

follows = sa.Table(
    "follows",
    metadata,
    sa.Column("tenant_id", sa.Uuid(as_uuid=False), primary_key=True),
    sa.Column("follower_id", sa.Uuid(as_uuid=False), primary_key=True),
    sa.Column("followee_id", sa.Uuid(as_uuid=False), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


def search_key(display_name: str) -> str:
    """What the name-prefix search compares: the casefolded display name."""
    return display_name.casefold()


def prefix_range(prefix: str) -> tuple[str, str]:
    """[low, high) holding exactly the strings that start with `prefix` in code-point order,
    which is the order of the C collation: an index range scan even for a generic plan. (A
    prefix ending in U+10FFFF, the last code point, matches nothing.)"""
    last = ord(prefix[-1])
    return prefix, prefix[:-1] + chr(min(last + 1, 0x10FFFF))


def _json(value: Any) -> Any:
    # asyncpg hands jsonb over as text; SQLAlchemy's JSONB type has already decoded it.
    return json.loads(value) if isinstance(value, str) else value


@lru_cache(maxsize=1024)
def _privacy_of_text(text: str) -> Mapping[str, domain.Visibility]:
    # Few distinct privacy settings exist and every read parses one: cache by the stored text.
    return MappingProxyType(domain.privacy_from(json.loads(text)))


def _privacy(value: Any) -> Mapping[str, domain.Visibility]:
    return _privacy_of_text(value) if isinstance(value, str) else domain.privacy_from(value)


def profile_from(row: Mapping[str, Any] | sa.RowMapping) -> domain.Profile:
    return domain.Profile(
        tenant_id=str(row["tenant_id"]),
        user_id=str(row["user_id"]),
        display_name=row["display_name"],
        headline=row["headline"],
        bio=row["bio"],
        avatar_file_id=row["avatar_file_id"],
        locale=row["locale"],
        time_zone=row["time_zone"],
        links=tuple(domain.Link(x["label"], x["url"]) for x in _json(row["links"])),
        privacy=_privacy(row["privacy"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _values(profile: domain.Profile) -> dict[str, Any]:
    return {
        "display_name": profile.display_name,
        "search_name": search_key(profile.display_name),
        "headline": profile.headline,
        "bio": profile.bio,
        "avatar_file_id": profile.avatar_file_id,
        "locale": profile.locale,
        "time_zone": profile.time_zone,
        "links": [{"label": link.label, "url": link.url} for link in profile.links],
        "privacy": domain.privacy_to_store(profile.privacy),
        "version": profile.version,
    }


# ---------------------------------------------------------------------------------------------
# Writes (inside a unit of work)


async def insert_profile_if_absent(session: AsyncSession, profile: domain.Profile) -> bool:
    """True when the row was created; False when the user already has a row (even a tombstone)."""
    now = datetime.now(UTC)
    created = await session.scalar(
        pg_insert(profiles)
        .values(
            tenant_id=profile.tenant_id,
            user_id=profile.user_id,
            preferences={},
            created_at=now,
            updated_at=now,
            **_values(profile),
        )
        .on_conflict_do_nothing()
        .returning(profiles.c.user_id)
    )
    return created is not None


@dataclass(frozen=True)
class LockedProfile:
    profile: domain.Profile
    preferences: dict[str, str]
    deleted: bool


async def lock_profile(session: AsyncSession, tenant_id: str, user_id: str) -> LockedProfile | None:
    row = (
        await session.execute(
            sa.select(profiles)
            .where(profiles.c.tenant_id == tenant_id, profiles.c.user_id == user_id)
            .with_for_update()
        )
    ).one_or_none()
    if row is None:
        return None
    m = row._mapping
    return LockedProfile(profile_from(m), dict(m["preferences"]), m["deleted_at"] is not None)


async def save_profile(session: AsyncSession, profile: domain.Profile) -> datetime:
    now = datetime.now(UTC)
    await session.execute(
        sa.update(profiles)
        .where(profiles.c.tenant_id == profile.tenant_id, profiles.c.user_id == profile.user_id)
        .values(updated_at=now, **_values(profile))
    )
    return now


async def save_preferences(
    session: AsyncSession, tenant_id: str, user_id: str, preferences: Mapping[str, str]
) -> None:
    await session.execute(
        sa.update(profiles)
        .where(profiles.c.tenant_id == tenant_id, profiles.c.user_id == user_id)
        .values(preferences=dict(preferences), updated_at=datetime.now(UTC))
    )


async def tombstone_profile(session: AsyncSession, tenant_id: str, user_id: str) -> bool:
    """Mark the user's profile deleted and drop its personal data and follows. Creates the
    tombstone when no profile exists yet (UserDeleted seen before UserCreated). True when this
    call deleted it, False when it was already deleted."""
    now = datetime.now(UTC)
    current = await lock_profile(session, tenant_id, user_id)
    if current is not None and current.deleted:
        return False
    if current is None:
        blank = domain.Profile(tenant_id=tenant_id, user_id=user_id, display_name="")
        await session.execute(
            pg_insert(profiles)
            .values(
                tenant_id=tenant_id,
                user_id=user_id,
                preferences={},
                created_at=now,
                updated_at=now,
                deleted_at=now,
                **_values(blank),
            )
            .on_conflict_do_nothing()
        )
    else:
        await session.execute(
            sa.update(profiles)
            .where(profiles.c.tenant_id == tenant_id, profiles.c.user_id == user_id)
            .values(
                updated_at=now,
                deleted_at=now,
                preferences={},
                **_values(domain.tombstone(current.profile)),
            )
        )
    await session.execute(
        sa.delete(follows).where(
            follows.c.tenant_id == tenant_id,
            sa.or_(follows.c.follower_id == user_id, follows.c.followee_id == user_id),
        )
    )
    return True


async def active_profiles(session: AsyncSession, tenant_id: str, *user_ids: str) -> set[str]:
    """Which of `user_ids` have a live (not deleted) profile in the tenant."""
    found = await session.scalars(
        sa.select(profiles.c.user_id)
        .where(
            profiles.c.tenant_id == tenant_id,
            profiles.c.user_id.in_(user_ids),
            profiles.c.deleted_at.is_(None),
        )
        # Shared locks: a concurrent UserDeleted cannot slip in between check and write.
        .with_for_update(read=True)
    )
    return {str(user_id) for user_id in found}


async def add_follow(
    session: AsyncSession, tenant_id: str, follower_id: str, followee_id: str
) -> bool:
    created = await session.scalar(
        pg_insert(follows)
        .values(
            tenant_id=tenant_id,
            follower_id=follower_id,
            followee_id=followee_id,
            created_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing()
        .returning(follows.c.followee_id)
    )
    return created is not None


async def remove_follow(
    session: AsyncSession, tenant_id: str, follower_id: str, followee_id: str
) -> bool:
    removed = await session.scalar(
        sa.delete(follows)
        .where(
            follows.c.tenant_id == tenant_id,
            follows.c.follower_id == follower_id,
            follows.c.followee_id == followee_id,
        )
        .returning(follows.c.followee_id)
    )
    return removed is not None


# ---------------------------------------------------------------------------------------------
# Hot reads (raw asyncpg, one round trip each)

_PROFILE_COLUMNS = """
    p.tenant_id, p.user_id, p.display_name, p.headline, p.bio, p.avatar_file_id, p.locale,
    p.time_zone, p.links, p.privacy, p.version, p.created_at, p.updated_at
"""

# Whether the caller ($3, NULL for anonymous) follows profile p.
_CALLER_FOLLOWS = """
    EXISTS (SELECT 1 FROM follows f
             WHERE f.tenant_id = p.tenant_id AND f.follower_id = $3 AND f.followee_id = p.user_id)
"""

# Whether the caller ($3) may see p's display name: the SQL form of domain.can_see for the
# name group, so search never returns (or pages over) a name the caller may not see.
_NAME_VISIBLE = f"""
    (p.privacy->>'display_name' IN ('public', 'tenant')
     OR p.user_id = $3
     OR (p.privacy->>'display_name' = 'followers' AND {_CALLER_FOLLOWS}))
"""


@dataclass(frozen=True)
class ProfileRow:
    profile: domain.Profile
    caller_follows: bool


def _row(record: Any) -> ProfileRow:
    return ProfileRow(profile_from(record), bool(record["caller_follows"]))


class Reads:
    def __init__(self, pool: ReadPool) -> None:
        self.pool = pool

    _GET = f"""
        SELECT {_PROFILE_COLUMNS}, {_CALLER_FOLLOWS} AS caller_follows
          FROM profiles p
         WHERE p.tenant_id = $1 AND p.user_id = $2 AND p.deleted_at IS NULL
    """  # noqa: S608 (constant fragments only; values are $n parameters)

    async def profile(
        self, tenant_id: str, user_id: str, caller_id: str | None
    ) -> ProfileRow | None:
        record = await self.pool.fetchrow(self._GET, tenant_id, user_id, caller_id)
        return None if record is None else _row(record)

    _PREFERENCES = """
        SELECT preferences FROM profiles
         WHERE tenant_id = $1 AND user_id = $2 AND deleted_at IS NULL
    """

    async def preferences(self, tenant_id: str, user_id: str) -> dict[str, str] | None:
        value = await self.pool.fetchval(self._PREFERENCES, tenant_id, user_id)
        return None if value is None else dict(_json(value))

    _SEARCH = f"""
        SELECT {_PROFILE_COLUMNS}, p.search_name, {_CALLER_FOLLOWS} AS caller_follows
          FROM profiles p
         WHERE p.tenant_id = $1 AND p.deleted_at IS NULL
           AND p.search_name >= $2 AND p.search_name < $7
           AND (p.search_name, p.user_id) > ($4, $5::uuid)
           AND {_NAME_VISIBLE}
         ORDER BY p.search_name, p.user_id
         LIMIT $6
    """  # noqa: S608 (constant fragments only; values are $n parameters)

    async def search(
        self,
        tenant_id: str,
        prefix: str,
        caller_id: str,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[tuple[ProfileRow, str]]:
        """Rows after the keyset position `after` = (search_name, user_id), with their key."""
        start = after or ("", "00000000-0000-0000-0000-000000000000")
        low, high = prefix_range(search_key(prefix))
        records = await self.pool.fetch(
            self._SEARCH, tenant_id, low, caller_id, start[0], start[1], limit, high
        )
        return [(_row(r), r["search_name"]) for r in records]

    # $2 = the listed user; $4/$5 = keyset (created_at, other user id), newest first.
    _CONNECTIONS = """
        SELECT {columns}, {caller_follows} AS caller_follows, c.created_at AS followed_at
          FROM follows c
          JOIN profiles p ON p.tenant_id = c.tenant_id AND p.user_id = c.{other}
                         AND p.deleted_at IS NULL
         WHERE c.tenant_id = $1 AND c.{this} = $2
           AND ($4::timestamptz IS NULL OR (c.created_at, c.{other}) < ($4, $5::uuid))
         ORDER BY c.created_at DESC, c.{other} DESC
         LIMIT $6
    """
    _FOLLOWERS = _CONNECTIONS.format(
        columns=_PROFILE_COLUMNS, caller_follows=_CALLER_FOLLOWS,
        this="followee_id", other="follower_id",
    )  # fmt: skip
    _FOLLOWING = _CONNECTIONS.format(
        columns=_PROFILE_COLUMNS, caller_follows=_CALLER_FOLLOWS,
        this="follower_id", other="followee_id",
    )  # fmt: skip

    async def connections(
        self,
        tenant_id: str,
        user_id: str,
        caller_id: str,
        *,
        followers: bool,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[tuple[ProfileRow, datetime]]:
        records = await self.pool.fetch(
            self._FOLLOWERS if followers else self._FOLLOWING,
            tenant_id,
            user_id,
            caller_id,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [(_row(r), r["followed_at"]) for r in records]
