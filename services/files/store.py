"""Tables and queries (SQLAlchemy Core on the unit of work's session). Every row carries
`tenant_id` and every query filters by the tenant it is given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

metadata = sa.MetaData()
TS = sa.DateTime(timezone=True)

files = sa.Table(
    "files",
    metadata,
    sa.Column("file_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("owner_id", sa.Text, nullable=False),
    sa.Column("purpose", sa.Integer, nullable=False),
    sa.Column("current_version", sa.Integer, nullable=False),
    sa.Column("deleted_at", TS, nullable=True),
    sa.Column("purge_after", TS, nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

file_versions = sa.Table(
    "file_versions",
    metadata,
    sa.Column("file_id", sa.Text, sa.ForeignKey("files.file_id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("storage_key", sa.Text, nullable=False),
    sa.Column("thumbnail_key", sa.Text, nullable=True),
    sa.Column("thumbnail_size", sa.BigInteger, nullable=True),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

file_grants = sa.Table(
    "file_grants",
    metadata,
    sa.Column("file_id", sa.Text, sa.ForeignKey("files.file_id"), primary_key=True),
    sa.Column("grantee", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("granted_by", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

tenant_quotas = sa.Table(
    "tenant_quotas",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("limit_bytes", sa.BigInteger, nullable=False),
    sa.Column("used_bytes", sa.BigInteger, nullable=False),
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("upload_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("owner_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("purpose", sa.Integer, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("target_file_id", sa.Text, nullable=True),
    sa.Column("committed_offset", sa.BigInteger, nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # in_progress | completed
    sa.Column("file_id", sa.Text, nullable=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)


@dataclass(frozen=True)
class VersionRow:
    file_id: str
    tenant_id: str
    owner_id: str
    purpose: int
    current_version: int
    deleted_at: datetime | None
    file_created_at: datetime
    file_updated_at: datetime
    version: int
    name: str
    content_type: str
    size_bytes: int
    sha256: str
    storage_key: str
    thumbnail_key: str | None
    thumbnail_size: int | None
    created_by: str
    created_at: datetime


_VERSION_COLUMNS = (
    files.c.file_id,
    files.c.tenant_id,
    files.c.owner_id,
    files.c.purpose,
    files.c.current_version,
    files.c.deleted_at,
    files.c.created_at.label("file_created_at"),
    files.c.updated_at.label("file_updated_at"),
    file_versions.c.version,
    file_versions.c.name,
    file_versions.c.content_type,
    file_versions.c.size_bytes,
    file_versions.c.sha256,
    file_versions.c.storage_key,
    file_versions.c.thumbnail_key,
    file_versions.c.thumbnail_size,
    file_versions.c.created_by,
    file_versions.c.created_at,
)


def _version_row(row: Any) -> VersionRow:
    return VersionRow(**row._mapping)


def _joined() -> Any:
    return files.join(file_versions, files.c.file_id == file_versions.c.file_id)


async def get_version(
    session: AsyncSession, tenant_id: str, file_id: str, version: int = 0
) -> VersionRow | None:
    """A version (0: the current one) of a live or soft-deleted file of the tenant."""
    wanted = files.c.current_version if version == 0 else sa.literal(version)
    row = (
        await session.execute(
            sa.select(*_VERSION_COLUMNS)
            .select_from(_joined())
            .where(
                files.c.tenant_id == tenant_id,
                files.c.file_id == file_id,
                file_versions.c.version == wanted,
            )
        )
    ).first()
    return None if row is None else _version_row(row)


async def list_versions(session: AsyncSession, tenant_id: str, file_id: str) -> list[VersionRow]:
    rows = await session.execute(
        sa.select(*_VERSION_COLUMNS)
        .select_from(_joined())
        .where(files.c.tenant_id == tenant_id, files.c.file_id == file_id)
        .order_by(file_versions.c.version.desc())
    )
    return [_version_row(r) for r in rows]


async def list_current(
    session: AsyncSession,
    *,
    tenant_id: str,
    owner_id: str,
    purpose: int,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[VersionRow]:
    query = (
        sa.select(*_VERSION_COLUMNS)
        .select_from(_joined())
        .where(
            files.c.tenant_id == tenant_id,
            files.c.owner_id == owner_id,
            files.c.deleted_at.is_(None),
            file_versions.c.version == files.c.current_version,
        )
        .order_by(files.c.created_at.desc(), files.c.file_id.desc())
        .limit(limit)
    )
    if purpose:
        query = query.where(files.c.purpose == purpose)
    if after is not None:
        query = query.where(sa.tuple_(files.c.created_at, files.c.file_id) < sa.tuple_(*after))
    return [_version_row(r) for r in await session.execute(query)]


async def lock_file(session: AsyncSession, tenant_id: str, file_id: str) -> Any | None:
    return (
        await session.execute(
            sa.select(files)
            .where(files.c.tenant_id == tenant_id, files.c.file_id == file_id)
            .with_for_update()
        )
    ).first()


async def grants_of(session: AsyncSession, tenant_id: str, file_id: str) -> frozenset[str]:
    rows = await session.execute(
        sa.select(file_grants.c.grantee).where(
            file_grants.c.tenant_id == tenant_id, file_grants.c.file_id == file_id
        )
    )
    return frozenset(r.grantee for r in rows)


async def add_grant(
    session: AsyncSession, tenant_id: str, file_id: str, grantee: str, *, by: str, now: datetime
) -> None:
    await session.execute(
        pg_insert(file_grants)
        .values(
            tenant_id=tenant_id, file_id=file_id, grantee=grantee, granted_by=by, created_at=now
        )
        .on_conflict_do_nothing()
    )


async def remove_grant(session: AsyncSession, tenant_id: str, file_id: str, grantee: str) -> bool:
    result = await session.execute(
        sa.delete(file_grants).where(
            file_grants.c.tenant_id == tenant_id,
            file_grants.c.file_id == file_id,
            file_grants.c.grantee == grantee,
        )
    )
    return bool(getattr(result, "rowcount", 0))


# --- quotas ---------------------------------------------------------------------------------


async def quota(session: AsyncSession, tenant_id: str, default_limit: int) -> tuple[int, int]:
    """(limit, used) for the tenant; a tenant with no row has the default limit and no usage."""
    row = (
        await session.execute(
            sa.select(tenant_quotas.c.limit_bytes, tenant_quotas.c.used_bytes).where(
                tenant_quotas.c.tenant_id == tenant_id
            )
        )
    ).first()
    return (default_limit, 0) if row is None else (int(row.limit_bytes), int(row.used_bytes))


async def _ensure_quota_row(session: AsyncSession, tenant_id: str, default_limit: int) -> None:
    await session.execute(
        pg_insert(tenant_quotas)
        .values(tenant_id=tenant_id, limit_bytes=default_limit, used_bytes=0)
        .on_conflict_do_nothing()
    )


async def reserve_quota(
    session: AsyncSession, tenant_id: str, default_limit: int, size: int
) -> bool:
    """Atomically add `size` to the tenant's usage if it stays within the limit."""
    await _ensure_quota_row(session, tenant_id, default_limit)
    row = (
        await session.execute(
            sa.update(tenant_quotas)
            .where(
                tenant_quotas.c.tenant_id == tenant_id,
                tenant_quotas.c.used_bytes + size <= tenant_quotas.c.limit_bytes,
            )
            .values(used_bytes=tenant_quotas.c.used_bytes + size)
            .returning(tenant_quotas.c.used_bytes)
        )
    ).first()
    return row is not None


