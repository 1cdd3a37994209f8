"""The mesh topology (`mesh/topology.yaml`) as validated, frozen dataclasses.

Everything mesh-shaped (Envoy configs, dev certificates, the dev runner, k8s manifests) is derived
from one `Topology`, so a mistake here must be refused with a message naming the bad field rather
than surface later as a puzzling Envoy 403.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOPOLOGY_PATH = ROOT / "mesh" / "topology.yaml"

EDGE = "edge"
"""The caller name of the edge proxy in `callers[].from` (and its workload name)."""

PORT_BLOCK_SIZE = 5
APP_OFFSET, INBOUND_OFFSET, OUTBOUND_OFFSET, ADMIN_OFFSET, HTTP_OFFSET = range(PORT_BLOCK_SIZE)

# Names that would collide with directories of the certificate tree (see certs.py).
_RESERVED_NAMES = frozenset({EDGE, "ca", "sds"})
_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}[a-z0-9]$")
_PACKAGE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_STREAM = re.compile(r"^[A-Z][A-Z0-9_]*$")
_RPC = re.compile(r"^/[A-Za-z0-9_.]+(/[A-Za-z0-9_]*)?$")


class TopologyError(ValueError):
    """The topology is invalid; `problems` holds one `field: reason` line per mistake."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid mesh topology:\n  " + "\n  ".join(self.problems))


@dataclass(frozen=True)
class Infrastructure:
    postgres_port: int
    nats_port: int
    nats_monitor_port: int
    smtp_port: int | None = None
    """The dev platform's SMTP sink (every mail sent in dev lands there); optional."""

    def ports(self) -> tuple[int, ...]:
        """Every port the infrastructure processes listen on."""
        base = (self.postgres_port, self.nats_port, self.nats_monitor_port)
        return base if self.smtp_port is None else (*base, self.smtp_port)


@dataclass(frozen=True)
class RateLimit:
    requests_per_second: int
    burst: int


@dataclass(frozen=True)
class EdgeSpec:
    port_block: int
    rate_limit: RateLimit
    max_request_bytes: int
    cors_allowed_origins: tuple[str, ...]
    debug_service: str
    """Service that answers `grpc.health.v1` and server reflection sent to the edge itself."""
    route_timeout_seconds: float
    stream_timeout_seconds: float
    """Idle timeout for long-lived server streams (route timeout 0 = no overall limit)."""
    streaming_rpcs: tuple[str, ...]
    """Streaming RPCs (method or prefix): no overall route timeout, no whole-request buffer."""

    @property
    def listener_port(self) -> int:
        return self.port_block + APP_OFFSET

    @property
    def admin_port(self) -> int:
        return self.port_block + ADMIN_OFFSET


