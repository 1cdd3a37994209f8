"""Envoy config rendering from a topology (pure: dicts only, nothing started)."""

from __future__ import annotations

from typing import Any

from suuupra_runtime.mesh.envoy import (
    CORS_EXPOSED_HEADERS,
    DevAddressing,
    KubernetesAddressing,
    render_edge,
    render_sidecar,
)
from suuupra_runtime.mesh.topology import Topology, parse_topology

from .test_mesh_topology import base

CERTS = "/certs"


def topology() -> Topology:
    return parse_topology(base())


def listener(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(x for x in config["static_resources"]["listeners"] if x["name"] == name)


def cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in config["static_resources"]["clusters"] if c["name"] == name)


def hcm(lst: dict[str, Any]) -> dict[str, Any]:
    return lst["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[no-any-return]


def address(obj: dict[str, Any]) -> tuple[str, int]:
    sock = obj["address"]["socket_address"]
    return sock["address"], sock["port_value"]


def endpoint(c: dict[str, Any]) -> tuple[str, int]:
    return address(c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"])


def test_sidecar_inbound_requires_client_certificates_over_tls12() -> None:
    config = render_sidecar(topology(), "identity", DevAddressing(), CERTS)
    inbound = listener(config, "inbound")
    assert address(inbound) == ("127.0.0.1", 17101)
    tls = inbound["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    common = tls["common_tls_context"]
    assert common["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_2"
    sds = common["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"]
    assert sds["path"] == "/certs/sds/identity/tls_certificate.yaml"
    validation = common["validation_context_sds_secret_config"]["sds_config"]
    assert validation["path_config_source"]["path"] == "/certs/sds/identity/validation_context.yaml"


def test_sidecar_rbac_allows_exactly_the_topology_callers() -> None:
    config = render_sidecar(topology(), "identity", DevAddressing(), CERTS)
    manager = hcm(listener(config, "inbound"))
    assert manager["forward_client_cert_details"] == "SANITIZE_SET"
    assert manager["set_current_client_cert_details"] == {"uri": True}
    rbac = manager["http_filters"][0]["typed_config"]
    assert manager["http_filters"][-1]["name"] == "envoy.filters.http.router"
    assert rbac["rules"]["action"] == "ALLOW"
    policies = rbac["rules"]["policies"]
    assert set(policies) == {
        "caller-edge",
        "caller-courses",
        "health",
        "http-paths",
        "edge-reflection",
    }
    courses = policies["caller-courses"]
    assert courses["principals"] == [
        {
            "authenticated": {
                "principal_name": {"exact": "spiffe://suuupra.local/ns/suuupra/sa/courses"}
            }
        }
    ]
    # A full method name is exact, a trailing "." or "/" makes a prefix.
    assert courses["permissions"] == [
        {"url_path": {"path": {"exact": "/suuupra.identity.v1.UserService/GetUser"}}}
    ]
    assert policies["caller-edge"]["permissions"] == [
        {"url_path": {"path": {"prefix": "/suuupra.identity.v1."}}}
    ]
    health = policies["health"]
    assert health["permissions"] == [{"url_path": {"path": {"prefix": "/grpc.health.v1.Health/"}}}]
    prefix = health["principals"][0]["authenticated"]["principal_name"]["prefix"]
    assert prefix == "spiffe://suuupra.local/ns/suuupra/sa/"
    # Plain HTTP paths: any mesh workload (the edge too), GET/HEAD/POST only, those paths only.
    http_paths = policies["http-paths"]
    assert http_paths["principals"] == health["principals"]
    methods, paths = http_paths["permissions"][0]["and_rules"]["rules"]
    assert [m["header"]["string_match"]["exact"] for m in methods["or_rules"]["rules"]] == [
        "GET",
        "HEAD",
        "POST",
    ]
    assert paths == {"or_rules": {"rules": [{"url_path": {"path": {"prefix": "/.well-known/"}}}]}}


def test_reflection_only_on_the_debug_service() -> None:
    config = render_sidecar(topology(), "courses", DevAddressing(), CERTS)
    policies = hcm(listener(config, "inbound"))["http_filters"][0]["typed_config"]["rules"][
        "policies"
    ]
    assert set(policies) == {"caller-edge", "health"}


def test_sidecar_routes_to_app_ports_on_loopback() -> None:
    config = render_sidecar(topology(), "identity", DevAddressing(), CERTS)
    routes = hcm(listener(config, "inbound"))["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["match"] == {"prefix": "/.well-known/"}
    assert routes[0]["route"]["cluster"] == "app_http"
    assert routes[-1]["match"] == {"prefix": "/"}
    assert routes[-1]["route"]["cluster"] == "app_grpc"
    assert endpoint(cluster(config, "app_grpc")) == ("127.0.0.1", 17100)
    assert endpoint(cluster(config, "app_http")) == ("127.0.0.1", 17104)
    h2 = cluster(config, "app_grpc")["typed_extension_protocol_options"]
    assert "http2_protocol_options" in next(iter(h2.values()))["explicit_http_config"]
    h1 = cluster(config, "app_http")["typed_extension_protocol_options"]
    assert "http_protocol_options" in next(iter(h1.values()))["explicit_http_config"]
    assert address(config["admin"]) == ("127.0.0.1", 17103)


def test_outbound_routes_by_package_to_upstream_sidecar_with_spiffe_check() -> None:
    config = render_sidecar(topology(), "courses", DevAddressing(), CERTS)
    outbound = listener(config, "outbound")
    assert address(outbound) == ("127.0.0.1", 17112)
    assert "transport_socket" not in outbound["filter_chains"][0]
    routes = hcm(outbound)["route_config"]["virtual_hosts"][0]["routes"]
    assert [(r["match"]["prefix"], r["route"]["cluster"]) for r in routes] == [
        ("/suuupra.identity.v1.", "mesh_identity"),
        ("/.well-known/", "mesh_identity"),
    ]
    upstream = cluster(config, "mesh_identity")
    assert endpoint(upstream) == ("127.0.0.1", 17101)
    tls = upstream["transport_socket"]["typed_config"]["common_tls_context"]
    own = tls["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"]["path"]
    assert own == "/certs/sds/courses/tls_certificate.yaml"
    san = tls["combined_validation_context"]["default_validation_context"]
    assert san["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://suuupra.local/ns/suuupra/sa/identity"}}
    ]


def test_kubernetes_addressing_uses_pod_ports_and_cluster_dns() -> None:
    config = render_sidecar(topology(), "courses", KubernetesAddressing("suuupra"), "/etc/certs")
    assert address(listener(config, "inbound")) == ("0.0.0.0", 15443)
    assert address(listener(config, "outbound")) == ("127.0.0.1", 15001)
    assert address(config["admin"]) == ("127.0.0.1", 15000)
    assert endpoint(cluster(config, "app_grpc")) == ("127.0.0.1", 50051)
    upstream = cluster(config, "mesh_identity")
    assert upstream["type"] == "STRICT_DNS"
    assert endpoint(upstream) == ("identity.suuupra.svc.cluster.local", 15443)
    edge = render_edge(topology(), KubernetesAddressing("suuupra"), "/etc/certs")
    assert address(listener(edge, "edge")) == ("0.0.0.0", 8080)


def test_edge_filter_chain_and_policies() -> None:
    config = render_edge(topology(), DevAddressing(), CERTS)
    edge = listener(config, "edge")
    assert address(edge) == ("127.0.0.1", 17000)
    manager = hcm(edge)
    names = [f["name"].rsplit(".", 1)[-1] for f in manager["http_filters"]]
    assert names == ["lua", "cors", "grpc_web", "local_ratelimit", "buffer", "jwt_authn", "router"]
    filters = {f["name"].rsplit(".", 1)[-1]: f["typed_config"] for f in manager["http_filters"]}
    assert filters["buffer"]["max_request_bytes"] == 65536
    rate = filters["local_ratelimit"]
    assert rate["rate_limits"] == [{"actions": [{"remote_address": {}}]}]
    assert rate["descriptors"][0]["token_bucket"]["max_tokens"] == 20
    assert rate["descriptors"][0]["token_bucket"]["tokens_per_fill"] == 10
    assert rate["rate_limited_as_resource_exhausted"] is True
    jwt = filters["jwt_authn"]
    provider = jwt["providers"]["identity"]
    assert provider["remote_jwks"]["http_uri"]["cluster"] == "mesh_identity"
    assert provider["remote_jwks"]["http_uri"]["uri"].endswith("/.well-known/jwks.json")
    assert jwt["rules"][0]["requires"]["requires_any"]["requirements"] == [
        {"provider_name": "identity"},
        {"allow_missing": {}},
    ]
    vhost = manager["route_config"]["virtual_hosts"][0]
    cors = vhost["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert cors["expose_headers"] == CORS_EXPOSED_HEADERS
    assert cors["allow_origin_string_match"] == [{"exact": "http://localhost:5173"}]
    routes = [(r["match"]["prefix"], r["route"]["cluster"]) for r in vhost["routes"]]
    # Reflection is a bidi stream: it must bypass the whole-request buffer.
    reflection = [r for r in vhost["routes"] if "reflection" in r["match"]["prefix"]]
    assert all(
        r["typed_per_filter_config"]["envoy.filters.http.buffer"]["disabled"] for r in reflection
    )
    assert routes == [
        ("/grpc.health.v1.Health/", "mesh_identity"),
        ("/grpc.reflection.v1alpha.", "mesh_identity"),
        ("/grpc.reflection.v1.", "mesh_identity"),
        ("/suuupra.identity.v1.", "mesh_identity"),
        ("/suuupra.courses.v1.", "mesh_courses"),
        # A service's plain HTTP paths reach its sidecar through the edge too.
        ("/.well-known/", "mesh_identity"),
    ]
    assert vhost["routes"][-1]["route"]["timeout"] == "15s"


def test_edge_connects_to_sidecars_with_its_own_certificate() -> None:
    config = render_edge(topology(), DevAddressing(), CERTS)
    upstream = cluster(config, "mesh_courses")
    assert endpoint(upstream) == ("127.0.0.1", 17111)
    tls = upstream["transport_socket"]["typed_config"]["common_tls_context"]
    own = tls["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"]["path"]
    assert own == "/certs/sds/edge/tls_certificate.yaml"
    san = tls["combined_validation_context"]["default_validation_context"]
    assert san["match_typed_subject_alt_names"][0]["matcher"]["exact"].endswith("/sa/courses")
    assert address(config["admin"]) == ("127.0.0.1", 17003)


def test_streaming_rpcs_skip_the_size_buffer_and_route_timeout() -> None:
    data = base()
    data["edge"]["streaming_rpcs"] = ["/suuupra.courses.v1.CourseService/Upload"]
    config = render_edge(parse_topology(data), DevAddressing(), CERTS)
    routes = hcm(listener(config, "edge"))["route_config"]["virtual_hosts"][0]["routes"]
    special = next(r for r in routes if r["match"].get("path"))
    assert special["match"] == {"path": "/suuupra.courses.v1.CourseService/Upload"}
    assert special["route"]["cluster"] == "mesh_courses"
    per_route = special["typed_per_filter_config"]["envoy.filters.http.buffer"]
    assert per_route["disabled"] is True
    assert routes.index(special) < len(routes) - 2  # before the package prefix routes
    assert special["route"]["timeout"] == "0s"
    assert special["route"]["idle_timeout"] == "300s"
    unary = routes[-1]
    assert unary["route"]["timeout"] == "15s"
    assert "typed_per_filter_config" not in unary


def test_a_service_without_the_identity_upstream_reaches_only_its_public_keys() -> None:
    data = base()
    data["services"]["courses"]["upstreams"] = []
    data["services"]["identity"]["callers"] = [{"from": "edge", "rpcs": ["/suuupra.identity.v1."]}]
    config = render_sidecar(parse_topology(data), "courses", DevAddressing(), CERTS)
    routes = hcm(listener(config, "outbound"))["route_config"]["virtual_hosts"][0]["routes"]
    # The JWKS path goes to identity's sidecar (whose RBAC opens http_paths to every workload);
    # no gRPC prefix does, so identity's RPCs stay unreachable from courses.
    assert [(r["match"]["prefix"], r["route"]["cluster"]) for r in routes] == [
        ("/.well-known/", "mesh_identity")
    ]
    assert endpoint(cluster(config, "mesh_identity")) == ("127.0.0.1", 17101)
    identity = render_sidecar(parse_topology(data), "identity", DevAddressing(), CERTS)
    assert "mesh_identity" not in {c["name"] for c in identity["static_resources"]["clusters"]}
