"""The `migrate` init container of every service pod: `python -m tools.k8s migrate <service>`.

It applies the runtime's tables and the service's alembic tree (`services/<name>/migrations/`,
DESIGN.md §4) with the runtime's own `ensure_database` + `migrate`, the same calls a service makes
at start, so the app then starts on a current schema and its own start-time migration is a no-op.
In the cluster `DATABASE_URL` logs in as the service's role into its database (both created by
CloudNativePG): `ensure_database` finds them and creates nothing; that role could not anyway.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def service_migrations(service: str, root: Path = ROOT) -> Path | None:
    """The service's alembic tree, or None when it has none (runtime tables only)."""
    directory = root / "services" / service.replace("-", "_") / "migrations"
    return directory if directory.is_dir() else None


async def migrate_service(database_url: str, database: str, migrations: Path | None) -> str:
    """Bring `database` to head; returns the URL the service uses (its role, its database)."""
    from suuupra_runtime.db import ensure_database, migrate

    url = await ensure_database(database_url, database)
    await migrate(url, migrations)
    return url
