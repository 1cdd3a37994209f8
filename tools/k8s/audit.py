"""Checks over *rendered* manifests (`kubectl kustomize k8s/overlays/<env>` output), so what an
operator applies is what is checked, overlays' patches included. Each returns problems as text;
an empty list means the rendered set is acceptable."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from suuupra_runtime.mesh.topology import EDGE, Topology
from tools.k8s.layout import (
    EDGE_PORT,
    MTLS_PORT,
    NAME_LABEL,
    NATS_CLIENT_PORT,
    NATS_NAME,
    NATS_ROUTE_PORT,
    PG_PORT,
    PG_SELECTOR,
)
from tools.k8s.policies import allowed_callers, edge_upstreams

Obj = Mapping[str, Any]
POD_OWNERS = ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet", "CronJob")
# Infrastructure Services (not mesh workloads) and the only ports each may expose.
INFRA_SERVICE_PORTS = {"nats": {NATS_CLIENT_PORT}, "nats-headless": {NATS_ROUTE_PORT}}
_WRITABLE_VOLUME_KINDS = ("emptyDir", "persistentVolumeClaim", "ephemeral")


def _name(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def _pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj.get("spec", {})
    if obj.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    result: Obj = spec.get("template", {}).get("spec", {})
    return result


def _long_running(container: Obj, *, init: bool) -> bool:
    return not init or container.get("restartPolicy") == "Always"


def _container_problems(where: str, c: Obj, pod_security: Obj, *, probes: bool) -> list[str]:
    sc = c.get("securityContext", {})
    problems = []
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: readOnlyRootFilesystem must be true")
    if "ALL" not in (sc.get("capabilities", {}).get("drop") or []):
        problems.append(f"{where}: capabilities must drop ALL")
    if sc.get("capabilities", {}).get("add"):
        problems.append(f"{where}: adds capabilities")
    if sc.get("privileged"):
        problems.append(f"{where}: privileged")
    if not sc.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
        problems.append(f"{where}: runAsNonRoot must be true")
    user = sc.get("runAsUser", pod_security.get("runAsUser"))
    if user == 0:
        problems.append(f"{where}: runs as uid 0")
    seccomp = sc.get("seccompProfile", pod_security.get("seccompProfile", {}))
    if seccomp.get("type") != "RuntimeDefault":
        problems.append(f"{where}: seccompProfile must be RuntimeDefault")
    resources = c.get("resources", {})
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(section, {}):
                problems.append(f"{where}: resources.{section}.{resource} missing")
    if probes:
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in c:
                problems.append(f"{where}: {probe} missing")
    return problems


def hardening_problems(obj: Obj) -> list[str]:
    """Pods non-root, read-only root filesystem, no capabilities, no privilege escalation,
    seccomp RuntimeDefault, requests and limits, probes on long-running containers, writable
    mounts only on emptyDir/PVC, and no Kubernetes API token."""
    if obj.get("kind") not in POD_OWNERS:
        return []
    pod = _pod_spec(obj)
    pod_security = pod.get("securityContext", {})
    problems = []
    if pod_security.get("runAsNonRoot") is not True:
        problems.append(f"{_name(obj)}: pod securityContext.runAsNonRoot must be true")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{_name(obj)}: automountServiceAccountToken must be false")
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        problems.append(f"{_name(obj)}: shares a host namespace")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    runs = obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet")
    groups = (("initContainers", True), ("containers", False))
    for field, init in groups:
        for c in pod.get(field, []):
            where = f"{_name(obj)} {field[:-1]} {c.get('name')}"
            probes = runs and _long_running(c, init=init)
            problems += _container_problems(where, c, pod_security, probes=probes)
            for mount in c.get("volumeMounts", []):
                volume = volumes.get(mount["name"], {})
                if not mount.get("readOnly") and not any(
                    k in volume for k in _WRITABLE_VOLUME_KINDS
                ):
                    if obj.get("kind") == "StatefulSet" and "volumeClaimTemplates" in obj["spec"]:
                        claims = {
                            t["metadata"]["name"] for t in obj["spec"]["volumeClaimTemplates"]
                        }
                        if mount["name"] in claims:
                            continue
                    problems.append(
                        f"{where}: writable mount {mount['mountPath']} is not an emptyDir/PVC"
                    )
    return problems


def _service_selector(obj: Obj) -> str | None:
    selector: Mapping[str, str] = obj.get("spec", {}).get("selector") or {}
    return selector.get(NAME_LABEL)


def service_port_problems(obj: Obj, topology: Topology) -> list[str]:
    """A mesh service exposes its sidecar's mTLS port only; the edge its public port only;
    infrastructure Services only their protocol ports."""
    if obj.get("kind") != "Service":
        return []
    name = obj["metadata"]["name"]
    ports = {p["port"] for p in obj["spec"].get("ports", [])}
    targets = {p.get("targetPort", p["port"]) for p in obj["spec"].get("ports", [])}
    selected = _service_selector(obj)
    if name in topology.services:
        if selected != name:
            return [f"Service/{name}: selects {selected!r}, not the {name} pods"]
        if ports != {MTLS_PORT} or targets not in ({"mtls"}, {MTLS_PORT}):
            return [f"Service/{name}: exposes {sorted(ports)} / {targets}, only mTLS {MTLS_PORT}"]
        return []
    if name == EDGE:
        return [] if ports == {EDGE_PORT} else [f"Service/edge: exposes {sorted(ports)}"]
    allowed = INFRA_SERVICE_PORTS.get(name)
    if allowed is None:
        return [f"Service/{name}: not a topology service, the edge or known infrastructure"]
    return [] if ports <= allowed else [f"Service/{name}: exposes {sorted(ports - allowed)}"]


# -- NetworkPolicies ---------------------------------------------------------------------------


def _selects(policy: Obj) -> Mapping[str, str]:
    labels: Mapping[str, str] = policy["spec"].get("podSelector", {}).get("matchLabels") or {}
    return labels


def _peers(rules: Iterable[Obj], direction: str, port: int) -> set[str]:
    """Names (or `<cluster:...>` selectors) of the peers admitted on `port`."""
    found: set[str] = set()
    for rule in rules:
        rule_ports = {p.get("port") for p in rule.get("ports", [])}
        if rule.get("ports") and port not in rule_ports:
            continue
        peers = rule.get(direction)
        if peers is None:
            found.add("<anywhere>")
            continue
        for peer in peers:
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            if "namespaceSelector" in peer or "ipBlock" in peer:
                found.add("<outside the namespace>")
            elif NAME_LABEL in labels:
                found.add(labels[NAME_LABEL])
            elif labels == PG_SELECTOR:
                found.add("<postgres>")
            else:
                found.add(f"<pods {dict(labels)}>")
    return found


def _outside_ports(rules: Iterable[Obj]) -> set[Any]:
    """Ports on which rules admit peers outside the namespace's pods (ipBlock, other namespaces)."""
    return {
        port.get("port")
        for rule in rules
        if any("ipBlock" in peer or "namespaceSelector" in peer for peer in rule.get("to", []))
        for port in rule.get("ports", [{"port": "<any>"}])
    }


