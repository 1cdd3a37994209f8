# mypy: disable-error-code="import-untyped"
"""Event mapping (outbound NoteShared, inbound enrollment → membership) and the change feed's
dispatch of notifications to watchers, without I/O."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.courses.v1 import courses_events_pb2 as courses_ev
from suuupra.courses.v1 import enrollment_enums_pb2 as enrollment
from suuupra.notes.v1 import notes_events_pb2 as ev

from services.notes import domain, events
from services.notes.feed import ChangeFeed

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _ts(value: dt.datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


def test_note_shared_maps_every_field() -> None:
    proto = events.to_proto(
        domain.NoteShared(
            tenant_id="t",
            note_id="n",
            share_id="s",
            owner_id="o",
            title="Title",
            permission=domain.Permission.EDIT,
            batch_id="b",
            recipient_ids=("u1", "u2"),
            occurred_at=NOW,
        )
    )
    assert isinstance(proto, ev.NoteShared)
    assert proto.permission == ev.SHARE_PERMISSION_EDIT
    assert list(proto.recipient_ids) == ["u1", "u2"]
    assert (
        proto.tenant_id,
        proto.note_id,
        proto.share_id,
        proto.owner_id,
        proto.title,
        proto.batch_id,
    ) == (
        "t",
        "n",
        "s",
        "o",
        "Title",
        "b",
    )
    assert proto.occurred_at.ToDatetime(tzinfo=dt.UTC) == NOW
    revoked = events.to_proto(domain.NoteShareRevoked("t", "n", "s", "o", NOW))
    assert isinstance(revoked, ev.NoteShareRevoked) and revoked.share_id == "s"


def test_enrollment_events_map_to_membership() -> None:
    created = courses_ev.EnrollmentCreated(
        tenant_id="t",
        batch_id="b",
        user_id="u",
        course_id="c",
        status=enrollment.ENROLLMENT_STATUS_ACTIVE,
        occurred_at=_ts(NOW),
    )
    change = events.membership_change(created)
    assert change == domain.MembershipChange("t", "b", "u", "c", True, NOW)

    waitlisted = courses_ev.EnrollmentCreated(
        tenant_id="t",
        batch_id="b",
        user_id="u",
        status=enrollment.ENROLLMENT_STATUS_WAITLISTED,
        occurred_at=_ts(NOW),
    )
    assert events.membership_change(waitlisted) is None
    promoted = courses_ev.EnrollmentPromoted(
        tenant_id="t", batch_id="b", user_id="u", occurred_at=_ts(NOW)
    )
    assert events.membership_change(promoted).active is True  # type: ignore[union-attr]
    dropped = courses_ev.EnrollmentDropped(
        tenant_id="t", batch_id="b", user_id="u", occurred_at=_ts(NOW)
    )
    assert events.membership_change(dropped).active is False  # type: ignore[union-attr]
    assert events.membership_change(courses_ev.CourseArchived(tenant_id="t")) is None
    # Without a time in the payload the envelope's occurred-at header decides the order.
    undated = courses_ev.EnrollmentPromoted(tenant_id="t", batch_id="b", user_id="u")
    assert events.membership_change(undated, NOW.isoformat()).as_of == NOW  # type: ignore[union-attr]


async def test_feed_rings_the_watchers_of_the_note_or_user_only() -> None:
    feed = ChangeFeed("postgresql+asyncpg://u@127.0.0.1:1/db")
    ada_on_n1 = feed.subscribe("t", "n1", "ada")
    bob_on_n1 = feed.subscribe("t", "n1", "bob")
    bob_on_n2 = feed.subscribe("t", "n2", "bob")
    other_tenant = feed.subscribe("t2", "n1", "ada")

    async def rang(sub: object) -> bool:
        try:
            await asyncio.wait_for(sub.wait(), timeout=0.05)  # type: ignore[attr-defined]
        except TimeoutError:
            return False
        return True

    feed.dispatch(json.dumps({"t": "t", "n": "n1"}))
    assert [await rang(s) for s in (ada_on_n1, bob_on_n1, bob_on_n2, other_tenant)] == [
        True,
        True,
        False,
        False,
    ]
    feed.dispatch(json.dumps({"t": "t", "u": "bob"}))
    assert [await rang(s) for s in (ada_on_n1, bob_on_n1, bob_on_n2, other_tenant)] == [
        False,
        True,
        True,
        False,
    ]
    feed.dispatch("not json")  # ignored, never raises
    assert feed.watcher_count == 4
    for sub in (ada_on_n1, bob_on_n1, bob_on_n2, other_tenant):
        sub.close()
    assert feed.watcher_count == 0