@dataclass(frozen=True)
class CallerRule:
    from_service: str
    """A service name or `edge`."""
    rpcs: tuple[str, ...]
    """Full method names (`/pkg.Service/Method`) or prefixes (`/pkg.`, `/pkg.Service/`)."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port_block: int
    database: str | None
    streams: tuple[str, ...]
    grpc_packages: tuple[str, ...]
    upstreams: tuple[str, ...]
    http_paths: tuple[str, ...]
    callers: tuple[CallerRule, ...]
    external_ports: tuple[int, ...] = ()
    """TCP ports the app dials outside the cluster (SMTP relay, provider APIs, object storage);
    the only egress beyond the mesh, PostgreSQL and NATS that its NetworkPolicy opens."""

    @property
    def app_port(self) -> int:
        return self.port_block + APP_OFFSET

    @property
    def inbound_port(self) -> int:
        return self.port_block + INBOUND_OFFSET

    @property
    def outbound_port(self) -> int:
        return self.port_block + OUTBOUND_OFFSET

    @property
    def admin_port(self) -> int:
        return self.port_block + ADMIN_OFFSET

    @property
    def http_port(self) -> int:
        return self.port_block + HTTP_OFFSET

    @property
    def route_prefixes(self) -> tuple[str, ...]:
        """gRPC path prefixes that reach this service (`/suuupra.ledger.v1.`)."""
        return tuple(f"/{package}." for package in self.grpc_packages)


JWKS_PATH = "/.well-known/jwks.json"
"""Where the service that issues user tokens (identity) publishes its public keys."""


@dataclass(frozen=True)
class Topology:
    trust_domain: str
    namespace: str
    infrastructure: Infrastructure
    edge: EdgeSpec
    services: Mapping[str, ServiceSpec]

    def service(self, name: str) -> ServiceSpec:
        try:
            return self.services[name]
        except KeyError:
            raise KeyError(f"unknown service {name!r}; known: {sorted(self.services)}") from None

    def callers_of(self, name: str) -> tuple[CallerRule, ...]:
        return self.service(name).callers

    def jwks_service(self) -> ServiceSpec | None:
        """The service publishing the JWKS: the one whose `http_paths` cover JWKS_PATH."""
        for spec in self.services.values():
            if any(JWKS_PATH.startswith(p) for p in spec.http_paths):
                return spec
        return None

    def jwks_only_peer(self, spec: ServiceSpec) -> ServiceSpec | None:
        """The JWKS publisher when `spec` reaches it for the public keys alone: every service
        verifies user tokens, so its sidecar routes the publisher's `http_paths` (open to every
        mesh workload) even when the publisher is not one of its upstreams."""
        publisher = self.jwks_service()
        if publisher is None or publisher.name == spec.name or publisher.name in spec.upstreams:
            return None
        return publisher

    def mesh_peers(self, spec: ServiceSpec) -> tuple[str, ...]:
        """The sidecars `spec` talks to over mTLS: its upstreams and the JWKS publisher."""
        extra = self.jwks_only_peer(spec)
        return (*spec.upstreams, *((extra.name,) if extra else ()))

    def edge_services(self) -> tuple[ServiceSpec, ...]:
        """Services the edge may route to (those with a `from: edge` caller rule)."""
        return tuple(
            s for s in self.services.values() if any(c.from_service == EDGE for c in s.callers)
        )


def spiffe_id(topology: Topology, name: str) -> str:
    """SPIFFE id of a workload (a service or `edge`), the URI SAN in its certificate."""
    if name != EDGE and name not in topology.services:
        raise KeyError(f"unknown workload {name!r}")
    return f"spiffe://{topology.trust_domain}/ns/{topology.namespace}/sa/{name}"


def workloads(topology: Topology) -> tuple[str, ...]:
    """Every workload that gets a certificate: each service and the edge."""
    return (*topology.services, EDGE)


def load_topology(path: Path = DEFAULT_TOPOLOGY_PATH) -> Topology:
    with Path(path).open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return parse_topology(data)


def parse_topology(data: Any) -> Topology:
    """Build and validate a topology from its YAML structure; raises `TopologyError`."""
    return _Parser().parse(data)


class _Parser:
    """Collects every problem instead of stopping at the first, so one run shows all of them."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, field: str, reason: str) -> None:
        self.problems.append(f"{field}: {reason}")

    # -- typed readers -------------------------------------------------------------------------

    def mapping(self, data: Any, field: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(data, Mapping):
            self.fail(field, f"must be a mapping, got {type(data).__name__}")
            return {}
        for key in data:
            if key not in allowed:
                self.fail(f"{field}.{key}" if field else str(key), "unknown field")
        return data

    def mapping_keys_any(self, data: Any, field: str) -> Mapping[str, Any]:
        if not isinstance(data, Mapping):
            self.fail(field, f"must be a mapping, got {type(data).__name__}")
            return {}
        return data

    def required(self, data: Mapping[str, Any], key: str, field: str) -> Any:
        if key not in data:
            self.fail(_join(field, key), "required")
            return None
        return data[key]

    def string(self, value: Any, field: str, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(value, str) or not value:
            self.fail(field, "must be a non-empty string")
            return ""
        if pattern is not None and not pattern.match(value):
            self.fail(field, f"{value!r} does not match {pattern.pattern}")
        return value

    def integer(self, value: Any, field: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, "must be an integer")
            return low
        if not low <= value <= high:
            self.fail(field, f"{value} is outside {low}..{high}")
        return value

    def number(self, value: Any, field: str, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(field, "must be a number")
            return low
        if not low <= value <= high:
            self.fail(field, f"{value} is outside {low}..{high}")
        return float(value)

    def strings(
        self, value: Any, field: str, pattern: re.Pattern[str] | None = None
    ) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(field, "must be a list")
            return ()
        items = tuple(self.string(v, f"{field}[{i}]", pattern) for i, v in enumerate(value))
        for i, item in enumerate(items):
            if item in items[:i]:
                self.fail(f"{field}[{i}]", f"duplicate {item!r}")
        return items

    # -- sections ------------------------------------------------------------------------------

    def parse(self, data: Any) -> Topology:
        top = self.mapping(
            data, "", {"trust_domain", "namespace", "infrastructure", "edge", "services"}
        )
        trust_domain = self.string(
            self.required(top, "trust_domain", ""),
            "trust_domain",
            re.compile(r"^[a-z0-9.-]+$"),
        )
        namespace = self.string(
            self.required(top, "namespace", ""), "namespace", re.compile(r"^[a-z0-9-]+$")
        )
        infrastructure = self.infrastructure(self.required(top, "infrastructure", ""))
        raw_services = self.mapping_keys_any(self.required(top, "services", ""), "services")
        services = {str(name): self.service(str(name), spec) for name, spec in raw_services.items()}
        edge = self.edge(self.required(top, "edge", ""), services)
        self.cross_checks(infrastructure, edge, services)
        if self.problems:
            raise TopologyError(self.problems)
        return Topology(trust_domain, namespace, infrastructure, edge, services)

    def infrastructure(self, data: Any) -> Infrastructure:
        keys = {"postgres_port", "nats_port", "nats_monitor_port"}
        m = self.mapping(data, "infrastructure", keys | {"smtp_port"})
        ports = {
            k: self.integer(self.required(m, k, "infrastructure"), f"infrastructure.{k}", 1, 65535)
            for k in sorted(keys)
        }
        smtp = m.get("smtp_port")
        smtp_port = (
            None if smtp is None else self.integer(smtp, "infrastructure.smtp_port", 1, 65535)
        )
        return Infrastructure(**ports, smtp_port=smtp_port)

    def edge(self, data: Any, services: Mapping[str, ServiceSpec]) -> EdgeSpec:
        m = self.mapping(
            data,
            "edge",
            {
                "port_block",
                "rate_limit",
                "max_request_bytes",
                "cors_allowed_origins",
                "debug_service",
                "route_timeout_seconds",
                "stream_timeout_seconds",
                "streaming_rpcs",
            },
        )
        block = self.integer(
            self.required(m, "port_block", "edge"),
            "edge.port_block",
            1024,
            65535 - PORT_BLOCK_SIZE,
        )
        rl = self.mapping(
            self.required(m, "rate_limit", "edge"),
            "edge.rate_limit",
            {"requests_per_second", "burst"},
        )
        rps = self.integer(
            self.required(rl, "requests_per_second", "edge.rate_limit"),
            "edge.rate_limit.requests_per_second",
            1,
            1_000_000,
        )
        burst = self.integer(
            self.required(rl, "burst", "edge.rate_limit"), "edge.rate_limit.burst", 1, 10_000_000
        )
        if burst < rps:
            self.fail("edge.rate_limit.burst", f"{burst} is below requests_per_second {rps}")
        max_bytes = self.integer(
            self.required(m, "max_request_bytes", "edge"),
            "edge.max_request_bytes",
            1024,
            1 << 30,
        )
        origins = self.strings(
            m.get("cors_allowed_origins"),
            "edge.cors_allowed_origins",
            re.compile(r"^https?://[^/\s]+$"),
        )
        debug_default = "identity" if "identity" in services else next(iter(services), "")
        debug = m.get("debug_service", debug_default)
        if services and debug not in services:
            self.fail("edge.debug_service", f"unknown service {debug!r}")
        route_timeout = self.number(
            m.get("route_timeout_seconds", 15), "edge.route_timeout_seconds", 0.1, 3600
        )
        stream_timeout = self.number(
            m.get("stream_timeout_seconds", 300), "edge.stream_timeout_seconds", 1, 86400
        )
        streaming = self.strings(m.get("streaming_rpcs"), "edge.streaming_rpcs", _RPC)
        return EdgeSpec(
            port_block=block,
            rate_limit=RateLimit(rps, burst),
            max_request_bytes=max_bytes,
            cors_allowed_origins=origins,
            debug_service=str(debug),
            route_timeout_seconds=route_timeout,
            stream_timeout_seconds=stream_timeout,
            streaming_rpcs=streaming,
        )

    def service(self, name: str, data: Any) -> ServiceSpec:
        field = f"services.{name}"
        if not _SERVICE_NAME.match(name):
            self.fail(field, f"service name must match {_SERVICE_NAME.pattern}")
        if name in _RESERVED_NAMES:
            self.fail(field, f"{name!r} is a reserved name")
        m = self.mapping(
            data,
            field,
            {
                "port_block",
                "database",
                "streams",
                "grpc_packages",
                "upstreams",
                "http_paths",
                "callers",
                "external_ports",
            },
        )
        block = self.integer(
            self.required(m, "port_block", field),
            f"{field}.port_block",
            1024,
            65535 - PORT_BLOCK_SIZE,
        )
        database = m.get("database")
        if database is not None:
            database = self.string(database, f"{field}.database", re.compile(r"^[a-z][a-z0-9_]*$"))
        streams = self.strings(m.get("streams"), f"{field}.streams", _STREAM)
        packages = self.strings(
            self.required(m, "grpc_packages", field), f"{field}.grpc_packages", _PACKAGE
        )
        if not packages and "grpc_packages" in m:
            self.fail(f"{field}.grpc_packages", "must list at least one package")
        upstreams = self.strings(m.get("upstreams"), f"{field}.upstreams")
        http_paths = self.strings(m.get("http_paths"), f"{field}.http_paths", re.compile(r"^/"))
        raw_ports = m.get("external_ports") or []
        if not isinstance(raw_ports, list):
            self.fail(f"{field}.external_ports", "must be a list of TCP ports")
            raw_ports = []
        external_ports = tuple(
            sorted(
                {
                    self.integer(port, f"{field}.external_ports[{i}]", 1, 65535)
                    for i, port in enumerate(raw_ports)
                }
            )
        )
        callers: list[CallerRule] = []
        raw_callers = m.get("callers") or []
        if not isinstance(raw_callers, list):
            self.fail(f"{field}.callers", "must be a list")
            raw_callers = []
        for i, raw in enumerate(raw_callers):
            cfield = f"{field}.callers[{i}]"
            c = self.mapping(raw, cfield, {"from", "rpcs"})
            source = self.string(self.required(c, "from", cfield), f"{cfield}.from")
            rpcs = self.strings(self.required(c, "rpcs", cfield), f"{cfield}.rpcs", _RPC)
            if not rpcs and "rpcs" in c:
                self.fail(f"{cfield}.rpcs", "must list at least one RPC or prefix")
            for j, rpc in enumerate(rpcs):
                if not any(rpc.startswith(f"/{p}.") for p in packages):
                    self.fail(
                        f"{cfield}.rpcs[{j}]",
                        f"{rpc!r} is not in this service's grpc_packages {list(packages)}",
                    )
            callers.append(CallerRule(source, rpcs))
        for i, rule in enumerate(callers):
            if any(rule.from_service == other.from_service for other in callers[:i]):
                self.fail(f"{field}.callers[{i}].from", f"duplicate caller {rule.from_service!r}")
        return ServiceSpec(
            name=name,
            port_block=block,
            database=database,
            streams=streams,
            grpc_packages=packages,
            upstreams=upstreams,
            http_paths=http_paths,
            callers=tuple(callers),
            external_ports=external_ports,
        )

    def cross_checks(
        self, infra: Infrastructure, edge: EdgeSpec, services: Mapping[str, ServiceSpec]
    ) -> None:
        # Every port any process of the dev platform listens on, with who owns it.
        owners: dict[int, str] = {}

        def claim(port: int, owner: str) -> None:
            if port in owners:
                self.fail(owner, f"port {port} collides with {owners[port]}")
            else:
                owners[port] = owner

        claim(infra.postgres_port, "infrastructure.postgres_port")
        claim(infra.nats_port, "infrastructure.nats_port")
        claim(infra.nats_monitor_port, "infrastructure.nats_monitor_port")
        if infra.smtp_port is not None:
            claim(infra.smtp_port, "infrastructure.smtp_port")
        for offset in range(PORT_BLOCK_SIZE):
            claim(edge.port_block + offset, "edge.port_block")
        for name, svc in services.items():
            for offset in range(PORT_BLOCK_SIZE):
                claim(svc.port_block + offset, f"services.{name}.port_block")

        package_owner: dict[str, str] = {}
        for name, svc in services.items():
            for i, package in enumerate(svc.grpc_packages):
                field = f"services.{name}.grpc_packages[{i}]"
                if package in package_owner:
                    self.fail(field, f"{package!r} is already served by {package_owner[package]}")
                package_owner[package] = name

        for name, svc in services.items():
            for i, upstream in enumerate(svc.upstreams):
                field = f"services.{name}.upstreams[{i}]"
                if upstream == name:
                    self.fail(field, "a service cannot be its own upstream")
                elif upstream not in services:
                    self.fail(field, f"unknown service {upstream!r}")
                elif not any(c.from_service == name for c in services[upstream].callers):
                    self.fail(field, f"{upstream!r} has no caller rule allowing {name!r}")
            for i, rule in enumerate(svc.callers):
                field = f"services.{name}.callers[{i}].from"
                source = rule.from_service
                if source == EDGE:
                    continue
                if source not in services:
                    self.fail(field, f"{source!r} is neither a service nor {EDGE!r}")
                elif source == name:
                    self.fail(field, "a service does not call itself through the mesh")
                elif name not in services[source].upstreams:
                    self.fail(field, f"{source!r} does not list {name!r} in its upstreams")

        for i, rpc in enumerate(edge.streaming_rpcs):
            if not any(rpc.startswith(p) for s in services.values() for p in s.route_prefixes):
                self.fail(f"edge.streaming_rpcs[{i}]", f"{rpc!r} matches no service's packages")


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key
