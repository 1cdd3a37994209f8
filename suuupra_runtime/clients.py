# mypy: disable-error-code="import-untyped"
"""Calling other services: shared channels, deadlines, context propagation, typed errors.

    from suuupra_runtime.clients import call_options, channel_for, domain_errors

    stub = ledger_pb2_grpc.LedgerServiceStub(channel_for("127.0.0.1:15001"))
    with domain_errors():                      # AioRpcError → NotFound / InvalidArgument / ...
        reply = await stub.GetAccount(request, **call_options())

* `channel_for(target)` returns one `grpc.aio.Channel` per target per process. Its gRPC service
  config retries UNAVAILABLE (max 4 attempts, exponential backoff, retry throttling) only for
  methods that are safe to repeat: methods marked `option (suuupra.options.v1.idempotency)` and
  standard read methods (`Get*`, `List*`, `BatchGet*`, `Search*`) of every `suuupra.*` service
  whose generated module is imported (or of the `services` you pass). Everything else is tried
  once. The service config sets no timeout on purpose: gRPC treats it as a cap on every call's
  deadline, not as a default, so deadlines come from `call_options()` — always pass it.
* `call_options(timeout=None)` → `{"timeout": ..., "metadata": ...}` for a stub call: the timeout
  is the smaller of `timeout` (default `DEFAULT_TIMEOUT_SECONDS`) and what is left of the current
  RPC's deadline; the metadata forwards the caller's `authorization`, the `x-request-id` (minted
  outside an RPC) and the W3C `traceparent`/`tracestate` of the current span.
* `raise_from_rpc_error(err)` re-raises a failed call as the `DomainError` subclass the callee
  raised (reason, metadata, domain, field/precondition violations and retry delay preserved);
  statuses with no domain class (INTERNAL, DEADLINE_EXCEEDED, ...) re-raise `err` itself.
* `close_channels()` closes them all (put it in `on_stop`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn, TypedDict

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor

from suuupra_runtime.access import method_info
from suuupra_runtime.auth import current_caller
from suuupra_runtime.grpc_errors import domain_error_from_rpc_error
from suuupra_runtime.request_context import (
    REQUEST_ID_HEADER,
    current_request_id,
    remaining_seconds,
)
from suuupra_runtime.tracing import trace_headers

DEFAULT_TIMEOUT_SECONDS = 10.0
# Below this, a call cannot do useful work; it still goes out so the callee's status is real.
_MIN_TIMEOUT_SECONDS = 0.001
READ_METHOD_PREFIXES = ("Get", "List", "BatchGet", "Search")
RETRY_POLICY: dict[str, Any] = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

_channels: dict[str, grpc.aio.Channel] = {}


class CallOptions(TypedDict):
    timeout: float
    metadata: tuple[tuple[str, str], ...]


def _loaded_suuupra_services() -> list[ServiceDescriptor]:
    services: dict[str, ServiceDescriptor] = {}
    for name, module in list(sys.modules.items()):
        if not name.endswith("_pb2"):
            continue
        descriptor = getattr(module, "DESCRIPTOR", None)
        if isinstance(descriptor, FileDescriptor) and descriptor.package.startswith("suuupra."):
            for service in descriptor.services_by_name.values():
                services[service.full_name] = service
    return [services[key] for key in sorted(services)]


def retryable_methods(services: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(service, method) pairs that may be retried on UNAVAILABLE."""
    if services is None:
        descriptors = _loaded_suuupra_services()
    else:
        descriptors = [descriptor_pool.Default().FindServiceByName(name) for name in services]
    result: list[tuple[str, str]] = []
    for service in descriptors:
        for method in service.methods:
            full = f"/{service.full_name}/{method.name}"
            if method_info(full).idempotent or method.name.startswith(READ_METHOD_PREFIXES):
                result.append((service.full_name, method.name))
    return result


def service_config(services: Iterable[str] | None = None) -> dict[str, Any]:
    """The gRPC service config `channel_for` installs (exposed for inspection and tests)."""
    method_configs: list[dict[str, Any]] = []
    retryable = retryable_methods(services)
    if retryable:
        method_configs.append(
            {
                "name": [{"service": s, "method": m} for s, m in retryable],
                "retryPolicy": RETRY_POLICY,
            }
        )
    return {
        "methodConfig": method_configs,
        # Stop retrying when most calls fail, so retries cannot multiply an outage.
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }


def channel_for(target: str, *, services: Sequence[str] | None = None) -> grpc.aio.Channel:
    """The process-wide channel to `target` (created on first use, in the running loop)."""
    channel = _channels.get(target)
    if channel is None:
        config = service_config(services)
        channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.service_config", json.dumps(config)),
                ("grpc.enable_retries", 1),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ],
        )
        _channels[target] = channel
    return channel


async def close_channels() -> None:
    channels = list(_channels.values())
    _channels.clear()
    for channel in channels:
        await channel.close()


def call_options(
    timeout: float | None = None,
    *,
    forward_authorization: bool = True,
    extra_metadata: Sequence[tuple[str, str]] = (),
) -> CallOptions:
    """Timeout and metadata for an outgoing call made while handling an RPC (or outside one)."""
    effective = DEFAULT_TIMEOUT_SECONDS if timeout is None else timeout
    remaining = remaining_seconds()
    if remaining is not None:
        effective = min(effective, remaining)
    effective = max(effective, _MIN_TIMEOUT_SECONDS)

    metadata: list[tuple[str, str]] = [
        (REQUEST_ID_HEADER, current_request_id() or str(uuid.uuid4())),
    ]
    if forward_authorization:
        token = current_caller().raw_token
        if token is not None:
            metadata.append(("authorization", f"Bearer {token}"))
    metadata.extend(trace_headers().items())
    metadata.extend(extra_metadata)
    return {"timeout": effective, "metadata": tuple(metadata)}


def raise_from_rpc_error(err: grpc.RpcError) -> NoReturn:
    """Re-raise a failed call as the callee's `DomainError` (or `err` when there is none)."""
    domain_error = domain_error_from_rpc_error(err)
    if domain_error is None:
        raise err
    raise domain_error from err


@contextlib.contextmanager
def domain_errors() -> Iterator[None]:
    """`with domain_errors(): await stub.X(...)` — failed calls surface as `DomainError`s."""
    try:
        yield
    except grpc.RpcError as err:
        raise_from_rpc_error(err)


__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "READ_METHOD_PREFIXES",
    "RETRY_POLICY",
    "CallOptions",
    "call_options",
    "channel_for",
    "close_channels",
    "domain_errors",
    "raise_from_rpc_error",
    "retryable_methods",
    "service_config",
]
