"""Helpers for AIP-134 style updates: `update_mask` paths and weak etags (AIP-154).

Pure Python (no grpc, no I/O), so services' domain and api modules can both use them.
"""

from __future__ import annotations

from collections.abc import Iterable

from suuupra_runtime.errors import FieldViolation, InvalidArgument


def mask_paths(paths: Iterable[str], allowed: Iterable[str], resource: str) -> frozenset[str]:
    """The mask's paths, refusing unknown or read-only ones and an empty mask."""
    out = frozenset(paths)
    unknown = sorted(out - frozenset(allowed))
    if unknown:
        raise InvalidArgument(
            [FieldViolation("update_mask", f"unknown or read-only path {p!r}") for p in unknown]
        )
    if not out:
        raise InvalidArgument(
            [FieldViolation("update_mask", f"name at least one {resource} field")]
        )
    return out


def etag_of(version: int) -> str:
    return f'W/"{version}"'


def etag_matches(sent: str, version: int) -> bool:
    """An empty etag means "don't care" (AIP-154); any other value must match exactly."""
    return not sent or sent == etag_of(version)


__all__ = ["etag_matches", "etag_of", "mask_paths"]
