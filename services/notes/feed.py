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

import asyncpg
from sqlalchemy.engine import make_url

from services.notes.store import CHANGES_CHANNEL

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
        # asyncpg wants a plain libpq-style URL, not SQLAlchemy's `postgresql+asyncpg://`.
        self._dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
        self._retry_seconds = retry_seconds
        self._by_note: dict[tuple[str, str], set[Subscription]] = defaultdict(set)
        self._by_user: dict[tuple[str, str], set[Subscription]] = defaultdict(set)
        self._conn: asyncpg.Connection | None = None
        self.draining = False

    async def ready(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

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

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.dispatch(payload)

    async def run(self) -> None:
        """Keep a LISTEN connection open until cancelled (background task)."""
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANGES_CHANNEL, self._on_notification)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("change feed cannot LISTEN yet; retrying", exc_info=True)
                await asyncio.sleep(self._retry_seconds)
                continue
            self._conn = conn
            self._ring_all()  # anything may have changed while we were not listening
            try:
                while not lost.is_set():
                    # Termination listeners do not fire for every kind of loss (a half-open
                    # socket); a cheap query every few seconds finds those too.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=5.0)
                    if not lost.is_set():
                        try:
                            await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=5.0)
                        except (asyncpg.PostgresError, OSError, TimeoutError):
                            lost.set()
            finally:
                self._conn = None
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))
            log.warning("change feed lost its LISTEN connection; reconnecting")

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
