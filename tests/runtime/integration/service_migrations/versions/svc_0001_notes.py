"""A sample service migration: the notes table used by the runtime's own tests.

Revision ID: svc_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "svc_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("likes", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "effects",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("what", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("effects")
    op.drop_table("notes")
