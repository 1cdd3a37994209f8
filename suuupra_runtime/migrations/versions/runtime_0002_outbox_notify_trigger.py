"""Wake relays from the database: NOTIFY suuupra_outbox after every insert into the outbox.

A statement-level trigger replaces the NOTIFY the unit of work used to send itself: one round trip
fewer per event-emitting transaction, and rows written by any other path (SQL scripts, data
fixes) wake the relay too. The notification is delivered at commit, like any NOTIFY.

Revision ID: runtime_0002
Revises: runtime_0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "runtime_0002"
down_revision = "runtime_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION suuupra_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('suuupra_outbox', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION suuupra_outbox_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER outbox_notify ON outbox")
    op.execute("DROP FUNCTION suuupra_outbox_notify()")
