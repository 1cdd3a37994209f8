"""Initial notifications schema: recipients, preferences, templates, cohort projection,
deliveries and the in-app inbox.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "recipients",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False, server_default=""),
        sa.Column("display_name", sa.Text(), nullable=False, server_default=""),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("locale", sa.Text(), nullable=False, server_default="en"),
        sa.Column("time_zone", sa.Text(), nullable=False, server_default="UTC"),
        sa.Column("quiet_start", sa.SmallInteger(), nullable=True),
        sa.Column("quiet_end", sa.SmallInteger(), nullable=True),
        sa.Column("phone_number", sa.Text(), nullable=False, server_default=""),
        sa.Column("push_tokens", pg.ARRAY(sa.Text()), nullable=False, server_default="{}"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "user_id"),
    )
    op.create_table(
        "preferences",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("category", sa.SmallInteger(), nullable=False),
        sa.Column("channel", sa.SmallInteger(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", "category", "channel"),
    )
    op.create_table(
        "templates",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("channel", sa.SmallInteger(), nullable=False),
        sa.Column("locale", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("tenant_id", "kind", "channel", "locale", "version"),
    )
    op.create_table(
        "courses",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("course_id", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "course_id"),
    )
    op.create_table(
        "memberships",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("batch_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("course_id", sa.Text(), nullable=False),
        sa.Column("role", sa.SmallInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("tenant_id", "batch_id", "user_id"),
    )
    op.create_table(
        "deliveries",
        sa.Column("delivery_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("category", sa.SmallInteger(), nullable=False),
        sa.Column("channel", sa.SmallInteger(), nullable=False),
        # What produced it (event:<id>, send:<request id>, bulk:<id>): with user and channel,
        # the idempotency key of a delivery.
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=False, server_default=""),
        sa.Column("address", sa.Text(), nullable=False, server_default=""),
        # Template data; identity's tokens stay sealed in here until the moment of sending.
        sa.Column("context", pg.JSONB(), nullable=False),
        sa.Column("template_version", sa.Integer(), nullable=False, server_default="0"),
        _ts("due_at"),
        _ts("sent_at", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("delivery_id"),
        sa.UniqueConstraint("tenant_id", "source", "user_id", "channel", name="deliveries_once"),
    )
    op.create_index(
        "deliveries_due",
        "deliveries",
        ["due_at"],
        postgresql_where=sa.text("status = 1"),
    )
    op.create_index("deliveries_history", "deliveries", ["tenant_id", "created_at", "delivery_id"])
    op.create_table(
        "notifications",
        sa.Column("notification_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("delivery_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("category", sa.SmallInteger(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("data", pg.JSONB(), nullable=False),
        _ts("created_at"),
        _ts("read_at", nullable=True),
        sa.PrimaryKeyConstraint("notification_id"),
        sa.UniqueConstraint("delivery_id", name="notifications_delivery"),
    )
    op.create_index("notifications_inbox", "notifications", ["tenant_id", "user_id", "created_at"])
    op.create_index(
        "notifications_unread",
        "notifications",
        ["tenant_id", "user_id"],
        postgresql_where=sa.text("read_at IS NULL"),
    )


def downgrade() -> None:
    for table in (
        "notifications",
        "deliveries",
        "memberships",
        "courses",
        "templates",
        "preferences",
        "recipients",
    ):
        op.drop_table(table)
