"""Tables and queries. Every tenant-owned row carries `tenant_id` and every query on it filters by
the tenant it was given; platform-wide rows (signing keys, per-address throttles) say so.

Functions take the unit of work's `AsyncSession` (or a connection for pure reads) and use
SQLAlchemy Core: these are hot paths and need no identity map.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.identity import domain
from services.identity.keys import StoredKey
from suuupra_runtime.read_pool import ReadPool

if TYPE_CHECKING:
    # Type-only: importing sqlalchemy.ext.asyncio needs greenlet, which pure reads do not.
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

metadata = sa.MetaData()

UUID = sa.Uuid(as_uuid=False)
TS = sa.DateTime(timezone=True)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("tenant_id", UUID, primary_key=True),
    sa.Column("slug", sa.Text, nullable=False, unique=True),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("settings", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", UUID, primary_key=True),
    sa.Column("tenant_id", UUID, sa.ForeignKey("tenants.tenant_id"), nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("email_verified", sa.Boolean, nullable=False),
    sa.Column("password_hash", sa.Text, nullable=True),
    sa.Column("mfa_enabled", sa.Boolean, nullable=False),
    # TOTP secrets are sealed with the key-encryption key, like signing keys.
    sa.Column("totp_secret", sa.LargeBinary, nullable=True),
    sa.Column("totp_pending_secret", sa.LargeBinary, nullable=True),
    sa.Column("totp_last_step", sa.BigInteger, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("deleted_at", TS, nullable=True),
    sa.Index(
        "users_tenant_email_live",
        "tenant_id",
        "email",
        unique=True,
        postgresql_where=sa.text("status <> 'deleted'"),
    ),
    sa.Index("users_tenant_created", "tenant_id", "created_at", "user_id"),
)

roles = sa.Table(
    "roles",
    metadata,
    sa.Column("role_id", UUID, primary_key=True),
    sa.Column("tenant_id", UUID, sa.ForeignKey("tenants.tenant_id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("permissions", sa.Text, nullable=False),  # JSON list
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="roles_tenant_name"),
)

role_assignments = sa.Table(
    "role_assignments",
    metadata,
    sa.Column("assignment_id", UUID, primary_key=True),
    sa.Column("tenant_id", UUID, nullable=False),
    sa.Column("user_id", UUID, sa.ForeignKey("users.user_id"), nullable=False),
    sa.Column("role_name", sa.Text, nullable=False),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.UniqueConstraint("tenant_id", "user_id", "role_name", "scope", name="assignments_unique"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("session_id", UUID, primary_key=True),
    sa.Column("tenant_id", UUID, nullable=False),
    sa.Column("user_id", UUID, sa.ForeignKey("users.user_id"), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("last_refresh_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("revoked_at", TS, nullable=True),
    sa.Column("revoke_reason", sa.Text, nullable=True),
    sa.Column("source_address", sa.Text, nullable=False),
    sa.Column("user_agent", sa.Text, nullable=False),
    sa.Index("sessions_user", "tenant_id", "user_id"),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("tenant_id", UUID, nullable=False),
    sa.Column("session_id", UUID, sa.ForeignKey("sessions.session_id"), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("used_at", TS, nullable=True),
)

one_time_tokens = sa.Table(
    "one_time_tokens",
    metadata,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("tenant_id", UUID, nullable=False),
    sa.Column("user_id", UUID, sa.ForeignKey("users.user_id"), nullable=False),
    # "password_reset" | "email_verification" | "mfa_challenge"
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("used_at", TS, nullable=True),
    sa.Column("context", sa.Text, nullable=False, server_default="{}"),
)

recovery_codes = sa.Table(
    "recovery_codes",
    metadata,
    sa.Column("code_hash", sa.Text, primary_key=True),
    sa.Column("tenant_id", UUID, nullable=False),
    sa.Column("user_id", UUID, sa.ForeignKey("users.user_id"), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("used_at", TS, nullable=True),
)

# Platform-wide: keyed "account:<tenant>:<email>" or "address:<ip>"; tenant_id is set for
# account keys and NULL for address keys (an address is not owned by a tenant).
login_throttles = sa.Table(
    "login_throttles",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("tenant_id", UUID, nullable=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_failure_at", TS, nullable=True),
    sa.Column("blocked_until", TS, nullable=True),
)

# Platform-wide: one issuer signs for every tenant.
signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.Text, primary_key=True),
    sa.Column("public_jwk", sa.Text, nullable=False),
    sa.Column("sealed_private_key", sa.LargeBinary, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("retired_at", TS, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("api_key_id", UUID, primary_key=True),
    sa.Column("tenant_id", UUID, sa.ForeignKey("tenants.tenant_id"), nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("secret_hash", sa.Text, nullable=False),
    sa.Column("permissions", sa.Text, nullable=False),  # JSON list
    sa.Column("created_by", UUID, nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("last_used_at", TS, nullable=True),
    sa.Column("revoked_at", TS, nullable=True),
    sa.Column("expires_at", TS, nullable=True),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("audit_event_id", UUID, primary_key=True),
    sa.Column("tenant_id", UUID, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("actor_id", UUID, nullable=True),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("source_address", sa.Text, nullable=False),
    sa.Column("success", sa.Boolean, nullable=False),
    sa.Column("details", sa.Text, nullable=False),  # JSON object
    sa.Column("created_at", TS, nullable=False),
    sa.Index("audit_tenant_created", "tenant_id", "created_at", "audit_event_id"),
)

# Which rows an import (tenant, request id) already created, so a repeat creates nothing twice.
import_rows = sa.Table(
    "import_rows",
    metadata,
    sa.Column("tenant_id", UUID, primary_key=True),
    sa.Column("request_id", UUID, primary_key=True),
    sa.Column("email", sa.Text, primary_key=True),
    sa.Column("user_id", UUID, nullable=False),
)


# ---------------------------------------------------------------------------------------------
# Row types


@dataclass(frozen=True)
class TenantRow:
    tenant_id: str
    slug: str
    display_name: str
    settings: domain.TenantSettings
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class UserRow:
    user_id: str
    tenant_id: str
    email: str
    display_name: str
    status: domain.UserStatus
    email_verified: bool
    password_hash: str | None
    mfa_enabled: bool
    totp_secret: bytes | None
    totp_pending_secret: bytes | None
    totp_last_step: int | None
    version: int
    created_at: datetime
    updated_at: datetime


def _tenant(row: Any) -> TenantRow:
    return TenantRow(
        tenant_id=str(row.tenant_id),
        slug=row.slug,
        display_name=row.display_name,
        settings=domain.TenantSettings.from_json(row.settings),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _user(row: Any) -> UserRow:
    return UserRow(
        user_id=str(row.user_id),
        tenant_id=str(row.tenant_id),
        email=row.email,
        display_name=row.display_name,
        status=domain.UserStatus(row.status),
        email_verified=row.email_verified,
        password_hash=row.password_hash,
        mfa_enabled=row.mfa_enabled,
        totp_secret=row.totp_secret,
        totp_pending_secret=row.totp_pending_secret,
        totp_last_step=row.totp_last_step,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _keyset(after: tuple[datetime, str]) -> Any:
    """A typed (created_at, id) pair: untyped literals would compare uuid to varchar."""
    return sa.tuple_(sa.literal(after[0], TS), sa.literal(after[1], UUID))


Executor: TypeAlias = "AsyncSession | AsyncConnection"

# ---------------------------------------------------------------------------------------------
# Tenants


async def insert_tenant(s: Executor, t: TenantRow) -> None:
    await s.execute(
        tenants.insert().values(
            tenant_id=t.tenant_id,
            slug=t.slug,
            display_name=t.display_name,
            settings=t.settings.to_json(),
            version=t.version,
            created_at=t.created_at,
            updated_at=t.updated_at,
        )
    )


async def tenant_by_id(s: Executor, tenant_id: str) -> TenantRow | None:
    row = (await s.execute(sa.select(tenants).where(tenants.c.tenant_id == tenant_id))).first()
    return _tenant(row) if row else None


async def tenant_by_slug(s: Executor, slug: str) -> TenantRow | None:
    row = (await s.execute(sa.select(tenants).where(tenants.c.slug == slug))).first()
    return _tenant(row) if row else None


async def slug_taken(s: Executor, slug: str) -> bool:
    return (await tenant_by_slug(s, slug)) is not None


async def update_tenant(s: Executor, t: TenantRow, expected_version: int) -> bool:
    result = await s.execute(
        tenants.update()
        .where(tenants.c.tenant_id == t.tenant_id, tenants.c.version == expected_version)
        .values(
            display_name=t.display_name,
            settings=t.settings.to_json(),
            version=t.version,
            updated_at=t.updated_at,
        )
    )
    return bool(getattr(result, "rowcount", 0))


# ---------------------------------------------------------------------------------------------
# Users


async def insert_user(s: Executor, u: UserRow) -> None:
    await s.execute(
        users.insert().values(
            user_id=u.user_id,
            tenant_id=u.tenant_id,
            email=u.email,
            display_name=u.display_name,
            status=u.status.value,
            email_verified=u.email_verified,
            password_hash=u.password_hash,
            mfa_enabled=u.mfa_enabled,
            totp_secret=u.totp_secret,
            totp_pending_secret=u.totp_pending_secret,
            totp_last_step=u.totp_last_step,
            version=u.version,
            created_at=u.created_at,
            updated_at=u.updated_at,
        )
    )


async def user_by_id(
    s: Executor, tenant_id: str, user_id: str, *, for_update: bool = False
) -> UserRow | None:
    stmt = sa.select(users).where(
        users.c.tenant_id == tenant_id,
        users.c.user_id == user_id,
        users.c.status != domain.UserStatus.DELETED.value,
    )
    if for_update:
        stmt = stmt.with_for_update()
    row = (await s.execute(stmt)).first()
    return _user(row) if row else None


async def user_by_email(s: Executor, tenant_id: str, email: str) -> UserRow | None:
    row = (
        await s.execute(
            sa.select(users).where(
                users.c.tenant_id == tenant_id,
                users.c.email == email,
                users.c.status != domain.UserStatus.DELETED.value,
            )
        )
    ).first()
    return _user(row) if row else None


async def existing_emails(s: Executor, tenant_id: str, emails: Sequence[str]) -> set[str]:
    if not emails:
        return set()
    rows = await s.execute(
        sa.select(users.c.email).where(
            users.c.tenant_id == tenant_id,
            users.c.email.in_(emails),
            users.c.status != domain.UserStatus.DELETED.value,
        )
    )
    return {r.email for r in rows}


async def save_user(s: Executor, u: UserRow, expected_version: int) -> bool:
    """Write every mutable column guarded by the version the caller read (optimistic lock)."""
    result = await s.execute(
        users.update()
        .where(
            users.c.tenant_id == u.tenant_id,
            users.c.user_id == u.user_id,
            users.c.version == expected_version,
        )
        .values(
            email=u.email,
            display_name=u.display_name,
            status=u.status.value,
            email_verified=u.email_verified,
            password_hash=u.password_hash,
            mfa_enabled=u.mfa_enabled,
            totp_secret=u.totp_secret,
            totp_pending_secret=u.totp_pending_secret,
            totp_last_step=u.totp_last_step,
            version=u.version,
            updated_at=u.updated_at,
            deleted_at=u.updated_at if u.status is domain.UserStatus.DELETED else None,
        )
    )
    return bool(getattr(result, "rowcount", 0))


@dataclass(frozen=True)
class UserFilter:
    role: str
    status: domain.UserStatus | None
    query: str


async def list_users(
    s: Executor,
    tenant_id: str,
    flt: UserFilter,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[UserRow]:
    """Newest first, keyset-paginated on (created_at, user_id)."""
    stmt = sa.select(users).where(
        users.c.tenant_id == tenant_id, users.c.status != domain.UserStatus.DELETED.value
    )
    if flt.status is not None:
        stmt = stmt.where(users.c.status == flt.status.value)
    if flt.query:
        pattern = (
            "%" + flt.query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        stmt = stmt.where(sa.or_(users.c.email.ilike(pattern), users.c.display_name.ilike(pattern)))
    if flt.role:
        stmt = stmt.where(
            sa.exists().where(
                role_assignments.c.tenant_id == tenant_id,
                role_assignments.c.user_id == users.c.user_id,
                role_assignments.c.role_name == flt.role,
                role_assignments.c.scope == "",
            )
        )
    if after is not None:
        stmt = stmt.where(sa.tuple_(users.c.created_at, users.c.user_id) < _keyset(after))
    stmt = stmt.order_by(users.c.created_at.desc(), users.c.user_id.desc()).limit(limit)
    return [_user(r) for r in await s.execute(stmt)]


# ---------------------------------------------------------------------------------------------
# Roles


async def custom_roles(s: Executor, tenant_id: str) -> dict[str, frozenset[str]]:
    rows = await s.execute(
        sa.select(roles.c.name, roles.c.permissions).where(roles.c.tenant_id == tenant_id)
    )
    return {r.name: frozenset(json.loads(r.permissions)) for r in rows}


async def custom_role_rows(s: Executor, tenant_id: str) -> list[Any]:
    result = await s.execute(
        sa.select(roles).where(roles.c.tenant_id == tenant_id).order_by(roles.c.name)
    )
    return list(result)


async def insert_role(
    s: Executor,
    *,
    role_id: str,
    tenant_id: str,
    name: str,
    description: str,
    permissions: Sequence[str],
    now: datetime,
) -> None:
    await s.execute(
        roles.insert().values(
            role_id=role_id,
            tenant_id=tenant_id,
            name=name,
            description=description,
            permissions=json.dumps(sorted(set(permissions))),
            version=1,
            created_at=now,
        )
    )


async def assignments_of(s: Executor, tenant_id: str, user_id: str) -> list[Any]:
    result = await s.execute(
        sa.select(role_assignments)
        .where(role_assignments.c.tenant_id == tenant_id, role_assignments.c.user_id == user_id)
        .order_by(role_assignments.c.created_at, role_assignments.c.role_name)
    )
    return list(result)


async def tenant_roles_of_users(
    s: Executor, tenant_id: str, user_ids: Sequence[str]
) -> dict[str, list[str]]:
    """Tenant-wide role names per user, for rendering lists without N+1 queries."""
    out: dict[str, list[str]] = {u: [] for u in user_ids}
    if not user_ids:
        return out
    rows = await s.execute(
        sa.select(role_assignments.c.user_id, role_assignments.c.role_name)
        .where(
            role_assignments.c.tenant_id == tenant_id,
            role_assignments.c.user_id.in_(user_ids),
            role_assignments.c.scope == "",
        )
        .order_by(role_assignments.c.role_name)
    )
    for r in rows:
        out[str(r.user_id)].append(r.role_name)
    return out


async def insert_assignment(
    s: Executor,
    *,
    assignment_id: str,
    tenant_id: str,
    user_id: str,
    role_name: str,
    scope: str,
    now: datetime,
) -> bool:
    """False when the same assignment already exists."""
    result = await s.execute(
        pg_insert(role_assignments)
        .values(
            assignment_id=assignment_id,
            tenant_id=tenant_id,
            user_id=user_id,
            role_name=role_name,
            scope=scope,
            created_at=now,
        )
        .on_conflict_do_nothing(constraint="assignments_unique")
    )
    return bool(getattr(result, "rowcount", 0))


async def delete_assignment(
    s: Executor, tenant_id: str, user_id: str, role_name: str, scope: str
) -> bool:
    result = await s.execute(
        role_assignments.delete().where(
            role_assignments.c.tenant_id == tenant_id,
            role_assignments.c.user_id == user_id,
            role_assignments.c.role_name == role_name,
            role_assignments.c.scope == scope,
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def count_platform_admins(s: Executor) -> int:
    result = await s.execute(
        sa.select(sa.func.count())
        .select_from(role_assignments)
        .where(role_assignments.c.role_name == domain.PLATFORM_ADMIN)
    )
    return int(result.scalar_one())


# ---------------------------------------------------------------------------------------------
# Sessions and refresh tokens


async def insert_session(
    s: Executor,
    *,
    session_id: str,
    tenant_id: str,
    user_id: str,
    now: datetime,
    expires_at: datetime,
    source_address: str,
    user_agent: str,
) -> None:
    await s.execute(
        sessions.insert().values(
            session_id=session_id,
            tenant_id=tenant_id,
            user_id=user_id,
            created_at=now,
            last_refresh_at=now,
            expires_at=expires_at,
            source_address=source_address,
            user_agent=user_agent,
        )
    )


async def insert_refresh_token(
    s: Executor,
    *,
    token_hash: str,
    tenant_id: str,
    session_id: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    await s.execute(
        refresh_tokens.insert().values(
            token_hash=token_hash,
            tenant_id=tenant_id,
            session_id=session_id,
            created_at=now,
            expires_at=expires_at,
        )
    )


@dataclass(frozen=True)
class RefreshLookup:
    token: domain.RefreshTokenRecord
    session: domain.SessionState
    tenant_id: str


async def refresh_token_for_update(s: Executor, token_hash: str) -> RefreshLookup | None:
    """Lookup by hash (the token is the credential, the tenant comes from it) with row locks so
    two concurrent refreshes of one token cannot both rotate."""
    row = (
        await s.execute(
            sa.select(
                refresh_tokens.c.token_hash,
                refresh_tokens.c.tenant_id,
                refresh_tokens.c.session_id,
                refresh_tokens.c.used_at,
                refresh_tokens.c.expires_at,
                sessions.c.user_id,
                sessions.c.revoked_at,
                sessions.c.expires_at.label("session_expires_at"),
            )
            .join(sessions, sessions.c.session_id == refresh_tokens.c.session_id)
            .where(refresh_tokens.c.token_hash == token_hash)
            .with_for_update()
        )
    ).first()
    if row is None:
        return None
    return RefreshLookup(
        token=domain.RefreshTokenRecord(
            token_hash=row.token_hash,
            session_id=str(row.session_id),
            used=row.used_at is not None,
            expires_at=row.expires_at,
        ),
        session=domain.SessionState(
            session_id=str(row.session_id),
            user_id=str(row.user_id),
            revoked=row.revoked_at is not None,
            expires_at=row.session_expires_at,
        ),
        tenant_id=str(row.tenant_id),
    )


async def mark_refresh_used(s: Executor, tenant_id: str, token_hash: str, now: datetime) -> None:
    await s.execute(
        refresh_tokens.update()
        .where(refresh_tokens.c.tenant_id == tenant_id, refresh_tokens.c.token_hash == token_hash)
        .values(used_at=now)
    )


async def touch_session(s: Executor, tenant_id: str, session_id: str, now: datetime) -> None:
    await s.execute(
        sessions.update()
        .where(sessions.c.tenant_id == tenant_id, sessions.c.session_id == session_id)
        .values(last_refresh_at=now)
    )


async def revoke_sessions(
    s: Executor,
    tenant_id: str,
    user_id: str,
    now: datetime,
    reason: str,
    *,
    session_id: str | None = None,
    keep_session_id: str | None = None,
) -> int:
    stmt = sessions.update().where(
        sessions.c.tenant_id == tenant_id,
        sessions.c.user_id == user_id,
        sessions.c.revoked_at.is_(None),
    )
    if session_id is not None:
        stmt = stmt.where(sessions.c.session_id == session_id)
    if keep_session_id is not None:
        stmt = stmt.where(sessions.c.session_id != keep_session_id)
    result = await s.execute(stmt.values(revoked_at=now, revoke_reason=reason))
    return int(getattr(result, "rowcount", 0))


async def active_sessions(s: Executor, tenant_id: str, user_id: str, now: datetime) -> list[Any]:
    result = await s.execute(
        sa.select(sessions)
        .where(
            sessions.c.tenant_id == tenant_id,
            sessions.c.user_id == user_id,
            sessions.c.revoked_at.is_(None),
            sessions.c.expires_at > now,
        )
        .order_by(sessions.c.created_at.desc())
    )
    return list(result)


async def session_active(s: Executor, tenant_id: str, session_id: str, now: datetime) -> bool:
    row = (
        await s.execute(
            sa.select(sessions.c.session_id).where(
                sessions.c.tenant_id == tenant_id,
                sessions.c.session_id == session_id,
                sessions.c.revoked_at.is_(None),
                sessions.c.expires_at > now,
            )
        )
    ).first()
    return row is not None


# ---------------------------------------------------------------------------------------------
# One-time tokens (reset, verification, MFA challenge) and recovery codes


async def insert_one_time_token(
    s: Executor,
    *,
    token_hash: str,
    tenant_id: str,
    user_id: str,
    purpose: str,
    now: datetime,
    expires_at: datetime,
    context: dict[str, str] | None = None,
) -> None:
    await s.execute(
        one_time_tokens.insert().values(
            token_hash=token_hash,
            tenant_id=tenant_id,
            user_id=user_id,
            purpose=purpose,
            created_at=now,
            expires_at=expires_at,
            context=json.dumps(context or {}),
        )
    )


@dataclass(frozen=True)
class OneTimeTokenRow:
    token: domain.OneTimeToken
    tenant_id: str
    context: dict[str, str]


async def one_time_token_for_update(s: Executor, token_hash: str) -> OneTimeTokenRow | None:
    row = (
        await s.execute(
            sa.select(one_time_tokens)
            .where(one_time_tokens.c.token_hash == token_hash)
            .with_for_update()
        )
    ).first()
    if row is None:
        return None
    return OneTimeTokenRow(
        token=domain.OneTimeToken(
            purpose=row.purpose,
            user_id=str(row.user_id),
            expires_at=row.expires_at,
            used_at=row.used_at,
        ),
        tenant_id=str(row.tenant_id),
        context=json.loads(row.context),
    )


async def use_one_time_token(s: Executor, tenant_id: str, token_hash: str, now: datetime) -> None:
    await s.execute(
        one_time_tokens.update()
        .where(one_time_tokens.c.tenant_id == tenant_id, one_time_tokens.c.token_hash == token_hash)
        .values(used_at=now)
    )


async def invalidate_one_time_tokens(
    s: Executor, tenant_id: str, user_id: str, purpose: str, now: datetime
) -> None:
    """A newer token (or a completed reset) makes older outstanding ones unusable."""
    await s.execute(
        one_time_tokens.update()
        .where(
            one_time_tokens.c.tenant_id == tenant_id,
            one_time_tokens.c.user_id == user_id,
            one_time_tokens.c.purpose == purpose,
            one_time_tokens.c.used_at.is_(None),
        )
        .values(used_at=now)
    )


async def replace_recovery_codes(
    s: Executor, tenant_id: str, user_id: str, hashes: Sequence[str], now: datetime
) -> None:
    await s.execute(
        recovery_codes.delete().where(
            recovery_codes.c.tenant_id == tenant_id, recovery_codes.c.user_id == user_id
        )
    )
    if hashes:
        await s.execute(
            recovery_codes.insert(),
            [
                {"code_hash": h, "tenant_id": tenant_id, "user_id": user_id, "created_at": now}
                for h in hashes
            ],
        )


async def use_recovery_code(
    s: Executor, tenant_id: str, user_id: str, code_hash: str, now: datetime
) -> bool:
    """Atomically mark the code used; False when it does not exist or was used already."""
    result = await s.execute(
        recovery_codes.update()
        .where(
            recovery_codes.c.tenant_id == tenant_id,
            recovery_codes.c.user_id == user_id,
            recovery_codes.c.code_hash == code_hash,
            recovery_codes.c.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


# ---------------------------------------------------------------------------------------------
# Login throttles


async def throttle_state(
    s: Executor, key: str, *, for_update: bool = False
) -> domain.ThrottleState:
    stmt = sa.select(login_throttles).where(login_throttles.c.key == key)
    if for_update:
        stmt = stmt.with_for_update()
    row = (await s.execute(stmt)).first()
    if row is None:
        return domain.ThrottleState()
    return domain.ThrottleState(
        failures=row.failures, last_failure_at=row.last_failure_at, blocked_until=row.blocked_until
    )


async def save_throttle(
    s: Executor, key: str, tenant_id: str | None, state: domain.ThrottleState
) -> None:
    values = {
        "failures": state.failures,
        "last_failure_at": state.last_failure_at,
        "blocked_until": state.blocked_until,
    }
    await s.execute(
        pg_insert(login_throttles)
        .values(key=key, tenant_id=tenant_id, **values)
        .on_conflict_do_update(index_elements=[login_throttles.c.key], set_=values)
    )


# ---------------------------------------------------------------------------------------------
# Signing keys (platform-wide)


async def all_signing_keys(s: Executor) -> list[StoredKey]:
    rows = await s.execute(sa.select(signing_keys).order_by(signing_keys.c.created_at.desc()))
    return [
        StoredKey(
            kid=r.kid,
            public_jwk=r.public_jwk,
            sealed_private_key=r.sealed_private_key,
            created_at=r.created_at,
            retired_at=r.retired_at,
        )
        for r in rows
    ]


async def add_signing_key(s: Executor, key: StoredKey, now: datetime) -> None:
    """Retire the current key and make `key` current, in one transaction."""
    await s.execute(
        signing_keys.update().where(signing_keys.c.retired_at.is_(None)).values(retired_at=now)
    )
    await s.execute(
        signing_keys.insert().values(
            kid=key.kid,
            public_jwk=key.public_jwk,
            sealed_private_key=key.sealed_private_key,
            created_at=key.created_at,
            retired_at=None,
        )
    )


async def lock_signing_keys(s: Executor) -> None:
    """Serialise key creation across replicas (first start, rotation)."""
    await s.execute(sa.text("SELECT pg_advisory_xact_lock(7301001)"))


# ---------------------------------------------------------------------------------------------
# API keys


async def insert_api_key(s: Executor, values: dict[str, Any]) -> None:
    await s.execute(api_keys.insert().values(**values))


async def api_key_by_id(s: Executor, tenant_id: str | None, api_key_id: str) -> Any:
    stmt = sa.select(api_keys).where(api_keys.c.api_key_id == api_key_id)
    if tenant_id is not None:
        stmt = stmt.where(api_keys.c.tenant_id == tenant_id)
    return (await s.execute(stmt)).first()


async def list_api_keys(
    s: Executor, tenant_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[Any]:
    stmt = sa.select(api_keys).where(api_keys.c.tenant_id == tenant_id)
    if after is not None:
        stmt = stmt.where(sa.tuple_(api_keys.c.created_at, api_keys.c.api_key_id) < _keyset(after))
    stmt = stmt.order_by(api_keys.c.created_at.desc(), api_keys.c.api_key_id.desc()).limit(limit)
    return list(await s.execute(stmt))


async def revoke_api_key(s: Executor, tenant_id: str, api_key_id: str, now: datetime) -> None:
    await s.execute(
        api_keys.update()
        .where(
            api_keys.c.tenant_id == tenant_id,
            api_keys.c.api_key_id == api_key_id,
            api_keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )


async def touch_api_key(s: Executor, tenant_id: str, api_key_id: str, now: datetime) -> None:
    await s.execute(
        api_keys.update()
        .where(api_keys.c.tenant_id == tenant_id, api_keys.c.api_key_id == api_key_id)
        .values(last_used_at=now)
    )


# ---------------------------------------------------------------------------------------------
# Audit log


@dataclass(frozen=True)
class AuditRecord:
    audit_event_id: str
    tenant_id: str
    action: str
    actor_id: str | None
    target: str
    source_address: str
    success: bool
    details: dict[str, str]
    created_at: datetime


async def insert_audit(s: Executor, a: AuditRecord) -> None:
    await s.execute(
        audit_events.insert().values(
            audit_event_id=a.audit_event_id,
            tenant_id=a.tenant_id,
            action=a.action,
            actor_id=a.actor_id,
            target=a.target,
            source_address=a.source_address,
            success=a.success,
            details=json.dumps(a.details, sort_keys=True),
            created_at=a.created_at,
        )
    )


@dataclass(frozen=True)
class AuditFilter:
    action: str
    actor_id: str
    target: str


async def list_audit(
    s: Executor,
    tenant_id: str,
    flt: AuditFilter,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[AuditRecord]:
    stmt = sa.select(audit_events).where(audit_events.c.tenant_id == tenant_id)
    if flt.action:
        stmt = stmt.where(audit_events.c.action == flt.action)
    if flt.actor_id:
        stmt = stmt.where(audit_events.c.actor_id == flt.actor_id)
    if flt.target:
        stmt = stmt.where(audit_events.c.target == flt.target)
    if after is not None:
        stmt = stmt.where(
            sa.tuple_(audit_events.c.created_at, audit_events.c.audit_event_id) < _keyset(after)
        )
    stmt = stmt.order_by(
        audit_events.c.created_at.desc(), audit_events.c.audit_event_id.desc()
    ).limit(limit)
    return [
        AuditRecord(
            audit_event_id=str(r.audit_event_id),
            tenant_id=str(r.tenant_id),
            action=r.action,
            actor_id=str(r.actor_id) if r.actor_id else None,
            target=r.target,
            source_address=r.source_address,
            success=r.success,
            details=json.loads(r.details),
            created_at=r.created_at,
        )
        for r in await s.execute(stmt)
    ]


# ---------------------------------------------------------------------------------------------
# Import bookkeeping


async def imported_emails(s: Executor, tenant_id: str, request_id: str) -> set[str]:
    rows = await s.execute(
        sa.select(import_rows.c.email).where(
            import_rows.c.tenant_id == tenant_id, import_rows.c.request_id == request_id
        )
    )
    return {r.email for r in rows}


async def record_imported(
    s: Executor, tenant_id: str, request_id: str, pairs: Sequence[tuple[str, str]]
) -> None:
    if pairs:
        await s.execute(
            import_rows.insert(),
            [
                {"tenant_id": tenant_id, "request_id": request_id, "email": e, "user_id": u}
                for e, u in pairs
            ],
        )


async def insert_users_bulk(
    s: Executor, rows: Sequence[UserRow], roles: Sequence[str], assignment_ids: Sequence[str]
) -> None:
    """Insert many new users with one tenant-wide role each (bulk import), two statements."""
    if not rows:
        return
    await s.execute(
        users.insert(),
        [
            {
                "user_id": u.user_id,
                "tenant_id": u.tenant_id,
                "email": u.email,
                "display_name": u.display_name,
                "status": u.status.value,
                "email_verified": u.email_verified,
                "password_hash": u.password_hash,
                "mfa_enabled": False,
                "version": u.version,
                "created_at": u.created_at,
                "updated_at": u.updated_at,
            }
            for u in rows
        ],
    )
    await s.execute(
        role_assignments.insert(),
        [
            {
                "assignment_id": a,
                "tenant_id": u.tenant_id,
                "user_id": u.user_id,
                "role_name": r,
                "scope": "",
                "created_at": u.created_at,
            }
            for u, r, a in zip(rows, roles, assignment_ids, strict=True)
        ],
    )


# ---------------------------------------------------------------------------------------------
# Hot read path: raw asyncpg (DESIGN.md §5), one round trip for a user and its roles.


class FastReads:
    """The per-request reads every authenticated call makes (get my user), on the runtime's raw
    asyncpg `ReadPool`: SQLAlchemy's session, pool pre-ping and row processing cost ~4x a raw
    asyncpg point select; this path needs none of them."""

    _USER_WITH_ROLES = """
        SELECT u.user_id, u.tenant_id, u.email, u.display_name, u.status, u.email_verified,
               u.password_hash, u.mfa_enabled, u.totp_secret, u.totp_pending_secret,
               u.totp_last_step, u.version, u.created_at, u.updated_at,
               COALESCE(
                   (SELECT array_agg(a.role_name ORDER BY a.role_name)
                      FROM role_assignments a
                     WHERE a.tenant_id = u.tenant_id AND a.user_id = u.user_id AND a.scope = ''),
                   '{}'::text[]) AS roles
          FROM users u
         WHERE u.tenant_id = $1 AND u.user_id = $2 AND u.status <> 'deleted'
    """

    def __init__(self, pool: ReadPool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, database_url: str, *, max_size: int = 10) -> FastReads:
        return cls(await ReadPool.connect(database_url, max_size=max_size))

    async def user_with_roles(
        self, tenant_id: str, user_id: str
    ) -> tuple[UserRow, list[str]] | None:
        row = await self._pool.fetchrow(
            self._USER_WITH_ROLES, uuid.UUID(tenant_id), uuid.UUID(user_id)
        )
        if row is None:
            return None
        user = UserRow(
            user_id=str(row["user_id"]),
            tenant_id=str(row["tenant_id"]),
            email=row["email"],
            display_name=row["display_name"],
            status=domain.UserStatus(row["status"]),
            email_verified=row["email_verified"],
            password_hash=row["password_hash"],
            mfa_enabled=row["mfa_enabled"],
            totp_secret=row["totp_secret"],
            totp_pending_secret=row["totp_pending_secret"],
            totp_last_step=row["totp_last_step"],
            version=row["version"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
        return user, list(row["roles"])

    async def close(self) -> None:
        await self._pool.close()
