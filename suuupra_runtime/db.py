"""PostgreSQL access for services: engine, unit of work, per-service databases, migrations.

Public API::

    db = await Database.connect(url, pool_size=10)      # postgresql(+asyncpg):// URL
    db.engine                                            # AsyncEngine (asyncpg, pre-ping)
    await db.ping() -> bool                              # readiness: can we run SELECT 1?
    await db.fetch(sql, *args) / db.fetchrow(...)        # hot reads: raw asyncpg, $1 params
    await db.dispose()

    async with db.unit_of_work(tenant_id="t1") as uow:   # one transaction per request
        await uow.session.execute(...)                   # AsyncSession
        event_id = uow.add_event(UserCreated(...), key="user-123")  # outbox row, same tx
        uow.after_commit(worker.wake)                    # runs only if the commit succeeds
    # leaving the block commits; an exception rolls back (and drops the events)

    db = await open_service_database("identity", migrations_dir)  # all three steps below
    url = await ensure_database(server_url, "identity")  # database + role, idempotent
    await migrate(url, Path("services/identity/migrations"))   # runtime tables + service head
    await migrations_applied(url, migrations_dir) -> bool      # readiness check
    service_database_url("identity") -> str              # DATABASE_URL's server + the service db
    tenant_scoped(select(users), users, tenant_id)       # adds WHERE users.tenant_id = :tenant

Tables every service database gets (runtime migrations, version table `alembic_version_runtime`):
`outbox`, `inbox`, `dead_letters`, `idempotency_keys` (Core `Table` objects below).

A service's own migrations directory needs only alembic revision files in `versions/` (an
`env.py` is optional, for using the alembic CLI): `migrate` drives alembic in-process on one
connection that holds a PostgreSQL advisory lock, so processes starting at once apply each
migration exactly once. The service's version table is alembic's default `alembic_version`.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from google.protobuf.message import Message
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Delete,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Select,
    Table,
    Text,
    Update,
    column,
    func,
    insert,
    select,
    text,
)
from sqlalchemy import table as sa_table
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.expression import TableClause

from suuupra_runtime.events.headers import outbound_headers

try:
    from sqlalchemy.ext.asyncio import (
        AsyncEngine,
        AsyncSession,
        async_sessionmaker,
        create_async_engine,
    )
except ImportError as exc:  # pragma: no cover - environment problem, not a code path
    raise ImportError(
        "suuupra_runtime.db needs SQLAlchemy's asyncio support, which needs the `greenlet` "
        "package (SQLAlchemy[asyncio]); install the pinned requirements (./dev)"
    ) from exc

__all__ = [
    "RUNTIME_MIGRATIONS_DIR",
    "RUNTIME_VERSION_TABLE",
    "SERVICE_VERSION_TABLE",
    "Database",
    "UnitOfWork",
    "dead_letters_table",
    "ensure_database",
    "idempotency_keys_table",
    "inbox_table",
    "migrate",
    "migrations_applied",
    "normalize_url",
    "open_service_database",
    "outbox_table",
    "prepare_service_database",
    "service_database_name",
    "service_database_url",
    "tenant_scoped",
]

_log = logging.getLogger(__name__)

RUNTIME_MIGRATIONS_DIR = Path(__file__).parent / "migrations"
RUNTIME_VERSION_TABLE = "alembic_version_runtime"
SERVICE_VERSION_TABLE = "alembic_version"
OUTBOX_CHANNEL = "suuupra_outbox"  # NOTIFY channel (trigger on outbox) the relay LISTENs on

# Fixed keys for pg_advisory_(xact_)lock: advisory locks are per database, so one key per purpose.
_MIGRATION_LOCK_KEY = 0x5355_5550_5241_0001
_CREATE_DATABASE_LOCK_KEY = 0x5355_5550_5241_0002

metadata = MetaData()

outbox_table = Table(
    "outbox",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    # Commit order is unknowable to the writer; `seq` gives the relay a stable publish order.
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("event_type", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("tenant_id", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Index("outbox_unpublished", "seq", postgresql_where=text("published_at IS NULL")),
)

inbox_table = Table(
    "inbox",
    metadata,
    Column("consumer", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "event_id"),
)

dead_letters_table = Table(
    "dead_letters",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("consumer", Text, nullable=False),
    Column("stream", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("first_failed_at", DateTime(timezone=True), nullable=False),
    Column("last_failed_at", DateTime(timezone=True), nullable=False),
    Column("replayed_at", DateTime(timezone=True), nullable=True),
    Index("dead_letters_consumer", "consumer", "last_failed_at"),
)

idempotency_keys_table = Table(
    "idempotency_keys",
    metadata,
    Column("tenant_id", Text, nullable=False),  # '' when the call has no tenant
    Column("method", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("payload_sha256", LargeBinary, nullable=False),
    Column("response", LargeBinary, nullable=True),  # NULL only inside the first request's tx
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "method", "request_id"),
)


def normalize_url(url: str) -> str:
    """Any postgres URL (`postgres://`, `postgresql://`, `postgresql+asyncpg://`) → asyncpg."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string()}")
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


