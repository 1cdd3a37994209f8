# mypy: disable-error-code="import-untyped"
"""`./dev up` stops cleanly: SIGINT leaves no process and no listening port behind, a second
SIGINT kills at once, a SIGKILLed runner leaves no orphans; a restart on the same state directory
reuses the data and loads the demo data idempotently."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import grpc
import psutil
from suuupra.identity.v1 import identity_service_pb2 as identity_pb
from suuupra.identity.v1 import identity_service_pb2_grpc as identity_grpc

from tests.e2e.platform_process import start_platform
from tools.demo_data import DEMO_ACCOUNTS, DEMO_ADMIN, DEMO_TENANT_SLUG, login
from tools.platform.ports import all_ports, busy_ports
from tools.platform_runner import READY_LINE


def test_sigint_stops_everything_and_a_restart_keeps_the_data(tmp_path: Path) -> None:
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
    leftover = [(p.pid, p.name()) for p in alive]
    for process in alive:  # never leak them into the rest of the run, then fail
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    assert not leftover
    assert busy_ports(ports) == []
    assert "stopped; no process left behind" in platform.text()

    # Restart on the same state: same database, demo data already there and left unchanged.
    again = start_platform(tmp_path / "state")
    children = again.descendants()
    try:
        loaded = again.text().split("[5/5]", 1)[1].split(READY_LINE, 1)[0]
        assert "have tenant Demo College" in loaded, loaded
        assert "new " not in loaded, loaded
        assert asyncio.run(_demo_emails(again.edge)) == {a.email for a in DEMO_ACCOUNTS}

        # An impatient second Ctrl-C kills everything at once, still leaving nothing behind.
        again.process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        again.process.send_signal(signal.SIGINT)
        assert again.process.wait(15) == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [(p.pid, p.name()) for p in alive]
        assert busy_ports(list(all_ports(again.topology))) == []
    finally:
        again.stop()
        for child in children:  # only after a failure: never leak processes
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    assert "again: killing every process now" in again.text()


async def _demo_emails(edge: str) -> set[str]:
    async with grpc.aio.insecure_channel(edge) as channel:
        token = await login(channel, DEMO_TENANT_SLUG, DEMO_ADMIN.email, DEMO_ADMIN.password)
        page = await identity_grpc.UserServiceStub(channel).ListUsers(
            identity_pb.ListUsersRequest(page_size=100),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
        return {u.email for u in page.users}


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
