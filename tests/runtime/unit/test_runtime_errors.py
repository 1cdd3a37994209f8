# mypy: disable-error-code="import-untyped"
"""Domain errors → gRPC status with google.rpc details, and back again."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2

from suuupra_runtime.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
    Unavailable,
)
from suuupra_runtime.grpc_errors import (
    DETAILS_METADATA_KEY,
    decode_status,
    domain_error_from_status,
    status_for,
)

DOMAIN = "notes.suuupra.local"


def _details(status: grpc.Status) -> status_pb2.Status:
    decoded = decode_status(status.trailing_metadata)
    assert decoded is not None
    return decoded


def _unpack(rich: status_pb2.Status, kind: Any) -> list[Any]:
    found = []
    for detail in rich.details:
        if detail.Is(kind.DESCRIPTOR):
            msg = kind()
            detail.Unpack(msg)
            found.append(msg)
    return found


def test_invalid_argument_carries_bad_request_and_error_info() -> None:
    exc = InvalidArgument(
        [FieldViolation("title", "must not be empty"), FieldViolation("items[0].name", "too long")]
    )
    status = status_for(exc, domain=DOMAIN, request_id="rid-1")
    assert status.code is grpc.StatusCode.INVALID_ARGUMENT
    assert status.trailing_metadata[0][0] == DETAILS_METADATA_KEY
    rich = _details(status)
    assert rich.code == code_pb2.INVALID_ARGUMENT
    assert rich.message == status.details
    (bad,) = _unpack(rich, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("title", "must not be empty"),
        ("items[0].name", "too long"),
    ]
    (info,) = _unpack(rich, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", DOMAIN)
    (req,) = _unpack(rich, error_details_pb2.RequestInfo)
    assert req.request_id == "rid-1"


def test_each_domain_error_maps_to_its_canonical_code() -> None:
    cases = {
        NotFound("x"): grpc.StatusCode.NOT_FOUND,
        Aborted("x"): grpc.StatusCode.ABORTED,
        PermissionDenied("x"): grpc.StatusCode.PERMISSION_DENIED,
        FailedPrecondition("x"): grpc.StatusCode.FAILED_PRECONDITION,
        Unavailable("x", 2.5): grpc.StatusCode.UNAVAILABLE,
        DomainError("x"): grpc.StatusCode.FAILED_PRECONDITION,
    }
    for exc, code in cases.items():
        assert status_for(exc, domain=DOMAIN).code is code, exc


def test_subclass_of_a_domain_error_maps_like_its_base_and_keeps_reason() -> None:
    class CourseNotFound(NotFound):
        default_reason = "COURSE_NOT_FOUND"

    status = status_for(CourseNotFound("course 7 not found"), domain=DOMAIN)
    assert status.code is grpc.StatusCode.NOT_FOUND
    (info,) = _unpack(_details(status), error_details_pb2.ErrorInfo)
    assert info.reason == "COURSE_NOT_FOUND"


def test_precondition_failure_and_retry_info_details() -> None:
    rich = _details(
        status_for(
            FailedPrecondition(
                "archived", [PreconditionViolation("STATE", "courses/7", "archived")]
            ),
            domain=DOMAIN,
        )
    )
    (failure,) = _unpack(rich, error_details_pb2.PreconditionFailure)
    assert (failure.violations[0].type, failure.violations[0].subject) == ("STATE", "courses/7")

    rich = _details(status_for(Unavailable("busy", retry_after_seconds=2.5), domain=DOMAIN))
    (retry,) = _unpack(rich, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToNanoseconds() == 2_500_000_000


def test_unexpected_exception_is_internal_and_leaks_nothing() -> None:
    secret = "SELECT * FROM users WHERE password='hunter2' -- Bearer eyJsecret"
    status = status_for(RuntimeError(secret), domain=DOMAIN, request_id="rid-9")
    assert status.code is grpc.StatusCode.INTERNAL
    assert status.details == "internal error (request id rid-9)"
    raw = status.trailing_metadata[0][1]
    assert b"hunter2" not in raw and b"SELECT" not in raw and b"eyJ" not in raw
    (info,) = _unpack(_details(status), error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("INTERNAL", DOMAIN)


def test_round_trip_rebuilds_the_same_domain_error() -> None:
    original = InvalidArgument([FieldViolation("title", "required")], reason="BAD_TITLE")
    rebuilt = domain_error_from_status(_details(status_for(original, domain=DOMAIN)))
    assert isinstance(rebuilt, InvalidArgument)
    assert rebuilt.violations == (FieldViolation("title", "required"),)
    assert (rebuilt.reason, rebuilt.domain, rebuilt.message) == (
        "BAD_TITLE",
        DOMAIN,
        original.message,
    )

    rebuilt = domain_error_from_status(
        _details(status_for(Unavailable("busy", 0.75), domain=DOMAIN))
    )
    assert isinstance(rebuilt, Unavailable) and rebuilt.retry_after_seconds == 0.75

    rebuilt = domain_error_from_status(
        _details(
            status_for(
                FailedPrecondition("no", [PreconditionViolation("T", "s", "d")]), domain=DOMAIN
            )
        )
    )
    assert isinstance(rebuilt, FailedPrecondition)
    assert rebuilt.violations == (PreconditionViolation("T", "s", "d"),)

    internal = _details(status_for(ValueError("boom"), domain=DOMAIN))
    assert domain_error_from_status(internal) is None


def test_decode_status_ignores_garbage() -> None:
    assert decode_status([(DETAILS_METADATA_KEY, b"\xff\xff\xff")]) is None
    assert decode_status(None) is None
