"""Envoy bootstrap configs for the service sidecars and the edge, rendered from the topology.

Both renderers return a plain dict (the Envoy v3 bootstrap) so callers can dump it to YAML, embed
it in a ConfigMap or inspect it in tests. Where things listen and how upstream sidecars are
reached is the `Addressing`'s job: `DevAddressing` (loopback + topology port blocks) or
`KubernetesAddressing` (fixed in-pod ports, cluster DNS names).

Authorization decisions encoded here (the runtime repeats the per-RPC check in the app):
- A sidecar's inbound RBAC allows a caller only on the RPCs its topology rule lists.
- `grpc.health.v1.Health` is open to every workload of the trust domain (any certificate our CA
  issued): health says nothing secret, and the dev runner, the edge and operators use it.
- The service's `http_paths` (identity's JWKS, files' signed links, notifications' unsubscribe
  pages) are open to every workload of the trust domain, the edge included, for GET, HEAD and
  POST only: each carries its own authorization (public keys, signed tokens), and POST is what
  a mail client's one-click unsubscribe (RFC 8058) sends.
- Server reflection is open to the edge only, and only on the edge's `debug_service`, so
  `grpcurl -plaintext <edge> list` works in dev.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from suuupra_runtime.mesh.certs import SECRET_CERTIFICATE, SECRET_TRUSTED_CA, WorkloadPaths
from suuupra_runtime.mesh.topology import (
    EDGE,
    JWKS_PATH,
    EdgeSpec,
    ServiceSpec,
    Topology,
    spiffe_id,
)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = ("/grpc.reflection.v1alpha.", "/grpc.reflection.v1.")
# Methods a sidecar admits on its service's plain HTTP paths (see the module docstring).
HTTP_PATH_METHODS = ("GET", "HEAD", "POST")
JWT_PROVIDER = "identity"
CORS_EXPOSED_HEADERS = "grpc-status,grpc-message,grpc-status-details-bin"
CORS_ALLOWED_HEADERS = (
    "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization,x-request-id,traceparent"
)

_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    ".HttpConnectionManager"
)
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
# Apps need no x-envoy-* headers; leaving them out is less work per request on every hop.
_QUIET_ROUTER = {"@type": _ROUTER, "suppress_envoy_headers": True}
_RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
_DOWNSTREAM_TLS = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)
_UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_GRPC_WEB = "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"
_CORS = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
_CORS_POLICY = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
_LOCAL_RL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
_BUFFER = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
_BUFFER_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute"
_JWT = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
_LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
# gRPC-Web sees Envoy's own 413/429 replies with the generic HTTP mapping (UNKNOWN/UNAVAILABLE):
# Envoy decides "is this gRPC" before grpc_web rewrites the content type. This runs last on the
# response (first in the chain) and states what happened: RESOURCE_EXHAUSTED. Native gRPC gets
# the same code from the rate limit option and the 413 local-reply mapper.
_GRPC_WEB_LIMIT_STATUS = """
function envoy_on_response(handle)
  local headers = handle:headers()
  local status = headers:get(":status")
  if (status == "413" or status == "429") and headers:get("grpc-status") ~= nil then
    headers:replace("grpc-status", "8")
  end
end
"""
_NO_BUFFER = {"envoy.filters.http.buffer": {"@type": _BUFFER_PER_ROUTE, "disabled": True}}


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


class Addressing(Protocol):
    """Where each piece listens and how peers are reached, per deployment target."""

    def app(self, service: ServiceSpec) -> Endpoint: ...
    def app_http(self, service: ServiceSpec) -> Endpoint: ...
    def inbound(self, service: ServiceSpec) -> Endpoint: ...
    def outbound(self, service: ServiceSpec) -> Endpoint: ...
    def admin(self, service: ServiceSpec) -> Endpoint: ...
    def sidecar(self, service: ServiceSpec) -> Endpoint:
        """Where other workloads reach `service`'s inbound listener."""
        ...

    def edge_listener(self, edge: EdgeSpec) -> Endpoint: ...
    def edge_admin(self, edge: EdgeSpec) -> Endpoint: ...