def _policies_for(policies: Sequence[Obj], workload: str) -> list[Obj]:
    return [p for p in policies if _selects(p).get(NAME_LABEL) == workload]


def _compare(where: str, what: str, actual: set[str], expected: set[str]) -> list[str]:
    problems = [f"{where}: {what} {p} is not allowed by the topology" for p in actual - expected]
    problems += [
        f"{where}: {what} {p} allowed by the topology is missing" for p in expected - actual
    ]
    return sorted(problems)


def network_policy_problems(objects: Sequence[Obj], topology: Topology) -> list[str]:
    """The namespace denies by default, and each workload's policy admits exactly the callers
    and reaches exactly the dependencies of mesh/topology.yaml."""
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    problems = []
    deny = [
        p
        for p in policies
        if not _selects(p) and not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]
    if not any(set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"} for p in deny):
        problems.append("no default-deny NetworkPolicy (ingress and egress) for the namespace")
    for name, spec in topology.services.items():
        selected = _policies_for(policies, name)
        if len(selected) != 1:
            problems.append(f"service {name}: expected one NetworkPolicy, found {len(selected)}")
            continue
        policy = selected[0]["spec"]
        where = f"NetworkPolicy for {name}"
        ingress = policy.get("ingress", [])
        problems += _compare(
            where,
            "caller",
            _peers(ingress, "from", MTLS_PORT),
            set(allowed_callers(topology, spec)),
        )
        admitted_ports = {p.get("port") for r in ingress for p in r.get("ports", [])}
        if ingress and admitted_ports != {MTLS_PORT}:
            problems.append(f"{where}: ingress opens {sorted(admitted_ports)}, only {MTLS_PORT}")
        egress = policy.get("egress", [])
        problems += _compare(
            where, "upstream", _peers(egress, "to", MTLS_PORT), set(topology.mesh_peers(spec))
        )
        has_pg = "<postgres>" in _peers(egress, "to", PG_PORT)
        if has_pg != (spec.database is not None):
            problems.append(f"{where}: PostgreSQL egress {has_pg}, database {spec.database!r}")
        if NATS_NAME not in _peers(egress, "to", NATS_CLIENT_PORT):
            problems.append(f"{where}: no egress to NATS")
        outside = _outside_ports(egress)
        if outside != set(spec.external_ports):
            problems.append(
                f"{where}: egress beyond the cluster's pods on {sorted(outside)}, "
                f"topology external_ports {list(spec.external_ports)}"
            )
    edge = _policies_for(policies, EDGE)
    if len(edge) != 1:
        problems.append(f"edge: expected one NetworkPolicy, found {len(edge)}")
    else:
        egress = edge[0]["spec"].get("egress", [])
        problems += _compare(
            "NetworkPolicy for edge",
            "upstream",
            _peers(egress, "to", MTLS_PORT),
            set(edge_upstreams(topology)),
        )
    return problems


def reference_problems(objects: Sequence[Obj], external_secrets: Iterable[str]) -> list[str]:
    """Every ConfigMap/Secret/ServiceAccount a pod uses exists in the rendered set, is issued by
    a Certificate, or is one of the `external_secrets` created out of band."""
    config_maps = {o["metadata"]["name"] for o in objects if o.get("kind") == "ConfigMap"}
    secrets = {o["spec"]["secretName"] for o in objects if o.get("kind") == "Certificate"}
    secrets |= {o["metadata"]["name"] for o in objects if o.get("kind") == "Secret"}
    secrets |= set(external_secrets)
    accounts = {o["metadata"]["name"] for o in objects if o.get("kind") == "ServiceAccount"}
    problems = []
    for obj in objects:
        if obj.get("kind") not in POD_OWNERS:
            continue
        pod = _pod_spec(obj)
        account = pod.get("serviceAccountName")
        if account is not None and account not in accounts:
            problems.append(f"{_name(obj)}: ServiceAccount {account} does not exist")
        for volume in pod.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
                problems.append(f"{_name(obj)}: ConfigMap {volume['configMap']['name']} missing")
            if "secret" in volume and volume["secret"]["secretName"] not in secrets:
                problems.append(f"{_name(obj)}: Secret {volume['secret']['secretName']} missing")
        for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            for source in c.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                if ref is not None and ref not in config_maps:
                    problems.append(f"{_name(obj)}: ConfigMap {ref} missing")
                secret = source.get("secretRef", {})
                if secret and not secret.get("optional") and secret["name"] not in secrets:
                    problems.append(f"{_name(obj)}: Secret {secret['name']} missing")
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
                if ref is not None and ref not in secrets:
                    problems.append(f"{_name(obj)}: Secret {ref} missing")
    return problems
