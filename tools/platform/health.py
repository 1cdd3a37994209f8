# mypy: disable-error-code="import-untyped"
"""Readiness probes: gRPC health of the apps, Envoy's `/ready` of sidecars and the edge."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tools.platform.processes import Child

Probe = Callable[[], Awaitable[bool]]


def grpc_health_probe(address: str, service: str = "") -> Probe:
    """SERVING from `grpc.health.v1.Health/Check` at `address` (plaintext, loopback)."""

    async def probe() -> bool:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return probe


def envoy_ready_probe(admin_address: str) -> Probe:
    """Envoy's admin `/ready`: 200 once listeners and clusters are initialised."""

    def get() -> bool:
        try:
            with urllib.request.urlopen(f"http://{admin_address}/ready", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async def probe() -> bool:
        return await asyncio.to_thread(get)

    return probe


def envoy_jwks_loaded_probe(admin_address: str) -> Probe:
    """The edge's JWT filter has fetched the JWKS at least once.

    Envoy fetches it in the background (retrying every second while identity starts); until the
    first success every request carrying a token is refused, so "ready" must wait for it.
    """
    url = f"http://{admin_address}/stats?filter=jwks_fetch_success"

    def get() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError):
            return False
        counts = [line.rpartition(":")[2].strip() for line in text.splitlines()]
        return any(c.isdigit() and int(c) > 0 for c in counts)

    async def probe() -> bool:
        return await asyncio.to_thread(get)

    return probe


@dataclass(frozen=True)
class Check:
    label: str
    """What becomes healthy, e.g. `identity (gRPC health)`."""
    child: Child
    """The process whose log explains a failure."""
    probe: Probe


class HealthTimeoutError(RuntimeError):
    pass


class ProcessExitedError(RuntimeError):
    pass


async def wait_healthy(
    checks: Sequence[Check],
    *,
    deadline_seconds: float,
    report: Callable[[str], None],
    interval: float = 0.1,
) -> None:
    """Poll every check until all pass; fail fast when a process exits, name its log on timeout."""
    started = time.monotonic()
    pending = list(checks)
    last_status = 0.0
    while pending:
        results = await asyncio.gather(*(c.probe() for c in pending))
        elapsed = time.monotonic() - started
        for check, ok in zip(pending, results, strict=True):
            if ok:
                report(f"  ok   {check.label:<40} {elapsed:5.1f}s")
        pending = [c for c, ok in zip(pending, results, strict=True) if not ok]
        if not pending:
            return
        for check in pending:
            if not check.child.alive():
                raise ProcessExitedError(
                    f"{check.child.name} exited before it became healthy; "
                    f"see its log: {check.child.log_path}"
                )
        if elapsed > deadline_seconds:
            names = ", ".join(c.label for c in pending)
            logs = "\n".join(f"  {c.child.name}: {c.child.log_path}" for c in pending)
            raise HealthTimeoutError(
                f"not healthy after {deadline_seconds:.0f}s: {names}\nsee the logs:\n{logs}"
            )
        if elapsed - last_status >= 5:
            last_status = elapsed
            report(f"  ...  waiting for {', '.join(c.label for c in pending)} ({elapsed:.0f}s)")
        await asyncio.sleep(interval)