class DevAddressing:
    """Every process on one host, on loopback, on the ports of the topology's port blocks."""

    host = "127.0.0.1"

    def app(self, service: ServiceSpec) -> Endpoint:
        return Endpoint(self.host, service.app_port)

    def app_http(self, service: ServiceSpec) -> Endpoint:
        return Endpoint(self.host, service.http_port)

    def inbound(self, service: ServiceSpec) -> Endpoint:
        return Endpoint(self.host, service.inbound_port)

    def outbound(self, service: ServiceSpec) -> Endpoint:
        return Endpoint(self.host, service.outbound_port)

    def admin(self, service: ServiceSpec) -> Endpoint:
        return Endpoint(self.host, service.admin_port)

    def sidecar(self, service: ServiceSpec) -> Endpoint:
        return Endpoint(self.host, service.inbound_port)

    def edge_listener(self, edge: EdgeSpec) -> Endpoint:
        return Endpoint(self.host, edge.listener_port)

    def edge_admin(self, edge: EdgeSpec) -> Endpoint:
        return Endpoint(self.host, edge.admin_port)


@dataclass(frozen=True)
class KubernetesAddressing:
    """One pod per service (app + sidecar share the pod's loopback); peers via cluster DNS."""

    namespace: str
    app_port: int = 50051
    app_http_port: int = 8081
    inbound_port: int = 15443
    outbound_port: int = 15001
    admin_port: int = 15000
    edge_port: int = 8080
    cluster_domain: str = "cluster.local"

    def app(self, service: ServiceSpec) -> Endpoint:
        return Endpoint("127.0.0.1", self.app_port)

    def app_http(self, service: ServiceSpec) -> Endpoint:
        return Endpoint("127.0.0.1", self.app_http_port)

    def inbound(self, service: ServiceSpec) -> Endpoint:
        return Endpoint("0.0.0.0", self.inbound_port)  # noqa: S104 - the pod's mTLS entry

    def outbound(self, service: ServiceSpec) -> Endpoint:
        return Endpoint("127.0.0.1", self.outbound_port)

    def admin(self, service: ServiceSpec) -> Endpoint:
        return Endpoint("127.0.0.1", self.admin_port)

    def sidecar(self, service: ServiceSpec) -> Endpoint:
        host = f"{service.name}.{self.namespace}.svc.{self.cluster_domain}"
        return Endpoint(host, self.inbound_port)

    def edge_listener(self, edge: EdgeSpec) -> Endpoint:
        return Endpoint("0.0.0.0", self.edge_port)  # noqa: S104 - behind the ingress / LB

    def edge_admin(self, edge: EdgeSpec) -> Endpoint:
        return Endpoint("127.0.0.1", self.admin_port)


# -- sidecar -----------------------------------------------------------------------------------


def render_sidecar(
    topology: Topology, service: str, addressing: Addressing, cert_dir: str
) -> dict[str, Any]:
    """Bootstrap for `service`'s sidecar: mTLS inbound with RBAC, loopback outbound."""
    spec = topology.service(service)
    paths = WorkloadPaths(cert_dir, service)
    clusters = [
        _cluster("app_grpc", addressing.app(spec), http2=True),
        *(
            [_cluster("app_http", addressing.app_http(spec), http2=False)]
            if spec.http_paths
            else []
        ),
        *(
            _mesh_cluster(topology, topology.service(u), addressing, paths)
            for u in topology.mesh_peers(spec)
        ),
    ]
    return {
        "node": {"id": f"{service}-sidecar", "cluster": service},
        "admin": _admin(addressing.admin(spec)),
        "static_resources": {
            "listeners": [
                _inbound_listener(topology, spec, addressing, paths),
                _outbound_listener(topology, spec, addressing),
            ],
            "clusters": clusters,
        },
        "overload_manager": _overload_manager(),
    }


def _inbound_listener(
    topology: Topology, spec: ServiceSpec, addressing: Addressing, paths: WorkloadPaths
) -> dict[str, Any]:
    routes: list[dict[str, Any]] = [
        {
            "match": {"prefix": http_path},
            "route": {"cluster": "app_http", "timeout": "15s"},
        }
        for http_path in spec.http_paths
    ]
    routes.append({"match": {"prefix": "/"}, "route": _grpc_route_action("app_grpc")})
    hcm = {
        "@type": _HCM,
        "stat_prefix": "inbound",
        "codec_type": "AUTO",
        # The edge (or the calling app's runtime) mints x-request-id; a UUID per hop is waste.
        "generate_request_id": False,
        # The app learns its caller from XFCC; SANITIZE_SET drops anything a client sent and
        # writes the verified peer certificate's URI SAN (its SPIFFE id).
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"uri": True},
        "http2_protocol_options": _h2_options(),
        "route_config": {
            "name": "inbound",
            "virtual_hosts": [{"name": spec.name, "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            {"name": "envoy.filters.http.rbac", "typed_config": _rbac(topology, spec)},
            {"name": "envoy.filters.http.router", "typed_config": _QUIET_ROUTER},
        ],
    }
    tls = {
        "@type": _DOWNSTREAM_TLS,
        "require_client_certificate": True,
        "common_tls_context": {
            **_common_tls(paths, alpn=["h2", "http/1.1"]),
            "validation_context_sds_secret_config": _sds_secret(
                SECRET_TRUSTED_CA, paths.sds_validation, paths.sds_dir
            ),
        },
    }
    return {
        "name": "inbound",
        "address": _address(addressing.inbound(spec)),
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ],
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": tls,
                },
            }
        ],
    }


