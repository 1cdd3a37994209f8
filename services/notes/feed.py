# mypy: disable-error-code="import-untyped"
"""Live change feed for WatchNote: one PostgreSQL LISTEN connection per process.

Writers `pg_notify` inside their transaction (store.notify_*), so every replica hears about a
change exactly when it commits, whichever replica made it. A notification only says *what* to
re-check (a note, or a user's cohort access); watchers re-read the database, so a lost, merged
or duplicated notification can never show stale or unauthorised data. When the LISTEN connection
drops, every watcher re-checks after the reconnect, because notifications sent meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterator

from services.notes.store import CHANGES_CHANNEL
from suuupra_runtime.pg_listen import PgListener

log = logging.getLogger(__name__)


class Subscription:
    """A watcher's doorbell: set when its note (or its access) may have changed."""

    def __init__(self, feed: ChangeFeed, tenant_id: str, note_id: str, user_id: str) -> None:
        self.feed = feed
        self.note_key = (tenant_id, note_id)
        self.user_key = (tenant_id, user_id)
        self._changed = asyncio.Event()

    def ring(self) -> None:
        self._changed.set()

    async def wait(self) -> None:
        """Return once something changed since the last wait (changes in between coalesce)."""
        await self._changed.wait()
        self._changed.clear()

    def close(self) -> None:
        self.feed._remove(self)


class ChangeFeed:
    def __init__(self, database_url: str, *, retry_seconds: float = 1.0) -> None:
        # After a (re)connect every watcher re-checks: notifications sent meanwhile are lost.
        self.listener = PgListener(
            database_url,
            CHANGES_CHANNEL,
            self.dispatch,
            on_connected=self._ring_all,
            retry_seconds=retry_seconds,
        )
        self._by_note: dict[tuple[str, str], set[Subscription]] = defaultdict(set)
        self._by_user: dict[tuple[str, str], set[Subscription]] = defaultdict(set)
        self.draining = False

    async def ready(self) -> bool:
        return self.listener.listening

    def subscribe(self, tenant_id: str, note_id: str, user_id: str) -> Subscription:
        sub = Subscription(self, tenant_id, note_id, user_id)
        self._by_note[sub.note_key].add(sub)
        self._by_user[sub.user_key].add(sub)
        return sub

    @contextlib.contextmanager
    def subscription(self, tenant_id: str, note_id: str, user_id: str) -> Iterator[Subscription]:
        sub = self.subscribe(tenant_id, note_id, user_id)
        try:
            yield sub
        finally:
            sub.close()

    def _remove(self, sub: Subscription) -> None:
        for index, key in ((self._by_note, sub.note_key), (self._by_user, sub.user_key)):
            subs = index.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del index[key]

    @property
    def watcher_count(self) -> int:
        return sum(len(s) for s in self._by_note.values())

    def dispatch(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            tenant = str(message["t"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed change notification %r", payload[:200])
            return
        targets: set[Subscription] = set()
        if "n" in message:
            targets |= self._by_note.get((tenant, str(message["n"])), set())
        if "u" in message:
            targets |= self._by_user.get((tenant, str(message["u"])), set())
        for sub in targets:
            sub.ring()

    def _ring_all(self) -> None:
        for subs in list(self._by_note.values()):
            for sub in subs:
                sub.ring()

    async def drain(self) -> None:
        """The server is shutting down: wake every watcher so it ends its stream now."""
        self.draining = True
        self._ring_all()

    async def run(self) -> None:
        """Keep the LISTEN connection open until cancelled (background task)."""
        await self.listener.run()

    async def close(self) -> None:
        await self.listener.close()
