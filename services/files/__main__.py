"""`python -m services.files` serves the files service (settings from the environment)."""

from __future__ import annotations


def main() -> int:
    from services.files.server import build
    from suuupra_runtime.server import run

    run(build)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
