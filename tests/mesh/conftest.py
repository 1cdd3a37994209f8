# mypy: disable-error-code="import-untyped"
"""One running test mesh per session: two echo apps, three sidecars and the edge, real mTLS."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from suuupra_runtime.mesh.certs import ensure_dev_certificates
from suuupra_runtime.mesh.envoy import DevAddressing, render_edge, render_sidecar, to_yaml
from suuupra_runtime.mesh.sidecars import EnvoyProcess
from suuupra_runtime.mesh.topology import Topology
from tests.mesh.mesh_support import EchoApp, JwksServer, build_test_topology, start_echo_server

JWT_KID = "test-key-1"


@dataclass
class RunningMesh:
    topology: Topology
    cert_dir: Path
    envoys: dict[str, EnvoyProcess]
    apps: dict[str, EchoApp]
    jwt_key: ec.EllipticCurvePrivateKey

    def port(self, service: str, kind: str) -> int:
        return int(getattr(self.topology.service(service), f"{kind}_port"))

    @property
    def edge_port(self) -> int:
        return self.topology.edge.listener_port

    def token(self, key: ec.EllipticCurvePrivateKey | None = None, **claims: Any) -> str:
        payload = {"sub": "user-1", "iss": "test", "aud": "suuupra", "exp": 4102444800, **claims}
        return jwt.encode(payload, key or self.jwt_key, algorithm="ES256", headers={"kid": JWT_KID})


@pytest.fixture(scope="session")
async def mesh() -> AsyncIterator[RunningMesh]:
    topology = build_test_topology()
    with tempfile.TemporaryDirectory(prefix="suuupra-mesh-") as tmp:
        root = Path(tmp)
        cert_dir = root / "certs"
        ensure_dev_certificates(topology, cert_dir)
        jwt_key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(jwt_key.public_key()))
        jwks = JwksServer(
            topology.service("bravo").http_port,
            {"keys": [{**jwk, "kid": JWT_KID, "alg": "ES256", "use": "sig"}]},
        )
        servers: list[grpc.aio.Server] = []
        apps: dict[str, EchoApp] = {}
        envoys: dict[str, EnvoyProcess] = {}
        jwks.start()
        try:
            for name in ("alpha", "bravo"):
                server, app = await start_echo_server(topology.service(name).app_port)
                servers.append(server)
                apps[name] = app
            configs: dict[str, dict[str, Any]] = {
                name: render_sidecar(topology, name, DevAddressing(), str(cert_dir))
                for name in topology.services
            }
            configs["edge"] = render_edge(topology, DevAddressing(), str(cert_dir))
            for name, config in configs.items():
                path = root / f"{name}.yaml"
                path.write_text(to_yaml(config))
                envoys[name] = EnvoyProcess(path, log_path=root / f"{name}.log", log_level="info")
                envoys[name].start()
            for envoy in envoys.values():
                await envoy.wait_ready_async()
            yield RunningMesh(topology, cert_dir, envoys, apps, jwt_key)
        finally:
            for envoy in envoys.values():
                envoy.stop()
            for server in servers:
                await server.stop(None)
            jwks.stop()
