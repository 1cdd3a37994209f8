"""OpenTelemetry tracing: provider setup from the environment and W3C trace-context helpers.

    configure_tracing("identity")     # once per process (serve() does it)
    trace_headers()                   # {"traceparent": ..., "tracestate": ...} of the current span,
                                      #   for outgoing gRPC metadata and NATS event headers
    context_from_headers(headers)     # parent context from such headers (event consumers)

The runtime's interceptor opens one SERVER span per RPC, parented on the caller's `traceparent`.
Exporters: `OTEL_TRACES_EXPORTER=console` prints spans to stderr; `none` (the default) records
spans (so trace ids reach logs and downstream calls) without exporting them. Sampling follows the
standard `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` variables.
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


def configure_tracing(service_name: str) -> None:
    """Install the SDK tracer provider once per process (later calls are no-ops)."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    elif exporter not in {"", "none"}:
        _log.warning("unsupported OTEL_TRACES_EXPORTER %r; spans are not exported", exporter)
    trace.set_tracer_provider(provider)


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
    "trace_headers",
    "tracer",
]
