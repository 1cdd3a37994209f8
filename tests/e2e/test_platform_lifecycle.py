# mypy: disable-error-code="import-untyped"
"""`./dev up` stops cleanly: SIGINT leaves no process and no listening port behind; a restart on
the same state directory reuses the data and loads the demo data idempotently."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import psutil

from tests.e2e.platform_process import start_platform
from tools.platform.ports import all_ports, busy_ports


def test_sigint_stops_every_process_and_frees_every_port(tmp_path: Path) -> None:
    platform = start_platform(tmp_path / "state")
    try:
        children = platform.descendants()
        names = {c.name() for c in children}
        assert {"envoy", "nats-server", "postgres"} <= names, names
        assert any("services." in " ".join(c.cmdline()) for c in children)
        ports = list(all_ports(platform.topology))
        assert busy_ports([platform.topology.edge.listener_port])
    finally:
        code = platform.stop()
    assert code == 0, platform.text()
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [(p.pid, p.name()) for p in alive]
    assert busy_ports(ports) == []
    assert "stopped; no process left behind" in platform.text()

    # Restart on the same state: same database, demo data already there and left unchanged.
    again = start_platform(tmp_path / "state")
    try:
        text = again.text()
        assert "have tenant Demo College" in text, text
        assert "new " not in text.split("[5/5] demo data", 1)[1], text
    finally:
        assert again.stop() == 0, again.text()


def test_a_killed_runner_leaves_no_orphans(tmp_path: Path) -> None:
    """SIGKILL gives the runner no chance to clean up: the kernel's parent-death signal must."""
    platform = start_platform(tmp_path / "state", extra_args=["--no-demo-data"])
    children = platform.descendants()
    ports = list(all_ports(platform.topology))
    try:
        assert len(children) >= 5, [c.name() for c in children]
        platform.process.kill()
        platform.process.wait(10)
        _gone, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, [(p.pid, p.name()) for p in alive]
        deadline = time.monotonic() + 10
        while busy_ports(ports) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert busy_ports(ports) == []
    finally:
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
