# mypy: disable-error-code="import-untyped"
"""One PostgreSQL LISTEN connection kept open for the life of a process.

    listener = PgListener(database_url, "my_channel", on_payload, on_connected=forget_everything)
    background=[listener.run]          # the runtime's background task: connect, listen, reconnect
    listener.listening                 # True while notifications are being received
    listener.server_pid                # the backend holding the LISTEN (tests, pg_stat_activity)

Writers `pg_notify` inside their transaction (or a trigger does), so every replica hears about a
change when it commits, whichever replica made it. Notifications sent while this process is not
listening are lost: `on_connected` runs after every (re)connect, before any new payload, so the
user can treat "anything may have changed" (re-check, drop caches). Termination listeners do not
fire for every kind of loss (a half-open socket), so a cheap query every `probe_seconds` finds
those too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)


def _libpq_dsn(database_url: str) -> str:
    # asyncpg wants a plain libpq-style URL, not SQLAlchemy's `postgresql+asyncpg://`.
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


class PgListener:
    def __init__(
        self,
        database_url: str,
        channel: str,
        on_payload: Callable[[str], None],
        *,
        on_connected: Callable[[], None] = lambda: None,
        retry_seconds: float = 1.0,
        probe_seconds: float = 5.0,
    ) -> None:
        self._dsn = _libpq_dsn(database_url)
        self.channel = channel
        self._on_payload = on_payload
        self._on_connected = on_connected
        self._retry_seconds = retry_seconds
        self._probe_seconds = probe_seconds
        self._conn: asyncpg.Connection | None = None

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @property
    def server_pid(self) -> int | None:
        """The PostgreSQL backend holding the LISTEN (None while not listening)."""
        return self._conn.get_server_pid() if self.listening and self._conn else None

    async def ready(self) -> bool:
        """Readiness check form of `listening`."""
        return self.listening

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            self._on_payload(payload)
        except Exception:
            log.exception("LISTEN %s: handling a notification failed", self.channel)

    async def run(self) -> None:
        """Keep the LISTEN connection open until cancelled (a background task)."""
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("cannot LISTEN %s yet; retrying", self.channel, exc_info=True)
                await asyncio.sleep(self._retry_seconds)
                continue
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(self.channel, self._notified)
                self._conn = conn
                self._on_connected()  # anything may have changed while nobody listened
                await self._watch(conn, lost)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("LISTEN %s failed", self.channel, exc_info=True)
                await asyncio.sleep(self._retry_seconds)
            finally:
                self._conn = None
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))
            log.warning("lost the LISTEN %s connection; reconnecting", self.channel)

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), timeout=self._probe_seconds)
            if not lost.is_set():
                try:
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=5.0)
                except (asyncpg.PostgresError, OSError, TimeoutError):
                    lost.set()

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)


__all__ = ["PgListener"]
