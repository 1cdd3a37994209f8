"""Required-field checks for the custom resources `kubernetes-validate` has no schema for.

Only what the operators reject or misbehave on is checked (the fields their CRDs mark required,
plus the one-of choices): CloudNativePG `Cluster` and `Database`, cert-manager `Certificate` and
`Issuer`. Returns human-readable problems; an empty list means the object is acceptable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

CNPG = "postgresql.cnpg.io/v1"
CERT_MANAGER = "cert-manager.io/v1"
_ISSUER_TYPES = ("selfSigned", "ca", "acme", "vault", "venafi")
_SUBJECTS = ("commonName", "dnsNames", "uris", "ipAddresses", "emailAddresses", "literalSubject")
_KEY_ALGORITHMS = ("RSA", "ECDSA", "Ed25519")


def _get(obj: Mapping[str, Any], path: str) -> Any:
    value: Any = obj
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _require(obj: Mapping[str, Any], kind: str, *paths: str) -> list[str]:
    return [f"{kind}: {p} is required" for p in paths if _get(obj, p) in (None, "", [], {})]


def _cluster(obj: Mapping[str, Any]) -> list[str]:
    problems = _require(obj, "Cluster", "spec.instances", "spec.storage.size")
    instances = _get(obj, "spec.instances")
    if instances is not None and (not isinstance(instances, int) or instances < 1):
        problems.append("Cluster: spec.instances must be an integer >= 1")
    for i, role in enumerate(_get(obj, "spec.managed.roles") or []):
        problems += _require(role, f"Cluster: spec.managed.roles[{i}]", "name")
        if role.get("login") and not _get(role, "passwordSecret.name"):
            problems.append(f"Cluster: spec.managed.roles[{i}] logs in without passwordSecret")
    sync = _get(obj, "spec.postgresql.synchronous")
    if sync is not None:
        problems += _require(sync, "Cluster: spec.postgresql.synchronous", "method", "number")
        if isinstance(instances, int) and sync.get("number", 0) >= instances:
            problems.append("Cluster: synchronous.number must be below spec.instances")
    return problems


def _database(obj: Mapping[str, Any]) -> list[str]:
    return _require(obj, "Database", "spec.name", "spec.owner", "spec.cluster.name")


def _certificate(obj: Mapping[str, Any]) -> list[str]:
    problems = _require(obj, "Certificate", "spec.secretName", "spec.issuerRef.name")
    spec = obj.get("spec") or {}
    if not any(spec.get(field) for field in _SUBJECTS):
        problems.append(f"Certificate: spec needs one of {', '.join(_SUBJECTS)}")
    algorithm = _get(obj, "spec.privateKey.algorithm")
    if algorithm is not None and algorithm not in _KEY_ALGORITHMS:
        problems.append(f"Certificate: spec.privateKey.algorithm {algorithm!r} is unknown")
    return problems


def _issuer(obj: Mapping[str, Any]) -> list[str]:
    spec = obj.get("spec") or {}
    chosen = [t for t in _ISSUER_TYPES if t in spec]
    if len(chosen) != 1:
        return [f"Issuer: spec needs exactly one of {', '.join(_ISSUER_TYPES)}, has {chosen}"]
    if chosen == ["ca"]:
        return _require(obj, "Issuer", "spec.ca.secretName")
    return []


CHECKS: dict[tuple[str, str], Callable[[Mapping[str, Any]], list[str]]] = {
    (CNPG, "Cluster"): _cluster,
    (CNPG, "Database"): _database,
    (CERT_MANAGER, "Certificate"): _certificate,
    (CERT_MANAGER, "Issuer"): _issuer,
    (CERT_MANAGER, "ClusterIssuer"): _issuer,
}


def custom_resource_problems(obj: Mapping[str, Any]) -> list[str] | None:
    """Problems of a known custom resource, or None if its kind is not one we check."""
    check = CHECKS.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
    if check is None:
        return None
    name = _get(obj, "metadata.name")
    problems = [] if name else ["metadata.name is required"]
    return problems + check(obj)
