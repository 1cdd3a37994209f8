"""Each user's unread count lives in a counter row (`inbox_unread`), kept by triggers.

The inbox statement used to number new items on from a `count(*)` of the user's unread rows: a
cost that grew with the inbox, and a number that is wrong when two transactions store items for
one user at once (neither snapshot sees the other's rows). The counter is updated under its row
lock, so concurrent transactions queue on it and each reads the exact count; the triggers take
those locks in (tenant, user) order, so two transactions that touch the same users cannot
deadlock. Triggers rather than the application's statements: every writer (an older replica
during a rolling upgrade too, a manual fix) keeps the counter right.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# (tenant, user, change) rows, applied in (tenant, user) order: the lock order of the counters.
_APPLY = (
    "INSERT INTO inbox_unread (tenant_id, user_id, unread) "
    "SELECT tenant_id, user_id, sum(delta) FROM ({changes}) c "
    "GROUP BY tenant_id, user_id HAVING sum(delta) <> 0 ORDER BY tenant_id, user_id "
    "ON CONFLICT (tenant_id, user_id) DO UPDATE SET unread = inbox_unread.unread + EXCLUDED.unread"
)
_ADDED = "SELECT tenant_id, user_id, 1 AS delta FROM added WHERE read_at IS NULL"
_REMOVED = "SELECT tenant_id, user_id, -1 AS delta FROM removed WHERE read_at IS NULL"


def _function(name: str, changes: str) -> str:
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"{_APPLY.format(changes=changes)}; RETURN NULL; END $$"
    )


def upgrade() -> None:
    op.execute(
        "CREATE TABLE inbox_unread (tenant_id text NOT NULL, user_id text NOT NULL, "
        "unread integer NOT NULL, PRIMARY KEY (tenant_id, user_id))"
    )
    op.execute(_function("inbox_unread_added", _ADDED))
    op.execute(_function("inbox_unread_removed", _REMOVED))
    op.execute(_function("inbox_unread_changed", f"{_ADDED} UNION ALL {_REMOVED}"))
    # Creating the first trigger locks notifications against writes until this migration
    # commits, so the counts below miss nothing and count nothing twice.
    op.execute(
        "CREATE TRIGGER inbox_unread_insert AFTER INSERT ON notifications "
        "REFERENCING NEW TABLE AS added FOR EACH STATEMENT "
        "EXECUTE FUNCTION inbox_unread_added()"
    )
    op.execute(
        "CREATE TRIGGER inbox_unread_update AFTER UPDATE ON notifications "
        "REFERENCING OLD TABLE AS removed NEW TABLE AS added FOR EACH STATEMENT "
        "EXECUTE FUNCTION inbox_unread_changed()"
    )
    op.execute(
        "CREATE TRIGGER inbox_unread_delete AFTER DELETE ON notifications "
        "REFERENCING OLD TABLE AS removed FOR EACH STATEMENT "
        "EXECUTE FUNCTION inbox_unread_removed()"
    )
    op.execute(
        "INSERT INTO inbox_unread (tenant_id, user_id, unread) "
        "SELECT tenant_id, user_id, count(*) FROM notifications WHERE read_at IS NULL "
        "GROUP BY tenant_id, user_id"
    )


def downgrade() -> None:
    for trigger in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER inbox_unread_{trigger} ON notifications")
    for function in ("added", "removed", "changed"):
        op.execute(f"DROP FUNCTION inbox_unread_{function}()")
    op.execute("DROP TABLE inbox_unread")
