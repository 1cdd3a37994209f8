# mypy: disable-error-code="import-untyped"
"""AssignmentDueSoon: one reminder per assignment, naming only students who still owe work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from suuupra.assessment.v1 import assessment_events_pb2 as ev
from suuupra.assessment.v1 import assessment_service_pb2 as pb

from services.assessment.tests.harness import Harness, now, start_harness
from suuupra_runtime.db import outbox_table
from suuupra_runtime.testing.rpc_errors import rid


@pytest.fixture(scope="module")
async def h(postgres_server_url: str, nats_url: str) -> AsyncIterator[Harness]:
    async with start_harness(postgres_server_url, nats_url) as harness:
        yield harness


async def _reminders(h: Harness) -> list[ev.AssignmentDueSoon]:
    async with h.wiring.database.unit_of_work(tenant_id=None) as uow:
        rows = await uow.session.execute(
            select(outbox_table.c.payload, outbox_table.c.headers).where(
                outbox_table.c.event_type == "suuupra.assessment.v1.AssignmentDueSoon"
            )
        )
        out = []
        for row in rows:
            event = ev.AssignmentDueSoon.FromString(bytes(row.payload))
            assert row.headers["Suuupra-Tenant"] == event.tenant_id
            out.append(event)
        return out


async def test_one_reminder_for_students_who_have_not_submitted(h: Harness) -> None:
    batch = await h.batch(students=3, tas=0)
    done, exempt, owing = batch.students
    t = now()
    soon = await h.assignment(batch, due_time=t + timedelta(hours=2))
    later = await h.assignment(
        batch, due_time=t + timedelta(days=3), close_time=t + timedelta(days=4)
    )
    draft = await h.assignment(batch, publish=False, due_time=t + timedelta(hours=1))
    await h.submit(done, soon.assignment_id)
    await h.assignments.SetStudentException(
        pb.SetStudentExceptionRequest(
            request_id=rid(), assignment_id=soon.assignment_id, student_id=exempt.user_id,
            exempt=True,
        ),
        metadata=batch.instructor.md,
    )  # fmt: skip

    await h.wiring.assessment.announce_due_soon()
    await h.wiring.assessment.announce_due_soon()  # a second sweep announces nothing again

    mine = [r for r in await _reminders(h) if r.batch_id == batch.batch_id]
    assert [r.assignment_id for r in mine] == [soon.assignment_id]
    assert list(mine[0].student_ids) == [owing.user_id]
    assert mine[0].due_time.ToDatetime().timestamp() == pytest.approx(
        soon.due_time.ToDatetime().timestamp()
    )
    assert later.assignment_id not in {r.assignment_id for r in mine}
    assert draft.assignment_id not in {r.assignment_id for r in mine}
