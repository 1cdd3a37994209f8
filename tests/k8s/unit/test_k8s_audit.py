"""The checks the rendered-manifest tests rely on must be able to fail."""

from __future__ import annotations

import copy
from typing import Any

from suuupra_runtime.mesh.topology import Topology
from tools.k8s import audit, crds
from tools.k8s.storage import pg_cluster, pg_databases
from tools.k8s.workloads import certificate, edge_service, service_deployment, service_service


def test_generated_custom_resources_pass(sample_topology: Topology) -> None:
    objects = [
        pg_cluster(sample_topology),
        *pg_databases(sample_topology),
        certificate(sample_topology, "identity", "service"),
    ]
    assert [crds.custom_resource_problems(o) for o in objects] == [[]] * len(objects)
    assert crds.custom_resource_problems({"apiVersion": "v1", "kind": "Service"}) is None


def test_cluster_problems_are_reported(sample_topology: Topology) -> None:
    cluster = pg_cluster(sample_topology)
    cluster["spec"]["instances"] = 1  # synchronous replication needs a standby
    del cluster["spec"]["managed"]["roles"][0]["passwordSecret"]
    del cluster["spec"]["storage"]
    assert crds.custom_resource_problems(cluster) == [
        "Cluster: spec.storage.size is required",
        "Cluster: spec.managed.roles[0] logs in without passwordSecret",
        "Cluster: synchronous.number must be below spec.instances",
    ]


def test_database_and_certificate_problems_are_reported(sample_topology: Topology) -> None:
    database = pg_databases(sample_topology)[0]
    del database["spec"]["owner"]
    assert crds.custom_resource_problems(database) == ["Database: spec.owner is required"]
    cert = certificate(sample_topology, "identity", "service")
    del cert["spec"]["uris"]
    cert["spec"]["privateKey"]["algorithm"] = "DSA"
    problems = crds.custom_resource_problems(cert)
    assert problems is not None and len(problems) == 2
    assert problems[0].startswith("Certificate: spec needs one of commonName")


def test_issuer_needs_exactly_one_type() -> None:
    def issuer(spec: dict[str, Any]) -> dict[str, Any]:
        meta = {"name": "x"}
        return {"apiVersion": crds.CERT_MANAGER, "kind": "Issuer", "metadata": meta, "spec": spec}

    assert crds.custom_resource_problems(issuer({"ca": {"secretName": "ca"}})) == []
    assert crds.custom_resource_problems(issuer({"ca": {}})) == [
        "Issuer: spec.ca.secretName is required"
    ]
    two = crds.custom_resource_problems(issuer({"ca": {"secretName": "a"}, "selfSigned": {}}))
    assert two is not None and len(two) == 1


def test_service_ports_beyond_mtls_are_reported(sample_topology: Topology) -> None:
    service = service_service(sample_topology, sample_topology.services["courses"])
    assert audit.service_port_problems(service, sample_topology) == []
    leaky = copy.deepcopy(service)
    leaky["spec"]["ports"].append({"name": "grpc", "port": 50051, "targetPort": 50051})
    (problem,) = audit.service_port_problems(leaky, sample_topology)
    assert problem.startswith("Service/courses: exposes [15443, 50051]")
    assert audit.service_port_problems(edge_service(sample_topology), sample_topology) == []
    stranger = {"kind": "Service", "metadata": {"name": "db-admin"}, "spec": {"ports": []}}
    assert audit.service_port_problems(stranger, sample_topology) == [
        "Service/db-admin: not a topology service, the edge or known infrastructure"
    ]


def test_missing_references_are_reported(sample_topology: Topology) -> None:
    deployment = service_deployment(sample_topology, sample_topology.services["identity"])
    problems = audit.reference_problems([deployment], external_secrets={"pg-identity"})
    assert set(problems) == {
        "Deployment/identity: ServiceAccount identity does not exist",
        "Deployment/identity: ConfigMap identity-envoy missing",
        "Deployment/identity: Secret identity-mtls missing",
        "Deployment/identity: ConfigMap suuupra-shared missing",
    }
