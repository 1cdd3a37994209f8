"""Server settings from the environment (`ServerSettings.from_env("identity")`).

| variable                             | default            | meaning                           |
|--------------------------------------|--------------------|-----------------------------------|
| `SUUUPRA_GRPC_ADDR`                  | `127.0.0.1:50051`  | gRPC listen address (loopback)    |
| `SUUUPRA_HTTP_ADDR`                  | `127.0.0.1:8081`   | metrics/healthz/routes; `off`     |
| `SUUUPRA_MAX_CONCURRENT_RPCS`        | `1000`             | then RESOURCE_EXHAUSTED; 0 = none |
| `SUUUPRA_MAX_MESSAGE_BYTES`          | `4194304`          | largest request/response message  |
| `SUUUPRA_GRACE_SECONDS`              | `10`               | in-flight calls' time after SIGTERM |
| `SUUUPRA_DRAIN_DELAY_SECONDS`        | `1`                | NOT_SERVING before listener closes |
| `SUUUPRA_READINESS_INTERVAL_SECONDS` | `2`                | readiness poll period             |
| `SUUUPRA_JWT_ISSUER`                 | `suuupra-identity` | required `iss` of access tokens   |
| `SUUUPRA_JWT_AUDIENCE`               | `suuupra`          | required `aud` of access tokens   |
| `SUUUPRA_JWKS_URL`                   | unset              | identity's JWKS; enables tokens   |
| `SUUUPRA_LOG_LEVEL`                  | `INFO`             | JSON lines on stderr              |
| `SUUUPRA_GRPC_POLLER_BATCH`          | `1`                | SCHED_BATCH for grpc's poller; `0` |

`DATABASE_URL` and `NATS_URL` are read by the data helpers, not here. A malformed value raises
`ValueError` naming the variable, so a misconfigured pod fails at start, not at first request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be 1 or 0, got {raw!r}")


def split_host_port(address: str, variable: str = "address") -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{variable} must look like HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class ServerSettings:
    service_name: str
    grpc_addr: str = "127.0.0.1:50051"
    http_addr: str | None = "127.0.0.1:8081"
    max_concurrent_rpcs: int | None = 1000
    max_message_bytes: int = 4 * 1024 * 1024
    grace_seconds: float = 10.0
    drain_delay_seconds: float = 1.0
    readiness_interval_seconds: float = 2.0
    jwt_issuer: str = "suuupra-identity"
    jwt_audience: str = "suuupra"
    jwks_url: str | None = None
    log_level: str = "INFO"
    keepalive_time_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0
    # grpc_poller.py: the poller thread must not preempt the event loop on a busy core.
    batch_grpc_poller: bool = True

    @property
    def error_domain(self) -> str:
        """`ErrorInfo.domain` of errors this service raises."""
        return f"{self.service_name}.suuupra.local"

    @classmethod
    def from_env(cls, service_name: str, env: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if env is None else env
        grpc_addr = env.get("SUUUPRA_GRPC_ADDR", "").strip() or cls.grpc_addr
        split_host_port(grpc_addr, "SUUUPRA_GRPC_ADDR")
        http_raw = env.get("SUUUPRA_HTTP_ADDR", "").strip() or "127.0.0.1:8081"
        http_addr: str | None = None if http_raw.lower() == "off" else http_raw
        if http_addr is not None:
            split_host_port(http_addr, "SUUUPRA_HTTP_ADDR")
        max_rpcs = _int(env, "SUUUPRA_MAX_CONCURRENT_RPCS", 1000)
        log_level = env.get("SUUUPRA_LOG_LEVEL", "INFO").strip().upper() or "INFO"
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"SUUUPRA_LOG_LEVEL must be a logging level, got {log_level!r}")
        return cls(
            service_name=service_name,
            grpc_addr=grpc_addr,
            http_addr=http_addr,
            max_concurrent_rpcs=max_rpcs or None,
            max_message_bytes=_int(env, "SUUUPRA_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024),
            grace_seconds=_float(env, "SUUUPRA_GRACE_SECONDS", 10.0),
            drain_delay_seconds=_float(env, "SUUUPRA_DRAIN_DELAY_SECONDS", 1.0),
            readiness_interval_seconds=_float(env, "SUUUPRA_READINESS_INTERVAL_SECONDS", 2.0)
            or 2.0,
            jwt_issuer=env.get("SUUUPRA_JWT_ISSUER", "").strip() or cls.jwt_issuer,
            jwt_audience=env.get("SUUUPRA_JWT_AUDIENCE", "").strip() or cls.jwt_audience,
            jwks_url=env.get("SUUUPRA_JWKS_URL", "").strip() or None,
            log_level=log_level,
            batch_grpc_poller=_flag(env, "SUUUPRA_GRPC_POLLER_BATCH", True),
        )


__all__ = ["ServerSettings", "split_host_port"]
