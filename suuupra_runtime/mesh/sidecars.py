"""Run an Envoy process (a sidecar or the edge) from a rendered config: start, wait, stop.

Used by the dev runner, the mesh tests, the e2e tests and the benchmarks.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import yaml

from suuupra_runtime.infra import ManagedProcess, envoy_binary
from suuupra_runtime.mesh.certs import ensure_dev_certificates
from suuupra_runtime.mesh.envoy import DevAddressing, render_all
from suuupra_runtime.mesh.topology import Topology

_base_ids = itertools.count((os.getpid() % 5000) * 100 + 1000)


def next_base_id() -> int:
    """A base id unlikely to collide with other Envoys on this host (distinct per process)."""
    return next(_base_ids)


class EnvoyError(RuntimeError):
    pass


PROXY_NICE = 3
"""Niceness of every Envoy the platform starts (sidecars, edge, tests, benchmarks).

A proxy that shares a core with the app it fronts should not preempt that app for every HTTP/2
frame: at the app's own priority each message woke Envoy, which handled it alone, and a lone
message costs Envoy several times its share of a batch (the per-wakeup cost dominates). At a
slightly lower priority Envoy runs when the app yields and handles everything queued at once;
`bench/mesh_overhead.py` measured ≈ 170-230 → ≈ 90-135 µs of Envoy CPU per call (0.61-0.68x →
0.72-0.80x of direct throughput through two sidecars) and no p50 change: an idle core runs a
woken task at once, whatever its niceness. Nice 3 is half the app's CPU weight: the ratio of the
sidecar's to the app's CPU request in the k8s manifests (50m to 100m), which is how Kubernetes
expresses the same priority through cgroup weights (tests/k8s checks the two stay in step).
"""


def envoy_command(
    config_path: Path,
    *,
    base_id: int | None = None,
    concurrency: int = 1,
    log_level: str = "warning",
    cpus: frozenset[int] | None = None,
    nice: int = PROXY_NICE,
) -> list[str]:
    """The Envoy command line every proxy of the platform runs (sidecars, edge, tests, bench)."""
    pin = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
    # `nice` (not a setpriority after start): every Envoy thread inherits it from the first one.
    priority = ["nice", "-n", str(nice)] if nice else []
    return [
        *pin,
        *priority,
        str(envoy_binary()),
        "-c", str(config_path),
        "--base-id", str(next_base_id() if base_id is None else base_id),
        "--concurrency", str(concurrency),
        "--log-level", log_level,
        # No shared-memory hot restart: restarts are new processes, parallel Envoys never clash.
        "--disable-hot-restart",
    ]  # fmt: skip


class EnvoyProcess:
    """One Envoy with `--concurrency 1` (one worker is plenty for a sidecar)."""

    def __init__(
        self,
        config_path: Path,
        *,
        base_id: int | None = None,
        log_path: Path,
        cwd: Path | None = None,
        log_level: str = "warning",
        concurrency: int = 1,
        cpus: frozenset[int] | None = None,
        nice: int = PROXY_NICE,
    ) -> None:
        self.config_path = Path(config_path)
        self.base_id = next_base_id() if base_id is None else base_id
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.log_level = log_level
        self.concurrency = concurrency
        self.cpus = cpus
        """Pin Envoy (all its threads) to these CPUs, e.g. for benchmarks."""
        self.nice = nice
        self.admin_url = _admin_url(self.config_path)
        self._process: ManagedProcess | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        return envoy_command(
            self.config_path,
            base_id=self.base_id,
            concurrency=self.concurrency,
            log_level=self.log_level,
            cpus=self.cpus,
            nice=self.nice,
        )

    def start(self) -> None:
        if self._process is not None:
            raise EnvoyError("already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # ManagedProcess: own process group (a Ctrl-C meant for the runner must not stop Envoy
        # before the apps behind it have drained) and a death pact with this process, so a
        # killed test or runner never leaves an Envoy behind.
        self._process = ManagedProcess(self.command(), log_path=self.log_path, cwd=self.cwd)
        self._process.start()

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.admin_url}/ready", timeout=1) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _check_alive(self) -> None:
        if self._process is None:
            raise EnvoyError("not started")
        code = self._process.returncode
        if code is not None:
            raise EnvoyError(f"envoy exited with {code}:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self.is_ready():
                return
            time.sleep(0.05)
        raise EnvoyError(f"envoy not ready after {timeout}s:\n{self.log_tail()}")

    async def wait_ready_async(self, within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self._check_alive()
            if await asyncio.to_thread(self.is_ready):
                return
            await asyncio.sleep(0.05)
        raise EnvoyError(f"envoy not ready after {within}s:\n{self.log_tail()}")

    def admin_get(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.admin_url}{path}", timeout=5) as response:  # noqa: S310
            return str(response.read().decode())

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code (None if never started)."""
        process, self._process = self._process, None
        if process is None:
            return None
        process.stop(timeout)
        return process.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> EnvoyProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def prepare_dev_mesh(topology: Topology, state_dir: Path) -> dict[str, Path]:
    """Certificates under `state_dir/certs` and every Envoy config under `state_dir/envoy`.

    Returns the config path per workload (`<service>` and `edge`), ready for `EnvoyProcess`.
    Paths inside the configs are absolute, so Envoy may run from any directory.
    """
    state_dir = Path(state_dir).resolve()
    cert_dir = state_dir / "certs"
    ensure_dev_certificates(topology, cert_dir)
    out = state_dir / "envoy"
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, text in render_all(topology, DevAddressing(), str(cert_dir)).items():
        path = out / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        paths[name.removesuffix(".yaml")] = path
    return paths


def validate_config(config_path: Path, *, cwd: Path | None = None) -> tuple[bool, str]:
    """`envoy --mode validate`; returns (ok, output)."""
    result = subprocess.run(
        [
            str(envoy_binary()),
            "--mode",
            "validate",
            "-c",
            str(config_path),
            "--base-id",
            str(next_base_id()),
            "--disable-hot-restart",
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )
    return result.returncode == 0, result.stdout + result.stderr


def _admin_url(config_path: Path) -> str:
    config = yaml.safe_load(Path(config_path).read_text())
    address = config["admin"]["address"]["socket_address"]
    return f"http://{address['address']}:{address['port_value']}"
