"""The generator turns any topology into per-service manifests whose policies follow it."""

from __future__ import annotations

from typing import Any

import yaml

from suuupra_runtime.mesh.sidecars import PROXY_NICE
from suuupra_runtime.mesh.topology import Topology, parse_topology
from tests.k8s.conftest import sample_topology_data
from tools.k8s import audit
from tools.k8s.layout import MTLS_PORT, NAME_LABEL, PG_SELECTOR
from tools.k8s.policies import edge_network_policy, service_network_policy
from tools.k8s.storage import credential_secrets, pg_cluster, pg_databases
from tools.k8s.streams import stream_specs
from tools.k8s.tree import render_tree
from tools.k8s.workloads import service_deployment


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _ingress_callers(policy: dict[str, Any]) -> set[str]:
    return {
        peer["podSelector"]["matchLabels"][NAME_LABEL]
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
    }


def _egress_names(policy: dict[str, Any], port: int) -> set[str]:
    return {
        peer["podSelector"]["matchLabels"].get(NAME_LABEL, "<postgres>")
        for rule in policy["spec"]["egress"]
        if {p["port"] for p in rule["ports"]} == {port}
        for peer in rule["to"]
    }


def test_every_service_gets_its_own_directory_and_is_listed(sample_topology: Topology) -> None:
    tree = render_tree(sample_topology)
    listed = _docs(tree["services/kustomization.yaml"])[0]["resources"]
    assert listed == ["courses", "identity", "search"]
    for name in listed:
        kustomization = _docs(tree[f"services/{name}/kustomization.yaml"])[0]
        for resource in kustomization["resources"]:
            assert f"services/{name}/{resource}" in tree
        assert kustomization["configMapGenerator"][0]["name"] == f"{name}-envoy"
        assert kustomization["configMapGenerator"][0]["namespace"] == "suuupra"


