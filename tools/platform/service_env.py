"""What a service process is told through its environment (the variables of ServerSettings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from suuupra_runtime.mesh.topology import JWKS_PATH, ServiceSpec, Topology

# Tokens are minted by identity and checked by every service runtime; one issuer and audience
# for the whole dev platform.
JWT_ISSUER = "https://identity.suuupra.local"
JWT_AUDIENCE = "suuupra"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class PlatformEndpoints:
    database_url: str
    """Server URL (maintenance database); each service derives and creates its own database."""
    nats_url: str
    smtp_addr: str | None = None
    """host:port of the SMTP server services send mail to (the dev platform's sink)."""


def jwks_url(topology: Topology) -> str | None:
    """Identity's JWKS on its app HTTP port: loopback, so services need no mTLS to fetch it."""
    spec = topology.jwks_service()
    return None if spec is None else f"http://{LOOPBACK}:{spec.http_port}{JWKS_PATH}"


def public_url(topology: Topology) -> str:
    """Where browsers and mail clients reach the platform: the edge's listener."""
    return f"http://{LOOPBACK}:{topology.edge.listener_port}"


def service_environment(
    topology: Topology,
    spec: ServiceSpec,
    endpoints: PlatformEndpoints,
    *,
    root: Path,
    log_level: str,
    base: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env = {
        key: value
        for key, value in base.items()
        # A developer's shell settings for another platform must not leak into this one.
        if not key.startswith("SUUUPRA_") and key not in {"DATABASE_URL", "NATS_URL"}
    }
    env.update(
        PYTHONPATH=f"{root}:{root / 'gen'}",
        PYTHONUNBUFFERED="1",
        DATABASE_URL=endpoints.database_url,
        NATS_URL=endpoints.nats_url,
        SUUUPRA_SERVICE_NAME=spec.name,
        SUUUPRA_GRPC_ADDR=f"{LOOPBACK}:{spec.app_port}",
        SUUUPRA_HTTP_ADDR=f"{LOOPBACK}:{spec.http_port}",
        # Calls to upstream services leave through the sidecar's outbound listener.
        SUUUPRA_OUTBOUND_ADDR=f"{LOOPBACK}:{spec.outbound_port}",
        SUUUPRA_JWT_ISSUER=JWT_ISSUER,
        SUUUPRA_JWT_AUDIENCE=JWT_AUDIENCE,
        SUUUPRA_LOG_LEVEL=log_level,
        # The platform's public address (the edge): the base of links services put into mails.
        SUUUPRA_PUBLIC_URL=public_url(topology),
    )
    if endpoints.smtp_addr:
        env["SUUUPRA_SMTP_ADDR"] = endpoints.smtp_addr
    url = jwks_url(topology)
    if url is not None:
        env["SUUUPRA_JWKS_URL"] = url
    if extra:
        env.update(extra)
    return env
