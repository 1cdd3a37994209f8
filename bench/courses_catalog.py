# mypy: disable-error-code="import-untyped"
"""Catalog listing cost: `CourseService/ListCourses` (20 per page, tag + language filters).

    PYTHONPATH=.:gen .venv/bin/python bench/courses_catalog.py [--rounds 3] [--calls 1500]

Two questions, measured in the same run with alternating rounds (median quoted):

1. CPU per call of the courses process vs a *baseline* process: a bare `grpc.aio` server (uvloop,
   no interceptors) whose ListCourses handler runs the same SQL on a raw asyncpg pool and builds
   the same response. Both servers are pinned to CPU 0 and measured with psutil (user + system
   seconds / calls); the load generator runs on CPU 1. Target: courses ≤ 1.5x the baseline.
2. Throughput through the edge Envoy (JWT check, mTLS) and the courses sidecar vs calling the
   app directly. The app and its sidecar share CPU 0 (one pod); the edge and the load generator
   share CPU 1. Target: ≥ 0.7x direct.

The courses process is the real service (`python -m services.courses`, migrations, relay,
consumer, full interceptor chain), verifying tokens of a throwaway issuer whose JWKS this script
serves on the port an identity app would use, behind an identity sidecar (the edge fetches it
from there). Results: bench/results/courses_catalog.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen")]

from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402
from suuupra.courses.v1 import course_pb2  # noqa: E402
from suuupra.courses.v1 import courses_service_pb2 as pb  # noqa: E402
from suuupra.courses.v1 import courses_service_pb2_grpc as rpc  # noqa: E402

from bench.identity_common import infrastructure, wait_serving  # noqa: E402
from services.courses.store import CatalogReads  # noqa: E402
from services.identity.domain import role_permissions  # noqa: E402
from suuupra_runtime.db import ensure_database, normalize_url  # noqa: E402
from suuupra_runtime.mesh.certs import ensure_dev_certificates  # noqa: E402
from suuupra_runtime.mesh.envoy import (  # noqa: E402
    DevAddressing,
    render_edge,
    render_sidecar,
    to_yaml,
)
from suuupra_runtime.mesh.sidecars import EnvoyProcess  # noqa: E402
from suuupra_runtime.mesh.topology import Topology, parse_topology  # noqa: E402
from suuupra_runtime.testing.tokens import TestIssuer  # noqa: E402

SERVER_CPU = 0
CLIENT_CPU = 1
CONCURRENCY = 16
COURSES = 400
RESULTS = ROOT / "bench" / "results" / "courses_catalog.json"
REQUEST = pb.ListCoursesRequest(page_size=20, tag="tag1", language="en")


# -- the baseline server: bare grpc.aio + the same SQL on raw asyncpg -------------------------


def _ts(value: Any) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


class _BareCatalog(rpc.CourseServiceServicer):
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def ListCourses(  # noqa: N802
        self, request: pb.ListCoursesRequest, context: Any
    ) -> pb.ListCoursesResponse:
        tenant = dict(context.invocation_metadata() or ()).get("x-tenant", "")
        rows = await self.pool.fetch(
            CatalogReads.SQL, tenant, False, None, request.tag or None,
            request.language or None, None, None, None, request.page_size + 1,
        )  # fmt: skip
        return pb.ListCoursesResponse(
            courses=[
                course_pb2.Course(
                    course_id=str(r["course_id"]), tenant_id=str(r["tenant_id"]), code=r["code"],
                    title=r["title"], description=r["description"], language=r["language"],
                    tags=list(r["tags"]), owner_ids=[str(o) for o in r["owner_ids"]],
                    state=course_pb2.COURSE_STATE_PUBLISHED,
                    published_version=r["published_version"],
                    create_time=_ts(r["created_at"]), update_time=_ts(r["updated_at"]),
                    etag=f'W/"{r["row_version"]}"',
                )
                for r in rows[: request.page_size]
            ],
            next_page_token="x" if len(rows) > request.page_size else "",
        )  # fmt: skip


async def _serve_baseline(port: int, dsn: str) -> None:
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
    server = grpc.aio.server()
    rpc.add_CourseServiceServicer_to_server(_BareCatalog(pool), server)  # type: ignore[abstract]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# -- set-up -----------------------------------------------------------------------------------


def _free_base() -> int:
    import socket

    for base in range(24000, 31000, 100):
        ok = True
        for port in range(base, base + 100):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def _topology(base: int) -> Topology:
    return parse_topology(
        {
            "trust_domain": "suuupra.local",
            "namespace": "bench",
            "infrastructure": {
                "postgres_port": base + 90,
                "nats_port": base + 91,
                "nats_monitor_port": base + 92,
            },
            "edge": {
                "port_block": base + 80,
                # The edge's per-client limit must not be what the benchmark measures.
                "rate_limit": {"requests_per_second": 1_000_000, "burst": 1_000_000},
                "max_request_bytes": 65536,
                "debug_service": "courses",
            },
            "services": {
                "identity": {
                    "port_block": base,
                    "grpc_packages": ["suuupra.identity.v1"],
                    "http_paths": ["/.well-known/"],
                    "callers": [{"from": "edge", "rpcs": ["/suuupra.identity.v1."]}],
                },
                "courses": {
                    "port_block": base + 20,
                    "grpc_packages": ["suuupra.courses.v1"],
                    "callers": [{"from": "edge", "rpcs": ["/suuupra.courses.v1."]}],
                },
            },
        }
    )


@contextlib.contextmanager
def _jwks_server(port: int, issuer: TestIssuer) -> Iterator[str]:
    body = json.dumps(issuer.jwks).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/.well-known/jwks.json"
    finally:
        server.shutdown()


async def _seed(database_url: str, tenant_id: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(normalize_url(database_url).replace("+asyncpg", ""))
    try:
        rows = [
            (
                str(uuid.uuid4()), tenant_id, f"C{i:04d}", f"Course number {i}",
                "A course used by the catalog benchmark. " * 4, "en" if i % 2 else "hi",
                [f"tag{i % 3}", "bench"], [str(uuid.uuid4())],
            )
            for i in range(COURSES)
        ]  # fmt: skip
        await conn.executemany(
            "INSERT INTO courses (course_id, tenant_id, code, title, description, language, tags, "
            "owner_ids, state, published_version, created_at, updated_at) VALUES "
            "($1, $2, $3, $4, $5, $6, $7, $8, 'published', 1, now(), now())",
            rows,
        )
    finally:
        await conn.close()


def _pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv]


# -- measuring --------------------------------------------------------------------------------


async def _run_calls(target: str, metadata: Any, calls: int) -> float:
    """Make `calls` ListCourses calls with CONCURRENCY in flight; returns calls per second."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = rpc.CourseServiceStub(channel)
        for _ in range(30):
            reply = await stub.ListCourses(REQUEST, metadata=metadata)
            assert len(reply.courses) == 20 and reply.next_page_token
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await stub.ListCourses(REQUEST, metadata=metadata)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return calls / (time.perf_counter() - start)