def test_network_policy_admits_exactly_the_topology_callers_on_the_mtls_port(
    sample_topology: Topology,
) -> None:
    identity = service_network_policy(sample_topology, sample_topology.services["identity"])
    # search is no caller of identity, but reaches its sidecar for the JWKS alone.
    assert _ingress_callers(identity) == {"edge", "courses", "search"}
    assert {p["port"] for r in identity["spec"]["ingress"] for p in r["ports"]} == {MTLS_PORT}
    search = service_network_policy(sample_topology, sample_topology.services["search"])
    assert search["spec"]["ingress"] == []  # nobody may call search
    assert set(search["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_network_policy_egress_follows_upstreams_and_database(sample_topology: Topology) -> None:
    courses = service_network_policy(sample_topology, sample_topology.services["courses"])
    assert _egress_names(courses, MTLS_PORT) == {"identity"}
    assert _egress_names(courses, 5432) == {"<postgres>"}
    assert _egress_names(courses, 4222) == {"nats"}
    search = service_network_policy(sample_topology, sample_topology.services["search"])
    assert _egress_names(search, MTLS_PORT) == {"courses", "identity"}  # identity: JWKS only
    assert _egress_names(search, 5432) == set()
    identity = service_network_policy(sample_topology, sample_topology.services["identity"])
    assert _egress_names(identity, MTLS_PORT) == set()


def test_only_declared_external_ports_leave_the_cluster() -> None:
    data = sample_topology_data()
    data["services"]["search"]["external_ports"] = [587, 443]
    topology = parse_topology(data)
    search = service_network_policy(topology, topology.services["search"])
    outside = [
        rule for rule in search["spec"]["egress"] if any("ipBlock" in peer for peer in rule["to"])
    ]
    assert [p["port"] for rule in outside for p in rule["ports"]] == [443, 587]
    courses = service_network_policy(topology, topology.services["courses"])
    assert not any("ipBlock" in peer for r in courses["spec"]["egress"] for peer in r["to"])
    deny = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    policies = [
        doc
        for path, text in render_tree(topology).items()
        if path.endswith("networkpolicy.yaml") and path.startswith(("services/", "edge/"))
        for doc in _docs(text)
    ]
    assert audit.network_policy_problems([deny, *policies], topology) == []
    widened = next(p for p in policies if p["metadata"]["name"] == "search")
    widened["spec"]["egress"][-1]["ports"].append({"protocol": "TCP", "port": 22})
    assert audit.network_policy_problems([deny, *policies], topology) == [
        "NetworkPolicy for search: egress beyond the cluster's pods on [22, 443, 587], "
        "topology external_ports [443, 587]"
    ]


def test_edge_reaches_only_services_that_accept_it(sample_topology: Topology) -> None:
    policy = edge_network_policy(sample_topology)
    assert _egress_names(policy, MTLS_PORT) == {"identity", "courses"}


def test_rendered_policies_pass_the_audit_and_a_widened_one_fails(
    sample_topology: Topology,
) -> None:
    tree = render_tree(sample_topology)
    objects = [
        doc
        for path, text in tree.items()
        if path.endswith("networkpolicy.yaml") and path.startswith(("services/", "edge/"))
        for doc in _docs(text)
    ]
    base_deny = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    assert audit.network_policy_problems([base_deny, *objects], sample_topology) == []
    search = next(o for o in objects if o["metadata"]["name"] == "search")
    search["spec"]["ingress"] = [
        {
            "from": [{"podSelector": {"matchLabels": {NAME_LABEL: "edge"}}}],
            "ports": [{"port": MTLS_PORT}],
        }
    ]
    problems = audit.network_policy_problems([base_deny, *objects], sample_topology)
    assert problems == ["NetworkPolicy for search: caller edge is not allowed by the topology"]
    assert audit.network_policy_problems(objects, sample_topology)[0].startswith("no default-deny")


def test_deployment_is_hardened_with_sidecar_and_migration(sample_topology: Topology) -> None:
    deployment = service_deployment(sample_topology, sample_topology.services["identity"])
    assert audit.hardening_problems(deployment) == []
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "identity"
    envoy, migrate = pod["initContainers"]
    assert envoy["restartPolicy"] == "Always"  # native sidecar: up before, down after the app
    assert migrate["args"] == ["tools.k8s", "migrate", "identity"]
    assert "restartPolicy" not in migrate
    (app,) = pod["containers"]
    assert app["args"] == ["services.identity"]
    assert "ports" not in app  # the app is reachable only through its sidecar
    env = {e["name"]: e for e in app["env"]}
    assert env["DATABASE_URL"]["value"] == (
        "postgresql://$(DB_USER):$(DB_PASSWORD)@suuupra-pg-rw.suuupra.svc.cluster.local:5432/identity"
    )
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "pg-identity",
        "key": "password",
    }
    # $(VAR) expansion only sees variables defined earlier in the list.
    names = [e["name"] for e in app["env"]]
    assert names.index("DB_PASSWORD") < names.index("DATABASE_URL")


def test_sidecar_cpu_weight_mirrors_the_dev_proxy_niceness(sample_topology: Topology) -> None:
    # PROXY_NICE gives Envoy 1/1.25**nice of the app's CPU weight on a dev host; in k8s the
    # kubelet derives cgroup weights from CPU requests, so the sidecar's request must be the app's
    # scaled by the same factor (to within one nice step) for the sidecar to batch its work there.
    pod = service_deployment(sample_topology, sample_topology.services["identity"])["spec"]
    envoy = pod["template"]["spec"]["initContainers"][0]
    (app,) = pod["template"]["spec"]["containers"]
    assert envoy["name"] == "envoy"

    def millicores(container: dict[str, Any]) -> int:
        return int(container["resources"]["requests"]["cpu"].removesuffix("m"))

    ratio = millicores(envoy) / millicores(app)
    assert 1.25 ** -(PROXY_NICE + 1) < ratio < 1.25 ** -(PROXY_NICE - 1)


def test_service_without_database_has_no_migration_or_credentials(
    sample_topology: Topology,
) -> None:
    deployment = service_deployment(sample_topology, sample_topology.services["search"])
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["envoy"]
    assert not any(e["name"] == "DATABASE_URL" for e in pod["containers"][0]["env"])


def test_hardening_audit_flags_a_weakened_container(sample_topology: Topology) -> None:
    deployment = service_deployment(sample_topology, sample_topology.services["courses"])
    app = deployment["spec"]["template"]["spec"]["containers"][0]
    app["securityContext"]["readOnlyRootFilesystem"] = False
    del app["resources"]["limits"]["memory"]
    del app["readinessProbe"]
    problems = audit.hardening_problems(deployment)
    assert problems == [
        "Deployment/courses container app: readOnlyRootFilesystem must be true",
        "Deployment/courses container app: resources.limits.memory missing",
        "Deployment/courses container app: readinessProbe missing",
    ]


def test_one_role_and_database_per_service_with_a_database(sample_topology: Topology) -> None:
    roles = pg_cluster(sample_topology)["spec"]["managed"]["roles"]
    assert [(r["name"], r["passwordSecret"]["name"]) for r in roles] == [
        ("courses", "pg-courses"),
        ("identity", "pg-identity"),
    ]
    assert all(not r["superuser"] and not r["createdb"] for r in roles)
    databases = pg_databases(sample_topology)
    assert [(d["spec"]["name"], d["spec"]["owner"]) for d in databases] == [
        ("courses", "courses"),
        ("identity", "identity"),
    ]
    assert {d["spec"]["cluster"]["name"] for d in databases} == {"suuupra-pg"}
    assert PG_SELECTOR == {"cnpg.io/cluster": "suuupra-pg"}


def test_credential_secrets_are_random_and_url_safe(sample_topology: Topology) -> None:
    first, second = credential_secrets(sample_topology), credential_secrets(sample_topology)
    assert [s["metadata"]["name"] for s in first] == ["pg-courses", "pg-identity"]
    assert all(s["type"] == "kubernetes.io/basic-auth" for s in first)
    passwords = [s["stringData"]["password"] for s in [*first, *second]]
    assert len(set(passwords)) == 4
    assert all(len(p) == 48 and all(c in "0123456789abcdef" for c in p) for p in passwords)


def test_streams_are_one_per_domain_and_replicated(sample_topology: Topology) -> None:
    specs = stream_specs(sample_topology, replicas=3)
    assert [(s.name, s.subjects, s.replicas) for s in specs] == [
        ("COURSES", ("suuupra.courses.v1.>",), 3),
        ("IDENTITY", ("suuupra.identity.v1.>",), 3),
    ]


def test_envoy_configmaps_use_kubernetes_addresses(sample_topology: Topology) -> None:
    tree = render_tree(sample_topology)
    courses = yaml.safe_load(tree["services/courses/envoy.yaml"])
    clusters = {c["name"]: c for c in courses["static_resources"]["clusters"]}
    address = clusters["mesh_identity"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert address["endpoint"]["address"]["socket_address"] == {
        "address": "identity.suuupra.svc.cluster.local",
        "port_value": MTLS_PORT,
    }
    sds = yaml.safe_load(tree["services/courses/tls_certificate.yaml"])
    certificate = sds["resources"][0]["tls_certificate"]
    assert certificate["certificate_chain"]["filename"] == "/etc/suuupra/certs/courses/tls.crt"


def test_jwks_is_fetched_locally_or_through_the_sidecar(
    sample_topology: Topology,
) -> None:
    def env(service: str) -> dict[str, Any]:
        deployment = service_deployment(sample_topology, sample_topology.services[service])
        (app,) = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in app["env"]}

    # identity serves it; every other service reaches it through its outbound listener, search
    # too although identity is not among its upstreams (its sidecar routes the JWKS path alone).
    assert env("identity")["SUUUPRA_JWKS_URL"] == "http://127.0.0.1:8081/.well-known/jwks.json"
    assert env("courses")["SUUUPRA_JWKS_URL"] == "http://127.0.0.1:15001/.well-known/jwks.json"
    assert env("search")["SUUUPRA_JWKS_URL"] == "http://127.0.0.1:15001/.well-known/jwks.json"


def test_service_settings_secret_is_optional_and_per_service(sample_topology: Topology) -> None:
    deployment = service_deployment(sample_topology, sample_topology.services["courses"])
    pod = deployment["spec"]["template"]["spec"]
    for container in [pod["initContainers"][1], pod["containers"][0]]:
        assert container["envFrom"][1] == {"secretRef": {"name": "courses-env", "optional": True}}
