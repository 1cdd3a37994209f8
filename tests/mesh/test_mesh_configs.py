# mypy: disable-error-code="import-untyped"
"""Committed Envoy configs match the renderer and every rendered config passes Envoy's validator;
dev certificate files behave as Envoy's file watching needs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from suuupra_runtime.mesh.__main__ import DEFAULT_OUT
from suuupra_runtime.mesh.certs import (
    DATA_LINK,
    ensure_dev_certificates,
    load_workload_certificate,
    rotate,
)
from suuupra_runtime.mesh.envoy import (
    DEV_CERT_DIR,
    DevAddressing,
    KubernetesAddressing,
    render_all,
)
from suuupra_runtime.mesh.sidecars import prepare_dev_mesh, validate_config
from suuupra_runtime.mesh.topology import load_topology, workloads
from tests.mesh.mesh_support import build_test_topology


def test_committed_configs_match_the_renderer() -> None:
    expected = render_all(load_topology(), DevAddressing(), DEV_CERT_DIR)
    committed = {p.name: p.read_text() for p in DEFAULT_OUT.glob("*.yaml")}
    assert set(committed) == set(expected), "run: python -m suuupra_runtime.mesh render"
    for name, text in expected.items():
        assert committed[name] == text, (
            f"{name} drifted; run: python -m suuupra_runtime.mesh render"
        )


def test_committed_dev_configs_pass_envoy_validation(tmp_path: Path) -> None:
    # The committed configs name certificates relative to the directory Envoy runs in.
    ensure_dev_certificates(load_topology(), tmp_path / DEV_CERT_DIR)
    for config in sorted(DEFAULT_OUT.glob("*.yaml")):
        ok, output = validate_config(config, cwd=tmp_path)
        assert ok, f"{config.name}:\n{output[-2000:]}"


@pytest.mark.parametrize("addressing", ["dev", "kubernetes"])
def test_rendered_configs_of_a_larger_topology_validate(tmp_path: Path, addressing: str) -> None:
    topology = build_test_topology()
    cert_dir = tmp_path / "certs"
    ensure_dev_certificates(topology, cert_dir)
    target = DevAddressing() if addressing == "dev" else KubernetesAddressing("meshtest")
    for name, text in render_all(topology, target, str(cert_dir)).items():
        path = tmp_path / name
        path.write_text(text)
        ok, output = validate_config(path)
        assert ok, f"{name}:\n{output[-2000:]}"


def test_validation_rejects_a_broken_config(tmp_path: Path) -> None:
    topology = build_test_topology()
    ensure_dev_certificates(topology, tmp_path / "certs")
    text = render_all(topology, DevAddressing(), str(tmp_path / "certs"))["edge.yaml"]
    config = yaml.safe_load(text)
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"
    ][0]["typed_config"]["no_such_field"] = 1
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    ok, _ = validate_config(path)
    assert not ok


def test_dev_certificates_are_kept_when_valid_and_rotation_swaps_atomically(
    tmp_path: Path,
) -> None:
    topology = build_test_topology()
    ensure_dev_certificates(topology, tmp_path)
    serials = {w: load_workload_certificate(tmp_path, w).serial_number for w in workloads(topology)}
    ensure_dev_certificates(topology, tmp_path)  # idempotent: nothing re-issued
    assert serials == {
        w: load_workload_certificate(tmp_path, w).serial_number for w in workloads(topology)
    }
    bravo = tmp_path / "bravo"
    assert os.readlink(bravo / DATA_LINK) == "..v1"
    assert os.readlink(bravo / "tls.crt") == f"{DATA_LINK}/tls.crt"
    assert (bravo / "tls.key").stat().st_mode & 0o077 == 0

    for version in (2, 3, 4):
        new = rotate(tmp_path, "bravo")
        assert os.readlink(bravo / DATA_LINK) == f"..v{version}"
        assert load_workload_certificate(tmp_path, "bravo").serial_number == new.serial_number
    # The previous version stays for readers mid-swap; older ones are removed.
    assert sorted(p.name for p in bravo.iterdir() if p.name.startswith("..v")) == ["..v3", "..v4"]
    assert new.serial_number != serials["bravo"]
    # The SDS files name the stable paths, not a version directory.
    sds = (tmp_path / "sds" / "bravo" / "tls_certificate.yaml").read_text()
    assert "..v" not in sds
    assert f"{bravo}/tls.crt" in sds


def test_prepare_dev_mesh_writes_valid_configs_for_every_workload(tmp_path: Path) -> None:
    topology = build_test_topology()
    paths = prepare_dev_mesh(topology, tmp_path / "state")
    assert set(paths) == {*topology.services, "edge"}
    ok, output = validate_config(paths["alpha"], cwd=tmp_path)  # absolute paths: any cwd works
    assert ok, output[-2000:]
    assert prepare_dev_mesh(topology, tmp_path / "state") == paths  # idempotent
