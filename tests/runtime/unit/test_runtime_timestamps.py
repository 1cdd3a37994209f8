"""`timestamp_pb` and `set_timestamp` build exactly what `Timestamp.FromDatetime` builds, only
faster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from suuupra_runtime.timestamps import now_pb, optional_timestamp_pb, set_timestamp, timestamp_pb


def reference(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 7, 4, 30, 15, 123456, tzinfo=UTC),
        datetime(2026, 12, 7, 10, 0, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(1969, 7, 20, 20, 17, 40, 999999, tzinfo=UTC),  # before the epoch
        datetime(2026, 1, 1, 0, 0, 0, 500000),  # naive counts as UTC
        datetime(1970, 1, 1, tzinfo=UTC),
    ],
)
def test_same_value_as_from_datetime(value: datetime) -> None:
    assert timestamp_pb(value) == reference(value)
    in_place = Timestamp(seconds=99, nanos=99)  # every field is overwritten
    set_timestamp(in_place, value)
    assert in_place == reference(value)


def test_none_stays_unset_and_now_is_now() -> None:
    assert optional_timestamp_pb(None) is None
    before = datetime.now(UTC)
    stamp = now_pb().ToDatetime(tzinfo=UTC)
    assert before <= stamp <= datetime.now(UTC)
