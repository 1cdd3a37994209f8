"""Client helpers without sockets: service config, deadlines and metadata propagation."""

from __future__ import annotations

import contextvars
import time
import uuid

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from suuupra.testing.v1 import echo_service_pb2  # noqa: F401 (registers the service)

from suuupra_runtime import auth, request_context
from suuupra_runtime.auth import Caller
from suuupra_runtime.clients import (
    DEFAULT_TIMEOUT_SECONDS,
    CallOptions,
    call_options,
    retryable_methods,
    service_config,
)

ECHO = "suuupra.testing.v1.EchoService"


def test_only_idempotent_methods_are_retried() -> None:
    assert retryable_methods([ECHO]) == [(ECHO, "CreateNote")]
    (retry,) = service_config([ECHO])["methodConfig"]
    assert retry["name"] == [{"service": ECHO, "method": "CreateNote"}]
    assert retry["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert "timeout" not in retry  # a service-config timeout would cap every caller's deadline


def test_loaded_services_are_discovered() -> None:
    assert (ECHO, "CreateNote") in retryable_methods()


def _in_fresh_context(fn: object) -> CallOptions:
    return contextvars.copy_context().run(fn)  # type: ignore[arg-type]


def test_outside_an_rpc_uses_default_deadline_and_mints_request_id() -> None:
    options = _in_fresh_context(call_options)
    assert options["timeout"] == DEFAULT_TIMEOUT_SECONDS
    metadata = dict(options["metadata"])
    assert uuid.UUID(metadata["x-request-id"]).version == 4
    assert "authorization" not in metadata


def test_inside_an_rpc_forwards_context_and_shrinks_the_deadline() -> None:
    trace_id = 0x4BF92F3577B34DA6A3CE929D0E0E4736

    def inside() -> CallOptions:
        request_context.request_id_var.set("req-42")
        request_context.deadline_var.set(time.monotonic() + 1.5)
        auth.set_current_caller(Caller(subject="u1", raw_token="tok.en.value"))
        span = NonRecordingSpan(
            SpanContext(
                trace_id,
                0x00F067AA0BA902B7,
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
        )
        otel_context.attach(trace.set_span_in_context(span))
        return call_options(timeout=5)

    options = _in_fresh_context(inside)
    assert 1.3 < options["timeout"] <= 1.5
    metadata = dict(options["metadata"])
    assert metadata["x-request-id"] == "req-42"
    assert metadata["authorization"] == "Bearer tok.en.value"
    assert metadata["traceparent"] == f"00-{trace_id:032x}-00f067aa0ba902b7-01"


def test_expired_deadline_still_gives_a_positive_timeout() -> None:
    def inside() -> CallOptions:
        request_context.deadline_var.set(time.monotonic() - 1)
        return call_options()

    assert 0 < _in_fresh_context(inside)["timeout"] < 0.01


def test_authorization_forwarding_can_be_turned_off() -> None:
    def inside() -> CallOptions:
        auth.set_current_caller(Caller(subject="u1", raw_token="tok"))
        return call_options(forward_authorization=False)

    assert "authorization" not in dict(_in_fresh_context(inside)["metadata"])
