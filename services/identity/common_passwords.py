"""The blocklist of common passwords shipped with the package (common_passwords.txt).

The list is modest on purpose: the length minimum (12 by default) already rules out most of the
top-10k lists; what remains are long-but-predictable strings like "password1234".
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def _blocklist() -> frozenset[str]:
    text = resources.files(__package__).joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line and not line.startswith("#")
    )


def is_common_password(candidate: str) -> bool:
    lowered = candidate.lower()
    if lowered in _blocklist():
        return True
    # One character repeated, or a run of a single short pattern ("abcabcabcabc").
    return any(lowered == lowered[:n] * (len(lowered) // n) for n in range(1, 4) if lowered)
