"""`python -m services.notes` serves the notes service (settings from the environment)."""

from __future__ import annotations


def main() -> int:
    from services.notes.server import build
    from suuupra_runtime.server import run

    run(build)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
