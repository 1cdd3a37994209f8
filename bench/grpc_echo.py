# mypy: disable-error-code="import-untyped"
"""Cost of the shared runtime: EchoService.Echo through the full interceptor chain vs bare grpc.aio.

    PYTHONPATH=.:gen .venv/bin/python bench/grpc_echo.py                    # ~1 minute
    PYTHONPATH=.:gen .venv/bin/python bench/grpc_echo.py --grpcio-versions  # + 1.75.1 / 1.85.1

Servers run in child processes pinned to CPU 0, the load generator in this process pinned to
CPU 1 (2-core machine). Each target gets several alternating rounds; the JSON in
`bench/results/grpc_echo.json` has every round, the medians and the ratios against the bare echo
measured in the same run. Targets:

* `bare`          grpc.aio + uvloop, generated servicer, no interceptors;
* `runtime`       `RuntimeServer` + `EchoService` with every interceptor step, INFO per-RPC log
                  line (to /dev/null) and no span exporter (`OTEL_TRACES_EXPORTER` unset), as a
                  service runs by default;
* `runtime_quiet` the same with logging at WARNING (no per-RPC log line);
* `runtime_auth`  `ProtectedEcho` with an `authorization: Bearer <Ed25519 JWT>` on every call
                  (verified against a static JWKS; permission check), INFO log line: the shape of
                  an authenticated read RPC;
* `bare@<ver>`    (`--grpcio-versions`) the bare server under other grpcio releases, from side
                  virtualenvs under `build/bench-venvs/`.

Besides requests per second the bench records the server's CPU time per call, which stays
meaningful even when the single-process load generator is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "grpc_echo.json"
VENVS = ROOT / "build" / "bench-venvs"
METHOD = "/suuupra.testing.v1.EchoService/Echo"
PROTECTED_METHOD = "/suuupra.testing.v1.EchoService/ProtectedEcho"
ISSUER = "bench-issuer"
AUDIENCE = "suuupra"
SERVER_CPU = 0
CLIENT_CPU = 1
VERSIONS = ("1.75.1", "1.85.1")


# --- servers (child processes) ------------------------------------------------------------------


def _pin(cpu: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


async def _serve_bare(port: int) -> None:
    import grpc
    from suuupra.testing.v1 import echo_service_pb2 as pb
    from suuupra.testing.v1 import echo_service_pb2_grpc as pb_grpc

    class Bare(pb_grpc.EchoServiceServicer):
        async def Echo(self, request: Any, context: Any) -> Any:  # noqa: N802
            return pb.EchoResponse(message=request.message)

    server = grpc.aio.server()
    # Only Echo is implemented; the other methods answer UNIMPLEMENTED.
    pb_grpc.add_EchoServiceServicer_to_server(Bare(), server)  # type: ignore[abstract]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("READY", grpc.__version__, flush=True)
    await server.wait_for_termination()


class _StaticJwks:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    async def fetch(self) -> dict[str, Any]:
        return self.document


async def _serve_runtime(port: int, log_level: str, jwks: str | None) -> None:
    from suuupra_runtime.auth import JwtVerifier
    from suuupra_runtime.config import ServerSettings
    from suuupra_runtime.logs import configure_logging
    from suuupra_runtime.server import RuntimeServer
    from suuupra_runtime.testing.echo_service import echo_definition
    from suuupra_runtime.tracing import configure_tracing

    configure_logging("echo", log_level)
    configure_tracing("echo")
    settings = ServerSettings(
        service_name="echo",
        grpc_addr=f"127.0.0.1:{port}",
        http_addr=None,
        max_concurrent_rpcs=None,
        log_level=log_level,
    )
    definition = echo_definition()
    if jwks is not None:
        cache_size = os.environ.get("BENCH_JWT_CACHE_SIZE")
        # Passed only when set, so this server also runs an older runtime (A/B comparisons).
        options: dict[str, Any] = {}
        if cache_size is not None:
            options["verified_cache_size"] = int(cache_size)
        definition.jwt_verifier = JwtVerifier(
            _StaticJwks(json.loads(jwks)), ISSUER, AUDIENCE, **options
        )
    server = RuntimeServer(definition, settings)
    await server.start()
    import grpc

    print("READY", grpc.__version__, flush=True)
    await asyncio.Event().wait()


def serve_main(kind: str, port: int) -> None:
    import uvloop

    _pin(SERVER_CPU)
    if kind == "bare":
        coro = _serve_bare(port)
    else:
        level = "WARNING" if kind == "runtime_quiet" else "INFO"
        coro = _serve_runtime(port, level, os.environ.get("BENCH_JWKS"))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


# --- load generator ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(
        self, name: str, python: str, kind: str, credentials: tuple[str, str] | None = None
    ) -> None:
        self.name = name
        self.port = _free_port()
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'gen'}"}
        # (JWKS document, bearer token): the server verifies, the load generator sends.
        self.bearer: str | None = None
        if credentials is not None:
            env["BENCH_JWKS"], self.bearer = credentials
        self.process = subprocess.Popen(
            [python, __file__, "_serve", kind, str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if not line or line[0] != "READY":
            self.stop()
            raise RuntimeError(f"{name} server failed to start")
        self.grpc_version = line[1]

    def cpu_seconds(self) -> float:
        import psutil

        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def measure(
    server: Server, *, seconds: float, warmup: float, concurrency: int
) -> dict[str, float]:
    import grpc
    from suuupra.testing.v1 import echo_service_pb2 as pb

    if server.bearer is None:
        method, metadata = METHOD, None
        payload = pb.EchoRequest(message="hello, suuupra").SerializeToString()
    else:
        method, metadata = PROTECTED_METHOD, (("authorization", f"Bearer {server.bearer}"),)
        payload = pb.ProtectedEchoRequest(message="hello, suuupra").SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary(method)  # bytes in, bytes out: minimal client work
        latencies: list[float] = []
        state = {"measuring": False, "stop": False, "errors": 0}

        async def worker() -> None:
            while not state["stop"]:
                started = time.perf_counter()
                try:
                    await call(payload, timeout=10, metadata=metadata)
                except grpc.aio.AioRpcError:
                    state["errors"] += 1
                    continue
                if state["measuring"]:
                    latencies.append(time.perf_counter() - started)

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        cpu_before, client_before = server.cpu_seconds(), time.process_time()
        began = time.perf_counter()
        state["measuring"] = True
        await asyncio.sleep(seconds)
        state["measuring"] = False
        elapsed = time.perf_counter() - began
        cpu_after, client_after = server.cpu_seconds(), time.process_time()
        state["stop"] = True
        await asyncio.gather(*workers)
    calls = len(latencies)
    if calls == 0 or state["errors"]:
        raise RuntimeError(f"{server.name}: {calls} calls, {state['errors']} errors")
    latencies.sort()
    return {
        "rps": calls / elapsed,
        "p50_ms": latencies[calls // 2] * 1000,
        "p99_ms": latencies[int(calls * 0.99)] * 1000,
        "server_cpu_us_per_call": (cpu_after - cpu_before) / calls * 1e6,
        "server_cpu_utilisation": (cpu_after - cpu_before) / elapsed,
        "client_cpu_utilisation": (client_after - client_before) / elapsed,
    }


def _credentials() -> tuple[str, str]:
    """A fresh Ed25519 signing key: its JWKS (JSON) and one access token good for an hour."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from jwt.algorithms import OKPAlgorithm

    key = Ed25519PrivateKey.generate()
    jwk = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "bench"
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "bench-user",
        "tenant": "bench-tenant",
        "perms": ["testing.echo.call"],
        "iat": now,
        "exp": now + 3600,
    }
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "bench"})
    return json.dumps({"keys": [jwk]}), token


