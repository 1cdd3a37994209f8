"""`python -m services.notes` serves the notes service (settings from the environment);
`python -m services.notes rebuild-cohorts` replays the COURSES stream into the cohort membership
projection (idempotent; safe while the service runs)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence


async def _rebuild_cohorts() -> int:
    from services.notes import events
    from services.notes.server import build_wiring, prepare_database

    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        print("DATABASE_URL is required", file=sys.stderr)
        return 2
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    wiring = await build_wiring(await prepare_database(server_url), nats_url)
    try:
        handled = await events.rebuild_cohorts(wiring.notes, nats_url)
    finally:
        for hook in wiring.definition.on_stop:
            await hook()
    print(f"replayed {handled} enrollment events into the cohort projection")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.notes")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("rebuild-cohorts", help="replay COURSES into the cohort membership projection")
    args = parser.parse_args(argv)
    if args.command == "rebuild-cohorts":
        return asyncio.run(_rebuild_cohorts())
    from services.notes.server import build
    from suuupra_runtime.server import run

    run(build)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
