# mypy: disable-error-code="import-untyped"
"""Shared pieces of the identity benchmarks: infrastructure, the identity process and a bare
grpc.aio echo server, each pinned to the server CPU; the load generator pins itself to another.

    PYTHONPATH=.:gen .venv/bin/python bench/identity_common.py echo PORT   # the bare baseline
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from suuupra.identity.v1 import identity_service_pb2 as pb  # noqa: E402
from suuupra.identity.v1 import identity_service_pb2_grpc as rpc  # noqa: E402
from suuupra.testing.v1 import echo_service_pb2 as echo_pb  # noqa: E402
from suuupra.testing.v1 import echo_service_pb2_grpc as echo_rpc  # noqa: E402

from suuupra_runtime.infra import EmbeddedNats, EmbeddedPostgres, free_port  # noqa: E402

SERVER_CPU = 0
CLIENT_CPU = 1
PASSWORD = "violet-harbour-lantern-42"
RESULTS = ROOT / "bench" / "results"


def pin_self(cpu: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {cpu})


def _pinned(argv: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(SERVER_CPU), *argv] if taskset else argv


def repo_pythonpath() -> str:
    return os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "gen"), os.environ.get("PYTHONPATH", "")) if p
    )


@contextlib.contextmanager
def pinned_process(argv: list[str], env: dict[str, str] | None = None) -> Iterator[Any]:
    """`argv` on the server CPU, output discarded; terminated (then killed) on exit."""
    proc = subprocess.Popen(
        _pinned(argv), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Infra:
    database_url: str
    nats_url: str


@contextlib.contextmanager
def infrastructure() -> Iterator[Infra]:
    """DATABASE_URL / NATS_URL when set, otherwise embedded servers in a temp dir."""
    with tempfile.TemporaryDirectory(prefix="identity-bench-") as tmp, contextlib.ExitStack() as st:
        db = os.environ.get("DATABASE_URL")
        if not db:
            pg = st.enter_context(EmbeddedPostgres(Path(tmp) / "pg", free_port()))
            db = pg.url
        nats_url = os.environ.get("NATS_URL")
        if not nats_url:
            nats = st.enter_context(EmbeddedNats(Path(tmp) / "js", free_port(), free_port()))
            nats_url = nats.url
        yield Infra(db, nats_url)


@dataclass
class IdentityProcess:
    proc: subprocess.Popen[bytes]
    target: str
    env: dict[str, str]


@contextlib.contextmanager
def identity_process(infra: Infra, **extra_env: str) -> Iterator[IdentityProcess]:
    name = f"identity_bench_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": repo_pythonpath(),
        "DATABASE_URL": infra.database_url,
        "NATS_URL": infra.nats_url,
        "SUUUPRA_IDENTITY_DATABASE_NAME": name,
        "SUUUPRA_GRPC_ADDR": f"127.0.0.1:{port}",
        "SUUUPRA_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "SUUUPRA_BOOTSTRAP_PASSWORD": PASSWORD,
        "SUUUPRA_LOG_LEVEL": "WARNING",
        "SUUUPRA_GRACE_SECONDS": "1",
        "SUUUPRA_DRAIN_DELAY_SECONDS": "0",
        "SUUUPRA_IDENTITY_ACCOUNT_FREE_FAILURES": "1000000",
        "SUUUPRA_IDENTITY_ADDRESS_FREE_FAILURES": "1000000",
        **extra_env,
    }
    boot = subprocess.run(
        [sys.executable, "-m", "services.identity", "bootstrap", "--email", "root@bench.test"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if boot.returncode != 0:
        raise SystemExit(f"bootstrap failed: {boot.stderr}")
    with pinned_process([sys.executable, "-m", "services.identity"], env) as proc:
        asyncio.run(wait_serving(f"127.0.0.1:{port}"))
        yield IdentityProcess(proc, f"127.0.0.1:{port}", env)


@contextlib.contextmanager
def runtime_echo_process(jwks_url: str) -> Iterator[str]:
    """The runtime's EchoService (full interceptor chain) verifying identity's tokens."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": repo_pythonpath(),
        "SUUUPRA_GRPC_ADDR": f"127.0.0.1:{port}",
        "SUUUPRA_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "SUUUPRA_JWKS_URL": jwks_url,
        "SUUUPRA_LOG_LEVEL": "WARNING",
    }
    with pinned_process([sys.executable, "-m", "suuupra_runtime.testing.echo_service"], env):
        asyncio.run(wait_serving(f"127.0.0.1:{port}", health=False))
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def echo_process(*, batched_poller: bool = False) -> Iterator[str]:
    """The bare baseline; `batched_poller` gives it the runtime's SCHED_BATCH poller thread
    (a reference for how much of a gap that scheduling change closes on its own)."""
    port = free_port()
    mode = "echo-batched" if batched_poller else "echo"
    with pinned_process([sys.executable, str(Path(__file__)), mode, str(port)]):
        asyncio.run(wait_serving(f"127.0.0.1:{port}", health=False))
        yield f"127.0.0.1:{port}"


async def wait_serving(target: str, *, health: bool = True, wait_seconds: float = 60) -> None:
    deadline = time.monotonic() + wait_seconds
    async with grpc.aio.insecure_channel(target) as channel:
        while time.monotonic() < deadline:
            try:
                if health:
                    status = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=2
                    )
                    if status.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                else:
                    await echo_rpc.EchoServiceStub(channel).Echo(
                        echo_pb.EchoRequest(message="ping"), timeout=2
                    )
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"{target} never became ready")


async def platform_token(target: str) -> str:
    async with grpc.aio.insecure_channel(target) as channel:
        login = await rpc.AuthServiceStub(channel).Login(
            pb.LoginRequest(tenant_slug="platform", email="root@bench.test", password=PASSWORD)
        )
        return str(login.tokens.access_token)


# -- load generation

CONCURRENCY = 32


async def rate(call: Any, seconds: float) -> float:
    """Calls per second of `call` from CONCURRENCY concurrent workers (after a warm-up)."""
    for _ in range(50):
        await call()
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done / (time.perf_counter() - start)


async def echo_rate(target: str, seconds: float, token: str = "") -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = echo_rpc.EchoServiceStub(channel)
        request = echo_pb.EchoRequest(message="x" * 64)
        metadata = (("authorization", f"Bearer {token}"),) if token else ()

        async def call() -> None:
            await stub.Echo(request, metadata=metadata)

        return await rate(call, seconds)


# -- the bare baseline server ---------------------------------------------------------------------


class _BareEcho(echo_rpc.EchoServiceServicer):
    async def Echo(self, request: echo_pb.EchoRequest, context: Any) -> echo_pb.EchoResponse:  # noqa: N802
        return echo_pb.EchoResponse(message=request.message)


async def _serve_echo(port: int, batched_poller: bool) -> None:
    server = grpc.aio.server()
    echo_rpc.add_EchoServiceServicer_to_server(_BareEcho(), server)  # type: ignore[abstract]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    if batched_poller:
        from suuupra_runtime.grpc_poller import batch_grpc_poller

        batch_grpc_poller()
    await server.wait_for_termination()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] in {"echo", "echo-batched"}:
    import uvloop

    uvloop.run(_serve_echo(int(sys.argv[2]), batched_poller=sys.argv[1] == "echo-batched"))
