"""`./dev up`: the whole platform on one machine, in the foreground, until Ctrl-C.

Order (DESIGN.md §8): state dir → PostgreSQL + NATS (embedded, or DATABASE_URL / NATS_URL) → dev CA,
SPIFFE certificates and Envoy configs → every service of the topology with its sidecar, and the
edge → wait for health (gRPC health of each app, Envoy `/ready` of each proxy, the edge's first
JWKS fetch) → platform admin (identity's bootstrap) and demo data through the edge → print how to
use it → wait for SIGINT/SIGTERM → stop everything in reverse order (a second signal kills).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from suuupra_runtime.mesh.topology import EDGE, Topology, load_topology
from tools.demo_data import (
    DEMO_ACCOUNTS,
    DEMO_ADMIN,
    DEMO_PASSWORD,
    DEMO_TENANT_SLUG,
    DemoDataError,
    PlatformAdmin,
    load_demo_data,
)
from tools.platform.bootstrap import (
    BootstrapError,
    bootstrap_platform_admin,
    load_or_create_secrets,
)
from tools.platform.envoy_configs import envoy_argv, sidecar_name, write_envoy_configs
from tools.platform.health import (
    Check,
    HealthTimeoutError,
    ProcessExitedError,
    envoy_jwks_loaded_probe,
    envoy_ready_probe,
    grpc_health_probe,
    wait_healthy,
)
from tools.platform.infrastructure import start_infrastructure
from tools.platform.layout import StateLayout
from tools.platform.options import ROOT, RunnerOptions, parse_options
from tools.platform.ports import all_ports, busy_ports, shift_ports
from tools.platform.processes import Supervisor, start_process
from tools.platform.service_env import PlatformEndpoints, service_environment

READY_LINE = "Suuupra is ready"
"""Printed once everything is healthy and the demo data is loaded (tests wait for it)."""


def say(message: str) -> None:
    print(message, flush=True)


def service_package(name: str) -> str:
    return name.replace("-", "_")


def implemented(name: str) -> bool:
    """Whether `python -m services.<name>` exists yet (the topology may run ahead of the code)."""
    return (ROOT / "services" / service_package(name) / "__main__.py").exists()


@contextlib.contextmanager
def state_lock(layout: StateLayout) -> Iterator[None]:
    """One runner per state dir: two would fight over the same database files."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with (layout.root / "runner.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(
                f"another ./dev up is using {layout.root}; stop it or pass --state-dir"
            ) from None
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


