"""`python -m services.identity` serves; `python -m services.identity bootstrap ...` creates the
platform tenant and its first platform admin (refused once a platform admin exists).

    DATABASE_URL=postgresql://... python -m services.identity bootstrap \
        --slug platform --email admin@example.org      # password from SUUUPRA_BOOTSTRAP_PASSWORD
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Sequence


async def _bootstrap(slug: str, name: str, email: str, password: str) -> int:
    from services.identity.config import IdentityConfig
    from services.identity.credentials import PasswordHashing
    from services.identity.events import OutboxEvents
    from services.identity.handlers import Identity
    from services.identity.keyring import KeyRing
    from services.identity.keys import Sealer
    from services.identity.server import prepare_database
    from suuupra_runtime.db import Database
    from suuupra_runtime.errors import DomainError

    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        print("DATABASE_URL is required", file=sys.stderr)
        return 2
    config = IdentityConfig.from_env()
    db = await Database.connect(await prepare_database(server_url))
    hashing = PasswordHashing()
    keys = KeyRing(db, Sealer("kek", config.key_encryption_key), config)
    events = OutboxEvents(Sealer(config.delivery_key_id, config.delivery_key))
    identity = Identity(db, config, hashing, keys, events.emit)
    try:
        view = await identity.bootstrap_platform(slug, name, email, password)
    except DomainError as exc:
        print(f"bootstrap refused: {exc.message}", file=sys.stderr)
        return 1
    finally:
        hashing.close()
        await db.dispose()
    print(
        f"platform tenant '{slug}' ({view.user.tenant_id}) admin {view.user.email} "
        f"({view.user.user_id})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.identity")
    sub = parser.add_subparsers(dest="command")
    boot = sub.add_parser("bootstrap", help="create the platform tenant and first platform admin")
    boot.add_argument("--slug", default="platform")
    boot.add_argument("--name", default="Platform")
    boot.add_argument("--email", required=True)
    args = parser.parse_args(argv)
    if args.command == "bootstrap":
        password = os.environ.get("SUUUPRA_BOOTSTRAP_PASSWORD") or getpass.getpass("password: ")
        return asyncio.run(_bootstrap(args.slug, args.name, args.email, password))
    from services.identity.server import build
    from suuupra_runtime.server import run

    run(build)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