class Database:
    """One async engine (connection pool) per process and database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int | None = None,
        pre_ping: bool = True,
    ) -> Database:
        """An engine for `url`. `pre_ping` (default on) tests each connection on checkout, so
        a restarted server never surfaces as errors in requests; it costs one round trip per
        checkout (measured: a point read through `fetchrow` ~0.3x raw asyncpg with it, ~0.55x
        without), so a latency-critical read service may turn it off."""
        engine = create_async_engine(
            normalize_url(url),
            pool_size=pool_size,
            max_overflow=pool_size if max_overflow is None else max_overflow,
            pool_pre_ping=pre_ping,
            pool_recycle=1800,
        )
        return cls(engine)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=False)

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (DBAPIError, OSError):
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        """Hot read path: `query` ($1-style) straight on a pooled asyncpg connection.

        No session and no explicit transaction (autocommit snapshot of one statement), so it
        costs one round trip plus the pool's pre-ping, against four through a session. Returns
        asyncpg `Record`s. Use for reads only; writes belong in a `UnitOfWork`.
        """
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            rows: list[Any] = await raw.driver_connection.fetch(query, *args)  # type: ignore[union-attr]
            return rows

    async def fetchrow(self, query: str, *args: Any) -> Any | None:
        """Like `fetch`, for at most one row (None when there is none)."""
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            return await raw.driver_connection.fetchrow(query, *args)  # type: ignore[union-attr]

    def unit_of_work(
        self, *, tenant_id: str | None, inherited_headers: Mapping[str, str] | None = None
    ) -> UnitOfWork:
        return UnitOfWork(self, tenant_id=tenant_id, inherited_headers=inherited_headers)


class UnitOfWork:
    """One transaction: the request's writes and its outbox events commit (or vanish) together.

    `inherited_headers` carry trace context (`traceparent`, `tracestate`) and the request id of
    the event being handled, so events emitted by a consumer continue its trace when no
    OpenTelemetry span is active.
    """

    def __init__(
        self,
        db: Database,
        *,
        tenant_id: str | None,
        inherited_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.inherited_headers: Mapping[str, str] = dict(inherited_headers or {})
        self._session: AsyncSession | None = None
        self._events: list[dict[str, Any]] = []
        self._after_commit: list[Callable[[], None]] = []
        self.committed = False

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("UnitOfWork used outside `async with`")
        return self._session

    @property
    def event_ids(self) -> list[str]:
        return [str(row["id"]) for row in self._events]

    def add_event(self, event: Message, *, key: str | None = None) -> str:
        """Queue `event` for the outbox of this transaction; returns its event id.

        The subject is the event's full proto name (`suuupra.identity.v1.UserCreated`); `key`
        (e.g. the aggregate id) travels as a header for consumers that partition or order by it.
        """
        event_id = uuid.uuid4()
        full_name = event.DESCRIPTOR.full_name
        headers = outbound_headers(
            event_type=full_name,
            event_id=str(event_id),
            tenant_id=self.tenant_id,
            occurred_at=dt.datetime.now(dt.UTC),
            key=key,
            inherited=self.inherited_headers,
        )
        self._events.append(
            {
                "id": event_id,
                "event_type": full_name,
                "subject": full_name,
                "payload": event.SerializeToString(),
                "headers": headers,
                "tenant_id": self.tenant_id,
            }
        )
        return str(event_id)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this transaction has committed (never after a rollback), e.g. to
        wake a worker or push to live subscribers only what is really stored. Callbacks run in
        registration order; one that raises is logged and does not stop the others."""
        self._after_commit.append(callback)

    async def __aenter__(self) -> UnitOfWork:
        self._session = self.db.sessions()
        await self._session.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self.session
        try:
            if exc_type is None:
                if self._events:
                    # The outbox_notify trigger (runtime_0002) NOTIFYs the relays at commit.
                    await session.execute(insert(outbox_table), self._events)
                await session.commit()
                self.committed = True
                for callback in self._after_commit:
                    try:
                        callback()
                    except Exception:
                        _log.exception("after-commit callback failed")
            else:
                await session.rollback()
        finally:
            await session.close()
            self._session = None


