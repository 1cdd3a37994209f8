"""A topology larger than the repository's (three services, a chain of callers, one service
without a database) so the k8s generator is exercised beyond today's single service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from suuupra_runtime.mesh.topology import Topology, parse_topology


def sample_topology_data() -> dict[str, Any]:
    return {
        "trust_domain": "suuupra.local",
        "namespace": "suuupra",
        "infrastructure": {"postgres_port": 17432, "nats_port": 17422, "nats_monitor_port": 17423},
        "edge": {
            "port_block": 17000,
            "rate_limit": {"requests_per_second": 10, "burst": 20},
            "max_request_bytes": 1048576,
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
                "port_block": 17200,
                "database": "courses",
                "streams": ["COURSES"],
                "grpc_packages": ["suuupra.courses.v1"],
                "upstreams": ["identity"],
                "callers": [
                    {"from": "edge", "rpcs": ["/suuupra.courses.v1."]},
                    {"from": "search", "rpcs": ["/suuupra.courses.v1.CourseService/"]},
                ],
            },
            "search": {
                "port_block": 17300,
                "grpc_packages": ["suuupra.search.v1"],
                "upstreams": ["courses"],
            },
        },
    }


@pytest.fixture
def sample_topology() -> Topology:
    return parse_topology(sample_topology_data())


@pytest.fixture
def sample_topology_file(tmp_path: Path) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(sample_topology_data()))
    return path
