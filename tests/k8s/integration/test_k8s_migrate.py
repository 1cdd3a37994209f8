# mypy: disable-error-code="import-untyped"
"""The `migrate` init container against real PostgreSQL set up the way CloudNativePG sets it up:
a login role without any privilege to create roles or databases, owning its one database, and
`DATABASE_URL` built from its credentials exactly as the Deployment builds it."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import yaml
from sqlalchemy.engine import make_url

from tools.k8s.migrations import service_migrations

ROOT = Path(__file__).resolve().parents[3]

MIGRATION = '''"""k8s test table."""

import sqlalchemy as sa
from alembic import op

revision = "k8s_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("k8s_probe", sa.Column("id", sa.Text, primary_key=True))


def downgrade() -> None:
    op.drop_table("k8s_probe")
'''


@dataclass(frozen=True)
class ServiceDatabase:
    name: str
    admin_dsn: str  # superuser, connected to the service database
    pod_url: str  # what the pod's DATABASE_URL expands to


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
async def service_database(postgres_server_url: str) -> AsyncIterator[ServiceDatabase]:
    name = f"k8s_{secrets.token_hex(4)}"
    password = secrets.token_hex(24)  # what `tools.k8s secrets` generates
    admin = await asyncpg.connect(_dsn(postgres_server_url))
    try:
        await admin.execute(
            f"CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{password}'"
        )
        await admin.execute(f"CREATE DATABASE {name} OWNER {name}")
        server = make_url(postgres_server_url)
        pod_url = f"postgresql://{name}:{password}@{server.host}:{server.port}/{name}"
        admin_dsn = _dsn(str(server.set(database=name).render_as_string(hide_password=False)))
        yield ServiceDatabase(name, admin_dsn, pod_url)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()


def run_init_container(
    service: str, database: str, pod_url: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """The migrate container's command for a topology service `service` with `database`."""
    data = yaml.safe_load((ROOT / "mesh" / "topology.yaml").read_text())
    data["services"][service] = {
        "port_block": 17900,
        "database": database,
        "grpc_packages": ["suuupra.k8sprobe.v1"],
    }
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(data))
    migrations = tmp_path / "migrations"
    (migrations / "versions").mkdir(parents=True, exist_ok=True)
    (migrations / "versions" / "k8s_0001.py").write_text(MIGRATION)
    generated = yaml.safe_load((ROOT / "k8s/services/identity/deployment.yaml").read_text())
    init = {c["name"]: c for c in generated["spec"]["template"]["spec"]["initContainers"]}
    assert init["migrate"]["args"] == ["tools.k8s", "migrate", "identity"]
    args = ["tools.k8s", "--topology", str(topology), "migrate", service]
    return subprocess.run(
        [sys.executable, "-m", *args, "--migrations-dir", str(migrations)],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": pod_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_migrates_as_the_service_role_and_is_idempotent(
    service_database: ServiceDatabase, tmp_path: Path
) -> None:
    db = service_database
    for _ in range(2):  # a second pod (or a restart) finds everything applied
        result = run_init_container("k8sprobe", db.name, db.pod_url, tmp_path)
        assert result.returncode == 0, result.stderr
    conn = await asyncpg.connect(db.admin_dsn)
    try:
        owners = dict(
            await conn.fetch(
                "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'"
            )
        )
    finally:
        await conn.close()
    assert owners["k8s_probe"] == db.name  # the service's own table, owned by its role
    assert owners["outbox"] == db.name  # the runtime's tables came with it


async def test_fails_when_the_database_does_not_exist(
    service_database: ServiceDatabase, tmp_path: Path
) -> None:
    """The role may not create databases: a missing one fails the init container (and the pod
    waits) instead of the app starting on nothing."""
    missing = f"{service_database.name}_missing"
    pod_url = service_database.pod_url.rsplit("/", 1)[0] + f"/{missing}"
    result = run_init_container("k8sprobe", missing, pod_url, tmp_path)
    assert result.returncode != 0


def test_a_service_migrations_live_in_its_package(tmp_path: Path) -> None:
    assert service_migrations("upi-switch", root=tmp_path) is None  # runtime tables only
    (tmp_path / "services" / "upi_switch" / "migrations").mkdir(parents=True)
    assert service_migrations("upi-switch", root=tmp_path) == (
        tmp_path / "services" / "upi_switch" / "migrations"
    )
