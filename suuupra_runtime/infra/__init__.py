"""Embedded infrastructure processes: PostgreSQL, NATS JetStream, binaries, free ports.

Public API (re-exported here):
- `free_port() -> int`
- `EmbeddedPostgres(data_dir, port, *, durable=False)`: `start()`, `stop()`, context manager,
  `url` (postgresql+asyncpg, superuser, trust), `dsn`, `pid`; runs as a non-root system user when
  started by root.
- `EmbeddedNats(store_dir, port, monitor_port)`: `start()`, `stop()`, context manager, `url`,
  `monitor_url`, `pid`.
- `envoy_binary()`, `nats_binary()`, `postgres_bin_dir()`, `grpcurl_binary()` -> `Path`.
- `ManagedProcess`: a child process with graceful stop and a parent-death pact (for other servers,
  e.g. Envoy or service processes started by the dev runner).
"""

from suuupra_runtime.infra.binaries import (
    envoy_binary,
    grpcurl_binary,
    nats_binary,
    postgres_bin_dir,
)
from suuupra_runtime.infra.nats import EmbeddedNats, NatsStartError
from suuupra_runtime.infra.ports import free_port
from suuupra_runtime.infra.postgres import EmbeddedPostgres, PostgresStartError
from suuupra_runtime.infra.process import ManagedProcess

__all__ = [
    "EmbeddedNats",
    "EmbeddedPostgres",
    "ManagedProcess",
    "NatsStartError",
    "PostgresStartError",
    "envoy_binary",
    "free_port",
    "grpcurl_binary",
    "nats_binary",
    "postgres_bin_dir",
]
