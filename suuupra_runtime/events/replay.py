"""Rebuild a projection by reading a stream from its first message.

Public API::

    count = await replay_stream(
        nats_url, stream="COURSES",
        handlers={CoursePublished: project_course},   # async (event, envelope) -> None
        subjects=None,                                 # optional filter subjects
    )

Creates an ephemeral pull consumer (deliver all, explicit ack, removed afterwards), feeds every
event whose type has a handler through it in stream order, and returns once it has caught up with
the stream as it was when the replay started plus anything that arrived meanwhile
(`num_pending == 0`). Events are de-duplicated by `Suuupra-Event-Id` within a replay, because a
replayed dead letter appears in the stream twice. Unknown types are skipped. The handlers must
write idempotently (upserts), as with any projection; then replaying twice yields the same state.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import nats
from google.protobuf.message import Message
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from suuupra_runtime.events.envelope import EventEnvelope, EventTypes

__all__ = ["ReplayHandler", "replay_stream"]

ReplayHandler = Callable[[Any, EventEnvelope], Awaitable[None]]


async def replay_stream(
    nats_url: str,
    *,
    stream: str,
    handlers: Mapping[type[Message], ReplayHandler],
    subjects: Sequence[str] | None = None,
    batch_size: int = 256,
    fetch_timeout: float = 1.0,
) -> int:
    """Feed the whole stream to `handlers`; returns how many events were handled."""
    types = EventTypes(handlers)
    by_name = {t.DESCRIPTOR.full_name: fn for t, fn in handlers.items()}
    nc = await nats.connect(nats_url, name="suuupra-replay")
    name = f"replay-{uuid.uuid4().hex[:12]}"
    js = nc.jetstream()
    handled = 0
    seen: set[str] = set()
    try:
        info = await js.add_consumer(
            stream,
            ConsumerConfig(
                name=name,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                filter_subjects=list(subjects) if subjects else None,
                inactive_threshold=300.0,  # the server removes it if we vanish
                max_ack_pending=-1,
            ),
        )
        if not info.num_pending:
            return 0
        sub = await js.pull_subscribe_bind(consumer=name, stream=stream)
        try:
            while True:
                try:
                    messages = await sub.fetch(batch_size, timeout=fetch_timeout)
                except (NatsTimeoutError, TimeoutError):
                    if not (await js.consumer_info(stream, name)).num_pending:
                        return handled
                    continue
                for msg in messages:
                    meta = msg.metadata
                    envelope = EventEnvelope.from_message(
                        msg.subject, msg.headers, stream_sequence=meta.sequence.stream
                    )
                    event = types.decode(envelope, msg.data)
                    if event is not None and envelope.event_id not in seen:
                        seen.add(envelope.event_id)
                        await by_name[envelope.event_type](event, envelope)
                        handled += 1
                    await msg.ack()
                if messages and messages[-1].metadata.num_pending == 0:
                    return handled
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    finally:
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, name)
        await nc.close()
