"""Pure pieces of the dev runner: options, the port offset, the service environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from suuupra_runtime.mesh.topology import PORT_BLOCK_SIZE, load_topology
from tools.demo_data import DEMO_ACCOUNTS, request_id
from tools.platform.options import parse_options
from tools.platform.ports import all_ports, shift_ports
from tools.platform.service_env import PlatformEndpoints, service_environment


def test_options_default_to_embedded_servers_and_the_repo_state_dir() -> None:
    options = parse_options([], environ={})
    assert options.state_dir.name == ".suuupra"
    assert options.port_offset == 0
    assert options.demo_data is True
    assert options.database_url is None
    assert options.nats_url is None


def test_options_read_the_environment_and_flags_win() -> None:
    env = {
        "SUUUPRA_PORT_OFFSET": "3000",
        "DATABASE_URL": "postgresql://u:p@db:5432/postgres",
        "NATS_URL": "nats://broker:4222",
    }
    options = parse_options(["--no-demo-data", "--state-dir", "/tmp/x"], environ=env)
    assert options.port_offset == 3000
    assert options.database_url == "postgresql://u:p@db:5432/postgres"
    assert options.nats_url == "nats://broker:4222"
    assert options.demo_data is False
    assert options.state_dir == Path("/tmp/x")
    assert parse_options(["--port-offset", "7"], environ=env).port_offset == 7


def test_options_refuse_a_port_offset_that_is_not_a_number() -> None:
    with pytest.raises(SystemExit):
        parse_options([], environ={"SUUUPRA_PORT_OFFSET": "lots"})


def test_port_offset_shifts_every_port_and_nothing_else() -> None:
    topology = load_topology()
    shifted = shift_ports(topology, 2000)
    assert sorted(all_ports(shifted)) == sorted(p + 2000 for p in all_ports(topology))
    for name, spec in topology.services.items():
        moved = shifted.services[name]
        assert moved.app_port == spec.app_port + 2000
        assert moved.callers == spec.callers
        assert moved.grpc_packages == spec.grpc_packages
    assert shifted.edge.listener_port == topology.edge.listener_port + 2000
    assert shift_ports(topology, 0) is topology


def test_default_ports_avoid_the_standard_servers() -> None:
    ports = set(all_ports(load_topology()))
    assert not ports & {5432, 4222, 8222, 8080, 9901}
    edge_and_services = len(load_topology().services) + 1
    infrastructure = len(load_topology().infrastructure.ports())
    assert infrastructure == 4  # PostgreSQL, NATS client + monitoring, SMTP sink
    assert len(ports) == infrastructure + PORT_BLOCK_SIZE * edge_and_services


def test_a_port_offset_that_leaves_the_port_range_is_refused() -> None:
    with pytest.raises(ValueError, match="out of 1024"):
        shift_ports(load_topology(), 60000)


def test_service_environment_points_the_service_at_its_ports_and_the_platform() -> None:
    topology = shift_ports(load_topology(), 1000)
    spec = topology.service("identity")
    env = service_environment(
        topology,
        spec,
        PlatformEndpoints("postgresql+asyncpg://postgres@127.0.0.1:18432/postgres", "nats://x:1"),
        root=Path("/repo"),
        log_level="info",
        base={"PATH": "/usr/bin", "SUUUPRA_GRPC_ADDR": "0.0.0.0:1", "NATS_URL": "nats://old:1"},
    )
    assert env["SUUUPRA_GRPC_ADDR"] == f"127.0.0.1:{spec.app_port}"
    assert env["SUUUPRA_HTTP_ADDR"] == f"127.0.0.1:{spec.http_port}"
    assert env["NATS_URL"] == "nats://x:1"
    assert env["DATABASE_URL"].endswith(":18432/postgres")
    assert env["SUUUPRA_JWKS_URL"] == f"http://127.0.0.1:{spec.http_port}/.well-known/jwks.json"
    assert env["PYTHONPATH"] == "/repo:/repo/gen"
    assert env["SUUUPRA_PUBLIC_URL"] == f"http://127.0.0.1:{topology.edge.listener_port}"
    assert env["PATH"] == "/usr/bin"
    assert "SUUUPRA_SMTP_ADDR" not in env  # no sink given


def test_services_are_told_where_the_smtp_sink_listens() -> None:
    topology = shift_ports(load_topology(), 1000)
    original = load_topology().infrastructure.smtp_port
    assert original is not None
    assert topology.infrastructure.smtp_port == original + 1000
    sink = f"127.0.0.1:{topology.infrastructure.smtp_port}"
    env = service_environment(
        topology,
        topology.service("notifications"),
        PlatformEndpoints("postgresql://x/postgres", "nats://x:1", smtp_addr=sink),
        root=Path("/repo"),
        log_level="info",
        base={},
    )
    assert env["SUUUPRA_SMTP_ADDR"] == sink


def test_demo_request_ids_are_stable_so_reloading_changes_nothing() -> None:
    assert request_id("tenant", "demo-college") == request_id("tenant", "demo-college")
    assert request_id("user", "a") != request_id("user", "b")
    assert len({a.email for a in DEMO_ACCOUNTS}) == 5
    assert sorted(a.role for a in DEMO_ACCOUNTS).count("student") == 3
