"""Remember when an assignment's AssignmentDueSoon reminder went out (sent once per assignment).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE assignments ADD COLUMN due_soon_sent_at timestamptz")
    op.execute(
        "CREATE INDEX assignments_due_soon ON assignments (due_time) "
        "WHERE state = 'published' AND due_soon_sent_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS assignments_due_soon")
    op.execute("ALTER TABLE assignments DROP COLUMN IF EXISTS due_soon_sent_at")
