"""Dev certificates and Envoy bootstraps (MESH's `prepare_dev_mesh`), and how to run an Envoy."""

from __future__ import annotations

from pathlib import Path

from suuupra_runtime.infra import envoy_binary
from suuupra_runtime.mesh.sidecars import prepare_dev_mesh
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
    return [
        str(envoy_binary()),
        "-c", str(config),
        "--concurrency", "1",  # one worker per proxy is plenty on a dev machine (TOOLING-FACTS)
        # No shared-memory hot restart: no --base-id bookkeeping between parallel platforms.
        "--disable-hot-restart",
        "--log-level", "warn",
    ]  # fmt: skip
