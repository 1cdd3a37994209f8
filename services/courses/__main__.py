"""`python -m services.courses` serves the courses service (settings from the environment:
DATABASE_URL, NATS_URL and the runtime's SUUUPRA_* server settings)."""

from __future__ import annotations


def main() -> int:
    from services.courses.server import build
    from suuupra_runtime.server import run

    run(build)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
