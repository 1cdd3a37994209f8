"""`python -m services.profiles` serves the profiles service (settings from the environment)."""

from __future__ import annotations


def main() -> int:
    from services.profiles.server import build
    from suuupra_runtime.server import run

    run(build)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
