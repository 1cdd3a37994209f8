"""Every direct dependency is pinned exactly, and the lock file installs those same versions."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _direct_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        name, sep, version = requirement.partition("==")
        assert sep, f"{requirement!r} is not pinned with =="
        # `moto[server]`: the extra selects more packages, the pin is on `moto` itself.
        pins[_normalise(name.split("[", 1)[0])] = version
    return pins


def _locked() -> dict[str, str]:
    locked: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            locked[_normalise(name)] = version
    return locked


def test_direct_dependencies_are_locked_at_their_pinned_versions() -> None:
    locked = _locked()
    mismatched = {
        name: (pin, locked.get(name))
        for name, pin in _direct_pins().items()
        if locked.get(name) != pin
    }
    assert mismatched == {}


def test_lock_pins_every_package_exactly() -> None:
    assert all(version for version in _locked().values())
