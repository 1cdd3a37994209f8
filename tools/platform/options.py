"""Command line and environment of `./dev up`, parsed into one immutable value."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = ROOT / ".suuupra"
DEFAULT_TOPOLOGY = ROOT / "mesh" / "topology.yaml"
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class RunnerOptions:
    state_dir: Path
    topology_path: Path
    port_offset: int
    demo_data: bool
    log_level: str
    health_timeout: float
    database_url: str | None
    """An external PostgreSQL server (its maintenance database URL) instead of the embedded one."""
    nats_url: str | None
    """An external NATS server with JetStream instead of the embedded one."""


def parse_options(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> RunnerOptions:
    parser = argparse.ArgumentParser(
        prog="./dev up",
        description="Start the whole Suuupra platform on this machine and stay in the foreground "
        "(Ctrl-C stops everything).",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(environ.get("SUUUPRA_STATE_DIR", str(DEFAULT_STATE_DIR))),
        help="where data, certificates, Envoy configs and logs live (default: .suuupra/)",
    )
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY, help=argparse.SUPPRESS)
    parser.add_argument(
        "--port-offset",
        type=int,
        default=_int_env(environ, "SUUUPRA_PORT_OFFSET", 0),
        help="shift every port of the topology by N (env SUUUPRA_PORT_OFFSET), e.g. to run a "
        "second platform beside another one",
    )
    parser.add_argument(
        "--no-demo-data", action="store_true", help="do not load the demo tenant and users"
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=environ.get("SUUUPRA_LOG_LEVEL", "info").lower(),
        help="log level of the services (default: info)",
    )
    parser.add_argument(
        "--health-timeout",
        type=float,
        default=90.0,
        help="seconds to wait for every process to become healthy (default: 90)",
    )
    args = parser.parse_args(list(argv))
    if not -10000 <= args.port_offset <= 40000:
        parser.error(f"--port-offset {args.port_offset} is outside -10000..40000")
    if args.health_timeout <= 0:
        parser.error("--health-timeout must be positive")
    return RunnerOptions(
        state_dir=args.state_dir.resolve(),
        topology_path=args.topology.resolve(),
        port_offset=args.port_offset,
        demo_data=not args.no_demo_data,
        log_level=args.log_level,
        health_timeout=args.health_timeout,
        database_url=environ.get("DATABASE_URL") or None,
        nats_url=environ.get("NATS_URL") or None,
    )


def _int_env(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not an integer") from None
