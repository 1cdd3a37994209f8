"""PostgreSQL through CloudNativePG: the Cluster with one managed role per service, one Database
per service, and the credential Secrets (printed with fresh random passwords, never committed)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from suuupra_runtime.mesh.topology import Topology
from tools.k8s.layout import PART_OF, PG_CLUSTER, Manifest, labels, pg_secret_name


def _resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> Manifest:
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


def pg_cluster(topology: Topology) -> Manifest:
    roles = [
        {
            "name": spec.database,
            "ensure": "present",
            "login": True,
            "superuser": False,
            "createdb": False,
            "createrole": False,
            "inherit": True,
            "connectionLimit": 200,
            "passwordSecret": {"name": pg_secret_name(name)},
        }
        for name, spec in sorted(topology.services.items())
        if spec.database is not None
    ]
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {
            "name": PG_CLUSTER,
            "namespace": topology.namespace,
            "labels": {"app.kubernetes.io/part-of": PART_OF},
        },
        "spec": {
            "instances": 3,
            "primaryUpdateStrategy": "unsupervised",
            # A commit returns only once a standby has it: failover loses no acknowledged write.
            "postgresql": {
                "synchronous": {"method": "any", "number": 1, "dataDurability": "required"},
                "parameters": {"max_connections": "400", "shared_buffers": "256MB"},
            },
            "storage": {"size": "20Gi"},
            "walStorage": {"size": "10Gi"},
            "resources": _resources("500m", "1Gi", "2", "2Gi"),
            "affinity": {"enablePodAntiAffinity": True, "topologyKey": "kubernetes.io/hostname"},
            "managed": {"roles": roles},
        },
    }


def pg_databases(topology: Topology) -> list[Manifest]:
    return [
        {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Database",
            "metadata": {
                "name": f"{PG_CLUSTER}-{name}",
                "namespace": topology.namespace,
                "labels": labels(name, "database"),
            },
            "spec": {
                "name": spec.database,
                "owner": spec.database,
                "cluster": {"name": PG_CLUSTER},
                "ensure": "present",
                "databaseReclaimPolicy": "retain",
            },
        }
        for name, spec in sorted(topology.services.items())
        if spec.database is not None
    ]


def credential_secrets(
    topology: Topology, token: Callable[[int], str] = secrets.token_hex
) -> list[Manifest]:
    """One basic-auth Secret per service with a database: CloudNativePG sets the role's password
    from it (managed roles) and the service's pods read it into DATABASE_URL."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/basic-auth",
            "metadata": {
                "name": pg_secret_name(name),
                "namespace": topology.namespace,
                # CloudNativePG re-reads labelled Secrets when they change (password rotation).
                "labels": {**labels(name, "database"), "cnpg.io/reload": "true"},
            },
            "stringData": {"username": str(spec.database), "password": token(24)},
        }
        for name, spec in sorted(topology.services.items())
        if spec.database is not None
    ]