async def release_quota(session: AsyncSession, tenant_id: str, size: int) -> None:
    await session.execute(
        sa.update(tenant_quotas)
        .where(tenant_quotas.c.tenant_id == tenant_id)
        .values(used_bytes=sa.func.greatest(tenant_quotas.c.used_bytes - size, 0))
    )


async def set_quota(
    session: AsyncSession, tenant_id: str, default_limit: int, limit: int
) -> tuple[int, int]:
    await _ensure_quota_row(session, tenant_id, default_limit)
    row = (
        await session.execute(
            sa.update(tenant_quotas)
            .where(tenant_quotas.c.tenant_id == tenant_id)
            .values(limit_bytes=limit)
            .returning(tenant_quotas.c.limit_bytes, tenant_quotas.c.used_bytes)
        )
    ).one()
    return int(row.limit_bytes), int(row.used_bytes)


# --- uploads --------------------------------------------------------------------------------


async def get_upload(
    session: AsyncSession, tenant_id: str, upload_id: str, *, lock: bool = False
) -> Any | None:
    query = sa.select(uploads).where(
        uploads.c.tenant_id == tenant_id, uploads.c.upload_id == upload_id
    )
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def upload_exists(session: AsyncSession, upload_id: str) -> bool:
    """Any tenant: upload ids are global primary keys."""
    row = await session.execute(
        sa.select(uploads.c.upload_id).where(uploads.c.upload_id == upload_id)
    )
    return row.first() is not None


