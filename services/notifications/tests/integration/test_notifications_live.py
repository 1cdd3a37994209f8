"""Live inbox push across replicas: the committing process hands items to its own streams at once
and every other replica hears them through NATS, each stream exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import nats

from services.notifications.domain import Category
from services.notifications.live import SUBJECT, InboxHub
from services.notifications.store import InboxItem
from suuupra_runtime.events import NatsLink


def _item(n: int, user: str = "u1") -> InboxItem:
    return InboxItem(
        f"id-{n}", "t1", user, "notes.shared", Category.NOTES, f"title {n}", "body", {"n": str(n)},
        dt.datetime.now(dt.UTC), unread_count=n,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def _replica(nats_url: str) -> AsyncIterator[InboxHub]:
    link = NatsLink(nats_url, name="notifications", no_echo=True)  # as server.py builds it
    hub = InboxHub(link)
    heard = hub._on_message

    async def counted(msg: Any) -> None:
        hub.heard_subjects.append(msg.subject)  # type: ignore[attr-defined]
        await heard(msg)

    hub.heard_subjects = []  # type: ignore[attr-defined]
    hub._on_message = counted  # type: ignore[method-assign]
    tasks = [asyncio.create_task(link.maintain()), asyncio.create_task(hub.run())]
    try:
        while not await hub.ready():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        yield hub
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await link.close()


async def _drain(queue: asyncio.Queue[InboxItem], within: float = 0.5) -> list[str]:
    got: list[str] = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append((await asyncio.wait_for(queue.get(), within)).notification_id)
    return got


async def test_items_reach_every_replicas_streams_exactly_once(fresh_nats_url: str) -> None:
    async with _replica(fresh_nats_url) as a, _replica(fresh_nats_url) as b:
        with a.subscribe("t1", "u1") as on_a, b.subscribe("t1", "u1") as on_b:
            a.publish_soon([_item(1), _item(2), _item(3, user="u2")])
            assert on_a.qsize() == 2  # before any NATS round trip
            assert await _drain(on_a) == ["id-1", "id-2"]
            assert await _drain(on_b) == ["id-1", "id-2"]
            # Only b heard a's message: the server does not echo a's own publication to a.
            assert a.heard_subjects == []  # type: ignore[attr-defined]
            assert b.heard_subjects == [f"{SUBJECT}.{a.origin}"]  # type: ignore[attr-defined]

            # A replica of the previous release publishes one JSON object on SUBJECT itself.
            nc = await nats.connect(fresh_nats_url)
            try:
                await nc.publish(SUBJECT, json.dumps(_item(4).to_dict()).encode())
                await nc.flush()
            finally:
                await nc.close()
            assert await _drain(on_a) == ["id-4"]
            assert await _drain(on_b) == ["id-4"]
