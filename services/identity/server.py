"""Wiring only: settings → database → handlers → servicers → ServiceDefinition."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from services.identity import store
from services.identity.api import SERVICE_NAMES, register_all
from services.identity.config import IdentityConfig
from services.identity.credentials import PasswordHashing
from services.identity.events import OutboxEvents
from services.identity.handlers import Identity, UserView
from services.identity.keyring import KeyRing
from services.identity.keys import Sealer
from services.identity.user_cache import USER_CHANGED_CHANNEL, UserCache
from suuupra_runtime.auth import JwtVerifier
from suuupra_runtime.db import Database, migrations_applied, prepare_service_database
from suuupra_runtime.events import NatsLink, OutboxRelay, StreamSpec
from suuupra_runtime.pg_listen import PgListener
from suuupra_runtime.server import ServiceDefinition

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = "identity"
STREAM = StreamSpec.for_domain(SERVICE)


@dataclass
class Wiring:
    """Everything `build` assembled; tests use it to reach the parts directly."""

    definition: ServiceDefinition
    identity: Identity
    database: Database
    database_url: str
    user_changes: PgListener


async def prepare_database(server_url: str) -> str:
    """Create the service database if absent and apply migrations (runtime tables + ours)."""
    return await prepare_service_database(server_url, SERVICE, MIGRATIONS)


async def build_wiring(
    database_url: str, nats_url: str, config: IdentityConfig | None = None
) -> Wiring:
    config = config or IdentityConfig.from_env()
    db = await Database.connect(database_url)
    hashing = PasswordHashing(max_concurrent=config.hash_concurrency)
    keys = KeyRing(db, Sealer("kek", config.key_encryption_key), config)
    events = OutboxEvents(Sealer(config.delivery_key_id, config.delivery_key))
    reads = await store.FastReads.connect(database_url)
    # "Get my user" from memory while the triggers' change notices reach this process.
    cache: UserCache[UserView] = UserCache(lambda: listener.listening)
    listener = PgListener(
        database_url, USER_CHANGED_CHANNEL, cache.invalidate, on_connected=cache.reset
    )
    identity = Identity(db, config, hashing, keys, events.emit, reads=reads, user_cache=cache)
    relay = OutboxRelay(db, nats_url)
    link = NatsLink(nats_url, name=SERVICE, streams=[STREAM])

    async def migrations_ready() -> bool:
        return await migrations_applied(db, MIGRATIONS)

    async def keys_ready() -> bool:
        return bool(json.loads(keys.jwks_json)["keys"])

    async def jwks_route() -> tuple[int, str, bytes]:
        return 200, "application/json", keys.jwks_json

    async def discovery_route() -> tuple[int, str, bytes]:
        return 200, "application/json", keys.discovery_json()

    async def close() -> None:
        hashing.close()
        await relay.close()
        await link.close()
        await reads.close()
        await listener.close()
        await db.dispose()

    definition = ServiceDefinition(
        name=SERVICE,
        register=lambda server: register_all(server, identity),
        service_names=SERVICE_NAMES,
        readiness=[db.ping, migrations_ready, link.ready, keys_ready],
        on_start=[keys.load],
        background=[link.maintain, relay.run, keys.refresh_forever, listener.run],
        on_stop=[close],
        http_routes={
            "/.well-known/jwks.json": jwks_route,
            "/.well-known/openid-configuration": discovery_route,
        },
        # Our own tokens are verified against the in-memory key ring: no HTTP hop to ourselves,
        # so refetching on an unknown kid costs nothing and needs no rate limit.
        jwt_verifier=JwtVerifier(
            keys,
            issuer=config.issuer,
            audience=config.audience,
            max_key_age_seconds=5.0,
            min_refetch_interval_seconds=0.0,
        ),
    )
    return Wiring(definition, identity, db, database_url, listener)


async def build() -> ServiceDefinition:
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        raise SystemExit("DATABASE_URL (a PostgreSQL server URL) is required")
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    database_url = await prepare_database(server_url)
    return (await build_wiring(database_url, nats_url)).definition
