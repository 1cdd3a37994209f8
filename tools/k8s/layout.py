"""Names, labels and in-pod ports shared by every generated manifest."""

from __future__ import annotations

from typing import Any

from suuupra_runtime.mesh.envoy import KubernetesAddressing

Manifest = dict[str, Any]

IMAGE = "suuupra"  # the one image (Containerfile); overlays point it at a registry
RUN_AS = 10001  # the numeric user of Containerfile
PART_OF = "suuupra"
NAME_LABEL = "app.kubernetes.io/name"

# In-pod ports come from the mesh's Kubernetes addressing, the same the Envoy configs use.
POD = KubernetesAddressing(namespace="")
APP_GRPC_PORT = POD.app_port  # app, 127.0.0.1 only
MTLS_PORT = POD.inbound_port  # sidecar inbound, the only port a service exposes
EDGE_PORT = POD.edge_port  # edge public listener

CERT_DIR = "/etc/suuupra/certs"  # cert_dir of the rendered Envoy configs
ENVOY_DIR = "/etc/envoy"
ENVOY_FILE = "envoy.yaml"
# The one writable path in every container: an emptyDir, since the root filesystem is read-only.
TMP_DIR = "/tmp"  # noqa: S108

CERT_ISSUER = "suuupra-mesh-ca"  # namespaced Issuer from components/cert-manager-issuer
SHARED_CONFIG = "suuupra-shared"  # ConfigMap from base
PG_CLUSTER = "suuupra-pg"  # CloudNativePG Cluster
PG_PORT = 5432
PG_SELECTOR = {"cnpg.io/cluster": PG_CLUSTER}
NATS_NAME = "nats"
NATS_CLIENT_PORT = 4222
NATS_ROUTE_PORT = 6222
STREAMS_JOB = "nats-streams"


def pg_secret_name(service: str) -> str:
    return f"pg-{service}"


def service_env_secret_name(service: str) -> str:
    """Optional Secret with a service's own settings, created by the operator."""
    return f"{service}-env"


def mtls_secret_name(workload: str) -> str:
    return f"{workload}-mtls"


def labels(workload: str, component: str) -> dict[str, str]:
    return {
        NAME_LABEL: workload,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/component": component,
    }


def metadata(name: str, namespace: str, workload: str, component: str) -> Manifest:
    return {"name": name, "namespace": namespace, "labels": labels(workload, component)}


def envoy_config_map_name(workload: str) -> str:
    """The ConfigMap with the workload's envoy.yaml and its two SDS files."""
    return f"{workload}-envoy"