_Statement = TypeVar("_Statement", Select[Any], Update, Delete)


def tenant_scoped(stmt: _Statement, table: TableClause, tenant_id: str | None) -> _Statement:
    """`stmt` restricted to rows of `tenant_id`; refuses to build an unscoped query."""
    if not tenant_id:
        raise ValueError("tenant-scoped query without a tenant")
    return stmt.where(table.c.tenant_id == tenant_id)


_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _identifier(name: str) -> str:
    ident = name.replace("-", "_").lower()
    if not _IDENTIFIER.match(ident):
        raise ValueError(f"{name!r} is not usable as a database/role name")
    return ident


def service_database_url(service: str) -> str:
    """`DATABASE_URL` (a server URL with admin credentials) pointed at `service`'s database."""
    server = os.environ.get("DATABASE_URL")
    if not server:
        raise RuntimeError("DATABASE_URL is not set")
    return (
        make_url(normalize_url(server))
        .set(database=_identifier(service))
        .render_as_string(hide_password=False)
    )


async def ensure_database(server_url: str, name: str) -> str:
    """Create role `name` and database `name` owned by it, if absent; return the database URL.

    The returned URL logs in as the service role (so tables it migrates are its own) with the
    server URL's password, which the role is given when created: on the dev/test servers (trust
    auth) there is none. Safe to call concurrently from several processes.
    """
    ident = _identifier(name)
    server = make_url(normalize_url(server_url))
    password = server.password
    engine = create_async_engine(
        server.render_as_string(hide_password=False),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
    )
    try:
        async with engine.connect() as conn:
            # Session-level lock: CREATE DATABASE cannot run inside a transaction.
            lock = {"k": _CREATE_DATABASE_LOCK_KEY}
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), lock)
            try:
                has_role = await conn.scalar(
                    text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": ident}
                )
                if not has_role:
                    stmt = f'CREATE ROLE "{ident}" LOGIN'
                    if password:
                        escaped = str(password).replace("'", "''")
                        stmt += f" PASSWORD '{escaped}'"
                    await conn.execute(text(stmt))
                has_db = await conn.scalar(
                    text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": ident}
                )
                if not has_db:
                    await conn.execute(text(f'CREATE DATABASE "{ident}" OWNER "{ident}"'))
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), lock)
    finally:
        await engine.dispose()
    return server.set(username=ident, database=ident).render_as_string(hide_password=False)


def _script(directory: Path) -> ScriptDirectory:
    if not (directory / "versions").is_dir():
        raise FileNotFoundError(f"{directory} has no versions/ directory of alembic revisions")
    config = Config()
    config.set_main_option("script_location", str(directory))
    return ScriptDirectory.from_config(config)


