"""Test categories come from where a test lives, so a test cannot land in no suite.

unit: no I/O.  integration: `integration/` or `contract/` folders (real PostgreSQL and NATS).
mesh: `tests/mesh/` (real Envoy with mTLS).  e2e: `tests/e2e/`, `tests/security/`, `tests/chaos/`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent
pytest_plugins = ["suuupra_runtime.testing.fixtures"]

_CATEGORY_BY_FOLDER = {
    "integration": "integration",
    "contract": "integration",
    "mesh": "mesh",
    "e2e": "e2e",
    "security": "e2e",
    "chaos": "e2e",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unit: no I/O")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # Relative to the repository: a checkout living under e.g. `/work/mesh/` is not a category.
        parts = item.path.resolve().relative_to(_ROOT).parts
        category = next((_CATEGORY_BY_FOLDER[p] for p in parts if p in _CATEGORY_BY_FOLDER), "unit")
        item.add_marker(getattr(pytest.mark, category))
