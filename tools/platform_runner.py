"""`./dev up`: the whole platform on one machine (placeholder until the runner lands)."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    raise SystemExit("./dev up is not implemented yet")