async def insert_upload(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(sa.insert(uploads).values(**values))


async def set_committed(
    session: AsyncSession, tenant_id: str, upload_id: str, offset: int, now: datetime
) -> None:
    await session.execute(
        sa.update(uploads)
        .where(
            uploads.c.tenant_id == tenant_id,
            uploads.c.upload_id == upload_id,
            uploads.c.state == "in_progress",
        )
        .values(committed_offset=offset, updated_at=now)
    )


async def delete_upload(session: AsyncSession, tenant_id: str, upload_id: str) -> None:
    await session.execute(
        sa.delete(uploads).where(uploads.c.tenant_id == tenant_id, uploads.c.upload_id == upload_id)
    )


async def stale_uploads(session: AsyncSession, before: datetime, limit: int) -> list[Any]:
    rows = await session.execute(
        sa.select(uploads.c.tenant_id, uploads.c.upload_id)
        .where(uploads.c.state == "in_progress", uploads.c.updated_at < before)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows)


# --- purge ----------------------------------------------------------------------------------


async def due_for_purge(session: AsyncSession, now: datetime, limit: int) -> list[Any]:
    rows = await session.execute(
        sa.select(files.c.file_id, files.c.tenant_id)
        .where(files.c.purge_after.is_not(None), files.c.purge_after <= now)
        .order_by(files.c.purge_after)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows)


async def purge_file(session: AsyncSession, tenant_id: str, file_id: str) -> tuple[int, list[str]]:
    """Delete a file's rows; returns (bytes released, storage keys it referenced)."""
    rows = (
        await session.execute(
            sa.delete(file_versions)
            .where(file_versions.c.tenant_id == tenant_id, file_versions.c.file_id == file_id)
            .returning(
                file_versions.c.size_bytes,
                file_versions.c.storage_key,
                file_versions.c.thumbnail_key,
            )
        )
    ).all()
    await session.execute(sa.delete(file_grants).where(file_grants.c.file_id == file_id))
    await session.execute(sa.delete(uploads).where(uploads.c.file_id == file_id))
    await session.execute(
        sa.delete(files).where(files.c.tenant_id == tenant_id, files.c.file_id == file_id)
    )
    keys = [r.storage_key for r in rows] + [r.thumbnail_key for r in rows if r.thumbnail_key]
    return sum(int(r.size_bytes) for r in rows), keys


async def unreferenced(session: AsyncSession, keys: Sequence[str]) -> list[str]:
    """Those of `keys` no remaining version points at (content-addressed objects are shared)."""
    if not keys:
        return []
    used = await session.execute(
        sa.select(file_versions.c.storage_key).where(file_versions.c.storage_key.in_(keys))
    )
    thumbs = await session.execute(
        sa.select(file_versions.c.thumbnail_key).where(file_versions.c.thumbnail_key.in_(keys))
    )
    referenced = {r[0] for r in used} | {r[0] for r in thumbs}
    return [k for k in dict.fromkeys(keys) if k not in referenced]
