# mypy: disable-error-code="import-untyped"
"""Assessment's AssignmentUpdated / AssignmentDeleted reach the batch's students: a moved due
date with the old and new date, other changes in the inbox only, a withdrawal likewise; staff and
other batches hear nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.assessment.v1 import assessment_events_pb2 as assessment
from suuupra.courses.v1 import enrollment_enums_pb2 as enrollment
from suuupra.notifications.v1 import notification_pb2 as res
from suuupra.notifications.v1 import notifications_service_pb2 as pb

from services.notifications import store
from services.notifications.tests.harness import Harness, notifications_harness

BATCH = "batch-7"


@pytest.fixture
async def h(postgres_server_url: str, fresh_nats_url: str) -> AsyncIterator[Harness]:
    async with notifications_harness(postgres_server_url, fresh_nats_url) as harness:
        yield harness


async def _member(h: Harness, batch: str, role: int) -> str:
    user = await h.user(f"{uuid.uuid4().hex[:8]}@example.test", "Ada")
    async with h.wiring.database.unit_of_work(tenant_id=h.tenant_id) as uow:
        await store.set_membership(
            uow.session, h.tenant_id, batch, user, course_id="c-1", role=role, active=True,
            now=dt.datetime.now(dt.UTC), source_seq=1,
        )  # fmt: skip
    return user


def _at(day: int) -> Timestamp:
    return Timestamp(seconds=int(dt.datetime(2026, 12, day, 17, tzinfo=dt.UTC).timestamp()))


async def _kinds(h: Harness, user: str, count: int) -> list[res.Notification]:
    async def check() -> list[res.Notification] | None:
        reply = await h.inbox.ListNotifications(
            pb.ListNotificationsRequest(), metadata=h.auth(user)
        )
        return list(reply.notifications) if len(reply.notifications) >= count else None

    return await h.until(check, what=f"{count} notification(s)")


async def test_students_hear_of_a_moved_due_date_other_changes_and_a_withdrawal(
    h: Harness,
) -> None:
    student = await _member(h, BATCH, enrollment.ENROLLMENT_ROLE_STUDENT)
    instructor = await _member(h, BATCH, enrollment.ENROLLMENT_ROLE_INSTRUCTOR)
    elsewhere = await _member(h, "batch-other", enrollment.ENROLLMENT_ROLE_STUDENT)
    common: dict[str, Any] = {"tenant_id": h.tenant_id, "course_id": "c-1", "batch_id": BATCH}

    await h.publish(
        assessment.AssignmentUpdated(
            **common, assignment_id="a-1", title="Problem set 1", changed_fields=["due_time"],
            due_time=_at(3), previous_due_time=_at(1),
        )
    )  # fmt: skip
    [moved] = await _kinds(h, student, 1)
    assert moved.kind == "assessment.due_changed"
    assert "2026-12-03" in moved.body and "2026-12-01" in moved.body

    await h.publish(
        assessment.AssignmentUpdated(
            **common, assignment_id="a-1", title="Problem set 1",
            changed_fields=["instructions", "attachment_file_ids"], due_time=_at(3),
        )
    )  # fmt: skip
    await h.publish(assessment.AssignmentDeleted(**common, assignment_id="a-2", title="Quiz 2"))
    newest = await _kinds(h, student, 3)
    kinds = {n.kind: n for n in newest}
    assert "instructions" in kinds["assessment.assignment_updated"].body
    assert "Quiz 2" in kinds["assessment.assignment_removed"].title

    # A moved due date is also mailed (the category's default channels); the rest is inbox-only.
    deliveries = await h.count(
        "SELECT count(*) FROM deliveries WHERE tenant_id = $1 AND user_id = $2 AND channel = $3",
        h.tenant_id,
        student,
        int(res.CHANNEL_EMAIL),
    )
    assert deliveries == 1
    for bystander in (instructor, elsewhere):
        reply = await h.inbox.ListNotifications(
            pb.ListNotificationsRequest(), metadata=h.auth(bystander)
        )
        assert list(reply.notifications) == []
