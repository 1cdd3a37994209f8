"""First-start set-up that needs a running service: identity's platform admin, platform secrets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from tools.demo_data import PlatformAdmin

SECRET_VARIABLES = (
    "SUUUPRA_IDENTITY_KEY_ENCRYPTION_KEY",
    "SUUUPRA_IDENTITY_DELIVERY_KEY",
    "SUUUPRA_NOTIFICATIONS_SIGNING_KEY",
    "SUUUPRA_FILES_LINK_KEY",
)
"""Keys identity seals data with (the delivery key is shared with notifications, which opens
reset/verification tokens), notifications signs unsubscribe links with and files signs download
links with; random per state dir instead of the public dev defaults."""


class BootstrapError(RuntimeError):
    pass


def load_or_create_secrets(path: Path) -> dict[str, str]:
    """The platform's secret settings (base64 of 32 random bytes each), kept in `path` (0600)."""
    secrets: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [name for name in SECRET_VARIABLES if name not in secrets]
    if missing:
        for name in missing:
            secrets[name] = base64.b64encode(os.urandom(32)).decode()
        path.touch(mode=0o600)
        path.write_text(json.dumps(secrets, indent=2) + "\n")
    return secrets


async def bootstrap_platform_admin(
    admin: PlatformAdmin, identity_env: Mapping[str, str], *, root: Path, log_path: Path
) -> bool:
    """Create the platform tenant and its first admin; False when they already exist.

    Runs identity's own `bootstrap` command with identity's environment, after identity is
    healthy (its migrations are applied), and appends its output to identity's log.
    """
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "services.identity", "bootstrap"),
        *("--slug", admin.tenant_slug, "--email", admin.email),
        env={**identity_env, "SUUUPRA_BOOTSTRAP_PASSWORD": admin.password},
        cwd=root,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    except (TimeoutError, asyncio.CancelledError) as stopped:
        # Hung, or Ctrl-C during start-up: never leave the command behind.
        process.kill()
        await process.wait()
        if isinstance(stopped, asyncio.CancelledError):
            raise
        raise BootstrapError(f"identity bootstrap hung; see {log_path}") from None
    text = output.decode(errors="replace")
    with log_path.open("a") as log:
        log.write(f"==== identity bootstrap (exit {process.returncode})\n{text}")
    if process.returncode == 0:
        return True
    if "already has an admin" in text:
        return False
    raise BootstrapError(f"identity bootstrap failed ({process.returncode}): {text.strip()}")
