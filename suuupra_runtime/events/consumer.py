"""Durable JetStream consumers that apply each event exactly once to the service's database.

Public API::

    consumer = EventConsumer(
        db, nats_url, durable="search-indexer", stream="COURSES",
        handlers={CoursePublished: on_course_published},   # async (event, uow) -> None
        batch_handlers={NoteShared: on_notes_shared},      # async ([Received], uow) -> None
        max_deliver=5, backoff=(1, 5, 30, 120), batch_size=32,
    )
    await consumer.run()                   # background task until cancelled
    await consumer.process(msg)            # one nats Msg -> Outcome (handy in tests)
    await consumer.process_batch(msgs)     # fetched Msgs -> [Outcome] (what run() does)

Fetching: `run()` asks JetStream for up to `batch_size` messages with `fetch_timeout` as the
request's expiry. nats-py sends that pull request with `no_wait` and `expires`; the server
(2.15) then waits up to `expires` only while nothing is pending, and ends the request with
"no messages" as soon as it has delivered what was there. So a lone event is handled the moment
it arrives, and under load each fetch returns the backlog, up to `batch_size`, in one go. A full
batch signals a backlog: the next fetch then runs while that batch is handled (decoding messages
is CPU work, handling mostly waits on the database); batches are still handled one at a time, in
stream order. A consumer stopped with a batch fetched ahead leaves it unacked: JetStream
redelivers it after `ack_wait_seconds`.

`batches_in_flight=N` (default 1) lets up to N fetched batches be handled at once, each in its
own transaction: one batch's handlers compute while another waits on the database. Batches then
commit in no fixed order, so only for events whose effects commute (each event's work is its own,
like a notification per share); whatever they update in common must take row locks in a fixed
order (the inbox claim locks event ids in sorted order for that reason).

A fetched batch is handled in ONE transaction: one multi-row insert of `inbox(consumer,
event_id)` rows (the ids that conflict were handled before, or appear twice in the batch: those
are duplicates and only acked), every fresh event's handler with the same `UnitOfWork`, one
commit; then the batch is acked, without waiting for JetStream's replies (a lost ack is one more
redelivery). The ack comes after the commit, so a crash in between causes a redelivery that the
inbox turns into a no-op. Handlers run in stream order;
before each, the unit of work takes that event's tenant and trace headers (for events it adds),
`current_envelope()` is that event's envelope and its trace context is the active one.

`batch_handlers` take several events of one type at once, for handlers that can do the work of
many events in a few statements: consecutive events of that type and tenant go to one call as
`Received(envelope, event)` items (the unit of work and `current_envelope()` carry the first
one's tenant and trace headers). A type has a handler or a batch handler, not both.

Failure: if anything in the batch fails, its transaction rolls back and each event is handled
again on its own, in its own transaction, so one poison event cannot hold back the others.
An event that fails on its own is nak'ed with a delay from `backoff` (indexed by delivery
attempt, last value repeated); an event that failed before in this process is handled on its
own from then on. On delivery `max_deliver` the event goes to `dead_letters` (with the error
text and attempt count) and is terminated, so it is never redelivered;
`dead_letters.replay_dead_letter` re-publishes it after a fix. A payload that does not parse is
dead-lettered at once (retrying cannot help). An event type with no handler is acked and logged.
JetStream's own `max_deliver` is set a little higher than ours so a process crash on the last
attempt still gets the event redelivered and dead-lettered.

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
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError as NatsNotFoundError
from opentelemetry import context as otel_context
from opentelemetry import propagate
from sqlalchemy import insert, text

from suuupra_runtime.db import Database, UnitOfWork, dead_letters_table
from suuupra_runtime.events.envelope import (
    DecodeError,
    EventEnvelope,
    EventTypes,
    reset_current_envelope,
    set_current_envelope,
)
from suuupra_runtime.events.headers import trace_headers

__all__ = ["BatchHandler", "EventConsumer", "EventHandler", "Outcome", "Received"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """One event of a batch handler's call."""

    envelope: EventEnvelope
    event: Any


