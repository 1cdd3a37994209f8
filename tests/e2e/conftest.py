"""One platform for the journeys of this suite, started through the real `./dev up`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.platform_process import RunningPlatform, start_platform


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path_factory.mktemp("platform-state"))
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"./dev up ended with {code}:\n{running.text()}"
