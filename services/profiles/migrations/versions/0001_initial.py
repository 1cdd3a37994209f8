"""Profiles schema: profiles (with tombstones, privacy, preferences) and the follow graph.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("tenant_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("user_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        # casefolded display name, byte-ordered (C collation) so a LIKE 'prefix%' is an index
        # range scan and the same index gives the search order.
        sa.Column("search_name", sa.Text(collation="C"), nullable=False),
        sa.Column("headline", sa.Text(), nullable=False),
        sa.Column("bio", sa.Text(), nullable=False),
        sa.Column("avatar_file_id", sa.Text(), nullable=False),
        sa.Column("locale", sa.Text(), nullable=False),
        sa.Column("time_zone", sa.Text(), nullable=False),
        sa.Column("links", JSONB(), nullable=False),
        sa.Column("privacy", JSONB(), nullable=False),
        sa.Column("preferences", JSONB(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        # Set when identity deleted the user: the row stays (without personal data) so a
        # replayed or late UserCreated cannot bring the profile back.
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "user_id"),
    )
    op.create_index(
        "profiles_name_prefix",
        "profiles",
        ["tenant_id", "search_name", "user_id"],
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "follows",
        sa.Column("tenant_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("follower_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("followee_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "follower_id", "followee_id"),
        sa.CheckConstraint("follower_id <> followee_id", name="follows_no_self"),
    )
    op.create_index(
        "follows_followers", "follows", ["tenant_id", "followee_id", "created_at", "follower_id"]
    )
    op.create_index(
        "follows_following", "follows", ["tenant_id", "follower_id", "created_at", "followee_id"]
    )


def downgrade() -> None:
    op.drop_table("follows")
    op.drop_table("profiles")
