# mypy: disable-error-code="import-untyped"
"""Mapping between domain exceptions and gRPC statuses with `google.rpc.Status` details.

Server side: `status_for(exc, domain=..., request_id=...)` returns a `grpc.Status` whose trailing
metadata carries `grpc-status-details-bin` (a serialized `google.rpc.Status`). Every status has an
`ErrorInfo(reason, domain, metadata)`; `InvalidArgument` adds `BadRequest.field_violations`,
`FailedPrecondition` adds `PreconditionFailure`, `Unavailable` adds `RetryInfo`. Any other exception
becomes INTERNAL with a generic message naming only the request id (plus `RequestInfo`): no stack
trace, SQL or token ever leaves the process.

Client side: `decode_status(trailing_metadata)` reads the details back and
`domain_error_from_status(status)` rebuilds the matching `DomainError` subclass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from suuupra_runtime.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

DETAILS_METADATA_KEY = "grpc-status-details-bin"

_CODE_BY_CLASS: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Aborted: grpc.StatusCode.ABORTED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}
_CLASS_BY_CODE: dict[int, type[DomainError]] = {
    code.value[0]: cls for cls, code in _CODE_BY_CLASS.items()
}


def code_for(exc: BaseException) -> grpc.StatusCode:
    """Canonical code for an exception (walks the MRO so service subclasses map like their base)."""
    for klass in type(exc).__mro__:
        code = _CODE_BY_CLASS.get(klass)
        if code is not None:
            return code
    # A bare DomainError is a business rule refusing the operation.
    if isinstance(exc, DomainError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rich_status_for(
    exc: BaseException, *, domain: str, request_id: str | None = None
) -> status_pb2.Status:
    """The `google.rpc.Status` (with details) describing `exc` to a client."""
    if not isinstance(exc, DomainError):
        rid = request_id or "unknown"
        return status_pb2.Status(
            code=code_pb2.INTERNAL,
            message=f"internal error (request id {rid})",
            details=[
                _pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=domain)),
                _pack(error_details_pb2.RequestInfo(request_id=rid)),
            ],
        )
    code = code_for(exc)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=exc.reason, domain=exc.domain or domain, metadata=dict(exc.metadata)
            )
        )
    ]
    if isinstance(exc, InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in exc.violations
                    ]
                )
            )
        )
    elif isinstance(exc, FailedPrecondition) and exc.violations:
        details.append(
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=v.type, subject=v.subject, description=v.description
                        )
                        for v in exc.violations
                    ]
                )
            )
        )
    elif isinstance(exc, Unavailable):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(max(exc.retry_after_seconds, 0.0) * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if request_id:
        details.append(_pack(error_details_pb2.RequestInfo(request_id=request_id)))
    return status_pb2.Status(code=code.value[0], message=exc.message, details=details)


def status_for(exc: BaseException, *, domain: str, request_id: str | None = None) -> grpc.Status:
    """`grpc.Status` ready for `context.abort_with_status` / `abort(code, details, metadata)`."""
    status: grpc.Status = rpc_status.to_status(
        rich_status_for(exc, domain=domain, request_id=request_id)
    )
    return status


def decode_status(
    trailing_metadata: Sequence[tuple[str, str | bytes]] | None,
) -> status_pb2.Status | None:
    """The `google.rpc.Status` carried in trailing metadata, if any (malformed → None)."""
    for key, value in trailing_metadata or ():
        if key == DETAILS_METADATA_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # a peer sending garbage must not crash the caller
                return None
    return None


def domain_error_from_status(status: status_pb2.Status) -> DomainError | None:
    """Rebuild the `DomainError` a remote service raised; None for codes with no domain class."""
    cls = _CLASS_BY_CODE.get(status.code)
    if cls is None:
        return None
    info = error_details_pb2.ErrorInfo()
    bad_request = error_details_pb2.BadRequest()
    precondition = error_details_pb2.PreconditionFailure()
    retry = error_details_pb2.RetryInfo()
    has_info = has_retry = False
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            has_info = detail.Unpack(info)
        elif detail.Is(bad_request.DESCRIPTOR):
            detail.Unpack(bad_request)
        elif detail.Is(precondition.DESCRIPTOR):
            detail.Unpack(precondition)
        elif detail.Is(retry.DESCRIPTOR):
            has_retry = detail.Unpack(retry)
    common: dict[str, Any] = {
        "reason": info.reason if has_info and info.reason else None,
        "metadata": dict(info.metadata) if has_info else None,
        "domain": info.domain if has_info and info.domain else None,
    }
    if cls is InvalidArgument:
        return InvalidArgument(
            [FieldViolation(v.field, v.description) for v in bad_request.field_violations],
            status.message,
            **common,
        )
    if cls is FailedPrecondition:
        return FailedPrecondition(
            status.message,
            [
                PreconditionViolation(v.type, v.subject, v.description)
                for v in precondition.violations
            ],
            **common,
        )
    if cls is Unavailable:
        delay = retry.retry_delay.ToNanoseconds() / 1e9 if has_retry else 1.0
        return Unavailable(status.message, delay, **common)
    return cls(status.message, **common)


def domain_error_from_rpc_error(err: grpc.RpcError) -> DomainError | None:
    """The `DomainError` behind a failed call (details if present, else code and message)."""
    code = err.code()
    rich = decode_status(err.trailing_metadata())
    if rich is None or rich.code != code.value[0]:
        rich = status_pb2.Status(code=code.value[0], message=err.details() or "")
    return domain_error_from_status(rich)


__all__ = [
    "DETAILS_METADATA_KEY",
    "code_for",
    "decode_status",
    "domain_error_from_rpc_error",
    "domain_error_from_status",
    "rich_status_for",
    "status_for",
]
