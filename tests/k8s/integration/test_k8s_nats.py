"""The broker component as it runs in the cluster: the shipped nats.conf is valid, three servers
started from it form a JetStream cluster that fsyncs every write, and the `nats-streams` Job's
command creates the topology's streams replicated on all three nodes (and re-runs cleanly)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
import yaml
from nats.js.api import StorageType

from suuupra_runtime.events import StreamSpec, ensure_streams
from suuupra_runtime.mesh.topology import load_topology

ROOT = Path(__file__).resolve().parents[3]
COMPONENT = ROOT / "k8s" / "components" / "nats-jetstream"
NATS_SERVER = Path(sys.executable).parent / "nats-server"
NODES = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Node:
    name: str
    client: int
    route: int
    monitor: int


def node_config(shipped: str, node: Node, nodes: list[Node], directory: Path) -> str:
    """The shipped config with the pod's addresses swapped for loopback ports and temp dirs;
    everything else (JetStream settings, cluster name, sync) stays exactly as shipped."""
    replacements = {
        "listen: 0.0.0.0:4222": f"listen: 127.0.0.1:{node.client}",
        "http: 0.0.0.0:8222": f"http: 127.0.0.1:{node.monitor}",
        "listen: 0.0.0.0:6222": f"listen: 127.0.0.1:{node.route}",
        "pid_file: /var/run/nats/nats.pid": f"pid_file: {directory / 'nats.pid'}",
        "store_dir: /data/jetstream": f"store_dir: {directory / 'jetstream'}",
        **{
            f"nats://{other.name}.nats-headless.suuupra.svc.cluster.local:6222": (
                f"nats://127.0.0.1:{other.route}"
            )
            for other in nodes
        },
    }
    for old, new in replacements.items():
        assert shipped.count(old) == 1, f"nats.conf no longer contains {old!r}"
        shipped = shipped.replace(old, new)
    return shipped


def get_json(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            data: dict[str, object] = json.loads(response.read())
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    shipped = (COMPONENT / "nats.conf").read_text()
    nodes = [Node(f"nats-{i}", free_port(), free_port(), free_port()) for i in range(NODES)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for node in nodes:
            directory = tmp_path_factory.mktemp(node.name)
            config = directory / "nats.conf"
            config.write_text(node_config(shipped, node, nodes, directory))
            processes.append(
                subprocess.Popen(
                    [str(NATS_SERVER), "--config", str(config)],
                    env={**os.environ, "POD_NAME": node.name},
                    stdout=subprocess.DEVNULL,
                    stderr=(directory / "server.log").open("wb"),
                )
            )
        deadline = time.monotonic() + 30
        # Healthy once JetStream is up and the meta group has a leader on every node.
        while not all(
            get_json(f"http://127.0.0.1:{n.monitor}/healthz") == {"status": "ok"} for n in nodes
        ):
            assert all(p.poll() is None for p in processes), "a NATS node exited"
            assert time.monotonic() < deadline, "the JetStream cluster did not form"
            time.sleep(0.2)
        yield nodes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_shipped_config_is_valid_and_a_broken_one_is_not(tmp_path: Path) -> None:
    env = {**os.environ, "POD_NAME": "nats-0"}
    config = COMPONENT / "nats.conf"
    ok = subprocess.run(
        [str(NATS_SERVER), "-t", "-c", str(config)],
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "nats.conf"
    broken.write_text(config.read_text().replace("sync_interval: always", "sync_interval: soon"))
    bad = subprocess.run(
        [str(NATS_SERVER), "-t", "-c", str(broken)],
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert bad.returncode != 0


def test_every_node_fsyncs_each_write(cluster: list[Node]) -> None:
    for node in cluster:
        varz = get_json(f"http://127.0.0.1:{node.monitor}/varz")
        assert varz is not None
        jetstream = varz["jetstream"]
        assert isinstance(jetstream, dict)
        assert jetstream["config"]["sync_always"] is True
        assert varz["server_name"] == node.name


def run_streams_job(node: Node) -> str:
    """What the nats-streams Job runs (its args from the manifest), against the local cluster."""
    job = next(yaml.safe_load_all((COMPONENT / "streams-job.yaml").read_text()))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    result = subprocess.run(
        [sys.executable, "-m", *container["args"]],
        cwd=ROOT,
        env={**os.environ, "NATS_URL": f"nats://127.0.0.1:{node.client}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_streams_job_creates_replicated_streams(cluster: list[Node]) -> None:
    domains = sorted(
        (stream, name) for name, spec in load_topology().services.items() for stream in spec.streams
    )
    expected = "".join(
        f"stream {stream} on ['suuupra.{name}.v1.>']: 3 replicas\n" for stream, name in domains
    )
    assert "stream IDENTITY on ['suuupra.identity.v1.>']: 3 replicas\n" in expected
    assert run_streams_job(cluster[1]) == expected
    assert run_streams_job(cluster[2]) == expected  # re-running changes nothing
    client = await nats.connect(f"nats://127.0.0.1:{cluster[0].client}")
    try:
        jetstream = client.jetstream()
        info = await jetstream.stream_info("IDENTITY")
        assert info.config.num_replicas == 3
        assert info.config.subjects == ["suuupra.identity.v1.>"]
        assert info.config.storage == StorageType.FILE
        assert info.config.duplicate_window == 120  # the relay's Nats-Msg-Id dedupe window
        assert info.cluster is not None and info.cluster.leader is not None
        replicas = {r.name for r in info.cluster.replicas or []}
        assert {info.cluster.leader, *replicas} == {n.name for n in cluster}
        ack = await jetstream.publish("suuupra.identity.v1.UserCreated", b"{}")
        assert ack.stream == "IDENTITY"
        # A service starting with the single-node default must not shrink the stream.
        await ensure_streams(jetstream, [StreamSpec.for_domain("identity")])
        assert (await jetstream.stream_info("IDENTITY")).config.num_replicas == 3
    finally:
        await client.close()


def test_job_and_services_agree_on_the_replica_count() -> None:
    """Services ensure their streams at start with SUUUPRA_STREAM_REPLICAS; the Job must create
    them with the same count, or each service start would shrink what the Job set up."""
    job = next(yaml.safe_load_all((COMPONENT / "streams-job.yaml").read_text()))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    job_replicas = args[args.index("--replicas") + 1]
    base = yaml.safe_load((ROOT / "k8s" / "base" / "kustomization.yaml").read_text())
    (shared,) = base["configMapGenerator"]
    settings = dict(literal.split("=", 1) for literal in shared["literals"])
    assert settings["SUUUPRA_STREAM_REPLICAS"] == job_replicas == "3"
    statefulset = yaml.safe_load((COMPONENT / "statefulset.yaml").read_text())
    assert statefulset["spec"]["replicas"] == 3
