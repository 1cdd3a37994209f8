# mypy: disable-error-code="import-untyped"
"""Start `./dev up` (the real runner) as a subprocess for end-to-end tests and benchmarks.

The platform runs on a port offset whose ports are all free (below the kernel's ephemeral range,
so clients' ports cannot collide) and in a temporary state directory; `stop()` sends SIGINT like a
developer's Ctrl-C and reports how the runner ended.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from suuupra_runtime.mesh.topology import Topology, load_topology
from tools.platform.ports import all_ports, busy_ports, shift_ports
from tools.platform_runner import READY_LINE

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = ROOT / ".venv" / "bin" / "grpcurl"


def pick_port_offset(topology: Topology) -> int:
    """A multiple of 1000 (not 0: a developer's platform may run there) with every port free."""
    candidates = [k * 1000 for k in range(-6, 15) if k != 0]
    random.shuffle(candidates)
    for offset in candidates:
        if not busy_ports(list(all_ports(shift_ports(topology, offset)))):
            return offset
    raise RuntimeError("no free port offset for a test platform")


@dataclass
class RunningPlatform:
    process: subprocess.Popen[str]
    state_dir: Path
    topology: Topology
    output: list[str] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    """`time.monotonic()` when each line of `output` arrived."""
    started_at: float = field(default_factory=time.monotonic)
    ready_seconds: float | None = None
    _reader: threading.Thread | None = None

    @property
    def edge(self) -> str:
        return f"127.0.0.1:{self.topology.edge.listener_port}"

    def text(self) -> str:
        return "".join(self.output)

    def seconds_until(self, prefix: str) -> float:
        """Seconds from starting the runner until it printed a line starting with `prefix`."""
        for arrived, line in zip(self.arrivals, self.output, strict=False):
            if line.startswith(prefix):
                return arrived - self.started_at
        raise LookupError(f"the runner never printed {prefix!r}")

    def child_pids(self) -> dict[str, int]:
        """The runner's own table of processes (`name  pid N  log`)."""
        table = self.text().split("Processes and logs:", 1)[-1]
        pids = {}
        for line in table.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "pid" and parts[2].isdigit():
                pids[parts[0]] = int(parts[2])
        return pids

    def descendants(self) -> list[psutil.Process]:
        try:
            children: list[psutil.Process] = psutil.Process(self.process.pid).children(
                recursive=True
            )
        except psutil.NoSuchProcess:
            return []
        return children

    def wait_ready(self, timeout: float) -> None:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if any(line.startswith(READY_LINE) for line in self.output):
                self.ready_seconds = time.monotonic() - started
                return
            if self.process.poll() is not None:
                if self._reader is not None:
                    self._reader.join(5)
                raise RuntimeError(
                    f"./dev up exited with {self.process.returncode}:\n{self.text()}"
                )
            time.sleep(0.05)
        raise RuntimeError(f"./dev up not ready after {timeout}s:\n{self.text()}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGINT (Ctrl-C), wait; SIGKILL the whole tree if the runner hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                for child in self.descendants():
                    child.kill()
                self.process.kill()
                self.process.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        return self.process.returncode


def start_platform(
    state_dir: Path,
    *,
    extra_args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    port_offset: int | None = None,
    ready_timeout: float = 120.0,
) -> RunningPlatform:
    base = load_topology()
    offset = pick_port_offset(base) if port_offset is None else port_offset
    # The runner must not pick up the test run's DATABASE_URL / NATS_URL unless a test asks.
    ignored = {"PYTHONPATH", "DATABASE_URL", "NATS_URL"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUUUPRA_") and k not in ignored}
    env.update(extra_env or {})
    env["PYTHONPATH"] = f"{ROOT}:{ROOT / 'gen'}"
    env["PYTHONUNBUFFERED"] = "1"
    launched = time.monotonic()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "tools.platform_runner"),
            *("--state-dir", str(state_dir)),
            *("--port-offset", str(offset)),
            *extra_args,
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    platform = RunningPlatform(process, state_dir, shift_ports(base, offset), started_at=launched)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            platform.arrivals.append(time.monotonic())
            platform.output.append(line)

    platform._reader = threading.Thread(target=read, daemon=True)
    platform._reader.start()
    try:
        platform.wait_ready(ready_timeout)
    except BaseException:
        platform.stop()
        raise
    return platform