def _rbac(topology: Topology, spec: ServiceSpec) -> dict[str, Any]:
    mesh_workloads = {
        "authenticated": {
            "principal_name": {
                "prefix": f"spiffe://{topology.trust_domain}/ns/{topology.namespace}/sa/"
            }
        }
    }
    policies: dict[str, Any] = {}
    for rule in spec.callers:
        policies[f"caller-{rule.from_service}"] = {
            "permissions": [_rpc_permission(rpc) for rpc in rule.rpcs],
            "principals": [_principal(topology, rule.from_service)],
        }
    policies["health"] = {
        "permissions": [_path_prefix(HEALTH_PREFIX)],
        "principals": [mesh_workloads],
    }
    if spec.http_paths:
        policies["http-paths"] = {
            "permissions": [
                {
                    "and_rules": {
                        "rules": [
                            {"or_rules": {"rules": [_method(m) for m in HTTP_PATH_METHODS]}},
                            {"or_rules": {"rules": [_path_prefix(p) for p in spec.http_paths]}},
                        ]
                    }
                }
            ],
            "principals": [mesh_workloads],
        }
    if topology.edge.debug_service == spec.name:
        policies["edge-reflection"] = {
            "permissions": [_path_prefix(p) for p in REFLECTION_PREFIXES],
            "principals": [_principal(topology, EDGE)],
        }
    return {"@type": _RBAC, "rules": {"action": "ALLOW", "policies": policies}}


def _method(method: str) -> dict[str, Any]:
    return {"header": {"name": ":method", "string_match": {"exact": method}}}


def _principal(topology: Topology, workload: str) -> dict[str, Any]:
    return {"authenticated": {"principal_name": {"exact": spiffe_id(topology, workload)}}}


def _rpc_permission(rpc: str) -> dict[str, Any]:
    """`/pkg.` or `/pkg.Service/` are prefixes; anything else is one full method name."""
    if rpc.endswith((".", "/")):
        return _path_prefix(rpc)
    return {"url_path": {"path": {"exact": rpc}}}


def _path_prefix(prefix: str) -> dict[str, Any]:
    return {"url_path": {"path": {"prefix": prefix}}}