EventHandler = Callable[[Any, UnitOfWork], Awaitable[None]]
BatchHandler = Callable[[Sequence[Received], UnitOfWork], Awaitable[None]]
# Extra deliveries JetStream may still make after our limit, for crash-on-last-attempt recovery.
_CRASH_MARGIN = 2
# Claims the batch's event ids; the ids that come back are new (one statement for any size).
_CLAIM = text(
    "INSERT INTO inbox (consumer, event_id) SELECT :consumer, unnest(CAST(:ids AS text[])) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)


def delivery_info(msg: Msg) -> tuple[int | None, int]:
    """(stream sequence, delivery count) of a JetStream message, read from its ack subject
    (`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...`, 9 tokens; with domain and account
    hash after `ACK`, 11 or more): ~10x cheaper than nats-py's `msg.metadata`, which also parses
    the timestamp into a datetime and builds two dataclasses, per message. Other forms go
    through `msg.metadata`."""
    tokens = (msg.reply or "").split(".")
    if tokens[:2] == ["$JS", "ACK"] and (len(tokens) == 9 or len(tokens) >= 11):
        first = 4 if len(tokens) == 9 else 6
        with contextlib.suppress(ValueError):
            return int(tokens[first + 1]), int(tokens[first])
    meta = msg.metadata
    return (meta.sequence.stream if meta.sequence else None), meta.num_delivered


class Outcome(enum.Enum):
    HANDLED = "handled"
    DUPLICATE = "duplicate"
    UNKNOWN_TYPE = "unknown_type"
    RETRY = "retry"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class _Item:
    msg: Msg
    envelope: EventEnvelope
    event: Message


class EventConsumer:
    def __init__(
        self,
        db: Database,
        nats_url: str,
        *,
        durable: str,
        stream: str,
        handlers: Mapping[type[Message], EventHandler],
        batch_handlers: Mapping[type[Message], BatchHandler] | None = None,
        max_deliver: int = 5,
        backoff: Sequence[float] = (1.0, 5.0, 30.0, 120.0),
        ack_wait_seconds: float = 60.0,
        batch_size: int = 32,
        fetch_timeout: float = 1.0,
        filter_subjects: Sequence[str] | None = None,
        batches_in_flight: int = 1,
    ) -> None:
        if max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        if batches_in_flight < 1:
            raise ValueError("batches_in_flight must be at least 1")
        batch_handlers = batch_handlers or {}
        if both := set(handlers) & set(batch_handlers):
            names = sorted(t.DESCRIPTOR.full_name for t in both)
            raise ValueError(f"{names} have both a handler and a batch handler")
        self.db = db
        self.nats_url = nats_url
        self.durable = durable
        self.stream = stream
        self.handlers = {t.DESCRIPTOR.full_name: fn for t, fn in handlers.items()}
        self.batch_handlers = {t.DESCRIPTOR.full_name: fn for t, fn in batch_handlers.items()}
        self.types = EventTypes([*handlers, *batch_handlers])
        self.max_deliver = max_deliver
        self.backoff = tuple(backoff) or (1.0,)
        self.ack_wait_seconds = ack_wait_seconds
        self.batch_size = max(batch_size, 1)
        self.fetch_timeout = fetch_timeout
        self.filter_subjects = list(filter_subjects or [])
        self.batches_in_flight = batches_in_flight
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
            max_ack_pending=max(self.batch_size * (self.batches_in_flight + 3), 256),
        )

    async def run(self) -> None:
        """Fetch and process messages until cancelled; reconnects after NATS/setup failures."""
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except NatsNotFoundError:
                # The stream's owner (or this service's NatsLink) provisions it at start; until
                # then there is nothing to consume. Expected on a cold start: no traceback.
                log.info("consumer %s: stream %s does not exist yet; retrying", self.durable,
                         self.stream)  # fmt: skip
                await asyncio.sleep(self.backoff[0])
            except Exception:
                log.exception("consumer %s stopped; restarting", self.durable)
                await asyncio.sleep(self.backoff[0])

    async def _run_once(self) -> None:
        nc = await nats.connect(self.nats_url, name=f"suuupra-consumer-{self.durable}")
        sub: Any = None
        ahead: asyncio.Future[list[Msg]] | None = None
        handling: set[asyncio.Task[None]] = set()
        try:
            js = nc.jetstream()
            await js.add_consumer(self.stream, self.consumer_config())
            sub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
            while True:
                while len(handling) >= self.batches_in_flight:
                    await asyncio.wait(handling, return_when=asyncio.FIRST_COMPLETED)
                try:
                    if ahead is None:
                        messages = await self._fetch(sub)
                    else:
                        pending, ahead = ahead, None
                        messages = await pending
                except (NatsTimeoutError, TimeoutError):
                    continue
                if len(messages) >= self.batch_size:
                    # A full batch means a backlog: the next one is fetched (decoding the
                    # messages is CPU work) while this one waits on the database. With one
                    # batch in flight, batches are still handled one after the other, in
                    # stream order.
                    ahead = asyncio.ensure_future(self._fetch(sub))
                task = asyncio.create_task(self._process_logged(messages))
                handling.add(task)
                task.add_done_callback(handling.discard)
        finally:
            for task in handling:
                task.cancel()  # rolled back and unacked: redelivered after ack_wait
            for task in list(handling):
                with contextlib.suppress(BaseException):
                    await task
            if ahead is not None:
                # What it fetched and nobody handled is redelivered after ack_wait.
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead
            # Unsubscribe before closing: draining a pull subscription after a short or
            # timed-out fetch hangs (nats-py 2.16).
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await nc.close()

    async def _process_logged(self, messages: Sequence[Msg]) -> None:
        try:
            await self.process_batch(messages)
        except Exception:
            # DB or NATS trouble outside the handlers: what is unacked is redelivered by
            # JetStream after ack_wait.
            log.exception("consumer %s could not process a batch", self.durable)

    async def _fetch(self, sub: Any) -> list[Msg]:
        """Up to batch_size messages: what is pending, without waiting for more; waits up to
        fetch_timeout only while nothing is (see the module docstring)."""
        messages: list[Msg] = await sub.fetch(self.batch_size, timeout=self.fetch_timeout)
        return messages

    async def process(self, msg: Msg) -> Outcome:
        """Handle one message on its own (its own transaction)."""
        [outcome] = await self.process_batch([msg])
        return outcome

    async def process_batch(self, msgs: Sequence[Msg]) -> list[Outcome]:
        """Handle fetched messages: together in one transaction, one by one if that fails."""
        outcomes: dict[int, Outcome] = {}
        items: dict[int, _Item] = {}
        to_ack: list[Msg] = []
        for index, msg in enumerate(msgs):
            admitted = await self._admit(msg)
            if isinstance(admitted, _Item):
                items[index] = admitted
                continue
            outcomes[index] = admitted
            if admitted is Outcome.UNKNOWN_TYPE:
                to_ack.append(msg)
        # Events that failed before would likely sink the batch again: they go on their own.
        together = {
            i: it for i, it in items.items() if it.envelope.event_id not in self._first_failure
        }
        if len(together) > 1:
            handled = await self._try_together(list(together.values()))
            if handled is not None:
                for (index, item), fresh in zip(together.items(), handled, strict=True):
                    outcomes[index] = Outcome.HANDLED if fresh else Outcome.DUPLICATE
                    to_ack.append(item.msg)
                    del items[index]
        await self._ack_all(to_ack)
        for index, item in items.items():
            outcomes[index] = await self._handle_alone(item)
        return [outcomes[i] for i in range(len(msgs))]

    async def _admit(self, msg: Msg) -> _Item | Outcome:
        """Decodes `msg`; what cannot be handled is dead-lettered (or, unknown types, skipped)."""
        stream_sequence, num_delivered = delivery_info(msg)
        envelope = EventEnvelope.from_message(
            msg.subject,
            msg.headers,
            stream_sequence=stream_sequence,
            num_delivered=num_delivered or 1,
        )
        try:
            event = self.types.decode(envelope, msg.data)
        except DecodeError as exc:
            await self._dead_letter(msg, envelope, repr(exc))
            await msg.term()
            return Outcome.DEAD_LETTERED
        if event is None:
            log.info("consumer %s skips unknown event type %s", self.durable, envelope.event_type)
            return Outcome.UNKNOWN_TYPE
        if not envelope.event_id:
            await self._dead_letter(msg, envelope, "event has no id header")
            await msg.term()
            return Outcome.DEAD_LETTERED
        return _Item(msg, envelope, event)

    async def _try_together(self, items: Sequence[_Item]) -> list[bool] | None:
        try:
            return await self._apply(items)
        except Exception:
            log.warning(
                "consumer %s: a batch of %d events failed; handling them one by one",
                self.durable, len(items), exc_info=True,
            )  # fmt: skip
            return None

    async def _handle_alone(self, item: _Item) -> Outcome:
        envelope = item.envelope
        try:
            [fresh] = await self._apply([item])
        except Exception as exc:
            return await self._failed(item.msg, envelope, exc)
        self._first_failure.pop(envelope.event_id, None)
        await self._ack_all([item.msg])
        return Outcome.HANDLED if fresh else Outcome.DUPLICATE

    async def _ack_all(self, msgs: Sequence[Msg]) -> None:
        """Acks without waiting for JetStream's confirmations (the client flushes them at once):
        an ack that gets lost only causes a redelivery, which the inbox absorbs."""
        try:
            for msg in msgs:
                await msg.ack()
        except Exception:
            log.warning("consumer %s: acking %d events failed", self.durable, len(msgs),
                        exc_info=True)  # fmt: skip

    async def _apply(self, items: Sequence[_Item]) -> list[bool]:
        """Runs the handlers of `items` in one transaction; per item, whether it was new (False:
        handled before, or an earlier item of `items` has the same event id)."""
        first = items[0].envelope
        async with self.db.unit_of_work(
            tenant_id=first.tenant_id, inherited_headers=trace_headers(first.headers)
        ) as uow:
            # Sorted: batches in flight at once that share ids lock them in the same order.
            ids = sorted({item.envelope.event_id for item in items})
            result = await uow.session.execute(_CLAIM, {"consumer": self.durable, "ids": ids})
            unclaimed = set(result.scalars())
            fresh: list[bool] = []
            for item in items:
                fresh.append(item.envelope.event_id in unclaimed)
                unclaimed.discard(item.envelope.event_id)
            for run in self._runs([item for item, new in zip(items, fresh, strict=True) if new]):
                await self._dispatch(run, uow)
        return fresh

    def _runs(self, items: Sequence[_Item]) -> Iterator[list[_Item]]:
        """Consecutive events of one batch-handled type and tenant together; others alone."""
        run: list[_Item] = []
        for item in items:
            e = item.envelope
            if run and not (
                e.event_type in self.batch_handlers
                and (e.event_type, e.tenant_id)
                == (run[0].envelope.event_type, run[0].envelope.tenant_id)
            ):
                yield run
                run = []
            run.append(item)
        if run:
            yield run

    async def _dispatch(self, run: Sequence[_Item], uow: UnitOfWork) -> None:
        envelope = run[0].envelope
        uow.tenant_id = envelope.tenant_id
        uow.inherited_headers = trace_headers(envelope.headers)
        trace_token = otel_context.attach(propagate.extract(dict(envelope.headers)))
        envelope_token = set_current_envelope(envelope)
        try:
            batch_handler = self.batch_handlers.get(envelope.event_type)
            if batch_handler is not None:
                await batch_handler([Received(i.envelope, i.event) for i in run], uow)
            else:
                await self.handlers[envelope.event_type](run[0].event, uow)
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
