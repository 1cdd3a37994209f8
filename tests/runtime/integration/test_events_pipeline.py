"""Outbox → relay → JetStream → consumer (inbox, retries, dead letters) → replay, for real."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import select, text

from suuupra_runtime.db import Database, UnitOfWork, migrate, outbox_table
from suuupra_runtime.errors import FailedPrecondition
from suuupra_runtime.events import (
    EventConsumer,
    EventEnvelope,
    OutboxRelay,
    Received,
    StreamSpec,
    current_envelope,
    ensure_streams,
    list_dead_letters,
    replay_dead_letter,
    replay_stream,
)
from suuupra_runtime.events.consumer import EventHandler
from suuupra_runtime.testing.polling import eventually
from tests.runtime.integration.sample_events import (
    DOMAIN,
    STREAM,
    NoteArchived,
    NoteCreated,
    NoteLiked,
)

ROOT = Path(__file__).resolve().parents[3]
SERVICE_MIGRATIONS = Path(__file__).parent / "service_migrations"


class RelayCrashError(Exception):
    pass


@dataclass
class Env:
    db: Database
    database_url: str
    nats_url: str
    nc: Client
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def relay(self, **kwargs: Any) -> OutboxRelay:
        return OutboxRelay(self.db, self.nats_url, **kwargs)

    def consumer(self, handlers: dict[type[Any], EventHandler], **kwargs: Any) -> EventConsumer:
        kwargs.setdefault("durable", "notes-projector")
        kwargs.setdefault("backoff", (0.05,))
        kwargs.setdefault("fetch_timeout", 0.2)
        return EventConsumer(self.db, self.nats_url, stream=STREAM, handlers=handlers, **kwargs)

    def start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self.tasks.append(task)
        return task

    async def scalar(self, sql: str) -> Any:
        async with self.db.engine.connect() as conn:
            return await conn.scalar(text(sql))

    async def stream_messages(self) -> int:
        return (await self.nc.jetstream().stream_info(STREAM)).state.messages

    async def emit(self, *events: Any, tenant: str = "t1") -> list[str]:
        async with self.db.unit_of_work(tenant_id=tenant) as uow:
            return [uow.add_event(event) for event in events]


@pytest.fixture
async def env(fresh_database: str, fresh_nats_url: str) -> AsyncIterator[Env]:
    await migrate(fresh_database, SERVICE_MIGRATIONS)
    db = await Database.connect(fresh_database, pool_size=5)
    nc = await nats.connect(fresh_nats_url)
    await ensure_streams(nc.jetstream(), [StreamSpec.for_domain(DOMAIN)])
    environment = Env(db, fresh_database, fresh_nats_url, nc)
    try:
        yield environment
    finally:
        for task in environment.tasks:
            task.cancel()
        for task in environment.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await nc.close()
        await db.dispose()


async def record_effect(event: Any, uow: UnitOfWork) -> None:
    await uow.session.execute(
        text("INSERT INTO effects (what) VALUES (:what)"), {"what": event.note_id}
    )


async def test_relay_crash_after_publish_then_restart_delivers_once(env: Env) -> None:
    ids = await env.emit(*(NoteCreated(note_id=f"n{i}", title="t") for i in range(3)))

    async def crash(_published: Sequence[str]) -> None:
        raise RelayCrashError  # JetStream has the messages; the rows are not marked yet

    crashing = env.relay(after_publish=crash)
    with pytest.raises(RelayCrashError):
        await crashing.publish_pending()
    await crashing.close()
    assert await env.stream_messages() == 3
    assert await env.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 3

    restarted = env.relay()
    assert await restarted.publish_pending() == 3  # re-published; JetStream drops the copies
    await restarted.close()
    assert await env.stream_messages() == 3
    assert await env.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0

    env.start(env.consumer({NoteCreated: record_effect}).run())
    await eventually(lambda: _equals(env.scalar("SELECT count(*) FROM effects"), 3))
    await asyncio.sleep(0.3)
    assert await env.scalar("SELECT count(*) FROM effects") == 3
    assert await env.scalar("SELECT count(*) FROM inbox") == 3
    async with env.db.engine.connect() as conn:
        inbox = (await conn.execute(text("SELECT event_id FROM inbox"))).scalars().all()
    assert sorted(inbox) == sorted(ids)


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def test_duplicate_delivery_past_the_dedupe_window_is_absorbed_by_the_inbox(env: Env) -> None:
    [event_id] = await env.emit(NoteCreated(note_id="n1"))
    async with env.db.engine.connect() as conn:
        row = (await conn.execute(select(outbox_table))).one()
    js = env.nc.jetstream()
    # Two copies under different Nats-Msg-Ids: JetStream stores both, as it would after its
    # duplicate window expired.
    for copy in ("a", "b"):
        headers = {**row.headers, "Nats-Msg-Id": f"{event_id}-{copy}"}
        await js.publish(row.subject, bytes(row.payload), headers=headers)
    assert await env.stream_messages() == 2
    consumer = env.consumer({NoteCreated: record_effect})
    env.start(consumer.run())
    await eventually(
        lambda: _consumer_idle(env, consumer.durable),
    )
    assert await env.scalar("SELECT count(*) FROM effects") == 1


async def _false() -> bool:
    return False


async def _consumer_idle(env: Env, durable: str) -> bool:
    try:
        info = await env.nc.jetstream().consumer_info(STREAM, durable)
    except Exception:
        return False
    delivered = info.delivered.stream_seq or 0
    return bool(info.num_pending == 0 and info.num_ack_pending == 0 and delivered > 0)


async def test_handler_failing_once_is_redelivered_and_applied_once(env: Env) -> None:
    attempts: list[int] = []

    async def flaky(event: Any, uow: UnitOfWork) -> None:
        await record_effect(event, uow)  # written, then rolled back by the failure below
        attempts.append(current_envelope().num_delivered)
        if len(attempts) == 1:
            raise RuntimeError("transient failure after writing")

    await env.emit(NoteCreated(note_id="n1"))
    relay = env.relay()
    await relay.publish_pending()
    await relay.close()
    env.start(env.consumer({NoteCreated: flaky}).run())
    await eventually(lambda: _equals(env.scalar("SELECT count(*) FROM effects"), 1))
    assert attempts == [1, 2]
    await asyncio.sleep(0.3)
    assert await env.scalar("SELECT count(*) FROM effects") == 1
    assert await env.scalar("SELECT count(*) FROM dead_letters") == 0


def _cli(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    pythonpath = os.pathsep.join([str(ROOT), str(ROOT / "gen"), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "suuupra_runtime.events.dead_letters",
         "--database-url", env.database_url, "--nats-url", env.nats_url, *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": pythonpath},
    )  # fmt: skip


async def test_poison_message_is_dead_lettered_then_replayed_after_a_fix(env: Env) -> None:
    fixed = False
    handled: list[str] = []

    async def indexer(event: Any, uow: UnitOfWork) -> None:
        if not fixed:
            raise ValueError(f"cannot index note {event.note_id}")
        await record_effect(event, uow)
        handled.append(current_envelope().event_id)

    [event_id] = await env.emit(NoteCreated(note_id="poison"))
    env.start(env.relay(idle_poll_seconds=0.1).run())
    env.start(env.consumer({NoteCreated: indexer}, max_deliver=3).run())
    await eventually(lambda: _equals(env.scalar("SELECT count(*) FROM dead_letters"), 1))

    [letter] = await list_dead_letters(env.db, consumer="notes-projector")
    assert letter.event_id == event_id
    assert letter.attempts == 3
    assert "ValueError: cannot index note poison" in letter.error
    assert letter.subject == "suuupra.eventtest.v1.NoteCreated" and letter.stream == STREAM
    assert letter.replayed_at is None
    await asyncio.sleep(0.3)  # terminated: no further deliveries
    assert await env.scalar("SELECT count(*) FROM dead_letters") == 1
    assert await env.scalar("SELECT count(*) FROM effects") == 0

    listed = await asyncio.to_thread(_cli, env, "list", "--pending")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [letter.id]

    fixed = True
    replayed = await asyncio.to_thread(_cli, env, "replay", letter.id)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["replayed_at"] is not None
    await eventually(lambda: _equals(env.scalar("SELECT count(*) FROM effects"), 1))
    assert handled == [event_id]

    with pytest.raises(FailedPrecondition):
        await replay_dead_letter(env.db, env.nc, letter.id)
    again = await asyncio.to_thread(_cli, env, "replay", letter.id)
    assert again.returncode == 1 and "already replayed" in again.stderr
    await asyncio.sleep(0.3)
    assert await env.scalar("SELECT count(*) FROM effects") == 1
    assert handled == [event_id]


async def test_events_of_a_rolled_back_unit_of_work_are_never_published(env: Env) -> None:
    with pytest.raises(RuntimeError):
        async with env.db.unit_of_work(tenant_id="t1") as uow:
            uow.add_event(NoteCreated(note_id="ghost"))
            raise RuntimeError("handler failed")
    [kept] = await env.emit(NoteCreated(note_id="kept"))
    relay = env.relay()
    assert await relay.publish_pending() == 1
    assert await relay.publish_pending() == 0
    await relay.close()
    assert await env.stream_messages() == 1
    msg = await env.nc.jetstream().get_msg(STREAM, seq=1)
    assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == kept


async def test_unknown_event_types_are_acked_and_skipped(env: Env) -> None:
    js = env.nc.jetstream()
    await js.publish(
        "suuupra.eventtest.v1.Mystery",
        b"\x01\x02",
        headers={"Suuupra-Event-Type": "suuupra.eventtest.v1.Mystery", "Suuupra-Event-Id": "m1"},
    )
    await env.emit(NoteCreated(note_id="n1"))
    relay = env.relay()
    await relay.publish_pending()
    await relay.close()
    consumer = env.consumer({NoteCreated: record_effect})
    env.start(consumer.run())
    await eventually(lambda: _consumer_idle(env, consumer.durable))
    info = await js.consumer_info(STREAM, consumer.durable)
    assert info.num_redelivered == 0
    assert await env.scalar("SELECT count(*) FROM effects") == 1
    assert await env.scalar("SELECT count(*) FROM dead_letters") == 0


async def test_headers_and_trace_context_flow_into_follow_up_events(env: Env) -> None:
    tracer = TracerProvider().get_tracer("test")
    seen: list[EventEnvelope] = []

    async def like_on_create(event: Any, uow: UnitOfWork) -> None:
        seen.append(current_envelope())
        uow.add_event(NoteLiked(note_id=event.note_id, likes=1))

    with tracer.start_as_current_span("CreateNote") as span:
        [event_id] = await env.emit(NoteCreated(note_id="n1"), tenant="acme")
        trace_id = format(span.get_span_context().trace_id, "032x")
    # A 60 s poll interval: only the NOTIFY sent by the follow-up's commit can wake the relay.
    env.start(env.relay(idle_poll_seconds=60.0).run())
    env.start(env.consumer({NoteCreated: like_on_create}).run())
    await eventually(
        lambda: (
            _equals(env.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL"), 0)
            if len(seen) == 1
            else _false()
        ),
        within=10,
    )
    assert await env.scalar("SELECT count(*) FROM outbox") == 2
    [envelope] = seen
    assert envelope.event_id == event_id
    assert envelope.event_type == "suuupra.eventtest.v1.NoteCreated"
    assert envelope.tenant_id == "acme"
    assert envelope.occurred_at and envelope.occurred_at.endswith("Z")
    assert envelope.headers["Nats-Msg-Id"] == event_id
    assert envelope.headers["traceparent"].split("-")[1] == trace_id
    follow_up = await _outbox_row(env, "%NoteLiked")
    assert follow_up.tenant_id == "acme"
    assert follow_up.headers["traceparent"].split("-")[1] == trace_id


async def _outbox_row(env: Env, event_type_like: str) -> Any:
    async with env.db.engine.connect() as conn:
        stmt = select(outbox_table).where(outbox_table.c.event_type.like(event_type_like))
        return (await conn.execute(stmt)).one()


async def test_concurrent_relays_publish_each_row_once(env: Env) -> None:
    async with env.db.unit_of_work(tenant_id="t1") as uow:
        for i in range(300):
            uow.add_event(NoteCreated(note_id=f"n{i}"))
    published: list[list[str]] = [[], []]

    def recorder(index: int) -> Callable[[Sequence[str]], Awaitable[None]]:
        async def record(ids: Sequence[str]) -> None:
            published[index].extend(ids)
            await asyncio.sleep(0.01)  # hold the row locks a moment, as a real relay might

        return record

    relays = [env.relay(batch_size=20, after_publish=recorder(i)) for i in range(2)]

    async def drain(relay: OutboxRelay) -> None:
        while await relay.publish_pending():
            pass

    await asyncio.gather(*(drain(r) for r in relays))
    for relay in relays:
        await relay.close()
    assert len(published[0]) + len(published[1]) == 300
    assert len(set(published[0]) | set(published[1])) == 300
    assert published[0] and published[1], "both relays should have taken a share"
    assert await env.stream_messages() == 300


async def test_replay_stream_rebuilds_the_same_projection_twice(env: Env) -> None:
    await env.emit(NoteCreated(note_id="n1", title="Algebra"), NoteCreated(note_id="n2", title="X"))
    await env.emit(NoteLiked(note_id="n1", likes=3), NoteArchived(note_id="n2"))
    await env.nc.jetstream().publish(
        "suuupra.eventtest.v1.Mystery", b"", headers={"Suuupra-Event-Type": "x", "Nats-Msg-Id": "z"}
    )
    relay = env.relay()
    await relay.publish_pending()
    await relay.close()

    async def rebuild() -> dict[str, dict[str, Any]]:
        projection: dict[str, dict[str, Any]] = {}

        async def created(event: Any, envelope: EventEnvelope) -> None:
            projection[event.note_id] = {
                "title": event.title,
                "likes": 0,
                "tenant": envelope.tenant_id,
            }

        async def liked(event: Any, _envelope: EventEnvelope) -> None:
            projection[event.note_id]["likes"] = event.likes

        async def archived(event: Any, _envelope: EventEnvelope) -> None:
            projection.pop(event.note_id)

        count = await replay_stream(
            env.nats_url,
            stream=STREAM,
            handlers={NoteCreated: created, NoteLiked: liked, NoteArchived: archived},
        )
        assert count == 4
        return projection

    first = await rebuild()
    second = await rebuild()
    assert first == second == {"n1": {"title": "Algebra", "likes": 3, "tenant": "t1"}}
    consumers = await env.nc.jetstream().consumers_info(STREAM)
    assert consumers == [], "replay must remove its ephemeral consumer"


async def test_replay_of_an_empty_stream_returns_immediately(env: Env) -> None:
    assert await replay_stream(env.nats_url, stream=STREAM, handlers={NoteCreated: _noop}) == 0


async def _noop(_event: Any, _envelope: EventEnvelope) -> None:
    return None


async def test_relay_purges_only_old_published_rows(env: Env) -> None:
    await env.emit(NoteCreated(note_id="old"), NoteCreated(note_id="recent"))
    relay = env.relay()
    await relay.publish_pending()
    await relay.close()
    await env.emit(NoteCreated(note_id="unpublished"))
    async with env.db.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE outbox SET published_at = now() - interval '8 days' "
                "WHERE seq = (SELECT min(seq) FROM outbox)"
            )
        )
    assert await relay.purge_published() == 1
    assert await env.scalar("SELECT count(*) FROM outbox") == 2
    assert await env.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1


async def test_service_startup_helpers_and_consumer_waiting_for_its_stream(
    postgres_server_url: str, fresh_nats_url: str
) -> None:
    from sqlalchemy.engine import make_url

    from suuupra_runtime.db import open_service_database
    from suuupra_runtime.events import provision_streams
    from suuupra_runtime.testing.postgres import drop_database, execute_autocommit

    name = f"svc_startup_{uuid.uuid4().hex[:8]}"
    db = await open_service_database(name, SERVICE_MIGRATIONS, server_url=postgres_server_url)
    try:
        assert make_url(db.url).username == name
        consumer = EventConsumer(
            db, fresh_nats_url, durable="early", stream=STREAM,
            handlers={NoteCreated: record_effect}, backoff=(0.1,), fetch_timeout=0.2,
        )  # fmt: skip
        task = asyncio.create_task(consumer.run())  # the stream does not exist yet
        try:
            await asyncio.sleep(0.3)
            assert not task.done(), "a missing stream must not kill the consumer"
            await provision_streams(fresh_nats_url, [StreamSpec.for_domain(DOMAIN)])
            async with db.unit_of_work(tenant_id="t1") as uow:
                uow.add_event(NoteCreated(note_id="n1"))
            relay = OutboxRelay(db, fresh_nats_url)
            assert await relay.publish_pending() == 1
            await relay.close()

            async def handled() -> bool:
                async with db.engine.connect() as conn:
                    return bool(await conn.scalar(text("SELECT count(*) FROM effects")) == 1)

            await eventually(handled)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await db.dispose()
        await drop_database(
            make_url(postgres_server_url).set(database=name).render_as_string(False)
        )
        await execute_autocommit(postgres_server_url, f'DROP ROLE IF EXISTS "{name}"')


# --- batches: one transaction per fetched batch, one by one when that fails ----------------------


async def _published(env: Env, *batches: tuple[str, Sequence[Any]]) -> list[str]:
    """Emits each (tenant, events) in its own unit of work, in order, and relays them."""
    ids: list[str] = []
    for tenant, events in batches:
        ids += await env.emit(*events, tenant=tenant)
    relay = env.relay()
    await relay.publish_pending()
    await relay.close()
    return ids


async def test_a_fetched_batch_is_handled_in_one_transaction_each_event_once(env: Env) -> None:
    units: list[int] = []

    async def handler(event: Any, uow: UnitOfWork) -> None:
        units.append(id(uow))
        await record_effect(event, uow)

    [first, *_] = await _published(env, ("t1", [NoteCreated(note_id=f"n{i}") for i in range(12)]))
    # A copy of the first event under another Nats-Msg-Id lands in the same batch.
    async with env.db.engine.connect() as conn:
        row = (await conn.execute(select(outbox_table).where(outbox_table.c.id == first))).one()
    await env.nc.jetstream().publish(
        row.subject, bytes(row.payload), headers={**row.headers, "Nats-Msg-Id": f"{first}-copy"}
    )
    consumer = env.consumer({NoteCreated: handler}, batch_size=32)
    env.start(consumer.run())
    await eventually(lambda: _consumer_idle(env, consumer.durable))
    assert await env.scalar("SELECT count(*) FROM effects") == 12
    assert await env.scalar("SELECT count(*) FROM inbox") == 12
    assert len(units) == 12
    assert len(set(units)) <= 2, "the 13 messages were not handled in one transaction"
    info = await env.nc.jetstream().consumer_info(STREAM, consumer.durable)
    assert info.num_redelivered == 0


async def test_a_poison_event_sinks_only_itself_the_rest_of_its_batch_commits(env: Env) -> None:
    calls: list[str] = []

    async def indexer(event: Any, uow: UnitOfWork) -> None:
        calls.append(event.note_id)
        await record_effect(event, uow)
        if event.note_id == "poison":
            raise ValueError("cannot index the poison note")

    notes = [NoteCreated(note_id=f"n{i}") for i in range(4)]
    notes.insert(2, NoteCreated(note_id="poison"))
    ids = await _published(env, ("t1", notes))
    consumer = env.consumer({NoteCreated: indexer}, max_deliver=2, batch_size=32)
    env.start(consumer.run())
    await eventually(lambda: _equals(env.scalar("SELECT count(*) FROM dead_letters"), 1))
    await eventually(lambda: _consumer_idle(env, consumer.durable))
    [letter] = await list_dead_letters(env.db, consumer=consumer.durable)
    assert letter.event_id == ids[2] and letter.attempts == 2
    async with env.db.engine.connect() as conn:
        effects = (await conn.execute(text("SELECT what FROM effects"))).scalars().all()
        inbox = (await conn.execute(text("SELECT event_id FROM inbox"))).scalars().all()
    assert sorted(effects) == ["n0", "n1", "n2", "n3"]
    assert sorted(inbox) == sorted(ids[:2] + ids[3:])
    # The batch ran once, then each event alone; the redelivered poison event alone again.
    assert calls.count("poison") == 3
    assert calls.count("n0") == 2


async def test_batch_handlers_get_consecutive_events_of_one_type_and_tenant(env: Env) -> None:
    calls: list[tuple[str | None, list[str]]] = []

    async def likes(items: Sequence[Received], uow: UnitOfWork) -> None:
        assert current_envelope() is items[0].envelope
        calls.append((uow.tenant_id, [item.event.note_id for item in items]))
        for item in items:
            await record_effect(item.event, uow)

    async def archive_on_create(event: Any, uow: UnitOfWork) -> None:
        uow.add_event(NoteArchived(note_id=event.note_id))

    liked = [NoteLiked(note_id=f"l{i}", likes=i) for i in range(6)]
    await _published(
        env,
        ("a", liked[:3]),
        ("b", liked[3:5]),
        ("c", [NoteCreated(note_id="c1")]),
        ("a", liked[5:]),
    )
    consumer = env.consumer(
        {NoteCreated: archive_on_create}, batch_handlers={NoteLiked: likes}, batch_size=32
    )
    env.start(consumer.run())
    await eventually(lambda: _consumer_idle(env, consumer.durable))
    assert calls == [("a", ["l0", "l1", "l2"]), ("b", ["l3", "l4"]), ("a", ["l5"])]
    assert await env.scalar("SELECT count(*) FROM effects") == 6
    # The follow-up carries its own event's tenant, not the batch's first.
    archived = await _outbox_row(env, "%NoteArchived")
    assert archived.tenant_id == "c"
    with pytest.raises(ValueError, match="both a handler and a batch handler"):
        env.consumer({NoteLiked: archive_on_create}, batch_handlers={NoteLiked: likes})


async def test_a_lone_event_does_not_wait_for_a_full_batch_or_the_fetch_timeout(
    env: Env,
) -> None:
    handled_at: list[float] = []

    async def handler(event: Any, uow: UnitOfWork) -> None:
        handled_at.append(asyncio.get_running_loop().time())

    consumer = env.consumer({NoteCreated: handler}, batch_size=32, fetch_timeout=5.0)
    env.start(consumer.run())
    # Let the consumer bind and park a pull request on the server.
    await eventually(lambda: _consumer_exists(env, consumer.durable))
    await asyncio.sleep(0.3)
    published_at = asyncio.get_running_loop().time()
    await _published(env, ("t1", [NoteCreated(note_id="lone")]))
    await eventually(lambda: _truthy(handled_at), within=10)
    assert handled_at[0] - published_at < 1.0


async def _consumer_exists(env: Env, durable: str) -> bool:
    try:
        await env.nc.jetstream().consumer_info(STREAM, durable)
    except Exception:
        return False
    return True


async def _truthy(value: Sequence[Any]) -> bool:
    return bool(value)


async def test_a_backlog_is_fetched_ahead_but_handled_one_batch_at_a_time_in_order(
    env: Env,
) -> None:
    """Full batches make the consumer fetch the next one while handling the current one: the
    batches still run one after the other, in stream order, each event once."""
    seen: list[str] = []
    running = 0
    most = 0

    async def handler(event: Any, uow: UnitOfWork) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.002)  # the next fetch completes meanwhile
        seen.append(event.note_id)
        await record_effect(event, uow)
        running -= 1

    notes = [f"n{i:03d}" for i in range(60)]
    await _published(env, ("t1", [NoteCreated(note_id=n) for n in notes]))
    consumer = env.consumer({NoteCreated: handler}, batch_size=8)
    env.start(consumer.run())
    await eventually(lambda: _consumer_idle(env, consumer.durable))
    assert seen == notes
    assert most == 1
    assert await env.scalar("SELECT count(*) FROM effects") == 60
    assert await env.scalar("SELECT count(DISTINCT what) FROM effects") == 60
    info = await env.nc.jetstream().consumer_info(STREAM, consumer.durable)
    assert info.num_redelivered == 0


async def test_stopping_with_a_batch_fetched_ahead_loses_nothing(env: Env) -> None:
    """Cancelled while one batch is being handled and the next is already fetched: both are
    redelivered to the next consumer and applied once."""
    release = asyncio.Event()
    entered = asyncio.Event()

    async def stuck(event: Any, uow: UnitOfWork) -> None:
        entered.set()
        await release.wait()

    notes = [f"n{i:02d}" for i in range(20)]
    await _published(env, ("t1", [NoteCreated(note_id=n) for n in notes]))
    first = env.consumer({NoteCreated: stuck}, batch_size=8, ack_wait_seconds=1.0)
    task = env.start(first.run())
    await asyncio.wait_for(entered.wait(), 15)
    await asyncio.sleep(0.3)  # the batch fetched ahead has arrived
    info = await env.nc.jetstream().consumer_info(STREAM, first.durable)
    assert info.num_ack_pending == 16, "the next batch was not fetched ahead"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await env.scalar("SELECT count(*) FROM effects") == 0

    second = env.consumer({NoteCreated: record_effect}, batch_size=8, ack_wait_seconds=1.0)
    env.start(second.run())

    async def all_applied() -> bool:
        return bool(await env.scalar("SELECT count(*) FROM effects") == 20)

    await eventually(all_applied)
    await eventually(lambda: _consumer_idle(env, second.durable))
    assert await env.scalar("SELECT count(DISTINCT what) FROM effects") == 20
    assert await env.scalar("SELECT count(*) FROM effects") == 20


async def test_relay_wakes_on_notify_and_after_its_listen_connection_is_killed(env: Env) -> None:
    # Polling is set far beyond the test's patience, so only NOTIFY (and the wake after a
    # reconnect) can get these rows published in time.
    relay = env.relay(idle_poll_seconds=120)
    env.start(relay.run())

    async def listening() -> bool:
        return relay.listener is not None and relay.listener.server_pid is not None

    async def published() -> bool:
        return bool(await env.scalar("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"))

    await eventually(listening, within=10)
    await env.emit(NoteCreated(note_id="woken", title="t"))
    await eventually(published, within=10)

    assert relay.listener is not None
    first_pid = relay.listener.server_pid
    await env.scalar(f"SELECT pg_terminate_backend({first_pid})")
    await eventually(
        lambda: _equals(_pid_changed(relay, first_pid), True), within=15
    )  # reconnected (the probe or the termination listener noticed)
    await env.emit(NoteCreated(note_id="after-reconnect", title="t"))
    await eventually(published, within=10)
    assert await env.stream_messages() == 2


async def _pid_changed(relay: OutboxRelay, old: int | None) -> bool:
    pid = relay.listener.server_pid if relay.listener is not None else None
    return pid is not None and pid != old


async def test_with_two_batches_in_flight_one_commits_while_another_waits(env: Env) -> None:
    """`batches_in_flight=2`: the batch behind a stuck one is handled and committed meanwhile;
    once the stuck one goes on, every event is applied once."""
    release = asyncio.Event()

    async def handler(event: Any, uow: UnitOfWork) -> None:
        if event.note_id == "n0":
            await release.wait()
        await record_effect(event, uow)

    await _published(env, ("t1", [NoteCreated(note_id=f"n{i}") for i in range(8)]))
    consumer = env.consumer({NoteCreated: handler}, batch_size=4, batches_in_flight=2)
    env.start(consumer.run())

    async def effects(count: int) -> bool:
        return bool(await env.scalar("SELECT count(*) FROM effects") == count)

    # n4..n7 commit while the batch of n0..n3 waits (one batch in flight would wait with it).
    await eventually(lambda: effects(4))
    assert await env.scalar("SELECT string_agg(what, ',' ORDER BY what) FROM effects") == (
        "n4,n5,n6,n7"
    )
    release.set()
    await eventually(lambda: effects(8))
    await eventually(lambda: _consumer_idle(env, consumer.durable))
    assert await env.scalar("SELECT count(DISTINCT what) FROM effects") == 8
    info = await env.nc.jetstream().consumer_info(STREAM, consumer.durable)
    assert info.num_redelivered == 0
    with pytest.raises(ValueError, match="batches_in_flight"):
        env.consumer({NoteCreated: handler}, batches_in_flight=0)


async def test_a_consumer_started_before_its_stream_waits_quietly_then_consumes(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    # On a cold start a consumer may run before whoever provisions its stream: that is not an
    # error (no ERROR record, no traceback), and it consumes as soon as the stream exists.
    await env.nc.jetstream().delete_stream(STREAM)
    caplog.set_level(logging.INFO, logger="suuupra_runtime.events.consumer")
    env.start(env.consumer({NoteCreated: record_effect}).run())

    async def waiting() -> bool:
        return any("does not exist yet" in r.message for r in caplog.records)

    await eventually(waiting)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    await ensure_streams(env.nc.jetstream(), [StreamSpec.for_domain(DOMAIN)])
    await env.emit(NoteCreated(note_id="late", title="t"))
    relay = env.relay()
    assert await relay.publish_pending() == 1
    await relay.close()
    await eventually(lambda: _equals(env.scalar("SELECT count(*) FROM effects"), 1))
