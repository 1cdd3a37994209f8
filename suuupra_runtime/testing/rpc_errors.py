# mypy: disable-error-code="import-untyped"
"""Read the rich error details of a failed call in tests: `ErrorInfo.reason`, field violations."""

from __future__ import annotations

import uuid

import grpc
from google.rpc import error_details_pb2

from suuupra_runtime.grpc_errors import decode_status

__all__ = ["error_reason", "field_violations", "rid"]


def error_reason(err: grpc.aio.AioRpcError) -> str:
    status = decode_status(err.trailing_metadata())
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def field_violations(err: grpc.aio.AioRpcError) -> list[str]:
    """The `field` of every `BadRequest.FieldViolation` in the error's status details."""
    status = decode_status(err.trailing_metadata())
    out: list[str] = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend(v.field for v in bad.field_violations)
    return out


def rid() -> str:
    """A fresh client-minted request id."""
    return str(uuid.uuid4())