def ensure_venv(version: str) -> str:
    """A side virtualenv with grpcio==version (never the shared .venv)."""
    venv = VENVS / f"grpcio-{version}"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "virtualenv", "--quiet", str(venv)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"grpcio=={version}",
                "protobuf==6.33.6",
                "uvloop==0.23.0",
            ],
            check=True,
        )
        stamp.write_text(version)
    return str(python)


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    targets = [
        ("bare", sys.executable, "bare"),
        ("runtime", sys.executable, "runtime"),
        ("runtime_quiet", sys.executable, "runtime_quiet"),
        ("runtime_auth", sys.executable, "runtime_auth"),
    ]
    if args.grpcio_versions:
        targets += [(f"bare@{v}", ensure_venv(v), "bare") for v in VERSIONS]
    servers: list[Server] = []
    try:
        for name, python, kind in targets:
            credentials = _credentials() if kind == "runtime_auth" else None
            servers.append(Server(name, python, kind, credentials))
        rounds: list[dict[str, Any]] = []
        for index in range(args.rounds):
            order = servers if index % 2 == 0 else list(reversed(servers))
            for server in order:
                result = await measure(
                    server, seconds=args.seconds, warmup=args.warmup, concurrency=args.concurrency
                )
                rounds.append({"round": index, "target": server.name, **result})
                print(
                    f"round {index} {server.name:>14}: {result['rps']:8.0f} rps  "
                    f"p50 {result['p50_ms']:.2f} ms  "
                    f"server {result['server_cpu_us_per_call']:.0f} us/call",
                    flush=True,
                )
        versions = {s.name: s.grpc_version for s in servers}
    finally:
        for server in servers:
            server.stop()

    medians: dict[str, dict[str, float]] = {}
    for name in versions:
        mine = [r for r in rounds if r["target"] == name]
        medians[name] = {
            key: statistics.median(r[key] for r in mine)
            for key in (
                "rps",
                "p50_ms",
                "p99_ms",
                "server_cpu_us_per_call",
                "server_cpu_utilisation",
                "client_cpu_utilisation",
            )
        }
    bare = medians["bare"]
    ratios = {
        name: {
            "rps": m["rps"] / bare["rps"],
            "server_cpu_per_call": m["server_cpu_us_per_call"] / bare["server_cpu_us_per_call"],
        }
        for name, m in medians.items()
        if name != "bare"
    }
    return {
        "benchmark": "grpc_echo",
        "method": METHOD,
        "baseline": "bare",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "server_cpu": SERVER_CPU,
            "client_cpu": CLIENT_CPU,
        },
        "settings": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
        },
        "grpcio": versions,
        "rounds": rounds,
        "median": medians,
        "ratio_vs_bare": ratios,
    }


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "_serve":
        serve_main(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--grpcio-versions",
        action="store_true",
        help=f"also measure bare echo under grpcio {' and '.join(VERSIONS)}",
    )
    parser.add_argument(
        "--jwt-cache-size",
        type=int,
        default=10_000,
        help="JwtVerifier verified-token cache size for runtime_auth (0: verify every call)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    import uvloop

    os.environ["BENCH_JWT_CACHE_SIZE"] = str(args.jwt_cache_size)  # inherited by the servers
    _pin(CLIENT_CPU)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        report = runner.run(run_bench(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    for name, ratio in report["ratio_vs_bare"].items():
        print(
            f"{name:>14}: {ratio['rps']:.2f}x bare rps, "
            f"{ratio['server_cpu_per_call']:.2f}x bare server CPU per call"
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
