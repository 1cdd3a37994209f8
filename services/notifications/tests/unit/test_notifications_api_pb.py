"""The live push's message is built field by field (the hot end of the event path): it must be
the message the straightforward construction gives, timestamps included."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from suuupra.notifications.v1 import notification_pb2 as res

from services.notifications.api import notification_pb
from services.notifications.domain import Category
from services.notifications.store import InboxItem


def _ts(value: dt.datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


def _reference(item: InboxItem) -> res.Notification:
    return res.Notification(
        notification_id=item.notification_id,
        user_id=item.user_id,
        kind=item.kind,
        category=res.Category.ValueType(int(item.category)),
        title=item.title,
        body=item.body,
        data=dict(item.data),
        create_time=_ts(item.created_at),
        read_time=_ts(item.read_at) if item.read_at is not None else None,
    )


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(2026, 12, 7, 3, 14, 15, 926535, tzinfo=dt.UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),  # before the epoch
        dt.datetime(1900, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2031, 5, 6, 7, 8, 9, 1, tzinfo=dt.timezone(-dt.timedelta(hours=9, minutes=30))),
        dt.datetime(2026, 1, 1, 0, 0, 0, 500),  # naive: UTC
    ],
)
@pytest.mark.parametrize("read", [False, True])
def test_notification_pb_matches_the_plain_construction(when: dt.datetime, read: bool) -> None:
    item = InboxItem(
        "0b7e6a52-9d0c-4b1f-8a53-2f0c4f3b9e11", "tenant", "user", "notes.shared",
        Category.NOTES, "Title ü", "Body 📝", {"note_id": "n-1", "owner_name": "Asha"}, when,
        read_at=when + dt.timedelta(seconds=1, microseconds=7) if read else None,
        unread_count=4,
    )  # fmt: skip
    built = notification_pb(item)
    assert built == _reference(item)
    assert built.HasField("read_time") is read
    assert built.create_time.ToDatetime(tzinfo=dt.UTC) == (
        when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    )
