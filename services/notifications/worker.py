"""The delivery worker: claims due deliveries (`FOR UPDATE SKIP LOCKED`, so any number of
workers in any number of processes share the queue), composes each message, hands it to its
channel's provider and records the outcome with retries and backoff.

Outcomes: sent; transient failure → queued again after `RetryPolicy.delay(attempt)` until
`max_attempts`, then failed; permanent failure → failed (or bounced) with the reason. Each final
outcome emits `DeliverySent` / `DeliveryFailed` through the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping

from google.protobuf.message import Message

from services.notifications import store
from services.notifications.compose import TokenUnavailableError
from services.notifications.config import NotificationsConfig
from services.notifications.domain import Channel, Status
from services.notifications.handlers import Clock, Notifications
from services.notifications.providers import (
    OutgoingMessage,
    PermanentFailure,
    Provider,
    TransientFailure,
)
from services.notifications.store import DeliveryRow
from services.notifications.templates import RenderError
from suuupra_runtime.db import Database, UnitOfWork

log = logging.getLogger(__name__)


class Outcomes:
    """Builds the outbox events of final outcomes (the proto mapping lives in events.py)."""

    def sent(self, row: DeliveryRow, attempts: int, now: dt.datetime) -> Message | None:
        return None

    def failed(
        self, row: DeliveryRow, status: Status, error: str, attempts: int, now: dt.datetime
    ) -> Message | None:
        return None


class DeliveryWorker:
    def __init__(
        self,
        db: Database,
        notifications: Notifications,
        providers: Mapping[Channel, Provider],
        config: NotificationsConfig,
        *,
        outcomes: Outcomes | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.db = db
        self.notifications = notifications
        self.providers = providers
        self.config = config
        self.outcomes = outcomes or Outcomes()
        self.clock = clock or notifications.clock
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(config.worker_concurrency)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                claimed = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery worker pass failed; retrying")
                claimed = 0
            if claimed < self.config.worker_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.poll_interval_seconds)
                self._wake.clear()

    async def run_once(self) -> int:
        """One pass: claim up to a batch of due deliveries and process them concurrently."""
        now = self.clock()
        async with self.db.unit_of_work(tenant_id=None) as uow:
            rows = await store.claim_due(
                uow.session,
                now,
                dt.timedelta(seconds=self.config.lease_seconds),
                self.config.worker_batch,
            )
        await asyncio.gather(*(self._guarded(row) for row in rows))
        return len(rows)

    async def _guarded(self, row: DeliveryRow) -> None:
        async with self._limit:
            try:
                await self.deliver(row)
            except Exception:
                # Left as claimed: the lease brings it back for another attempt.
                log.exception("delivery %s could not be processed", row.delivery_id)

    async def deliver(self, row: DeliveryRow) -> None:
        if row.channel is Channel.IN_APP:
            async with self.db.unit_of_work(tenant_id=row.tenant_id) as uow:
                recipient = (await store.recipients(uow.session, row.tenant_id, [row.user_id]))[
                    row.user_id
                ]
                await self.notifications.deliver_in_app(
                    uow,
                    row.delivery_id,
                    recipient,
                    kind=row.kind,
                    category=row.category,
                    context=row.context,
                    attempts=row.attempts,
                )
            return

        provider = self.providers.get(row.channel)
        version = row.template_version
        try:
            async with self.db.sessions() as s:
                recipient = (await store.recipients(s, row.tenant_id, [row.user_id]))[row.user_id]
                composed = await self.notifications.composer.compose(
                    s,
                    kind=row.kind,
                    category=row.category,
                    channel=row.channel,
                    recipient=recipient,
                    context=row.context,
                )
            version = composed.version
            if provider is None:
                raise PermanentFailure(f"no {row.channel.name.lower()} provider is configured")
            await provider.send(
                OutgoingMessage(
                    address=row.address,
                    subject=composed.subject,
                    body=composed.body,
                    headers=composed.headers,
                    data={k: str(v) for k, v in row.context.items() if not str(k).startswith("_")},
                )
            )
        except TransientFailure as exc:
            await self._transient(row, str(exc), version)
            return
        except PermanentFailure as exc:
            status = Status.BOUNCED if exc.bounced else Status.FAILED
            await self._final(row, status, str(exc), version)
            return
        except (TokenUnavailableError, RenderError) as exc:
            await self._final(row, Status.FAILED, f"cannot compose: {exc}", version)
            return
        await self._final(row, Status.SENT, "", version)

    async def _transient(self, row: DeliveryRow, error: str, version: int) -> None:
        policy = self.config.retry
        if policy.gives_up(row.attempts):
            await self._final(
                row, Status.FAILED, f"gave up after {row.attempts} attempts: {error}", version
            )
            return
        now = self.clock()
        async with self.db.unit_of_work(tenant_id=row.tenant_id) as uow:
            await store.record_outcome(
                uow.session,
                row.delivery_id,
                Status.QUEUED,
                now,
                error=error,
                due_at=now + policy.delay(row.attempts),
                template_version=version,
            )
        log.info(
            "delivery %s attempt %d failed transiently (%s); retrying",
            row.delivery_id, row.attempts, error,
        )  # fmt: skip

    async def _final(self, row: DeliveryRow, status: Status, error: str, version: int) -> None:
        now = self.clock()
        async with self.db.unit_of_work(tenant_id=row.tenant_id) as uow:
            await store.record_outcome(
                uow.session, row.delivery_id, status, now, error=error, template_version=version
            )
            event = (
                self.outcomes.sent(row, row.attempts, now)
                if status is Status.SENT
                else self.outcomes.failed(row, status, error, row.attempts, now)
            )
            self._emit(uow, event)
        if status is not Status.SENT:
            log.warning("delivery %s %s: %s", row.delivery_id, status.name.lower(), error)

    @staticmethod
    def _emit(uow: UnitOfWork, event: Message | None) -> None:
        if event is not None:
            uow.add_event(event)
