"""Live inbox: new in-app notifications pushed to open `SubscribeInbox` streams.

Publishing goes through core NATS (not JetStream: a live push that nobody hears is fine, the
inbox table is the record), so a subscriber connected to any replica hears a notification stored
by any other. Each process subscribes once and fans messages out to its local streams. A message
carries the items one commit stored (a JSON list, at most `_ITEMS_PER_MESSAGE`; a lone JSON
object is read as one item).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from services.notifications.store import InboxItem
from suuupra_runtime.events import NatsLink

log = logging.getLogger(__name__)

SUBJECT = "suuupra-live.notifications.inbox"
_QUEUE_LIMIT = 256
_ITEMS_PER_MESSAGE = 100


class InboxHub:
    def __init__(self, link: NatsLink) -> None:
        self.link = link
        self._subscribers: dict[tuple[str, str], set[asyncio.Queue[InboxItem]]] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()

    async def ready(self) -> bool:
        return self._subscribed.is_set()

    async def run(self) -> None:
        """Background job: subscribe once the NATS link is up, then stay alive."""
        # NatsLink has no "connected" event to wait on; polling a few times at start-up is fine.
        while self.link.client is None or not self.link.client.is_connected:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        sub = await self.link.client.subscribe(SUBJECT, cb=self._on_message)
        self._subscribed.set()
        try:
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_message(self, msg: Any) -> None:
        try:
            decoded = json.loads(msg.data)
            items = [
                InboxItem.from_dict(d)
                for d in (decoded if isinstance(decoded, list) else [decoded])
            ]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed live inbox message")
            return
        for item in items:
            self._deliver_locally(item)

    def _deliver_locally(self, item: InboxItem) -> None:
        for queue in self._subscribers.get((item.tenant_id, item.user_id), ()):
            if queue.full():
                # A stalled client: drop its oldest item rather than grow without bound; the
                # inbox list still has everything.
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(item)

    def publish_soon(self, items: Sequence[InboxItem]) -> None:
        """Called after the commit that stored `items`."""
        task = asyncio.get_running_loop().create_task(self._publish(items))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, items: Sequence[InboxItem]) -> None:
        client = self.link.client
        if client is None or not client.is_connected or not self._subscribed.is_set():
            self._deliver_all_locally(items)  # no broker: at least this replica's streams hear it
            return
        for start in range(0, len(items), _ITEMS_PER_MESSAGE):
            chunk = items[start : start + _ITEMS_PER_MESSAGE]
            try:
                await client.publish(SUBJECT, json.dumps([i.to_dict() for i in chunk]).encode())
            except Exception:
                log.warning("live inbox publish failed; delivering locally", exc_info=True)
                self._deliver_all_locally(chunk)

    def _deliver_all_locally(self, items: Sequence[InboxItem]) -> None:
        for item in items:
            self._deliver_locally(item)

    @contextlib.contextmanager
    def subscribe(self, tenant_id: str, user_id: str) -> Iterator[asyncio.Queue[InboxItem]]:
        queue: asyncio.Queue[InboxItem] = asyncio.Queue(maxsize=_QUEUE_LIMIT)
        key = (tenant_id, user_id)
        self._subscribers.setdefault(key, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self._subscribers.get(key)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._subscribers[key]
