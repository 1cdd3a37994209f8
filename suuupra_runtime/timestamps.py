"""`google.protobuf.Timestamp` from `datetime`, for every service's mapping code.

`Timestamp.FromDatetime` runs several Python-level conversions (calendar.timegm and friends)
and was a visible share of read RPCs that return a few timestamps; these build the same value
from integer fields. Naive datetimes count as UTC, as in `FromDatetime`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_pb(value: datetime) -> Timestamp:
    since = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
    return Timestamp(seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000)


def set_timestamp(out: Timestamp, value: datetime) -> None:
    """`value` into a message's Timestamp field in place: on hot paths this saves building a
    separate Timestamp and copying it into the parent."""
    since = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
    out.seconds = since.days * 86400 + since.seconds
    out.nanos = since.microseconds * 1000


def optional_timestamp_pb(value: datetime | None) -> Timestamp | None:
    """None stays None, so an unset time leaves the message field unset."""
    return None if value is None else timestamp_pb(value)


def now_pb() -> Timestamp:
    return timestamp_pb(datetime.now(UTC))


__all__ = ["now_pb", "optional_timestamp_pb", "set_timestamp", "timestamp_pb"]
