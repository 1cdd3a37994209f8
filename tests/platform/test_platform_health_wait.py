"""`wait_healthy`: reports each check once, fails fast on a dead process, names logs on timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.platform.health import (
    Check,
    HealthTimeoutError,
    Probe,
    ProcessExitedError,
    wait_healthy,
)
from tools.platform.processes import Child


def _child(name: str, *, alive: bool = True) -> Child:
    return Child(
        name=name,
        log_path=Path(f"/state/logs/{name}.log"),
        pid=lambda: 1,
        alive=lambda: alive,
        stop=lambda: None,
    )


def _healthy_after(calls: int) -> Probe:
    seen = 0

    async def probe() -> bool:
        nonlocal seen
        seen += 1
        return seen > calls

    return probe


async def test_waits_until_every_check_passes_and_reports_each_once() -> None:
    lines: list[str] = []
    checks = [
        Check("a (gRPC health)", _child("a"), _healthy_after(0)),
        Check("b (Envoy ready)", _child("b"), _healthy_after(3)),
    ]
    await wait_healthy(checks, deadline_seconds=5, report=lines.append, interval=0)
    assert [line.split()[1] for line in lines] == ["a", "b"]


async def test_a_process_that_exits_fails_fast_and_points_at_its_log() -> None:
    checks = [Check("a (gRPC health)", _child("a", alive=False), _healthy_after(10**9))]
    with pytest.raises(ProcessExitedError, match=r"a exited .* /state/logs/a\.log"):
        await wait_healthy(checks, deadline_seconds=60, report=lambda _: None, interval=0)


async def test_a_timeout_names_what_is_not_healthy_and_its_log() -> None:
    checks = [
        Check("a (gRPC health)", _child("a"), _healthy_after(0)),
        Check("b (Envoy ready)", _child("b"), _healthy_after(10**9)),
    ]
    with pytest.raises(HealthTimeoutError) as err:
        await wait_healthy(checks, deadline_seconds=0.05, report=lambda _: None, interval=0.01)
    assert "b (Envoy ready)" in str(err.value)
    assert "/state/logs/b.log" in str(err.value)
    assert "a (gRPC health)" not in str(err.value)
