"""Initial files schema: files, versions, grants, quotas, resumable uploads.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("file_id", sa.Text(), primary_key=True),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Integer(), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
        sa.Column("purge_after", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index(
        "files_owner_created", "files", ["tenant_id", "owner_id", "created_at", "file_id"]
    )
    op.create_index(
        "files_purge",
        "files",
        ["purge_after"],
        postgresql_where=sa.text("purge_after IS NOT NULL"),
    )
    op.create_table(
        "file_versions",
        sa.Column("file_id", sa.Text(), sa.ForeignKey("files.file_id"), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=False),
        sa.Column("thumbnail_key", sa.Text(), nullable=True),
        sa.Column("thumbnail_size", sa.BigInteger(), nullable=True),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("file_versions_storage_key", "file_versions", ["storage_key"])
    op.create_table(
        "file_grants",
        sa.Column("file_id", sa.Text(), sa.ForeignKey("files.file_id"), primary_key=True),
        sa.Column("grantee", sa.Text(), primary_key=True),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("granted_by", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "tenant_quotas",
        sa.Column("tenant_id", sa.Text(), primary_key=True),
        sa.Column("limit_bytes", sa.BigInteger(), nullable=False),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("used_bytes >= 0", name="tenant_quotas_used_nonnegative"),
    )
    op.create_table(
        "uploads",
        sa.Column("upload_id", sa.Text(), primary_key=True),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("target_file_id", sa.Text(), nullable=True),
        sa.Column("committed_offset", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("file_id", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index(
        "uploads_stale",
        "uploads",
        ["updated_at"],
        postgresql_where=sa.text("state = 'in_progress'"),
    )


def downgrade() -> None:
    for table in ("uploads", "tenant_quotas", "file_grants", "file_versions", "files"):
        op.drop_table(table)