@dataclass
class Platform:
    options: RunnerOptions
    topology: Topology
    layout: StateLayout
    supervisor: Supervisor = field(default_factory=Supervisor)
    services: list[str] = field(default_factory=list)
    admin: PlatformAdmin | None = None
    secrets: dict[str, str] = field(default_factory=dict)
    service_envs: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def edge_address(self) -> str:
        return f"127.0.0.1:{self.topology.edge.listener_port}"

    def check_ports_free(self) -> None:
        infra = self.topology.infrastructure
        external = {
            infra.postgres_port: bool(self.options.database_url),
            infra.nats_port: bool(self.options.nats_url),
            infra.nats_monitor_port: bool(self.options.nats_url),
        }
        wanted = [p for p in all_ports(self.topology) if not external.get(p, False)]
        taken = busy_ports(wanted)
        if taken:
            raise SystemExit(
                f"ports already in use: {', '.join(map(str, taken))}. Is another ./dev up "
                "running? Stop it, or shift this platform with --port-offset N "
                "(or SUUUPRA_PORT_OFFSET)."
            )

    async def start(self) -> None:
        started = time.monotonic()
        self.layout.create()
        self.admin = PlatformAdmin.load_or_create(self.layout.credentials)
        self.secrets = load_or_create_secrets(self.layout.secrets)
        self.services = [n for n in self.topology.services if implemented(n)]
        for name in self.topology.services:
            if name not in self.services:
                missing = f"services/{service_package(name)}/__main__.py"
                say(f"  skip {name}: {missing} does not exist yet")

        say("[1/5] storage and broker")
        endpoints = start_infrastructure(
            self.options, self.topology, self.layout, self.supervisor, say
        )

        say("[2/5] dev CA, SPIFFE certificates and Envoy configs")
        configs = write_envoy_configs(self.topology, self.layout)
        say(f"  ok   {self.layout.certs}, {self.layout.envoy}")

        say(f"[3/5] starting {len(self.services)} service(s) with sidecars, and the edge")
        checks = self._start_mesh(endpoints, configs)

        say("[4/5] waiting for health")
        await wait_healthy(checks, deadline_seconds=self.options.health_timeout, report=say)

        say("[5/5] platform admin and demo data")
        if "identity" in self.services:
            created = await bootstrap_platform_admin(
                self.admin,
                self.service_envs["identity"],
                root=ROOT,
                log_path=self.layout.log("identity"),
            )
            say(f"  {'new ' if created else 'have'} platform admin {self.admin.email}")
        if not self.options.demo_data:
            say("  skip demo data (--no-demo-data)")
        else:
            await load_demo_data(self.edge_address, self.admin, services=self.services, report=say)
        self._print_summary(time.monotonic() - started)

    def _start_mesh(self, endpoints: PlatformEndpoints, configs: dict[str, Path]) -> list[Check]:
        assert self.admin is not None
        checks: list[Check] = []
        self.supervisor.new_tier()
        for name in self.services:
            spec = self.topology.service(name)
            env = service_environment(
                self.topology,
                spec,
                endpoints,
                root=ROOT,
                log_level=self.options.log_level,
                base=os.environ,
                # SUUUPRA_DATA_DIR: a service's own files (e.g. files' objects), kept with the
                # platform's state so they survive restarts like the databases do.
                extra={**self.secrets, "SUUUPRA_DATA_DIR": str(self.layout.service_data(name))},
            )
            self.service_envs[name] = env
            app = self.supervisor.add(
                start_process(
                    name,
                    [sys.executable, "-m", f"services.{service_package(name)}"],
                    log_path=self.layout.log(name),
                    env=env,
                    # The runtime drains in-flight RPCs on SIGTERM before it exits.
                    stop_timeout=15.0,
                )
            )
            sidecar = self.supervisor.add(
                start_process(
                    sidecar_name(name),
                    envoy_argv(configs[sidecar_name(name)]),
                    log_path=self.layout.log(sidecar_name(name)),
                )
            )
            checks.append(
                Check(f"{name} (gRPC health)", app, grpc_health_probe(f"127.0.0.1:{spec.app_port}"))
            )
            checks.append(
                Check(
                    f"{sidecar_name(name)} (Envoy ready)",
                    sidecar,
                    envoy_ready_probe(f"127.0.0.1:{spec.admin_port}"),
                )
            )
        self.supervisor.new_tier()
        edge = self.supervisor.add(
            start_process(EDGE, envoy_argv(configs[EDGE]), log_path=self.layout.log(EDGE))
        )
        edge_admin = f"127.0.0.1:{self.topology.edge.admin_port}"
        checks.append(Check("edge (Envoy ready)", edge, envoy_ready_probe(edge_admin)))
        publisher = self.topology.jwks_service()
        if publisher is not None and publisher.name in self.services:
            checks.append(Check("edge (JWKS loaded)", edge, envoy_jwks_loaded_probe(edge_admin)))
        return checks

    def _print_summary(self, elapsed: float) -> None:
        assert self.admin is not None
        grpcurl = _display_path(ROOT / ".venv" / "bin" / "grpcurl")
        login = (
            f'{{"tenant_slug":"{DEMO_TENANT_SLUG}","email":"{DEMO_ADMIN.email}",'
            f'"password":"{DEMO_PASSWORD}"}}'
        )
        lines = [
            "",
            f"{READY_LINE} ({elapsed:.1f}s). Edge (gRPC and gRPC-Web): {self.edge_address}",
            "",
            "Try it:",
            f"  {grpcurl} -plaintext {self.edge_address} list",
            f"  {grpcurl} -plaintext -d '{login}' \\",
            f"      {self.edge_address} suuupra.identity.v1.AuthService/Login",
            "  then add  -H 'authorization: Bearer <access_token>'  to call authenticated RPCs,",
            f"  e.g. {grpcurl} -plaintext -H 'authorization: Bearer ...' {self.edge_address} "
            "suuupra.identity.v1.UserService/GetCurrentUser",
            "",
        ]
        if self.options.demo_data and "identity" in self.services:
            lines.append(
                f"Demo accounts (tenant '{DEMO_TENANT_SLUG}', password '{DEMO_PASSWORD}'):"
            )
            lines += [f"  {a.role:<13} {a.email}" for a in DEMO_ACCOUNTS]
        lines.append(
            f"Platform admin (tenant '{self.admin.tenant_slug}'): {self.admin.email} / "
            f"{self.admin.password}   (saved in {_display_path(self.layout.credentials)})"
        )
        smtp_port = self.topology.infrastructure.smtp_port
        if smtp_port is not None:
            lines.append(
                f"Mail: every mail the platform sends (SMTP sink 127.0.0.1:{smtp_port}) is a file "
                f"in {_display_path(self.layout.maildir)}/new/"
            )
        lines += ["", "Processes and logs:"]
        pids = self.supervisor.pids()
        for child in self.supervisor.children():
            pid = pids.get(child.name)
            lines.append(f"  {child.name:<20} pid {pid!s:<8} {_display_path(child.log_path)}")
        lines += ["", "Press Ctrl-C to stop everything."]
        say("\n".join(lines))

    async def watch(self, stop: asyncio.Event) -> None:
        """Until `stop`: tell the developer when a process dies (its log says why)."""
        reported: set[str] = set()
        while not stop.is_set():
            for child in self.supervisor.dead():
                if child.name not in reported:
                    reported.add(child.name)
                    say(f"!! {child.name} exited; see its log: {_display_path(child.log_path)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)


def _display_path(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


async def run(options: RunnerOptions) -> int:
    topology = shift_ports(load_topology(options.topology_path), options.port_offset)
    platform = Platform(options, topology, StateLayout(options.state_dir))
    platform.check_ports_free()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum.name)
        if len(received) == 2:
            # Impatient second Ctrl-C: no more draining.
            say(f"\n{signum.name} again: killing every process now")
            platform.supervisor.kill_all()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    code = 0
    startup = asyncio.create_task(platform.start())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if startup.done():
            startup.result()  # raises a startup failure
            await platform.watch(stop)
        else:
            startup.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await startup
    except (HealthTimeoutError, ProcessExitedError, BootstrapError, DemoDataError) as err:
        say(f"\nERROR: {err}")
        code = 1
    except Exception as err:  # any other start-up failure: report it, then clean up
        say(f"\nERROR: start-up failed: {type(err).__name__}: {err}")
        code = 1
    finally:
        stopper.cancel()
        if received:
            say(f"\n{received[0]} received: stopping")
        children = platform.supervisor.children()
        await platform.supervisor.stop_all(report=lambda m: say(f"  {m}"))
        left = [f"{c.name} (pid {c.pid()})" for c in children if c.alive()]
        say(f"still running: {', '.join(left)}" if left else "stopped; no process left behind")
        code = code or (1 if left else 0)
    return code


def main(argv: Sequence[str] = ()) -> int:
    # `./dev up -- --port-offset 1000`: tools/cli.py hands over everything after `up`, including
    # the `--` argparse needs there to pass options through.
    if list(argv[:1]) == ["--"]:
        argv = argv[1:]
    options = parse_options(argv)
    layout = StateLayout(options.state_dir)
    with state_lock(layout):
        return asyncio.run(run(options))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