def _outbound_listener(
    topology: Topology, spec: ServiceSpec, addressing: Addressing
) -> dict[str, Any]:
    routes: list[dict[str, Any]] = []
    for name in spec.upstreams:
        upstream = topology.service(name)
        cluster = _mesh_cluster_name(name)
        routes += [
            {"match": {"prefix": prefix}, "route": _grpc_route_action(cluster)}
            for prefix in upstream.route_prefixes
        ]
        routes += [
            {"match": {"prefix": p}, "route": {"cluster": cluster, "timeout": "15s"}}
            for p in upstream.http_paths
        ]
    keys_only = topology.jwks_only_peer(spec)
    if keys_only is not None:
        routes += [
            {
                "match": {"prefix": p},
                "route": {"cluster": _mesh_cluster_name(keys_only.name), "timeout": "15s"},
            }
            for p in keys_only.http_paths
        ]
    hcm = {
        "@type": _HCM,
        "stat_prefix": "outbound",
        "codec_type": "AUTO",
        "generate_request_id": False,
        "http2_protocol_options": _h2_options(),
        "route_config": {
            "name": "outbound",
            # An unknown prefix finds no route: 404, which gRPC clients see as UNIMPLEMENTED.
            "virtual_hosts": [{"name": "upstreams", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": _QUIET_ROUTER}],
    }
    return {
        "name": "outbound",
        "address": _address(addressing.outbound(spec)),
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


# -- edge --------------------------------------------------------------------------------------


def render_edge(topology: Topology, addressing: Addressing, cert_dir: str) -> dict[str, Any]:
    """Bootstrap for the edge: gRPC-Web + native gRPC, CORS, JWT, rate and size limits."""
    edge = topology.edge
    paths = WorkloadPaths(cert_dir, EDGE)
    routed = list(topology.edge_services())
    jwks_service = topology.jwks_service()
    cluster_services = {s.name: s for s in routed}
    if jwks_service is not None:
        cluster_services.setdefault(jwks_service.name, jwks_service)
    debug = topology.services.get(edge.debug_service)
    if debug is not None:
        cluster_services.setdefault(debug.name, debug)

    routes: list[dict[str, Any]] = []
    if debug is not None:
        debug_cluster = _mesh_cluster_name(debug.name)
        routes.append(
            {"match": {"prefix": HEALTH_PREFIX}, "route": _edge_route_action(debug_cluster, edge)}
        )
        # Reflection is a bidi stream: the whole-request buffer would wait forever for its end.
        routes += [
            {
                "match": {"prefix": p},
                "route": _grpc_route_action(debug_cluster),
                "typed_per_filter_config": _NO_BUFFER,
            }
            for p in REFLECTION_PREFIXES
        ]
    for rpc in edge.streaming_rpcs:
        target = next(s for s in routed if any(rpc.startswith(p) for p in s.route_prefixes))
        match = {"prefix": rpc} if rpc.endswith((".", "/")) else {"path": rpc}
        routes.append(
            {
                "match": match,
                "route": _edge_stream_route_action(_mesh_cluster_name(target.name), edge),
                "typed_per_filter_config": _NO_BUFFER,
            }
        )
    for service in routed:
        routes += [
            {
                "match": {"prefix": prefix},
                "route": _edge_route_action(_mesh_cluster_name(service.name), edge),
            }
            for prefix in service.route_prefixes
        ]
    # Plain HTTP paths (signed download links, unsubscribe pages, JWKS) are what browsers and
    # mail clients open: the edge forwards them to the owning service's sidecar, whose RBAC
    # admits only HTTP_PATH_METHODS on them and whose route sends them to the app's HTTP port.
    for service in routed:
        routes += [
            {
                "match": {"prefix": http_path},
                "route": _edge_route_action(_mesh_cluster_name(service.name), edge),
            }
            for http_path in service.http_paths
        ]

    virtual_host: dict[str, Any] = {
        "name": "edge",
        "domains": ["*"],
        "routes": routes,
        "typed_per_filter_config": {"envoy.filters.http.cors": _cors_policy(edge)},
    }
    hcm = {
        "@type": _HCM,
        "stat_prefix": "edge",
        "codec_type": "AUTO",  # HTTP/1.1 for gRPC-Web, h2c for native gRPC
        "use_remote_address": True,
        "forward_client_cert_details": "SANITIZE",
        "http2_protocol_options": _h2_options(),
        "stream_idle_timeout": f"{edge.stream_timeout_seconds:g}s",
        "request_headers_timeout": "10s",
        "common_http_protocol_options": {"idle_timeout": "300s"},
        "route_config": {"name": "edge", "virtual_hosts": [virtual_host]},
        "http_filters": _edge_filters(topology, jwks_service),
        "local_reply_config": _edge_local_replies(),
    }
    clusters = [_mesh_cluster(topology, s, addressing, paths) for s in cluster_services.values()]
    return {
        "node": {"id": "edge", "cluster": EDGE},
        "admin": _admin(addressing.edge_admin(edge)),
        "static_resources": {
            "listeners": [
                {
                    "name": "edge",
                    "address": _address(addressing.edge_listener(edge)),
                    "per_connection_buffer_limit_bytes": 1 << 20,
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
        "overload_manager": _overload_manager(),
    }


def _edge_filters(topology: Topology, jwks_service: ServiceSpec | None) -> list[dict[str, Any]]:
    edge = topology.edge
    # Order matters: CORS answers preflights first; grpc_web turns gRPC-Web into gRPC, so every
    # local reply from the filters after it (429, 401, 413) reaches browsers as gRPC-Web too.
    filters: list[dict[str, Any]] = [
        {
            "name": "envoy.filters.http.lua",
            "typed_config": {
                "@type": _LUA,
                "default_source_code": {"inline_string": _GRPC_WEB_LIMIT_STATUS},
            },
        },
        {"name": "envoy.filters.http.cors", "typed_config": {"@type": _CORS}},
        {"name": "envoy.filters.http.grpc_web", "typed_config": {"@type": _GRPC_WEB}},
        {"name": "envoy.filters.http.local_ratelimit", "typed_config": _rate_limit(edge)},
        {
            "name": "envoy.filters.http.buffer",
            "typed_config": {"@type": _BUFFER, "max_request_bytes": edge.max_request_bytes},
        },
    ]
    if jwks_service is not None:
        filters.append({"name": "envoy.filters.http.jwt_authn", "typed_config": _jwt(jwks_service)})
    filters.append({"name": "envoy.filters.http.router", "typed_config": _QUIET_ROUTER})
    return filters


def _rate_limit(edge: EdgeSpec) -> dict[str, Any]:
    bucket = {
        "max_tokens": edge.rate_limit.burst,
        "tokens_per_fill": edge.rate_limit.requests_per_second,
        "fill_interval": "1s",
    }
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return {
        "@type": _LOCAL_RL,
        "stat_prefix": "edge_rate_limit",
        # One bucket per downstream address: the descriptor entry has no value, so Envoy keeps a
        # dynamic bucket for each distinct address it sees (bounded by max_dynamic_descriptors).
        "token_bucket": bucket,
        "filter_enabled": {**always, "runtime_key": "edge_rate_limit_enabled"},
        "filter_enforced": {**always, "runtime_key": "edge_rate_limit_enforced"},
        "rate_limits": [{"actions": [{"remote_address": {}}]}],
        "descriptors": [{"entries": [{"key": "remote_address"}], "token_bucket": bucket}],
        "max_dynamic_descriptors": 20000,
        # Only the client's own bucket counts; the default bucket would make it one global limit.
        "always_consume_default_token_bucket": False,
        "rate_limited_as_resource_exhausted": True,
    }


def _jwt(jwks_service: ServiceSpec) -> dict[str, Any]:
    return {
        "@type": _JWT,
        "providers": {
            JWT_PROVIDER: {
                # Issuer and audience are checked by every service's runtime; the edge verifies
                # signature and expiry so a forged or expired token never reaches a service.
                "remote_jwks": {
                    "http_uri": {
                        "uri": f"https://{jwks_service.name}{JWKS_PATH}",
                        "cluster": _mesh_cluster_name(jwks_service.name),
                        "timeout": "2s",
                    },
                    "cache_duration": "300s",
                    "async_fetch": {"failed_refetch_duration": "1s"},
                },
                "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                "forward": True,
            }
        },
        "rules": [
            {
                "match": {"prefix": "/"},
                # No token: pass (services decide per RPC). A token that fails: 401 here.
                "requires": {
                    "requires_any": {
                        "requirements": [{"provider_name": JWT_PROVIDER}, {"allow_missing": {}}]
                    }
                },
            }
        ],
    }


def _cors_policy(edge: EdgeSpec) -> dict[str, Any]:
    return {
        "@type": _CORS_POLICY,
        "allow_origin_string_match": [{"exact": o} for o in edge.cors_allowed_origins],
        "allow_methods": "GET,POST,OPTIONS",
        "allow_headers": CORS_ALLOWED_HEADERS,
        "expose_headers": CORS_EXPOSED_HEADERS,
        "max_age": "600",
    }


def _edge_local_replies() -> dict[str, Any]:
    # Native gRPC: an oversize request is RESOURCE_EXHAUSTED (what gRPC servers answer for a
    # too-large message); Envoy's generic HTTP-to-gRPC mapping would say UNKNOWN.
    return {
        "mappers": [
            {
                "filter": {
                    "status_code_filter": {
                        "comparison": {
                            "op": "EQ",
                            "value": {"default_value": code, "runtime_key": f"edge_map_{code}"},
                        }
                    }
                },
                "headers_to_add": [
                    {
                        "header": {"key": "grpc-status", "value": "8"},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    },
                ],
            }
            for code in (413,)
        ]
    }


def _edge_route_action(cluster: str, edge: EdgeSpec) -> dict[str, Any]:
    # Unary calls: bounded by the route timeout. (No max_stream_duration here: with it, a call
    # without grpc-timeout would get no limit at all.) A shorter client deadline still wins: the
    # client cancels and the app enforces the grpc-timeout header Envoy passes on.
    return {"cluster": cluster, "timeout": f"{edge.route_timeout_seconds:g}s"}


def _edge_stream_route_action(cluster: str, edge: EdgeSpec) -> dict[str, Any]:
    # Streams outlive any fixed timeout: bounded by inactivity and by the client's deadline.
    return {
        "cluster": cluster,
        "timeout": "0s",
        "idle_timeout": f"{edge.stream_timeout_seconds:g}s",
        "max_stream_duration": {"grpc_timeout_header_max": "0s"},
    }


# -- shared pieces -----------------------------------------------------------------------------


def _grpc_route_action(cluster: str) -> dict[str, Any]:
    # Inside the mesh streams may live long: no route timeout, the caller's grpc-timeout
    # (deadline) is honoured instead.
    return {
        "cluster": cluster,
        "timeout": "0s",
        "max_stream_duration": {"grpc_timeout_header_max": "0s"},
    }


def _mesh_cluster_name(service: str) -> str:
    return f"mesh_{service}"


def _mesh_cluster(
    topology: Topology, upstream: ServiceSpec, addressing: Addressing, own: WorkloadPaths
) -> dict[str, Any]:
    """mTLS to `upstream`'s sidecar with our certificate, accepting only its SPIFFE id."""
    tls = {
        "@type": _UPSTREAM_TLS,
        "sni": upstream.name,
        "common_tls_context": {
            **_common_tls(own, alpn=["h2"]),
            "combined_validation_context": {
                "default_validation_context": {
                    "match_typed_subject_alt_names": [
                        {
                            "san_type": "URI",
                            "matcher": {"exact": spiffe_id(topology, upstream.name)},
                        }
                    ]
                },
                "validation_context_sds_secret_config": _sds_secret(
                    SECRET_TRUSTED_CA, own.sds_validation, own.sds_dir
                ),
            },
        },
    }
    cluster = _cluster(_mesh_cluster_name(upstream.name), addressing.sidecar(upstream), http2=True)
    cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    return cluster


def _common_tls(paths: WorkloadPaths, alpn: list[str]) -> dict[str, Any]:
    return {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "alpn_protocols": alpn,
        "tls_certificate_sds_secret_configs": [
            _sds_secret(SECRET_CERTIFICATE, paths.sds_certificate, paths.sds_dir)
        ],
    }


def _sds_secret(name: str, path: str, watched_dir: str) -> dict[str, Any]:
    return {
        "name": name,
        "sds_config": {
            "path_config_source": {"path": path, "watched_directory": {"path": watched_dir}},
            "resource_api_version": "V3",
        },
    }


def _cluster(name: str, endpoint: Endpoint, *, http2: bool) -> dict[str, Any]:
    protocol = {"http2_protocol_options": _h2_options()} if http2 else {"http_protocol_options": {}}
    return {
        "name": name,
        "type": "STATIC" if _is_ip(endpoint.host) else "STRICT_DNS",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(endpoint)}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _HTTP_OPTIONS,
                "explicit_http_config": protocol,
            }
        },
    }


def _h2_options() -> dict[str, Any]:
    return {"max_concurrent_streams": 1024, "initial_stream_window_size": 1 << 20}


def _admin(endpoint: Endpoint) -> dict[str, Any]:
    return {"address": _address(endpoint)}


def _address(endpoint: Endpoint) -> dict[str, Any]:
    return {"socket_address": {"address": endpoint.host, "port_value": endpoint.port}}


def _overload_manager() -> dict[str, Any]:
    # Bounds concurrent downstream connections so a flood degrades to refusals, not OOM.
    return {
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                    "downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": 50000,
                },
            }
        ]
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- files -------------------------------------------------------------------------------------

DEV_CERT_DIR = ".suuupra/certs"
"""Certificate dir named by the committed dev configs (relative: Envoy runs from the repo root)."""

GENERATED_HEADER = (
    "# Generated from mesh/topology.yaml by `python -m suuupra_runtime.mesh render`. Do not edit.\n"
)


def to_yaml(config: dict[str, Any]) -> str:
    return GENERATED_HEADER + yaml.safe_dump(config, sort_keys=False, width=100)


def render_all(topology: Topology, addressing: Addressing, cert_dir: str) -> dict[str, str]:
    """All Envoy configs of the topology as YAML text by file name (`<svc>.yaml`, `edge.yaml`)."""
    files = {
        f"{name}.yaml": to_yaml(render_sidecar(topology, name, addressing, cert_dir))
        for name in topology.services
    }
    files["edge.yaml"] = to_yaml(render_edge(topology, addressing, cert_dir))
    return files
