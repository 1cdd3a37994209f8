"""Topology parsing and validation (pure: dicts in, dataclasses or TopologyError out)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from suuupra_runtime.mesh.topology import (
    EDGE,
    TopologyError,
    parse_topology,
    spiffe_id,
    workloads,
)


def base() -> dict[str, Any]:
    return {
        "trust_domain": "suuupra.local",
        "namespace": "suuupra",
        "infrastructure": {"postgres_port": 17432, "nats_port": 17422, "nats_monitor_port": 17423},
        "edge": {
            "port_block": 17000,
            "rate_limit": {"requests_per_second": 10, "burst": 20},
            "max_request_bytes": 65536,
            "cors_allowed_origins": ["http://localhost:5173"],
        },
        "services": {
            "identity": {
                "port_block": 17100,
                "database": "identity",
                "streams": ["IDENTITY"],
                "grpc_packages": ["suuupra.identity.v1"],
                "http_paths": ["/.well-known/"],
                "callers": [
                    {"from": "edge", "rpcs": ["/suuupra.identity.v1."]},
                    {"from": "courses", "rpcs": ["/suuupra.identity.v1.UserService/GetUser"]},
                ],
            },
            "courses": {
                "port_block": 17110,
                "grpc_packages": ["suuupra.courses.v1"],
                "upstreams": ["identity"],
                "callers": [{"from": "edge", "rpcs": ["/suuupra.courses.v1.CourseService/"]}],
            },
        },
    }


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(TopologyError) as info:
        parse_topology(data)
    return str(info.value)


def test_valid_topology_parses_with_derived_ports_and_defaults() -> None:
    topology = parse_topology(base())
    identity = topology.service("identity")
    assert (
        identity.app_port,
        identity.inbound_port,
        identity.outbound_port,
        identity.admin_port,
        identity.http_port,
    ) == (17100, 17101, 17102, 17103, 17104)
    assert identity.route_prefixes == ("/suuupra.identity.v1.",)
    assert identity.callers[1].from_service == "courses"
    assert topology.edge.listener_port == 17000
    assert topology.edge.admin_port == 17003
    assert topology.edge.debug_service == "identity"
    assert {s.name for s in topology.edge_services()} == {"identity", "courses"}
    assert workloads(topology) == ("identity", "courses", EDGE)


def test_spiffe_id_format_and_unknown_workload() -> None:
    topology = parse_topology(base())
    assert spiffe_id(topology, "courses") == "spiffe://suuupra.local/ns/suuupra/sa/courses"
    assert spiffe_id(topology, EDGE) == "spiffe://suuupra.local/ns/suuupra/sa/edge"
    with pytest.raises(KeyError):
        spiffe_id(topology, "nope")


def test_unknown_upstream_is_named() -> None:
    data = base()
    data["services"]["courses"]["upstreams"] = ["identity", "ledger"]
    assert "services.courses.upstreams[1]: unknown service 'ledger'" in problems(data)


def test_caller_must_be_a_service_or_edge() -> None:
    data = base()
    data["services"]["identity"]["callers"].append(
        {"from": "mallory", "rpcs": ["/suuupra.identity.v1."]}
    )
    assert (
        "services.identity.callers[2].from: 'mallory' is neither a service nor 'edge'"
        in problems(data)
    )


def test_caller_and_upstream_must_agree_both_ways() -> None:
    data = base()
    data["services"]["courses"]["upstreams"] = []
    assert "services.identity.callers[1].from: 'courses' does not list 'identity'" in problems(data)
    data = base()
    data["services"]["identity"]["callers"].pop()
    assert "services.courses.upstreams[0]: 'identity' has no caller rule allowing 'courses'" in (
        problems(data)
    )


def test_port_collisions_are_refused() -> None:
    data = base()
    data["services"]["courses"]["port_block"] = 17102  # overlaps identity's block
    assert "services.courses.port_block: port 17102 collides with services.identity.port_block" in (
        problems(data)
    )
    data = base()
    data["infrastructure"]["nats_port"] = 17001
    assert "edge.port_block: port 17001 collides with infrastructure.nats_port" in problems(data)


def test_rpcs_must_belong_to_the_services_packages() -> None:
    data = base()
    data["services"]["identity"]["callers"][0]["rpcs"] = ["/suuupra.ledger.v1."]
    assert "services.identity.callers[0].rpcs[0]: '/suuupra.ledger.v1.' is not in" in problems(data)


def test_package_served_twice_is_refused() -> None:
    data = base()
    data["services"]["courses"]["grpc_packages"] = ["suuupra.identity.v1"]
    data["services"]["courses"]["callers"] = []
    assert "services.courses.grpc_packages[0]: 'suuupra.identity.v1' is already served" in (
        problems(data)
    )


def test_unknown_fields_and_missing_fields_are_named() -> None:
    data = base()
    data["services"]["courses"]["upstream"] = ["identity"]
    del data["edge"]["max_request_bytes"]
    text = problems(data)
    assert "services.courses.upstream: unknown field" in text
    assert "edge.max_request_bytes: required" in text


def test_reserved_and_malformed_names() -> None:
    data = base()
    data["services"]["edge"] = copy.deepcopy(data["services"]["courses"])
    data["services"]["edge"]["port_block"] = 17200
    data["services"]["edge"]["grpc_packages"] = ["suuupra.edgy.v1"]
    data["services"]["edge"]["callers"] = []
    data["services"]["edge"]["upstreams"] = []
    assert "services.edge: 'edge' is a reserved name" in problems(data)
    data = base()
    data["services"]["Bad_Name"] = data["services"].pop("courses")
    assert "services.Bad_Name: service name must match" in problems(data)


def test_edge_settings_are_checked() -> None:
    data = base()
    data["edge"]["rate_limit"] = {"requests_per_second": 10, "burst": 5}
    data["edge"]["debug_service"] = "nope"
    data["edge"]["streaming_rpcs"] = ["/suuupra.chat.v1.ChatService/Connect"]
    text = problems(data)
    assert "edge.rate_limit.burst: 5 is below requests_per_second 10" in text
    assert "edge.debug_service: unknown service 'nope'" in text
    assert "edge.streaming_rpcs[0]: '/suuupra.chat.v1.ChatService/Connect' matches no" in text


def test_all_problems_are_reported_at_once() -> None:
    data = base()
    data["namespace"] = "Bad NS"
    data["services"]["courses"]["upstreams"] = ["ghost"]
    with pytest.raises(TopologyError) as info:
        parse_topology(data)
    assert any(p.startswith("namespace:") for p in info.value.problems)
    assert any(p.startswith("services.courses.upstreams[0]:") for p in info.value.problems)


def test_the_smtp_sink_port_is_optional_and_checked_for_collisions() -> None:
    assert parse_topology(base()).infrastructure.smtp_port is None
    data = base()
    data["infrastructure"]["smtp_port"] = 17425
    infra = parse_topology(data).infrastructure
    assert infra.smtp_port == 17425
    assert infra.ports() == (17432, 17422, 17423, 17425)
    data["infrastructure"]["smtp_port"] = 17422
    assert "infrastructure.smtp_port: port 17422 collides with infrastructure.nats_port" in (
        problems(data)
    )
    data["infrastructure"]["smtp_port"] = "twenty"
    assert "infrastructure.smtp_port: must be an integer" in problems(data)


def test_external_ports_are_checked_and_default_to_none() -> None:
    data = base()
    name = next(iter(data["services"]))
    assert parse_topology(data).services[name].external_ports == ()
    data["services"][name]["external_ports"] = [587, 25, 587]
    assert parse_topology(data).services[name].external_ports == (25, 587)
    data["services"][name]["external_ports"] = [70000]
    assert f"services.{name}.external_ports[0]: 70000 is outside 1..65535" in problems(data)
    data["services"][name]["external_ports"] = 443
    assert f"services.{name}.external_ports: must be a list of TCP ports" in problems(data)