def _cpu(process: psutil.Process) -> float:
    t = process.cpu_times()
    return float(t.user + t.system)


async def _cpu_per_call(proc: psutil.Process, target: str, metadata: Any, calls: int) -> float:
    await _run_calls(target, metadata, 50)  # warm-up outside the measurement
    before = _cpu(proc)
    await _run_calls(target, metadata, calls)
    return (_cpu(proc) - before) / calls * 1e6


async def _wait_edge(target: str, metadata: Any) -> None:
    deadline = time.monotonic() + 60
    async with grpc.aio.insecure_channel(target) as channel:
        while True:
            try:
                await rpc.CourseServiceStub(channel).ListCourses(
                    REQUEST, metadata=metadata, timeout=2
                )
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(rounds: int, calls: int) -> dict[str, Any]:
    os.sched_setaffinity(0, {CLIENT_CPU})
    load_before = os.getloadavg()[0]
    topology = _topology(_free_base())
    identity, courses = topology.service("identity"), topology.service("courses")
    issuer = TestIssuer()
    tenant_id = str(uuid.uuid4())
    token = issuer.token(
        str(uuid.uuid4()), tenant_id, roles=["student"], perms=role_permissions(["student"])
    )
    metadata = (("authorization", f"Bearer {token}"),)
    py_path = os.pathsep.join((str(ROOT), str(ROOT / "gen")))
    with (
        infrastructure() as infra,
        tempfile.TemporaryDirectory(prefix="courses-bench-") as tmp,
        _jwks_server(identity.http_port, issuer) as jwks_url,
        contextlib.ExitStack() as stack,
    ):
        root = Path(tmp)
        db_name = f"courses_bench_{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "PYTHONPATH": py_path,
            "DATABASE_URL": infra.database_url,
            "NATS_URL": infra.nats_url,
            "SUUUPRA_COURSES_DATABASE_NAME": db_name,
            "SUUUPRA_GRPC_ADDR": f"127.0.0.1:{courses.app_port}",
            "SUUUPRA_HTTP_ADDR": f"127.0.0.1:{courses.http_port}",
            "SUUUPRA_JWKS_URL": jwks_url,
            "SUUUPRA_JWT_ISSUER": issuer.issuer,
            "SUUUPRA_JWT_AUDIENCE": issuer.audience,
            "SUUUPRA_LOG_LEVEL": "WARNING",
            "SUUUPRA_DRAIN_DELAY_SECONDS": "0",
            "SUUUPRA_GRACE_SECONDS": "1",
        }
        app = subprocess.Popen(
            _pinned(SERVER_CPU, [sys.executable, "-m", "services.courses"]),
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        stack.callback(_stop, app)
        direct = f"127.0.0.1:{courses.app_port}"
        asyncio.run(wait_serving(direct))
        database_url = asyncio.run(ensure_database(infra.database_url, db_name))
        asyncio.run(_seed(database_url, tenant_id))

        baseline_port = topology.edge.listener_port + 10
        baseline = subprocess.Popen(
            _pinned(SERVER_CPU, [sys.executable, __file__, "--baseline", str(baseline_port),
                                 normalize_url(database_url).replace("+asyncpg", "")]),
            env={**os.environ, "PYTHONPATH": py_path}, cwd=ROOT,
        )  # fmt: skip
        stack.callback(_stop, baseline)
        baseline_target = f"127.0.0.1:{baseline_port}"
        baseline_md = (("x-tenant", tenant_id),)
        asyncio.run(_wait_edge(baseline_target, baseline_md))

        ensure_dev_certificates(topology, root / "certs")
        addressing = DevAddressing()
        configs = {
            "courses": render_sidecar(topology, "courses", addressing, str(root / "certs")),
            "identity": render_sidecar(topology, "identity", addressing, str(root / "certs")),
            "edge": render_edge(topology, addressing, str(root / "certs")),
        }
        cpus = {"courses": SERVER_CPU, "identity": CLIENT_CPU, "edge": CLIENT_CPU}
        for name, config in configs.items():
            path = root / f"{name}.yaml"
            path.write_text(to_yaml(config))
            envoy = EnvoyProcess(path, log_path=root / f"{name}.log", cpus=frozenset({cpus[name]}))
            envoy.start()
            stack.callback(envoy.stop)
            envoy.wait_ready()
        edge_target = f"127.0.0.1:{topology.edge.listener_port}"
        asyncio.run(_wait_edge(edge_target, metadata))

        app_proc, base_proc = psutil.Process(app.pid), psutil.Process(baseline.pid)
        # taskset execs the python process, so the pids are the servers' own.
        cpu_app: list[float] = []
        cpu_base: list[float] = []
        rps_direct: list[float] = []
        rps_edge: list[float] = []
        for i in range(rounds):
            order = ("app", "base") if i % 2 == 0 else ("base", "app")
            for which in order:
                if which == "app":
                    cpu_app.append(asyncio.run(_cpu_per_call(app_proc, direct, metadata, calls)))
                else:
                    cpu_base.append(
                        asyncio.run(_cpu_per_call(base_proc, baseline_target, baseline_md, calls))
                    )
            paths = ((direct, rps_direct), (edge_target, rps_edge))
            for target, out in paths if i % 2 == 0 else tuple(reversed(paths)):
                out.append(asyncio.run(_run_calls(target, metadata, calls)))
            print(
                f"round {i + 1}: cpu/call app {cpu_app[-1]:.0f} us, baseline {cpu_base[-1]:.0f} us;"
                f" direct {rps_direct[-1]:.0f} rps, edge {rps_edge[-1]:.0f} rps",
                flush=True,
            )

    cpu_ratios = [a / b for a, b in zip(cpu_app, cpu_base, strict=True)]
    rps_ratios = [e / d for e, d in zip(rps_edge, rps_direct, strict=True)]
    return {
        "benchmark": "courses_catalog",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
        },
        "rpc": "CourseService/ListCourses page_size=20 tag=tag1 language=en (authenticated)",
        "baseline": "bare grpc.aio (uvloop) ListCourses: same SQL on a raw asyncpg pool, "
        "same response built by hand, no interceptors/auth",
        "setup": {
            "rounds": rounds,
            "calls_per_measurement": calls,
            "concurrency": CONCURRENCY,
            "courses_in_tenant": COURSES,
            "server_cpu": SERVER_CPU,
            "client_and_edge_cpu": CLIENT_CPU,
        },
        "cpu_us_per_call": {
            "courses": [round(x, 1) for x in cpu_app],
            "baseline": [round(x, 1) for x in cpu_base],
        },
        "cpu_ratio": {
            "median": round(statistics.median(cpu_ratios), 3),
            "rounds": [round(x, 3) for x in cpu_ratios],
            "target_at_most": 1.5,
        },
        "throughput_rps": {
            "direct": [round(x, 1) for x in rps_direct],
            "through_edge_and_sidecar": [round(x, 1) for x in rps_edge],
        },
        "edge_vs_direct_ratio": {
            "median": round(statistics.median(rps_ratios), 3),
            "rounds": [round(x, 3) for x in rps_ratios],
            "target_at_least": 0.7,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--baseline", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        import uvloop

        uvloop.run(_serve_baseline(int(args.baseline[0]), args.baseline[1]))
        return
    result = run(args.rounds, args.calls)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("cpu_ratio", "edge_vs_direct_ratio")}, indent=2))


if __name__ == "__main__":
    main()
