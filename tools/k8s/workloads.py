"""Pods and the objects around them: Deployments, ServiceAccounts, Services, Certificates,
PodDisruptionBudgets and HorizontalPodAutoscalers for every service and the edge."""

from __future__ import annotations

import copy

from suuupra_runtime.mesh.certs import SDS_CERTIFICATE_FILE, SDS_VALIDATION_FILE, WorkloadPaths
from suuupra_runtime.mesh.topology import EDGE, JWKS_PATH, ServiceSpec, Topology, spiffe_id
from tools.k8s.layout import (
    APP_GRPC_PORT,
    CERT_DIR,
    CERT_ISSUER,
    EDGE_PORT,
    ENVOY_DIR,
    ENVOY_FILE,
    IMAGE,
    MTLS_PORT,
    NAME_LABEL,
    PG_CLUSTER,
    PG_PORT,
    POD,
    RUN_AS,
    SHARED_CONFIG,
    TMP_DIR,
    Manifest,
    envoy_config_map_name,
    labels,
    metadata,
    mtls_secret_name,
    pg_secret_name,
    service_env_secret_name,
)

SDS_FILES = (SDS_CERTIFICATE_FILE, SDS_VALIDATION_FILE)

# Probes. The app binds 127.0.0.1 behind STRICT mTLS, so the kubelet cannot reach it over the pod
# IP: the app's probes run *inside* its container (exec) against the standard gRPC health service.
# Readiness needs SERVING (database, NATS and migrations ready); liveness only needs an answer, so
# a database failover makes pods unready instead of restarting them.

_HEALTH_CHECK = (
    "import sys, grpc\n"
    "from grpc_health.v1 import health_pb2, health_pb2_grpc\n"
    "with grpc.insecure_channel('127.0.0.1:{port}') as channel:\n"
    "    try:\n"
    "        reply = health_pb2_grpc.HealthStub(channel).Check(\n"
    "            health_pb2.HealthCheckRequest(), timeout=3)\n"
    "    except grpc.RpcError:\n"
    "        sys.exit(1)\n"
    "sys.exit({verdict})\n"
)


def health_probe_command(*, port: int = APP_GRPC_PORT, require_serving: bool) -> list[str]:
    verdict = "reply.status != health_pb2.HealthCheckResponse.SERVING" if require_serving else "0"
    return ["python", "-c", _HEALTH_CHECK.format(port=port, verdict=verdict)]


def _exec_probe(command: list[str], *, period: int, failures: int, timeout: int = 5) -> Manifest:
    return {
        "exec": {"command": command},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _tcp_probe(port: int, *, period: int, failures: int) -> Manifest:
    return {
        "tcpSocket": {"port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


_CONTAINER_SECURITY: Manifest = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

_POD_SECURITY: Manifest = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def container_security() -> Manifest:
    return copy.deepcopy(_CONTAINER_SECURITY)


def _resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> Manifest:
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


def _envoy_container(workload: str, ready_port: int) -> Manifest:
    """Envoy as a native sidecar (an init container with restartPolicy Always): it starts before
    the app and stops after it, so the app drains its in-flight calls through a live proxy."""
    return {
        "name": "envoy",
        "image": IMAGE,
        "restartPolicy": "Always",
        "command": ["envoy"],
        "args": [
            "--config-path",
            f"{ENVOY_DIR}/{ENVOY_FILE}",
            "--disable-hot-restart",  # no shared memory in /dev/shm needed
            "--concurrency",
            "1",
            "--log-level",
            "info",
        ],
        "ports": [{"name": "mtls" if workload != EDGE else "http", "containerPort": ready_port}],
        # Listeners bind only once their SDS certificates are loaded, so an open port means the
        # proxy is initialised and can terminate mTLS.
        "startupProbe": _tcp_probe(ready_port, period=2, failures=30),
        "readinessProbe": _tcp_probe(ready_port, period=5, failures=3),
        "livenessProbe": _tcp_probe(ready_port, period=10, failures=6),
        # Half the app container's CPU request on purpose: under contention the kubelet's cgroup
        # weights then give the sidecar the priority `PROXY_NICE` gives it on a dev host, so it
        # batches frames instead of preempting the app for each (bench/mesh_overhead.py).
        "resources": _resources("50m", "64Mi", "500m", "256Mi"),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "envoy-config", "mountPath": ENVOY_DIR, "readOnly": True},
            # Where the rendered config's SDS sources point (suuupra_runtime.mesh.certs layout).
            {"name": "sds", "mountPath": _paths(workload).sds_dir, "readOnly": True},
            {"name": "mtls", "mountPath": _paths(workload).directory, "readOnly": True},
            {"name": "envoy-tmp", "mountPath": TMP_DIR},
        ],
    }


def _paths(workload: str) -> WorkloadPaths:
    return WorkloadPaths(CERT_DIR, workload)


# Services that keep scratch data on local disk get their own emptyDir at DATA_DIR (told through
# SUUUPRA_DATA_DIR): files stages uploads there (resumable while the pod lives; its objects belong
# in the S3 backend, set through the `files-env` Secret, since replicas do not share the disk).
DATA_DIR = "/var/lib/suuupra/data"
_SERVICE_DATA_SIZE = {"files": "20Gi"}


def _pod_volumes(workload: str, *, app_tmp: bool) -> list[Manifest]:
    config_map = envoy_config_map_name(workload)
    volumes: list[Manifest] = [
        {
            "name": "envoy-config",
            "configMap": {"name": config_map, "items": [{"key": ENVOY_FILE, "path": ENVOY_FILE}]},
        },
        {
            "name": "sds",
            "configMap": {"name": config_map, "items": [{"key": f, "path": f} for f in SDS_FILES]},
        },
        # cert-manager rewrites this Secret (tls.crt, tls.key, ca.crt) on renewal; the kubelet
        # swaps the mounted files with one `..data` symlink rename, which Envoy's
        # watched_directory turns into a reload of key and certificate together, no restart.
        {
            "name": "mtls",
            "secret": {"secretName": mtls_secret_name(workload), "defaultMode": 0o440},
        },
        {"name": "envoy-tmp", "emptyDir": {"sizeLimit": "16Mi"}},
    ]
    if app_tmp:
        volumes.append({"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}})
    if workload in _SERVICE_DATA_SIZE:
        volumes.append({"name": "data", "emptyDir": {"sizeLimit": _SERVICE_DATA_SIZE[workload]}})
    return volumes


def _spread(workload: str) -> list[Manifest]:
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {NAME_LABEL: workload}},
        }
    ]


