"""Dev certificates and Envoy bootstraps (MESH's `prepare_dev_mesh`), and how to run an Envoy."""

from __future__ import annotations

from pathlib import Path

from suuupra_runtime.mesh.sidecars import envoy_command, prepare_dev_mesh
from suuupra_runtime.mesh.topology import EDGE, Topology
from tools.platform.layout import StateLayout


def write_envoy_configs(topology: Topology, layout: StateLayout) -> dict[str, Path]:
    """Certificates under `<state>/certs` (created once, renewed when stale) and one bootstrap per
    Envoy under `<state>/envoy`. Returns the config path of each: `<service>-sidecar`, `edge`."""
    rendered = prepare_dev_mesh(topology, layout.root)
    return {(name if name == EDGE else sidecar_name(name)): path for name, path in rendered.items()}


def sidecar_name(service: str) -> str:
    return f"{service}-sidecar"


def envoy_argv(config: Path) -> list[str]:
    # The same command line the mesh tests run; one worker per proxy is plenty on a dev machine.
    return envoy_command(config, log_level="warn")
