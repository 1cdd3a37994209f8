"""`python -m services.assessment` serves the assessment service (settings from SUUUPRA_*)."""

from __future__ import annotations


def main() -> int:
    from services.assessment.server import build
    from suuupra_runtime.server import run

    run(build)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
