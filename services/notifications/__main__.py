"""`python -m services.notifications` serves (DATABASE_URL, NATS_URL, SUUUPRA_* settings)."""

from __future__ import annotations


def main() -> int:
    from services.notifications.server import build
    from suuupra_runtime.server import run

    run(build)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
