"""Initial notes schema: notes (with a full-text search vector), shares, cohort membership.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # array_to_string is only STABLE (it may call type output functions); on text[] it is
    # immutable in fact, which a generated column needs.
    op.execute(
        """
        CREATE FUNCTION notes_tags_text(text[]) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT array_to_string($1, ' ') $$
        """
    )
    op.execute(
        """
        CREATE TABLE notes (
            note_id uuid PRIMARY KEY,
            tenant_id text NOT NULL,
            owner_id text NOT NULL,
            title text NOT NULL,
            body text NOT NULL,
            tags text[] NOT NULL DEFAULT '{}',
            course_id text,
            lesson_id text,
            video_offset_ms bigint,
            version bigint NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            -- Title weighs more than tags, tags more than body. 'english' stems ("graphs" finds
            -- "graph"); the vector is kept by PostgreSQL so writes cannot forget it.
            search tsvector GENERATED ALWAYS AS (
                setweight(to_tsvector('english', title), 'A')
                || setweight(to_tsvector('english', notes_tags_text(tags)), 'B')
                || setweight(to_tsvector('english', body), 'C')
            ) STORED
        )
        """
    )
    # Listing my notes newest first (keyset on created_at, note_id).
    op.execute(
        "CREATE INDEX notes_owner_created ON notes (tenant_id, owner_id, created_at DESC, note_id DESC)"
    )
    op.execute("CREATE INDEX notes_search ON notes USING gin (search)")
    op.execute("CREATE INDEX notes_tags ON notes USING gin (tags)")
    op.execute(
        """
        CREATE TABLE note_shares (
            share_id uuid PRIMARY KEY,
            tenant_id text NOT NULL,
            note_id uuid NOT NULL REFERENCES notes (note_id) ON DELETE CASCADE,
            user_id text,
            batch_id text,
            permission smallint NOT NULL CHECK (permission IN (1, 2)),
            created_by text NOT NULL,
            created_at timestamptz NOT NULL,
            CHECK ((user_id IS NULL) <> (batch_id IS NULL))
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX note_shares_user ON note_shares (note_id, user_id) WHERE user_id IS NOT NULL"
    )
    op.execute(
        "CREATE UNIQUE INDEX note_shares_batch ON note_shares (note_id, batch_id) WHERE batch_id IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX note_shares_grantee ON note_shares (tenant_id, user_id) WHERE user_id IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX note_shares_cohort ON note_shares (tenant_id, batch_id) WHERE batch_id IS NOT NULL"
    )
    # Cohort membership projected from the courses service's enrollment events. A row is kept
    # when a member leaves (active = false) so an older event arriving late cannot re-add them.
    op.execute(
        """
        CREATE TABLE batch_members (
            tenant_id text NOT NULL,
            batch_id text NOT NULL,
            user_id text NOT NULL,
            course_id text NOT NULL,
            active boolean NOT NULL,
            as_of timestamptz NOT NULL,
            PRIMARY KEY (tenant_id, batch_id, user_id)
        )
        """
    )
    op.execute("CREATE INDEX batch_members_user ON batch_members (tenant_id, user_id) WHERE active")


def downgrade() -> None:
    op.execute("DROP TABLE batch_members")
    op.execute("DROP TABLE note_shares")
    op.execute("DROP TABLE notes")
    op.execute("DROP FUNCTION notes_tags_text(text[])")
