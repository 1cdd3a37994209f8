"""Memberships remember the stream sequence of the enrollment event that last set them.

A redelivered older event (e.g. an EnrollmentCreated whose first attempt failed and was retried
after the EnrollmentDropped behind it) must not reactivate a member who left.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "memberships",
        sa.Column("source_seq", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("memberships", "source_seq")
