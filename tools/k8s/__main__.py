"""`python -m tools.k8s generate | check | secrets | streams` (see tools/k8s/__init__.py)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from suuupra_runtime.mesh.topology import Topology, load_topology
from tools.k8s import __doc__ as overview
from tools.k8s.migrations import migrate_service, service_migrations
from tools.k8s.storage import credential_secrets
from tools.k8s.streams import STREAM_REPLICAS, provision_streams, stream_specs
from tools.k8s.tree import K8S_DIR, drift, render_tree, write_tree


def _migrate(topology: Topology, service: str, migrations_dir: Path | None) -> int:
    database = topology.service(service).database
    database_url = os.environ.get("DATABASE_URL")
    if database is None or not database_url:
        print(f"{service}: needs a database in the topology and DATABASE_URL", file=sys.stderr)
        return 2
    migrations = migrations_dir or service_migrations(service)
    asyncio.run(migrate_service(database_url, database, migrations))
    print(f"{service}: database {database} migrated ({migrations or 'runtime tables only'})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.k8s", description=overview)
    parser.add_argument("--topology", type=Path, default=None, help="topology file to use")
    parser.add_argument("--k8s-dir", type=Path, default=K8S_DIR, help="the k8s/ tree")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate", help="write the topology-derived manifests under k8s/")
    sub.add_parser("check", help="fail if k8s/ differs from what the topology generates")
    sub.add_parser("secrets", help="print PostgreSQL credential Secrets with random passwords")
    migrate = sub.add_parser("migrate", help="apply a service's migrations (init container)")
    migrate.add_argument("service")
    migrate.add_argument("--migrations-dir", type=Path, default=None, help="default: the service's")
    streams = sub.add_parser("streams", help="create/update JetStream streams (in-cluster Job)")
    streams.add_argument("--replicas", type=int, default=STREAM_REPLICAS)
    streams.add_argument("--wait", type=float, default=300.0, help="seconds to wait for NATS")
    args = parser.parse_args(argv)
    topology = load_topology() if args.topology is None else load_topology(args.topology)
    if args.command == "secrets":
        documents = [yaml.safe_dump(s, sort_keys=False) for s in credential_secrets(topology)]
        sys.stdout.write("---\n".join(documents))
        return 0
    if args.command == "migrate":
        return _migrate(topology, args.service, args.migrations_dir)
    if args.command == "streams":
        nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
        specs = stream_specs(topology, args.replicas)
        asyncio.run(provision_streams(nats_url, specs, args.wait))
        return 0
    tree = render_tree(topology)
    if args.command == "generate":
        write_tree(tree, topology, args.k8s_dir)
        print(f"k8s: wrote {len(tree)} files for {len(topology.services)} service(s) and the edge")
        return 0
    problems = drift(tree, topology, args.k8s_dir)
    for problem in problems:
        print(problem)
    print("k8s: " + ("FAILED (run `python -m tools.k8s generate`)" if problems else "ok"))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
