"""Course owners teach every batch of their course: project CourseCreated (owners) and
BatchOpened (batch → course) so access decisions can include them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE course_owners (
            tenant_id  text NOT NULL,
            course_id  text NOT NULL,
            user_id    text NOT NULL,
            PRIMARY KEY (tenant_id, course_id, user_id)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE batch_courses (
            tenant_id  text NOT NULL,
            batch_id   text NOT NULL,
            course_id  text NOT NULL,
            PRIMARY KEY (tenant_id, batch_id)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS batch_courses")
    op.execute("DROP TABLE IF EXISTS course_owners")
