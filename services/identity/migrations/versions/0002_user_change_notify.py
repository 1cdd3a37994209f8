"""Announce every change of a user or of a user's role assignments on `identity_user_changed`.

Triggers rather than calls in each write path, so no path that changes a user (today's or a
future one) can forget to invalidate the replicas' cached "get my user" views. The payload is
`<tenant_id>:<user_id>`; PostgreSQL delivers it when the writing transaction commits.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION identity_notify_user_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            changed record;
        BEGIN
            IF TG_OP = 'DELETE' THEN
                changed := OLD;
            ELSE
                changed := NEW;
            END IF;
            PERFORM pg_notify(
                'identity_user_changed', changed.tenant_id::text || ':' || changed.user_id::text
            );
            -- A row moved to another user (never done today) invalidates both.
            IF TG_OP = 'UPDATE' AND (OLD.tenant_id, OLD.user_id) <> (NEW.tenant_id, NEW.user_id)
            THEN
                PERFORM pg_notify(
                    'identity_user_changed', OLD.tenant_id::text || ':' || OLD.user_id::text
                );
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    for table in ("users", "role_assignments"):
        op.execute(
            f"""
            CREATE TRIGGER {table}_notify_user_changed
            AFTER INSERT OR UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION identity_notify_user_changed()
            """
        )


def downgrade() -> None:
    for table in ("users", "role_assignments"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify_user_changed ON {table}")
    op.execute("DROP FUNCTION IF EXISTS identity_notify_user_changed()")
