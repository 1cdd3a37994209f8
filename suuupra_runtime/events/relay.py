"""Outbox relay: publishes committed outbox rows to JetStream, marking them only after the ack.

Public API::

    relay = OutboxRelay(db, nats_url, batch_size=256, idle_poll_seconds=1.0)
    await relay.run()               # background task until cancelled
    await relay.publish_pending()   # one batch; returns how many rows were published

Each pass, in one transaction: `SELECT ... FOR UPDATE SKIP LOCKED` the oldest unpublished rows
(outbox `seq` order), publish each to its subject with `Nats-Msg-Id` = event id and the stored
headers, await every JetStream ack, then set `published_at` for the acknowledged rows and commit.

Delivery is at-least-once. If the relay dies after JetStream stored a message but before the
commit, the row stays unpublished and is published again later: JetStream drops the copy inside
its duplicate window (`Nats-Msg-Id`), and consumers' inbox tables drop anything older. Several
relays may run against one database (SKIP LOCKED splits the rows); the order of events across
relays, or around a failed publish, is not guaranteed.

Published rows are kept for `retention` (default 7 days, for audits and debugging) and then
deleted by the running relay (`purge_published`), so the table does not grow without bound.

Latency: a trigger on the outbox sends `NOTIFY suuupra_outbox` with the committing transaction;
the relay LISTENs (`PgListener`: reconnects, probes for half-open sockets) and wakes
immediately, and after every reconnect; it polls every `idle_poll_seconds` as a fallback.

`after_publish` is a test seam: awaited with the published event ids after the acks and before
marking, so a test can simulate a crash exactly there.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
from nats.aio.client import Client
from nats.js.api import PubAck
from sqlalchemy import delete, select, update
from sqlalchemy.sql import func

from suuupra_runtime.db import OUTBOX_CHANNEL, Database, outbox_table
from suuupra_runtime.events import headers as h
from suuupra_runtime.pg_listen import PgListener

__all__ = ["OutboxRelay"]

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        nats_url: str,
        *,
        batch_size: int = 256,
        idle_poll_seconds: float = 1.0,
        publish_timeout: float = 5.0,
        error_backoff_seconds: float = 1.0,
        retention: dt.timedelta = dt.timedelta(days=7),
        purge_interval_seconds: float = 3600.0,
        after_publish: Callable[[Sequence[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.nats_url = nats_url
        self.batch_size = batch_size
        self.idle_poll_seconds = idle_poll_seconds
        self.publish_timeout = publish_timeout
        self.error_backoff_seconds = error_backoff_seconds
        self.after_publish = after_publish
        self.retention = retention
        self.purge_interval_seconds = purge_interval_seconds
        self._next_purge = 0.0
        self._nc: Client | None = None
        self._wake = asyncio.Event()
        self.listener: PgListener | None = None  # while `run` runs (tests read its state)
        self.published_total = 0

    async def _connection(self) -> Client:
        if self._nc is None or self._nc.is_closed:
            self._nc = await nats.connect(self.nats_url, name="suuupra-outbox-relay")
        return self._nc

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
        self._nc = None

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; returns the number marked published."""
        js = (await self._connection()).jetstream()
        table = outbox_table
        async with self.db.sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(table.c.id, table.c.subject, table.c.payload, table.c.headers)
                    .where(table.c.published_at.is_(None))
                    .order_by(table.c.seq)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            futures: list[asyncio.Future[PubAck]] = []
            for row in rows:
                headers: dict[str, Any] = dict(row.headers)
                headers[h.MSG_ID] = str(row.id)
                futures.append(
                    await js.publish_async(row.subject, bytes(row.payload), headers=headers)
                )
            acked = await self._acked_ids(rows, futures)
            if self.after_publish is not None:
                await self.after_publish(acked)
            if acked:
                await session.execute(
                    update(table).where(table.c.id.in_(acked)).values(published_at=func.now())
                )
        self.published_total += len(acked)
        return len(acked)

    async def _acked_ids(
        self, rows: Sequence[Any], futures: list[asyncio.Future[PubAck]]
    ) -> list[str]:
        done, pending = await asyncio.wait(futures, timeout=self.publish_timeout)
        for future in pending:
            future.cancel()
        acked: list[str] = []
        for row, future in zip(rows, futures, strict=True):
            if future in done and not future.cancelled() and future.exception() is None:
                acked.append(str(row.id))
            elif future in done and not future.cancelled():
                log.warning("publish of event %s failed: %r", row.id, future.exception())
        if len(acked) < len(rows):
            missing = len(rows) - len(acked)
            log.warning("%d of %d outbox events not acknowledged", missing, len(rows))
        return acked

    async def purge_published(self, older_than: dt.timedelta | None = None) -> int:
        """Delete rows published more than `older_than` (default: `retention`) ago."""
        cutoff = dt.datetime.now(dt.UTC) - (self.retention if older_than is None else older_than)
        table = outbox_table
        async with self.db.sessions() as session, session.begin():
            result = await session.execute(
                delete(table).where(
                    table.c.published_at.is_not(None), table.c.published_at < cutoff
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def _maybe_purge(self) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._next_purge:
            self._next_purge = now + self.purge_interval_seconds
            purged = await self.purge_published()
            if purged:
                log.info("purged %d published outbox rows", purged)

    async def run(self) -> None:
        """Publish forever: on NOTIFY, and every `idle_poll_seconds` as a fallback."""
        # Wakes on every notice, and after every (re)connect: rows committed while nobody
        # listened are published at once instead of at the next poll.
        listener = PgListener(
            self.db.url, OUTBOX_CHANNEL, self._on_notify, on_connected=self._wake.set
        )
        self.listener = listener
        listening = asyncio.create_task(listener.run(), name="outbox-listen")
        try:
            while True:
                # Cleared before the pass, so a NOTIFY arriving during it is not lost.
                self._wake.clear()
                try:
                    published = await self.publish_pending()
                    await self._maybe_purge()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("outbox relay pass failed; retrying")
                    await asyncio.sleep(self.error_backoff_seconds)
                    continue
                if published >= self.batch_size:
                    continue  # backlog: keep going without waiting
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle_poll_seconds)
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listening
            await listener.close()
            await self.close()

    def _on_notify(self, _payload: str) -> None:
        self._wake.set()
