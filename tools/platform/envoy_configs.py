"""Dev certificates and Envoy bootstraps for every sidecar and the edge, in the state dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from suuupra_runtime.infra import envoy_binary
from suuupra_runtime.mesh.certs import ensure_dev_certificates
from suuupra_runtime.mesh.envoy import DevAddressing, render_edge, render_sidecar
from suuupra_runtime.mesh.topology import EDGE, Topology
from tools.platform.layout import StateLayout


def write_envoy_configs(
    topology: Topology, layout: StateLayout, services: list[str]
) -> dict[str, Path]:
    """Certificates (created once, renewed when stale) and one bootstrap per Envoy.

    Returns the config path of each Envoy: `<service>-sidecar` and `edge`.
    """
    ensure_dev_certificates(topology, layout.certs)
    addressing = DevAddressing()
    cert_dir = str(layout.certs)
    configs: dict[str, dict[str, Any]] = {
        sidecar_name(name): render_sidecar(topology, name, addressing, cert_dir)
        for name in services
    }
    configs[EDGE] = render_edge(topology, addressing, cert_dir)
    paths = {}
    for name, config in configs.items():
        path = layout.envoy_config(name)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        paths[name] = path
    return paths


def sidecar_name(service: str) -> str:
    return f"{service}-sidecar"


def envoy_argv(config: Path) -> list[str]:
    return [
        str(envoy_binary()),
        "-c", str(config),
        "--concurrency", "1",  # one worker per proxy is plenty on a dev machine (TOOLING-FACTS)
        # No shared-memory hot restart: no --base-id bookkeeping between parallel platforms.
        "--disable-hot-restart",
        "--log-level", "warn",
    ]  # fmt: skip
