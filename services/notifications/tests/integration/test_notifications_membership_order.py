"""The cohort projection keeps the latest enrollment event per member: a retried older event
(its first attempt failed, the drop behind it was applied meanwhile) cannot bring a member back."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest
from suuupra.courses.v1 import enrollment_enums_pb2 as enrollment

from services.notifications import store
from services.notifications.tests.harness import Harness, notifications_harness


@pytest.fixture
async def h(postgres_server_url: str, fresh_nats_url: str) -> AsyncIterator[Harness]:
    async with notifications_harness(postgres_server_url, fresh_nats_url) as harness:
        yield harness


async def _set(h: Harness, user: str, *, active: bool, seq: int) -> bool:
    async with h.wiring.database.unit_of_work(tenant_id=h.tenant_id) as uow:
        return await store.set_membership(
            uow.session,
            h.tenant_id,
            "batch-1",
            user,
            course_id="c-1",
            role=enrollment.ENROLLMENT_ROLE_STUDENT,
            active=active,
            now=dt.datetime.now(dt.UTC),
            source_seq=seq,
        )


async def _active(h: Harness, user: str) -> int:
    return await h.count(
        "SELECT count(*) FROM memberships WHERE tenant_id = $1 AND user_id = $2 AND active",
        h.tenant_id,
        user,
    )


async def test_an_older_enrollment_event_never_undoes_a_newer_one(h: Harness) -> None:
    user = str(uuid.uuid4())
    assert await _set(h, user, active=False, seq=6)  # the drop, applied first
    assert not await _set(h, user, active=True, seq=5)  # the retried enrollment behind it
    assert await _active(h, user) == 0
    assert await _set(h, user, active=False, seq=6)  # the drop again: harmless
    assert await _active(h, user) == 0
    assert await _set(h, user, active=True, seq=9)  # a later re-enrollment applies
    assert await _active(h, user) == 1
