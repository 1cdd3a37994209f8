"""PostgreSQL and NATS for the platform: embedded on the topology's ports, or external servers
named by `DATABASE_URL` / `NATS_URL`; and the SMTP sink every mail of the platform lands in."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from suuupra_runtime.infra import EmbeddedNats, EmbeddedPostgres
from suuupra_runtime.mesh.topology import Topology
from tools.platform.layout import StateLayout
from tools.platform.options import ROOT, RunnerOptions
from tools.platform.processes import Child, Supervisor, start_process
from tools.platform.service_env import PlatformEndpoints


def start_infrastructure(
    options: RunnerOptions,
    topology: Topology,
    layout: StateLayout,
    supervisor: Supervisor,
    report: Callable[[str], None],
) -> PlatformEndpoints:
    """Start (or point at) the database server and the broker; blocks until both are ready."""
    infra = topology.infrastructure
    supervisor.new_tier()
    if options.database_url:
        database_url = options.database_url
        report(f"  PostgreSQL: external server from DATABASE_URL ({_redact(database_url)})")
    else:
        postgres = EmbeddedPostgres(layout.postgres_data, infra.postgres_port)
        supervisor.add(
            Child(
                name="postgres",
                log_path=layout.postgres_data.parent / "postgres.log",
                pid=lambda: postgres.pid,
                alive=lambda: postgres.running,
                stop=postgres.stop,
            )
        )
        postgres.start()
        database_url = postgres.url
        report(f"  ok   PostgreSQL on 127.0.0.1:{infra.postgres_port} (pid {postgres.pid})")
    supervisor.new_tier()
    if options.nats_url:
        nats_url = options.nats_url
        report(f"  NATS: external server from NATS_URL ({_redact(nats_url)})")
    else:
        nats = EmbeddedNats(layout.nats_store, infra.nats_port, infra.nats_monitor_port)
        supervisor.add(
            Child(
                name="nats",
                log_path=layout.nats_store.parent / "nats.log",
                pid=lambda: nats.pid,
                alive=lambda: nats.running,
                stop=nats.stop,
            )
        )
        nats.start()
        nats_url = nats.url
        report(f"  ok   NATS JetStream on 127.0.0.1:{infra.nats_port} (pid {nats.pid})")
    smtp_addr = None
    if infra.smtp_port is not None:
        smtp_addr = f"127.0.0.1:{infra.smtp_port}"
        supervisor.add(
            start_process(
                "smtp-sink",
                [
                    sys.executable,
                    "-m",
                    "suuupra_runtime.infra.smtp_sink",
                    "--port",
                    str(infra.smtp_port),
                    "--maildir",
                    str(layout.maildir),
                ],
                log_path=layout.logs / "smtp-sink.log",
                env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            )
        )
        report(f"  ok   SMTP sink on {smtp_addr}: every mail lands in {layout.maildir}/new/")
    return PlatformEndpoints(database_url=database_url, nats_url=nats_url, smtp_addr=smtp_addr)


def _redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in userinfo else url
