"""Domain exceptions every service raises; pure Python, no grpc import (DESIGN.md §4 "Errors").

Handlers raise these; the runtime's interceptor turns each into a canonical gRPC status with
`google.rpc.Status` details (see `grpc_errors.py`), and `clients.raise_from_rpc_error` turns such a
status back into the same class on the calling side.

    raise NotFound("user 42 not found", reason="USER_NOT_FOUND")
    raise InvalidArgument([FieldViolation("title", "must not be empty")])
    raise FailedPrecondition("course is archived",
                             violations=[PreconditionViolation("STATE", "courses/7", "archived")])
    raise Unavailable("ledger is catching up", retry_after_seconds=2.0)

Every error has a `reason` (UPPER_SNAKE, sent as `ErrorInfo.reason`), a human `message` (sent as
the status message, so never put secrets in it), optional `metadata` (`ErrorInfo.metadata`) and an
optional `domain` (set when the error came from another service; otherwise the serving service's
domain is used).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: `field` is a path such as `title` or `items[0].name`."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One failed precondition (`google.rpc.PreconditionFailure.Violation`)."""

    type: str
    subject: str
    description: str


class DomainError(Exception):
    """Base class: an expected, client-visible failure with a stable machine-readable reason."""

    default_reason = "DOMAIN_ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        domain: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: Mapping[str, str] = dict(metadata or {})
        self.domain = domain

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class InvalidArgument(DomainError):  # noqa: N818 (names fixed by the interface)
    """Bad input; carries one violation per offending field."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: Sequence[FieldViolation],
        message: str | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        domain: str | None = None,
    ) -> None:
        self.violations: tuple[FieldViolation, ...] = tuple(violations)
        if message is None:
            message = "invalid request: " + "; ".join(
                f"{v.field}: {v.description}" for v in self.violations
            )
        super().__init__(message, reason=reason, metadata=metadata, domain=domain)


class NotFound(DomainError):  # noqa: N818 (names fixed by the interface)
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):  # noqa: N818 (names fixed by the interface)
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):  # noqa: N818 (names fixed by the interface)
    """The system is not in the state the operation needs (not retryable as is)."""

    default_reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        violations: Sequence[PreconditionViolation] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        domain: str | None = None,
    ) -> None:
        self.violations: tuple[PreconditionViolation, ...] = tuple(violations)
        super().__init__(message, reason=reason, metadata=metadata, domain=domain)


class Aborted(DomainError):  # noqa: N818 (names fixed by the interface)
    """Concurrency conflict (stale etag/version); the client may re-read and retry."""

    default_reason = "ABORTED"


class PermissionDenied(DomainError):  # noqa: N818 (names fixed by the interface)
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):  # noqa: N818 (names fixed by the interface)
    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(DomainError):  # noqa: N818 (names fixed by the interface)
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):  # noqa: N818 (names fixed by the interface)
    """Transient failure; `retry_after_seconds` is sent as `google.rpc.RetryInfo`."""

    default_reason = "UNAVAILABLE"

    def __init__(
        self,
        message: str = "temporarily unavailable, retry later",
        retry_after_seconds: float = 1.0,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        domain: str | None = None,
    ) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(message, reason=reason, metadata=metadata, domain=domain)


__all__ = [
    "Aborted",
    "AlreadyExists",
    "DomainError",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PreconditionViolation",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]
