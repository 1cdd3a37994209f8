# mypy: disable-error-code="import-untyped"
"""Real NATS: courses' enrollment events build the batch-membership projection that access
decisions use, and submissions leave through the outbox as exactly one SubmissionCreated each."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable

import grpc
import nats
import pytest
from google.protobuf.message import Message
from suuupra.assessment.v1 import assessment_events_pb2 as ev
from suuupra.courses.v1 import courses_events_pb2 as courses
from suuupra.courses.v1 import enrollment_enums_pb2 as enums

from services.assessment import domain, store
from services.assessment.tests.harness import Batch, Harness, start_harness
from suuupra_runtime.events.headers import outbound_headers
from suuupra_runtime.events.streams import StreamSpec, ensure_streams


async def _eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def _publish(nats_url: str, tenant_id: str, events: list[tuple[Message, str]]) -> None:
    """Publish as courses' relay would: subject and headers from the runtime's conventions."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, [StreamSpec.for_domain("courses")])
        for message, event_id in events:
            name = message.DESCRIPTOR.full_name
            headers = outbound_headers(
                event_type=name,
                event_id=event_id,
                tenant_id=tenant_id,
                occurred_at=dt.datetime.now(dt.UTC),
                key=None,
                inherited={},
            )
            headers["Nats-Msg-Id"] = event_id
            await js.publish(name, message.SerializeToString(), headers=headers)
    finally:
        await nc.close()


async def test_enrollment_events_drive_who_may_submit(
    fresh_nats_url: str, postgres_server_url: str
) -> None:
    async with start_harness(postgres_server_url, fresh_nats_url) as h:
        batch = await h.batch(students=0, tas=0)
        student = h.person("student")
        waiting = h.person("student")
        tenant = h.tenant_id

        def created(
            person_id: str, status: enums.EnrollmentStatus.ValueType, eid: str
        ) -> tuple[Message, str]:
            return courses.EnrollmentCreated(
                tenant_id=tenant, enrollment_id=eid, course_id=batch.course_id,
                batch_id=batch.batch_id, user_id=person_id,
                role=enums.ENROLLMENT_ROLE_STUDENT, status=status,
            ), eid  # fmt: skip

        first = str(uuid.uuid4())
        await _publish(
            fresh_nats_url,
            tenant,
            [
                created(student.user_id, enums.ENROLLMENT_STATUS_ACTIVE, first),
                created(student.user_id, enums.ENROLLMENT_STATUS_ACTIVE, first),  # redelivery
                created(waiting.user_id, enums.ENROLLMENT_STATUS_WAITLISTED, str(uuid.uuid4())),
            ],
        )

        async def roles(person_id: str) -> frozenset[domain.BatchRole]:
            async with h.wiring.database.unit_of_work(tenant_id=tenant) as uow:
                return await store.batch_roles(uow.session, tenant, batch.batch_id, person_id)

        async def student_is_member() -> bool:
            return domain.BatchRole.STUDENT in await roles(student.user_id)

        await _eventually(student_is_member)
        assignment = await h.assignment(batch)
        submitted = await h.submit(student, assignment.assignment_id)
        assert submitted.attempt == 1
        assert await roles(waiting.user_id) == frozenset()  # waitlisted: not a member
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.submit(waiting, assignment.assignment_id)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

        promoted = courses.EnrollmentPromoted(
            tenant_id=tenant, course_id=batch.course_id, batch_id=batch.batch_id,
            user_id=waiting.user_id, role=enums.ENROLLMENT_ROLE_STUDENT,
        )  # fmt: skip
        dropped = courses.EnrollmentDropped(
            tenant_id=tenant, course_id=batch.course_id, batch_id=batch.batch_id,
            user_id=student.user_id, role=enums.ENROLLMENT_ROLE_STUDENT,
            status=enums.ENROLLMENT_STATUS_DROPPED,
        )  # fmt: skip
        await _publish(
            fresh_nats_url, tenant, [(promoted, str(uuid.uuid4())), (dropped, str(uuid.uuid4()))]
        )

        async def swapped() -> bool:
            return (
                await roles(waiting.user_id) == frozenset({domain.BatchRole.STUDENT})
                and await roles(student.user_id) == frozenset()
            )

        await _eventually(swapped)
        await h.submit(waiting, assignment.assignment_id)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.submit(student, assignment.assignment_id)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_course_owners_teach_every_batch_of_their_course(
    fresh_nats_url: str, postgres_server_url: str
) -> None:
    async with start_harness(postgres_server_url, fresh_nats_url) as h:
        owner = h.person("instructor")
        stranger = h.person("instructor")
        course_id, batch_id = str(uuid.uuid4()), str(uuid.uuid4())
        await _publish(
            fresh_nats_url,
            h.tenant_id,
            [
                (
                    courses.CourseCreated(
                        tenant_id=h.tenant_id, course_id=course_id, owner_ids=[owner.user_id]
                    ),
                    str(uuid.uuid4()),
                ),
                (
                    courses.BatchOpened(
                        tenant_id=h.tenant_id, course_id=course_id, batch_id=batch_id
                    ),
                    str(uuid.uuid4()),
                ),
            ],
        )
        batch = Batch(batch_id, course_id, owner, [], [])

        async def owner_teaches() -> bool:
            async with h.wiring.database.unit_of_work(tenant_id=h.tenant_id) as uow:
                return await store.owns_batch_course(
                    uow.session, h.tenant_id, batch_id, owner.user_id
                )

        await _eventually(owner_teaches)
        created = await h.assignment(batch)
        assert created.created_by == owner.user_id
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.assignment(Batch(batch_id, course_id, stranger, [], []))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _stream_messages(nats_url: str, subject: str) -> list[Message]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subject, durable=None, stream="ASSESSMENT")
        out: list[Message] = []
        try:
            while True:
                batch = await sub.fetch(100, timeout=0.5)
                for msg in batch:
                    out.append(ev.SubmissionCreated.FromString(msg.data))
                    await msg.ack()
        except (TimeoutError, nats.errors.TimeoutError):
            pass
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def test_each_submission_is_published_once(
    fresh_nats_url: str, postgres_server_url: str
) -> None:
    async with start_harness(postgres_server_url, fresh_nats_url) as h:
        batch: Batch = await h.batch(students=2, tas=0)
        assignment = await h.assignment(batch, max_attempts=2)
        ids = set()
        for student in batch.students:
            for _ in range(2):
                ids.add((await h.submit(student, assignment.assignment_id)).submission_id)

        async def relayed() -> bool:
            return h.wiring.relay.published_total >= 4

        await _eventually(relayed)
        messages = await _stream_messages(fresh_nats_url, "suuupra.assessment.v1.SubmissionCreated")
        got = [m.submission_id for m in messages]  # type: ignore[attr-defined]
        assert sorted(got) == sorted(ids)  # none lost, none twice
        first = messages[0]
        assert first.assignment_id == assignment.assignment_id  # type: ignore[attr-defined]
        assert first.batch_id == batch.batch_id  # type: ignore[attr-defined]


__all__ = ["Harness"]
