"""Prometheus RED metrics for gRPC servers, exposed at `/metrics` by the runtime's HTTP server.

* `grpc_server_handled_total{grpc_service, grpc_method, grpc_code}`  — rate and errors
* `grpc_server_handling_seconds{grpc_service, grpc_method}`          — duration histogram
* `grpc_server_in_flight{grpc_service, grpc_method}`                 — concurrency gauge

Services may register their own metrics on the default `prometheus_client` registry; they appear
on the same endpoint.

The RPC metrics are not `prometheus_client` Counter/Histogram/Gauge objects: each of their
updates takes a lock and re-checks observability, which came to ~4 µs per update and ~17 µs per
RPC (in-flight up and down, a histogram observation, a counter). Here a `MethodMetrics` keeps
plain numbers, updated only from the server's event-loop thread (RPC handlers and the `/metrics`
endpoint both run there), and `RpcMetricsCollector` turns them into the same metric families
at scrape time (cumulative buckets, `_count`, `_sum` and `_created` series included).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BUCKET_LABELS = (*(floatToGoString(b) for b in BUCKETS), "+Inf")  # type: ignore[no-untyped-call]

HANDLED_NAME = "grpc_server_handled"
HANDLING_SECONDS_NAME = "grpc_server_handling_seconds"
IN_FLIGHT_NAME = "grpc_server_in_flight"
_LABELS = ["grpc_service", "grpc_method"]


class MethodMetrics:
    """The RED numbers of one method; get it from `method_metrics` (one per method per process)."""

    __slots__ = (
        "bucket_counts",
        "created",
        "handled",
        "handled_created",
        "in_flight",
        "method",
        "service",
        "total_seconds",
    )

    def __init__(self, service: str, method: str) -> None:
        self.service = service
        self.method = method
        self.in_flight = 0
        # Per-bucket (not cumulative) counts; the last one is +Inf. Their sum is the count.
        self.bucket_counts = [0] * (len(BUCKETS) + 1)
        self.total_seconds = 0.0
        self.handled: dict[str, int] = {}
        self.created = time.time()
        self.handled_created: dict[str, float] = {}

    def started(self) -> None:
        self.in_flight += 1

    def finished(self, seconds: float, code: str) -> None:
        """One RPC ended with `code` after `seconds` (also ends its in-flight count)."""
        self.in_flight -= 1
        self.bucket_counts[bisect_left(BUCKETS, seconds)] += 1  # first bucket with le >= seconds
        self.total_seconds += seconds
        handled = self.handled
        count = handled.get(code)
        if count is None:
            self.handled_created[code] = time.time()
            handled[code] = 1
        else:
            handled[code] = count + 1


class RpcMetricsCollector(Collector):
    """Exposes every `MethodMetrics` of the process as the three metric families."""

    def __init__(self) -> None:
        self._methods: dict[tuple[str, str], MethodMetrics] = {}

    def method(self, service: str, method: str) -> MethodMetrics:
        key = (service, method)
        metrics = self._methods.get(key)
        if metrics is None:
            metrics = self._methods[key] = MethodMetrics(service, method)
        return metrics

    def _families(self) -> tuple[CounterMetricFamily, HistogramMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily(
                HANDLED_NAME,
                "RPCs completed on the server, by method and status code.",
                labels=[*_LABELS, "grpc_code"],
            ),
            HistogramMetricFamily(
                HANDLING_SECONDS_NAME,
                "Time from receiving an RPC to sending its status.",
                labels=_LABELS,
            ),
            GaugeMetricFamily(IN_FLIGHT_NAME, "RPCs currently being handled.", labels=_LABELS),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        handled, seconds, in_flight = self._families()
        for m in list(self._methods.values()):
            labels = [m.service, m.method]
            for code, count in list(m.handled.items()):
                handled.add_metric([*labels, code], count, created=m.handled_created[code])
            cumulative: list[tuple[str, float]] = []
            running = 0
            for label, count in zip(_BUCKET_LABELS, list(m.bucket_counts), strict=True):
                running += count
                cumulative.append((label, running))
            seconds.add_metric(labels, cumulative, m.total_seconds)
            seconds.samples.append(
                Sample(
                    f"{HANDLING_SECONDS_NAME}_created",
                    dict(zip(_LABELS, labels, strict=True)),
                    m.created,
                )
            )
            in_flight.add_metric(labels, m.in_flight)
        yield handled
        yield seconds
        yield in_flight


RPC_METRICS = RpcMetricsCollector()
REGISTRY.register(RPC_METRICS)


def method_metrics(service: str, method: str) -> MethodMetrics:
    """The process-wide metrics of one method (shared by every server in the process)."""
    return RPC_METRICS.method(service, method)


def render(registry: CollectorRegistry = REGISTRY) -> tuple[str, bytes]:
    """(content type, body) of the Prometheus text exposition."""
    return CONTENT_TYPE_LATEST, generate_latest(registry)


__all__ = [
    "BUCKETS",
    "RPC_METRICS",
    "MethodMetrics",
    "RpcMetricsCollector",
    "method_metrics",
    "render",
]
