# mypy: disable-error-code="import-untyped"
"""NoteShared events handled a fetched batch at a time (one transaction, one statement per table)
keep every guarantee of one-at-a-time handling: each event yields at most one delivery per user
and channel however often it arrives, live items carry the right unread counts, and a poison
event is dead-lettered alone while the rest of its batch is stored."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from sqlalchemy import text
from suuupra.notes.v1 import notes_events_pb2 as notes

from services.notifications import store
from services.notifications.domain import Category, Channel, Status
from services.notifications.server import MIGRATIONS, Wiring, build_wiring
from services.notifications.store import InboxItem
from services.notifications.tests.harness import producer_headers, test_config
from suuupra_runtime.events import EventConsumer, Outcome, StreamSpec, ensure_streams
from suuupra_runtime.testing.harness import fresh_service_database

TENANT = "batch-tenant"


@dataclass
class Bench:
    """The service's NOTES consumer, driven by hand: the test fetches, the consumer handles."""

    wiring: Wiring
    consumer: EventConsumer
    nc: Client
    sub: Any

    async def publish(self, note: notes.NoteShared, event_id: str, copy: str = "") -> None:
        headers = producer_headers(note, event_id, TENANT)
        if copy:  # the same event again under another Nats-Msg-Id (past the dedupe window)
            headers["Nats-Msg-Id"] = f"{event_id}-{copy}"
        await self.nc.jetstream().publish(
            note.DESCRIPTOR.full_name, note.SerializeToString(), headers=headers
        )

    async def handle(self, count: int) -> list[Outcome]:
        msgs: list[Any] = []
        while len(msgs) < count:
            msgs += await self.sub.fetch(count - len(msgs), timeout=5)
        return await self.consumer.process_batch(msgs)

    async def count(self, sql: str) -> int:
        row = await self.wiring.database.fetchrow(sql)
        assert row is not None
        return int(row[0])


@pytest.fixture
async def bench(postgres_server_url: str, fresh_nats_url: str) -> AsyncIterator[Bench]:
    async with fresh_service_database(postgres_server_url, "notifications", MIGRATIONS) as url:
        wiring = await build_wiring(url, fresh_nats_url, test_config(), providers={})
        nc = await nats.connect(fresh_nats_url)
        try:
            js = nc.jetstream()
            await ensure_streams(js, [StreamSpec.for_domain("notes")])
            [consumer] = [c for c in wiring.consumers if c.stream == "NOTES"]
            consumer.max_deliver = 1  # a failing event is dead-lettered at once
            await js.add_consumer(consumer.stream, consumer.consumer_config())
            sub = await js.pull_subscribe_bind(durable=consumer.durable, stream=consumer.stream)
            async with wiring.database.unit_of_work(tenant_id=TENANT) as uow:
                for user in ("owner", "u1", "u2", "u3"):
                    await store.upsert_identity(
                        uow.session, TENANT, user, email="", display_name=user.upper(),
                        now=dt.datetime.now(dt.UTC),
                    )  # fmt: skip
            yield Bench(wiring, consumer, nc, sub)
        finally:
            await nc.close()
            for hook in wiring.definition.on_stop:
                await hook()


def _note(title: str, *recipients: str) -> notes.NoteShared:
    return notes.NoteShared(
        tenant_id=TENANT, note_id=f"n-{title}", owner_id="owner", title=title,
        recipient_ids=list(recipients),
    )  # fmt: skip


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def _live(queue: asyncio.Queue[InboxItem], count: int) -> list[InboxItem]:
    return [await asyncio.wait_for(queue.get(), 5) for _ in range(count)]


async def test_a_batch_creates_one_delivery_per_user_and_channel_however_often_events_arrive(
    bench: Bench,
) -> None:
    ids = {name: str(uuid.uuid4()) for name in ("a", "b", "c", "d")}
    await bench.publish(_note("d", "u2"), ids["d"])
    assert await bench.handle(1) == [Outcome.HANDLED]

    with bench.wiring.hub.subscribe(TENANT, "u1") as live:
        await bench.publish(_note("a", "u1", "u2"), ids["a"])
        await bench.publish(_note("a", "u1", "u2"), ids["a"], copy="again")  # in the same batch
        await bench.publish(_note("b", "u1"), ids["b"])
        await bench.publish(_note("d", "u2"), ids["d"], copy="again")  # handled before
        await bench.publish(_note("c", "u3", "owner"), ids["c"])  # the owner is not notified
        outcomes = await bench.handle(5)
        assert outcomes == [
            Outcome.HANDLED, Outcome.DUPLICATE, Outcome.HANDLED, Outcome.DUPLICATE,
            Outcome.HANDLED,
        ]  # fmt: skip
        items = await _live(live, 2)
    assert [(i.data["note_id"], i.title, i.unread_count) for i in items] == [
        ("n-a", "OWNER shared a note", 1),
        ("n-b", "OWNER shared a note", 2),
    ]
    # In-app (sent) and push (no device: suppressed) per recipient of each event, once.
    assert await bench.count("SELECT count(*) FROM deliveries") == 10
    assert await bench.count("SELECT count(*) FROM notifications") == 5
    assert await bench.count("SELECT count(*) FROM inbox") == 4

    # Even with its inbox rows gone (a consumer renamed, a replay), an event stores nothing
    # twice: the deliveries' (tenant, source, user, channel) key holds in the batch statement.
    async with bench.wiring.database.unit_of_work(tenant_id=TENANT) as uow:
        await uow.session.execute(text("DELETE FROM inbox"))
    with bench.wiring.hub.subscribe(TENANT, "u1") as live:
        await bench.publish(_note("a", "u1", "u2"), ids["a"], copy="third")
        await bench.publish(_note("e", "u1"), str(uuid.uuid4()))
        assert await bench.handle(2) == [Outcome.HANDLED, Outcome.HANDLED]
        [item] = await _live(live, 1)
        assert live.empty()
    assert (item.data["note_id"], item.unread_count) == ("n-e", 3)
    assert await bench.count("SELECT count(*) FROM deliveries") == 12
    assert await bench.count("SELECT count(*) FROM notifications") == 6


