"""Assignments become editable: a version (the etag) and an update time per assignment.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE assignments ADD COLUMN version bigint NOT NULL DEFAULT 1")
    op.execute("ALTER TABLE assignments ADD COLUMN updated_at timestamptz")
    op.execute("UPDATE assignments SET updated_at = coalesce(published_at, created_at)")
    op.execute("ALTER TABLE assignments ALTER COLUMN updated_at SET NOT NULL")


def downgrade() -> None:
    op.execute("ALTER TABLE assignments DROP COLUMN IF EXISTS updated_at")
    op.execute("ALTER TABLE assignments DROP COLUMN IF EXISTS version")
