"""NATS header names carried by every Suuupra event, and how outbound headers are built.

Public API: the header-name constants below, `outbound_headers(...)`, `trace_headers(headers)`.

Every event message carries:
- `Nats-Msg-Id`: the event id (JetStream de-duplicates re-publishes inside its window);
- `Suuupra-Event-Type`: full proto name, which is also the subject;
- `Suuupra-Event-Id`: the event id (kept separately so a replayed dead letter, re-published under
  a fresh `Nats-Msg-Id`, is still recognised by consumers' inboxes);
- `Suuupra-Tenant` (empty when none), `Suuupra-Occurred-At` (RFC 3339, UTC),
  `Suuupra-Event-Key` (optional, e.g. the aggregate id);
- `traceparent` / `tracestate` (W3C trace context) and `x-request-id` when known.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from opentelemetry import propagate

from suuupra_runtime.request_context import current_request_id

__all__ = [
    "EVENT_ID",
    "EVENT_KEY",
    "EVENT_TYPE",
    "MSG_ID",
    "OCCURRED_AT",
    "PROPAGATED",
    "REQUEST_ID",
    "TENANT",
    "TRACEPARENT",
    "TRACESTATE",
    "outbound_headers",
    "trace_headers",
]

MSG_ID = "Nats-Msg-Id"
EVENT_TYPE = "Suuupra-Event-Type"
EVENT_ID = "Suuupra-Event-Id"
TENANT = "Suuupra-Tenant"
OCCURRED_AT = "Suuupra-Occurred-At"
EVENT_KEY = "Suuupra-Event-Key"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
REQUEST_ID = "x-request-id"
# Headers a consumer passes on to the events its handler emits.
PROPAGATED = (TRACEPARENT, TRACESTATE, REQUEST_ID)


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def trace_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The subset of `headers` that continues a trace/request into follow-up events."""
    return {name: headers[name] for name in PROPAGATED if headers.get(name)}


def outbound_headers(
    *,
    event_type: str,
    event_id: str,
    tenant_id: str | None,
    occurred_at: dt.datetime,
    key: str | None = None,
    inherited: Mapping[str, str] | None = None,
) -> dict[str, str]:
    headers = {
        EVENT_TYPE: event_type,
        EVENT_ID: event_id,
        TENANT: tenant_id or "",
        OCCURRED_AT: rfc3339(occurred_at),
    }
    if key:
        headers[EVENT_KEY] = key
    # Pass-through first, then the live OpenTelemetry context wins if a span is active.
    headers.update(trace_headers(inherited or {}))
    request_id = current_request_id()
    if request_id:
        headers[REQUEST_ID] = request_id
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    headers.update({k: v for k, v in carrier.items() if k in (TRACEPARENT, TRACESTATE)})
    return headers
