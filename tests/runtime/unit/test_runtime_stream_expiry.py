"""`_until_expiry`: a server stream ends with UNAUTHENTICATED when the caller's token expires,
interrupting only the wait for the next response, never a response being sent; other
cancellations stay cancellations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from suuupra_runtime.errors import Unauthenticated
from suuupra_runtime.interceptors import _until_expiry


async def _source(items: asyncio.Queue[int], closed: list[bool]) -> AsyncIterator[int]:
    try:
        while True:
            yield await items.get()
    finally:
        closed.append(True)


async def test_expiry_while_waiting_ends_the_stream_and_closes_the_handler() -> None:
    items: asyncio.Queue[int] = asyncio.Queue()
    closed: list[bool] = []
    stream = _until_expiry(_source(items, closed), time.time() + 0.2)
    items.put_nowait(1)
    assert await anext(stream) == 1
    with pytest.raises(Unauthenticated) as ended:
        await anext(stream)  # nothing comes: the token expires meanwhile
    assert ended.value.reason == "TOKEN_EXPIRED"
    assert closed == [True]


async def test_expiry_while_a_response_is_being_sent_ends_the_stream_after_it() -> None:
    items: asyncio.Queue[int] = asyncio.Queue()
    closed: list[bool] = []
    stream = _until_expiry(_source(items, closed), time.time() + 0.1)
    items.put_nowait(1)
    items.put_nowait(2)
    assert await anext(stream) == 1
    await asyncio.sleep(0.3)  # "sending" response 1 while the token expires: not interrupted
    with pytest.raises(Unauthenticated):
        await anext(stream)  # response 2 is there, but the stream ends first
    assert closed == [True]


async def test_another_cancellation_stays_a_cancellation() -> None:
    items: asyncio.Queue[int] = asyncio.Queue()
    closed: list[bool] = []

    async def consume() -> None:
        async for _ in _until_expiry(_source(items, closed), time.time() + 60):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [True]