def _deployment(
    topology: Topology,
    workload: str,
    component: str,
    *,
    init_containers: list[Manifest],
    containers: list[Manifest],
    app_tmp: bool,
) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(workload, topology.namespace, workload, component),
        "spec": {
            "replicas": 2,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {NAME_LABEL: workload}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": labels(workload, component)},
                "spec": {
                    "serviceAccountName": workload,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 45,
                    "securityContext": copy.deepcopy(_POD_SECURITY),
                    "topologySpreadConstraints": _spread(workload),
                    "initContainers": init_containers,
                    "containers": containers,
                    "volumes": _pod_volumes(workload, app_tmp=app_tmp),
                },
            },
        },
    }


def _database_env(topology: Topology, service: ServiceSpec) -> list[Manifest]:
    if service.database is None:
        return []
    secret = pg_secret_name(service.name)
    host = f"{PG_CLUSTER}-rw.{topology.namespace}.svc.cluster.local"
    return [
        {"name": "DB_USER", "valueFrom": {"secretKeyRef": {"name": secret, "key": "username"}}},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}},
        # Kubernetes expands $(VAR) from the variables defined above; passwords are hex
        # (see `secrets`), so they need no URL escaping.
        {
            "name": "DATABASE_URL",
            "value": f"postgresql://$(DB_USER):$(DB_PASSWORD)@{host}:{PG_PORT}/{service.database}",
        },
    ]


def jwks_url(topology: Topology, service: ServiceSpec) -> str | None:
    """Where the app fetches the JWKS that verifies user tokens: its own HTTP port if it serves
    the JWKS, else through its sidecar's outbound listener, which routes the publisher's
    `http_paths` for every service (`Topology.mesh_peers`). None without a publisher."""
    publisher = topology.jwks_service()
    if publisher is None:
        return None
    if publisher.name == service.name:
        return f"http://127.0.0.1:{POD.app_http_port}{JWKS_PATH}"
    return f"http://127.0.0.1:{POD.outbound_port}{JWKS_PATH}"


def _app_env(topology: Topology, service: ServiceSpec) -> list[Manifest]:
    env: list[Manifest] = [
        {"name": "SUUUPRA_SERVICE", "value": service.name},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    url = jwks_url(topology, service)
    if url is not None:
        env.append({"name": "SUUUPRA_JWKS_URL", "value": url})
    if service.name in _SERVICE_DATA_SIZE:
        env.append({"name": "SUUUPRA_DATA_DIR", "value": DATA_DIR})
    return env + _database_env(topology, service)


def _env_from(service: ServiceSpec) -> list[Manifest]:
    """The shared settings, then the service's own optional Secret `<service>-env` for its
    secret or deployment-specific settings (e.g. identity's key-encryption key)."""
    return [
        {"configMapRef": {"name": SHARED_CONFIG}},
        {"secretRef": {"name": service_env_secret_name(service.name), "optional": True}},
    ]


def _app_container(topology: Topology, service: ServiceSpec) -> Manifest:
    return {
        "name": "app",
        "image": IMAGE,
        "args": [f"services.{_module(service.name)}"],
        "envFrom": _env_from(service),
        "env": _app_env(topology, service),
        "startupProbe": _exec_probe(
            health_probe_command(require_serving=False), period=2, failures=60
        ),
        "readinessProbe": _exec_probe(
            health_probe_command(require_serving=True), period=10, failures=3
        ),
        "livenessProbe": _exec_probe(
            health_probe_command(require_serving=False), period=20, failures=3
        ),
        "resources": _resources("100m", "192Mi", "1", "512Mi"),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "tmp", "mountPath": TMP_DIR},
            *(
                [{"name": "data", "mountPath": DATA_DIR}]
                if service.name in _SERVICE_DATA_SIZE
                else []
            ),
        ],
    }


