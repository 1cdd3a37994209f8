"""OpenTelemetry tracing: provider setup from the environment and W3C trace-context helpers.

    configure_tracing("identity")     # once per process (serve() does it)
    trace_headers()                   # {"traceparent": ..., "tracestate": ...} of the current span,
                                      #   for outgoing gRPC metadata and NATS event headers
    context_from_headers(headers)     # parent context from such headers (event consumers)

With an exporter configured (`OTEL_TRACES_EXPORTER=console` prints spans to stderr; sampling
follows the standard `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`), the runtime's interceptor
records one SERVER span per RPC, parented on the caller's `traceparent`. Without one (the default,
`none`) no spans are recorded — that costs ~30% of a trivial RPC for nothing — but the caller's
trace context is still carried through: outgoing calls and events repeat its `traceparent`, and
logs show its trace id, so a trace started upstream stays connected.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_propagator = TraceContextTextMapPropagator()
_log = logging.getLogger("suuupra.tracing")


def configure_tracing(service_name: str) -> bool:
    """Install the SDK tracer provider if an exporter is configured; True when spans are recorded.

    Idempotent: later calls (several servers in one test process) reuse the first provider.
    """
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return True
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter in {"", "none"}:
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    else:
        _log.warning("unsupported OTEL_TRACES_EXPORTER %r; spans are not exported", exporter)
    trace.set_tracer_provider(provider)
    return True


def recording() -> bool:
    """Whether an SDK tracer provider is installed (spans are worth creating)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def tracer() -> trace.Tracer:
    return trace.get_tracer("suuupra_runtime")


def context_from_headers(headers: Mapping[str, str]) -> Context:
    """Parent context carried by `traceparent`/`tracestate` headers (empty context if none)."""
    return _propagator.extract(headers)


def trace_headers(ctx: Context | None = None) -> dict[str, str]:
    """W3C headers for the current (or given) span context; empty when there is no valid span."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=ctx)
    return carrier


def current_traceparent() -> str | None:
    return trace_headers().get(TRACEPARENT)


def current_trace_id() -> str | None:
    """Hex trace id of the current span, for log correlation."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "configure_tracing",
    "context_from_headers",
    "current_trace_id",
    "current_traceparent",
    "recording",
    "trace_headers",
    "tracer",
]
