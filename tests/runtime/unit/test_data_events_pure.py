"""Pure parts of the event machinery: stream specs, subjects, envelopes, decoding."""

from __future__ import annotations

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from suuupra_runtime.events.envelope import DecodeError, EventEnvelope, EventTypes
from suuupra_runtime.events.streams import StreamSpec, domain_of_subject, stream_name_for


def test_stream_per_domain() -> None:
    spec = StreamSpec.for_domain("upi-switch")
    assert spec.name == "UPI_SWITCH"
    assert spec.subjects == ("suuupra.upi-switch.v1.>",)
    config = spec.config()
    assert config.duplicate_window == 120.0
    assert config.storage is not None and config.storage.value == "file"
    assert stream_name_for("identity") == "IDENTITY"


def test_duplicate_window_below_two_minutes_is_refused() -> None:
    with pytest.raises(ValueError, match="2 minutes"):
        StreamSpec("X", ("a.>",), duplicate_window_seconds=30)


def test_domain_of_subject() -> None:
    assert domain_of_subject("suuupra.identity.v1.UserCreated") == "identity"
    with pytest.raises(ValueError, match="not a suuupra"):
        domain_of_subject("other.identity.v1.UserCreated")


def test_envelope_reads_headers_with_fallbacks() -> None:
    envelope = EventEnvelope.from_message(
        "suuupra.x.v1.Y",
        {"Nats-Msg-Id": "m1", "Suuupra-Tenant": "", "Suuupra-Occurred-At": "2026-01-01T00:00:00Z"},
        stream_sequence=7,
        num_delivered=2,
    )
    assert envelope.event_id == "m1"  # no Suuupra-Event-Id: the message id
    assert envelope.event_type == "suuupra.x.v1.Y"  # no type header: the subject
    assert envelope.tenant_id is None
    assert (envelope.stream_sequence, envelope.num_delivered) == (7, 2)


def test_event_types_decode_known_skip_unknown_and_reject_garbage() -> None:
    types = EventTypes([StringValue])
    known = EventEnvelope.from_message("s", {"Suuupra-Event-Type": "google.protobuf.StringValue"})
    unknown = EventEnvelope.from_message("s", {"Suuupra-Event-Type": "suuupra.x.v1.Other"})
    payload = StringValue(value="hi").SerializeToString()
    assert types.decode(known, payload) == StringValue(value="hi")
    assert types.decode(unknown, payload) is None
    with pytest.raises(DecodeError):
        types.decode(known, b"\xff\xff\xff")
