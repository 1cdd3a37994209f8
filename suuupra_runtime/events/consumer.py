"""Durable JetStream consumers that apply each event exactly once to the service's database.

Public API::

    consumer = EventConsumer(
        db, nats_url, durable="search-indexer", stream="COURSES",
        handlers={CoursePublished: on_course_published},   # async (event, uow) -> None
        max_deliver=5, backoff=(1, 5, 30, 120),
    )
    await consumer.run()            # background task until cancelled
    await consumer.process(msg)     # one nats Msg -> Outcome (used by run(); handy in tests)

Per message, in ONE transaction: insert `inbox(consumer, event_id)` (a conflict means the event
was already handled: just ack), run the handler with a `UnitOfWork` (it may write state and add
outbox events), commit; then ack. The ack comes after the commit, so a crash in between causes a
redelivery that the inbox turns into a no-op.

Failure: the transaction rolls back and the message is nak'ed with a delay from `backoff`
(indexed by delivery attempt, last value repeated). On delivery `max_deliver` the event goes to
`dead_letters` (with the error text and attempt count) and is terminated, so it is never
redelivered; `dead_letters.replay_dead_letter` re-publishes it after a fix. A payload that does
not parse is dead-lettered at once (retrying cannot help). An event type with no handler is
acked and logged. JetStream's own `max_deliver` is set a little higher than ours so a process
crash on the last attempt still gets the event redelivered and dead-lettered.

Inside a handler, `current_envelope()` gives the event id, tenant, headers, etc.; the incoming
trace context is the active OpenTelemetry context, and events the handler adds inherit the
incoming `traceparent` / `x-request-id` when no span is recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import nats
from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import context as otel_context
from opentelemetry import propagate
from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert

from suuupra_runtime.db import Database, UnitOfWork, dead_letters_table, inbox_table
from suuupra_runtime.events.envelope import (
    DecodeError,
    EventEnvelope,
    EventTypes,
    reset_current_envelope,
    set_current_envelope,
)
from suuupra_runtime.events.headers import trace_headers

__all__ = ["EventConsumer", "EventHandler", "Outcome"]

log = logging.getLogger(__name__)

EventHandler = Callable[[Any, UnitOfWork], Awaitable[None]]
# Extra deliveries JetStream may still make after our limit, for crash-on-last-attempt recovery.
_CRASH_MARGIN = 2


class Outcome(enum.Enum):
    HANDLED = "handled"
    DUPLICATE = "duplicate"
    UNKNOWN_TYPE = "unknown_type"
    RETRY = "retry"
    DEAD_LETTERED = "dead_lettered"


class EventConsumer:
    def __init__(
        self,
        db: Database,
        nats_url: str,
        *,
        durable: str,
        stream: str,
        handlers: Mapping[type[Message], EventHandler],
        max_deliver: int = 5,
        backoff: Sequence[float] = (1.0, 5.0, 30.0, 120.0),
        ack_wait_seconds: float = 60.0,
        batch_size: int = 32,
        fetch_timeout: float = 1.0,
        filter_subjects: Sequence[str] | None = None,
    ) -> None:
        if max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        self.db = db
        self.nats_url = nats_url
        self.durable = durable
        self.stream = stream
        self.handlers = {t.DESCRIPTOR.full_name: fn for t, fn in handlers.items()}
        self.types = EventTypes(handlers)
        self.max_deliver = max_deliver
        self.backoff = tuple(backoff) or (1.0,)
        self.ack_wait_seconds = ack_wait_seconds
        self.batch_size = batch_size
        self.fetch_timeout = fetch_timeout
        self.filter_subjects = list(filter_subjects or [])
        self._first_failure: dict[str, dt.datetime] = {}

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_seconds,
            max_deliver=self.max_deliver + _CRASH_MARGIN,
            filter_subjects=self.filter_subjects or None,
            max_ack_pending=max(self.batch_size * 4, 256),
        )

    async def run(self) -> None:
        """Fetch and process messages until cancelled; reconnects after NATS/setup failures."""
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consumer %s stopped; restarting", self.durable)
                await asyncio.sleep(self.backoff[0])

    async def _run_once(self) -> None:
        nc = await nats.connect(self.nats_url, name=f"suuupra-consumer-{self.durable}")
        sub: Any = None
        try:
            js = nc.jetstream()
            await js.add_consumer(self.stream, self.consumer_config())
            sub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
            while True:
                try:
                    messages = await sub.fetch(self.batch_size, timeout=self.fetch_timeout)
                except (NatsTimeoutError, TimeoutError):
                    continue
                for msg in messages:
                    try:
                        await self.process(msg)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        # DB or NATS trouble outside the handler: leave the message unacked so
                        # JetStream redelivers it after ack_wait.
                        log.exception("consumer %s could not process a message", self.durable)
        finally:
            # Unsubscribe before closing: draining a pull subscription after a short or
            # timed-out fetch hangs (nats-py 2.16).
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await nc.close()

    async def process(self, msg: Msg) -> Outcome:
        meta = msg.metadata
        envelope = EventEnvelope.from_message(
            msg.subject,
            msg.headers,
            stream_sequence=meta.sequence.stream if meta.sequence else None,
            num_delivered=meta.num_delivered or 1,
        )
        try:
            event = self.types.decode(envelope, msg.data)
        except DecodeError as exc:
            await self._dead_letter(msg, envelope, repr(exc))
            await msg.term()
            return Outcome.DEAD_LETTERED
        if event is None:
            log.info("consumer %s skips unknown event type %s", self.durable, envelope.event_type)
            await msg.ack_sync()
            return Outcome.UNKNOWN_TYPE
        if not envelope.event_id:
            await self._dead_letter(msg, envelope, "event has no id header")
            await msg.term()
            return Outcome.DEAD_LETTERED

        try:
            handled = await self._apply(envelope, event)
        except Exception as exc:
            return await self._failed(msg, envelope, exc)
        self._first_failure.pop(envelope.event_id, None)
        await msg.ack_sync()
        return Outcome.HANDLED if handled else Outcome.DUPLICATE

    async def _apply(self, envelope: EventEnvelope, event: Message) -> bool:
        handler = self.handlers[envelope.event_type]
        trace_token = otel_context.attach(propagate.extract(dict(envelope.headers)))
        envelope_token = set_current_envelope(envelope)
        try:
            async with self.db.unit_of_work(
                tenant_id=envelope.tenant_id, inherited_headers=trace_headers(envelope.headers)
            ) as uow:
                claimed = await uow.session.scalar(
                    pg_insert(inbox_table)
                    .values(consumer=self.durable, event_id=envelope.event_id)
                    .on_conflict_do_nothing()
                    .returning(inbox_table.c.event_id)
                )
                if claimed is None:
                    return False
                await handler(event, uow)
                return True
        finally:
            reset_current_envelope(envelope_token)
            otel_context.detach(trace_token)

    async def _failed(self, msg: Msg, envelope: EventEnvelope, exc: Exception) -> Outcome:
        attempt = envelope.num_delivered
        self._first_failure.setdefault(envelope.event_id, dt.datetime.now(dt.UTC))
        error = f"{type(exc).__name__}: {exc}"
        if attempt >= self.max_deliver:
            log.error(
                "consumer %s dead-letters event %s after %d attempts: %s",
                self.durable, envelope.event_id, attempt, error,
            )  # fmt: skip
            await self._dead_letter(msg, envelope, error)
            await msg.term()
            return Outcome.DEAD_LETTERED
        delay = self.backoff[min(attempt, len(self.backoff)) - 1]
        log.warning(
            "consumer %s attempt %d for event %s failed (%s); retry in %.1fs",
            self.durable, attempt, envelope.event_id, error, delay,
        )  # fmt: skip
        await msg.nak(delay=delay)
        return Outcome.RETRY

    async def _dead_letter(self, msg: Msg, envelope: EventEnvelope, error: str) -> None:
        now = dt.datetime.now(dt.UTC)
        first = self._first_failure.pop(envelope.event_id, now)
        async with self.db.sessions() as session, session.begin():
            await session.execute(
                insert(dead_letters_table).values(
                    id=uuid.uuid4(),
                    consumer=self.durable,
                    stream=self.stream,
                    subject=msg.subject,
                    event_id=envelope.event_id,
                    event_type=envelope.event_type,
                    payload=msg.data,
                    headers=dict(envelope.headers),
                    error=error,
                    attempts=envelope.num_delivered,
                    first_failed_at=first,
                    last_failed_at=now,
                )
            )
