"""Alembic migrations for the tables the runtime adds to every service database.

Applied by `suuupra_runtime.db.migrate` with version table `alembic_version_runtime`, before the
service's own migrations. Never edit a released revision; add a new one.
"""