def _targets(migrations_dir: Path | None) -> list[tuple[Path, str]]:
    targets = [(RUNTIME_MIGRATIONS_DIR, RUNTIME_VERSION_TABLE)]
    if migrations_dir is not None:
        targets.append((Path(migrations_dir), SERVICE_VERSION_TABLE))
    return targets


def _upgrade(conn: Connection, directory: Path, version_table: str) -> None:
    script = _script(directory)
    config = script.config if hasattr(script, "config") else Config()

    def upgrade(revision: Any, _context: MigrationContext) -> Any:
        return script._upgrade_revs("heads", revision)

    with EnvironmentContext(config, script, fn=upgrade, destination_rev="heads") as env:
        env.configure(connection=conn, version_table=version_table)
        with env.begin_transaction():
            env.run_migrations()


def _upgrade_all(conn: Connection, targets: list[tuple[Path, str]]) -> None:
    # Held until commit: a second process waits here, then finds every revision applied.
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
    for directory, version_table in targets:
        _upgrade(conn, directory, version_table)


async def migrate(database_url: str, migrations_dir: Path | None = None) -> None:
    """Apply the runtime's tables, then `migrations_dir` (the service's alembic tree), to head.

    Everything runs in one transaction (PostgreSQL has transactional DDL) under an advisory lock,
    so concurrent starters serialise and a failed migration leaves nothing half-applied.
    """
    engine = create_async_engine(normalize_url(database_url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_upgrade_all, _targets(migrations_dir))
            await conn.commit()
    finally:
        await engine.dispose()


@functools.cache
def _heads(directory: Path) -> frozenset[str]:
    """The head revisions of an alembic tree, read once per process: the scripts a process runs
    with do not change under it, and reading them compiles every revision file (tenths of a
    second of CPU, which the readiness poll used to pay every few seconds in every service)."""
    return frozenset(_script(directory).get_heads())


def _applied(conn: Connection, targets: list[tuple[Path, str]]) -> bool:
    for directory, version_table in targets:
        found = conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": version_table})
        if not found.scalar_one():
            return False
        versions = sa_table(version_table, column("version_num"))
        current = set(conn.execute(select(versions.c.version_num)).scalars())
        if current != _heads(directory):
            return False
    return True


async def migrations_applied(database: str | Database, migrations_dir: Path | None = None) -> bool:
    """True when the runtime's and the service's migrations are both at head (readiness)."""
    if isinstance(database, Database):
        engine, owned = database.engine, False
    else:
        engine, owned = create_async_engine(normalize_url(database), poolclass=NullPool), True
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_applied, _targets(migrations_dir))
    except (DBAPIError, OSError):
        return False
    finally:
        if owned:
            await engine.dispose()


def service_database_name(service: str) -> str:
    """`service` unless SUUUPRA_<SERVICE>_DATABASE_NAME names another database (tests, two
    copies side by side)."""
    return os.environ.get(f"SUUUPRA_{service.upper()}_DATABASE_NAME", service)


async def prepare_service_database(server_url: str, service: str, migrations_dir: Path) -> str:
    """Create the service's database if absent, apply the runtime's and the service's
    migrations, and return its URL (what every service does before it connects)."""
    url = await ensure_database(server_url, service_database_name(service))
    await migrate(url, migrations_dir)
    return url


async def open_service_database(
    service: str,
    migrations_dir: Path | None,
    *,
    server_url: str | None = None,
    pool_size: int = 10,
) -> Database:
    """Start-up in one call: ensure the service's database, migrate it, connect a pool.

    `server_url` defaults to `DATABASE_URL` (a server URL with rights to create roles/databases).
    """
    server = server_url or os.environ.get("DATABASE_URL")
    if not server:
        raise RuntimeError("DATABASE_URL is not set")
    url = await ensure_database(server, service)
    await migrate(url, migrations_dir)
    return await Database.connect(url, pool_size=pool_size)
