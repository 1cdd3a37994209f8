"""Live inbox: new in-app notifications pushed to open `SubscribeInbox` streams.

Publishing goes through core NATS (not JetStream: a live push that nobody hears is fine, the
inbox table is the record), so a subscriber connected to any replica hears a notification stored
by any other. Each process subscribes once and fans messages out to its local streams. A message
carries the items one commit stored (a JSON list, at most `_ITEMS_PER_MESSAGE`; a lone JSON
object is read as one item). The committing process hands its items to its own streams at once
and publishes them on `<SUBJECT>.<its origin id>`. The service's connection has `no_echo`, so
the server does not send them back; should one come back anyway (a connection without it), it is
skipped by its subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from services.notifications.store import InboxItem
from suuupra_runtime.events import NatsLink

log = logging.getLogger(__name__)

SUBJECT = "suuupra-live.notifications.inbox"
_QUEUE_LIMIT = 256
_ITEMS_PER_MESSAGE = 100


class InboxHub:
    def __init__(self, link: NatsLink) -> None:
        self.link = link
        self.origin = uuid.uuid4().hex
        self._own_subject = f"{SUBJECT}.{self.origin}"
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
        client = self.link.client
        # `SUBJECT` itself: what replicas of the previous release publish.
        subs = [await client.subscribe(s, cb=self._on_message) for s in (f"{SUBJECT}.*", SUBJECT)]
        self._subscribed.set()
        try:
            await asyncio.Event().wait()
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _on_message(self, msg: Any) -> None:
        if msg.subject == self._own_subject:
            return  # handed to this process's streams when it was committed
        try:
            decoded = orjson.loads(msg.data)
            items = [
                InboxItem.from_dict(d)
                for d in (decoded if isinstance(decoded, list) else [decoded])
            ]
        except (ValueError, KeyError, TypeError):  # orjson.JSONDecodeError is a ValueError
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
        """Called after the commit that stored `items`: this process's streams get them now,
        other replicas' through NATS."""
        self._deliver_all_locally(items)
        client = self.link.client
        if client is None or not client.is_connected or not self._subscribed.is_set():
            return  # no broker: at least this replica's streams heard it
        task = asyncio.get_running_loop().create_task(self._publish(client, items))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, client: Any, items: Sequence[InboxItem]) -> None:
        for start in range(0, len(items), _ITEMS_PER_MESSAGE):
            chunk = items[start : start + _ITEMS_PER_MESSAGE]
            try:
                await client.publish(self._own_subject, orjson.dumps([i.to_dict() for i in chunk]))
            except Exception:
                log.warning("live inbox publish failed; other replicas miss it", exc_info=True)

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