async def test_a_poison_event_is_dead_lettered_alone_the_rest_of_its_batch_is_stored(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifications = bench.wiring.notifications
    compose = notifications.compose_in_app

    async def fussy(*args: Any, **kwargs: Any) -> Any:
        if kwargs["context"]["note_title"] == "poison":
            raise ValueError("cannot compose the poison note")
        return await compose(*args, **kwargs)

    monkeypatch.setattr(notifications, "compose_in_app", fussy)
    titles = ["first", "poison", "third", "fourth"]
    for title in titles:
        await bench.publish(_note(title, "u1"), str(uuid.uuid4()))
    outcomes = await bench.handle(4)
    assert outcomes == [
        Outcome.HANDLED, Outcome.DEAD_LETTERED, Outcome.HANDLED, Outcome.HANDLED
    ]  # fmt: skip
    stored = await bench.wiring.database.fetch("SELECT title FROM notifications ORDER BY title")
    assert len(stored) == 3
    assert await bench.count("SELECT count(*) FROM deliveries") == 6
    assert await bench.count("SELECT count(*) FROM inbox") == 3
    assert await bench.count("SELECT count(*) FROM dead_letters") == 1
    letter = await bench.wiring.database.fetchrow("SELECT error, attempts FROM dead_letters")
    assert letter is not None and "cannot compose the poison note" in letter["error"]


async def test_the_batch_statement_stores_text_data_and_times_exactly(bench: Bench) -> None:
    """The rows travel to PostgreSQL as one JSON document: text that needs escaping, non-ASCII
    text, nested context and a due time with microseconds in another zone come back unchanged,
    and the live item is what the inbox row holds."""
    title = 'Ünïcode "quoted" \\ back\\slash\nnew line\ttab 📝 </script> {"a": 1}'
    with bench.wiring.hub.subscribe(TENANT, "u1") as live:
        await bench.publish(_note(title, "u1"), str(uuid.uuid4()))
        await bench.publish(_note("plain", "u1"), str(uuid.uuid4()))
        assert await bench.handle(2) == [Outcome.HANDLED, Outcome.HANDLED]
        items = await _live(live, 2)
    assert [i.data["note_title"] for i in items] == [title, "plain"]
    assert [i.unread_count for i in items] == [1, 2]
    db = bench.wiring.database
    for item in items:
        row = await db.fetchrow(
            "SELECT n.title, n.body, n.data, n.created_at, d.context, d.status, d.channel "
            "FROM notifications n JOIN deliveries d USING (delivery_id) "
            "WHERE n.notification_id = $1::uuid",
            item.notification_id,
        )
        assert row is not None
        assert (row["title"], row["body"], row["created_at"]) == (
            item.title, item.body, item.created_at
        )  # fmt: skip
        assert _json(row["data"]) == dict(item.data)
        assert _json(row["context"])["note_title"] == item.data["note_title"]
        assert (row["status"], row["channel"]) == (Status.SENT, Channel.IN_APP)
    assert title in items[0].body

    # A queued delivery (no inbox row) keeps its due time to the microsecond, whatever its zone;
    # a naive one is UTC.
    zone = dt.timezone(dt.timedelta(hours=5, minutes=30))
    due = dt.datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=zone)
    now = dt.datetime.now(dt.UTC)
    rows = [
        store.NewDelivery(
            tenant_id=TENANT,
            user_id="u2",
            kind="notes.shared",
            category=Category.NOTES,
            channel=Channel.EMAIL,
            source=f"test:{n}",
            status=Status.QUEUED,
            address="u2@example.com",
            due_at=when,
            context={"nested": {"k": ["v", 1]}, "n": n},
        )
        for n, when in enumerate([due, dt.datetime(2031, 1, 2, 3, 4, 5, 6)])
    ]
    async with db.unit_of_work(tenant_id=TENANT) as uow:
        stored = await store.insert_deliveries(uow.session, rows, now)
    assert len(stored.created) == 2 and not stored.inbox
    got = await db.fetch(
        "SELECT source, due_at, context, status FROM deliveries WHERE user_id = 'u2' "
        "AND source LIKE 'test:%' ORDER BY source"
    )
    assert [r["due_at"] for r in got] == [
        due, dt.datetime(2031, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    ]  # fmt: skip
    assert [_json(r["context"]) for r in got] == [
        {"nested": {"k": ["v", 1]}, "n": 0}, {"nested": {"k": ["v", 1]}, "n": 1}
    ]  # fmt: skip
    assert {r["status"] for r in got} == {Status.QUEUED}
