"""protovalidate rules → InvalidArgument with BadRequest-style field paths."""

from __future__ import annotations

from typing import Any

import pytest
from protobuf import Oneof as _Oneof
from protovalidate._gen.buf.validate.validate_pb import FieldPathElement
from suuupra.testing.v1 import echo_service_pb2 as pb

from suuupra_runtime.errors import FieldViolation, InvalidArgument
from suuupra_runtime.validation import field_path, validate, violations_of

Oneof: Any = _Oneof  # the stub's Literal-typed oneof cases are too strict for test data


def test_valid_message_passes() -> None:
    validate(pb.CreateNoteRequest(request_id="6f1c1e4e-3b8a-4b5e-9d59-3f3c3b1b2a10", title="ok"))


def test_every_bad_field_is_reported_with_its_name() -> None:
    with pytest.raises(InvalidArgument) as err:
        validate(pb.CreateNoteRequest(request_id="not-a-uuid", title=""))
    fields = {v.field for v in err.value.violations}
    assert fields == {"request_id", "title"}
    assert all(v.description for v in err.value.violations)


def test_numeric_bounds() -> None:
    assert violations_of(pb.StreamEchoRequest(message="x", count=5)) == []
    (violation,) = violations_of(pb.StreamEchoRequest(message="x", count=0))
    assert violation == FieldViolation("count", violation.description)
    assert "1" in violation.description


def test_field_path_rendering_for_nested_repeated_and_map_fields() -> None:
    path = [
        FieldPathElement(field_name="items", subscript=Oneof("index", 0)),
        FieldPathElement(field_name="name"),
    ]
    assert field_path(path) == "items[0].name"
    assert (
        field_path([FieldPathElement(field_name="labels", subscript=Oneof("string_key", 'e"v'))])
        == 'labels["e\\"v"]'
    )
    assert field_path(
        [FieldPathElement(field_name="flags", subscript=Oneof("bool_key", True))]
    ) == ("flags[true]")


def test_has_rules_finds_rules_on_fields_oneofs_and_nested_messages() -> None:
    from google.protobuf import struct_pb2
    from suuupra.assessment.v1 import assessment_resources_pb2 as assessment
    from suuupra.identity.v1 import identity_service_pb2 as identity

    from suuupra_runtime.validation import has_rules

    assert has_rules(pb.CreateNoteRequest.DESCRIPTOR)  # field rules
    assert has_rules(identity.CompleteMfaLoginRequest.DESCRIPTOR)  # a required oneof
    assert has_rules(assessment.Assignment.DESCRIPTOR)  # only inside a nested message
    assert not has_rules(identity.GetCurrentUserRequest.DESCRIPTOR)  # nothing to check
    assert not has_rules(struct_pb2.Struct.DESCRIPTOR)  # recursive type without rules ends


def test_a_message_without_rules_cannot_fail_validation() -> None:
    # What lets the interceptor skip protovalidate for such request types.
    from suuupra.identity.v1 import identity_service_pb2 as identity

    assert violations_of(identity.GetCurrentUserRequest()) == []
