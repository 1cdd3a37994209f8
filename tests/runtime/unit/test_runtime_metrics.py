"""The RPC metrics collector renders the families a Counter/Histogram/Gauge would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from suuupra_runtime.metrics import RpcMetricsCollector


def _scrape(collector: RpcMetricsCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    base = {"grpc_service": "svc", "grpc_method": "Get", **labels}
    return name, tuple(sorted(base.items()))


def test_counts_buckets_sum_and_in_flight() -> None:
    collector = RpcMetricsCollector()
    metrics = collector.method("svc", "Get")
    assert collector.method("svc", "Get") is metrics  # one per method: no duplicate series
    for seconds, code in ((0.0002, "OK"), (0.001, "OK"), (0.3, "NOT_FOUND"), (42.0, "OK")):
        metrics.started()
        metrics.finished(seconds, code)
    metrics.started()  # one still running

    samples = _scrape(collector)
    assert samples[_key("grpc_server_handled_total", grpc_code="OK")] == 3
    assert samples[_key("grpc_server_handled_total", grpc_code="NOT_FOUND")] == 1
    assert _key("grpc_server_handled_created", grpc_code="OK") in samples
    assert samples[_key("grpc_server_in_flight")] == 1
    # Cumulative buckets; a value equal to a bound counts in that bound's bucket (le).
    assert samples[_key("grpc_server_handling_seconds_bucket", le="0.0005")] == 1
    assert samples[_key("grpc_server_handling_seconds_bucket", le="0.001")] == 2
    assert samples[_key("grpc_server_handling_seconds_bucket", le="0.25")] == 2
    assert samples[_key("grpc_server_handling_seconds_bucket", le="0.5")] == 3
    assert samples[_key("grpc_server_handling_seconds_bucket", le="10.0")] == 3
    assert samples[_key("grpc_server_handling_seconds_bucket", le="+Inf")] == 4
    assert samples[_key("grpc_server_handling_seconds_count")] == 4
    assert abs(samples[_key("grpc_server_handling_seconds_sum")] - 42.3012) < 1e-9
    assert _key("grpc_server_handling_seconds_created") in samples
