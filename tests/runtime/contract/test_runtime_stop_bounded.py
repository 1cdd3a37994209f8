"""Shutdown ends even when a background task swallows its cancellation or an on_stop hook hangs:
the task is cancelled again, the hook is abandoned after its bound, later hooks still run."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from suuupra_runtime import server as server_module
from suuupra_runtime.server import RuntimeServer
from suuupra_runtime.testing.echo_service import echo_definition
from suuupra_runtime.testing.harness import test_settings


async def test_stop_ends_despite_a_stubborn_task_and_a_hanging_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "_STOP_STEP_SECONDS", 0.3)
    events: list[str] = []

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append("swallowed the first cancellation")
        await asyncio.Event().wait()  # the second cancellation ends it

    async def hanging_hook() -> None:
        await asyncio.Event().wait()

    async def last_hook() -> None:
        events.append("last hook ran")

    definition = replace(
        echo_definition(), background=[stubborn], on_stop=[hanging_hook, last_hook]
    )
    server = RuntimeServer(definition, replace(test_settings("echo"), grace_seconds=0.1))
    await server.start()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(server.stop(), timeout=10)
    assert events == ["swallowed the first cancellation", "last hook ran"]
