"""Prometheus RED metrics for gRPC servers, exposed at `/metrics` by the runtime's HTTP server.

* `grpc_server_handled_total{grpc_service, grpc_method, grpc_code}`  — rate and errors
* `grpc_server_handling_seconds{grpc_service, grpc_method}`          — duration histogram
* `grpc_server_in_flight{grpc_service, grpc_method}`                 — concurrency gauge

Services may register their own metrics on the default `prometheus_client` registry; they appear
on the same endpoint. Label children are resolved once per method (`MethodMetrics`), so the hot
path is a few attribute calls.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from receiving an RPC to sending its status.",
    ["grpc_service", "grpc_method"],
    buckets=_BUCKETS,
)
IN_FLIGHT = Gauge(
    "grpc_server_in_flight",
    "RPCs currently being handled.",
    ["grpc_service", "grpc_method"],
)


class MethodMetrics:
    """Pre-resolved label children for one method."""

    __slots__ = ("_handled", "_method", "_service", "duration", "in_flight")

    def __init__(self, service: str, method: str) -> None:
        self._service = service
        self._method = method
        self.duration = HANDLING_SECONDS.labels(service, method)
        self.in_flight = IN_FLIGHT.labels(service, method)
        self._handled: dict[str, Counter] = {}

    def handled(self, code: str) -> Counter:
        child = self._handled.get(code)
        if child is None:
            child = HANDLED.labels(self._service, self._method, code)
            self._handled[code] = child
        return child


def render(registry: CollectorRegistry = REGISTRY) -> tuple[str, bytes]:
    """(content type, body) of the Prometheus text exposition."""
    return CONTENT_TYPE_LATEST, generate_latest(registry)


__all__ = ["HANDLED", "HANDLING_SECONDS", "IN_FLIGHT", "MethodMetrics", "render"]
