"""NetworkPolicies: each workload admits exactly the callers mesh/topology.yaml allows and reaches
exactly its dependencies (base/ denies everything else and allows DNS)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from suuupra_runtime.mesh.topology import EDGE, ServiceSpec, Topology
from tools.k8s.layout import (
    EDGE_PORT,
    MTLS_PORT,
    NAME_LABEL,
    NATS_CLIENT_PORT,
    NATS_NAME,
    NATS_ROUTE_PORT,
    PG_CLUSTER,
    PG_PORT,
    PG_SELECTOR,
    STREAMS_JOB,
    Manifest,
    metadata,
)


def _peer(workload: str) -> Manifest:
    return {"podSelector": {"matchLabels": {NAME_LABEL: workload}}}


def _tcp(*ports: int) -> list[Manifest]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def allowed_callers(topology: Topology, service: ServiceSpec) -> list[str]:
    """The topology's callers, and every workload that reaches this service's sidecar for its
    public keys alone (`Topology.mesh_peers`)."""
    key_readers = {
        name
        for name, spec in topology.services.items()
        if service.name in topology.mesh_peers(spec)
    }
    return sorted({rule.from_service for rule in service.callers} | key_readers)


def service_network_policy(topology: Topology, service: ServiceSpec) -> Manifest:
    """Ingress: exactly the topology's callers (and JWKS readers), on the mTLS port. Egress: the
    upstream sidecars and the JWKS publisher's (`Topology.mesh_peers`), PostgreSQL (if the service
    has a database), NATS, and the topology's `external_ports` to addresses outside the cluster's
    pods (an SMTP relay, provider APIs, S3). DNS comes from base/allow-dns."""
    callers = allowed_callers(topology, service)
    ingress = [{"from": [_peer(c) for c in callers], "ports": _tcp(MTLS_PORT)}] if callers else []
    egress: list[Manifest] = []
    upstreams = sorted(set(topology.mesh_peers(service)))
    if upstreams:
        egress.append({"to": [_peer(u) for u in upstreams], "ports": _tcp(MTLS_PORT)})
    if service.database is not None:
        egress.append(
            {"to": [{"podSelector": {"matchLabels": dict(PG_SELECTOR)}}], "ports": _tcp(PG_PORT)}
        )
    egress.append({"to": [_peer(NATS_NAME)], "ports": _tcp(NATS_CLIENT_PORT)})
    if service.external_ports:
        egress.append(
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _tcp(*service.external_ports)}
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(service.name, topology.namespace, service.name, "service"),
        "spec": {
            "podSelector": {"matchLabels": {NAME_LABEL: service.name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def edge_upstreams(topology: Topology) -> list[str]:
    """The services the edge may reach: those whose callers include the edge."""
    return sorted(
        name for name, spec in topology.services.items() if EDGE in allowed_callers(topology, spec)
    )


def edge_network_policy(topology: Topology) -> Manifest:
    upstreams = edge_upstreams(topology)
    egress = [{"to": [_peer(u) for u in upstreams], "ports": _tcp(MTLS_PORT)}] if upstreams else []
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(EDGE, topology.namespace, EDGE, "edge"),
        "spec": {
            "podSelector": {"matchLabels": {NAME_LABEL: EDGE}},
            "policyTypes": ["Ingress", "Egress"],
            # The edge is the public entry point: any source, its one listener only.
            "ingress": [{"ports": _tcp(EDGE_PORT)}],
            "egress": egress,
        },
    }


def pg_network_policy(topology: Topology) -> Manifest:
    clients = sorted(n for n, s in topology.services.items() if s.database is not None)
    cluster_peer = {"podSelector": {"matchLabels": dict(PG_SELECTOR)}}
    operator_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cnpg-system"}}
    }
    ingress: list[Manifest] = []
    if clients:
        ingress.append({"from": [_peer(c) for c in clients], "ports": _tcp(PG_PORT)})
    ingress += [
        # Streaming replication and the instance manager's status endpoint between instances.
        {"from": [cluster_peer], "ports": [*_tcp(PG_PORT), *_tcp(8000)]},
        # The CloudNativePG operator polls each instance's status endpoint.
        {"from": [operator_peer], "ports": [*_tcp(PG_PORT), *_tcp(8000)]},
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": PG_CLUSTER, "namespace": topology.namespace},
        "spec": {
            "podSelector": {"matchLabels": dict(PG_SELECTOR)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": [
                {"to": [cluster_peer], "ports": [*_tcp(PG_PORT), *_tcp(8000)]},
                # The instance manager talks to the Kubernetes API (leader election, status);
                # its address is not selectable by labels.
                {"ports": [*_tcp(443), *_tcp(6443)]},
            ],
        },
    }


def nats_network_policy(topology: Topology) -> Manifest:
    clients = sorted([*topology.services, STREAMS_JOB])
    nats_peer = _peer(NATS_NAME)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": NATS_NAME, "namespace": topology.namespace},
        "spec": {
            "podSelector": {"matchLabels": {NAME_LABEL: NATS_NAME}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [_peer(c) for c in clients], "ports": _tcp(NATS_CLIENT_PORT)},
                {"from": [nats_peer], "ports": _tcp(NATS_ROUTE_PORT)},
            ],
            "egress": [{"to": [nats_peer], "ports": _tcp(NATS_ROUTE_PORT)}],
        },
    }


def policy_callers(policy: Mapping[str, Any]) -> set[str]:
    callers: set[str] = set()
    for rule in policy.get("spec", {}).get("ingress", []) or []:
        for peer in rule.get("from", []) or []:
            name = peer.get("podSelector", {}).get("matchLabels", {}).get(NAME_LABEL)
            callers.add(name if name is not None else "<any pod>")
    return callers


def policy_mismatches(topology: Topology, k8s_dir: Path) -> list[str]:
    """Callers a service's NetworkPolicy admits that the topology does not allow, or the reverse."""
    problems = []
    for name, spec in sorted(topology.services.items()):
        path = k8s_dir / "services" / name / "networkpolicy.yaml"
        if not path.is_file():
            continue
        policy = yaml.safe_load(path.read_text())
        admitted, allowed = policy_callers(policy), set(allowed_callers(topology, spec))
        for extra in sorted(admitted - allowed):
            problems.append(
                f"{path.relative_to(k8s_dir.parent)}: admits {extra}, "
                f"which the topology does not allow to call {name}"
            )
        for missing in sorted(allowed - admitted):
            problems.append(
                f"{path.relative_to(k8s_dir.parent)}: does not admit {missing}, "
                f"which the topology allows to call {name}"
            )
    return problems