def _migrate_container(topology: Topology, service: ServiceSpec) -> Manifest:
    """Applies the service's migrations before the app starts (tools/k8s/migrations.py); a
    failure keeps the new pod from starting while the old ones keep serving."""
    return {
        "name": "migrate",
        "image": IMAGE,
        "args": ["tools.k8s", "migrate", service.name],
        "envFrom": _env_from(service),
        "env": _app_env(topology, service),
        "resources": _resources("50m", "128Mi", "500m", "256Mi"),
        "securityContext": container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}],
    }


def _module(service: str) -> str:
    return service.replace("-", "_")


def service_deployment(topology: Topology, service: ServiceSpec) -> Manifest:
    init = [_envoy_container(service.name, MTLS_PORT)]
    if service.database is not None:
        init.append(_migrate_container(topology, service))
    return _deployment(
        topology,
        service.name,
        "service",
        init_containers=init,
        containers=[_app_container(topology, service)],
        app_tmp=True,
    )


def service_account(topology: Topology, workload: str, component: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            **metadata(workload, topology.namespace, workload, component),
            "annotations": {"suuupra.io/spiffe-id": spiffe_id(topology, workload)},
        },
        "automountServiceAccountToken": False,
    }


def service_service(topology: Topology, service: ServiceSpec) -> Manifest:
    """Headless, so each caller's Envoy resolves every ready pod and balances per request
    (a ClusterIP would pin each long-lived HTTP/2 connection to one pod)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(service.name, topology.namespace, service.name, "service"),
        "spec": {
            "clusterIP": "None",
            "selector": {NAME_LABEL: service.name},
            "ports": [{"name": "mtls", "port": MTLS_PORT, "targetPort": "mtls", "protocol": "TCP"}],
        },
    }


def certificate(topology: Topology, workload: str, component: str) -> Manifest:
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": metadata(mtls_secret_name(workload), topology.namespace, workload, component),
        "spec": {
            "secretName": mtls_secret_name(workload),
            "uris": [spiffe_id(topology, workload)],
            "duration": "24h",
            "renewBefore": "8h",
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
            "issuerRef": {"name": CERT_ISSUER, "kind": "Issuer", "group": "cert-manager.io"},
        },
    }


def pod_disruption_budget(topology: Topology, workload: str, component: str) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(workload, topology.namespace, workload, component),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {NAME_LABEL: workload}}},
    }


def autoscaler(topology: Topology, workload: str, component: str, container: str) -> Manifest:
    """Scales on the CPU of the workload's own container, not the pod average that the sidecar
    would dilute."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(workload, topology.namespace, workload, component),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload},
            "minReplicas": 2,
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "ContainerResource",
                    "containerResource": {
                        "name": "cpu",
                        "container": container,
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


EDGE_DRAIN_SECONDS = 10

# Before the edge's Envoy gets SIGTERM (on which it exits at once): start a graceful drain
# (GOAWAY / `Connection: close` to clients) and keep serving while the load balancer and the
# Service's endpoints drop this pod.
_EDGE_PRE_STOP = (
    "import time, urllib.request\n"
    "request = urllib.request.Request(\n"
    "    'http://127.0.0.1:{admin}/drain_listeners?graceful', method='POST')\n"
    "try:\n"
    "    urllib.request.urlopen(request, timeout=2).close()\n"
    "finally:\n"
    "    time.sleep({seconds})\n"
)


def edge_pre_stop_command(admin_port: int = POD.admin_port) -> list[str]:
    return ["python", "-c", _EDGE_PRE_STOP.format(admin=admin_port, seconds=EDGE_DRAIN_SECONDS)]


def edge_deployment(topology: Topology) -> Manifest:
    envoy = _envoy_container(EDGE, EDGE_PORT)
    # The edge is a plain Deployment of Envoy; it is the pod's only container.
    del envoy["restartPolicy"]
    envoy["args"] += ["--drain-time-s", str(EDGE_DRAIN_SECONDS), "--drain-strategy", "immediate"]
    envoy["lifecycle"] = {"preStop": {"exec": {"command": edge_pre_stop_command()}}}
    envoy["resources"] = _resources("100m", "128Mi", "1", "512Mi")
    deployment = _deployment(
        topology, EDGE, "edge", init_containers=[], containers=[envoy], app_tmp=False
    )
    return deployment


def edge_service(topology: Topology) -> Manifest:
    """ClusterIP here; the dev overlay turns it into a NodePort, prod into a LoadBalancer."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(EDGE, topology.namespace, EDGE, "edge"),
        "spec": {
            "type": "ClusterIP",
            "selector": {NAME_LABEL: EDGE},
            "ports": [{"name": "http", "port": EDGE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
