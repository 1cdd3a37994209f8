"""Waiting in tests for something that happens asynchronously (a notification, a projection)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 15.0, every: float = 0.05
) -> None:
    """Poll `check` until it returns True; fail after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(every)


__all__ = ["eventually"]
